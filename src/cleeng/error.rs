//! Why a call to Cleeng did not succeed, with the stable code the ledger and the API
//! answer with.

/// Why a call to Cleeng did not succeed. No message carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CleengError {
    /// The token's variable is not set.
    #[error(
        "the Cleeng publisher token is not set: put it in the environment variable {var} \
         (connector.cleeng.token_env)"
    )]
    NoToken {
        /// The variable.
        var: String,
    },
    /// Cleeng refused the token (401 or 403).
    #[error(
        "Cleeng refused the publisher token (HTTP {status}): check the token in {var} against \
         the Cleeng dashboard (and the sandbox or production api_url)"
    )]
    TokenRefused {
        /// 401 or 403.
        status: u16,
        /// The variable that holds the token.
        var: String,
    },
    /// Cleeng refused the request with an answer (a 4xx): nothing changed.
    #[error("Cleeng refused it (HTTP {status}, {code}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Cleeng's code (`code` or `errors[0].code`), else `http_<status>`.
        code: String,
        /// Cleeng's message.
        message: String,
    },
    /// The request never reached Cleeng, after every attempt.
    #[error(
        "Cleeng could not be reached after {attempts} attempt(s) ({reason}); nothing reached it"
    )]
    Unreachable {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        reason: String,
    },
    /// Cleeng answered 429 or 503 to every attempt (or asked to wait too long).
    #[error("Cleeng was busy (HTTP {status}) after {attempts} attempt(s){wait}; nothing changed")]
    Busy {
        /// 429 or 503.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// How long Cleeng asked to wait, when that was past the bound.
        wait: String,
    },
    /// A lookup kept failing (timeouts, 5xx): nothing changed.
    #[error("Cleeng's lookup failed after {attempts} attempt(s): {reason}; nothing changed")]
    LookupFailed {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        reason: String,
    },
    /// A change was sent and its answer lost (a timeout, a reset, a 5xx): Cleeng may or
    /// may not have applied it. Never repeated.
    #[error(
        "Cleeng's answer was lost ({reason}); it may or may not have applied the change: \
         check the subscription in the Cleeng dashboard before trying again"
    )]
    Lost {
        /// What happened.
        reason: String,
        /// The HTTP status, if one came.
        status: Option<u16>,
    },
    /// A lookup's answer was not what the documentation says.
    #[error("Cleeng's answer to {what} could not be read: {reason}")]
    BadAnswer {
        /// Which request.
        what: String,
        /// What was wrong.
        reason: String,
    },
}

impl CleengError {
    /// The stable code of the answer and the ledger.
    pub fn code(&self) -> String {
        match self {
            CleengError::NoToken { .. } => "token_missing".into(),
            CleengError::TokenRefused { .. } => "token_refused".into(),
            CleengError::Refused { code, .. } => code.clone(),
            CleengError::Unreachable { .. } => "cleeng_unreachable".into(),
            CleengError::Busy { .. } => "cleeng_unavailable".into(),
            CleengError::LookupFailed { .. } => "lookup_failed".into(),
            CleengError::Lost { .. } => "answer_lost".into(),
            CleengError::BadAnswer { .. } => "bad_answer".into(),
        }
    }

    /// Cleeng's HTTP status, if it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            CleengError::TokenRefused { status, .. }
            | CleengError::Refused { status, .. }
            | CleengError::Busy { status, .. } => Some(*status),
            CleengError::Lost { status, .. } => *status,
            _ => None,
        }
    }
}

/// Sets the attempt count into the error that ends a call (each attempt's own error
/// does not know it).
pub(super) fn with_attempts(error: CleengError, attempts: u32) -> CleengError {
    match error {
        CleengError::Unreachable { reason, .. } => CleengError::Unreachable { attempts, reason },
        CleengError::Busy { status, wait, .. } => CleengError::Busy {
            status,
            attempts,
            wait,
        },
        CleengError::LookupFailed { reason, .. } => CleengError::LookupFailed { attempts, reason },
        other => other,
    }
}
