//! Matching an export's header line to the template's fields.

use std::collections::BTreeMap;
use std::fmt;

/// A field of the Web Subscription Data template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `User email*`: the subscriber's identity.
    Email,
    /// `Offer ID*`.
    OfferId,
    /// `Expiry date*`.
    ExpiryDate,
    /// `Status*`.
    Status,
    /// `Payment method ID (will be used also for payment gateway)*`.
    PaymentMethodId,
    /// `Subscription external ID`.
    ExternalId,
    /// `External properties`.
    ExternalProperties,
    /// `Season Index (required for seasonal offer)`.
    SeasonIndex,
    /// `Coupon Code`.
    CouponCode,
    /// `Campaign name`.
    CampaignName,
    /// `Coupon Already Used`.
    CouponUses,
}

impl Field {
    /// Every field, in template order.
    pub const ALL: [Field; 11] = [
        Field::Email,
        Field::OfferId,
        Field::ExpiryDate,
        Field::Status,
        Field::PaymentMethodId,
        Field::ExternalId,
        Field::ExternalProperties,
        Field::SeasonIndex,
        Field::CouponCode,
        Field::CampaignName,
        Field::CouponUses,
    ];

    /// The stored column name, also the key in `[connector.columns]` and the column
    /// named in rejections.
    pub fn name(self) -> &'static str {
        match self {
            Field::Email => "email",
            Field::OfferId => "offer_id",
            Field::ExpiryDate => "expiry_date",
            Field::Status => "status",
            Field::PaymentMethodId => "payment_method_id",
            Field::ExternalId => "external_id",
            Field::ExternalProperties => "external_properties",
            Field::SeasonIndex => "season_index",
            Field::CouponCode => "coupon_code",
            Field::CampaignName => "campaign_name",
            Field::CouponUses => "coupon_uses",
        }
    }

    /// The label as the template spells it.
    pub fn label(self) -> &'static str {
        match self {
            Field::Email => "User email*",
            Field::OfferId => "Offer ID*",
            Field::ExpiryDate => "Expiry date*",
            Field::Status => "Status*",
            Field::PaymentMethodId => "Payment method ID (will be used also for payment gateway)*",
            Field::ExternalId => "Subscription external ID",
            Field::ExternalProperties => "External properties",
            Field::SeasonIndex => "Season Index (required for seasonal offer)",
            Field::CouponCode => "Coupon Code",
            Field::CampaignName => "Campaign name",
            Field::CouponUses => "Coupon Already Used",
        }
    }

    /// Whether the template marks the field mandatory (`*`).
    pub fn mandatory(self) -> bool {
        matches!(
            self,
            Field::Email
                | Field::OfferId
                | Field::ExpiryDate
                | Field::Status
                | Field::PaymentMethodId
        )
    }

    /// Looks a field up by its stored column name (`[connector.columns]` keys).
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Normalised header labels that mean this field: the template's label, the
    /// snake_case column name, and the template's snake_case spelling where it differs.
    fn matches(self, normalized: &str) -> bool {
        let template = normalize_label(self.label());
        let stored = normalize_label(self.name());
        let extra: &[&str] = match self {
            Field::Email => &["email"],
            Field::ExternalId => &["subscription external id"],
            Field::CouponUses => &["coupon already used"],
            _ => &[],
        };
        normalized == template || normalized == stored || extra.contains(&normalized)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Normalises a header label for matching: BOM removed, parenthesised notes and a
/// trailing `*` dropped, `_` read as a space, white space collapsed, lower case.
///
/// `Payment method ID (will be used also for payment gateway)*` and
/// `payment_method_id` both become `payment method id`.
pub fn normalize_label(label: &str) -> String {
    let label = label.trim_start_matches('\u{feff}');
    let mut without_notes = String::with_capacity(label.len());
    let mut depth = 0usize;
    for c in label.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => without_notes.push(if c == '_' { ' ' } else { c }),
            _ => {}
        }
    }
    let trimmed = without_notes.trim().trim_end_matches('*');
    trimmed
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Why a header line cannot be read as the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Mandatory columns are absent.
    #[error(
        "the export lacks the mandatory column(s) {}; its header has: {}. \
         Rename them in the export, or map them in [connector.columns]",
        missing.join(", "), found.join(", ")
    )]
    MissingColumns {
        /// Template labels of the missing fields.
        missing: Vec<String>,
        /// The header's labels, as found.
        found: Vec<String>,
    },
    /// Two columns mean the same field.
    #[error(
        "the columns {first:?} and {second:?} both map to the field {field}; keep one, or map one explicitly in [connector.columns]"
    )]
    DuplicateColumn {
        /// The field they both mean.
        field: Field,
        /// The first column's label.
        first: String,
        /// The second column's label.
        second: String,
    },
    /// The header line is not UTF-8.
    #[error("the header line is not valid UTF-8 (column {column}); export the CSV as UTF-8")]
    NotUtf8 {
        /// One-based column position.
        column: usize,
    },
}

/// Where each template field sits in the records of one export.
#[derive(Debug, Clone)]
pub struct HeaderMap {
    positions: [Option<usize>; Field::ALL.len()],
    extra: Vec<(usize, String)>,
    width: usize,
}

impl HeaderMap {
    /// Maps a header line. `overrides` (from `[connector.columns]`) name the label
    /// used for a field; a field with an override is matched only by it.
    pub fn new<'a>(
        labels: impl IntoIterator<Item = &'a [u8]>,
        overrides: &BTreeMap<Field, String>,
    ) -> Result<HeaderMap, HeaderError> {
        let overrides: Vec<(Field, String)> = overrides
            .iter()
            .map(|(f, label)| (*f, normalize_label(label)))
            .collect();
        let mut positions = [None; Field::ALL.len()];
        let mut found = Vec::new();
        let mut extra = Vec::new();
        for (i, raw) in labels.into_iter().enumerate() {
            let raw =
                std::str::from_utf8(raw).map_err(|_| HeaderError::NotUtf8 { column: i + 1 })?;
            let label = raw.trim_start_matches('\u{feff}').trim().to_string();
            let normalized = normalize_label(&label);
            let field = overrides
                .iter()
                .find(|(_, wanted)| *wanted == normalized)
                .map(|(f, _)| *f)
                .or_else(|| {
                    Field::ALL
                        .into_iter()
                        .find(|f| !overrides.iter().any(|(o, _)| o == f) && f.matches(&normalized))
                });
            match field {
                Some(field) => {
                    let slot = &mut positions[field as usize];
                    if let Some(first) = *slot {
                        let first: &String = &found[first];
                        return Err(HeaderError::DuplicateColumn {
                            field,
                            first: first.clone(),
                            second: label,
                        });
                    }
                    *slot = Some(i);
                }
                None => extra.push((i, label.clone())),
            }
            found.push(label);
        }
        let missing: Vec<String> = Field::ALL
            .into_iter()
            .filter(|f| f.mandatory() && positions[*f as usize].is_none())
            .map(|f| match overrides.iter().find(|(o, _)| *o == f) {
                Some((_, label)) => format!("{} (mapped to {label:?})", f.label()),
                None => f.label().to_string(),
            })
            .collect();
        if !missing.is_empty() {
            return Err(HeaderError::MissingColumns { missing, found });
        }
        Ok(HeaderMap {
            positions,
            extra,
            width: found.len(),
        })
    }

    /// The position of a field's column, if the export has it.
    pub fn position(&self, field: Field) -> Option<usize> {
        self.positions[field as usize]
    }

    /// Columns the template does not name: position and label.
    pub fn extra(&self) -> &[(usize, String)] {
        &self.extra
    }

    /// Number of columns in the header.
    pub fn width(&self) -> usize {
        self.width
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(labels: &[&str]) -> Result<HeaderMap, HeaderError> {
        HeaderMap::new(labels.iter().map(|l| l.as_bytes()), &BTreeMap::new())
    }

    #[test]
    fn normalizes_template_labels() {
        assert_eq!(
            normalize_label("Payment method ID (will be used also for payment gateway)*"),
            "payment method id"
        );
        assert_eq!(normalize_label("\u{feff}  User   email* "), "user email");
        assert_eq!(normalize_label("offer_id"), "offer id");
        assert_eq!(
            normalize_label("Season Index (required for seasonal offer)"),
            "season index"
        );
    }

    #[test]
    fn maps_template_and_snake_case_headers() {
        let template: Vec<&str> = Field::ALL.iter().map(|f| f.label()).collect();
        let by_label = map(&template).unwrap();
        let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        let by_name = map(&names).unwrap();
        for (i, f) in Field::ALL.into_iter().enumerate() {
            assert_eq!(by_label.position(f), Some(i), "{f}");
            assert_eq!(by_name.position(f), Some(i), "{f}");
        }
    }

    #[test]
    fn names_missing_columns_and_what_was_found() {
        let err = map(&["User email", "Offer ID", "Region"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("Expiry date*"), "{text}");
        assert!(text.contains("Status*"), "{text}");
        assert!(text.contains("Region"), "{text}");
    }

    #[test]
    fn keeps_unknown_columns_as_extra_and_rejects_duplicates() {
        let m = map(&[
            "email",
            "offer_id",
            "expiry_date",
            "status",
            "payment_method_id",
            "Region",
        ])
        .unwrap();
        assert_eq!(m.extra(), &[(5, "Region".to_string())]);
        let err = map(&["email", "User email*"]).unwrap_err();
        assert!(matches!(
            err,
            HeaderError::DuplicateColumn {
                field: Field::Email,
                ..
            }
        ));
    }

    #[test]
    fn overrides_take_precedence() {
        let overrides = BTreeMap::from([(Field::Email, "Customer Email".to_string())]);
        let labels = [
            "Customer Email",
            "email",
            "offer",
            "Offer ID",
            "Expiry",
            "Expiry date",
            "Status",
            "Payment method ID",
        ];
        let m = HeaderMap::new(labels.iter().map(|l| l.as_bytes()), &overrides).unwrap();
        assert_eq!(m.position(Field::Email), Some(0));
        assert!(m.extra().iter().any(|(_, l)| l == "email"));
    }
}
