//! A connector on an S3 prefix in LocalStack, from the first snapshot to a changed one.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn snapshots_are_applied_detected_as_unchanged_and_diffed_by_row() {
    let bucket = Bucket::new().await;
    let env = Env::new();
    let source = bucket.url("cleeng/");
    let first = csv(rows(1..21));
    bucket.put("cleeng/2026-01-01.csv", first.clone()).await;
    bucket
        .put("elsewhere/2026-01-09.csv", csv(rows(100..101)))
        .await;
    bucket.put("cleeng/notes.txt", "not an export").await;

    // A first snapshot: every subscriber inserted, every stored field as exported.
    let (code, report) = env.sync(&source, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["outcome"], "applied");
    assert_eq!(report["connector"], "default");
    assert_eq!(report["object"]["key"], "cleeng/2026-01-01.csv");
    assert_eq!(report["object"]["size"], first.len());
    assert_eq!(counts(&report), ([20, 20, 0], [20, 0, 0, 0]));
    let run1 = report["run_id"].as_i64().unwrap();
    let t7 = env.traits("user7@example.com").await.expect("user7 stored");
    assert_eq!(
        serde_json::to_value(&t7).unwrap(),
        json!({
            "connector": "default", "email": "user7@example.com", "offer_id": "S000000007_PL",
            "offer_country": "PL", "offer_plan": null, "expiry_date": "2099-08-08", "status": "stopped", "payment_method_id": 107,
            "external_id": "ext-7", "external_properties": {"tier": "t7"}, "season_index": 2,
            "coupon_code": "COUPON7", "campaign_name": "Campaign 7", "coupon_uses": 3,
            "extra": null, "row_hash": t7.row_hash, "first_seen_run": run1, "changed_run": run1,
            "removed_run": null, "updated_at": t7.updated_at, "live_at": null, "live_source": null,
        })
    );

    // No new object: unchanged, nothing downloaded.
    let (code, report) = env.sync(&source, &[]);
    assert_eq!(outcome(code, &report), (0, "unchanged"), "{report}");
    assert_eq!(counts(&report).0, [0, 0, 0]);

    // The same bytes under a new key: unchanged by content, nothing written.
    bucket.put("cleeng/2026-01-02.csv", first.clone()).await;
    let (code, report) = env.sync(&source, &[]);
    assert_eq!(outcome(code, &report), (0, "unchanged"), "{report}");
    assert_eq!(report["object"]["key"], "cleeng/2026-01-02.csv");
    assert_eq!(counts(&report).0, [20, 20, 0]);
    assert_eq!(env.traits("user7@example.com").await.unwrap(), t7);

    // A changed snapshot: user1 gone, user2 changed, user21 new, the rest the same.
    let mut changed = rows(3..22);
    changed.push(row(2).replace("COUPON2", "SPRING"));
    bucket.put("cleeng/2026-01-03.csv", csv(changed)).await;
    let (code, report) = env.sync(&source, &[]);
    assert_eq!(outcome(code, &report), (0, "applied"), "{report}");
    assert_eq!(counts(&report), ([20, 20, 0], [1, 1, 18, 1]));
    let run3 = report["run_id"].as_i64().unwrap();

    let gone = env.traits("user1@example.com").await.unwrap();
    assert_eq!(
        gone.removed_run,
        Some(run3),
        "absent subscribers are marked, never deleted"
    );
    let updated = env.traits("user2@example.com").await.unwrap();
    assert_eq!(
        (
            updated.coupon_code.as_deref(),
            updated.changed_run,
            updated.first_seen_run
        ),
        (Some("SPRING"), run3, run1)
    );
    let new = env.traits("user21@example.com").await.unwrap();
    assert_eq!(
        (new.first_seen_run, new.changed_run, new.removed_run),
        (run3, run3, None)
    );
    assert_eq!(
        env.traits("user7@example.com").await.unwrap(),
        t7,
        "untouched, updated_at included"
    );

    // A subscriber who comes back is present again.
    bucket.put("cleeng/2026-01-04.csv", csv(rows(1..22))).await;
    let (_, report) = env.sync(&source, &[]);
    assert_eq!(counts(&report).1, [0, 2, 19, 0], "{report}");
    assert_eq!(
        env.traits("user1@example.com").await.unwrap().removed_run,
        None
    );

    // The ledger lists every run, newest first.
    let runs = env.run(&["runs", "--json"]).json();
    let outcomes: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["applied", "applied", "unchanged", "unchanged", "applied"]
    );
    assert_eq!(runs[0]["trigger"], "manual");
}

#[tokio::test]
async fn gzip_and_folder_exports_give_the_same_result_as_a_plain_object() {
    let bucket = Bucket::new().await;
    let mut export = csv(rows(1..31));
    export.push_str("broken@example.com,S1,2099-01-01,paused,1,,,,,,\n");

    let plain = Env::new();
    bucket.put("plain/export.csv", export.clone()).await;
    let zipped = Env::new();
    bucket
        .put("zipped/export.csv.gz", gzip(export.as_bytes()))
        .await;
    let local = Env::new();
    local.write("exports/export.csv", &export);

    let (_, a) = plain.sync(&bucket.url("plain/"), &[]);
    let (_, b) = zipped.sync(&bucket.url("zipped/"), &[]);
    let (_, c) = local.sync(&folder(&local.path("exports")), &[]);
    for report in [&a, &b, &c] {
        assert_eq!(report["outcome"], "applied", "{report}");
        assert_eq!(counts(report), ([31, 30, 1], [30, 0, 0, 0]));
        assert_eq!(
            report["object"]["sha256"], a["object"]["sha256"],
            "the digest is of the CSV content"
        );
    }
    for i in [1, 15, 30] {
        let email = format!("user{i}@example.com");
        let strip = |t: cleeng_sync::store::StoredTraits| {
            (
                t.email,
                t.offer_id,
                t.expiry_date,
                t.row_hash,
                t.external_properties,
                t.coupon_uses,
            )
        };
        let x = strip(plain.traits(&email).await.unwrap());
        assert_eq!(x, strip(zipped.traits(&email).await.unwrap()));
        assert_eq!(x, strip(local.traits(&email).await.unwrap()));
    }
}

#[tokio::test]
async fn the_newest_export_wins_and_object_picks_another() {
    let bucket = Bucket::new().await;
    let env = Env::new();
    bucket.put("p/a.csv", csv(rows(1..3))).await;
    bucket.put("p/b.csv", csv(rows(1..4))).await;
    let (_, report) = env.sync(&bucket.url("p/"), &[]);
    assert_eq!(
        report["object"]["key"], "p/b.csv",
        "same second: the later key is newest"
    );

    let (code, report) = env.sync(&bucket.url("p/"), &["--object", "p/a.csv", "--no-guards"]);
    assert_eq!(
        (code, report["object"]["key"].as_str()),
        (0, Some("p/a.csv")),
        "{report}"
    );
    assert_eq!(counts(&report).1, [0, 0, 2, 1]);

    let (code, report) = env.sync(&bucket.url("p/"), &["--object", "p/missing.csv"]);
    assert_eq!(outcome(code, &report), (1, "failed"));
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("p/missing.csv"),
        "{report}"
    );
}

#[tokio::test]
async fn an_empty_prefix_is_no_export_and_dry_run_writes_nothing() {
    let bucket = Bucket::new().await;
    let env = Env::new();
    let (code, report) = env.sync(&bucket.url("none/"), &[]);
    assert_eq!(outcome(code, &report), (0, "no_export"), "{report}");

    bucket.put("none/x.csv", csv(rows(1..5))).await;
    let (code, report) = env.sync(&bucket.url("none/"), &["--dry-run"]);
    assert_eq!(outcome(code, &report), (0, "dry_run"), "{report}");
    assert_eq!(counts(&report).1, [4, 0, 0, 0]);
    assert_eq!(env.traits("user1@example.com").await, None);

    // The dry run did not count as applied: the next run applies.
    let (_, report) = env.sync(&bucket.url("none/"), &[]);
    assert_eq!(report["outcome"], "applied");
    // --force applies an unchanged export again, changing nothing.
    let (_, report) = env.sync(&bucket.url("none/"), &["--force"]);
    assert_eq!(
        (report["outcome"].as_str(), counts(&report).1),
        (Some("applied"), [0, 0, 4, 0])
    );
}

#[tokio::test]
async fn delta_mode_applies_every_new_export_in_order_and_removes_nobody() {
    let bucket = Bucket::new().await;
    let env = Env::new();
    let config = env.write(
        "delta.toml",
        format!(
            "[[connector]]\nid = \"default\"\nsource = \"{}\"\nmode = \"delta\"\n",
            bucket.url("d/")
        ),
    );
    let sync = || env.run(&["--config", config.to_str().unwrap(), "sync", "--json"]);
    bucket.put("d/2026-01-01.csv", csv(rows(1..11))).await;
    bucket
        .put(
            "d/2026-01-02.csv",
            csv(vec![row(3).replace("COUPON3", "LATER"), row(11)]),
        )
        .await;

    let out = sync();
    assert_eq!(out.code, 0, "{out:?}");
    let reports = out.json_lines();
    let keys: Vec<&str> = reports
        .iter()
        .map(|r| r["object"]["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["d/2026-01-01.csv", "d/2026-01-02.csv"],
        "oldest first, each its own run"
    );
    assert_eq!(counts(&reports[0]).1, [10, 0, 0, 0]);
    assert_eq!(
        counts(&reports[1]).1,
        [1, 1, 0, 0],
        "a delta removes nobody"
    );
    assert_eq!(
        env.traits("user3@example.com")
            .await
            .unwrap()
            .coupon_code
            .as_deref(),
        Some("LATER")
    );
    assert_eq!(
        env.traits("user1@example.com").await.unwrap().removed_run,
        None
    );

    let out = sync();
    assert_eq!(out.json()["outcome"], "unchanged", "{out:?}");

    // --force with nothing new re-applies the newest export, changing nothing.
    let out = env.run(&[
        "--config",
        config.to_str().unwrap(),
        "sync",
        "--json",
        "--force",
    ]);
    let report = out.json();
    assert_eq!(outcome(out.code, &report), (0, "applied"), "{report}");
    assert_eq!(
        (report["object"]["key"].as_str(), counts(&report).1),
        (Some("d/2026-01-02.csv"), [0, 0, 2, 0])
    );

    bucket.put("d/2026-01-03.csv", csv(vec![row(12)])).await;
    let report = sync().json();
    assert_eq!(
        (report["object"]["key"].as_str(), counts(&report).1),
        (Some("d/2026-01-03.csv"), [1, 0, 0, 0])
    );
}

#[tokio::test]
async fn check_lists_the_source_reads_the_header_and_opens_the_store() {
    let bucket = Bucket::new().await;
    let env = Env::new();
    bucket
        .put(
            "c/2026-01-01.csv.gz",
            gzip(format!("{HEADER},Region\n{}\n", row(1)).as_bytes()),
        )
        .await;
    let out = env.run(&["check", "--source", &bucket.url("c/")]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("1 export(s), newest c/2026-01-01.csv.gz"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("extra columns kept: Region"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("no runs yet"), "{}", out.stdout);

    bucket
        .put("c/2026-01-02.csv", "User email*,Status*\nx@y.z,active\n")
        .await;
    let out = env.run(&["check", "--source", &bucket.url("c/")]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("FAILED") && out.stdout.contains("Offer ID*"),
        "{}",
        out.stdout
    );

    let out = env.run(&["check", "--source", "s3://no-such-bucket-here/x/"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("cannot list s3://no-such-bucket-here/x/"),
        "{}",
        out.stdout
    );
}

/// Any export above 8 MiB arrives in parts, with a checksum per part that no download
/// can check whole: a healthy night of one logs no warning all the same.
#[tokio::test]
async fn an_export_uploaded_in_parts_syncs_without_a_warning() {
    let bucket = Bucket::new().await;
    let env = Env::new();
    let export = csv(rows(0..120_000));
    assert!(
        export.len() > 11 << 20,
        "three parts: {} bytes",
        export.len()
    );
    bucket
        .put_multipart("cleeng/2026-01-01.csv", export.as_bytes(), 5 << 20)
        .await;
    let listed = bucket
        .client
        .head_object()
        .bucket(&bucket.name)
        .key("cleeng/2026-01-01.csv")
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .expect("head the object");
    assert!(
        listed.e_tag().is_some_and(|e| e.ends_with("-3\"")),
        "a multipart ETag: {:?}",
        listed.e_tag()
    );
    assert!(
        listed.checksum_crc32().is_some_and(|c| c.ends_with("-3")),
        "a composite checksum: {:?}",
        listed.checksum_crc32()
    );

    let out = env.run(&["sync", "--source", &bucket.url("cleeng/"), "--json", "-v"]);
    assert_eq!(out.code, 0, "{out:?}");
    let report = out.json();
    assert_eq!(report["outcome"], "applied", "{report}");
    assert_eq!(report["rows"]["valid"], 120_000);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|line| line.contains(r#""level":"WARN""#))
        .collect();
    assert!(warnings.is_empty(), "warnings: {warnings:#?}");
    // What the run checks instead is said, at debug.
    assert!(out.stderr.contains("uploaded in 3 parts"), "{}", out.stderr);
}
