//! A local stand-in for Cleeng's Core API 3.1, to try the billing actions and the
//! refresh against (the one the integration tests use, `tests/it/standin.rs`). It holds
//! a subscription for three subscribers of the bundled sample export and accepts one
//! publisher token. As at Cleeng, a change shows in its listings a read late (a switch
//! is `pending` first), so an action is confirmed by the second read of the subscriber.
//!
//! ```sh
//! cargo run --example cleeng-standin            # http://127.0.0.1:8787/3.1
//! cargo run --example cleeng-standin -- 127.0.0.1:9000
//! ```

#[path = "../tests/it/standin.rs"]
mod standin;

fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8787".into());
    let cleeng = standin::StandIn::start_on(&address);
    // ann: stopped in the export, but she reactivated on Cleeng's own pages since (a
    // refresh shows it); found by her external id. bob and carla: active, found by email;
    // bob may switch to the annual plan's PL offer. Expiry dates as in the sample export
    // (noon UTC: the same day in Los Angeles).
    let noon = |date: &str| {
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(12, 0, 0))
            .map_or(standin::EXPIRES_2099_01_01, |t| t.and_utc().timestamp())
    };
    let mut ann = standin::subscription(1, "ann@example.com", "S987654321_DE");
    ann.external_id = Some("legacy-1000".into());
    ann.expires_at = noon("2099-03-13");
    let mut bob = standin::subscription(2, "bob@example.com", "S123456789_PL");
    bob.expires_at = noon("2099-06-19");
    let mut carla = standin::subscription(3, "carla@example.com", "S123456789_PL");
    carla.expires_at = noon("2099-02-14");
    cleeng
        .subscription(ann)
        .subscription(bob)
        .subscription(carla)
        .allow_switch("S123456789_PL", "S987654321_PL");
    cleeng.lag(1);
    println!("Cleeng stand-in on {}", cleeng.api_url);
    println!("publisher token: {}", standin::TOKEN);
    println!("Ctrl-C to stop; every request it receives is printed.");
    let mut printed = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let seen = cleeng.seen();
        for request in &seen[printed..] {
            let query = request
                .query
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&");
            println!(
                "{} {}{}{} {}",
                request.method,
                request.path,
                if query.is_empty() { "" } else { "?" },
                query,
                if request.body.is_null() {
                    String::new()
                } else {
                    request.body.to_string()
                }
            );
        }
        printed = seen.len();
    }
}
