//! What happened to a subscriber, as the change feed names it: the kinds of change and
//! the fields a change shows, each defined once, here, by a pure function of the
//! subscriber's template fields before and after. Whatever writes the feed (a run's
//! apply in either store, a refresh) is tested against [`change`].
//!
//! The kinds (DESIGN.md, "The change feed"):
//! - `new`: a subscriber the store did not have; `returned`: one it had removed;
//!   `removed`: one the snapshot no longer lists;
//! - `stopped` (`active` -> `stopped`), `reactivated` (`stopped` -> `active`);
//! - `switched`: another offer; `renewed`: a later expiry date on the same offer;
//!   `expiry_moved`: an earlier expiry date;
//! - `coupon_applied`: a non-empty coupon code other than the one before (a replaced code
//!   counts; a removed one is `updated`);
//! - `updated`: any other template field, or (with no template field changed) what the
//!   template does not know (`extra`).
//!
//! A later expiry date that comes with another offer is the switch's, not a renewal; an
//! earlier one is `expiry_moved` whatever the offer. `before` and `after` hold the changed
//! template fields only; for `new` and `returned`, `before` is null and `after` holds all
//! ten; for `removed`, `before` holds them and `after` is null.

use serde::Serialize;
use serde_json::{Map, Value};

/// The template's fields a change shows, in template order (the email is the key).
pub const FIELDS: [&str; 10] = [
    "offer_id",
    "expiry_date",
    "status",
    "payment_method_id",
    "external_id",
    "external_properties",
    "season_index",
    "coupon_code",
    "campaign_name",
    "coupon_uses",
];

/// A kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A subscriber the store did not have.
    New,
    /// A subscriber the store had removed, listed again.
    Returned,
    /// A subscriber the snapshot no longer lists.
    Removed,
    /// `active` -> `stopped`.
    Stopped,
    /// `stopped` -> `active`.
    Reactivated,
    /// Another offer.
    Switched,
    /// A later expiry date on the same offer.
    Renewed,
    /// An earlier expiry date.
    ExpiryMoved,
    /// A non-empty coupon code other than the one before.
    CouponApplied,
    /// Any other change.
    Updated,
}

impl ChangeKind {
    /// Every kind, in the order a change lists them.
    pub const ALL: [ChangeKind; 10] = [
        ChangeKind::New,
        ChangeKind::Returned,
        ChangeKind::Removed,
        ChangeKind::Stopped,
        ChangeKind::Reactivated,
        ChangeKind::Switched,
        ChangeKind::Renewed,
        ChangeKind::ExpiryMoved,
        ChangeKind::CouponApplied,
        ChangeKind::Updated,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::New => "new",
            ChangeKind::Returned => "returned",
            ChangeKind::Removed => "removed",
            ChangeKind::Stopped => "stopped",
            ChangeKind::Reactivated => "reactivated",
            ChangeKind::Switched => "switched",
            ChangeKind::Renewed => "renewed",
            ChangeKind::ExpiryMoved => "expiry_moved",
            ChangeKind::CouponApplied => "coupon_applied",
            ChangeKind::Updated => "updated",
        }
    }

    /// From the stable name.
    pub fn parse(text: &str) -> Option<ChangeKind> {
        ChangeKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// A subscriber's template fields, as JSON values in [`FIELDS`] order (`null` when empty;
/// the expiry date as `YYYY-MM-DD` text, integers as numbers, the external properties as
/// the JSON they hold).
#[derive(Debug, Clone, PartialEq)]
pub struct Fields(pub [Value; 10]);

impl Fields {
    fn get(&self, name: &str) -> &Value {
        let i = FIELDS.iter().position(|f| *f == name).unwrap_or(0);
        &self.0[i]
    }

    /// All ten, as an object.
    pub fn all(&self) -> Value {
        let map: Map<String, Value> = FIELDS
            .iter()
            .zip(&self.0)
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect();
        Value::Object(map)
    }
}

/// What the store held of the subscriber before.
#[derive(Debug, Clone, Copy)]
pub enum Before<'a> {
    /// Nothing: never stored.
    Absent,
    /// A removed subscriber's last fields.
    Removed(&'a Fields),
    /// A present subscriber's fields.
    Present(&'a Fields),
}

/// One change: its kinds and the fields it shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// At least one, in [`ChangeKind::ALL`] order.
    pub kinds: Vec<ChangeKind>,
    /// The changed fields before (null for `new` and `returned`).
    pub before: Value,
    /// The changed fields after (null for `removed`).
    pub after: Value,
}

/// The change from `before` to `after` (`None`: the subscriber is, or stays, removed), or
/// `None` when nothing changed. `other_changed`: what the template does not know changed
/// (the row hash differs with every template field alike).
pub fn change(before: Before<'_>, after: Option<&Fields>, other_changed: bool) -> Option<Change> {
    let (before, after) = match (before, after) {
        (Before::Present(b), None) => {
            return Some(Change {
                kinds: vec![ChangeKind::Removed],
                before: b.all(),
                after: Value::Null,
            });
        }
        (Before::Absent | Before::Removed(_), None) => return None,
        (Before::Absent, Some(a)) => return Some(whole(ChangeKind::New, a)),
        (Before::Removed(_), Some(a)) => return Some(whole(ChangeKind::Returned, a)),
        (Before::Present(b), Some(a)) => (b, a),
    };
    let changed: Vec<&str> = FIELDS
        .into_iter()
        .filter(|f| before.get(f) != after.get(f))
        .collect();
    if changed.is_empty() {
        return other_changed.then(|| Change {
            kinds: vec![ChangeKind::Updated],
            before: Value::Object(Map::new()),
            after: Value::Object(Map::new()),
        });
    }
    let kinds = kinds(before, after, &changed);
    let pick = |side: &Fields| {
        Value::Object(
            changed
                .iter()
                .map(|f| (f.to_string(), side.get(f).clone()))
                .collect(),
        )
    };
    Some(Change {
        kinds,
        before: pick(before),
        after: pick(after),
    })
}

/// One change of the feed, as `changes` and `GET /v1/connectors/{id}/changes` list it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ChangeRecord {
    /// Increasing within a connector: a page's cursor.
    pub id: i64,
    /// Connector id.
    pub connector: String,
    /// The subscriber.
    pub email: String,
    /// When it was applied (RFC 3339, UTC).
    pub at: String,
    /// The run that applied it; `null` for a refresh.
    pub run_id: Option<i64>,
    /// `export`, or the refresh's source (`manual`, `api`, `webhook:<id>`, `action:<id>`).
    pub source: String,
    /// Its kinds: `new`, `returned`, `removed`, `stopped`, `reactivated`, `switched`,
    /// `renewed`, `expiry_moved`, `coupon_applied`, `updated`.
    pub kinds: Vec<String>,
    /// The changed template fields before (`null` for `new` and `returned`).
    #[schema(value_type = Object)]
    pub before: Value,
    /// The changed template fields after (`null` for `removed`).
    #[schema(value_type = Object)]
    pub after: Value,
}

/// A page of the feed, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ChangePage {
    /// At most the page's size.
    pub changes: Vec<ChangeRecord>,
    /// Where the next page starts; never null: past the last change, the cursor to poll
    /// from later.
    pub next: String,
}

/// What became of a batch POSTed to a destination (`cleeng_sync_deliveries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Acknowledged (2xx).
    Delivered,
    /// Not taken (no answer, a cut connection, 408, 429, 5xx): sent again later.
    Failed,
    /// Refused (another 4xx): the destination is stopped until resumed.
    Refused,
}

impl DeliveryOutcome {
    /// Every outcome.
    pub const ALL: [DeliveryOutcome; 3] = [
        DeliveryOutcome::Delivered,
        DeliveryOutcome::Failed,
        DeliveryOutcome::Refused,
    ];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Refused => "refused",
        }
    }
}

/// A position in a connector's feed: the last change id read (`0`: before the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor(pub i64);

impl Cursor {
    /// From a page's `next`: digits only.
    pub fn parse(text: &str) -> Option<Cursor> {
        let valid =
            !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit());
        valid.then(|| text.parse().ok().map(Cursor)).flatten()
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn whole(kind: ChangeKind, after: &Fields) -> Change {
    Change {
        kinds: vec![kind],
        before: Value::Null,
        after: after.all(),
    }
}

/// The kinds of a change between two present states whose `changed` fields differ.
fn kinds(before: &Fields, after: &Fields, changed: &[&str]) -> Vec<ChangeKind> {
    let text = |side: &Fields, f: &str| side.get(f).as_str().unwrap_or_default().to_string();
    let mut kinds = Vec::new();
    // Fields a kind accounts for; whatever changed beyond them is `updated`.
    let mut explained: Vec<&str> = Vec::new();
    match (
        text(before, "status").as_str(),
        text(after, "status").as_str(),
    ) {
        ("active", "stopped") => kinds.push(ChangeKind::Stopped),
        ("stopped", "active") => kinds.push(ChangeKind::Reactivated),
        _ => {}
    }
    if !kinds.is_empty() {
        explained.push("status");
    }
    let switched = changed.contains(&"offer_id");
    if switched {
        kinds.push(ChangeKind::Switched);
        explained.push("offer_id");
    }
    if changed.contains(&"expiry_date") {
        let (was, is) = (text(before, "expiry_date"), text(after, "expiry_date"));
        if is < was {
            kinds.push(ChangeKind::ExpiryMoved);
            explained.push("expiry_date");
        } else if !switched {
            kinds.push(ChangeKind::Renewed);
            explained.push("expiry_date");
        } else {
            // The switch's new period.
            explained.push("expiry_date");
        }
    }
    let coupon = text(after, "coupon_code");
    if changed.contains(&"coupon_code") && !coupon.is_empty() {
        kinds.push(ChangeKind::CouponApplied);
        explained.push("coupon_code");
    }
    if changed.iter().any(|f| !explained.contains(f)) {
        kinds.push(ChangeKind::Updated);
    }
    kinds.sort();
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(changes: &[(&str, Value)]) -> Fields {
        let mut f = Fields([
            json!("S100000001_PL"),
            json!("2099-01-01"),
            json!("active"),
            json!(1),
            json!("ext-1"),
            json!({"tier": "gold"}),
            json!(2),
            Value::Null,
            json!("Winter"),
            json!(0),
        ]);
        for (name, value) in changes {
            let i = FIELDS.iter().position(|x| x == name).expect("a field");
            f.0[i] = value.clone();
        }
        f
    }

    fn kinds_of(changes: &[(&str, Value)]) -> Vec<&'static str> {
        let before = fields(&[]);
        let after = fields(changes);
        change(Before::Present(&before), Some(&after), false)
            .map(|c| c.kinds.into_iter().map(ChangeKind::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn each_kind_from_the_pair_built_for_it() {
        assert_eq!(kinds_of(&[("status", json!("stopped"))]), ["stopped"]);
        let stopped = fields(&[("status", json!("stopped"))]);
        let active = fields(&[]);
        let back = change(Before::Present(&stopped), Some(&active), false).expect("a change");
        assert_eq!(back.kinds, [ChangeKind::Reactivated]);
        assert_eq!(kinds_of(&[("offer_id", json!("S2_PL"))]), ["switched"]);
        assert_eq!(
            kinds_of(&[("expiry_date", json!("2099-02-01"))]),
            ["renewed"]
        );
        assert_eq!(
            kinds_of(&[("expiry_date", json!("2098-12-01"))]),
            ["expiry_moved"]
        );
        assert_eq!(
            kinds_of(&[("coupon_code", json!("SAVE10"))]),
            ["coupon_applied"]
        );
        assert_eq!(kinds_of(&[("payment_method_id", json!(2))]), ["updated"]);
        assert_eq!(kinds_of(&[]), Vec::<&str>::new());
    }

    #[test]
    fn combinations_name_every_kind_and_only_the_changed_fields() {
        let before = fields(&[]);
        let after = fields(&[
            ("offer_id", json!("S900000001_PL")),
            ("expiry_date", json!("2100-01-01")),
            ("campaign_name", Value::Null),
        ]);
        let c = change(Before::Present(&before), Some(&after), false).expect("a change");
        // A later date with another offer is the switch's new period, not a renewal.
        assert_eq!(c.kinds, [ChangeKind::Switched, ChangeKind::Updated]);
        assert_eq!(
            c.before,
            json!({"offer_id": "S100000001_PL", "expiry_date": "2099-01-01", "campaign_name": "Winter"})
        );
        assert_eq!(
            c.after,
            json!({"offer_id": "S900000001_PL", "expiry_date": "2100-01-01", "campaign_name": null})
        );
        assert_eq!(
            kinds_of(&[
                ("status", json!("stopped")),
                ("expiry_date", json!("2099-03-01")),
                ("coupon_code", json!("BACK")),
            ]),
            ["stopped", "renewed", "coupon_applied"]
        );
        assert_eq!(
            kinds_of(&[
                ("offer_id", json!("S2_PL")),
                ("expiry_date", json!("2098-01-01"))
            ]),
            ["switched", "expiry_moved"]
        );
    }

    #[test]
    fn a_replaced_coupon_is_applied_and_a_removed_one_is_an_update() {
        let with = fields(&[("coupon_code", json!("OLD"))]);
        let replaced = fields(&[("coupon_code", json!("NEW"))]);
        let without = fields(&[]);
        let kinds = |b: &Fields, a: &Fields| {
            change(Before::Present(b), Some(a), false)
                .expect("a change")
                .kinds
        };
        assert_eq!(kinds(&with, &replaced), [ChangeKind::CouponApplied]);
        assert_eq!(kinds(&with, &without), [ChangeKind::Updated]);
    }

    #[test]
    fn new_returned_and_removed_show_every_field_on_one_side() {
        let f = fields(&[]);
        let new = change(Before::Absent, Some(&f), false).expect("a change");
        assert_eq!(
            (new.kinds, new.before),
            (vec![ChangeKind::New], Value::Null)
        );
        assert_eq!(new.after.as_object().map(Map::len), Some(10));
        assert_eq!(new.after["external_properties"], json!({"tier": "gold"}));
        let returned = change(Before::Removed(&f), Some(&f), false).expect("a change");
        assert_eq!(returned.kinds, [ChangeKind::Returned]);
        let removed = change(Before::Present(&f), None, false).expect("a change");
        assert_eq!(
            (removed.kinds, removed.after),
            (vec![ChangeKind::Removed], Value::Null)
        );
        assert_eq!(removed.before, f.all());
        assert_eq!(change(Before::Removed(&f), None, false), None);
        assert_eq!(change(Before::Absent, None, true), None);
    }

    #[test]
    fn what_the_template_does_not_know_is_an_update_with_no_field() {
        let f = fields(&[]);
        assert_eq!(change(Before::Present(&f), Some(&f), false), None);
        let c = change(Before::Present(&f), Some(&f), true).expect("a change");
        assert_eq!(c.kinds, [ChangeKind::Updated]);
        assert_eq!((c.before, c.after), (json!({}), json!({})));
    }

    #[test]
    fn every_kind_has_a_stable_name() {
        for kind in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_value(kind).ok(), Some(json!(kind.as_str())));
        }
        assert_eq!(ChangeKind::parse("moved"), None);
    }
}
