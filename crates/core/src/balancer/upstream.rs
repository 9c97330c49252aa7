//! One upstream server, parsed once from its URL.

use std::fmt;

use http::uri::{Authority, Scheme, Uri};

use super::state::ServerState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrlError(pub String);

impl fmt::Display for UpstreamUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UpstreamUrlError {}

/// An upstream server: `http(s)://host:port[/base]`, and its runtime state.
pub struct Upstream {
    url: String,
    scheme: Scheme,
    authority: Authority,
    /// `Host` for requests to this server, made once.
    host_header: http::HeaderValue,
    /// A path every forwarded path is put under, without a trailing '/'. Often empty.
    base_path: String,
    /// In-flight count, latency, health, breaker: shared by all requests to this server.
    pub state: ServerState,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream").field("url", &self.url).finish()
    }
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Self, UpstreamUrlError> {
        Self::parse_weighted(url, 1)
    }

    /// Parses `url`; `weight` (≥ 1) is what `WeightedStrategy` gives it.
    pub fn parse_weighted(url: &str, weight: u32) -> Result<Self, UpstreamUrlError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| UpstreamUrlError(format!("upstream URL {url:?} is not a URL: {e}")))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => {
                return Err(UpstreamUrlError(format!(
                    "upstream URL {url:?} must start with http:// or https://"
                )))
            }
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| UpstreamUrlError(format!("upstream URL {url:?} has no host")))?;
        if authority.as_str().contains('@') {
            return Err(UpstreamUrlError(format!(
                "upstream URL {url:?} must not carry credentials; add an Authorization header instead"
            )));
        }
        if uri.query().is_some() {
            return Err(UpstreamUrlError(format!(
                "upstream URL {url:?} must not have a query string"
            )));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        let host_header = http::HeaderValue::from_str(authority.as_str())
            .map_err(|_| UpstreamUrlError(format!("upstream URL {url:?} has a bad host")))?;
        Ok(Self {
            url: url.to_string(),
            scheme,
            authority,
            host_header,
            base_path,
            state: ServerState::with_weight(weight),
        })
    }

    /// The URL exactly as configured; it identifies the server in status reports.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn host_header(&self) -> &http::HeaderValue {
        &self.host_header
    }

    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The upstream URI for a forwarded path and raw query (passed byte for byte).
    pub fn uri_for(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut pq = String::with_capacity(
            self.base_path.len() + path.len() + 1 + query.map_or(0, str::len),
        );
        pq.push_str(&self.base_path);
        if !path.starts_with('/') {
            pq.push('/');
        }
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_builds_uris() {
        let u = Upstream::parse("http://127.0.0.1:9001").unwrap();
        assert_eq!(u.authority().as_str(), "127.0.0.1:9001");
        assert_eq!(
            u.uri_for("/a/b", Some("x=1&y=%20")).unwrap().to_string(),
            "http://127.0.0.1:9001/a/b?x=1&y=%20"
        );
        let u = Upstream::parse("https://svc.local/base/").unwrap();
        assert_eq!(u.base_path(), "/base");
        assert_eq!(
            u.uri_for("/x", None).unwrap().to_string(),
            "https://svc.local/base/x"
        );
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(Upstream::parse("ftp://x")
            .unwrap_err()
            .0
            .contains("http://"));
        assert!(Upstream::parse("not a url").is_err());
        assert!(Upstream::parse("http://u:p@host")
            .unwrap_err()
            .0
            .contains("credentials"));
        assert!(Upstream::parse("http://h/?q=1")
            .unwrap_err()
            .0
            .contains("query"));
    }
}
