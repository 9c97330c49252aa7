//! Header rules of a forwarding proxy (RFC 9110 §7.6): hop-by-hop headers are dropped
//! (`Trailer` is end-to-end: hyper sends only the trailers it names, so it must stay)
//! in both directions, `X-Forwarded-*` are set, `Host` is the upstream's unless the
//! route preserves it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::trust::ConnInfo;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the hop-by-hop headers: the fixed list and every name the `Connection`
/// header lists. `TE: trailers` is kept on requests (gRPC needs it end to end).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, is_request: bool) {
    // Most messages carry none: one pass over the names instead of nine hashed removes.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(&name);
        }
        headers.remove(header::CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::UPGRADE);
    if headers.contains_key(header::TE) {
        let trailers_only = is_request
            && headers
                .get_all(header::TE)
                .iter()
                .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if !trailers_only {
            headers.remove(header::TE);
        }
    }
}

/// A response's `Content-Length` as the client must see it (RFC 9112 §6.3): none when a
/// `Transfer-Encoding` framed the body (the body is re-framed), and one value where the
/// upstream sent a list of equal ones (`2, 2`). Without this the listener would pass on
/// a length that is not the body's, or one it cannot read, and drop the connection.
pub fn normalize_length(headers: &mut HeaderMap) {
    if !headers.contains_key(header::CONTENT_LENGTH) {
        return;
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
        return;
    }
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let single =
        values.next().is_some_and(|v| !v.as_bytes().contains(&b',')) && values.next().is_none();
    if single {
        return;
    }
    // hyper's client accepted the response, so the values agree: keep the first.
    let first = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .find(|v| !v.is_empty())
        .and_then(|v| HeaderValue::from_bytes(v).ok());
    headers.remove(header::CONTENT_LENGTH);
    if let Some(length) = first {
        headers.insert(header::CONTENT_LENGTH, length);
    }
}

/// The hop-by-hop names of the fixed list, by their lower-case spelling (for wire code
/// that has no `HeaderName`).
pub(crate) fn is_hop_by_hop_name(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "te"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "keep-alive"
            | "proxy-connection"
    )
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Sets `X-Forwarded-For/-Proto/-Host`. A peer that is a trusted proxy has its own
/// forwarding headers kept (and the peer appended to `X-Forwarded-For`); anyone else's
/// are replaced, so a client cannot forge its address.
pub fn set_forwarded(headers: &mut HeaderMap, conn: &ConnInfo, original_host: Option<HeaderValue>) {
    let trusted = conn.peer_is_trusted;
    let prior: Vec<&[u8]> = if trusted {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(|v| v.as_bytes())
            .collect()
    } else {
        Vec::new()
    };
    let xff = if prior.is_empty() {
        conn.peer_ip.clone()
    } else {
        let mut joined = prior.join(&b", "[..]);
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(conn.peer_ip.as_bytes());
        HeaderValue::from_bytes(&joined).unwrap_or_else(|_| conn.peer_ip.clone())
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if conn.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match original_host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST.clone(), host);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

/// Header names and values as text, one character per byte (latin-1), as Node's http
/// reads header values: what user callbacks see of a header list.
pub fn latin1_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.as_bytes().iter().map(|&b| char::from(b)).collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn content_length_as_the_client_must_see_it() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("9"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        normalize_length(&mut h);
        assert!(!h.contains_key(header::CONTENT_LENGTH));

        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2, 2"));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        normalize_length(&mut h);
        assert_eq!(
            h.get_all(header::CONTENT_LENGTH).iter().collect::<Vec<_>>(),
            ["2"]
        );

        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        normalize_length(&mut h);
        assert_eq!(h.get(header::CONTENT_LENGTH).unwrap(), "5");
    }

    fn conn(trusted: bool) -> ConnInfo {
        ConnInfo::new(
            "10.0.0.7:5000".parse::<SocketAddr>().unwrap(),
            false,
            trusted,
        )
    }

    #[test]
    fn drops_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::UPGRADE, "h2c".parse().unwrap());
        h.insert("x-keep", "yes".parse().unwrap());
        remove_hop_by_hop(&mut h, true);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert!(h.get(header::UPGRADE).is_none());
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-keep"], "yes");
        h.insert(header::TE, "gzip".parse().unwrap());
        remove_hop_by_hop(&mut h, true);
        assert!(h.get(header::TE).is_none());
    }

    #[test]
    fn forwarded_headers_from_untrusted_peer_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        set_forwarded(&mut h, &conn(false), Some("example.test".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.test");
    }

    #[test]
    fn trusted_peer_is_appended() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.2.3.4".parse().unwrap());
        h.append("x-forwarded-for", "5.6.7.8".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        set_forwarded(&mut h, &conn(true), Some("example.test".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
