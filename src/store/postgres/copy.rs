//! PostgreSQL's COPY, both ways: lines read out of `COPY ... TO STDOUT`, and the CSV
//! fields written for `COPY ... FROM STDIN`.

use crate::export::{Row, country_of, iso_date};
use crate::store::error::Result;
use futures::TryStreamExt;
use sqlx::postgres::PgConnection;

/// Runs a `COPY ... TO STDOUT` and hands each line to `each` until it says stop;
/// whether every line was read.
pub async fn copy_lines(
    conn: &mut PgConnection,
    sql: &str,
    mut each: impl FnMut(&[u8]) -> bool,
) -> Result<bool> {
    let mut chunks = conn.copy_out_raw(sql).await?;
    // A line may straddle two chunks: its start waits here.
    let mut partial = Vec::new();
    while let Some(chunk) = chunks.try_next().await? {
        let mut rest: &[u8] = &chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let line = if partial.is_empty() {
                &rest[..end]
            } else {
                partial.extend_from_slice(&rest[..end]);
                &partial[..]
            };
            let more = each(line);
            partial.clear();
            rest = &rest[end + 1..];
            if !more {
                return Ok(false);
            }
        }
        partial.extend_from_slice(rest);
    }
    Ok(true)
}

/// Appends a row's fields from its offer to its offer's country, each after a `,`: the
/// columns both COPYs of rows (into staging, and a first load's into the traits) fill
/// in that order.
pub fn push_traits(out: &mut Vec<u8>, row: &Row) {
    push_text(out, Some(row.offer_id()));
    out.push(b',');
    out.extend_from_slice(&iso_date(row.expiry_date));
    push_text(out, Some(row.status));
    push_number(out, Some(row.payment_method_id));
    push_text(out, row.external_id());
    push_text(out, row.external_properties());
    push_number(out, row.season_index);
    push_text(out, row.coupon_code());
    push_text(out, row.campaign_name());
    push_number(out, row.coupon_uses);
    push_text(out, row.extra());
    push_text(out, Some(row.row_hash.hex().as_str()));
    // Written with the row rather than computed by the database: a generated column
    // cost a tenth of a first load.
    push_text(out, country_of(row.offer_id()));
}

/// Appends `,` and an integer, or nothing (NULL).
pub fn push_number(out: &mut Vec<u8>, n: Option<i64>) {
    out.push(b',');
    if let Some(n) = n {
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
}

/// Appends `,` and a quoted CSV field, or nothing (NULL: COPY's CSV format reads an
/// unquoted empty field as NULL and a quoted one as the empty string).
pub fn push_text(out: &mut Vec<u8>, text: Option<&str>) {
    out.push(b',');
    let Some(text) = text else { return };
    out.push(b'"');
    for &b in text.as_bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}
