//! Finds where a chunked body (RFC 9112 §7.1) ends, without decoding it: the fast lane
//! passes chunked bytes through as they are and only needs to know the last byte, so the
//! upstream connection can be reused.

/// Where the scanner is in the chunked grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// After the size: extensions or whitespace, up to the line's end.
    SizeRest,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// The start of a trailer line, or the empty line that ends the body.
    TrailerStart,
    TrailerLine,
    FinalLf,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadChunk;

#[derive(Debug)]
pub(super) struct ChunkScanner {
    state: State,
    size: u64,
    digits: u8,
    remaining: u64,
}

impl ChunkScanner {
    pub(super) fn new() -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: 0,
            remaining: 0,
        }
    }

    /// Reads `bytes`, the body's next bytes. `Ok(Some(n))`: the body ends after the first
    /// `n` of them; `Ok(None)`: all of them belong to it and more are to come.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Data {
                let take = self.remaining.min((bytes.len() - i) as u64);
                self.remaining -= take;
                i += take as usize;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = match (self.state, b) {
                (State::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    if self.digits == 15 {
                        return Err(BadChunk);
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from(hex(b));
                    State::Size
                }
                (State::Size, b';' | b' ' | b'\t') if self.digits > 0 => State::SizeRest,
                (State::Size, b'\r') if self.digits > 0 => State::SizeLf,
                (State::Size, _) => return Err(BadChunk),
                (State::SizeRest, b'\r') => State::SizeLf,
                (State::SizeRest, b'\n') => return Err(BadChunk),
                (State::SizeRest, _) => State::SizeRest,
                (State::SizeLf, b'\n') => {
                    let size = std::mem::take(&mut self.size);
                    self.digits = 0;
                    if size == 0 {
                        State::TrailerStart
                    } else {
                        self.remaining = size;
                        State::Data
                    }
                }
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size,
                (State::TrailerStart, b'\r') => State::FinalLf,
                (State::TrailerStart, b'\n') => return Err(BadChunk),
                (State::TrailerStart, _) | (State::TrailerLine, _) if b != b'\n' => {
                    State::TrailerLine
                }
                (State::TrailerLine, b'\n') => State::TrailerStart,
                (State::FinalLf, b'\n') => {
                    self.state = State::Done;
                    return Ok(Some(i));
                }
                _ => return Err(BadChunk),
            };
        }
        Ok(None)
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(body: &[u8]) -> Result<Option<usize>, BadChunk> {
        ChunkScanner::new().feed(body)
    }

    #[test]
    fn finds_the_end_of_a_body() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT";
        assert_eq!(end_of(body), Ok(Some(body.len() - 4)));
    }

    #[test]
    fn finds_the_end_byte_by_byte() {
        let body = b"a\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        let mut s = ChunkScanner::new();
        for (i, b) in body.iter().enumerate() {
            let r = s.feed(std::slice::from_ref(b)).unwrap();
            if i + 1 == body.len() {
                assert_eq!(r, Some(1));
            } else {
                assert_eq!(r, None, "at byte {i}");
            }
        }
    }

    #[test]
    fn a_large_chunk_across_feeds() {
        let mut s = ChunkScanner::new();
        assert_eq!(s.feed(b"FFFF\r\n").unwrap(), None);
        assert_eq!(s.feed(&vec![b'x'; 40_000]).unwrap(), None);
        assert_eq!(s.feed(&vec![b'y'; 25_535]).unwrap(), None);
        assert_eq!(s.feed(b"\r\n0\r\n\r\n").unwrap(), Some(7));
    }

    #[test]
    fn refuses_malformed_framing() {
        assert_eq!(end_of(b"zz\r\n"), Err(BadChunk));
        assert_eq!(end_of(b"\r\n"), Err(BadChunk));
        assert_eq!(end_of(b"3\r\nabcX\r\n"), Err(BadChunk));
        assert_eq!(end_of(b"1234567890abcdef0\r\n"), Err(BadChunk));
        assert_eq!(end_of(b"0\r\n\n"), Err(BadChunk));
    }
}
