//! Finds where a chunked body (RFC 9112 §7.1) ends, without decoding it: the fast lane
//! passes chunk data through as it is and only needs to know the last byte, so the
//! upstream connection can be reused. The grammar and limits are hyper's (CRLF line
//! ends; only whitespace, then `;` extensions, after a size; 16 KiB of extensions or
//! trailers at most), so the client's parser and this one agree on where the body ends.
//! What hyper would not send on is dropped here too: whitespace and extensions after a
//! size (`5;x=1` goes out as `5`) and trailers.

/// Extension or trailer bytes allowed per body (hyper's limits).
const MAX_EXTENSIONS: usize = 16 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

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

impl State {
    fn in_trailers(self) -> bool {
        matches!(
            self,
            State::TrailerStart | State::TrailerLine | State::TrailerLf | State::FinalLf
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadChunk;

/// One run of bytes `feed` read: the first `consumed` bytes, all passed on (`forward ==
/// consumed`) or all dropped (`forward == 0`); `done` once the body is over (the caller
/// then writes the final CRLF).
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
    /// A digit was read (leading zeros count); `significant`: digits after them.
    any_digit: bool,
    significant: u8,
    remaining: u64,
    extensions: usize,
    trailers: usize,
}

impl ChunkScanner {
    pub(super) fn new() -> Self {
        Self {
            state: State::Size,
            size: 0,
            any_digit: false,
            significant: 0,
            remaining: 0,
            extensions: 0,
            trailers: 0,
        }
    }

    /// Reads the next run of `bytes` (the body's next bytes): call again with the rest.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Result<Step, BadChunk> {
        let mut i = 0;
        let mut run: Option<bool> = None; // whether this run's bytes are passed on
        let step = |i: usize, run: Option<bool>, done: bool| Step {
            forward: if run == Some(false) { 0 } else { i },
            consumed: i,
            done,
        };
        while i < bytes.len() {
            if self.state == State::Data {
                if run == Some(false) {
                    break;
                }
                run = Some(true);
                let take = self.remaining.min((bytes.len() - i) as u64);
                self.remaining -= take;
                i += take as usize;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let was_trailer = self.state.in_trailers();
            let b = bytes[i];
            let next = self.next(b)?;
            let keep = !was_trailer && !matches!(next, State::SizeSpace | State::Extension);
            if run.is_some_and(|r| r != keep) {
                break; // the byte starts the next run: not consumed yet
            }
            run = Some(keep);
            if next == State::Extension {
                self.extensions += 1;
            }
            if was_trailer {
                self.trailers += 1;
            }
            if self.extensions > MAX_EXTENSIONS || self.trailers > MAX_TRAILERS {
                return Err(BadChunk);
            }
            self.commit(next, b);
            i += 1;
            if self.state == State::Done {
                return Ok(step(i, run, true));
            }
        }
        Ok(step(i, run, false))
    }

    /// The state after `b`, without moving there yet.
    fn next(&self, b: u8) -> Result<State, BadChunk> {
        Ok(match (self.state, b) {
            (State::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                if self.significant == 16 {
                    return Err(BadChunk); // over 64 bits
                }
                State::Size
            }
            (State::Size, b' ' | b'\t') if self.any_digit => State::SizeSpace,
            (State::Size, b';') if self.any_digit => State::Extension,
            (State::Size, b'\r') if self.any_digit => State::SizeLf,
            (State::SizeSpace, b' ' | b'\t') => State::SizeSpace,
            (State::SizeSpace, b';') => State::Extension,
            (State::SizeSpace, b'\r') => State::SizeLf,
            (State::Extension, b'\r') => State::SizeLf,
            (State::Extension, b'\n') => return Err(BadChunk),
            (State::Extension, _) => State::Extension,
            (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
            (State::SizeLf, b'\n') => State::Data,
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size,
            (State::TrailerStart, b'\r') => State::FinalLf,
            (State::TrailerLine, b'\r') => State::TrailerLf,
            (State::TrailerStart | State::TrailerLine, b) if b != b'\n' => State::TrailerLine,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::FinalLf, b'\n') => State::Done,
            _ => return Err(BadChunk),
        })
    }

    /// Moves to `next`, the state `b` led to (digits accumulate, a size line ends).
    fn commit(&mut self, next: State, b: u8) {
        match (self.state, next) {
            (State::Size, State::Size) => {
                let digit = u64::from(hex(b));
                self.any_digit = true;
                if self.size != 0 || digit != 0 {
                    self.significant += 1;
                }
                self.size = self.size * 16 + digit;
            }
            (State::SizeLf, State::Data) => {
                self.remaining = std::mem::take(&mut self.size);
                self.any_digit = false;
                self.significant = 0;
            }
            (State::SizeLf, State::TrailerStart) => {
                self.any_digit = false;
                self.significant = 0;
            }
            _ => {}
        }
        self.state = next;
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

    /// Feeds `body` in pieces of `piece` bytes: (bytes passed on, bytes read, done).
    fn pass(body: &[u8], piece: usize) -> Result<(Vec<u8>, usize, bool), BadChunk> {
        let mut s = ChunkScanner::new();
        let mut forwarded = Vec::new();
        let mut read = 0;
        for part in body.chunks(piece) {
            let mut at = 0;
            while at < part.len() {
                let step = s.feed(&part[at..])?;
                assert!(step.consumed > 0);
                forwarded.extend_from_slice(&part[at..at + step.forward]);
                at += step.consumed;
                read += step.consumed;
                if step.done {
                    return Ok((forwarded, read, true));
                }
            }
        }
        Ok((forwarded, read, false))
    }

    #[test]
    fn finds_the_end_and_drops_extensions_and_trailers() {
        let body = b"5\r\nhello\r\n6 ;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for piece in [1, 2, 3, 7, body.len()] {
            let (forwarded, read, done) = pass(body, piece).unwrap();
            assert!(done, "piece {piece}");
            assert_eq!(read, body.len() - 4, "piece {piece}");
            assert_eq!(
                forwarded, b"5\r\nhello\r\n6\r\n world\r\n0\r\n",
                "piece {piece}"
            );
        }
    }

    #[test]
    fn a_large_chunk_across_feeds() {
        let mut body = b"FFFF\r\n".to_vec();
        body.extend(vec![b'x'; 0xFFFF]);
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        let (forwarded, read, done) = pass(&body, 40_000).unwrap();
        assert!(done);
        assert_eq!(read, body.len());
        assert_eq!(forwarded, &body[..body.len() - 2]);
    }

    #[test]
    fn leading_zeros_and_sixteen_digits() {
        assert!(
            pass(b"0000000000000000000005\r\nhello\r\n0\r\n\r\n", 100)
                .unwrap()
                .2
        );
        assert_eq!(pass(b"1ffffffffffffffff\r\n", 100), Err(BadChunk));
    }

    #[test]
    fn refuses_what_hyper_refuses() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3\r\nabcX\r\n",
            b"5 6\r\n",
            b"5\n",
            b"5;ext\n",
            b"0\r\n\n",
            b"0\r\nx: 1\n\r\n",
        ] {
            assert_eq!(
                pass(bad, 100),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long_trailer = b"0\r\nx: ".to_vec();
        long_trailer.extend(vec![b'a'; MAX_TRAILERS]);
        assert_eq!(pass(&long_trailer, 4096), Err(BadChunk));
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(vec![b'a'; MAX_EXTENSIONS]);
        assert_eq!(pass(&long_ext, 4096), Err(BadChunk));
    }
}
