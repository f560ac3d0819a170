//! Keeping personal data and secrets out of logs, output and stored rejections.

/// Masks an e-mail address for logs and stored values: the first character of the
/// local part stays, so an operator can still tell rows apart, the rest is hidden.
///
/// `john.doe@example.com` becomes `j***@example.com`; a value without `@` is masked
/// whole, since it may still be an address with a typo.
pub fn mask_email(value: &str) -> String {
    match value.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => {
            let first: String = value.chars().take(1).collect();
            format!("{first}***")
        }
    }
}

/// Masks every e-mail address in a free text (a receiver's answer, which may echo what it
/// was sent), word by word, as [`mask_email`] does.
pub fn mask_emails_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') {
            out.push_str(&mask_email(word));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() || "._%+-@".contains(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Removes the password from a URL (`postgres://user:secret@host/db` becomes
/// `postgres://user:***@host/db`) so that store URLs can be printed and logged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Cuts a value to at most `max` characters (not bytes), on a character boundary.
pub fn truncate_chars(value: &str, max: usize) -> String {
    match value.char_indices().nth(max) {
        Some((i, _)) => value[..i].to_string(),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_emails_keeping_the_domain() {
        assert_eq!(mask_email("john.doe@example.com"), "j***@example.com");
        assert_eq!(mask_email("@example.com"), "***@example.com");
        assert_eq!(mask_email("not-an-email"), "n***");
        assert_eq!(mask_email(""), "***");
    }

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.internal:5432/traits?sslmode=require"),
            "postgres://app:***@db.internal:5432/traits?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@db/traits"),
            "postgres://app@db/traits"
        );
        assert_eq!(
            redact_url("sqlite://cleeng-sync.db"),
            "sqlite://cleeng-sync.db"
        );
    }

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate_chars("ééé", 2), "éé");
        assert_eq!(truncate_chars("ab", 5), "ab");
    }

    #[test]
    fn masks_every_email_in_a_text() {
        assert_eq!(
            mask_emails_in(r#"{"error":"ann.lee@example.com is unknown", "to": bob@x.io}"#),
            r#"{"error":"a***@example.com is unknown", "to": b***@x.io}"#
        );
        assert_eq!(mask_emails_in("no address here"), "no address here");
    }
}
