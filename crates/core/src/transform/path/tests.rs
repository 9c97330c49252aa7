//! Tests of `path`.

use super::*;

fn strip(prefix: &str) -> PathRules {
    PathRules::new(Some(prefix), Vec::new(), None, None).unwrap()
}

fn add(prefix: &str) -> PathRules {
    PathRules::new(None, Vec::new(), None, Some(prefix)).unwrap()
}

fn mapped(mappings: &[(&str, &str, bool)]) -> PathRules {
    let mappings = mappings
        .iter()
        .map(|&(from, to, prefix)| PathMapping::new(from, to, prefix).unwrap())
        .collect();
    PathRules::new(None, mappings, None, None).unwrap()
}

fn rewritten(pattern: &str, replacement: &str) -> PathRules {
    let rewrite = PathRewrite::new(pattern, replacement).unwrap();
    PathRules::new(None, Vec::new(), Some(rewrite), None).unwrap()
}

fn ok(rules: &PathRules, path: &str) -> String {
    rules.apply(path).unwrap().into_owned()
}

fn is_borrowed(rules: &PathRules, path: &str) -> bool {
    matches!(rules.apply(path).unwrap(), Cow::Borrowed(_))
}

#[test]
fn empty_rules_borrow_the_input() {
    let rules = PathRules::default();
    assert!(rules.is_empty());
    let path = "/any/path%2Fx";
    match rules.apply(path).unwrap() {
        Cow::Borrowed(out) => assert!(std::ptr::eq(out, path)),
        Cow::Owned(_) => panic!("empty rules allocated"),
    }
    // Even "*" or an empty path passes through: empty rules change nothing...
    assert!(is_borrowed(&rules, "*"));
    assert!(is_borrowed(&rules, ""));
    // ...but a dot-segment is refused whatever the rules.
    assert!(rules.apply("/a/../b").is_err());
    // Prefixes of "/" do nothing and leave the rules empty.
    let rules = PathRules::new(Some("/"), Vec::new(), None, Some("/")).unwrap();
    assert!(rules.is_empty());
}

#[test]
fn strip_prefix_alone() {
    let rules = strip("/api");
    assert!(!rules.is_empty());
    assert_eq!(ok(&rules, "/api/v1/users"), "/v1/users");
    assert_eq!(ok(&rules, "/api"), "/");
    assert_eq!(ok(&rules, "/api/"), "/");
    assert_eq!(ok(&rules, "/api//x"), "//x");
    // Segment boundary: not stripped.
    assert_eq!(ok(&rules, "/apix"), "/apix");
    assert_eq!(ok(&rules, "/apix/y"), "/apix/y");
    assert_eq!(ok(&rules, "/api%2Fx"), "/api%2Fx");
    // No prefix: left alone. Case-sensitive.
    assert_eq!(ok(&rules, "/other/api"), "/other/api");
    assert_eq!(ok(&rules, "/API/x"), "/API/x");
    // Stripping never allocates.
    assert!(is_borrowed(&rules, "/api/v1/users"));
    assert!(is_borrowed(&rules, "/api"));
    assert!(is_borrowed(&rules, "/apix"));
    // Multi-segment prefix.
    let rules = strip("/api/v1");
    assert_eq!(ok(&rules, "/api/v1/users"), "/users");
    assert_eq!(ok(&rules, "/api/v12/users"), "/api/v12/users");
}

#[test]
fn add_prefix_alone() {
    let rules = add("/internal");
    assert_eq!(ok(&rules, "/x"), "/internal/x");
    assert_eq!(ok(&rules, "/x/"), "/internal/x/");
    assert_eq!(ok(&rules, "/"), "/internal/");
    assert_eq!(ok(&rules, "/a%2Fb"), "/internal/a%2Fb");
    let rules = add("/a/b");
    assert_eq!(ok(&rules, "/c"), "/a/b/c");
}

#[test]
fn exact_mapping() {
    let rules = mapped(&[("/users", "/accounts", false)]);
    assert_eq!(ok(&rules, "/users"), "/accounts");
    // Exact means exact: no subtree, no trailing slash, no lookalike.
    assert_eq!(ok(&rules, "/users/7"), "/users/7");
    assert_eq!(ok(&rules, "/users/"), "/users/");
    assert_eq!(ok(&rules, "/usersx"), "/usersx");
    assert!(is_borrowed(&rules, "/users/7"));
    // Exact mappings may use trailing slashes on either side.
    let rules = mapped(&[("/docs/", "/static/docs/index.html", false)]);
    assert_eq!(ok(&rules, "/docs/"), "/static/docs/index.html");
    assert_eq!(ok(&rules, "/docs"), "/docs");
}

#[test]
fn prefix_mapping_respects_segment_boundaries() {
    let rules = mapped(&[("/users", "/accounts", true)]);
    assert_eq!(ok(&rules, "/users"), "/accounts");
    assert_eq!(ok(&rules, "/users/"), "/accounts/");
    assert_eq!(ok(&rules, "/users/7"), "/accounts/7");
    assert_eq!(ok(&rules, "/users/7/posts"), "/accounts/7/posts");
    assert_eq!(ok(&rules, "/usersx"), "/usersx");
    assert_eq!(ok(&rules, "/usersx/7"), "/usersx/7");
    assert_eq!(ok(&rules, "/x/users"), "/x/users");
    assert!(is_borrowed(&rules, "/usersx"));
}

#[test]
fn prefix_mapping_with_root() {
    let rules = mapped(&[("/legacy", "/", true)]);
    assert_eq!(ok(&rules, "/legacy"), "/");
    assert_eq!(ok(&rules, "/legacy/a/b"), "/a/b");
    let rules = mapped(&[("/", "/v2", true)]);
    assert_eq!(ok(&rules, "/"), "/v2");
    assert_eq!(ok(&rules, "/a/b"), "/v2/a/b");
}

#[test]
fn first_matching_mapping_wins() {
    let rules = mapped(&[
        ("/a/b", "/first", true),
        ("/a", "/second", true),
        ("/a/b", "/never", false),
    ]);
    assert_eq!(ok(&rules, "/a/b"), "/first");
    assert_eq!(ok(&rules, "/a/b/c"), "/first/c");
    assert_eq!(ok(&rules, "/a/c"), "/second/c");
    // Mappings are not chained: only one applies.
    let rules = mapped(&[("/a", "/b", true), ("/b", "/c", true)]);
    assert_eq!(ok(&rules, "/a/x"), "/b/x");
}

#[test]
fn regex_rewrite_with_numbered_groups() {
    let rules = rewritten(r"^/users/(\d+)$", "/accounts/$1");
    assert_eq!(ok(&rules, "/users/42"), "/accounts/42");
    assert_eq!(ok(&rules, "/users/42/x"), "/users/42/x");
    assert!(is_borrowed(&rules, "/users/abc"));
    let rules = rewritten(r"^/(\w+)/(\d+)$", "/${2}x/$1/$0/$$");
    assert_eq!(ok(&rules, "/item/7"), "/7x/item//item/7/$");
}

#[test]
fn regex_rewrite_with_named_groups() {
    let rules = rewritten(
        r"^/(?P<version>v\d+)/items/(?<id>[^/]+)$",
        "/items/${id}/$version",
    );
    assert_eq!(ok(&rules, "/v2/items/abc"), "/items/abc/v2");
    assert_eq!(ok(&rules, "/v2/items/a%2Fb"), "/items/a%2Fb/v2");
}

#[test]
fn regex_rewrite_replaces_every_match_and_fixes_the_leading_slash() {
    let rules = rewritten("/old/", "/new/");
    assert_eq!(ok(&rules, "/old/a/old/b"), "/new/a/new/b");
    let rules = rewritten("^/v1/(.*)$", "$1");
    assert_eq!(ok(&rules, "/v1/users"), "/users");
    assert_eq!(ok(&rules, "/v1/"), "/");
    let rules = rewritten("^/v1", "");
    assert_eq!(ok(&rules, "/v1/users"), "/users");
}

#[test]
fn spec_example() {
    // stripPrefix '/api/v1', mappings {'/users': '/accounts'}, addPrefix '/internal':
    // `/api/v1/users/7?x` arrives as the path `/api/v1/users/7` (the caller keeps `?x`).
    let rules = PathRules::new(
        Some("/api/v1"),
        vec![PathMapping::new("/users", "/accounts", true).unwrap()],
        None,
        Some("/internal"),
    )
    .unwrap();
    assert_eq!(ok(&rules, "/api/v1/users/7"), "/internal/accounts/7");
    assert_eq!(ok(&rules, "/api/v1/users"), "/internal/accounts");
    assert_eq!(ok(&rules, "/api/v1/orders/7"), "/internal/orders/7");
    assert_eq!(ok(&rules, "/api/v1"), "/internal/");
}

#[test]
fn order_is_strip_map_rewrite_add() {
    // The mapping sees the stripped path, the rewrite sees the mapped one, and the
    // added prefix is not seen by any of them.
    let rules = PathRules::new(
        Some("/api"),
        vec![PathMapping::new("/users", "/accounts", true).unwrap()],
        Some(PathRewrite::new(r"^/accounts/(\d+)$", "/acct-$1").unwrap()),
        Some("/users"),
    )
    .unwrap();
    assert_eq!(ok(&rules, "/api/users/7"), "/users/acct-7");
    // A mapping for the unstripped path does not match.
    let rules = PathRules::new(
        Some("/api"),
        vec![PathMapping::new("/api/users", "/wrong", true).unwrap()],
        None,
        None,
    )
    .unwrap();
    assert_eq!(ok(&rules, "/api/users/7"), "/users/7");
}

#[test]
fn percent_encoding_is_preserved() {
    let rules = strip("/api");
    assert_eq!(ok(&rules, "/api/a%2Fb/%E2%82%AC"), "/a%2Fb/%E2%82%AC");
    assert_eq!(ok(&rules, "/api/a%2fb/%e2%82%ac"), "/a%2fb/%e2%82%ac");
    // Not decoded twice either.
    assert_eq!(ok(&rules, "/api/%252e%252e/x"), "/%252e%252e/x");
    let rules = PathRules::new(
        Some("/api"),
        vec![PathMapping::new("/a%2Fb", "/c%20d", true).unwrap()],
        None,
        Some("/%E2%82%AC"),
    )
    .unwrap();
    assert_eq!(ok(&rules, "/api/a%2Fb/%41"), "/%E2%82%AC/c%20d/%41");
    // Byte-for-byte comparison: a differently encoded path is another path.
    assert_eq!(ok(&rules, "/api/a%2fb/%41"), "/%E2%82%AC/a%2fb/%41");
    let rules = rewritten("^/files/(.+)$", "/blobs/$1");
    assert_eq!(ok(&rules, "/files/a%2Fb%3F%23"), "/blobs/a%2Fb%3F%23");
}

#[test]
fn dot_segments_in_the_input_are_refused() {
    let rules = strip("/api");
    for path in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/.%2E/admin",
        "/api/%2E%2E",
        "/api/..",
        "/a/./b",
        "/api/%2e/x",
        "/api/a%2F..%2Fb",
        "/api/a%2f%2e%2e%2fb",
        "/api\\..\\admin",
        "/api/..;jsessionid=1/admin",
    ] {
        let e = rules.apply(path).unwrap_err();
        assert!(e.message().contains("dot-segment"), "{path}: {e}");
    }
}

#[test]
fn harmless_dots_are_not_refused() {
    let rules = strip("/api");
    assert_eq!(ok(&rules, "/api/a..b/c..."), "/a..b/c...");
    assert_eq!(ok(&rules, "/a..b/c..."), "/a..b/c...");
    assert_eq!(ok(&rules, "/api/.well-known/x"), "/.well-known/x");
    assert_eq!(ok(&rules, "/api/file.tar.gz"), "/file.tar.gz");
    assert_eq!(ok(&rules, "/api/..a/a../%2e%2e%2e"), "/..a/a../%2e%2e%2e");
}

#[test]
fn rewrite_producing_a_dot_segment_is_refused() {
    // The input has no dot-segment ("%2e%2e-x" is one ordinary segment), but the
    // capture lands alone in a segment of the output.
    let rules = rewritten(r"^/files/([^/-]*)-(.*)$", "/data/$1/$2");
    assert_eq!(ok(&rules, "/files/ab-x"), "/data/ab/x");
    for path in [
        "/files/%2e%2e-x",
        "/files/..-x",
        "/files/.%2E-admin",
        "/files/.-x",
    ] {
        let e = rules.apply(path).unwrap_err();
        assert!(
            e.message()
                .contains("rewritten path contains a dot-segment"),
            "{path}: {e}"
        );
    }
    // Dots glued together by the replacement.
    let rules = rewritten(r"^/v/(\.)x(\.)$", "/data/$1$2/etc");
    let e = rules.apply("/v/.x.").unwrap_err();
    assert!(e.message().contains("rewritten path"), "{e}");
    // An encoded slash produced by the rewrite counts as a separator.
    let rules = rewritten(r"^/p/([^/]*)-x$", "/data%2F$1");
    assert_eq!(ok(&rules, "/p/a-x"), "/data%2Fa");
    let e = rules.apply("/p/..-x").unwrap_err();
    assert!(e.message().contains("rewritten path"), "{e}");
}

#[test]
fn input_must_start_with_a_slash_when_rules_apply() {
    let rules = strip("/api");
    assert!(rules.apply("api/x").is_err());
    assert!(rules.apply("*").is_err());
    assert!(rules.apply("").is_err());
}

#[test]
fn unvalidated_rules_still_guarantee_the_output() {
    let rules = PathRules {
        add_prefix: Some("internal".into()),
        ..PathRules::default()
    };
    let e = rules.apply("/x").unwrap_err();
    assert_eq!(e.message(), "rewritten path does not start with '/'");
    let rules = PathRules {
        mappings: vec![PathMapping {
            from: "/x".into(),
            to: "/../admin".into(),
            prefix: false,
        }],
        ..PathRules::default()
    };
    assert!(rules.apply("/x").is_err());
}

#[test]
fn has_dot_segment_cases() {
    for path in [
        ".",
        "..",
        "/.",
        "/..",
        "/./",
        "/../",
        "/a/.",
        "/a/..",
        "/a/./b",
        "/a/../b",
        "/%2e",
        "/%2E",
        "/%2e%2e",
        "/%2E%2E",
        "/%2e%2E/x",
        "/.%2e/x",
        "/%2e./x",
        "/.%2E",
        "/a%2F..%2Fb",
        "/a%2f..%2fb",
        "/a%2F%2e%2e",
        "/a\\..\\b",
        "/a%5C..%5Cb",
        "/a%5c.",
        "/..;/admin",
        "/.;x/admin",
        "/..;a=b",
        "/..%3Bx/a",
        "/a;/../",
        "a/../b",
    ] {
        assert!(has_dot_segment(path), "{path} has a dot-segment");
    }
    for path in [
        "",
        "/",
        "//",
        "/a",
        "/...",
        "/.../",
        "/a..b",
        "/c...",
        "/..a",
        "/a..",
        "/.a",
        "/a.",
        "/%2e%2e%2e",
        "/%2ex",
        "/x%2e%2e",
        "/%252e%252e",
        "/%2",
        "/%2e%2",
        "/.%",
        "/%.",
        "/%%2e",
        "/a;..",
        "/.well-known",
        "/a%2Fb",
    ] {
        assert!(!has_dot_segment(path), "{path} has no dot-segment");
    }
}

#[test]
fn mapping_validation() {
    assert!(PathMapping::new("/a", "/b", true).is_ok());
    assert!(PathMapping::new("/", "/", true).is_ok());
    assert!(PathMapping::new("/a/", "/b/", false).is_ok());
    assert!(PathMapping::new("/a%20b", "/%E2%82%AC", true).is_ok());
    let cases: [(&str, &str, bool, &str); 12] = [
        ("a", "/b", true, "prefix mapping \"a\" must start with '/'"),
        ("/a", "", false, "exact mapping \"\" must start with '/'"),
        ("/a?x=1", "/b", false, "must not contain '?'"),
        ("/a", "/b#frag", true, "must not contain '#'"),
        ("/a b", "/b", true, "\"/a b\" must not contain whitespace"),
        ("/a\tb", "/b", true, "must not contain whitespace"),
        ("/a", "/b\n", true, "must not contain whitespace"),
        ("/caf\u{e9}", "/b", true, "must contain only visible ASCII"),
        (
            "/a%2",
            "/b",
            true,
            "has a '%' not followed by two hex digits",
        ),
        (
            "/a%zz",
            "/b",
            true,
            "has a '%' not followed by two hex digits",
        ),
        (
            "/a/",
            "/b",
            true,
            "prefix mapping \"/a/\" must not end with '/'",
        ),
        ("/a", "/x/%2e%2e/y", true, "contains a dot-segment"),
    ];
    for (from, to, prefix, message) in cases {
        let e = PathMapping::new(from, to, prefix).unwrap_err();
        assert!(e.message().contains(message), "{from} {to}: {e}");
    }
    assert!(PathMapping::new("/a\\b", "/b", true).is_err());
    assert!(PathMapping::new("/a", "/../b", false).is_err());
}

#[test]
fn prefix_validation() {
    let e = PathRules::new(Some("api"), Vec::new(), None, None).unwrap_err();
    assert_eq!(e.message(), "stripPrefix \"api\" must start with '/'");
    let e = PathRules::new(None, Vec::new(), None, Some("/internal/")).unwrap_err();
    assert_eq!(
        e.message(),
        "addPrefix \"/internal/\" must not end with '/'"
    );
    let e = PathRules::new(Some("/api?x"), Vec::new(), None, None).unwrap_err();
    assert!(e.message().contains("must not contain '?'"), "{e}");
    let e = PathRules::new(None, Vec::new(), None, Some("/a/..")).unwrap_err();
    assert!(e.message().contains("dot-segment"), "{e}");
    let e = PathRules::new(Some(""), Vec::new(), None, None).unwrap_err();
    assert!(e.message().contains("must start with '/'"), "{e}");
    let rules = PathRules::new(Some("/api"), Vec::new(), None, Some("/x")).unwrap();
    assert_eq!(rules.strip_prefix.as_deref(), Some("/api"));
    assert_eq!(rules.add_prefix.as_deref(), Some("/x"));
}

#[test]
fn rewrite_validation() {
    let e = PathRewrite::new("^/users/(\\d+$", "/x").unwrap_err();
    assert!(
        e.message()
            .starts_with("invalid path rewrite pattern \"^/users/(\\\\d+$\""),
        "{e}"
    );
    assert!(PathRewrite::new("", "/x").is_err());

    let e = PathRewrite::new(r"^/users/(\d+)$", "/accounts/$2").unwrap_err();
    assert!(e.message().contains("refers to group 2"), "{e}");
    assert!(e.message().contains("has 1 group(s)"), "{e}");
    let e = PathRewrite::new(r"^/users/(\d+)$", "/accounts/${2}").unwrap_err();
    assert!(e.message().contains("refers to group 2"), "{e}");
    let e = PathRewrite::new(r"^/(?P<id>\d+)$", "/x/$name").unwrap_err();
    assert!(e.message().contains("refers to group \"name\""), "{e}");
    let e = PathRewrite::new(r"^/(?P<id>\d+)$", "/x/${ id }").unwrap_err();
    assert!(e.message().contains("refers to group \" id \""), "{e}");
    // The `$1a` trap: group "1a", which does not exist.
    let e = PathRewrite::new(r"^/(\d+)$", "/$1a").unwrap_err();
    assert!(e.message().contains("refers to group \"1a\""), "{e}");
    assert!(e.message().contains("${1}a"), "{e}");

    assert!(PathRewrite::new(r"^/(\d+)$", "/${1}a").is_ok());
    assert!(PathRewrite::new(r"^/(\d+)$", "/$0/$1").is_ok());
    assert!(PathRewrite::new(r"^/(?P<id>\d+)$", "/$id/${id}/$1").is_ok());
    // A literal '$': escaped, or a '$' that starts no reference.
    assert!(PathRewrite::new(r"^/x$", "/price/$$5").is_ok());
    assert!(PathRewrite::new(r"^/x$", "/a$").is_ok());
    assert!(PathRewrite::new(r"^/x$", "/a$-b").is_ok());

    // Literal text a path cannot hold, or a fixed dot-segment.
    let e = PathRewrite::new(r"^/(\d+)$", "/a?b=$1").unwrap_err();
    assert!(e.message().contains("must not contain '?'"), "{e}");
    let e = PathRewrite::new(r"^/(\d+)$", "/a $1").unwrap_err();
    assert!(e.message().contains("whitespace"), "{e}");
    let e = PathRewrite::new(r"^/(\d+)$", "/%$1").unwrap_err();
    assert!(e.message().contains("'%' not followed"), "{e}");
    let e = PathRewrite::new(r"^/(\d+)$", "/../$1").unwrap_err();
    assert!(e.message().contains("dot-segment"), "{e}");
    let e = PathRewrite::new(r"^/(\d+)$", "/$1/%2e").unwrap_err();
    assert!(e.message().contains("dot-segment"), "{e}");

    let rewrite = PathRewrite::new(r"^/(\d+)$", "/n/$1").unwrap();
    assert_eq!(rewrite.pattern(), r"^/(\d+)$");
    assert_eq!(rewrite.replacement(), "/n/$1");
}
