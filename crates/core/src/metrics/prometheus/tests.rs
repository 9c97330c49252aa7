//! Tests of `prometheus`.

use super::*;
use crate::metrics::{Metrics, Rejection};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

type Labels = Vec<(String, String)>;

struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

struct Parsed {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn valid_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    let first = chars.next();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    first.is_some_and(ok_first) && chars.all(|c| ok_first(c) || c.is_ascii_digit())
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => {
            s.parse().map_err(|e| format!("value {s:?}: {e}"))
        }
        _ => Err(format!("value {s:?}")),
    }
}

/// `{a="x",b="y"}` (after the name) → labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((Vec::new(), s));
    };
    let mut labels = Vec::new();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !valid_name(name, false) {
            return Err(format!("label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err(format!("after label: {rest:?}"));
        }
    }
}

/// A small checker of the 0.0.4 grammar and of the rules this module promises.
fn check(text: &str) -> Result<Parsed, String> {
    if !text.ends_with('\n') {
        return Err("no final newline".into());
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !valid_name(name, true) || !helps.insert(name.to_string()) {
                return Err(format!("HELP {line:?}"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or("TYPE without kind")?;
            let kinds = ["counter", "gauge", "histogram", "summary", "untyped"];
            if !valid_name(name, true) || !kinds.contains(&kind) {
                return Err(format!("TYPE {line:?}"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(format!("second TYPE for {name}"));
            }
            if finished.contains(name) || current.as_deref() == Some(name) {
                return Err(format!("TYPE after samples of {name}"));
            }
        } else if line.starts_with('#') {
            continue;
        } else {
            let end = line.find(['{', ' ']).ok_or(format!("sample {line:?}"))?;
            let name = &line[..end];
            if !valid_name(name, true) {
                return Err(format!("metric name {name:?}"));
            }
            let (labels, rest) = parse_labels(&line[end..])?;
            let value = rest
                .strip_prefix(' ')
                .ok_or(format!("no value: {line:?}"))?;
            let value = parse_value(value)?;
            let family = if types.contains_key(name) {
                name.to_string()
            } else {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|base| types.get(*base).map(String::as_str) == Some("histogram"))
                    .ok_or(format!("no TYPE before {name}"))?
                    .to_string()
            };
            if types[&family] == "counter" && !family.ends_with("_total") {
                return Err(format!("counter {family} without _total"));
            }
            if current.as_deref() != Some(family.as_str()) {
                if finished.contains(&family) {
                    return Err(format!("samples of {family} not grouped"));
                }
                if let Some(prev) = current.replace(family.clone()) {
                    finished.insert(prev);
                }
            }
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
    }
    check_histograms(&types, &samples)?;
    Ok(Parsed { types, samples })
}

/// Buckets: `le` increasing to `+Inf`, counts cumulative, `+Inf` == `_count`, a `_sum`.
fn check_histograms(types: &HashMap<String, String>, samples: &[Sample]) -> Result<(), String> {
    type Series = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
    let mut series: BTreeMap<(String, String), Series> = BTreeMap::new();
    for s in samples {
        for (suffix, slot) in [("_bucket", 0), ("_sum", 1), ("_count", 2)] {
            let Some(base) = s.name.strip_suffix(suffix) else {
                continue;
            };
            if types.get(base).map(String::as_str) != Some("histogram") {
                continue;
            }
            let key_labels: Vec<_> = s.labels.iter().filter(|(k, _)| k != "le").collect();
            let entry = series
                .entry((base.to_string(), format!("{key_labels:?}")))
                .or_default();
            match slot {
                0 => {
                    let le = s
                        .labels
                        .iter()
                        .find(|(k, _)| k == "le")
                        .ok_or("bucket without le")?;
                    entry.0.push((parse_value(&le.1)?, s.value));
                }
                1 => entry.1 = Some(s.value),
                _ => entry.2 = Some(s.value),
            }
        }
    }
    for ((name, labels), (buckets, sum, count)) in &series {
        let at = format!("{name}{labels}");
        if !buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        {
            return Err(format!("{at}: buckets not cumulative"));
        }
        let last = buckets.last().ok_or(format!("{at}: no buckets"))?;
        if last.0 != f64::INFINITY || Some(last.1) != *count || sum.is_none() {
            return Err(format!(
                "{at}: +Inf {last:?} vs count {count:?}, sum {sum:?}"
            ));
        }
    }
    Ok(())
}

fn find<'a>(p: &'a Parsed, name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    p.samples.iter().find(|s| {
        s.name == name
            && s.labels.len() == labels.len()
            && s.labels
                .iter()
                .zip(labels)
                .all(|(a, b)| a.0 == b.0 && a.1 == b.1)
    })
}

fn populated() -> Metrics {
    let m = Metrics::new();
    let users = m.route("GET /users/{id}");
    let files = m.route("GET /files/{path:path}");
    for i in 0..100u64 {
        m.record(Some(users), 200, Duration::from_micros(500 + i * 100));
    }
    m.record(Some(users), 404, Duration::from_millis(3));
    m.record(Some(files), 502, Duration::from_secs(12));
    m.record(None, 404, Duration::from_millis(1));
    m.record(None, 0, Duration::from_millis(1));
    m.record_upstream("http://10.0.0.1:8080", 200, Duration::from_millis(8));
    m.record_upstream("http://10.0.0.1:8080", 0, Duration::from_secs(30));
    m.count_retry();
    m.count_rejection(Rejection::CircuitOpen);
    m
}

#[test]
fn output_follows_the_grammar() {
    let gauges = [
        Gauge {
            name: "velithon_upstream_healthy".into(),
            help: "1 when the server passes health checks.".into(),
            labels: vec![("server".into(), "http://10.0.0.1:8080".into())],
            value: 1.0,
        },
        Gauge {
            name: "velithon_pool_connections".into(),
            help: "Idle pooled connections.".into(),
            labels: vec![],
            value: 12.0,
        },
        Gauge {
            name: "velithon_upstream_healthy".into(),
            help: "ignored: the first help wins".into(),
            labels: vec![("server".into(), "http://10.0.0.2:8080".into())],
            value: 0.0,
        },
    ];
    let text = render(&populated().snapshot(), &gauges);
    let p = check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    assert_eq!(p.types[REQUESTS], "counter");
    assert_eq!(p.types[DURATION], "histogram");
    assert_eq!(p.types["velithon_upstream_healthy"], "gauge");
    assert_eq!(
        text.matches("# TYPE velithon_upstream_healthy gauge")
            .count(),
        1
    );
    assert!(text.contains("velithon_upstream_healthy{server=\"http://10.0.0.2:8080\"} 0\n"));
    assert!(text.contains("velithon_pool_connections 12\n"));

    let v = |name, labels: &[(&str, &str)]| find(&p, name, labels).map(|s| s.value);
    assert_eq!(v(REQUESTS, &[("status", "200")]), Some(100.0));
    assert_eq!(v(REQUESTS, &[("status", "404")]), Some(2.0));
    assert_eq!(v(REQUESTS, &[("status", "other")]), Some(1.0));
    let users = ("route", "GET /users/{id}");
    assert_eq!(v(ROUTE_REQUESTS, &[users, ("class", "2xx")]), Some(100.0));
    assert_eq!(v(ROUTE_REQUESTS, &[users, ("class", "3xx")]), Some(0.0));
    assert_eq!(v(ROUTE_REQUESTS, &[users, ("class", "other")]), None);
    let bucket = |le| {
        v(
            "velithon_route_request_duration_seconds_bucket",
            &[users, ("le", le)],
        )
    };
    // 500, 600 … 10400 µs and 3 ms: ≤ 1 ms are 500…1000 (6), ≤ 2.5 ms 21, +3 ms.
    assert_eq!(bucket("0.001"), Some(6.0));
    assert_eq!(bucket("0.0025"), Some(21.0));
    assert_eq!(bucket("0.005"), Some(47.0));
    assert_eq!(bucket("+Inf"), Some(101.0));
    let files = ("route", "GET /files/{path:path}");
    let files_bucket = |le| {
        v(
            "velithon_route_request_duration_seconds_bucket",
            &[files, ("le", le)],
        )
    };
    assert_eq!(
        (files_bucket("10"), files_bucket("+Inf")),
        (Some(0.0), Some(1.0))
    );
    assert_eq!(
        v("velithon_route_request_duration_seconds_sum", &[files]),
        Some(12.0)
    );
    assert_eq!(v(DURATION, &[]), None);
    assert_eq!(
        v("velithon_request_duration_seconds_count", &[]),
        Some(104.0)
    );

    let server = ("server", "http://10.0.0.1:8080");
    assert_eq!(v(UPSTREAM_REQUESTS, &[server, ("class", "2xx")]), Some(1.0));
    assert_eq!(
        v(UPSTREAM_REQUESTS, &[server, ("class", "other")]),
        Some(1.0)
    );
    assert_eq!(v(UPSTREAM_ERRORS, &[server]), Some(1.0));
    assert_eq!(
        v(
            "velithon_upstream_request_duration_seconds_count",
            &[server]
        ),
        Some(2.0)
    );
    assert_eq!(v(RETRIES, &[]), Some(1.0));
    assert_eq!(v(REJECTIONS, &[("reason", "circuit_open")]), Some(1.0));
    assert_eq!(v(REJECTIONS, &[("reason", "rate_limited")]), Some(0.0));
    assert_eq!(
        v(REJECTIONS, &[("reason", "no_healthy_upstream")]),
        Some(0.0)
    );
    assert_eq!(v(REJECTIONS, &[("reason", "body_too_large")]), Some(0.0));
}

#[test]
fn empty_registry_renders_valid_output() {
    let text = render(&Metrics::new().snapshot(), &[]);
    let p = check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(p.types.len(), COUNTERS.len() + HISTOGRAMS.len());
    assert!(text.contains("velithon_request_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
    assert!(text.contains("velithon_request_duration_seconds_sum 0\n"));
    assert!(text.contains("velithon_retries_total 0\n"));
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::new();
    let nasty = "GET /a\"b\\c\nd";
    let r = m.route(nasty);
    m.record(Some(r), 200, Duration::from_millis(1));
    m.record_upstream("http://x/\"q\"", 200, Duration::from_millis(1));
    let gauges = [Gauge {
        name: "velithon_breaker_state".into(),
        help: "Breaker state\\n(0 closed)\nsecond line".into(),
        labels: vec![("server".into(), "a\\\"\n".into())],
        value: 2.0,
    }];
    let text = render(&m.snapshot(), &gauges);
    assert!(text.contains(
        "velithon_route_requests_total{route=\"GET /a\\\"b\\\\c\\nd\",class=\"2xx\"} 1\n"
    ));
    assert!(text.contains("velithon_upstream_errors_total{server=\"http://x/\\\"q\\\"\"} 0\n"));
    assert!(
        text.contains("# HELP velithon_breaker_state Breaker state\\\\n(0 closed)\\nsecond line\n")
    );
    let p = check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // Parsing the escapes back gives the original values.
    let routes: HashSet<_> = p
        .samples
        .iter()
        .filter_map(|s| s.labels.iter().find(|(k, _)| k == "route"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(routes, HashSet::from([nasty]));
    let breaker = find(&p, "velithon_breaker_state", &[("server", "a\\\"\n")]);
    assert_eq!(breaker.map(|s| s.value), Some(2.0));
}

#[test]
fn gauges_are_sanitized_and_reserved_names_skipped() {
    let g = |name: &str, labels: Vec<(String, String)>, value| Gauge {
        name: name.into(),
        help: String::new(),
        labels,
        value,
    };
    let gauges = [
        g("velithon_retries_total", vec![], 5.0),
        g("velithon_request_duration_seconds_count", vec![], 5.0),
        g("9 bad-name", vec![("le-vel".into(), "x".into())], 0.5),
        g("velithon_odd", vec![("k".into(), "nan".into())], f64::NAN),
        g(
            "velithon_odd",
            vec![("k".into(), "inf".into())],
            f64::INFINITY,
        ),
        g(
            "velithon_odd",
            vec![("k".into(), "-inf".into())],
            f64::NEG_INFINITY,
        ),
        g("velithon_odd", vec![("k".into(), "tiny".into())], 1e-7),
        g(
            "velithon_odd",
            vec![("k".into(), "big".into())],
            123_456_789.25,
        ),
    ];
    let text = render(&Metrics::new().snapshot(), &gauges);
    check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(text.contains("velithon_retries_total 0\n"));
    assert!(!text.contains(" 5\n"), "reserved names are skipped");
    assert!(text.contains("# TYPE _9_bad_name gauge\n_9_bad_name{le_vel=\"x\"} 0.5\n"));
    assert!(text.contains("velithon_odd{k=\"nan\"} NaN\n"));
    assert!(text.contains("velithon_odd{k=\"inf\"} +Inf\n"));
    assert!(text.contains("velithon_odd{k=\"-inf\"} -Inf\n"));
    assert!(text.contains("velithon_odd{k=\"tiny\"} 0.0000001\n"));
    assert!(text.contains("velithon_odd{k=\"big\"} 123456789.25\n"));
}

#[test]
fn the_checker_rejects_bad_output() {
    let bad = [
        "x_total 1\n",                                                 // no TYPE
        "# TYPE x_total counter\n# TYPE x_total counter\nx_total 1\n", // two TYPEs
        "# TYPE x_total counter\nx_total{a=\"b\\q\"} 1\n",             // bad escape
        "# TYPE x_total counter\nx_total{a=\"b\"\"} 1\n",              // raw quote
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
        "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na 2\n", // not grouped
    ];
    for text in bad {
        assert!(check(text).is_err(), "accepted {text:?}");
    }
}
