//! The Prometheus text exposition format (version 0.0.4) of a [`MetricsSnapshot`].
//!
//! Families, in order (every one with its `# HELP` and `# TYPE` line, even when it has no
//! sample yet):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `velithon_requests_total` | counter | `status` (`"200"` …, `"other"` outside 100–599) |
//! | `velithon_request_duration_seconds` | histogram | — |
//! | `velithon_route_requests_total` | counter | `route`, `class` |
//! | `velithon_route_request_duration_seconds` | histogram | `route` |
//! | `velithon_upstream_requests_total` | counter | `server`, `class` |
//! | `velithon_upstream_errors_total` | counter | `server` |
//! | `velithon_upstream_request_duration_seconds` | histogram | `server` |
//! | `velithon_retries_total` | counter | — |
//! | `velithon_rejections_total` | counter | `reason` (`rate_limited`, `circuit_open`, `no_healthy_upstream`, `body_too_large`) |
//!
//! then the caller's [`Gauge`]s. `class` is `1xx` … `5xx` (always written) and `other`
//! (written when non-zero; for upstreams mostly status 0, no response). Histograms have
//! `_bucket{le=…}` at 1 ms … 10 s and `+Inf`, `_sum` (seconds) and `_count`.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use super::histogram::HistogramSnapshot;
use super::registry::MetricsSnapshot;

/// A gauge to append to the output (upstream health 0/1, breaker state, pool
/// connections …). Gauges of the same `name` are written under one `# HELP`/`# TYPE`
/// block, with the `help` of the first. Characters invalid in a metric or label name are
/// replaced by `_`; a gauge whose name is one of this module's families is skipped. Give
/// each series of a name distinct labels (Prometheus rejects duplicates).
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    pub name: String,
    pub help: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

const REQUESTS: &str = "velithon_requests_total";
const DURATION: &str = "velithon_request_duration_seconds";
const ROUTE_REQUESTS: &str = "velithon_route_requests_total";
const ROUTE_DURATION: &str = "velithon_route_request_duration_seconds";
const UPSTREAM_REQUESTS: &str = "velithon_upstream_requests_total";
const UPSTREAM_ERRORS: &str = "velithon_upstream_errors_total";
const UPSTREAM_DURATION: &str = "velithon_upstream_request_duration_seconds";
const RETRIES: &str = "velithon_retries_total";
const REJECTIONS: &str = "velithon_rejections_total";

const COUNTERS: [&str; 6] = [
    REQUESTS,
    ROUTE_REQUESTS,
    UPSTREAM_REQUESTS,
    UPSTREAM_ERRORS,
    RETRIES,
    REJECTIONS,
];
const HISTOGRAMS: [&str; 3] = [DURATION, ROUTE_DURATION, UPSTREAM_DURATION];

/// Renders `snapshot` and then `extra` in the text exposition format 0.0.4
/// (`Content-Type: text/plain; version=0.0.4`).
pub fn render(snapshot: &MetricsSnapshot, extra: &[Gauge]) -> String {
    let mut out = Out(String::with_capacity(
        4096 + 2048 * (snapshot.routes.len() + snapshot.upstreams.len()),
    ));

    out.family(REQUESTS, "Requests answered, by HTTP status.", "counter");
    for (status, &n) in &snapshot.requests_by_status {
        out.sample(
            REQUESTS,
            "",
            &[("status", &status.to_string())],
            Num::Int(n),
        );
    }
    if snapshot.requests_by_class.other > 0 {
        let n = Num::Int(snapshot.requests_by_class.other);
        out.sample(REQUESTS, "", &[("status", "other")], n);
    }

    out.family(
        DURATION,
        "Time from the request head to the response head, in seconds.",
        "histogram",
    );
    out.histogram(DURATION, &[], &snapshot.latency);

    out.family(
        ROUTE_REQUESTS,
        "Requests by route and status class.",
        "counter",
    );
    for r in &snapshot.routes {
        for (class, n) in r.by_class.entries() {
            if class != "other" || n > 0 {
                let labels = [("route", r.route.as_str()), ("class", class)];
                out.sample(ROUTE_REQUESTS, "", &labels, Num::Int(n));
            }
        }
    }

    out.family(
        ROUTE_DURATION,
        "Time from the request head to the response head by route, in seconds.",
        "histogram",
    );
    for r in &snapshot.routes {
        out.histogram(ROUTE_DURATION, &[("route", &r.route)], &r.latency);
    }

    out.family(
        UPSTREAM_REQUESTS,
        "Requests to upstream servers by status class (other: no response).",
        "counter",
    );
    for u in &snapshot.upstreams {
        for (class, n) in u.by_class.entries() {
            if class != "other" || n > 0 {
                let labels = [("server", u.server.as_str()), ("class", class)];
                out.sample(UPSTREAM_REQUESTS, "", &labels, Num::Int(n));
            }
        }
    }

    out.family(
        UPSTREAM_ERRORS,
        "Upstream requests with no response or a 5xx status.",
        "counter",
    );
    for u in &snapshot.upstreams {
        let labels = [("server", u.server.as_str())];
        out.sample(UPSTREAM_ERRORS, "", &labels, Num::Int(u.errors));
    }

    out.family(
        UPSTREAM_DURATION,
        "Time of upstream requests to their response head, in seconds.",
        "histogram",
    );
    for u in &snapshot.upstreams {
        out.histogram(UPSTREAM_DURATION, &[("server", &u.server)], &u.latency);
    }

    out.family(RETRIES, "Retries of upstream requests.", "counter");
    out.sample(RETRIES, "", &[], Num::Int(snapshot.retries));

    out.family(
        REJECTIONS,
        "Requests refused by the gateway, by reason.",
        "counter",
    );
    for (reason, n) in snapshot.rejections.entries() {
        out.sample(REJECTIONS, "", &[("reason", reason.as_str())], Num::Int(n));
    }

    out.gauges(extra);
    out.0
}

/// A sample value: integers as integers; floats in the shortest form that reads back
/// exactly, `+Inf`, `-Inf`, `NaN`.
#[derive(Clone, Copy)]
enum Num {
    Int(u64),
    Float(f64),
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Num::Int(n) => write!(f, "{n}"),
            Num::Float(v) if v.is_nan() => f.write_str("NaN"),
            Num::Float(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Num::Float(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            Num::Float(v) => write!(f, "{v}"),
        }
    }
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        self.0.push_str("# HELP ");
        self.0.push_str(name);
        self.0.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                c => self.0.push(c),
            }
        }
        self.0.push_str("\n# TYPE ");
        self.0.push_str(name);
        self.0.push(' ');
        self.0.push_str(kind);
        self.0.push('\n');
    }

    fn sample(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], value: Num) {
        self.0.push_str(name);
        self.0.push_str(suffix);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(label);
                self.0.push_str("=\"");
                escape_label_value(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, " {value}");
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        for &(le, cumulative) in &h.buckets {
            let le = Num::Float(le).to_string();
            let mut with_le: Vec<(&str, &str)> = Vec::with_capacity(labels.len() + 1);
            with_le.extend_from_slice(labels);
            with_le.push(("le", &le));
            self.sample(name, "_bucket", &with_le, Num::Int(cumulative));
        }
        self.sample(name, "_sum", labels, Num::Float(h.sum_ms / 1e3));
        self.sample(name, "_count", labels, Num::Int(h.count));
    }

    fn gauges(&mut self, gauges: &[Gauge]) {
        // Group by (sanitized) name, in order of first appearance.
        let mut order: Vec<(String, Vec<&Gauge>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for g in gauges {
            let name = sanitize(&g.name, true);
            if is_reserved(&name) {
                continue;
            }
            match index.get(&name) {
                Some(&i) => order[i].1.push(g),
                None => {
                    index.insert(name.clone(), order.len());
                    order.push((name, vec![g]));
                }
            }
        }
        for (name, series) in &order {
            self.family(name, &series[0].help, "gauge");
            for g in series {
                let names: Vec<String> = g.labels.iter().map(|(k, _)| sanitize(k, false)).collect();
                let labels: Vec<(&str, &str)> = names
                    .iter()
                    .zip(&g.labels)
                    .map(|(k, (_, v))| (k.as_str(), v.as_str()))
                    .collect();
                self.sample(name, "", &labels, Num::Float(g.value));
            }
        }
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or, without colons, label name.
fn sanitize(name: &str, colons: bool) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
        if ok || (i > 0 && c.is_ascii_digit()) {
            out.push(c);
        } else if i == 0 && c.is_ascii_digit() {
            out.push('_');
            out.push(c);
        } else {
            out.push('_');
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

fn is_reserved(name: &str) -> bool {
    COUNTERS.contains(&name)
        || HISTOGRAMS.iter().any(|h| {
            name.strip_prefix(h)
                .is_some_and(|rest| matches!(rest, "" | "_bucket" | "_sum" | "_count"))
        })
}

#[cfg(test)]
mod tests;
