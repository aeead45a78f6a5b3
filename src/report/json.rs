//! JSON Lines: one object per line, field names per docs/json.md.

use serde::Serialize;

/// One JSON line (without the newline).
pub fn line<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no I/O.
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// JSON Lines: one line per item, then the summary's line, each ending in a newline.
pub fn lines<T: Serialize, S: Serialize>(items: &[T], summary: &S) -> String {
    let mut out = String::new();
    for item in items {
        out.push_str(&line(item));
        out.push('\n');
    }
    out.push_str(&line(summary));
    out.push('\n');
    out
}
