//! Text that PostgreSQL can store: `text` refuses NUL bytes, so they are replaced, and error
//! messages are one line of bounded length.

/// Replaces each NUL character with U+FFFD (the replacement character); other text is kept.
pub fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Error messages are one line of at most this many characters.
pub const ERROR_MAX_CHARS: usize = 500;

/// Whitespace runs (newlines included) become one space; NULs are replaced; the result is
/// cut to `ERROR_MAX_CHARS` characters.
pub fn one_line(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    storable(&flat).chars().take(ERROR_MAX_CHARS).collect()
}

/// At most `max_chars` characters of `text`, made storable.
pub fn cut(text: &str, max_chars: usize) -> String {
    storable(text).chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_and_other_text_kept() {
        assert_eq!(storable("b\0c"), "b\u{FFFD}c");
        assert!(matches!(storable("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            storable(&String::from_utf8_lossy(b"a\xffb\0")),
            "a\u{FFFD}b\u{FFFD}"
        );
    }

    #[test]
    fn messages_are_one_bounded_line() {
        assert_eq!(one_line("a\nb\t c\0"), "a b c\u{FFFD}");
        assert_eq!(one_line(&"x".repeat(2000)).len(), ERROR_MAX_CHARS);
        assert_eq!(cut("äöü", 2), "äö");
    }
}
