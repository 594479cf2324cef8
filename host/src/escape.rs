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
}
