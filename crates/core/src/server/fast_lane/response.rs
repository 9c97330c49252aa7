//! The fast lane's response side: the upstream's response head read, and the client's
//! written from it as the general path would write it (hop-by-hop headers dropped, the
//! request id set, `Date` added when missing, names in lower case).

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue};

use crate::proxy::is_hop_by_hop_name;

use super::request::Lower;

const MAX_HEADERS: usize = 100;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (204, 304).
    Empty,
    Length(u64),
    /// Passed through as it is (the client gets the same chunks).
    Chunked,
    /// Until the upstream closes; the client gets it chunked.
    UntilClose,
}

#[derive(Debug)]
pub(super) struct Head {
    pub status: u16,
    pub len: usize,
    pub framing: Framing,
    /// The upstream keeps the connection open after this response.
    pub keep_alive: bool,
}

pub(super) enum Parsed {
    Partial,
    /// An interim (1xx) response of this many bytes: skipped, as the general path does.
    Interim(usize),
    Head(Head),
    /// Not a response the lane can pass on (malformed, a 101 nobody asked for,
    /// conflicting lengths).
    Bad,
}

/// Reads the response head at the start of `buf`; for a final one, writes the client's
/// head into `out`.
pub(super) fn parse(
    buf: &[u8],
    out: &mut Vec<u8>,
    request_id: Option<&(&HeaderName, HeaderValue)>,
    close: bool,
) -> Parsed {
    // Uninitialised slots: nothing to clear per response.
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Bad,
    };
    let status = res.code.unwrap_or(0);
    match status {
        // 101 nobody asked for; below 100 is no status (hyper refuses both).
        0..=99 | 101 => return Parsed::Bad,
        100..=199 => return Parsed::Interim(len),
        _ => {}
    }
    let http11 = res.version == Some(1);
    let mut keep_alive = http11;
    let mut said_close = false; // sticky: a later keep-alive does not undo it (hyper)
    let mut chunked = false;
    let mut encoded = false;
    let mut length: Option<u64> = None;
    let mut has_date = false;
    for h in res.headers.iter() {
        let name = Lower::new(h.name);
        match name.as_str() {
            "connection" => {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        said_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    }
                }
            }
            "transfer-encoding" => {
                encoded = true;
                // Chunked must be the last coding; anything else is read to the close.
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            "content-length" => {
                // Digits only, as hyper reads them; a list of equal values is one value.
                for item in h.value.split(|&b| b == b',') {
                    let Some(n) = digits(item.trim_ascii()) else {
                        return Parsed::Bad;
                    };
                    if length.is_some_and(|l| l != n) {
                        return Parsed::Bad;
                    }
                    length = Some(n);
                }
            }
            "date" => has_date = true,
            _ => {}
        }
    }
    if encoded && !http11 {
        return Parsed::Bad; // HTTP/1.0 has no Transfer-Encoding (hyper refuses it)
    }
    let framing = match status {
        204 | 304 => Framing::Empty,
        _ if encoded && chunked => Framing::Chunked,
        _ if encoded => Framing::UntilClose,
        _ => length.map_or(Framing::UntilClose, Framing::Length),
    };
    if said_close || framing == Framing::UntilClose {
        keep_alive = false;
    }

    // Headers named in `Connection` are hop-by-hop too (`close` and `keep-alive` name
    // none: most responses need no list).
    let named: Vec<&[u8]> = res
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| {
            !(t.is_empty()
                || t.eq_ignore_ascii_case(b"close")
                || t.eq_ignore_ascii_case(b"keep-alive"))
        })
        .collect();

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(status).as_slice());
    out.push(b' ');
    // The upstream's reason phrase, as hyper passes it (an empty one stays empty).
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        let lower = Lower::new(h.name);
        let lower = lower.as_str();
        if is_hop_by_hop_name(lower)
            || named
                .iter()
                .any(|n| n.eq_ignore_ascii_case(lower.as_bytes()))
            || lower == "content-length"
            || request_id.is_some_and(|(id, _)| id.as_str() == lower)
        {
            continue;
        }
        out.extend_from_slice(lower.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Chunked | Framing::UntilClose => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        // One canonical value; none on a 204 or 304 (hyper sends none there either).
        Framing::Length(n) => content_length(out, n),
        Framing::Empty => {}
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        with_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    if let Some((name, id)) = request_id {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Parsed::Head(Head {
        status,
        len,
        framing,
        keep_alive,
    })
}

fn content_length(out: &mut Vec<u8>, n: u64) {
    use std::io::Write;
    let _ = write!(out, "content-length: {n}\r\n");
}

/// A decimal length: 1 to 19 ASCII digits.
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// A status code's three digits (httparse reads exactly three).
fn itoa3(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

/// The current `Date` value (IMF-fixdate), formatted once a second per thread.
pub(super) fn with_date(f: impl FnOnce(&[u8])) {
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs || cache.1.is_empty() {
            *cache = (secs, httpdate::fmt_http_date(now));
        }
        f(cache.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> (Head, String) {
        let head_len = raw.find("\r\n\r\n").unwrap() + 4;
        let mut out = Vec::new();
        let id_name = HeaderName::from_static("x-request-id");
        let id = Some((&id_name, HeaderValue::from_static("abc")));
        match parse(raw.as_bytes(), &mut out, id.as_ref(), false) {
            Parsed::Head(h) => {
                assert_eq!(h.len, head_len);
                (h, String::from_utf8(out).unwrap())
            }
            _ => panic!("not a head"),
        }
    }

    #[test]
    fn writes_the_client_head() {
        let (h, out) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Request-Id: theirs\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nhello",
        );
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 5\r\nx-request-id: abc\r\n\r\n"
        );
    }

    #[test]
    fn framings() {
        let (h, out) =
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(out.contains("transfer-encoding: chunked\r\n") && !out.contains("content-length"));
        assert!(out.contains("\r\ndate: "));
        let (h, _) = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
        let (h, _) = head("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        let (h, _) = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.keep_alive);
        let (h, _) = head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.keep_alive);
    }

    #[test]
    fn interim_and_bad_heads() {
        let mut out = Vec::new();
        let early = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
        assert!(matches!(
            parse(early, &mut out, None, false),
            Parsed::Interim(n) if n == early.len()
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 101 Switching\r\n\r\n", &mut out, None, false),
            Parsed::Bad
        ));
        assert!(matches!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                &mut out,
                None,
                false
            ),
            Parsed::Bad
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-", &mut out, None, false),
            Parsed::Partial
        ));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 042 Odd\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad, &mut out, None, false), Parsed::Bad),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn equal_lengths_are_one_length() {
        let (h, out) = head("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(out.matches("content-length: 5\r\n").count(), 1);
    }
}
