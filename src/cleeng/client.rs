//! A small client of Cleeng's Core API 3.1: the publisher token in `X-Publisher-Token`,
//! one connection pool per process, a timeout per request, and retries only where
//! Cleeng cannot have applied the request.
//!
//! Retries: a request that never reached Cleeng (the connection was refused or could
//! not be made), or that Cleeng answered 429 or 503, is tried again up to
//! `max_attempts`, after `Retry-After` when Cleeng sends one (bounded by
//! [`MAX_RETRY_WAIT`]). A lookup (GET) changes nothing and is also tried again after a
//! timeout or another 5xx. A POST or PATCH whose answer was lost after it was sent (a
//! timeout, a reset, another 5xx) is never repeated: [`CleengError::Lost`].

use super::error::{CleengError, with_attempts};
use crate::config::CleengSettings;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::{debug, warn};

/// The longest `Retry-After` that is waited for; asked for longer, the request fails.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// The publisher (Broadcaster) token. Never printed: `Debug` shows `***`.
#[derive(Clone)]
pub struct PublisherToken(Arc<str>);

impl PublisherToken {
    /// The token in the environment variable `var`; `None` when it is unset or empty.
    pub fn from_env(var: &str) -> Option<PublisherToken> {
        std::env::var(var)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(|v| PublisherToken(v.into()))
    }
}

impl fmt::Debug for PublisherToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublisherToken(***)")
    }
}

/// A 2xx answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status.
    pub status: u16,
    /// Its body as JSON (`null` when empty or not JSON).
    pub body: Value,
}

/// The client of one connector's Cleeng account.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    api_url: String,
    token: PublisherToken,
    token_env: String,
    timeout: Duration,
    max_attempts: u32,
}

/// One connection pool for the whole process: connectors and requests share it.
fn shared_http() -> Result<reqwest::Client, String> {
    static HTTP: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    HTTP.get_or_init(|| {
        reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("cleeng-sync/", env!("CARGO_PKG_VERSION")))
            // A redirect could repeat a POST elsewhere: Cleeng's API does not redirect.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    })
    .clone()
}

/// What one attempt came to.
enum Attempt {
    Done(Result<Answer, CleengError>),
    /// Worth another attempt: why, after how long (when Cleeng said), and the error to
    /// end with if none is left.
    Again {
        wait: Option<Duration>,
        last: CleengError,
    },
}

impl Client {
    /// The client of these settings, with the token from their variable.
    pub fn new(settings: &CleengSettings) -> Result<Client, CleengError> {
        let token =
            PublisherToken::from_env(&settings.token_env).ok_or_else(|| CleengError::NoToken {
                var: settings.token_env.clone(),
            })?;
        let http = shared_http().map_err(|reason| CleengError::Unreachable {
            attempts: 0,
            reason,
        })?;
        Ok(Client {
            http,
            api_url: settings.api_url.clone(),
            token,
            token_env: settings.token_env.clone(),
            timeout: settings.timeout,
            max_attempts: settings.max_attempts.max(1),
        })
    }

    /// Whether Cleeng accepts the token: a cheap authenticated GET (a list of
    /// subscriptions without a filter, which Cleeng answers empty).
    pub async fn check_token(&self) -> Result<(), CleengError> {
        let mut attempts = 0;
        self.call(
            Method::GET,
            "/subscriptions",
            &[("limit", "1")],
            None,
            &mut attempts,
        )
        .await
        .map(|_| ())
    }

    /// The URL of a path under the API, with query pairs.
    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, CleengError> {
        let mut url =
            Url::parse(&format!("{}{path}", self.api_url)).map_err(|e| CleengError::BadAnswer {
                what: path.into(),
                reason: format!("the api_url does not make a URL: {e}"),
            })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends a request, tried again as the module doc says. `attempts` counts every
    /// request sent (or tried), across calls.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        attempts: &mut u32,
    ) -> Result<Answer, CleengError> {
        let url = self.url(path, query)?;
        let mut tried = 0;
        loop {
            tried += 1;
            *attempts += 1;
            let (wait, last) = match self.attempt(&method, &url, body).await {
                Attempt::Done(result) => return result,
                Attempt::Again { wait, last } => (wait, with_attempts(last, tried)),
            };
            if tried >= self.max_attempts {
                return Err(last);
            }
            let wait = match wait {
                Some(wait) if wait > MAX_RETRY_WAIT => {
                    return Err(CleengError::Busy {
                        status: last.http_status().unwrap_or(503),
                        attempts: tried,
                        wait: format!(
                            "; it asked to wait {}s, longer than {}s",
                            wait.as_secs(),
                            MAX_RETRY_WAIT.as_secs()
                        ),
                    });
                }
                Some(wait) => wait,
                None => backoff(tried),
            };
            warn!(
                %method, path, attempt = tried, wait_ms = wait.as_millis() as u64,
                "Cleeng: trying again ({last})"
            );
            crate::metrics::cleeng_retry(path_label(path));
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, method: &Method, url: &Url, body: Option<&Value>) -> Attempt {
        let lookup = *method == Method::GET;
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .timeout(self.timeout)
            .header("X-Publisher-Token", &*self.token.0)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return self.transport_error(&e, lookup),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        // The body is read whatever the status: an error's code is in it.
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) if status.is_success() && !lookup => {
                // Cleeng answered 2xx: the change is applied, whatever its body said.
                debug!("Cleeng's 2xx body was cut: {e}");
                String::new()
            }
            Err(e) => return self.transport_error(&e, lookup),
        };
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = status.as_u16();
        if status.is_success() {
            return Attempt::Done(Ok(Answer { status: code, body }));
        }
        match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Attempt::Again {
                wait: retry_after,
                last: CleengError::Busy {
                    status: code,
                    attempts: 0,
                    wait: String::new(),
                },
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Attempt::Done(Err(CleengError::TokenRefused {
                    status: code,
                    var: self.token_env.clone(),
                }))
            }
            s if s.is_client_error() => {
                let (code_text, message) = error_of(&body, &text);
                Attempt::Done(Err(CleengError::Refused {
                    status: code,
                    code: code_text.unwrap_or_else(|| format!("http_{code}")),
                    message,
                }))
            }
            _ if lookup => Attempt::Again {
                wait: retry_after,
                last: CleengError::LookupFailed {
                    attempts: 0,
                    reason: format!("HTTP {code}"),
                },
            },
            _ => Attempt::Done(Err(CleengError::Lost {
                reason: format!("Cleeng answered HTTP {code}"),
                status: Some(code),
            })),
        }
    }

    /// A request that got no answer: never sent (worth another try), or sent and lost.
    fn transport_error(&self, e: &reqwest::Error, lookup: bool) -> Attempt {
        let reason = describe(e);
        if e.is_connect() {
            return Attempt::Again {
                wait: None,
                last: CleengError::Unreachable {
                    attempts: 0,
                    reason,
                },
            };
        }
        if lookup {
            return Attempt::Again {
                wait: None,
                last: CleengError::LookupFailed {
                    attempts: 0,
                    reason,
                },
            };
        }
        let reason = if e.is_timeout() {
            format!("no answer within {}s", self.timeout.as_secs_f64())
        } else {
            reason
        };
        Attempt::Done(Err(CleengError::Lost {
            reason,
            status: None,
        }))
    }
}

/// The wait before attempt `tried + 1` when Cleeng did not say: 250 ms, doubling.
fn backoff(tried: u32) -> Duration {
    Duration::from_millis(250u64 << tried.saturating_sub(1).min(4))
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Cleeng's error code and message: `code`/`message`, or those of `errors[0]`.
fn error_of(body: &Value, text: &str) -> (Option<String>, String) {
    let first = body.get("errors").and_then(|e| e.get(0));
    let pick = |name: &str| {
        body.get(name)
            .or_else(|| first.and_then(|f| f.get(name)))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    };
    let message = pick("message")
        .or_else(|| first.and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| crate::redact::truncate_chars(text.trim(), 200));
    (pick("code"), message)
}

/// What went wrong and its causes, without the URL (its query may carry an email).
fn describe(e: &reqwest::Error) -> String {
    let text = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the answer's body was cut"
    } else {
        "the request failed"
    }
    .to_string();
    crate::error::with_causes(text, std::error::Error::source(e))
}

/// The path as a metric label: ids replaced, so that the label set stays small. Each
/// label but `other` is one of [`CLEENG_ENDPOINTS`](crate::metrics::CLEENG_ENDPOINTS),
/// whose series exist from the start.
fn path_label(path: &str) -> &'static str {
    if path.starts_with("/subscription_switches") {
        "subscription_switches"
    } else if path.starts_with("/subscriptions/") {
        "subscription"
    } else if path.starts_with("/subscriptions") {
        "subscriptions"
    } else if path.starts_with("/entitlements") {
        "entitlements"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CLEENG_ENDPOINTS;
    use std::sync::Mutex;
    use tracing_subscriber::fmt::MakeWriter;

    /// The log lines of a test, as a person reads them.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("logs").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Logs {
        type Writer = Logs;

        fn make_writer(&'a self) -> Logs {
            self.clone()
        }
    }

    #[tokio::test]
    async fn each_retry_warning_says_how_many_attempts_were_made() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let client = Client {
            http: shared_http().expect("an HTTP client"),
            api_url: format!("http://127.0.0.1:{port}/3.1"),
            token: PublisherToken("t".into()),
            token_env: "CLEENG_SYNC_PUBLISHER_TOKEN".into(),
            timeout: Duration::from_secs(2),
            max_attempts: 3,
        };
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let mut attempts = 0;
        let failed = client
            .call(Method::GET, "/subscriptions", &[], None, &mut attempts)
            .await
            .expect_err("nothing listens there");
        assert!(
            failed.to_string().contains("after 3 attempt(s)"),
            "{failed}"
        );
        let text = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
        assert!(
            text.contains("after 1 attempt(s)") && text.contains("after 2 attempt(s)"),
            "{text}"
        );
        assert!(!text.contains("after 0 attempt"), "{text}");
    }

    #[test]
    fn every_label_of_the_actions_paths_has_its_series_created_up_front() {
        for path in [
            "/subscriptions?externalId=x",
            "/subscriptions/12",
            "/subscription_switches/12",
            "/entitlements?customerEmail=a",
        ] {
            assert!(CLEENG_ENDPOINTS.contains(&path_label(path)), "{path}");
        }
    }
    use serde_json::json;

    #[test]
    fn cleeng_error_codes_are_read_from_either_shape() {
        let (code, message) = error_of(
            &json!({"code": "SWITCH_NOT_DEFINED_IN_SWITCH_SETTINGS", "message": "no"}),
            "",
        );
        assert_eq!(
            (code.as_deref(), message.as_str()),
            (Some("SWITCH_NOT_DEFINED_IN_SWITCH_SETTINGS"), "no")
        );
        let (code, message) = error_of(
            &json!({"errors": [{"code": "VALIDATION_ERROR", "message": "bad couponCode"}]}),
            "",
        );
        assert_eq!(
            (code.as_deref(), message.as_str()),
            (Some("VALIDATION_ERROR"), "bad couponCode")
        );
        let (code, message) = error_of(&Value::Null, "  Not found  ");
        assert_eq!((code, message.as_str()), (None, "Not found"));
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(50), Duration::from_millis(4000));
    }

    #[test]
    fn the_token_is_never_printed() {
        let token = PublisherToken("secret-publisher-token".into());
        assert_eq!(format!("{token:?}"), "PublisherToken(***)");
    }
}
