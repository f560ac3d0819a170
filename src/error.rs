//! An error and its causes on one line, as every message of this program prints them.

use std::error::Error;

/// `err`, then each of its causes after ": ". A cause whose text is already in the
/// line is left out: most of our messages quote their cause, which the chain repeats.
pub fn one_line(err: &dyn Error) -> String {
    with_causes(err.to_string(), err.source())
}

/// `text`, then each cause from `source` down, as [`one_line`] adds them: for a
/// message that says what failed in its own words before the causes.
pub fn with_causes(mut text: String, mut source: Option<&(dyn Error + 'static)>) -> String {
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Link {
        text: &'static str,
        #[source]
        cause: Option<Box<Link>>,
    }

    fn link(text: &'static str, cause: Option<Link>) -> Link {
        Link {
            text,
            cause: cause.map(Box::new),
        }
    }

    #[test]
    fn each_cause_once_in_order() {
        let inner = link("connection refused", None);
        let middle = link("cannot connect: connection refused", Some(inner));
        let outer = link("listing s3://b/p/", Some(middle));
        assert_eq!(
            one_line(&outer),
            "listing s3://b/p/: cannot connect: connection refused"
        );
        assert_eq!(
            with_causes("timed out".into(), Some(&link("deadline", None))),
            "timed out: deadline"
        );
    }
}
