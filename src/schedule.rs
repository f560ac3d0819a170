//! What is due when: the cron's wall-clock times read in the schedule's zone, with the
//! zone's daylight-saving rules, and the claims that make each of them run once.
//!
//! The cron names local times ("01:30 every day"). Each becomes a [`Slot`]: the local
//! time, which names it in the ledger and in its claim, and the instant it runs at.
//! A local time that occurs twice (fall back) runs at its first occurrence; one that
//! does not exist (spring forward) runs at the first instant after the gap. The
//! daemon looks at the clock at every slot and at least once a minute, takes the
//! latest slot younger than `catch_up`, and runs it for every connector whose claim
//! it wins in the store: a restart or a second replica finds the claim and does not
//! run the time again.

use crate::config::Schedule;
use crate::store::{Backend, Claim, SlotClaim, Store, StoreError};
use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use std::time::Duration;

/// How long a claim stays valid without renewal: a daemon that dies while running a
/// slot leaves a claim that another daemon (or the restarted one) takes over after this.
pub const CLAIM_LEASE: Duration = Duration::from_secs(120);

/// How often a daemon renews the claims of the runs it is doing.
pub const CLAIM_RENEWAL: Duration = Duration::from_secs(30);

/// The longest the daemon sleeps between two looks at the clock, so that a clock that
/// jumps (suspend, NTP step) or a claim left by a dead daemon is noticed soon.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// However small `catch_up` is, a slot stays due this long after its time: the daemon
/// itself may wake a little late.
pub const MIN_CATCH_UP: Duration = Duration::from_secs(120);

/// No zone moves its clocks by more than this at once; it bounds the search for the
/// local times around an instant.
const MAX_SHIFT: TimeDelta = TimeDelta::hours(3);

/// One local time the cron names, and the instant it runs at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The wall-clock time in the schedule's zone.
    pub local: NaiveDateTime,
    /// When it runs.
    pub at: DateTime<Utc>,
    zone: Tz,
}

impl Slot {
    /// The slot's name in the ledger (`scheduled_for`) and in its claim:
    /// `2026-11-01T01:30:00 America/Los_Angeles`.
    pub fn label(&self) -> String {
        format!(
            "{} {}",
            self.local.format("%Y-%m-%dT%H:%M:%S"),
            self.zone.name()
        )
    }
}

/// The cron read in its zone.
#[derive(Debug, Clone)]
pub struct Timetable {
    cron: cron::Schedule,
    zone: Tz,
    catch_up: TimeDelta,
}

impl Timetable {
    /// The timetable of the configured schedule.
    pub fn new(schedule: &Schedule) -> Timetable {
        Timetable {
            cron: schedule.cron.clone(),
            zone: schedule.timezone,
            catch_up: TimeDelta::from_std(schedule.catch_up.max(MIN_CATCH_UP))
                .unwrap_or(TimeDelta::MAX),
        }
    }

    /// The cron expression as configured.
    pub fn cron(&self) -> &str {
        self.cron.source()
    }

    /// The zone its times are read in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first slot that runs after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<Slot> {
        let start = now.with_timezone(&self.zone).naive_local() - MAX_SHIFT;
        let horizon = start + TimeDelta::days(400);
        // A later local time never runs earlier, so the first slot after `now` is the
        // next one; the horizon ends the search for a cron that never fires.
        self.cron
            .after(&Utc.from_utc_datetime(&start))
            .map(|t| self.slot(t.naive_utc()))
            .take_while(|slot| slot.local <= horizon)
            .find(|slot| slot.at > now)
    }

    /// The slot due at `now`: the latest whose time came at or before `now`, if it is
    /// not older than `catch_up` (or [`MIN_CATCH_UP`]).
    pub fn latest_due(&self, now: DateTime<Utc>) -> Option<Slot> {
        let oldest = now
            .checked_sub_signed(self.catch_up)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let oldest_local = oldest.with_timezone(&self.zone).naive_local() - MAX_SHIFT;
        let start = now.with_timezone(&self.zone).naive_local() + MAX_SHIFT;
        // Local times are walked as if they were UTC, backwards: the cron then knows
        // nothing of the zone, and `slot` alone applies its rules. A later local time
        // never runs earlier, so the first slot found at or before `now` is the latest.
        self.cron
            .after(&Utc.from_utc_datetime(&start))
            .rev()
            .map(|t| self.slot(t.naive_utc()))
            .take_while(|slot| slot.local >= oldest_local)
            .find(|slot| slot.at <= now)
            .filter(|slot| slot.at > oldest)
    }

    /// When the daemon should look at the clock again after `now`.
    pub fn next_check(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let soon = now + TimeDelta::from_std(MAX_SLEEP).unwrap_or(TimeDelta::MAX);
        match self.next_after(now) {
            Some(slot) if slot.at < soon => slot.at,
            _ => soon,
        }
    }

    fn slot(&self, local: NaiveDateTime) -> Slot {
        let at = match self.zone.from_local_datetime(&local) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            // Fall back: the first of the two instants with this local time.
            LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
            LocalResult::None => self.end_of_gap(local),
        };
        Slot {
            local,
            at,
            zone: self.zone,
        }
    }

    /// The first instant whose local time is at or after `local`, a time skipped by a
    /// spring-forward gap: the instant the clocks moved.
    fn end_of_gap(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let naive_utc = Utc.from_utc_datetime(&local);
        let passed = |secs: i64| {
            DateTime::from_timestamp(secs, 0)
                .is_some_and(|t| t.with_timezone(&self.zone).naive_local() >= local)
        };
        // Read with any offset of the surrounding hours, `local` lands within the
        // transition's reach; search that window, in whole seconds, for where the
        // local time passes it.
        let reach = (MAX_SHIFT * 5).num_seconds();
        let (mut lo, mut hi) = (naive_utc.timestamp() - reach, naive_utc.timestamp() + reach);
        if passed(lo) || !passed(hi) {
            return naive_utc;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if passed(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        DateTime::from_timestamp(hi, 0).unwrap_or(naive_utc)
    }
}

/// Decides which connectors run a slot, by claiming it in the store.
pub struct Scheduler {
    timetable: Timetable,
    connectors: Vec<String>,
    holder: String,
}

/// A connector whose claim on a slot this daemon won: it must run it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Connector id.
    pub connector: String,
    /// The slot it runs.
    pub slot: Slot,
}

impl Scheduler {
    /// A scheduler for these connectors; `holder` names this daemon in its claims.
    pub fn new(timetable: Timetable, connectors: Vec<String>, holder: String) -> Scheduler {
        Scheduler {
            timetable,
            connectors,
            holder,
        }
    }

    /// The timetable.
    pub fn timetable(&self) -> &Timetable {
        &self.timetable
    }

    /// This daemon's name in its claims.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Looks at the clock: claims the due slot for every connector that has not run
    /// it and returns those this daemon must run now.
    pub async fn tick<B: Backend>(
        &self,
        store: &Store<B>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Due>, StoreError> {
        let Some(slot) = self.timetable.latest_due(now) else {
            return Ok(Vec::new());
        };
        let mut due = Vec::new();
        for connector in &self.connectors {
            let label = slot.label();
            let claim = SlotClaim {
                connector,
                slot: &label,
                holder: &self.holder,
            };
            let claim = store.claim_slot(claim, now, CLAIM_LEASE).await?;
            if claim == Claim::Won {
                due.push(Due {
                    connector: connector.clone(),
                    slot: slot.clone(),
                });
            }
        }
        Ok(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::Los_Angeles;
    use std::str::FromStr;

    fn timetable(cron: &str, catch_up_hours: u64) -> Timetable {
        Timetable::new(&Schedule {
            cron: cron::Schedule::from_str(cron).unwrap(),
            timezone: Los_Angeles,
            catch_up: Duration::from_secs(catch_up_hours * 3600),
        })
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// The next two slots after `from`, as (name, instant).
    fn next_two(t: &Timetable, from: &str) -> Vec<(String, DateTime<Utc>)> {
        let first = t.next_after(utc(from)).unwrap();
        let second = t.next_after(first.at).unwrap();
        [first, second]
            .into_iter()
            .map(|s| (s.label(), s.at))
            .collect()
    }

    /// The next two times of a daily cron from `from`: each as the timetable names
    /// it (the local time, a Los Angeles one) and the UTC instant it runs at.
    fn next_two_local(cron: &str, from: &str) -> Vec<(String, String)> {
        let t = timetable(cron, 12);
        next_two(&t, from)
            .into_iter()
            .map(|(label, at)| (label.replace(" America/Los_Angeles", ""), at.to_rfc3339()))
            .collect()
    }

    /// A scheduled local time and the instant it runs at, as [`next_two_local`] gives.
    fn slot(local: &str, at: &str) -> (String, String) {
        (local.to_string(), utc(at).to_rfc3339())
    }

    #[test]
    fn daylight_saving_neither_repeats_nor_skips_a_run() {
        // Fall back: 01:30 happens twice on 2026-11-01; it runs at its first occurrence.
        // Spring forward: 02:30 does not exist on 2026-03-08; it runs at 03:00 PDT.
        let cases = [
            (
                "0 30 1 * * *",
                "2026-11-01T00:00:00-07:00",
                [
                    ("2026-11-01T01:30:00", "2026-11-01T01:30:00-07:00"),
                    ("2026-11-02T01:30:00", "2026-11-02T01:30:00-08:00"),
                ],
            ),
            (
                "0 30 2 * * *",
                "2026-03-08T00:00:00-08:00",
                [
                    ("2026-03-08T02:30:00", "2026-03-08T03:00:00-07:00"),
                    ("2026-03-09T02:30:00", "2026-03-09T02:30:00-07:00"),
                ],
            ),
        ];
        for (cron, from, expected) in cases {
            let expected: Vec<_> = expected.iter().map(|(local, at)| slot(local, at)).collect();
            assert_eq!(next_two_local(cron, from), expected, "{cron} from {from}");
        }
    }

    #[test]
    fn the_next_slot_and_the_next_look_at_the_clock() {
        let t = timetable("0 30 1 * * *", 12);
        let now = utc("2026-11-21T09:00:00Z"); // 01:00 PST
        let next = t.next_after(now).unwrap();
        assert_eq!(next.at, utc("2026-11-21T09:30:00Z"));
        assert_eq!(t.next_check(now), now + TimeDelta::seconds(60));
        assert_eq!(t.next_check(utc("2026-11-21T09:29:30Z")), next.at);
        // At the slot itself, the next one is a day later.
        assert_eq!(
            t.next_after(next.at).unwrap().at,
            utc("2026-11-22T09:30:00Z")
        );
    }

    #[test]
    fn catch_up_takes_the_latest_slot_younger_than_the_limit() {
        let t = timetable("0 30 1 * * *", 12);
        assert_eq!(
            t.latest_due(utc("2026-11-21T13:00:00Z")).map(|s| s.label()),
            Some("2026-11-21T01:30:00 America/Los_Angeles".to_string())
        );
        // 12 h 30 min after 01:30: too old.
        assert_eq!(t.latest_due(utc("2026-11-21T22:00:00Z")), None);
    }
}
