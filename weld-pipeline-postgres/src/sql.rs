//! Names and text in SQL: the one way this crate puts an identifier or a literal into a
//! statement's text, where PostgreSQL takes no parameter (DDL: a view's columns, a comment).
//! Values a statement can take as parameters (`$1`) are passed as parameters instead.
//!
//! | what | written as | refused |
//! |---|---|---|
//! | an identifier | `"name"`, each `"` doubled | a NUL (no PostgreSQL name holds one) |
//! | a literal | `E'text'`, each `\` and each `'` doubled | a NUL (no PostgreSQL text holds one) |
//!
//! A literal is always in the escape-string form `E'...'`, which reads the same whatever the
//! server's `standard_conforming_strings`: a plain `'...'` with only `'` doubled lets a `\'`
//! end the string early where that setting is `off`, and with it whatever follows become SQL
//! (libpq's `PQescapeLiteral` writes the same form for the same reason). The client encoding is
//! UTF-8 (tokio-postgres sets it), in which no byte of a multi-byte character is `\` or `'`.
//!
//! Statements that carry text a user wrote (a HubSpot property's name) are run one at a time on
//! the extended protocol (`execute(sql, &[])`), which refuses a string of several statements:
//! a mistake here would fail the statement rather than run a second one.

use weld_pipeline::Error;

/// `name` as a quoted SQL identifier.
///
/// PostgreSQL cuts an identifier past 63 bytes silently: callers that need names to stay
/// distinct check the length first.
///
/// # Errors
///
/// [`Error::Invalid`] when `name` holds a NUL.
pub(crate) fn identifier(name: &str) -> Result<String, Error> {
    refuse_nul(name, "name")?;
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// `text` as a SQL string literal in the `E'...'` form.
///
/// # Errors
///
/// [`Error::Invalid`] when `text` holds a NUL.
pub(crate) fn literal(text: &str) -> Result<String, Error> {
    refuse_nul(text, "text")?;
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

fn refuse_nul(text: &str, what: &str) -> Result<(), Error> {
    if text.contains('\0') {
        return Err(Error::Invalid(format!(
            "a {what} for SQL holds a NUL character: \"{}\"",
            text.escape_debug()
        )));
    }
    Ok(())
}

/// The name inside a quoted identifier `"..."` (its `""` read back as `"`), and what follows
/// it; `None` when `text` does not start with one.
pub(crate) fn unquote(text: &str) -> Option<(String, &str)> {
    let mut rest = text.strip_prefix('"')?;
    let mut name = String::new();
    loop {
        let end = rest.find('"')?;
        name.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        match rest.strip_prefix('"') {
            // `""`: a quote within the name.
            Some(after) => {
                name.push('"');
                rest = after;
            }
            None => return Some((name, rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identifier_is_double_quoted_with_its_quotes_doubled_and_a_nul_refused() {
        for (name, quoted) in [
            ("id", r#""id""#),
            ("", r#""""#),
            (r#"a"b""c"#, r#""a""b""""c""#),
            (r"a\b'c", r#""a\b'c""#),
        ] {
            assert_eq!(identifier(name).unwrap(), quoted);
        }
        assert!(identifier("a\0b").is_err());
    }

    #[test]
    fn a_literal_is_an_escape_string_with_backslashes_and_quotes_doubled_and_a_nul_refused() {
        for (text, quoted) in [
            ("amount", "E'amount'"),
            ("", "E''"),
            ("it's", "E'it''s'"),
            // The attack: a backslash before a quote must not escape the quote that closes.
            (
                r"~\' AS z FROM t;DROP TABLE x;--",
                r"E'~\\'' AS z FROM t;DROP TABLE x;--'",
            ),
            ("$$\né\"", "E'$$\né\"'"),
        ] {
            assert_eq!(literal(text).unwrap(), quoted);
        }
        assert!(literal("a\0").is_err());
    }

    #[test]
    fn a_quoted_identifier_reads_back_as_its_name() {
        for name in ["contacts", "", r#"a"b"#, r#""""#, "é.x"] {
            let rest = format!("{}.rest", identifier(name).unwrap());
            assert_eq!(unquote(&rest), Some((name.to_string(), ".rest")));
        }
        assert_eq!(unquote("plain"), None);
        assert_eq!(unquote(r#""open"#), None);
    }
}
