//! Logs through tracing: pretty on a terminal, JSON for machines, on stderr.

use crate::cli::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Targets whose debug and trace events carry credentials: the resolved identity (the
/// access key ID), the signed request's headers (the session token) and the canonical
/// request. Capped at info whatever `RUST_LOG` says: a secret in a log is a leak, and
/// this crate logs S3 retries and failures at warn anyway.
const SECRET_BEARING: [&str; 2] = [
    "aws_sigv4=info",
    "aws_smithy_runtime::client::orchestrator=info",
];

/// Installs the global subscriber. `RUST_LOG` wins over the verbosity flags.
pub fn init(format: Option<LogFormat>, verbose: u8, quiet: u8) {
    let level = match (verbose, quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v > 1 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    // Our own crate at the chosen level; the AWS SDK and sqlx are chatty below warn.
    // sqlx warns of every statement over a second, which a million-row apply is by
    // design: those warnings stay off unless RUST_LOG asks for them.
    let mut filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,sqlx::query=error,cleeng_sync={level}")));
    for cap in SECRET_BEARING {
        if let Ok(directive) = cap.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.with_target(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .try_init(),
    };
}
