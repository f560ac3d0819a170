//! What listing commands print before their rows: JSON for a machine, or a line for a
//! person when there is nothing to list.

use serde::Serialize;

/// Prints `items` as one JSON array when `json` is asked (the command is then done:
/// `true`); otherwise says `nothing` when there are none, and leaves the rows to the
/// caller.
pub(super) fn listed_as_json<T: Serialize>(
    json: bool,
    items: &[T],
    nothing: &str,
) -> anyhow::Result<bool> {
    if json {
        println!("{}", serde_json::to_string(items)?);
        return Ok(true);
    }
    if items.is_empty() {
        println!("{nothing}");
    }
    Ok(false)
}
