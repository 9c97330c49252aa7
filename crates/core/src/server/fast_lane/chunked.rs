//! Finds where a chunked body (RFC 9112 §7.1) ends, without decoding it: the fast lane
//! passes chunks through as they are and only needs to know the last byte, so the
//! upstream connection can be reused. The grammar is hyper's (CRLF line ends, only
//! whitespace then `;` extensions after a size), so the client's parser and this one
//! agree on where the body ends. Trailers are swallowed: they are not passed on.

/// Where the scanner is in the chunked grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// Whitespace after the size.
    SizeSpace,
    /// A chunk extension, up to the line's end.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// The start of a trailer line, or the empty line that ends the body.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadChunk;

/// What one `feed` found: pass on the first `forward` bytes, drop up to `consumed`
/// (trailers); `done` once the body is over (the caller writes the final CRLF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Step {
    pub forward: usize,
    pub consumed: usize,
    pub done: bool,
}

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

    /// Reads `bytes`, the body's next bytes.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Result<Step, BadChunk> {
        let mut i = 0;
        let mut forward = 0;
        while i < bytes.len() {
            if self.state == State::Data {
                let take = self.remaining.min((bytes.len() - i) as u64);
                self.remaining -= take;
                i += take as usize;
                forward = i;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let in_trailers = matches!(
                self.state,
                State::TrailerStart | State::TrailerLine | State::TrailerLf | State::FinalLf
            );
            let b = bytes[i];
            i += 1;
            if !in_trailers {
                forward = i;
            }
            self.state = match (self.state, b) {
                (State::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    if self.digits == 15 {
                        return Err(BadChunk);
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from(hex(b));
                    State::Size
                }
                (State::Size, b' ' | b'\t') if self.digits > 0 => State::SizeSpace,
                (State::Size, b';') if self.digits > 0 => State::Extension,
                (State::Size, b'\r') if self.digits > 0 => State::SizeLf,
                (State::SizeSpace, b' ' | b'\t') => State::SizeSpace,
                (State::SizeSpace, b';') => State::Extension,
                (State::SizeSpace, b'\r') => State::SizeLf,
                (State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\n') => return Err(BadChunk),
                (State::Extension, _) => State::Extension,
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
                (State::TrailerLine, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::TrailerLine, b) if b != b'\n' => State::TrailerLine,
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::FinalLf, b'\n') => {
                    self.state = State::Done;
                    return Ok(Step {
                        forward,
                        consumed: i,
                        done: true,
                    });
                }
                _ => return Err(BadChunk),
            };
        }
        Ok(Step {
            forward,
            consumed: i,
            done: false,
        })
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

    fn scan(body: &[u8]) -> Result<Step, BadChunk> {
        ChunkScanner::new().feed(body)
    }

    #[test]
    fn finds_the_end_of_a_body() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT";
        let step = scan(body).unwrap();
        assert!(step.done);
        assert_eq!(step.consumed, body.len() - 4);
        // Everything up to the last chunk's size line is passed on.
        assert_eq!(
            &body[..step.forward],
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n"
        );
    }

    #[test]
    fn swallows_trailers_byte_by_byte() {
        let body = b"a \r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        let mut s = ChunkScanner::new();
        let mut forwarded = Vec::new();
        for (i, b) in body.iter().enumerate() {
            let step = s.feed(std::slice::from_ref(b)).unwrap();
            assert_eq!(step.consumed, 1);
            forwarded.extend_from_slice(&[*b][..step.forward]);
            assert_eq!(step.done, i + 1 == body.len(), "at byte {i}");
        }
        assert_eq!(forwarded, b"a \r\n0123456789\r\n0\r\n");
    }

    #[test]
    fn a_large_chunk_across_feeds() {
        let mut s = ChunkScanner::new();
        assert!(!s.feed(b"FFFF\r\n").unwrap().done);
        assert_eq!(s.feed(&vec![b'x'; 40_000]).unwrap().forward, 40_000);
        assert!(!s.feed(&vec![b'y'; 25_535]).unwrap().done);
        let end = s.feed(b"\r\n0\r\n\r\n").unwrap();
        assert_eq!((end.forward, end.consumed, end.done), (5, 7, true));
    }

    #[test]
    fn refuses_what_hyper_refuses() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3\r\nabcX\r\n",
            b"1234567890abcdef0\r\n",
            b"5 6\r\n",
            b"5\n",
            b"5;ext\n",
            b"0\r\n\n",
            b"0\r\nx: 1\n\r\n",
        ] {
            assert_eq!(
                scan(bad),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
