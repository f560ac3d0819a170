//! Header spellings, BOM, CRLF, quoting, and a column mapping from the config.

use crate::common::*;

const TEMPLATE_HEADER: &str = "User email*,Offer ID*,Expiry date*,Status*,\
Payment method ID (will be used also for payment gateway)*,Subscription external ID,External properties,\
Season Index (required for seasonal offer),Coupon Code,Campaign name,Coupon Already Used,Region";

#[tokio::test]
async fn the_templates_own_labels_with_bom_crlf_and_quotes_are_read() {
    let env = Env::new();
    let body = format!(
        "\u{feff}{TEMPLATE_HEADER}\r\n\
         Ann@Example.com,S123456789_PL,2099-10-30,Active,7,legacy-1,\"{{\"\"plan\"\":\"\"a, b\"\"}}\",1,Free4Me,\"Winter, \"\"cold\"\" season\",1,EU\r\n\
         bob@example.com,S123456789_PL,2099-10-30,stopped,8,,,,,,,\r\n"
    );
    env.write("exports/cleeng.csv", body);
    let (code, report) = env.sync(&folder(&env.path("exports")), &[]);
    assert_eq!(
        (code, counts(&report)),
        (0, ([2, 2, 0], [2, 0, 0, 0])),
        "{report}"
    );

    let ann = env.traits("ann@example.com").await.unwrap();
    assert_eq!(ann.status, "active");
    assert_eq!(ann.payment_method_id, 7);
    assert_eq!(
        ann.campaign_name.as_deref(),
        Some("Winter, \"cold\" season")
    );
    assert_eq!(
        ann.external_properties,
        Some(serde_json::json!({"plan": "a, b"}))
    );
    assert_eq!(ann.extra, Some(serde_json::json!({"Region": "EU"})));
    let bob = env.traits("bob@example.com").await.unwrap();
    assert_eq!(
        (bob.external_id, bob.season_index, bob.extra),
        (None, None, None),
        "empty cells are NULL"
    );
}

#[tokio::test]
async fn a_column_mapping_from_the_config_is_used() {
    let env = Env::new();
    env.write(
        "exports/cleeng.csv",
        "Customer Email,Plan,Renews On,State,PM\nann@example.com,S123456789_PL,2099-01-01,active,3\n",
    );
    let config = env.write(
        "cleeng-sync.toml",
        format!(
            "[[connector]]\nid = \"default\"\nsource = \"{}\"\n[connector.columns]\n\
             email = \"Customer Email\"\noffer_id = \"Plan\"\nexpiry_date = \"Renews On\"\nstatus = \"State\"\npayment_method_id = \"PM\"\n",
            env.path("exports").display()
        ),
    );
    let out = env.run(&["--config", config.to_str().unwrap(), "sync", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(counts(&out.json()).1, [1, 0, 0, 0]);
    assert_eq!(
        env.traits("ann@example.com")
            .await
            .unwrap()
            .payment_method_id,
        3
    );
}

#[tokio::test]
async fn a_missing_mandatory_column_fails_naming_it() {
    let env = Env::new();
    env.write(
        "exports/cleeng.csv",
        "User email*,Offer ID*,Status*,Region\nann@example.com,S1,active,EU\n",
    );
    let (code, report) = env.sync(&folder(&env.path("exports")), &[]);
    assert_eq!(outcome(code, &report), (1, "failed"), "{report}");
    let message = report["message"].as_str().unwrap();
    assert!(
        message.contains("Expiry date*") && message.contains("Payment method ID"),
        "{message}"
    );
    assert!(message.contains("Region"), "says what was found: {message}");

    let file = env.path("exports/cleeng.csv");
    let out = env.run(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("Expiry date*"), "{}", out.stdout);
}

#[test]
fn unknown_config_keys_are_a_usage_error_naming_the_key() {
    let env = Env::new();
    let config = env.write(
        "bad.toml",
        "[[connector]]\nid = \"a\"\nsource = \"/tmp\"\nmax_rejected = 0.5\n",
    );
    let out = env.run(&["--config", config.to_str().unwrap(), "sync"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("max_rejected"), "{}", out.stderr);
}

#[test]
fn an_unsupported_store_url_is_a_usage_error_without_its_password() {
    let env = Env::new();
    let out = env.run(&["runs", "--store", "mysql://app:hunter2@db/traits"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("mysql://app:***@db/traits"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
}
