//! The guards refuse suspicious exports with exit 3 and change nothing;
//! `--no-guards` applies them.

use crate::common::*;

/// A store holding subscribers 1..=100 from a first export in `exports/`.
async fn seeded() -> (Env, String) {
    let env = Env::new();
    env.write("exports/export.csv", csv(rows(1..101)));
    let source = folder(&env.path("exports"));
    let (code, report) = env.sync(&source, &[]);
    assert_eq!((code, counts(&report).1), (0, [100, 0, 0, 0]), "{report}");
    (env, source)
}

async fn assert_untouched(env: &Env) {
    for i in [1, 50, 99, 100] {
        let t = env.traits(&format!("user{i}@example.com")).await.unwrap();
        assert_eq!(
            (t.changed_run, t.removed_run, t.coupon_code),
            (1, None, Some(format!("COUPON{i}")))
        );
    }
}

#[tokio::test]
async fn too_many_rejected_rows_are_refused() {
    let (env, source) = seeded().await;
    // 6 of 100 rows rejected (6% > 5%); every other subscriber changed.
    let mut lines: Vec<String> = rows(1..101)
        .into_iter()
        .map(|r| r.replace("COUPON", "NEW"))
        .collect();
    for line in lines.iter_mut().take(6) {
        *line = line.replace("2099-", "1999-");
    }
    env.write("exports/export.csv", csv(lines));
    let (code, report) = env.sync(&source, &[]);
    assert_eq!(outcome(code, &report), (3, "refused"), "{report}");
    let message = report["message"].as_str().unwrap();
    assert!(
        message.contains("max_rejected_ratio")
            && message.contains("6 of 100")
            && message.contains("6.0%"),
        "{message}"
    );
    assert_untouched(&env).await;

    let (code, report) = env.sync(&source, &["--no-guards"]);
    assert_eq!(outcome(code, &report), (0, "applied"), "{report}");
    assert_eq!(counts(&report), ([100, 94, 6], [0, 94, 0, 0]));
}

/// A first load writes its rows as they stream in: a refusal must still leave nothing.
#[tokio::test]
async fn a_refused_first_load_stores_nothing() {
    let env = Env::new();
    let mut lines = rows(1..101);
    for line in lines.iter_mut().take(6) {
        *line = line.replace("2099-", "1999-");
    }
    env.write("exports/export.csv", csv(lines));
    let source = folder(&env.path("exports"));
    let (code, report) = env.sync(&source, &[]);
    assert_eq!(outcome(code, &report), (3, "refused"), "{report}");
    for i in [7, 50, 100] {
        assert_eq!(env.traits(&format!("user{i}@example.com")).await, None);
    }

    let (code, report) = env.sync(&source, &["--no-guards"]);
    assert_eq!(outcome(code, &report), (0, "applied"), "{report}");
    assert_eq!(counts(&report), ([100, 94, 6], [94, 0, 0, 0]));
    let t = env.traits("user7@example.com").await.expect("stored");
    assert_eq!(t.first_seen_run, report["run_id"].as_i64().unwrap());
}

#[tokio::test]
async fn removing_too_many_subscribers_is_refused() {
    let (env, source) = seeded().await;
    env.write("exports/export.csv", csv(rows(12..101))); // 11 of 100 gone
    let (code, report) = env.sync(&source, &[]);
    assert_eq!(outcome(code, &report), (3, "refused"), "{report}");
    let message = report["message"].as_str().unwrap();
    assert!(
        message.contains("max_removed_ratio") && message.contains("11 of 100"),
        "{message}"
    );
    assert_eq!(
        counts(&report).1,
        [0, 0, 89, 11],
        "a refusal still says what it would have done"
    );
    assert_untouched(&env).await;

    // 10 of 100 is within the limit.
    env.write("exports/export.csv", csv(rows(11..101)));
    let (code, report) = env.sync(&source, &[]);
    assert_eq!((code, counts(&report).1), (0, [0, 0, 90, 10]), "{report}");
}

#[tokio::test]
async fn a_header_only_export_is_refused_unless_guards_are_lifted() {
    let (env, source) = seeded().await;
    env.write("exports/export.csv", csv(Vec::new()));
    let (code, report) = env.sync(&source, &[]);
    assert_eq!(outcome(code, &report), (3, "refused"), "{report}");
    assert!(
        report["message"].as_str().unwrap().contains("empty export"),
        "{report}"
    );
    assert_untouched(&env).await;

    let (code, report) = env.sync(&source, &["--no-guards"]);
    assert_eq!(
        outcome(code, &report),
        (3, "refused"),
        "an empty snapshot is never applied: {report}"
    );
}

#[tokio::test]
async fn guard_limits_come_from_the_config() {
    let (env, _) = seeded().await;
    env.write("exports/export.csv", csv(rows(31..101))); // 30% removed
    let config = env.write(
        "cleeng-sync.toml",
        format!(
            "[[connector]]\nid = \"default\"\nsource = \"{}\"\n[connector.guards]\nmax_removed_ratio = 0.5\n",
            env.path("exports").display()
        ),
    );
    let out = env.run(&["--config", config.to_str().unwrap(), "sync", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(counts(&out.json()).1, [0, 0, 70, 30]);
}
