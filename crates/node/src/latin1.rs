//! Header values cross the FFI as JS strings the way Node's http does it: one byte, one
//! character (latin1). Bytes 0x80-0xFF survive a round trip through JS unchanged.

use http::HeaderValue;

/// The bytes of a header value as a JS string, one character per byte.
pub fn to_text(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
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
        let text = to_text(&bytes);
        assert_eq!(to_header_value(&text).unwrap().as_bytes(), &bytes[..]);
        assert!(to_header_value("snowman \u{2603}").is_none());
        assert!(to_header_value("a\nb").is_none());
    }
}
