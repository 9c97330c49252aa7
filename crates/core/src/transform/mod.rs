//! Request transformation rules: pure, synchronous rewrites of a request's headers
//! and path, built once from configuration (usually strings crossing the FFI) and
//! applied per request on the hot path.
//!
//! * [`HeaderRules`]: remove, then modify, then add (set) static headers. Headers
//!   the gateway itself manages (hop-by-hop and framing headers, `Host`) are refused
//!   when the rules are built.
//! * [`PathRules`]: strip a prefix, then the first matching [`PathMapping`], then a
//!   regex [`PathRewrite`], then add a prefix. Paths stay percent-encoded exactly as
//!   sent; a path with a dot-segment (plain or percent-encoded, see
//!   [`has_dot_segment`]) is refused before and after rewriting, so no request can
//!   escape the route's prefix on the upstream.
//!
//! Both rule sets cost nothing when empty: [`HeaderRules::apply`] returns at once and
//! [`PathRules::apply`] returns the borrowed input without allocating.
//!
//! Nothing here does I/O or async work, and nothing here panics on any input.

pub mod headers;
pub mod path;

use std::fmt;

pub use headers::{HeaderRules, MANAGED_HEADERS};
pub use path::{has_dot_segment, PathMapping, PathRewrite, PathRules};

/// Why a rule could not be built, or why a path was refused. The message is meant
/// for people (configuration errors surface in the binding as they are); it names the
/// offending header, prefix or pattern, never a request's header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformError {
    message: String,
}

impl TransformError {
    pub fn new(message: impl Into<String>) -> Self {
        TransformError {
            message: message.into(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransformError {}
