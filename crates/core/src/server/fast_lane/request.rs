//! The fast lane's request side: is this request one it serves, and if so, the request
//! head to send upstream, written straight from the client's bytes. Anything it does not
//! serve exactly as the general path would is left to that path (hyper and the full
//! pipeline): other methods, bodies, upgrades, `Expect`, HTTP/1.0, headers named in
//! `Connection`, unusual targets, routes with retries, transformations, user
//! strategies or HTTPS/HTTP2 upstreams, apps with rate limits, observers or `traceparent`.

use std::mem::MaybeUninit;

use http::uri::Scheme;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::balancer::{Lease, PickContext};
use crate::error::GatewayError;
use crate::proxy::{
    count_lease_error, is_hop_by_hop_name, is_sane_id_bytes, is_stripped, new_request_id, ConnInfo,
    ProxyRoute,
};
use crate::server::dispatch::{App, RouteAction};
use crate::transform::has_dot_segment;

/// At most this many request headers (hyper's limit too: beyond it, hyper answers 431).
const MAX_HEADERS: usize = 100;

pub(super) enum Next<'a> {
    /// The head is not complete yet.
    Partial,
    /// Not for the fast lane: the general path serves the connection from here.
    General,
    Fast(Plan<'a>),
}

/// A request the fast lane serves; its upstream head is in the caller's buffer.
pub(super) struct Plan<'a> {
    pub head_len: usize,
    pub route: &'a ProxyRoute,
    pub route_index: usize,
    /// The server to send to, or why there is none (the client's error response).
    pub lease: Result<Lease, GatewayError>,
    /// The request id (header name and value) to put on the response.
    pub request_id: Option<(&'a HeaderName, HeaderValue)>,
    /// The client asked to close the connection after this response.
    pub close: bool,
}

/// What the client's headers say, gathered in one pass.
#[derive(Default)]
struct Seen<'b> {
    host: Option<&'b [u8]>,
    hosts: usize,
    close: bool,
    forwarded_proto: bool,
    forwarded_host: bool,
    request_id: Option<&'b [u8]>,
}

/// Reads the head at the start of `buf`. For a request the lane serves, leases its server
/// and writes the upstream request head into `out`.
pub(super) fn plan<'a>(buf: &[u8], app: &'a App, conn: &ConnInfo, out: &mut Vec<u8>) -> Next<'a> {
    // Uninitialised slots: nothing to clear per request.
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Next::Partial,
        Err(_) => return Next::General,
    };
    if req.version != Some(1) || req.method != Some("GET") {
        return Next::General;
    }
    let Some((path, query)) = req.path.and_then(split_target) else {
        return Next::General;
    };
    let mw = app.middleware();
    if mw.rate_limit.is_some()
        || mw.observer.is_some()
        || mw.traceparent
        || mw.metrics_path.as_deref() == Some(path)
        || has_dot_segment(path)
    {
        return Next::General;
    }
    let Ok(found) = app.router().find(&Method::GET, path) else {
        return Next::General;
    };
    let RouteAction::Proxy(route) = &*found.route.action else {
        return Next::General;
    };
    if !is_plain(route) {
        return Next::General;
    }
    let transforms = route.transforms.as_deref();
    let id_name = transforms.and_then(|t| t.request_id.as_ref());
    let strip: &[HeaderName] = transforms.map_or(&[], |t| &t.strip_incoming);

    let mut seen = Seen::default();
    for h in req.headers.iter() {
        let name = h.name;
        // Framing and hop-by-hop headers decide first; a stripped name is then as if
        // never sent (the general path strips before anything reads the headers).
        let framing = name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("te");
        if framing {
            return Next::General;
        }
        if !strip.is_empty() && is_stripped(Lower::new(name).as_str(), strip) {
            continue;
        }
        if name.eq_ignore_ascii_case("host") {
            seen.hosts += 1;
            seen.host = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                match token.trim_ascii() {
                    t if t.eq_ignore_ascii_case(b"close") => seen.close = true,
                    t if t.eq_ignore_ascii_case(b"keep-alive") || t.is_empty() => {}
                    _ => return Next::General, // names a header to drop
                }
            }
        } else if name.eq_ignore_ascii_case("x-forwarded-proto") {
            seen.forwarded_proto = true;
        } else if name.eq_ignore_ascii_case("x-forwarded-host") {
            seen.forwarded_host = true;
        } else if id_name.is_some_and(|id| name.eq_ignore_ascii_case(id.as_str()))
            && seen.request_id.is_none()
        {
            seen.request_id = Some(h.value);
        }
    }
    let Some(host) = seen.host.filter(|h| seen.hosts == 1 && !h.is_empty()) else {
        return Next::General;
    };

    let ctx = PickContext {
        method: &Method::GET,
        path,
        headers: &HeaderMap::new(),
        client: Some(conn.peer),
    };
    let lease = route.balancer.acquire(&ctx, &[]);
    match &lease {
        // An HTTPS server (the list can change at any time): the general path's. The
        // lease is dropped unfinished, which counts for nothing.
        Ok(lease) if *lease.upstream().scheme() != Scheme::HTTP => return Next::General,
        Ok(_) => {}
        Err(err) => count_lease_error(route.metrics.as_deref(), err),
    }
    let request_id = id_name.map(|name| {
        let id = match seen.request_id {
            Some(v) if is_sane_id_bytes(v) => HeaderValue::from_bytes(v).ok(),
            _ => None,
        };
        (name, id.unwrap_or_else(new_request_id))
    });

    out.clear();
    if let Ok(lease) = &lease {
        let upstream = lease.upstream();
        out.extend_from_slice(b"GET ");
        let forwarded = match route.strip_path {
            true => found.route.pattern.strip(path),
            false => path,
        };
        out.extend_from_slice(upstream.base_path().as_bytes());
        if !forwarded.starts_with('/') {
            out.push(b'/');
        }
        out.extend_from_slice(forwarded.as_bytes());
        if let Some(q) = query {
            out.push(b'?');
            out.extend_from_slice(q.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let trusted = conn.peer_is_trusted;
        let mut prior_for: Vec<&[u8]> = Vec::new();
        for h in req.headers.iter() {
            let name = h.name;
            let lower = Lower::new(name);
            let lower = lower.as_str();
            if lower == "host" || is_hop_by_hop_name(lower) || is_stripped(lower, strip) {
                continue;
            }
            if id_name.is_some_and(|id| id.as_str() == lower) {
                continue;
            }
            match lower {
                "x-forwarded-for" => {
                    if trusted {
                        prior_for.push(h.value);
                    }
                    continue;
                }
                "x-forwarded-proto" | "x-forwarded-host" if !trusted => continue,
                _ => {}
            }
            header_line(out, lower.as_bytes(), h.value);
        }
        let upstream_host = match route.preserve_host {
            true => host,
            false => upstream.host_header().as_bytes(),
        };
        header_line(out, b"host", upstream_host);
        out.extend_from_slice(b"x-forwarded-for: ");
        for prior in prior_for {
            out.extend_from_slice(prior);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(conn.peer_ip.as_bytes());
        out.extend_from_slice(b"\r\n");
        if !(trusted && seen.forwarded_proto) {
            header_line(out, b"x-forwarded-proto", b"http");
        }
        if !(trusted && seen.forwarded_host) {
            header_line(out, b"x-forwarded-host", host);
        }
        if let Some((name, id)) = &request_id {
            header_line(out, name.as_str().as_bytes(), id.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    Next::Fast(Plan {
        head_len,
        route,
        route_index: found.route.index,
        lease,
        request_id,
        close: seen.close,
    })
}

/// A route the lane can serve as the general path would: one attempt, no
/// transformations beyond request ids and stripped identity headers, a strategy that
/// needs no headers, plain-HTTP/1.1 servers, and no `maxConnectionsPerHost` (the lane's
/// idle connections would count apart from the general path's).
fn is_plain(route: &ProxyRoute) -> bool {
    route.client.settings().max_connections_per_host.is_none() && is_plain_route(route)
}

fn is_plain_route(route: &ProxyRoute) -> bool {
    // A policy of one attempt is no retry (the general path's rule too).
    route.retry.as_deref().is_none_or(|p| p.max_attempts <= 1)
        && route.transport.as_ref().is_none_or(|t| !t.http2())
        && route.transforms.as_deref().is_none_or(|t| {
            t.request_headers.iter().all(|r| r.is_empty())
                && t.path.iter().all(|r| r.is_empty())
                && t.response_headers.iter().all(|r| r.is_empty())
                && t.header_functions.is_none()
                && t.request_body.is_none()
                && t.response_body.is_none()
        })
        && route.balancer.picks_without_headers()
}

/// `(path, query)` of an origin-form target whose every byte the general path's URI
/// parser takes as is (a stricter set than it allows; anything else goes there).
fn split_target(target: &str) -> Option<(&str, Option<&str>)> {
    // hyper answers 414 beyond this.
    if !target.starts_with('/') || target.len() >= usize::from(u16::MAX) {
        return None;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let plain = |b: &u8, extra: &[u8]| {
        b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(b) || extra.contains(b)
    };
    let ok = path.as_bytes().iter().all(|b| plain(b, b""))
        && query.is_none_or(|q| q.as_bytes().iter().all(|b| plain(b, b"?")));
    ok.then_some((path, query))
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A header name in lower case, on the stack when short (they nearly all are).
pub(super) struct Lower<'n> {
    small: [u8; 64],
    len: usize,
    long: Option<String>,
    original: &'n str,
}

impl<'n> Lower<'n> {
    pub(super) fn new(name: &'n str) -> Self {
        let mut small = [0u8; 64];
        if name.bytes().all(|b| !b.is_ascii_uppercase()) {
            return Self {
                small,
                len: 0,
                long: None,
                original: name,
            };
        }
        if name.len() <= small.len() {
            for (d, s) in small.iter_mut().zip(name.bytes()) {
                *d = s.to_ascii_lowercase();
            }
            return Self {
                small,
                len: name.len(),
                long: None,
                original: "",
            };
        }
        Self {
            small,
            len: 0,
            long: Some(name.to_ascii_lowercase()),
            original: "",
        }
    }

    pub(super) fn as_str(&self) -> &str {
        if let Some(long) = &self.long {
            return long;
        }
        if self.len == 0 {
            return self.original;
        }
        // ASCII lower-casing of a valid header name (httparse checked its bytes).
        std::str::from_utf8(&self.small[..self.len]).unwrap_or(self.original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_the_general_uri_parser_takes_as_is() {
        assert_eq!(
            split_target("/a/b?x=1&y=%20"),
            Some(("/a/b", Some("x=1&y=%20")))
        );
        assert_eq!(split_target("/"), Some(("/", None)));
        assert_eq!(split_target("/a?"), Some(("/a", Some(""))));
        assert_eq!(split_target("*"), None);
        assert_eq!(split_target("http://h/a"), None);
        assert_eq!(split_target("/a#frag"), None);
        assert_eq!(split_target("/{\"json\"}"), None);
        assert_eq!(split_target("/a?q=<x>"), None);
    }

    #[test]
    fn lower_cases_names() {
        assert_eq!(Lower::new("X-Request-Id").as_str(), "x-request-id");
        assert_eq!(Lower::new("host").as_str(), "host");
        let long = "X-".repeat(40);
        assert_eq!(Lower::new(&long).as_str(), long.to_ascii_lowercase());
    }
}
