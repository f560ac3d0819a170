//! One POST of a batch, and what its answer means: acknowledged (2xx), tried again later
//! (no answer in time, a connection cut, 408, 429, a 5xx, anything else unexpected), or
//! refused (any other 4xx: the destination is stopped until an operator resumes it,
//! since sending the same batch again would be refused again). What a receiver says is
//! kept short, with any email in it masked.

use super::sign::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use reqwest::StatusCode;
use std::time::Duration;

/// The most of an error answer's body kept in the message.
const SNIPPET: usize = 200;

/// What became of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A 2xx: the receiver has it.
    Acknowledged,
    /// Not taken this time: send it again after a backoff (at least `after`, from
    /// `Retry-After`, when given).
    Retry {
        /// What happened.
        why: String,
        /// The receiver's `Retry-After`, in seconds.
        after: Option<Duration>,
    },
    /// A 4xx other than 408 and 429: stop until resumed.
    Refused {
        /// What happened.
        why: String,
    },
}

/// A signed batch, ready to send.
pub struct Batch<'a> {
    /// Where.
    pub url: &'a str,
    /// Unix seconds, signed with the body.
    pub timestamp: i64,
    /// The hex signature.
    pub signature: String,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// POSTs a batch within `timeout` (connecting and the answer's body included).
pub async fn send(http: &reqwest::Client, batch: Batch<'_>, timeout: Duration) -> Answer {
    let sent = http
        .post(batch.url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, batch.timestamp.to_string())
        .header(SIGNATURE_HEADER, batch.signature)
        .body(batch.body)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) if e.is_timeout() => {
            return Answer::Retry {
                why: format!("no answer within {}", humantime::format_duration(timeout)),
                after: None,
            };
        }
        // The URL is left out: it may carry a token in its query.
        Err(e) => {
            return Answer::Retry {
                why: format!("cannot send the batch: {}", chain(&e.without_url())),
                after: None,
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Answer::Acknowledged;
    }
    let after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut said = Vec::new();
    while said.len() < SNIPPET {
        match response.chunk().await {
            Ok(Some(chunk)) => said.extend_from_slice(&chunk),
            _ => break,
        }
    }
    said.truncate(SNIPPET);
    // Kept in the store and logged: a receiver that echoes the batch echoes emails.
    let said = crate::redact::mask_emails_in(String::from_utf8_lossy(&said).trim());
    classify(status, after, &said)
}

/// What an answer that is not a 2xx means.
fn classify(status: StatusCode, after: Option<Duration>, said: &str) -> Answer {
    let why = if said.is_empty() {
        format!("answered {status}")
    } else {
        format!("answered {status}: {said}")
    };
    let retried = [StatusCode::REQUEST_TIMEOUT, StatusCode::TOO_MANY_REQUESTS];
    if status.is_client_error() && !retried.contains(&status) {
        return Answer::Refused { why };
    }
    Answer::Retry { why, after }
}

/// An error with its causes, which say what actually went wrong (refused, reset...).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_4xx_stops_the_destination_except_408_and_429() {
        let refused = |code: u16| {
            let status = StatusCode::from_u16(code).expect("a status");
            matches!(classify(status, None, ""), Answer::Refused { .. })
        };
        for code in [400, 401, 403, 404, 410, 413, 422] {
            assert!(refused(code), "{code}");
        }
        for code in [408, 429, 500, 502, 503, 504, 301, 302] {
            assert!(!refused(code), "{code}");
        }
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, None, "no such field"),
            Answer::Refused {
                why: "answered 400 Bad Request: no such field".into()
            }
        );
        assert_eq!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(7)),
                ""
            ),
            Answer::Retry {
                why: "answered 429 Too Many Requests".into(),
                after: Some(Duration::from_secs(7))
            }
        );
    }
}
