//! `redis://[[user]:password@]host[:port][/db]` → where and how to connect.

use std::fmt;

use super::RedisError;

/// Where and how to connect, from `redis://[[user]:password@]host[:port][/db]`.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) db: u32,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish()
    }
}

pub(super) fn parse_url(url: &str) -> Result<Target, RedisError> {
    let bad = |m: &str| RedisError::Url(m.to_owned());
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected redis://host:port[/db]"))?;
    match scheme.to_ascii_lowercase().as_str() {
        "redis" => {}
        "rediss" => return Err(bad("TLS (rediss://) is not supported")),
        _ => return Err(bad("the scheme must be redis://")),
    }
    if rest.contains(['?', '#']) {
        return Err(bad("query parameters are not supported"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = match u.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => (u, None),
            };
            let user = percent_decode(user)?;
            let pass = pass.map(percent_decode).transpose()?;
            ((!user.is_empty()).then_some(user), pass)
        }
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in the host"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected :port after ]"))?,
                ),
            ),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let port = match port {
        None => 6379,
        Some(p) => p.parse().map_err(|_| bad("the port must be 0–65535"))?,
    };
    let db = match path {
        "" => 0,
        p => p
            .parse()
            .map_err(|_| bad("the path must be a database number"))?,
    };
    Ok(Target {
        host: host.to_owned(),
        port,
        username,
        password,
        db,
    })
}

pub(super) fn percent_decode(s: &str) -> Result<String, RedisError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| RedisError::Url("bad %-escape in the credentials".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| RedisError::Url("credentials are not UTF-8".into()))
}
