//! Cleeng's webhook events as the rest of the program sees them: what the listener
//! keeps of a delivery, the statuses of the inbox, and the outcomes it counts. Nothing
//! here talks HTTP or SQL.
//!
//! The envelope follows Cleeng's pages "Webhook - Subscription Topics"
//! (<https://developers.cleeng.com/reference/webhook-events-subscription>) and "Webhook -
//! General Topics" (<https://developers.cleeng.com/reference/webhook-events-general>):
//! a JSON object of `broadcasterId`, `topic` and a topic-specific `data`, whose subscriber
//! topics carry `customerEmail`, `customerId` and (subscription topics) `subscriptionId`.
//! The pages show `subscriptionId` as a string and `customerId` as a number; both are
//! read either way. Everything else in `data` (a payment topic's card `token` among it)
//! is skipped by the parser unread: it is never held as a value, stored or logged.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The longest topic kept; Cleeng's are camelCase words of a few dozen letters.
pub const MAX_TOPIC: usize = 64;

/// What the inbox keeps of one delivery: the fields the contract lists, never the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `broadcasterId`: the publisher the event is for.
    pub broadcaster_id: Option<i64>,
    /// `topic`, e.g. `subscriptionRenewed`.
    pub topic: String,
    /// `data.customerEmail`, trimmed and lower-cased, when it is an email.
    pub email: Option<String>,
    /// `data.customerId`.
    pub customer_id: Option<i64>,
    /// `data.subscriptionId`.
    pub subscription_id: Option<i64>,
}

/// Why a body is not a Cleeng event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Cleeng webhook: {0}")]
pub struct Malformed(pub &'static str);

/// Only the fields the inbox keeps; serde skips the rest without building values.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    broadcaster_id: Value,
    topic: String,
    data: Data,
}

/// `data`: an object (a derived struct would take an array too), of which three keys are
/// read and every other value skipped unread.
#[derive(Default)]
struct Data {
    customer_email: Option<Value>,
    customer_id: Option<Value>,
    subscription_id: Option<Value>,
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Data, D::Error> {
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = Data;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Data, A::Error> {
                let mut data = Data::default();
                while let Some(key) = map.next_key::<String>()? {
                    let field = match key.as_str() {
                        "customerEmail" => &mut data.customer_email,
                        "customerId" => &mut data.customer_id,
                        "subscriptionId" => &mut data.subscription_id,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    *field = map.next_value()?;
                }
                Ok(data)
            }
        }
        deserializer.deserialize_map(Object)
    }
}

impl Delivery {
    /// Reads a verified body: `{"broadcasterId","topic","data"}` with `data` an object.
    pub fn parse(body: &[u8]) -> Result<Delivery, Malformed> {
        let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
            Malformed(if e.is_data() {
                "the JSON is not {\"broadcasterId\",\"topic\",\"data\"} with data an object"
            } else {
                "the body is not JSON"
            })
        })?;
        let topic = envelope.topic.trim();
        let plain = topic.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if topic.is_empty() || topic.len() > MAX_TOPIC || !plain {
            return Err(Malformed("the topic is not a topic name"));
        }
        let broadcaster_id = match &envelope.broadcaster_id {
            Value::Null => None,
            other => Some(id(other).ok_or(Malformed("broadcasterId is not a number"))?),
        };
        let data = envelope.data;
        Ok(Delivery {
            broadcaster_id,
            topic: topic.to_string(),
            email: data.customer_email.as_ref().and_then(email),
            customer_id: data.customer_id.as_ref().and_then(id),
            subscription_id: data.subscription_id.as_ref().and_then(id),
        })
    }

    /// Why the event names no subscriber to refresh, if it names none.
    pub fn names_nobody(&self) -> Option<String> {
        match self.email {
            Some(_) => None,
            None => Some(format!(
                "names no subscriber: topic {} carries no customerEmail to refresh",
                self.topic
            )),
        }
    }
}

/// A Cleeng id, as a number or a string of digits.
fn id(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) if s.len() <= 19 => s.trim().parse().ok(),
        _ => None,
    }
}

/// An email as the traits key it: trimmed, lower-cased, one `@`, at most 254 bytes.
fn email(value: &Value) -> Option<String> {
    let text = value.as_str()?.trim();
    let valid = text.len() <= 254
        && text.split('@').count() == 2
        && !text.starts_with('@')
        && !text.ends_with('@')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then(|| text.to_lowercase())
}

/// Where an event is in the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Waiting for its refresh (or for another attempt).
    Queued,
    /// Its refresh changed the traits.
    Applied,
    /// Its refresh found the traits as Cleeng holds them.
    Unchanged,
    /// Nothing to refresh: it names nobody, or the refresh found no one to write.
    Skipped,
    /// Its refresh failed `max_attempts` times.
    Failed,
}

impl EventStatus {
    /// Every status.
    pub const ALL: [EventStatus; 5] = [
        EventStatus::Queued,
        EventStatus::Applied,
        EventStatus::Unchanged,
        EventStatus::Skipped,
        EventStatus::Failed,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Queued => "queued",
            EventStatus::Applied => "applied",
            EventStatus::Unchanged => "unchanged",
            EventStatus::Skipped => "skipped",
            EventStatus::Failed => "failed",
        }
    }

    /// From the stable name.
    pub fn parse(text: &str) -> Option<EventStatus> {
        EventStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// How the listener answered a delivery: the `outcome` of `cleeng_sync_webhooks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Signed, well formed, queued: 200.
    Accepted,
    /// A body already in the inbox: 200, not queued again.
    Redelivered,
    /// No signature, or not the HMAC of the body under the connector's secret: 401.
    BadSignature,
    /// Not `{"broadcasterId","topic","data"}`: 400.
    Malformed,
    /// Over `max_body`: 413.
    TooLarge,
    /// A `broadcasterId` other than the connector's `publisher_id`: 403.
    WrongPublisher,
    /// The inbox could not take it: 503 (Cleeng delivers again).
    StoreUnavailable,
    /// The body did not arrive within the request timeout: 408.
    TimedOut,
    /// No such connector, or one without a secret: 404 (counted without a connector).
    UnknownConnector,
}

impl WebhookOutcome {
    /// Every outcome a configured connector's endpoint can give.
    pub const ALL: [WebhookOutcome; 8] = [
        WebhookOutcome::Accepted,
        WebhookOutcome::Redelivered,
        WebhookOutcome::BadSignature,
        WebhookOutcome::Malformed,
        WebhookOutcome::TooLarge,
        WebhookOutcome::WrongPublisher,
        WebhookOutcome::StoreUnavailable,
        WebhookOutcome::TimedOut,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Redelivered => "redelivered",
            WebhookOutcome::BadSignature => "bad_signature",
            WebhookOutcome::Malformed => "malformed",
            WebhookOutcome::TooLarge => "too_large",
            WebhookOutcome::WrongPublisher => "wrong_publisher",
            WebhookOutcome::StoreUnavailable => "store_unavailable",
            WebhookOutcome::TimedOut => "timed_out",
            WebhookOutcome::UnknownConnector => "unknown_connector",
        }
    }

    /// The HTTP status of the answer.
    pub fn http_status(self) -> u16 {
        match self {
            WebhookOutcome::Accepted | WebhookOutcome::Redelivered => 200,
            WebhookOutcome::BadSignature => 401,
            WebhookOutcome::Malformed => 400,
            WebhookOutcome::TooLarge => 413,
            WebhookOutcome::WrongPublisher => 403,
            WebhookOutcome::StoreUnavailable => 503,
            WebhookOutcome::TimedOut => 408,
            WebhookOutcome::UnknownConnector => 404,
        }
    }
}

/// One event of the inbox, as `events` and `GET /v1/events` list it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventRecord {
    /// Its id, also in the refreshed row's `live_source` (`webhook:<id>`).
    pub id: i64,
    /// Connector id.
    pub connector: String,
    /// Cleeng's topic.
    pub topic: String,
    /// When the listener committed it (RFC 3339, UTC).
    pub received_at: String,
    /// `data.customerEmail`, lower case.
    pub email: Option<String>,
    /// `data.customerId`.
    pub customer_id: Option<i64>,
    /// `data.subscriptionId`.
    pub subscription_id: Option<i64>,
    /// Where it is.
    pub status: EventStatus,
    /// Refreshes tried for it.
    pub attempts: i64,
    /// The refresh's outcome or failure, or why it was skipped.
    pub message: Option<String>,
    /// When it reached its final status.
    pub processed_at: Option<String>,
}

/// A connector's inbox at a glance: the status page and the gauges.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InboxSummary {
    /// Events waiting.
    pub queued: u64,
    /// When the oldest of them was received.
    pub oldest_queued_at: Option<String>,
    /// When the last event was received.
    pub last_received_at: Option<String>,
    /// Events that ended `failed` in the last 24 hours.
    pub failed_last_day: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_fields_are_read_and_the_rest_is_skipped() {
        let body =
            br#"{"broadcasterId":558186818,"topic":"subscriptionReadyForPaymentAuthorisation",
            "data":{"subscriptionId":"332332332","offerId":"S123123123_US","customerId":123321123,
            "customerEmail":" Ann@Example.com ","token":"tok_en","paymentDetailsId":665665665}}"#;
        let delivery = Delivery::parse(body).expect("an event");
        assert_eq!(
            delivery,
            Delivery {
                broadcaster_id: Some(558186818),
                topic: "subscriptionReadyForPaymentAuthorisation".into(),
                email: Some("ann@example.com".into()),
                customer_id: Some(123321123),
                subscription_id: Some(332332332),
            }
        );
        assert!(!format!("{delivery:?}").contains("tok_en"));
        assert_eq!(delivery.names_nobody(), None);
    }

    #[test]
    fn what_is_not_an_envelope_is_malformed() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{}",
            b"{\"topic\":\"x\",\"data\":{}}",
            b"{\"broadcasterId\":1,\"topic\":\"x\"}",
            b"{\"broadcasterId\":1,\"topic\":\"x\",\"data\":[]}",
            b"{\"broadcasterId\":1,\"topic\":\"a b\",\"data\":{}}",
            b"{\"broadcasterId\":1,\"topic\":\"\",\"data\":{}}",
            b"{\"broadcasterId\":\"x\",\"topic\":\"t\",\"data\":{}}",
            b"{\"broadcasterId\":1,\"topic\":\"t\",\"data\":{}",
        ] {
            assert!(
                Delivery::parse(body).is_err(),
                "{:?} was taken",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn an_offer_topic_names_nobody() {
        let body = br#"{"broadcasterId":1,"topic":"offerUpdated","data":{"offerId":"S1_US"}}"#;
        let delivery = Delivery::parse(body).expect("an event");
        assert!(
            delivery
                .names_nobody()
                .is_some_and(|why| why.contains("offerUpdated"))
        );
        let odd = br#"{"broadcasterId":1,"topic":"t","data":{"customerEmail":"not an email"}}"#;
        assert_eq!(Delivery::parse(odd).expect("an event").email, None);
    }
}
