//! Path rules: strip a prefix, map, rewrite with a regex, add a prefix.
//!
//! Paths are handled as raw bytes of the request target, still percent-encoded: no
//! rule decodes or re-encodes anything, so `%2F`, `%E2%82%AC` and friends reach the
//! upstream exactly as the client sent them, and nothing is ever decoded twice. Rule
//! strings are compared byte for byte with the path (case-sensitive, `%2F` and `%2f`
//! differ). The query is not part of the path: the caller keeps it aside and puts it
//! back byte for byte.
//!
//! Safety: [`PathRules::apply`] refuses a path with a dot-segment, before and after
//! rewriting, so no request can climb out of the route's prefix on the upstream (see
//! [`has_dot_segment`] for what counts).

use std::borrow::Cow;

use regex::Regex;

use super::TransformError;

/// Path rules, applied in this order:
///
/// 1. `strip_prefix`: removed on a segment boundary: with `/api`, `/api/v1/users`
///    becomes `/v1/users`, `/api` and `/api/` become `/`, and `/apix` is left alone.
///    A path without the prefix is left alone too (not an error).
/// 2. `mappings`: the first [`PathMapping`] that matches replaces the path.
/// 3. `rewrite`: a regex [`PathRewrite`]; a path it does not match is left alone.
/// 4. `add_prefix`: prepended as is: `/internal` turns `/x` into `/internal/x` and `/`
///    into `/internal/` (prefix + path: never a double slash, and a trailing slash
///    stays a trailing slash).
///
/// A prefix of `/` does nothing, so [`PathRules::new`] stores it as `None`.
///
/// Build rules with [`PathRules::new`], [`PathMapping::new`] and [`PathRewrite::new`],
/// which validate the strings. The fields are public for typed construction;
/// [`PathRules::apply`] still enforces its output guarantees on unvalidated rules.
#[derive(Debug, Clone, Default)]
pub struct PathRules {
    pub strip_prefix: Option<String>,
    pub mappings: Vec<PathMapping>,
    pub rewrite: Option<PathRewrite>,
    pub add_prefix: Option<String>,
}

/// Maps one path (or a subtree of paths) to another.
///
/// * exact (`prefix: false`): a path equal to `from` becomes `to`.
/// * prefix (`prefix: true`): a path equal to `from` becomes `to`; a path starting with
///   `from` + `/` becomes `to` + the rest (`/users` → `/accounts` maps `/users/7` to
///   `/accounts/7` and `/users/` to `/accounts/`, but not `/usersx`). A `from` of `/`
///   matches every path; a `to` of `/` maps `from/rest` to `/rest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMapping {
    pub from: String,
    pub to: String,
    pub prefix: bool,
}

/// A regex rewrite of the path, like Velithon's `path_rewrite`: every
/// non-overlapping match of `pattern` is replaced by `replacement` (as `re.sub`
/// does; anchor the pattern with `^…$` to rewrite the whole path once).
///
/// The replacement uses the regex crate's syntax: `$1`, `${1}`, `$name`, `${name}`,
/// `$0` for the whole match and `$$` for a literal `$`. A bare name takes every
/// following letter, digit and `_`, so write `${1}a`, not `$1a`.
///
/// If the result does not start with `/`, one is prepended (`^/v1/(.*)$` → `$1` maps
/// `/v1/users` to `/users`).
#[derive(Debug, Clone)]
pub struct PathRewrite {
    regex: Regex,
    replacement: String,
}

impl PathRules {
    /// Builds path rules from strings, validating both prefixes (see
    /// [`PathMapping::new`] for what a path string may contain; a prefix must also
    /// not end with `/` unless it is `/`, which is stored as `None`).
    pub fn new(
        strip_prefix: Option<&str>,
        mappings: Vec<PathMapping>,
        rewrite: Option<PathRewrite>,
        add_prefix: Option<&str>,
    ) -> Result<Self, TransformError> {
        Ok(PathRules {
            strip_prefix: prefix_rule("stripPrefix", strip_prefix)?,
            mappings,
            rewrite,
            add_prefix: prefix_rule("addPrefix", add_prefix)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.strip_prefix.is_none()
            && self.mappings.is_empty()
            && self.rewrite.is_none()
            && self.add_prefix.is_none()
    }

    /// Rewrites `path` (the path only: the caller keeps the query byte for byte).
    ///
    /// Percent-encoding is kept exactly as sent: no decoding, no re-encoding. Returns
    /// the input borrowed, without allocating, when no rule changes it (in particular
    /// with empty rules).
    ///
    /// Refuses:
    /// * an input with a dot-segment ([`has_dot_segment`]), whatever the rules, even
    ///   empty ones: an `Ok` path never has one. Callers that want to pass paths
    ///   through untouched skip `apply` when [`PathRules::is_empty`];
    /// * with non-empty rules, an input that does not start with `/`;
    /// * a result with a dot-segment (a regex can produce one from captures) or that
    ///   does not start with `/` (only reachable with unvalidated rules).
    pub fn apply<'a>(&self, path: &'a str) -> Result<Cow<'a, str>, TransformError> {
        if has_dot_segment(path) {
            return Err(TransformError::new(
                "path contains a dot-segment (\".\" or \"..\", possibly percent-encoded)",
            ));
        }
        if self.is_empty() {
            return Ok(Cow::Borrowed(path));
        }
        if !path.starts_with('/') {
            return Err(TransformError::new("path does not start with '/'"));
        }

        let mut out: Cow<'a, str> = Cow::Borrowed(path);
        if let Some(prefix) = &self.strip_prefix {
            if let Some(rest) = match_prefix(path, prefix) {
                out = Cow::Borrowed(if rest.is_empty() { "/" } else { rest });
            }
        }
        if let Some(mapped) = self.mappings.iter().find_map(|m| m.map(&out)) {
            out = Cow::Owned(mapped);
        }
        if let Some(rewrite) = &self.rewrite {
            out = rewrite.apply(out);
        }
        if let Some(prefix) = &self.add_prefix {
            if prefix != "/" {
                let mut joined = String::with_capacity(prefix.len() + out.len());
                joined.push_str(prefix);
                joined.push_str(&out);
                out = Cow::Owned(joined);
            }
        }

        if !out.starts_with('/') {
            return Err(TransformError::new(
                "rewritten path does not start with '/'",
            ));
        }
        if has_dot_segment(&out) {
            return Err(TransformError::new(
                "rewritten path contains a dot-segment (\".\" or \"..\", possibly percent-encoded)",
            ));
        }
        Ok(out)
    }
}

impl PathMapping {
    /// Builds a mapping. `from` and `to` must start with `/` and contain only visible
    /// ASCII (anything else percent-encoded, every `%` followed by two hex digits):
    /// no whitespace, no `?` or `#` (the query and fragment are not part of a path),
    /// no `\`, and no dot-segment. For a prefix mapping, neither may end with `/`
    /// unless it is `/`; an exact mapping may (to match or produce a trailing slash).
    pub fn new(from: &str, to: &str, prefix: bool) -> Result<Self, TransformError> {
        let what = if prefix {
            "prefix mapping"
        } else {
            "exact mapping"
        };
        check_rule_path(what, from, prefix)?;
        check_rule_path(what, to, prefix)?;
        Ok(PathMapping {
            from: from.to_owned(),
            to: to.to_owned(),
            prefix,
        })
    }

    fn map(&self, path: &str) -> Option<String> {
        if !self.prefix {
            return (path == self.from).then(|| self.to.clone());
        }
        let rest = match_prefix(path, &self.from)?;
        Some(if rest.is_empty() {
            self.to.clone()
        } else if self.to == "/" {
            rest.to_owned()
        } else {
            let mut joined = String::with_capacity(self.to.len() + rest.len());
            joined.push_str(&self.to);
            joined.push_str(rest);
            joined
        })
    }
}

impl PathRewrite {
    /// Compiles a rewrite. Refuses an empty or invalid pattern (the error names it), a
    /// replacement that refers to a group the pattern does not have (including the
    /// `$1a` trap, which means group `1a`), and a replacement whose literal text holds
    /// characters a path cannot (see [`PathMapping::new`]) or a dot-segment.
    pub fn new(pattern: &str, replacement: &str) -> Result<Self, TransformError> {
        if pattern.is_empty() {
            return Err(TransformError::new("path rewrite pattern is empty"));
        }
        let regex = Regex::new(pattern).map_err(|e| {
            TransformError::new(format!("invalid path rewrite pattern {pattern:?}: {e}"))
        })?;
        check_replacement(&regex, replacement)?;
        Ok(PathRewrite {
            regex,
            replacement: replacement.to_owned(),
        })
    }

    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    pub fn replacement(&self) -> &str {
        &self.replacement
    }

    fn apply<'a>(&self, input: Cow<'a, str>) -> Cow<'a, str> {
        let replaced = match self.regex.replace_all(&input, self.replacement.as_str()) {
            Cow::Borrowed(_) => None,
            Cow::Owned(s) => Some(s),
        };
        match replaced {
            None => input,
            Some(s) if s.starts_with('/') => Cow::Owned(s),
            Some(s) => {
                let mut fixed = String::with_capacity(s.len() + 1);
                fixed.push('/');
                fixed.push_str(&s);
                Cow::Owned(fixed)
            }
        }
    }
}

/// Whether a raw (still percent-encoded) path has a dot-segment: a segment that is
/// `.` or `..`, each dot written as `.` or `%2e`/`%2E` in any mix (`.%2E`, `%2e.`, …).
///
/// To be safe with upstreams that decode or split differently from the gateway:
/// * segments are separated by `/`, and also by `\` and by the encoded `%2F`/`%2f` and
///   `%5C`/`%5c` (an upstream that decodes before splitting sees `a%2F..%2Fb` as
///   `a/../b`);
/// * a segment's path parameters are ignored: `..;x` (or `..%3Bx`) counts as `..`, as
///   servlet containers read it.
///
/// `...`, `..a`, `a..b` and the double-encoded `%252e%252e` (a literal `%2e%2e` once
/// decoded) are ordinary segments. A `%` not followed by two hex digits is an ordinary
/// character. Runs in one pass without allocating.
pub fn has_dot_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    // Dots in the current segment, and whether the segment so far holds nothing else.
    let mut dots = 0usize;
    let mut only_dots = true;
    // After a ';' the rest of the segment is parameters: ignored.
    let mut in_params = false;
    while i < bytes.len() {
        let (unit, encoded) = match bytes[i] {
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            ) {
                (Some(hi), Some(lo)) => (hi << 4 | lo, true),
                _ => (b'%', false),
            },
            b => (b, false),
        };
        i += if encoded { 3 } else { 1 };
        match unit {
            b'/' | b'\\' => {
                if only_dots && (dots == 1 || dots == 2) {
                    return true;
                }
                dots = 0;
                only_dots = true;
                in_params = false;
            }
            _ if in_params => {}
            b';' => in_params = true,
            b'.' => dots += 1,
            _ => only_dots = false,
        }
    }
    only_dots && (dots == 1 || dots == 2)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The rest of `path` after `prefix` on a segment boundary: `""` when they are equal,
/// else a rest starting with `/`. A prefix of `/` matches every path (rest = path).
fn match_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    if prefix == "/" {
        return Some(if path == "/" { "" } else { path });
    }
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

fn prefix_rule(what: &str, prefix: Option<&str>) -> Result<Option<String>, TransformError> {
    match prefix {
        None | Some("/") => Ok(None),
        Some(p) => {
            check_rule_path(what, p, true)?;
            Ok(Some(p.to_owned()))
        }
    }
}

/// Validates a path string of a rule (see [`PathMapping::new`]).
fn check_rule_path(what: &str, path: &str, is_prefix: bool) -> Result<(), TransformError> {
    if !path.starts_with('/') {
        return Err(TransformError::new(format!(
            "{what} {path:?} must start with '/'"
        )));
    }
    check_path_chars(what, path, path)?;
    if is_prefix && path.len() > 1 && path.ends_with('/') {
        return Err(TransformError::new(format!(
            "{what} {path:?} must not end with '/'"
        )));
    }
    if has_dot_segment(path) {
        return Err(TransformError::new(format!(
            "{what} {path:?} contains a dot-segment (\".\" or \"..\")"
        )));
    }
    Ok(())
}

/// Checks that `text` (a part of the rule string `whole`) holds only characters a raw
/// path may: visible ASCII except `?`, `#` and `\`, with every `%` starting a
/// `%XX` escape.
fn check_path_chars(what: &str, whole: &str, text: &str) -> Result<(), TransformError> {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let problem = match b {
            b'?' => "must not contain '?' (the query is not part of the path)",
            b'#' => "must not contain '#'",
            b'\\' => "must not contain '\\'",
            b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => "must not contain whitespace",
            b'%' if !(bytes
                .get(i + 1)
                .copied()
                .is_some_and(|h| hex_value(h).is_some())
                && bytes
                    .get(i + 2)
                    .copied()
                    .is_some_and(|h| hex_value(h).is_some())) =>
            {
                "has a '%' not followed by two hex digits"
            }
            b'!'..=b'~' => continue,
            _ => "must contain only visible ASCII (percent-encode anything else)",
        };
        return Err(TransformError::new(format!("{what} {whole:?} {problem}")));
    }
    Ok(())
}

/// A capture reference in a replacement, parsed exactly as the regex crate does
/// (`regex_automata::util::interpolate`).
enum GroupRef<'r> {
    Number(usize),
    Named(&'r str),
}

/// Parses the reference at the start of `rep` (which starts with `$` not followed by
/// `$`): the reference and its length, or `None` when the `$` is literal.
fn find_group_ref(rep: &str) -> Option<(GroupRef<'_>, usize)> {
    let bytes = rep.as_bytes();
    if bytes.len() <= 1 || bytes[0] != b'$' {
        return None;
    }
    let (name, end) = if bytes[1] == b'{' {
        let close = rep[2..].find('}')? + 2;
        (&rep[2..close], close + 1)
    } else {
        let len = bytes[1..]
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_')
            .count();
        if len == 0 {
            return None;
        }
        (&rep[1..1 + len], 1 + len)
    };
    let group = match name.parse::<usize>() {
        Ok(n) => GroupRef::Number(n),
        Err(_) => GroupRef::Named(name),
    };
    Some((group, end))
}

fn check_replacement(regex: &Regex, replacement: &str) -> Result<(), TransformError> {
    let what = "path rewrite replacement";
    let pattern = regex.as_str();
    // The literal text with each group replaced by a neutral "x", to look for
    // dot-segments the replacement would always produce.
    let mut skeleton = String::with_capacity(replacement.len());
    let mut rest = replacement;
    while let Some(at) = rest.find('$') {
        check_path_chars(what, replacement, &rest[..at])?;
        skeleton.push_str(&rest[..at]);
        rest = &rest[at..];
        if rest.as_bytes().get(1) == Some(&b'$') {
            skeleton.push('$');
            rest = &rest[2..];
            continue;
        }
        let Some((group, len)) = find_group_ref(rest) else {
            skeleton.push('$');
            rest = &rest[1..];
            continue;
        };
        match group {
            GroupRef::Number(n) if n >= regex.captures_len() => {
                return Err(TransformError::new(format!(
                    "{what} {replacement:?} refers to group {n} but the pattern {pattern:?} \
                     has {} group(s)",
                    regex.captures_len() - 1
                )));
            }
            GroupRef::Named(name) if !regex.capture_names().flatten().any(|n| n == name) => {
                return Err(TransformError::new(format!(
                    "{what} {replacement:?} refers to group {name:?} which the pattern \
                     {pattern:?} does not define (write ${{1}}a, not $1a, to follow a \
                     group with letters, digits or '_')"
                )));
            }
            _ => skeleton.push('x'),
        }
        rest = &rest[len..];
    }
    check_path_chars(what, replacement, rest)?;
    skeleton.push_str(rest);
    if has_dot_segment(&skeleton) {
        return Err(TransformError::new(format!(
            "{what} {replacement:?} contains a dot-segment (\".\" or \"..\")"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
