//! Velithon path patterns: `/users/{id:int}/files/{rest:path}`.
//!
//! A pattern is a list of segments. A literal segment matches itself; `{name}` or
//! `{name:str}` one non-empty segment; `{name:int}` a segment of digits (an optional
//! leading `-`); `{name:float}` a decimal number; `{name:uuid}` a UUID; `{name:path}`
//! everything that is left, slashes included (it must come last, and may be empty).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Str,
    Int,
    Float,
    Uuid,
    Path,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param { name: String, kind: ParamKind },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(pub String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatternError {}

/// A compiled path pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    segments: Vec<Segment>,
    has_path_param: bool,
}

/// A captured parameter: name and the raw (still percent-encoded) text.
pub type Params = Vec<(String, String)>;

impl Pattern {
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        if !source.starts_with('/') {
            return Err(PatternError(format!(
                "route pattern {source:?} must start with '/'"
            )));
        }
        let mut segments = Vec::new();
        let parts: Vec<&str> = source[1..].split('/').collect();
        let count = parts.len();
        let mut has_path_param = false;
        let mut names = Vec::<String>::new();
        for (i, part) in parts.into_iter().enumerate() {
            if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (name, kind) = match inner.split_once(':') {
                    Some((n, k)) => (n, parse_kind(k, source)?),
                    None => (inner, ParamKind::Str),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    return Err(PatternError(format!(
                        "route pattern {source:?}: parameter name {name:?} must be letters, digits or '_'"
                    )));
                }
                if names.iter().any(|n| n == name) {
                    return Err(PatternError(format!(
                        "route pattern {source:?}: parameter {name:?} appears twice"
                    )));
                }
                names.push(name.to_string());
                if kind == ParamKind::Path {
                    if i + 1 != count {
                        return Err(PatternError(format!(
                            "route pattern {source:?}: a {{…:path}} parameter must be the last segment"
                        )));
                    }
                    has_path_param = true;
                }
                segments.push(Segment::Param {
                    name: name.to_string(),
                    kind,
                });
            } else if part.contains('{') || part.contains('}') {
                return Err(PatternError(format!(
                    "route pattern {source:?}: segment {part:?} mixes text and a parameter"
                )));
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        Ok(Self {
            source: source.to_string(),
            segments,
            has_path_param,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the pattern has no parameters (it can be matched by string equality).
    pub fn is_static(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// Number of segments that must match before a `{…:path}` tail (used for ordering).
    pub fn literal_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    pub fn has_path_param(&self) -> bool {
        self.has_path_param
    }

    /// Matches a request path (without query). Returns the captured parameters.
    pub fn matches(&self, path: &str) -> Option<Params> {
        let rest = path.strip_prefix('/')?;
        let mut params = Params::new();
        let mut remaining = Some(rest);
        for seg in &self.segments {
            match seg {
                Segment::Param {
                    name,
                    kind: ParamKind::Path,
                } => {
                    params.push((name.clone(), remaining.unwrap_or("").to_string()));
                    return Some(params);
                }
                _ => {
                    let text = remaining?;
                    let (part, next) = match text.find('/') {
                        Some(i) => (&text[..i], Some(&text[i + 1..])),
                        None => (text, None),
                    };
                    match seg {
                        Segment::Literal(l) => {
                            if part != l {
                                return None;
                            }
                        }
                        Segment::Param { name, kind } => {
                            if !kind_accepts(*kind, part) {
                                return None;
                            }
                            params.push((name.clone(), part.to_string()));
                        }
                    }
                    remaining = next;
                }
            }
        }
        // Every segment matched; the path must be used up exactly.
        match remaining {
            None => Some(params),
            Some(_) => None,
        }
    }

    /// The path with the part before the `{…:path}` parameter removed (stripPath),
    /// keeping a leading '/'. Without a path parameter, the path itself is returned.
    /// Only call it on a path this pattern matched.
    pub fn strip<'a>(&self, path: &'a str) -> &'a str {
        if !self.has_path_param {
            return path;
        }
        let bytes = path.as_bytes();
        let mut idx = 0usize;
        for _ in 0..self.segments.len() - 1 {
            idx += 1; // the '/' before the segment
            while idx < bytes.len() && bytes[idx] != b'/' {
                idx += 1;
            }
        }
        if idx >= path.len() {
            "/"
        } else {
            // One leading '/' only: `//host/x` would read as a host to an upstream that
            // resolves the path against a base URL.
            let rest = &path[idx..];
            let extra = rest.len() - rest.trim_start_matches('/').len();
            &rest[extra.saturating_sub(1)..]
        }
    }
}

fn parse_kind(kind: &str, source: &str) -> Result<ParamKind, PatternError> {
    Ok(match kind {
        "str" => ParamKind::Str,
        "int" => ParamKind::Int,
        "float" => ParamKind::Float,
        "uuid" => ParamKind::Uuid,
        "path" => ParamKind::Path,
        other => {
            return Err(PatternError(format!(
                "route pattern {source:?}: unknown parameter type {other:?} (use str, int, float, uuid or path)"
            )))
        }
    })
}

fn kind_accepts(kind: ParamKind, part: &str) -> bool {
    if part.is_empty() {
        return false;
    }
    match kind {
        ParamKind::Str | ParamKind::Path => true,
        ParamKind::Int => {
            let digits = part.strip_prefix('-').unwrap_or(part);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        }
        ParamKind::Float => {
            let digits = part.strip_prefix('-').unwrap_or(part);
            let mut dot = false;
            let mut any = false;
            for b in digits.bytes() {
                match b {
                    b'0'..=b'9' => any = true,
                    b'.' if !dot => dot = true,
                    _ => return false,
                }
            }
            any
        }
        ParamKind::Uuid => {
            part.len() == 36
                && part.bytes().enumerate().all(|(i, b)| match i {
                    8 | 13 | 18 | 23 => b == b'-',
                    _ => b.is_ascii_hexdigit(),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn literal_and_params() {
        assert!(p("/health").matches("/health").is_some());
        assert!(p("/health").matches("/health/").is_none());
        assert!(p("/health").matches("/healthz").is_none());
        let m = p("/users/{id:int}").matches("/users/42").unwrap();
        assert_eq!(m, vec![("id".into(), "42".into())]);
        assert!(p("/users/{id:int}").matches("/users/abc").is_none());
        assert!(p("/users/{id}").matches("/users/").is_none());
        assert!(p("/users/{id}").matches("/users/a/b").is_none());
        assert!(p("/f/{x:float}").matches("/f/1.5").is_some());
        assert!(p("/f/{x:float}").matches("/f/1.5.2").is_none());
        assert!(p("/u/{x:uuid}")
            .matches("/u/123e4567-e89b-12d3-a456-426614174000")
            .is_some());
    }

    #[test]
    fn path_param_takes_the_rest() {
        let pat = p("/api/{path:path}");
        assert_eq!(
            pat.matches("/api/a/b/c").unwrap(),
            vec![("path".into(), "a/b/c".into())]
        );
        assert_eq!(pat.matches("/api/").unwrap()[0].1, "");
        assert_eq!(pat.matches("/api").unwrap()[0].1, "");
        assert!(pat.matches("/apix/a").is_none());
        assert!(pat.matches("/other/a").is_none());
    }

    #[test]
    fn strip_removes_the_part_before_the_tail() {
        let pat = p("/gateway/api/{path:path}");
        assert_eq!(pat.strip("/gateway/api/users/1"), "/users/1");
        // No `//host` after a strip.
        assert_eq!(pat.strip("/gateway/api//evil.com/x"), "/evil.com/x");
        assert_eq!(pat.strip("/gateway/api///"), "/");
        assert_eq!(pat.strip("/gateway/api"), "/");
        assert_eq!(pat.strip("/gateway/api/"), "/");
        let pat = p("/t/{tenant}/{rest:path}");
        assert_eq!(pat.strip("/t/acme/x/y"), "/x/y");
        assert_eq!(pat.strip("/t/acme"), "/");
    }

    #[test]
    fn bad_patterns_are_rejected_with_a_reason() {
        assert!(Pattern::parse("api")
            .unwrap_err()
            .0
            .contains("start with '/'"));
        assert!(Pattern::parse("/a/{p:path}/b")
            .unwrap_err()
            .0
            .contains("last"));
        assert!(Pattern::parse("/a/{x:nope}")
            .unwrap_err()
            .0
            .contains("unknown"));
        assert!(Pattern::parse("/a/x{y}").is_err());
        assert!(Pattern::parse("/a/{x}/{x}")
            .unwrap_err()
            .0
            .contains("twice"));
    }
}
