//! Property tests: the parser, validator and header mapper on generated input, a
//! bounded fuzz run in every CI build (`PROPTEST_CASES` runs more of them).
//!
//! Whatever the bytes, an export gives rows, rejections or an error, never a panic;
//! a row that validated, written out again, reads back as the same row.

use super::{Checked, ExportError, ExportReader, Field, HeaderMap, Row, Rules};
use chrono::NaiveDate;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// The template's header, snake_case, in order.
const HEADER: &str = "email,offer_id,expiry_date,status,payment_method_id,external_id,\
external_properties,season_index,coupon_code,campaign_name,coupon_uses";

fn rules() -> Rules {
    Rules::new(NaiveDate::from_ymd_opt(2026, 11, 21).expect("a date"))
}

/// Reads a whole export; what a run would see, records or the error that stops it.
fn read(body: Vec<u8>, gzip: bool) -> Result<Vec<Checked>, ExportError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let cursor = std::io::Cursor::new(body);
        let mut reader = ExportReader::open(cursor, gzip, &BTreeMap::new(), rules()).await?;
        let mut out = Vec::new();
        while let Some(checked) = reader.next().await? {
            out.push(checked);
        }
        Ok(out)
    })
}

/// Text that looks like CSV often enough to reach the validator's every branch.
fn csvish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..600),
        "[a-zA-Z0-9@._,\"\r\n {}:*()\u{feff}é-]{0,600}".prop_map(String::into_bytes),
        vec(
            prop_oneof![
                Just("user@example.com".to_string()),
                Just("S123456789_PL".to_string()),
                Just("2099-01-31".to_string()),
                Just("2020-01-01T00:00:00".to_string()),
                Just("active".to_string()),
                Just("STOPPED".to_string()),
                Just("{\"\"a\"\":\"\"b\"\"}".to_string()),
                Just("\"".to_string()),
                Just("-1".to_string()),
                Just("99999999999999999999".to_string()),
                "[ -~]{0,12}",
            ],
            0..40
        )
        .prop_map(|cells| cells.join(",").replace(",,,", ",\n").into_bytes()),
    ]
}

/// One CSV cell, always quoted.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

/// A row written back out as a CSV record, in `HEADER` order then its extra columns.
fn write_row(row: &Row) -> (String, String) {
    let extra: BTreeMap<String, String> = row
        .extra()
        .map(|json| serde_json::from_str(json).expect("extra is a JSON object of strings"))
        .unwrap_or_default();
    let opt = |v: Option<&str>| v.unwrap_or_default().to_string();
    let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    let mut cells = vec![
        row.email().to_string(),
        row.offer_id().to_string(),
        row.expiry_date.to_string(),
        row.status.to_string(),
        row.payment_method_id.to_string(),
        opt(row.external_id()),
        opt(row.external_properties()),
        num(row.season_index),
        opt(row.coupon_code()),
        opt(row.campaign_name()),
        num(row.coupon_uses),
    ];
    cells.extend(extra.values().cloned());
    let mut header = HEADER.to_string();
    for label in extra.keys() {
        header.push(',');
        header.push_str(&quote(label));
    }
    let line = cells.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",");
    (header, line)
}

/// Cell text: printable and not, commas, quotes, line breaks, padding.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,20}",
        "[a-z ,\"\n\r\té€😀]{0,20}",
        Just(String::new())
    ]
}

/// A record that should validate, with every optional field sometimes filled.
fn valid_record() -> impl Strategy<Value = (String, String)> {
    let email = ("[a-z0-9._+-]{1,12}", "[a-z0-9-]{1,10}", "[a-z]{2,5}")
        .prop_map(|(l, d, t)| format!("  {}@{d}.{t} ", l.to_uppercase()));
    let offer = prop_oneof!["S[0-9]{9}_PL", "[!-~]{1,20}"];
    let date =
        (2027i32..2300, 1u32..13, 1u32..29).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"));
    let status = prop_oneof![Just("active"), Just("Stopped"), Just("ACTIVE")];
    let properties = prop_oneof![
        Just(String::new()),
        btree_map("[a-z\"\\\\]{0,6}", "[ -~é]{0,8}", 0..4)
            .prop_map(|m| serde_json::to_string(&m).expect("json")),
    ];
    let number = |low: i64| {
        prop_oneof![
            Just(String::new()),
            (low..i64::MAX).prop_map(|n| n.to_string())
        ]
    };
    let extra = btree_map("x_[a-z]{1,6}", text(), 0..3);
    (
        email,
        offer,
        date,
        status,
        1i64..i64::MAX,
        text(),
        properties,
        number(1),
        (text(), text()),
        number(0),
        extra,
    )
        .prop_map(
            |(
                email,
                offer,
                date,
                status,
                payment,
                external,
                props,
                season,
                (coupon, campaign),
                uses,
                extra,
            )| {
                let mut header = HEADER.to_string();
                for label in extra.keys() {
                    header.push(',');
                    header.push_str(label);
                }
                let mut cells = vec![
                    email,
                    offer,
                    date,
                    status.to_string(),
                    payment.to_string(),
                    external,
                    props,
                    season,
                    coupon,
                    campaign,
                    uses,
                ];
                cells.extend(extra.into_values());
                let line = cells.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",");
                (header, line)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_body_after_a_good_header_gives_rows_or_rejections(body in csvish()) {
        let mut export = format!("{HEADER}\n").into_bytes();
        export.extend_from_slice(&body);
        if let Ok(records) = read(export, false) {
            for checked in records {
                if let Checked::Rejected { rejections, .. } = checked {
                    prop_assert!(!rejections.is_empty(), "a rejection says why");
                }
            }
        }
    }

    #[test]
    fn any_bytes_at_all_never_panic(body in csvish(), gzip in any::<bool>()) {
        let _ = read(body, gzip);
    }

    #[test]
    fn any_header_maps_or_says_what_is_missing(
        labels in vec(prop_oneof![
            "[ -~]{0,30}".prop_map(String::into_bytes),
            vec(any::<u8>(), 0..10),
            Just(b"User email*".to_vec()),
            Just(b"Offer ID (will be used)".to_vec()),
            Just(b"\xef\xbb\xbfexpiry_date".to_vec()),
            Just(b"STATUS".to_vec()),
            Just(b"payment method id".to_vec()),
        ], 0..16),
        overrides in btree_map(0usize..Field::ALL.len(), "[ -~]{0,12}", 0..3),
    ) {
        let overrides: BTreeMap<Field, String> =
            overrides.into_iter().map(|(i, l)| (Field::ALL[i], l)).collect();
        if let Ok(map) = HeaderMap::new(labels.iter().map(Vec::as_slice), &overrides) {
            for field in Field::ALL.into_iter().filter(|f| f.mandatory()) {
                prop_assert!(map.position(field).is_some_and(|i| i < labels.len()));
            }
            prop_assert_eq!(map.width(), labels.len());
        }
    }

    #[test]
    fn a_valid_row_written_out_reads_back_the_same((header, line) in valid_record()) {
        let first = read(format!("{header}\n{line}\n").into_bytes(), false);
        let row = match first.as_deref() {
            Ok([Checked::Valid(row, _)]) => row.clone(),
            other => return Err(TestCaseError::fail(format!("{header}\n{line}\n{other:?}"))),
        };
        let (header, line) = write_row(&row);
        match read(format!("{header}\r\n{line}\r\n").into_bytes(), false).as_deref() {
            Ok([Checked::Valid(again, _)]) => prop_assert_eq!(again, &row),
            other => return Err(TestCaseError::fail(format!("{header}\n{line}\n{other:?}"))),
        }
    }
}
