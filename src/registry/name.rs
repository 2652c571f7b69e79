//! Model names come from callers (REST paths, gRPC fields, CLI arguments) and from folder names,
//! and become folder names in the registry. One allow-list, checked here and only here, keeps them
//! from naming anything outside it: ASCII letters, digits, `_`, `-` and `.`, not starting with
//! `.`, no `..`, at most [`MAX_MODEL_NAME_LEN`] bytes.

/// Longest model name accepted, in bytes.
pub const MAX_MODEL_NAME_LEN: usize = 128;

/// Why a model name was refused. Messages show the name escaped (ASCII only, shortened), so a
/// control or bidi character never reaches a terminal or a log line as itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the model name is empty")]
    Empty,
    #[error(
        "the model name '{shown}' is {len} bytes long; the limit is {MAX_MODEL_NAME_LEN} bytes"
    )]
    TooLong { shown: String, len: usize },
    #[error("the model name '{shown}' must not start with '.'")]
    LeadingDot { shown: String },
    #[error("the model name '{shown}' must not contain '..'")]
    DotDot { shown: String },
    #[error(
        "the model name '{shown}' contains {what} at byte {at}; model names may hold only ASCII \
         letters, digits, '_', '-' and '.'"
    )]
    Disallowed {
        shown: String,
        what: String,
        at: usize,
    },
}

/// The name as it may be shown: escaped to ASCII and cut to a readable length.
fn shown(name: &str) -> String {
    const SHOWN_CHARS: usize = 40;
    let mut out: String = name
        .chars()
        .take(SHOWN_CHARS)
        .flat_map(char::escape_default)
        .collect();
    if name.chars().nth(SHOWN_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

/// A refused character, described so the caller sees which rule it broke.
fn describe(c: char) -> String {
    match c {
        '/' => "'/' (a path separator)".into(),
        '\\' => "'\\' (a path separator)".into(),
        '\0' => "a NUL character".into(),
        c if c.is_control() => format!("the control character U+{:04X}", c as u32),
        c if c.is_ascii() => format!("'{c}'"),
        c => format!("the non-ASCII character U+{:04X}", c as u32),
    }
}

/// Checks a model name against the allow-list; every entry point calls this before the name is
/// looked up or joined to a path.
pub fn validate_model_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_MODEL_NAME_LEN {
        return Err(NameError::TooLong {
            shown: shown(name),
            len: name.len(),
        });
    }
    if let Some((at, c)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(NameError::Disallowed {
            shown: shown(name),
            what: describe(c),
            at,
        });
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot { shown: shown(name) });
    }
    if name.contains("..") {
        return Err(NameError::DotDot { shown: shown(name) });
    }
    Ok(())
}

/// [`validate_model_name`] as a `clap` value parser, so the CLI refuses a bad name before sending.
pub fn parse_model_name(name: &str) -> Result<String, NameError> {
    validate_model_name(name).map(|()| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allow_list() {
        for ok in ["iris", "breast_cancer", "resnet-50", "v1.2", "A_b-9.x", "x"] {
            assert_eq!(validate_model_name(ok), Ok(()), "{ok}");
        }
        assert!(validate_model_name(&"m".repeat(MAX_MODEL_NAME_LEN)).is_ok());
    }

    #[test]
    fn refuses_each_rule_with_a_message_naming_it() {
        let msg = |n: &str| validate_model_name(n).unwrap_err().to_string();
        assert_eq!(msg(""), "the model name is empty");
        assert!(msg("../etc").contains("'/' (a path separator) at byte 2"));
        assert!(msg("/etc/passwd").contains("'/'"));
        assert!(msg("a\\b").contains("'\\'"));
        assert!(msg("..").contains("must not start with '.'"));
        assert!(msg(".hidden").contains("must not start with '.'"));
        assert!(msg("a..b").contains("must not contain '..'"));
        assert!(msg("a\0b").contains("a NUL character at byte 1"));
        assert!(msg("a\nb").contains("control character U+000A"));
        assert!(msg("a b").contains("' '"));
        let long = msg(&"m".repeat(MAX_MODEL_NAME_LEN + 1));
        assert!(long.contains("129 bytes") && long.contains("limit is 128"));
        assert!(long.len() < 200, "the name is shortened: {long}");
    }

    #[test]
    fn odd_unicode_is_refused_and_never_echoed_raw() {
        // Right-to-left override, zero-width space, a homoglyph (Cyrillic a), a combining mark.
        for bad in ["iris\u{202e}x", "ir\u{200b}is", "\u{430}pple", "e\u{301}"] {
            let e = validate_model_name(bad).unwrap_err().to_string();
            assert!(e.contains("non-ASCII character U+"), "{e}");
            assert!(e.is_ascii(), "{e}");
        }
        assert!(
            validate_model_name("a\u{202e}b")
                .unwrap_err()
                .to_string()
                .contains("a\\u{202e}b")
        );
    }
}
