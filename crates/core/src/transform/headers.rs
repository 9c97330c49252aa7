//! Static header rules: remove, modify and add (set) request or response headers.

use http::header::{Entry, HeaderMap, HeaderName, HeaderValue};

use super::TransformError;

/// Headers a rule must never touch: hop-by-hop and framing headers, and `Host`. The
/// gateway manages them itself (it strips hop-by-hop headers, frames bodies and sets
/// `Host` for the upstream); a rule changing them could desynchronise the framing
/// between the gateway and its peers (request smuggling) or break connection reuse.
/// Lowercase, as [`HeaderName`] stores them.
pub const MANAGED_HEADERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "host",
];

/// Whether `name` is one of [`MANAGED_HEADERS`].
pub fn is_managed(name: &HeaderName) -> bool {
    MANAGED_HEADERS.contains(&name.as_str())
}

/// Static header rules, applied in this order:
///
/// 1. `remove`: every value of each name is removed;
/// 2. `modify`: a header that is present gets the given value, which replaces all of
///    its values; an absent header stays absent;
/// 3. `add`: the header is set to the given value, replacing any values it had
///    ("set" semantics, not "append").
///
/// Within `modify` and within `add` a name given twice ends with its last value. A
/// name may appear in several lists (e.g. remove then add it again).
///
/// Build rules with [`HeaderRules::from_lists`], which validates names and values and
/// refuses [`MANAGED_HEADERS`]. The fields are public so that rules can also be built
/// from typed values; [`HeaderRules::apply`] then trusts them as they are.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    pub remove: Vec<HeaderName>,
    pub modify: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.modify.is_empty() && self.add.is_empty()
    }

    /// Applies the rules to `headers`. With empty rules this touches nothing. Values
    /// are cloned per request, which for a [`HeaderValue`] is a reference-count bump.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.modify {
            if let Entry::Occupied(mut entry) = headers.entry(name) {
                // `insert` drops every previous value of the name.
                entry.insert(value.clone());
            }
        }
        for (name, value) in &self.add {
            headers.insert(name, value.clone());
        }
    }

    /// Builds rules from flat name/value string lists as they cross the FFI.
    ///
    /// * Names must be valid field names (RFC 9110 token characters, non-empty); they
    ///   are case-insensitive and stored lowercase.
    /// * Values may contain only visible ASCII, space and horizontal tab: CR, LF, NUL,
    ///   other control characters and non-ASCII bytes are refused. Values are kept
    ///   verbatim (no trimming) and may be empty.
    /// * [`MANAGED_HEADERS`] are refused in every list.
    ///
    /// Errors name the offending header and the list it is in, never the value.
    pub fn from_lists(
        remove: &[String],
        modify: &[(String, String)],
        add: &[(String, String)],
    ) -> Result<Self, TransformError> {
        let remove = remove
            .iter()
            .map(|name| parse_name(name, "remove"))
            .collect::<Result<Vec<_>, _>>()?;
        let modify = modify
            .iter()
            .map(|(name, value)| parse_pair(name, value, "modify"))
            .collect::<Result<Vec<_>, _>>()?;
        let add = add
            .iter()
            .map(|(name, value)| parse_pair(name, value, "add"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HeaderRules {
            remove,
            modify,
            add,
        })
    }
}

fn parse_name(name: &str, list: &str) -> Result<HeaderName, TransformError> {
    let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        TransformError::new(format!(
            "invalid header name {name:?} in {list} rules: a name is a non-empty token \
             (letters, digits and !#$%&'*+-.^_`|~)"
        ))
    })?;
    if is_managed(&parsed) {
        return Err(TransformError::new(format!(
            "header {name:?} is managed by the gateway and cannot be used in {list} rules"
        )));
    }
    Ok(parsed)
}

fn parse_pair(
    name: &str,
    value: &str,
    list: &str,
) -> Result<(HeaderName, HeaderValue), TransformError> {
    let parsed_name = parse_name(name, list)?;
    if let Some((at, byte)) = value
        .bytes()
        .enumerate()
        .find(|&(_, b)| !(b == b'\t' || (b' '..=b'~').contains(&b)))
    {
        let what = match byte {
            b'\r' => "CR".to_owned(),
            b'\n' => "LF".to_owned(),
            0 => "NUL".to_owned(),
            b if b.is_ascii() => format!("control character 0x{b:02x}"),
            _ => "non-ASCII byte".to_owned(),
        };
        return Err(TransformError::new(format!(
            "invalid value for header {name:?} in {list} rules: {what} at byte {at} \
             (only visible ASCII, space and tab are allowed)"
        )));
    }
    let parsed_value = HeaderValue::from_str(value).map_err(|_| {
        TransformError::new(format!("invalid value for header {name:?} in {list} rules"))
    })?;
    Ok((parsed_name, parsed_value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        v.to_owned()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(n, v)| (s(n), s(v))).collect()
    }

    fn values<'a>(map: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        map.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    fn err(remove: &[&str], modify: &[(&str, &str)], add: &[(&str, &str)]) -> String {
        let remove: Vec<String> = remove.iter().map(|n| s(n)).collect();
        HeaderRules::from_lists(&remove, &pairs(modify), &pairs(add))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_rules_are_a_no_op() {
        let rules = HeaderRules::from_lists(&[], &[], &[]).unwrap();
        assert!(rules.is_empty());
        assert!(HeaderRules::default().is_empty());
        let mut map = HeaderMap::new();
        map.append("x-a", HeaderValue::from_static("1"));
        map.append("x-a", HeaderValue::from_static("2"));
        let before = map.clone();
        rules.apply(&mut map);
        assert_eq!(map, before);
    }

    #[test]
    fn order_is_remove_then_modify_then_add() {
        // x-a: removed, so the modify finds nothing, then added back.
        // x-b: modified, then the add overrides the modification.
        // x-c: removed and not re-added.
        let rules = HeaderRules::from_lists(
            &[s("X-A"), s("x-c")],
            &pairs(&[("x-a", "modified"), ("x-b", "modified")]),
            &pairs(&[("x-a", "added"), ("x-b", "added")]),
        )
        .unwrap();
        assert!(!rules.is_empty());
        let mut map = HeaderMap::new();
        map.insert("x-a", HeaderValue::from_static("orig"));
        map.insert("x-b", HeaderValue::from_static("orig"));
        map.insert("x-c", HeaderValue::from_static("orig"));
        map.insert("x-keep", HeaderValue::from_static("orig"));
        rules.apply(&mut map);
        assert_eq!(values(&map, "x-a"), ["added"]);
        assert_eq!(values(&map, "x-b"), ["added"]);
        assert!(!map.contains_key("x-c"));
        assert_eq!(values(&map, "x-keep"), ["orig"]);
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn remove_drops_every_value() {
        let rules = HeaderRules::from_lists(&[s("x-multi")], &[], &[]).unwrap();
        let mut map = HeaderMap::new();
        map.append("x-multi", HeaderValue::from_static("1"));
        map.append("x-multi", HeaderValue::from_static("2"));
        rules.apply(&mut map);
        assert!(map.is_empty());
    }

    #[test]
    fn modify_replaces_present_and_leaves_absent_absent() {
        let rules = HeaderRules::from_lists(
            &[],
            &pairs(&[("x-present", "new"), ("x-absent", "new")]),
            &[],
        )
        .unwrap();
        let mut map = HeaderMap::new();
        map.append("x-present", HeaderValue::from_static("old1"));
        map.append("x-present", HeaderValue::from_static("old2"));
        rules.apply(&mut map);
        assert_eq!(values(&map, "x-present"), ["new"]);
        assert!(!map.contains_key("x-absent"));
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn add_sets_one_value_replacing_multi_valued_headers() {
        let rules =
            HeaderRules::from_lists(&[], &[], &pairs(&[("x-multi", "one"), ("x-new", "v")]))
                .unwrap();
        let mut map = HeaderMap::new();
        map.append("x-multi", HeaderValue::from_static("a"));
        map.append("x-multi", HeaderValue::from_static("b"));
        map.append("x-multi", HeaderValue::from_static("c"));
        rules.apply(&mut map);
        assert_eq!(values(&map, "x-multi"), ["one"]);
        assert_eq!(values(&map, "x-new"), ["v"]);
    }

    #[test]
    fn duplicate_names_last_one_wins() {
        let rules =
            HeaderRules::from_lists(&[], &[], &pairs(&[("x-a", "1"), ("X-A", "2")])).unwrap();
        let mut map = HeaderMap::new();
        rules.apply(&mut map);
        assert_eq!(values(&map, "x-a"), ["2"]);
    }

    #[test]
    fn names_are_case_insensitive_and_values_kept_verbatim() {
        let rules = HeaderRules::from_lists(
            &[],
            &[],
            &pairs(&[("X-Custom-Header", " a\tb ~!\"{} "), ("x-empty", "")]),
        )
        .unwrap();
        assert_eq!(rules.add[0].0.as_str(), "x-custom-header");
        let mut map = HeaderMap::new();
        rules.apply(&mut map);
        assert_eq!(
            map.get("x-custom-header").unwrap().as_bytes(),
            b" a\tb ~!\"{} "
        );
        assert_eq!(map.get("x-empty").unwrap().as_bytes(), b"");
    }

    #[test]
    fn invalid_names_are_rejected_naming_them() {
        let e = err(&["bad name"], &[], &[]);
        assert!(e.contains("invalid header name \"bad name\""), "{e}");
        assert!(e.contains("remove rules"), "{e}");

        let e = err(&[], &[("x(y)", "v")], &[]);
        assert!(e.contains("invalid header name \"x(y)\""), "{e}");
        assert!(e.contains("modify rules"), "{e}");

        let e = err(&[], &[], &[("", "v")]);
        assert!(e.contains("invalid header name \"\""), "{e}");
        assert!(e.contains("add rules"), "{e}");

        let e = err(&[], &[], &[(":authority", "v")]);
        assert!(e.contains("\":authority\""), "{e}");

        let e = err(&[], &[], &[("x-a\r\nx-b", "v")]);
        assert!(e.contains("invalid header name \"x-a\\r\\nx-b\""), "{e}");
    }

    #[test]
    fn invalid_values_are_rejected_naming_the_header() {
        let cases: [(&str, &str); 6] = [
            ("a\r\nx-injected: 1", "CR at byte 1"),
            ("a\nb", "LF at byte 1"),
            ("a\0b", "NUL at byte 1"),
            ("\x7f", "control character 0x7f at byte 0"),
            ("ab\x01", "control character 0x01 at byte 2"),
            ("caf\u{e9}", "non-ASCII byte at byte 3"),
        ];
        for (value, what) in cases {
            let e = err(&[], &[], &[("X-Value", value)]);
            assert!(e.contains("invalid value for header \"X-Value\""), "{e}");
            assert!(e.contains("add rules"), "{e}");
            assert!(e.contains(what), "{value:?}: {e}");
            // The value itself never appears in the message.
            assert!(!e.contains(value), "{e}");

            let e = err(&[], &[("x-mod", value)], &[]);
            assert!(
                e.contains("invalid value for header \"x-mod\" in modify rules"),
                "{e}"
            );
        }
    }

    #[test]
    fn managed_headers_are_rejected_in_every_list() {
        for name in MANAGED_HEADERS {
            let upper = name.to_ascii_uppercase();
            let e = err(&[&upper], &[], &[]);
            assert_eq!(
                e,
                format!(
                    "header \"{upper}\" is managed by the gateway and cannot be used in remove rules"
                )
            );
            let e = err(&[], &[(name, "v")], &[]);
            assert!(
                e.contains(&format!("header \"{name}\" is managed by the gateway")),
                "{e}"
            );
            assert!(e.contains("modify rules"), "{e}");
            let e = err(&[], &[], &[(name, "v")]);
            assert!(
                e.contains(&format!("header \"{name}\" is managed by the gateway")),
                "{e}"
            );
            assert!(e.contains("add rules"), "{e}");
        }
        // Near misses are fine.
        HeaderRules::from_lists(
            &[s("x-connection"), s("hosts"), s("content-type")],
            &pairs(&[("te-x", "v")]),
            &pairs(&[("content-length-x", "1"), ("proxy-authorization", "x")]),
        )
        .unwrap();
    }

    #[test]
    fn first_error_wins_and_nothing_is_built() {
        let e = err(&["x-ok", "bad name"], &[("host", "h")], &[]);
        assert!(e.contains("\"bad name\""), "{e}");
    }
}
