//! Guest text made safe to show: everything a guest says (log lines, error messages,
//! stderr, names it looks up) reaches the operator's terminal and log files, so newlines,
//! control characters, ANSI escape sequences and bidirectional overrides are shown as
//! escapes. No tenant can print a line that looks like the host's or another tenant's.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` with every character that could move the cursor, start a new line or change how the
/// rest is drawn written as an escape (`\n`, `\u{1b}`).
pub fn shown(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Bytes of record data (keys, values, headers) as one line of text for people: valid
/// UTF-8 as it is, `\\` for a backslash, `\n`, `\r`, `\t`, `\xNN` for other control
/// bytes and for bytes that are not UTF-8, `\u{N}` for the invisible formatting
/// characters `shown` escapes; and `\xNN` for any of `also` (a field's own separators).
/// So no value can end its line or its field, and every byte can be told back.
pub fn shown_data(bytes: &[u8], also: &[char], out: &mut String) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_ascii_control() || also.contains(&c) => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if unsafe_char(c) => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// An error and its causes, as `{e:#}` writes them, made safe to show: errors of a
/// pipeline carry guest and tenant text (names from a component, paths, settings).
pub fn shown_error(e: &anyhow::Error) -> String {
    shown(&format!("{e:#}")).into_owned()
}

/// Control characters (C0, DEL, C1), line and paragraph separators, and the invisible
/// formatting characters that reorder or hide text (bidi overrides and isolates, marks).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{61c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}'
                | '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{e0000}'..='\u{e007f}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_kept_and_anything_that_could_forge_a_line_is_escaped() {
        assert!(matches!(
            shown("broker 127.0.0.1:9092 said: ok ü"),
            Cow::Borrowed(_)
        ));
        let forged = "boom\npipeline good/mirror failed\x1b[2J\r\u{202e}x\u{7f}";
        let s = shown(forged);
        assert_eq!(
            s,
            "boom\\npipeline good/mirror failed\\u{1b}[2J\\r\\u{202e}x\\u{7f}"
        );
        assert!(!s.chars().any(|c| c.is_control()));
    }

    fn data(bytes: &[u8]) -> String {
        data_but(bytes, &[])
    }

    fn data_but(bytes: &[u8], also: &[char]) -> String {
        let mut out = String::new();
        shown_data(bytes, also, &mut out);
        out
    }

    #[test]
    fn data_is_text_where_it_is_utf8_and_escaped_where_not() {
        assert_eq!(data("plain ü {\"n\":1}".as_bytes()), "plain ü {\"n\":1}");
        assert_eq!(data(b"\xff\xfeok\xc3"), "\\xff\\xfeok\\xc3", "not UTF-8");
        assert_eq!(
            data(b"a\x00b\x1b[2J\x7f"),
            "a\\x00b\\x1b[2J\\x7f",
            "control bytes"
        );
        assert_eq!(
            data("\u{202e}x\u{85}".as_bytes()),
            "\\u{202e}x\\u{85}",
            "bidi, C1"
        );
        assert_eq!(data_but(b"k:v", &[':']), "k\\x3av", "a separator of the field");
        // A backslash of the data is doubled, so `\n` in the output is always a newline
        // of the data.
        assert_eq!(data(b"a\\nb"), "a\\\\nb");
        let forged = data(b"v\n\rtopic [0] @ 1\tkey: x");
        assert_eq!(forged, "v\\n\\rtopic [0] @ 1\\tkey: x");
        assert!(!forged.chars().any(|c| c.is_control()), "one line, one field");
    }
}
