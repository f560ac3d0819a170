//! The signature of a delivery: HMAC-SHA256 of the raw body under the connector's shared
//! secret, sent in the header the operator names, compared in constant time before a byte
//! of the body is parsed.
//!
//! Cleeng's page "Webhooks Verification"
//! (<https://developers.cleeng.com/docs/webhook-verification>) gives the method (`HMAC`,
//! `SHA256`) and the secret (`sharedSecret`, 16 to 64 bytes); it is silent on the header
//! that carries the signature and on its encoding. The header is therefore a setting, and
//! both encodings are taken: 64 hex digits, or base64 (padded or not) of the 32 bytes. A
//! `sha256=` prefix, as other senders write it, is taken too.

use axum::http::HeaderMap;
use base64::Engine as _;
use ring::hmac;
use std::fmt;

/// The shortest and longest secret Cleeng accepts, in bytes.
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// Why a delivery's signature did not verify; logged, never answered in detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The header is missing.
    #[error("no signature header")]
    Missing,
    /// The header is neither hex nor base64 of 32 bytes.
    #[error("the signature header is not a hex or base64 HMAC-SHA256")]
    Undecodable,
    /// A well-formed signature of another body, or under another secret.
    #[error("the signature is not the body's under this connector's secret")]
    Mismatch,
}

/// Why a secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the shared secret in {env} is {len} bytes; Cleeng takes 16 to 64 (32 or more advised)")]
pub struct BadSecret {
    /// The variable it came from.
    pub env: String,
    /// Its length.
    pub len: usize,
}

/// A connector's secret and the header its signature comes in. Never printed.
pub struct Signer {
    key: hmac::Key,
    header: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}: ***)", self.header)
    }
}

impl Signer {
    /// The signer of a secret (16-64 bytes) whose signature comes in `header`.
    pub fn new(secret: &[u8], header: &str, env: &str) -> Result<Signer, BadSecret> {
        if !SECRET_BYTES.contains(&secret.len()) {
            return Err(BadSecret {
                env: env.to_string(),
                len: secret.len(),
            });
        }
        Ok(Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            header: header.to_ascii_lowercase(),
        })
    }

    /// Whether the request's signature is the body's HMAC; constant time in the signature.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
        let value = headers.get(self.header.as_str()).ok_or(Refusal::Missing)?;
        let tag = decode(value.as_bytes()).ok_or(Refusal::Undecodable)?;
        hmac::verify(&self.key, body, &tag).map_err(|_| Refusal::Mismatch)
    }

    /// The hex signature of a body (tests, the benchmark, the README's example).
    pub fn sign_hex(&self, body: &[u8]) -> String {
        hex::encode(hmac::sign(&self.key, body).as_ref())
    }
}

/// The 32 bytes a header value encodes, as hex or base64.
fn decode(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let text = match text.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("sha256=") => &text[7..],
        _ => text,
    };
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()?
    } else {
        let engine = base64::engine::general_purpose::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        engine.decode(text).ok()?
    };
    (bytes.len() == 32).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn signer() -> Signer {
        Signer::new(SECRET, "X-Signature", "SECRET").expect("a valid secret")
    }

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-signature",
            HeaderValue::from_str(value).expect("a value"),
        );
        headers
    }

    #[test]
    fn hex_and_base64_of_the_body_verify_and_nothing_else_does() {
        let body = br#"{"broadcasterId":1,"topic":"t","data":{}}"#;
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), body);
        let b64 = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        let signer = signer();
        for good in [
            signer.sign_hex(body),
            signer.sign_hex(body).to_uppercase(),
            format!("sha256={}", signer.sign_hex(body)),
            b64.clone(),
            b64.trim_end_matches('=').to_string(),
        ] {
            assert_eq!(signer.verify(&with(&good), body), Ok(()), "{good}");
        }
        assert_eq!(
            signer.verify(&HeaderMap::new(), body),
            Err(Refusal::Missing)
        );
        assert_eq!(signer.verify(&with("zz"), body), Err(Refusal::Undecodable));
        let mut changed = body.to_vec();
        changed[5] ^= 1;
        assert_eq!(
            signer.verify(&with(&signer.sign_hex(body)), &changed),
            Err(Refusal::Mismatch)
        );
        let other = Signer::new(b"another secret of 32 bytes......", "x-signature", "S")
            .expect("a valid secret");
        assert_eq!(
            signer.verify(&with(&other.sign_hex(body)), body),
            Err(Refusal::Mismatch)
        );
    }

    #[test]
    fn a_secret_outside_16_to_64_bytes_is_refused_and_never_printed() {
        assert!(Signer::new(b"short", "x", "S").is_err());
        assert!(Signer::new(&[b'a'; 65], "x", "S").is_err());
        assert!(!format!("{:?}", signer()).contains("0123"));
    }
}
