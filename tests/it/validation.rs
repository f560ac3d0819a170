//! Every reason code of the contract, with its record number, from `validate` and
//! from a sync; a rejected row never changes what is stored for its subscriber.

use crate::common::*;

/// One broken row per reason code, for subscribers 1..=13 (record = i + 1), each
/// broken in exactly one way. Subscriber 14 repeats in two records.
fn broken_rows() -> Vec<(String, u64, &'static str, &'static str)> {
    let swap = |i: u32, from: &str, to: &str| row(i).replacen(from, to, 1);
    let r = |i: u32| i as u64 + 1;
    vec![
        (
            swap(1, "user1@example.com", ""),
            r(1),
            "email",
            "missing_value",
        ),
        (
            swap(2, "user2@example.com", "user2 at example.com"),
            r(2),
            "email",
            "invalid_email",
        ),
        (
            swap(3, "2099-04-04", "2099-02-30"),
            r(3),
            "expiry_date",
            "invalid_date",
        ),
        (
            swap(4, "2099-05-05", "2099-05-05T10:00:00"),
            r(4),
            "expiry_date",
            "timestamp_not_allowed",
        ),
        (
            swap(5, "2099-06-06", "2001-06-06"),
            r(5),
            "expiry_date",
            "date_in_past",
        ),
        (
            swap(6, "active", "paused"),
            r(6),
            "status",
            "invalid_status",
        ),
        (
            swap(7, ",107,", ",card,"),
            r(7),
            "payment_method_id",
            "not_an_integer",
        ),
        (
            swap(8, ",108,", ",0,"),
            r(8),
            "payment_method_id",
            "out_of_range",
        ),
        (
            swap(9, "\"{\"\"tier\"\":\"\"t9\"\"}\"", "{oops"),
            r(9),
            "external_properties",
            "invalid_json",
        ),
        (
            swap(
                10,
                "\"{\"\"tier\"\":\"\"t10\"\"}\"",
                "\"{\"\"tier\"\":10}\"",
            ),
            r(10),
            "external_properties",
            "json_not_string_map",
        ),
        (
            swap(11, ",S000000011_PL,", ",,"),
            r(11),
            "offer_id",
            "missing_value",
        ),
        (
            swap(12, ",COUPON12,", ",COUPON12,extra-field,"),
            r(12),
            "record",
            "wrong_field_count",
        ),
        (
            swap(13, ",113,", ",,"),
            r(13),
            "payment_method_id",
            "missing_value",
        ),
    ]
}

#[test]
fn validate_reports_every_reason_with_its_record_number() {
    let env = Env::new();
    let mut lines: Vec<String> = broken_rows().into_iter().map(|(line, ..)| line).collect();
    lines.push(row(14)); // record 15
    lines.push(row(14).replace("COUPON14", "OTHER")); // record 16: the same email again
    lines.push(row(17).replace(",3,COUPON17", ",x,COUPON17")); // record 17: season index
    lines.push(row(18).replace(",1,COUPON18", ",0,COUPON18")); // record 18: season index 0
    lines.push(row(19).replace(",Campaign 19,3", ",Campaign 19,-1")); // record 19: coupon uses
    lines.push(row(20)); // record 20: valid
    let mut bytes = csv(lines).into_bytes();
    // Record 21: bytes that are not UTF-8.
    bytes
        .extend_from_slice(b"user21@example.com,S000000021_PL,2099-01-01,active,1,\xff\xfe,,,,,\n");
    let file = env.write("broken.csv", &bytes);

    let out = env.run(&[
        "validate",
        file.to_str().unwrap(),
        "--json",
        "--today",
        "2026-06-01",
    ]);
    assert_eq!(out.code, 3, "{out:?}");
    let report = out.json();
    let found: Vec<(u64, String, String)> = report["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["record"].as_u64().unwrap(),
                r["column"].as_str().unwrap().into(),
                r["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut expected: Vec<(u64, String, String)> = broken_rows()
        .into_iter()
        .map(|(_, record, column, reason)| (record, column.into(), reason.into()))
        .collect();
    expected.extend([
        (15, "email".into(), "duplicate_email".into()),
        (16, "email".into(), "duplicate_email".into()),
        (17, "season_index".into(), "not_an_integer".into()),
        (18, "season_index".into(), "out_of_range".into()),
        (19, "coupon_uses".into(), "out_of_range".into()),
        (21, "external_id".into(), "invalid_utf8".into()),
    ]);
    assert_eq!(found, expected);
    assert_eq!(
        report["rows"],
        serde_json::json!({"read": 20, "valid": 1, "rejected": 19})
    );
    assert!(
        !out.stdout.contains("user2 at"),
        "emails are masked: {}",
        out.stdout
    );

    // Human output names the record and reason; a clean file exits 0.
    let human = env.run(&["validate", file.to_str().unwrap(), "--today", "2026-06-01"]);
    assert!(
        human.stdout.contains("record 6: expiry_date date_in_past"),
        "{}",
        human.stdout
    );
    let clean = env.write("clean.csv", csv(rows(1..5)));
    let out = env.run(&[
        "validate",
        clean.to_str().unwrap(),
        "--json",
        "--today",
        "2026-06-01",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["rejections"], serde_json::json!([]));
}

#[tokio::test]
async fn a_rejected_row_never_changes_its_subscribers_traits() {
    let env = Env::new();
    let exports = env.path("exports");
    env.write("exports/export.csv", csv(rows(1..30)));
    let (code, report) = env.sync(&folder(&exports), &[]);
    assert_eq!((code, counts(&report).1), (0, [29, 0, 0, 0]), "{report}");
    let mut before = Vec::new();
    for i in 1..30 {
        before.push(env.traits(&format!("user{i}@example.com")).await.unwrap());
    }

    // The same subscribers, 1..=13 each broken in one way (their records change
    // other fields too), 14 twice; --no-guards so the share of rejections does not
    // refuse the run. The rows without a readable email (1, 2) identify nobody, so
    // subscribers 1 and 2 are also listed validly at the end.
    let mut lines: Vec<String> = broken_rows()
        .into_iter()
        .map(|(line, ..)| line.replace("Campaign", "Changed"))
        .collect();
    lines.push(row(14).replace("COUPON14", "OTHER"));
    lines.push(row(14));
    lines.extend(rows(15..30));
    lines.extend(rows(1..3));
    env.write("exports/export.csv", csv(lines));
    let (code, report) = env.sync(&folder(&exports), &["--no-guards"]);
    assert_eq!(outcome(code, &report), (0, "applied"), "{report}");
    assert_eq!(counts(&report), ([32, 17, 15], [0, 0, 17, 0]), "{report}");

    for (i, old) in (1..30).zip(&before) {
        let now = env.traits(&format!("user{i}@example.com")).await.unwrap();
        assert_eq!(
            &now, old,
            "user{i}: rejected or unchanged rows leave the stored traits alone"
        );
    }
    let run_id = report["run_id"].as_i64().unwrap();
    let rejections = env.rejections(run_id).await;
    let found: Vec<(u64, &str, &str)> = rejections
        .iter()
        .map(|r| (r.record, r.column.as_str(), r.reason.as_str()))
        .collect();
    let mut expected: Vec<(u64, &str, &str)> = broken_rows()
        .iter()
        .map(|(_, record, c, r)| (*record, *c, *r))
        .collect();
    expected.extend([
        (15, "email", "duplicate_email"),
        (16, "email", "duplicate_email"),
    ]);
    assert_eq!(found, expected);
    assert!(
        rejections
            .iter()
            .all(|r| !r.value.as_deref().unwrap_or("").contains("user2 at")),
        "masked"
    );
}

#[tokio::test]
async fn a_first_load_keeps_no_row_of_a_repeated_email() {
    let env = Env::new();
    // Subscriber 5 three times (the first and last rows alike), 7 twice: every one of
    // their records is rejected, and neither is stored; the other 18 are.
    let mut lines = rows(1..21);
    lines.insert(9, row(5).replace("COUPON5", "OTHER"));
    lines.push(row(7));
    lines.push(row(5));
    env.write("exports/export.csv", csv(lines));
    let (code, report) = env.sync(&folder(&env.path("exports")), &["--no-guards"]);
    assert_eq!(outcome(code, &report), (0, "applied"), "{report}");
    assert_eq!(counts(&report), ([23, 18, 5], [18, 0, 0, 0]), "{report}");
    assert_eq!(env.present().await, 18);
    assert_eq!(env.traits("user5@example.com").await, None);
    assert_eq!(env.traits("user7@example.com").await, None);
    assert!(env.traits("user6@example.com").await.is_some());
    let run_id = report["run_id"].as_i64().unwrap();
    let rejected = rejected_records(&env, run_id).await;
    let duplicate = |record| (record, "duplicate_email".to_string());
    assert_eq!(
        rejected,
        [
            duplicate(6),
            duplicate(8),
            duplicate(11),
            duplicate(23),
            duplicate(24)
        ]
    );
}

/// A first load writes its valid rows as it reads them (both stores): an email whose
/// first record is rejected and whose later one is valid, and an email written before
/// its repeat came, are caught all the same, every record rejected, nothing stored.
#[tokio::test]
async fn a_first_load_catches_a_repeat_after_a_rejected_record_or_a_written_row() {
    let env = Env::new();
    let mut lines = rows(1..11);
    // user3's first record has no offer (rejected), its second is valid; user4's
    // first is valid and written, its second valid too.
    lines[2] = row(3).replace("S000000003_PL", "");
    lines.push(row(3));
    lines.push(row(4).replace("COUPON4", "OTHER"));
    env.write("exports/export.csv", csv(lines));
    let (code, report) = env.sync(&folder(&env.path("exports")), &["--no-guards"]);
    assert_eq!(outcome(code, &report), (0, "applied"), "{report}");
    assert_eq!(counts(&report), ([12, 8, 4], [8, 0, 0, 0]), "{report}");
    assert_eq!(env.present().await, 8);
    assert_eq!(env.traits("user3@example.com").await, None);
    assert_eq!(env.traits("user4@example.com").await, None);
    let run_id = report["run_id"].as_i64().unwrap();
    let duplicates: Vec<u64> = rejected_records(&env, run_id)
        .await
        .into_iter()
        .filter(|(_, reason)| reason == "duplicate_email")
        .map(|(record, _)| record)
        .collect();
    assert_eq!(duplicates, [4, 5, 12, 13]);
}

/// The night after a first load most rows are stored as they are, and are recognised
/// as such without being staged (PostgreSQL marks them). An email that repeats must
/// still be caught with every record of it, the subscriber kept as stored, and only
/// the subscriber truly absent taken as removed.
#[tokio::test]
async fn a_repeated_email_among_unchanged_rows_is_caught_and_nobody_else_is_removed() {
    let env = Env::new();
    env.write("exports/2026-01-01.csv", csv(rows(1..22)));
    let source = folder(&env.path("exports"));
    let (code, report) = env.sync(&source, &[]);
    assert_eq!(outcome(code, &report), (0, "applied"), "{report}");
    let (t5, t7) = (
        env.traits("user5@example.com").await.unwrap(),
        env.traits("user7@example.com").await.unwrap(),
    );

    // user3 gone; user5 twice alike; user7 as stored, then again changed.
    let mut lines = rows(1..22);
    lines.remove(2);
    lines.push(row(5));
    lines.push(row(7).replace("COUPON7", "SPRING"));
    env.write("exports/2026-01-02.csv", csv(lines));
    let (code, report) = env.sync(&source, &["--no-guards"]);
    assert_eq!(outcome(code, &report), (0, "applied"), "{report}");
    assert_eq!(counts(&report), ([22, 18, 4], [0, 0, 18, 1]), "{report}");
    let run2 = report["run_id"].as_i64().unwrap();
    let rejected = rejected_records(&env, run2).await;
    let duplicate = |record| (record, "duplicate_email".to_string());
    assert_eq!(
        rejected,
        [duplicate(5), duplicate(7), duplicate(22), duplicate(23)]
    );
    assert_eq!(env.present().await, 20);
    assert_eq!(
        env.traits("user3@example.com").await.unwrap().removed_run,
        Some(run2)
    );
    assert_eq!(env.traits("user5@example.com").await.unwrap(), t5);
    assert_eq!(env.traits("user7@example.com").await.unwrap(), t7);
}

/// A run's stored rejections as (record, reason).
async fn rejected_records(env: &Env, run_id: i64) -> Vec<(u64, String)> {
    env.rejections(run_id)
        .await
        .into_iter()
        .map(|r| (r.record, r.reason.as_str().to_string()))
        .collect()
}

/// `validate big.csv | head -1`: the reader stops early, and the command ends quietly
/// (by SIGPIPE, as other command-line tools do), not with a panic on its next line.
#[cfg(unix)]
#[test]
fn validate_piped_into_a_reader_that_stops_early_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let env = Env::new();
    let bad: Vec<String> = (1..2_000)
        .map(|i| row(i).replace("2099-", "1999-"))
        .collect();
    env.write("bad.csv", csv(bad));
    let mut child = env
        .command(&["validate", env.path("bad.csv").to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("1999 rejected"), "{first}");
    // The reader is gone: the rest of the report has nowhere to go.
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        output.status.signal(),
        Some(13),
        "{:?} {stderr}",
        output.status
    );
}
