-- Leave a tenth of each page of the traits free, so that a night's changes are written
-- next to the rows they replace (heap-only tuples): no new index entry per changed
-- subscriber, and pages touched once. The traits are updated, never appended to in
-- bulk but on a first load.
ALTER TABLE subscription_traits SET (fillfactor = 90);
