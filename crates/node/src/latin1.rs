//! Header values cross the FFI as JS strings the way Node's http does it: one byte, one
//! character (latin1). Bytes 0x80-0xFF survive a round trip through JS unchanged.

use http::HeaderValue;

/// Headers as one JS string, `name\nvalue\nname\nvalue…` (neither a name nor a value
/// can hold a line feed): one string to create per message instead of two per header.
pub fn joined<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut out = String::new();
    for (name, value) in headers {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(name);
        out.push('\n');
        out.extend(value.iter().map(|&b| char::from(b)));
    }
    out
}

/// A JS string as a header value; `None` if a character is above U+00FF or not allowed.
pub fn to_header_value(text: &str) -> Option<HeaderValue> {
    let mut bytes = Vec::with_capacity(text.len());
    for c in text.chars() {
        bytes.push(u8::try_from(u32::from(c)).ok()?);
    }
    HeaderValue::from_bytes(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_byte_a_header_may_hold() {
        let bytes: Vec<u8> = (0x20..=0xffu8).filter(|b| *b != 0x7f).collect();
        let text: String = bytes.iter().map(|&b| char::from(b)).collect();
        assert_eq!(to_header_value(&text).unwrap().as_bytes(), &bytes[..]);
        assert!(to_header_value("snowman \u{2603}").is_none());
        assert!(to_header_value("a\nb").is_none());
    }

    #[test]
    fn joins_headers_with_line_feeds() {
        let pairs = [("a", &b"1"[..]), ("set-cookie", &b"x=\xe9"[..])];
        assert_eq!(joined(pairs.into_iter()), "a\n1\nset-cookie\nx=\u{e9}");
        assert_eq!(joined(std::iter::empty()), "");
    }
}
