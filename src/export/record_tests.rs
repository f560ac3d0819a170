//! Tests of the template's records: the checker, the rows it builds and their hashes,
//! and the rules' warnings, through one record at a time.

use super::check::*;
use super::header::HeaderMap;
use super::offers::{Offers, UnmappedOffer};
use super::row::*;
use super::rules::*;
use crate::run::{Reason, WarningCode};
use chrono::NaiveDate;
use csv_async::ByteRecord;
use std::collections::BTreeMap;
use std::sync::Arc;

fn header(labels: &[&str]) -> HeaderMap {
    HeaderMap::new(labels.iter().map(|l| l.as_bytes()), &BTreeMap::new()).unwrap()
}

fn rules() -> Rules {
    Rules::new(NaiveDate::from_ymd_opt(2026, 6, 1).unwrap())
}

const FULL: [&str; 12] = [
    "email",
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
    "Region",
];

/// Checks a record given as `|`-separated cells (JSON cells hold commas).
fn check_with(line: &str, rules: &Rules) -> Checked {
    let cells: Vec<&str> = line.split('|').collect();
    check_record(&header(&FULL), &ByteRecord::from(cells), 2, rules)
}

fn check(line: &str) -> Checked {
    check_with(line, &rules())
}

fn reasons(checked: &Checked) -> Vec<(String, Reason)> {
    match checked {
        Checked::Valid(..) => vec![],
        Checked::Rejected { rejections, .. } => rejections
            .iter()
            .map(|r| (r.column.clone(), r.reason))
            .collect(),
    }
}

fn row_hash_of(line: &str) -> String {
    match check(line) {
        Checked::Valid(row, _) => row.row_hash.hex().as_str().to_string(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_full_record_becomes_a_typed_row() {
    let checked = check(
        r#" Ann@Example.COM |S123456789_PL|2030-01-31|Active|42|ext-1|{"b":"2", "a":"1"}|3|Free4Me|Winter|0|EU"#,
    );
    let Checked::Valid(row, warned) = checked else {
        panic!("{checked:?}")
    };
    assert!(warned.is_empty());
    assert_eq!(row.email(), "ann@example.com");
    assert_eq!(row.status, "active");
    assert_eq!(row.external_properties(), Some(r#"{"a":"1","b":"2"}"#));
    assert_eq!(row.extra(), Some(r#"{"Region":"EU"}"#));
    assert_eq!((row.season_index, row.coupon_uses), (Some(3), Some(0)));
    // Stored hashes are compared with the next export's: the hash of a row must
    // never change between versions, or every subscriber would read as updated.
    assert_eq!(
        row.row_hash.hex().as_str(),
        "6500b188bd11774683a8ca83f12841c7"
    );
}

#[test]
fn a_character_split_across_two_cells_is_invalid_utf8() {
    // Together the two bytes are "é": valid as a record, not as cells.
    let mut cells: Vec<&[u8]> = FULL.iter().map(|_| b"" as &[u8]).collect();
    cells[0] = b"a@b.co";
    cells[1] = b"S123456789_PL";
    cells[2] = b"2030-01-01";
    cells[3] = b"active";
    cells[4] = b"1";
    cells[8] = b"\xc3";
    cells[9] = b"\xa9";
    let checked = check_record(&header(&FULL), &ByteRecord::from(cells), 2, &rules());
    assert_eq!(
        reasons(&checked),
        vec![("coupon_code".into(), Reason::InvalidUtf8)]
    );
}

#[test]
fn long_and_non_ascii_traits_read_back_whole() {
    // Past the bytes a row keeps inline, and with characters of several bytes.
    let long = "x".repeat(300);
    let checked = check(&format!(
        "ÉVA@exemple.fr|S123456789_PL|2030-01-31|active|1|{long}|{{\"città\":\"Zürich\"}}||é|{long}||Ünïcode"
    ));
    let Checked::Valid(row, _) = checked else {
        panic!("{checked:?}")
    };
    assert_eq!(row.email(), "éva@exemple.fr");
    assert_eq!(row.external_id(), Some(long.as_str()));
    assert_eq!(row.external_properties(), Some(r#"{"città":"Zürich"}"#));
    assert_eq!(row.coupon_code(), Some("é"));
    assert_eq!(row.campaign_name(), Some(long.as_str()));
    assert_eq!(row.extra(), Some(r#"{"Region":"Ünïcode"}"#));
}

#[test]
fn a_row_read_back_from_its_bytes_is_the_same_row() {
    let long = "x".repeat(300);
    for line in [
        r#" Ann@Example.COM |S123456789_PL|2030-01-31|Active|42|ext-1|{"b":"2", "a":"1"}|3|Free4Me|Winter|0|EU"#.to_string(),
        "b@example.com|S123456789_PL|2031-02-28|stopped|7|||||||".to_string(),
        format!("ÉVA@exemple.fr|S123456789_PL|2030-01-31|active|1|{long}|{{\"città\":\"Zürich\"}}||é|{long}||Ünïcode"),
    ] {
        let Checked::Valid(row, _) = check(&line) else {
            panic!("{line}")
        };
        let mut bytes = Vec::new();
        row.encode(&mut bytes);
        assert_eq!(Row::decode(&bytes).as_ref(), Some(&row), "{line}");
        // Cut short, or its text lengths wrong: not a row.
        assert_eq!(Row::decode(&bytes[..bytes.len() - 1]), None, "{line}");
        assert_eq!(Row::decode(&bytes[..20]), None, "{line}");
    }
}

#[test]
fn iso_dates_are_written_as_the_template_writes_them() {
    for (y, m, d) in [(2030, 1, 31), (999, 12, 1), (9999, 10, 9)] {
        let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(
            std::str::from_utf8(&iso_date(date)).unwrap(),
            date.format("%Y-%m-%d").to_string()
        );
    }
}

#[test]
fn every_broken_field_is_reported_once() {
    let checked = check("||2030-02-30|paused|x||[1]|0|||-1|");
    assert_eq!(
        reasons(&checked),
        vec![
            ("email".into(), Reason::MissingValue),
            ("offer_id".into(), Reason::MissingValue),
            ("expiry_date".into(), Reason::InvalidDate),
            ("status".into(), Reason::InvalidStatus),
            ("payment_method_id".into(), Reason::NotAnInteger),
            ("season_index".into(), Reason::OutOfRange),
            ("coupon_uses".into(), Reason::OutOfRange),
            ("external_properties".into(), Reason::JsonNotStringMap),
        ]
    );
}

#[test]
fn dates_are_strict() {
    assert_eq!(
        parse_date("2030-01-01"),
        Ok(NaiveDate::from_ymd_opt(2030, 1, 1).unwrap())
    );
    assert_eq!(
        parse_date("2030-01-01T10:00:00Z"),
        Err(Reason::TimestampNotAllowed)
    );
    assert_eq!(
        parse_date("2030-01-01 10:00"),
        Err(Reason::TimestampNotAllowed)
    );
    assert_eq!(parse_date("2030-1-01"), Err(Reason::InvalidDate));
    assert_eq!(parse_date("01/02/2030"), Err(Reason::InvalidDate));
    assert_eq!(parse_date("2030-13-01"), Err(Reason::InvalidDate));
}

#[test]
fn past_expiry_follows_the_connector_setting() {
    let line = "a@b.co|S123456789_PL|2026-05-31|active|1|||||||";
    assert_eq!(
        reasons(&check(line)),
        vec![("expiry_date".into(), Reason::DateInPast)]
    );
    let lenient = Rules {
        past_expiry: PastExpiry::Accept,
        ..rules()
    };
    assert!(matches!(check_with(line, &lenient), Checked::Valid(..)));
    let today = "a@b.co|S123456789_PL|2026-06-01|active|1|||||||";
    assert!(
        matches!(check(today), Checked::Valid(..)),
        "today is not in the past"
    );
}

#[test]
fn integers_tell_overflow_from_garbage() {
    assert_eq!(parse_integer("12", 1), Ok(12));
    assert_eq!(parse_integer("1.0", 1), Err(Reason::NotAnInteger));
    assert_eq!(
        parse_integer("99999999999999999999", 1),
        Err(Reason::OutOfRange)
    );
    assert_eq!(parse_integer("0", 1), Err(Reason::OutOfRange));
}

#[test]
fn rejected_records_keep_a_readable_email_and_mask_it() {
    let Checked::Rejected { email, rejections } =
        check("Bob@Example.com|S1 2|2030-01-01|active|1|||||||")
    else {
        panic!()
    };
    assert_eq!(email.as_deref(), Some("bob@example.com"));
    assert_eq!(rejections[0].reason, Reason::InvalidOfferId);

    let Checked::Rejected { email, rejections } =
        check("bob example.com|S1|2030-01-01|active|1|||||||")
    else {
        panic!()
    };
    assert_eq!(email, None);
    assert_eq!(rejections[0].value.as_deref(), Some("b***"));
}

#[test]
fn the_hash_ignores_formatting_but_not_values() {
    let base = row_hash_of(r#"a@b.co|S123456789_PL|2030-01-01|active|1||{"x":"1"}|||||"#);
    let reformatted =
        row_hash_of(r#"a@b.co|S123456789_PL|2030-01-01|ACTIVE|1||{ "x" : "1" }|||||"#);
    let changed = row_hash_of(r#"a@b.co|S123456789_PL|2030-01-01|active|1||{"x":"1"}||NEW|||"#);
    assert_eq!(base, reformatted);
    assert_ne!(base, changed);
}

/// Stored rows carry their hash: were it computed differently, the next run would
/// update every subscriber of every store. The value is what earlier releases stored.
#[test]
fn the_hash_of_a_row_is_what_earlier_releases_stored() {
    let hash = row_hash_of(
        r#"user00000000@example0.com|S100000000_PL|2099-01-01|active|1||{"plan": "p0", "source": "web"}|1|CODE0|Winter season|0|"#,
    );
    assert_eq!(hash, "c9b9ca80706d6ca15e3eca05d462deef");
}

fn warned(line: &str, rules: &Rules) -> Vec<WarningCode> {
    match check_with(line, rules) {
        Checked::Valid(_, warned) => warned.codes().collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unusual_offer_ids_only_warn() {
    let checked = check("a@b.co|premium-monthly|2030-01-01|active|1|||||||");
    let Checked::Valid(row, warned) = checked else {
        panic!("{checked:?}")
    };
    assert_eq!(
        warned.codes().collect::<Vec<_>>(),
        [WarningCode::OfferIdPattern]
    );
    let warning = Warning::describe(WarningCode::OfferIdPattern, &row, &rules());
    assert_eq!((warning.record, warning.column), (2, "offer_id"));
}

#[test]
fn the_expiry_buffer_warns_from_today_to_its_last_day() {
    // Today is 2026-06-01 and the buffer three days: the 1st to the 4th are warned.
    let line = |day: u32| format!("a@b.co|S123456789_PL|2026-06-{day:02}|active|1|||||||");
    let within = [WarningCode::ExpiryWithinBuffer];
    for day in [1, 2, 4] {
        assert_eq!(warned(&line(day), &rules()), within, "June {day}");
    }
    assert_eq!(warned(&line(5), &rules()), [], "a day past the buffer");
    let off = Rules {
        expiry_buffer_days: 0,
        ..rules()
    };
    assert_eq!(warned(&line(1), &off), [], "0d turns it off");
    let lenient = Rules {
        past_expiry: PastExpiry::Accept,
        ..rules()
    };
    let past = "a@b.co|S123456789_PL|2026-05-31|active|1|||||||";
    assert_eq!(
        warned(past, &lenient),
        [],
        "an accepted past date is not ahead"
    );
}

#[test]
fn an_offer_outside_the_map_warns_or_is_rejected() {
    let plans = [(
        "monthly".to_string(),
        [("PL".to_string(), "S123456789_PL".to_string())].into(),
    )];
    let mapped = Rules {
        offers: Arc::new(Offers::new(plans.into()).unwrap()),
        ..rules()
    };
    let listed = "a@b.co|S123456789_PL|2030-01-01|active|1|||||||";
    let unlisted = "a@b.co|S999999999_PL|2030-01-01|active|1|||||||";
    assert_eq!(warned(listed, &mapped), []);
    assert_eq!(warned(unlisted, &mapped), [WarningCode::UnmappedOffer]);
    assert_eq!(
        warned(unlisted, &rules()),
        [],
        "without a map nothing is unmapped"
    );
    let strict = Rules {
        unmapped_offer: UnmappedOffer::Reject,
        ..mapped
    };
    assert_eq!(
        reasons(&check_with(unlisted, &strict)),
        vec![("offer_id".into(), Reason::UnmappedOffer)]
    );
    assert!(matches!(check_with(listed, &strict), Checked::Valid(..)));
}

#[test]
fn a_row_made_of_plain_traits_has_the_hash_of_the_record_that_says_the_same() {
    let record = r#" Ann@Example.COM |S123456789_PL|2099-01-31|Stopped|7|ext-1|{"b":"2", "a":"1"}|2|SAVE|Spring|1|EU"#;
    let Checked::Valid(row, _) = check(record) else {
        panic!("valid");
    };
    let traits = Traits {
        email: "ann@example.com",
        offer_id: "S123456789_PL",
        expiry_date: NaiveDate::from_ymd_opt(2099, 1, 31).unwrap(),
        status: "stopped",
        payment_method_id: 7,
        external_id: Some("ext-1"),
        external_properties: Some(r#"{"a":"1","b":"2"}"#),
        season_index: Some(2),
        coupon_code: Some("SAVE"),
        campaign_name: Some("Spring"),
        coupon_uses: Some(1),
        extra: Some(r#"{"Region":"EU"}"#),
    };
    let made = Row::of_traits(row.record, &traits).expect("a row");
    assert_eq!(made.row_hash, row.row_hash);
    assert_eq!(made, row);
    let active = Row::of_traits(
        2,
        &Traits {
            status: "active",
            ..traits
        },
    )
    .unwrap();
    assert_ne!(active.row_hash, row.row_hash);
    assert!(
        Row::of_traits(
            2,
            &Traits {
                status: "cancelled",
                ..traits
            }
        )
        .is_none()
    );
}

#[test]
fn a_stored_hash_reads_back_from_its_hex_and_stands_for_its_subscriber() {
    let Checked::Valid(row, _) =
        check(r#"ann@example.com|S123456789_PL|2099-01-31|active|7|||||||"#)
    else {
        panic!("valid");
    };
    let hex = row.row_hash.hex();
    assert_eq!(RowHash::from_hex(hex.as_str()), Some(row.row_hash));
    assert_eq!(RowHash::from_hex("not hex"), None);
    assert_eq!(RowHash::from_hex(&hex.as_str()[..30]), None);
    let stands = Row::stored_as(9, "ann@example.com", row.row_hash);
    assert_eq!((stands.record, stands.email()), (9, "ann@example.com"));
    assert_eq!(stands.row_hash, row.row_hash);
}
