//! How a batch is signed: HMAC-SHA256 with the destination's secret over
//! `<timestamp>.<body>`, sent as lower-case hex (DESIGN.md, "The change feed"). The
//! timestamp is signed with the body so that a receiver can refuse a batch replayed
//! long after it was sent.

use ring::hmac;
use std::fmt;

/// The header carrying the Unix time (seconds) the batch was signed at.
pub const TIMESTAMP_HEADER: &str = "X-Cleeng-Sync-Timestamp";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Cleeng-Sync-Signature";
/// The shortest secret taken, in bytes: a shorter one is guessed too easily.
pub const MIN_SECRET: usize = 16;

/// A destination's secret. Never printed.
#[derive(Clone)]
pub struct Secret(hmac::Key);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// A secret of at least [`MIN_SECRET`] bytes; `None` when shorter.
    pub fn new(secret: &[u8]) -> Option<Secret> {
        (secret.len() >= MIN_SECRET).then(|| Secret(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// The signature of a body sent at `timestamp`.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        hex::encode(context.sign().as_ref())
    }

    /// Whether `signature` is that of the body sent at `timestamp` (a receiver's check,
    /// in constant time).
    pub fn verify(&self, timestamp: &str, body: &[u8], signature: &str) -> bool {
        let Ok(tag) = hex::decode(signature) else {
            return false;
        };
        let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
        message.extend_from_slice(timestamp.as_bytes());
        message.push(b'.');
        message.extend_from_slice(body);
        hmac::verify(&self.0, &message, &tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_the_hmac_of_timestamp_dot_body_in_lower_hex() {
        let secret = Secret::new(b"0123456789abcdef").expect("16 bytes");
        let signature = secret.sign(1_700_000_000, b"{}");
        // openssl: printf '1700000000.{}' | openssl dgst -sha256 -hmac 0123456789abcdef
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef");
        let expected = hex::encode(hmac::sign(&key, b"1700000000.{}").as_ref());
        assert_eq!(signature, expected);
        assert_eq!(signature.len(), 64);
        assert!(
            signature
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
        assert!(secret.verify("1700000000", b"{}", &signature));
        assert!(!secret.verify("1700000001", b"{}", &signature));
        assert!(!secret.verify("1700000000", b"{ }", &signature));
        let other = Secret::new(b"fedcba9876543210").expect("16 bytes");
        assert!(!other.verify("1700000000", b"{}", &signature));
        assert!(Secret::new(b"short").is_none());
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }
}
