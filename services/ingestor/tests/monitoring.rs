//! The monitoring contract, checked against a live ingestor.
//!
//! The Grafana dashboard (`deploy/grafana/sohoa.json`) and the Prometheus alerts
//! (`deploy/prometheus/alerts.yml`, and the input series of their unit tests in
//! `alerts_test.yml`) may only query metrics the binaries export, with the labels they
//! carry: an ingestor runs here on librdkafka's mock cluster with dead letters, a failed
//! and retried flush, flushes and a rebalance, its `/metrics` is scraped over HTTP, and
//! every `sohoa_ingest_*` and `process_*` name and label the queries use must be in it.
//! The `sohoa_aggregate_*` names come from the aggregator's textfile instead
//! (`sohoa aggregate --metrics-textfile`). The scrape must pass `promtool check metrics`
//! without a lint, and the rules `promtool check rules` and their unit tests.
//!
//! promtool is required, not optional: tests/run installs it (Debian's `prometheus`
//! package). Without it these tests fail, saying so; they never skip.

mod common;
mod running;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use running::*;
use sohoa_ingestor::Metrics;

/// The gauges `sohoa aggregate --metrics-textfile PATH` writes after a successful run (no
/// labels of their own). The aggregator is a batch job with no endpoint to scrape, so the
/// live check of these names is the textfile itself, when `target/debug/sohoa` is built
/// with `--metrics-textfile`; otherwise (an older binary) this list is what the queries
/// are checked against, and the test says so on stderr.
const AGGREGATE_GAUGES: [&str; 6] = [
    "sohoa_aggregate_last_success_timestamp_seconds",
    "sohoa_aggregate_duration_seconds",
    "sohoa_aggregate_events_read",
    "sohoa_aggregate_dossiers",
    "sohoa_aggregate_newest_event_timestamp_seconds",
    "sohoa_aggregate_events_version",
];

/// Labels Prometheus adds to every series it scrapes: the target's, not the exporter's.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Prefixes of the metric names checked against what the binaries export. Other names
/// (`up`) are Prometheus' own.
const CHECKED_PREFIXES: [&str; 2] = ["sohoa_", "process_"];

/// What the dashboard must show, at least: what operators watch first.
const DASHBOARD_MUST_QUERY: [&str; 14] = [
    "sohoa_ingest_consumer_lag_messages",
    "sohoa_ingest_consumer_lag_seconds",
    "sohoa_ingest_messages_total",
    "sohoa_ingest_events_total",
    "sohoa_ingest_bytes_written_total",
    "sohoa_ingest_dead_letters_total",
    "sohoa_ingest_files_written_total",
    "sohoa_ingest_flush_duration_seconds_bucket",
    "sohoa_ingest_rebalances_total",
    "sohoa_ingest_buffered_bytes",
    "sohoa_ingest_paused",
    "up",
    "sohoa_aggregate_last_success_timestamp_seconds",
    "sohoa_aggregate_duration_seconds",
];

/// What the alerts must watch, at least.
const ALERTS_MUST_QUERY: [&str; 7] = [
    "sohoa_ingest_consumer_lag_seconds",
    "sohoa_ingest_consumer_lag_messages",
    "sohoa_ingest_dead_letters_total",
    "sohoa_ingest_files_written_total",
    "up",
    "sohoa_aggregate_last_success_timestamp_seconds",
    "sohoa_aggregate_newest_event_timestamp_seconds",
];

/// Exported ingest metrics deliberately left off the dashboard, with the reason. Any other
/// family the ingestor exports must be on it, so a new metric is not forgotten.
const NOT_ON_DASHBOARD: [(&str, &str); 1] = [(
    "sohoa_ingest_durable_offset",
    "a raw offset, for debugging one partition; the lag panels are derived from it",
)];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// promtool

/// A `promtool` command, or a failure explaining where promtool comes from.
fn promtool() -> Command {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "promtool is not installed (or not on PATH). tests/run installs it with Debian's \
         `prometheus` package (apt-get install prometheus); these tests check the /metrics \
         format and the alert rules with it and do not skip without it"
    );
    Command::new("promtool")
}

/// Run promtool in `dir` with `args` (and `stdin`): whether it succeeded, and what it
/// printed on stdout and stderr.
fn run_promtool(dir: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = promtool()
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    let input = child.stdin.take();
    let out = std::thread::scope(|s| {
        if let (Some(mut pipe), Some(text)) = (input, stdin) {
            s.spawn(move || {
                pipe.write_all(text.as_bytes())
                    .expect("writing promtool's stdin")
            });
        }
        child.wait_with_output().expect("promtool runs")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `promtool check metrics` on an exposition: it must exit 0 and report no lint problem at
/// all (none is expected from the prometheus crate's encoder and these names; a new one is
/// a naming mistake to fix in metrics.rs, not to excuse here).
fn assert_promtool_accepts_metrics(what: &str, exposition: &str) {
    let (ok, out) = run_promtool(&repo(), &["check", "metrics"], Some(exposition));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics on {what}: {}\n{out}",
        if ok { "lint problems" } else { "failed" }
    );
}

// ---------------------------------------------------------------------------------------
// The text exposition format

/// A parsed text exposition: families with their type and help, and every sample name
/// with the label names its series carry.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    helps: BTreeSet<String>,
    /// Sample name (`x_bucket`, `x_sum`, `x_total`, ...) → label names.
    series: BTreeMap<String, BTreeSet<String>>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut e = Exposition::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                e.types.insert(name.to_owned(), kind.trim().to_owned());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                e.helps
                    .insert(rest.split(' ').next().unwrap_or_default().to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name, labels, rest) = parse_sample(line);
            let value = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("sample value in {line:?}"));
            e.series
                .entry(name.clone())
                .or_default()
                .extend(labels.keys().cloned());
            e.samples.push((name, labels, value));
        }
        e
    }

    /// The family a sample name belongs to: itself, or a histogram's (summary's) name
    /// without `_bucket`, `_sum` or `_count`.
    fn family(&self, name: &str) -> Option<String> {
        if self.types.contains_key(name) {
            return Some(name.to_owned());
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            matches!(
                self.types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
            .then(|| base.to_owned())
        })
    }

    /// The sum of the samples named `name` whose labels include `matching`.
    fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && matching
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn has(&self, name: &str, matching: &[(&str, &str)]) -> bool {
        self.samples.iter().any(|(n, labels, _)| {
            n == name
                && matching
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

/// `name{a="x",b="y"} value [timestamp]` → name, labels, the rest.
fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, &str) {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
            let Some((start, c)) = chars.next() else {
                panic!("unterminated labels in {line:?}");
            };
            if c == '}' {
                rest = &inner[start + 1..];
                break;
            }
            let mut key = String::from(c);
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            assert_eq!(
                chars.next().map(|(_, c)| c),
                Some('"'),
                "label value in {line:?}"
            );
            let mut value = String::new();
            while let Some((_, c)) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => panic!("dangling escape in {line:?}"),
                    },
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
        }
    }
    (name, labels, rest.trim())
}

// ---------------------------------------------------------------------------------------
// PromQL, read without a parser: names, selector labels, grouping labels

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str,
    Punct(char),
}

/// Split PromQL into identifiers, string literals and punctuation. Numbers, durations and
/// Grafana variables (`$job`, `$__rate_interval`) are dropped: they name no metric.
fn tokens(expr: &str) -> Vec<Token> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                while let Some(d) = chars.next() {
                    if d == '\\' && c != '`' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
                out.push(Token::Str);
            }
            '$' => while chars.next_if(|d| ident(*d)).is_some() {},
            c if c.is_ascii_digit() || c == '.' => {
                while chars.next_if(|d| ident(*d) || *d == '.').is_some() {}
            }
            c if ident(c) => {
                let mut word = String::from(c);
                while let Some(d) = chars.next_if(|d| ident(*d)) {
                    word.push(d);
                }
                out.push(Token::Ident(word));
            }
            c if c.is_whitespace() => {}
            c => out.push(Token::Punct(c)),
        }
    }
    out
}

/// What one expression refers to.
#[derive(Debug, Default)]
struct Refs {
    /// Metric name → the label names its selectors match on.
    metrics: BTreeMap<String, BTreeSet<String>>,
    /// Labels of `by`, `without`, `on`, `ignoring`, `group_left`, `group_right` clauses, and
    /// of `label_values(metric, label)`.
    grouping: BTreeSet<String>,
}

fn refs(expr: &str) -> Refs {
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let toks = tokens(expr);
    let mut r = Refs::default();
    let mut i = 0;
    let labels_until = |i: &mut usize, close: char| {
        let mut names = BTreeSet::new();
        while let Some(t) = toks.get(*i) {
            *i += 1;
            match t {
                Token::Punct(c) if *c == close => break,
                Token::Ident(name) => {
                    names.insert(name.clone());
                }
                _ => {}
            }
        }
        names
    };
    while let Some(t) = toks.get(i) {
        i += 1;
        let Token::Ident(word) = t else { continue };
        let next = toks.get(i);
        if GROUPING.contains(&word.as_str()) && next == Some(&Token::Punct('(')) {
            i += 1;
            r.grouping.extend(labels_until(&mut i, ')'));
        } else if word == "label_values" && next == Some(&Token::Punct('(')) {
            // label_values(metric{...}, label): the metric is read by the loop; the label
            // is the last identifier before the closing parenthesis.
            let mut j = i + 1;
            let mut depth = 0;
            let mut last = None;
            while let Some(t) = toks.get(j) {
                match t {
                    Token::Punct('{') => depth += 1,
                    Token::Punct('}') => depth -= 1,
                    Token::Punct(')') if depth == 0 => break,
                    Token::Ident(name) if depth == 0 => last = Some(name.clone()),
                    _ => {}
                }
                j += 1;
            }
            r.grouping.extend(last);
        } else if CHECKED_PREFIXES.iter().any(|p| word.starts_with(p)) || word == "up" {
            let mut matched = BTreeSet::new();
            if next == Some(&Token::Punct('{')) {
                i += 1;
                matched = labels_until(&mut i, '}');
            }
            r.metrics.entry(word.clone()).or_default().extend(matched);
        }
    }
    r
}

/// A PromQL expression and where it comes from, for messages.
#[derive(Debug)]
struct Query {
    origin: String,
    expr: String,
}

/// Every `expr` of the dashboard (panels, annotations), with its JSON path.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<Query> {
    fn walk(v: &serde_json::Value, path: &str, out: &mut Vec<Query>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let here = format!("{path}.{k}");
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(Query {
                            origin: format!("sohoa.json {here}"),
                            expr: s.clone(),
                        }),
                        _ => walk(v, &here, out),
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "", &mut out);
    out
}

/// The dashboard's query variables (`label_values(...)`), by name.
fn dashboard_variables(dashboard: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().expect("variable name").to_owned(),
                v.clone(),
            )
        })
        .collect()
}

fn variable_query(v: &serde_json::Value) -> String {
    v["query"]
        .get("query")
        .or(Some(&v["query"]))
        .and_then(|q| q.as_str())
        .expect("a variable's query")
        .to_owned()
}

/// The `expr:` values of a rules file (`expr: |` blocks or single lines), each with the
/// alert (or recording rule) it belongs to.
fn rule_exprs(yaml: &str, file: &str) -> Vec<Query> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    let mut rule = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        i += 1;
        if let Some(name) = line
            .strip_prefix("- alert:")
            .or_else(|| line.strip_prefix("- record:"))
        {
            rule = name.trim().to_owned();
        }
        let Some(value) = line.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        let expr = if value.starts_with('|') || value.starts_with('>') {
            let base = indent(lines[i - 1]);
            let mut block = Vec::new();
            while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > base) {
                block.push(lines[i].trim());
                i += 1;
            }
            block.join("\n")
        } else {
            value.trim_matches(['\'', '"']).to_owned()
        };
        out.push(Query {
            origin: format!("{file} {rule}"),
            expr,
        });
    }
    out
}

/// The `series:` of a promtool test file: the input the alert tests feed, which must look
/// like what the binaries export.
fn test_series(yaml: &str, file: &str) -> Vec<Query> {
    yaml.lines()
        .filter_map(|l| {
            let s = l.trim().trim_start_matches("- ").strip_prefix("series:")?;
            Some(Query {
                origin: format!("{file} input series"),
                expr: s.trim().trim_matches(['\'', '"']).to_owned(),
            })
        })
        .collect()
}

/// Check every query against the expositions: each metric name with a checked prefix is
/// exported (ingest and process metrics by the live scrape, aggregate ones by the
/// aggregator's textfile), its family is declared, and every label a selector or a
/// grouping clause uses is one of its series' labels (or a target label). Returns the
/// problems, and the names seen.
fn check_queries(
    queries: &[Query],
    live: &Exposition,
    aggregate: &Exposition,
) -> (Vec<String>, BTreeSet<String>) {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for q in queries {
        let r = refs(&q.expr);
        let mut available: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
        let mut checked_any = false;
        for (name, matched) in &r.metrics {
            seen.insert(name.clone());
            if !CHECKED_PREFIXES.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            checked_any = true;
            let (source, what) = if name.starts_with("sohoa_aggregate_") {
                (aggregate, "the aggregator's textfile")
            } else {
                (live, "the live /metrics scrape")
            };
            let Some(labels) = source.series.get(name) else {
                problems.push(format!(
                    "{}: `{name}` is not in {what} (expression: {})",
                    q.origin, q.expr
                ));
                continue;
            };
            if source.family(name).is_none() {
                problems.push(format!(
                    "{}: `{name}` has no # TYPE family in {what}",
                    q.origin
                ));
            }
            available.extend(labels.iter().cloned());
            for l in matched {
                if !labels.contains(l) && !TARGET_LABELS.contains(&l.as_str()) {
                    problems.push(format!(
                        "{}: `{name}` has no label `{l}` in {what} (it has {labels:?})",
                        q.origin
                    ));
                }
            }
        }
        if checked_any {
            for l in &r.grouping {
                if !available.contains(l) {
                    problems.push(format!(
                        "{}: groups or joins by `{l}`, which none of its metrics carries \
                         (they have {available:?}; expression: {})",
                        q.origin, q.expr
                    ));
                }
            }
        }
    }
    (problems, seen)
}

// ---------------------------------------------------------------------------------------
// A live ingestor

fn free_listen_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// One HTTP response from `/metrics`: status line, content type, body.
struct Scrape {
    status: String,
    content_type: String,
    body: String,
}

fn scrape(addr: &str) -> Option<Scrape> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: sohoa\r\n\r\n")
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let mut head_lines = head.lines();
    let status = head_lines.next()?.to_owned();
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let content_type = header("content-type").unwrap_or_default();
    let length: usize = header("content-length")?.parse().ok()?;
    assert_eq!(length, body.len(), "content-length matches the body");
    Some(Scrape {
        status,
        content_type,
        body: body.to_owned(),
    })
}

/// The status line `GET path` gets.
fn status_of(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("the endpoint listens");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: sohoa\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.lines().next().unwrap_or_default().to_owned()
}

/// Scrape `addr` until `ready` holds for the parsed exposition, or fail after `timeout`
/// saying what was awaited.
fn scrape_until(
    addr: &str,
    what: &str,
    timeout: Duration,
    ready: impl Fn(&Exposition) -> bool,
) -> (Scrape, Exposition) {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(s) = scrape(addr) {
            let e = Exposition::parse(&s.body);
            if ready(&e) {
                return (s, e);
            }
            last = Some(s.body);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "timed out waiting for {what} on {addr}; last scrape:\n{}",
        last.unwrap_or_default()
    );
}

/// The `sohoa` binary next to this test's (target/debug/sohoa), if built.
fn sohoa_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let beside = exe.parent()?.parent()?.join("sohoa");
    let from_env = std::env::var_os("SOHOA_BIN").map(PathBuf::from);
    from_env.into_iter().chain([beside]).find(|p| p.is_file())
}

/// The aggregator's textfile for the events under `root`, when the built `sohoa` has
/// `--metrics-textfile`; `None` (and a note on stderr) otherwise.
fn aggregator_textfile(root: &Path) -> Option<String> {
    let Some(bin) = sohoa_binary() else {
        eprintln!(
            "note: no target/debug/sohoa binary: the sohoa_aggregate_* names are checked \
             against AGGREGATE_GAUGES only (cargo build --bin sohoa for the live check)"
        );
        return None;
    };
    let help = Command::new(&bin)
        .args(["aggregate", "--help"])
        .output()
        .expect("sohoa aggregate --help runs");
    if !String::from_utf8_lossy(&help.stdout).contains("--metrics-textfile") {
        eprintln!(
            "note: {} has no `aggregate --metrics-textfile` yet (an older build): the \
             sohoa_aggregate_* names are checked against AGGREGATE_GAUGES only",
            bin.display()
        );
        return None;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let textfile = out_dir.path().join("sohoa.prom");
    let run = Command::new(&bin)
        .args([
            "aggregate",
            "--no-report",
            "--as-of",
            "2023-12-31",
            "--root",
        ])
        .arg(root)
        .arg("--metrics-textfile")
        .arg(&textfile)
        .output()
        .expect("sohoa aggregate runs");
    assert!(
        run.status.success(),
        "sohoa aggregate failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    Some(std::fs::read_to_string(&textfile).expect("the aggregator wrote its textfile"))
}

/// The exposition the aggregate names are checked against when no textfile can be made:
/// the documented gauges, without labels.
fn documented_aggregate_gauges() -> String {
    AGGREGATE_GAUGES
        .iter()
        .map(|n| format!("# HELP {n} documented\n# TYPE {n} gauge\n{n} 0\n"))
        .collect()
}

/// Every query of the dashboard and of the alerts, with the alert tests' input series.
fn all_queries() -> (Vec<Query>, Vec<Query>, Vec<Query>) {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/sohoa.json")).expect("sohoa.json is JSON");
    let mut dash = dashboard_exprs(&dashboard);
    for (name, v) in dashboard_variables(&dashboard) {
        if v["type"] == "query" {
            dash.push(Query {
                origin: format!("sohoa.json variable ${name}"),
                expr: variable_query(&v),
            });
        }
    }
    let alerts = rule_exprs(&read("deploy/prometheus/alerts.yml"), "alerts.yml");
    let series = test_series(
        &read("deploy/prometheus/alerts_test.yml"),
        "alerts_test.yml",
    );
    (dash, alerts, series)
}

#[test]
fn a_live_ingestor_exports_every_metric_and_label_the_dashboard_and_alerts_use() {
    // Fail at once, not after the scenario, when promtool is missing.
    let _ = promtool();
    // Two partitions, 200 messages: every 20th malformed (10 dead letters), every 7th
    // with a field the decoder does not know (a normalization warning).
    let c = cluster(2);
    let (mut msgs, bad) = feed(200, 20);
    for (i, m) in msgs.iter_mut().enumerate() {
        if i % 7 == 3 && !bad.contains(&i) {
            *m = m.replacen('{', r#"{"TruongMoi":"x","#, 1);
        }
    }
    produce(&c.brokers, TOPIC, &msgs);
    // The dead-letter topic refuses writes at first: flushes fail at the dead_letter
    // stage and are retried, as when its ACLs are wrong.
    c.mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 5000],
    );
    let dir = tempfile::tempdir().unwrap();
    let listen_a = free_listen_addr();
    let a = start(
        config(
            &c.brokers,
            dir.path(),
            &[("SOHOA__HTTP__LISTEN", listen_a.as_str())],
        ),
        Metrics::new(),
    );
    scrape_until(
        &listen_a,
        "a flush failure at the dead_letter stage",
        Duration::from_secs(90),
        |e| {
            e.sum(
                "sohoa_ingest_flush_failures_total",
                &[("stage", "dead_letter")],
            ) >= 1.0
        },
    );
    c.mock.clear_request_errors(RDKafkaApiKey::Produce);
    assert!(
        wait_for_rows(dir.path(), 190, Duration::from_secs(90)),
        "every good message written once the dead-letter topic accepts"
    );

    // A second replica joins the group: the first one gives up a partition.
    let listen_b = free_listen_addr();
    let b = start(
        config(
            &c.brokers,
            dir.path(),
            &[("SOHOA__HTTP__LISTEN", listen_b.as_str())],
        ),
        Metrics::new(),
    );
    let one_partition = |e: &Exposition| e.sum("sohoa_ingest_assigned_partitions", &[]) == 1.0;
    scrape_until(
        &listen_a,
        "the first replica's revoke and its single partition",
        Duration::from_secs(90),
        |e| {
            e.sum("sohoa_ingest_rebalances_total", &[("kind", "revoke")]) >= 1.0 && one_partition(e)
        },
    );
    scrape_until(
        &listen_b,
        "the second replica's partition",
        Duration::from_secs(90),
        one_partition,
    );
    // In the group with a broker up: both ready.
    for addr in [&listen_a, &listen_b] {
        assert_eq!(status_of(addr, "/readyz"), "HTTP/1.1 200 OK", "{addr}");
    }
    // More traffic after the rebalance, for both replicas: 38 good, 2 bad.
    let (more, _) = feed(240, 20);
    produce(&c.brokers, TOPIC, &more[200..]);
    assert!(
        wait_for_rows(dir.path(), 228, Duration::from_secs(60)),
        "both replicas write after the rebalance"
    );

    // Both replicas hold a partition with a known watermark: lag gauges on each.
    let lagging = |e: &Exposition| {
        e.has("sohoa_ingest_consumer_lag_messages", &[("topic", TOPIC)])
            && e.has("sohoa_ingest_consumer_lag_seconds", &[("topic", TOPIC)])
    };
    let (scrape_b, _) = scrape_until(&listen_b, "lag gauges", Duration::from_secs(30), lagging);
    let (scrape_a, live) = scrape_until(&listen_a, "lag gauges", Duration::from_secs(30), lagging);
    for s in [&scrape_a, &scrape_b] {
        assert_eq!(s.status, "HTTP/1.1 200 OK");
        assert!(
            s.content_type.starts_with("text/plain; version=0.0.4"),
            "Prometheus text format 0.0.4: {}",
            s.content_type
        );
    }

    // The scenario touched what the panels and alerts read.
    let total = |name: &str, labels: &[(&str, &str)]| live.sum(name, labels);
    assert!(total("sohoa_ingest_dead_letters_total", &[("topic", TOPIC)]) >= 10.0);
    assert!(
        total(
            "sohoa_ingest_messages_total",
            &[("outcome", "dead_lettered")]
        ) >= 10.0
    );
    assert!(total("sohoa_ingest_events_total", &[("outcome", "written")]) >= 100.0);
    // Every message made durable was received first; a partition consumed again after the
    // rebalance counts again, so received can only be ahead.
    let received = total("sohoa_ingest_received_messages_total", &[("topic", TOPIC)]);
    let durable = total("sohoa_ingest_messages_total", &[]);
    assert!(
        received >= durable && durable >= 100.0,
        "received {received} >= durable {durable}"
    );
    assert!(total("sohoa_ingest_warnings_total", &[("kind", "unknown_field")]) >= 1.0);
    assert!(total("sohoa_ingest_files_written_total", &[]) >= 1.0);
    assert!(total("sohoa_ingest_bytes_written_total", &[]) > 0.0);
    assert!(total("sohoa_ingest_flush_duration_seconds_count", &[]) >= 1.0);
    assert!(total("sohoa_ingest_rebalances_total", &[("kind", "assign")]) >= 2.0);
    assert!(total("sohoa_ingest_last_flush_timestamp_seconds", &[]) > 1.6e9);
    for stage in ["waiting", "decoding", "encoding", "writing"] {
        assert!(
            total("sohoa_ingest_pipeline_seconds_total", &[("stage", stage)]) > 0.0,
            "the pipeline thread's time spent {stage} is counted"
        );
    }
    assert!(total("process_resident_memory_bytes", &[]) > 0.0);

    // The exposition is clean for Prometheus, on both replicas.
    assert_promtool_accepts_metrics("the first replica's /metrics", &scrape_a.body);
    assert_promtool_accepts_metrics("the second replica's /metrics", &scrape_b.body);
    for family in live.types.keys() {
        assert!(live.helps.contains(family), "{family} has a HELP line");
    }

    let b_totals = b.stop();
    let a_totals = a.stop();
    assert_eq!(
        a_totals.dead_lettered + b_totals.dead_lettered,
        12,
        "12 malformed messages dead-lettered, once"
    );
    assert_eq!(offsets_in_storage(dir.path()).len(), 228);

    // The aggregator's textfile, from a real run over what the replicas wrote.
    let aggregate_text = match aggregator_textfile(dir.path()) {
        Some(text) => {
            assert_promtool_accepts_metrics("the aggregator's textfile", &text);
            let e = Exposition::parse(&text);
            assert_eq!(
                e.types.keys().map(String::as_str).collect::<BTreeSet<_>>(),
                AGGREGATE_GAUGES.into_iter().collect::<BTreeSet<_>>(),
                "the aggregator's textfile holds exactly the documented gauges"
            );
            assert!(e.types.values().all(|t| t == "gauge"));
            assert_eq!(e.sum("sohoa_aggregate_events_read", &[]), 228.0);
            assert!(e.sum("sohoa_aggregate_dossiers", &[]) > 0.0);
            text
        }
        None => documented_aggregate_gauges(),
    };
    let aggregate = Exposition::parse(&aggregate_text);

    // Every name and label the dashboard, the alerts and the alert tests use.
    let (dash, alerts, series) = all_queries();
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (what, queries, must) in [
        ("dashboard", &dash, &DASHBOARD_MUST_QUERY[..]),
        ("alerts", &alerts, &ALERTS_MUST_QUERY[..]),
        ("alert tests", &series, &[][..]),
    ] {
        let (p, seen) = check_queries(queries, &live, &aggregate);
        problems.extend(p);
        for name in must {
            if !seen.contains(*name) {
                problems.push(format!("{what}: never queries `{name}`"));
            }
        }
        if what == "dashboard" {
            used.extend(seen.iter().filter_map(|n| live.family(n)));
        }
    }
    // Every ingest family the binary exports is on the dashboard, or excused.
    for family in live.types.keys().filter(|f| f.starts_with("sohoa_ingest_")) {
        if !used.contains(family) && !NOT_ON_DASHBOARD.iter().any(|(n, _)| n == family) {
            problems.push(format!(
                "`{family}` is exported but not on the dashboard (add a panel, or list it in \
                 NOT_ON_DASHBOARD with the reason)"
            ));
        }
    }
    // And the README's metrics table documents each of them.
    let readme = read("README.md");
    for family in live.types.keys().filter(|f| f.starts_with("sohoa_ingest_")) {
        if !readme.contains(&format!("`{family}`")) {
            problems.push(format!(
                "`{family}` is exported but not in the README's Metrics table"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = repo().join("deploy/prometheus");
    let (ok, out) = run_promtool(&dir, &["check", "rules", "alerts.yml"], None);
    assert!(ok, "promtool check rules alerts.yml:\n{out}");
    let (ok, out) = run_promtool(&dir, &["test", "rules", "alerts_test.yml"], None);
    assert!(ok, "promtool test rules alerts_test.yml:\n{out}");
}

#[test]
fn every_alert_is_complete_and_has_a_test_where_it_fires_and_one_where_it_does_not() {
    let alerts = read("deploy/prometheus/alerts.yml");
    // Each alert's block: from its `- alert:` line to the next rule or group.
    let mut blocks: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in alerts.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("- alert:") {
            current = Some(name.trim().to_owned());
        } else if t.starts_with("- record:") || t.starts_with("- name:") {
            current = None;
        }
        if let Some(name) = &current {
            let block = blocks.entry(name.clone()).or_default();
            block.push_str(t);
            block.push('\n');
        }
    }
    assert!(
        blocks.len() >= 6,
        "at least the six alerts operations rely on"
    );
    for (name, block) in &blocks {
        for key in [
            "expr:",
            "for:",
            "severity:",
            "summary:",
            "description:",
            "runbook:",
        ] {
            assert!(
                block.lines().any(|l| l.starts_with(key)),
                "{name} has {key}"
            );
        }
        assert!(
            block.contains("severity: warning") || block.contains("severity: critical"),
            "{name}: severity is warning or critical"
        );
    }

    // In alerts_test.yml, `exp_alerts: []` is a case where the alert must not fire; any
    // other `exp_alerts:` lists the alerts that must.
    let tests = read("deploy/prometheus/alerts_test.yml");
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    let mut alertname = None;
    for line in tests.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("alertname:") {
            let name = name.trim().to_owned();
            assert!(
                blocks.contains_key(&name),
                "alerts_test.yml tests an unknown alert {name}"
            );
            alertname = Some(name);
        } else if let Some(rest) = t.strip_prefix("exp_alerts:") {
            let name = alertname.take().expect("exp_alerts follows an alertname");
            if rest.trim() == "[]" {
                quiet.insert(name);
            } else {
                fires.insert(name);
            }
        }
    }
    for name in blocks.keys() {
        assert!(fires.contains(name), "no test where {name} fires");
        assert!(quiet.contains(name), "no test where {name} stays quiet");
    }
}

#[test]
fn the_dashboard_is_well_formed_and_its_queries_are_valid_promql() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/sohoa.json")).expect("sohoa.json is JSON");
    let schema = dashboard["schemaVersion"].as_i64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));

    // Variables: the data source, and topic and partition from label_values.
    let vars = dashboard_variables(&dashboard);
    let ds = vars.get("DS_PROMETHEUS").expect("a DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for (name, label) in [
        ("job", "job"),
        ("topic", "topic"),
        ("partition", "partition"),
    ] {
        let v = vars
            .get(name)
            .unwrap_or_else(|| panic!("a ${name} variable"));
        assert_eq!(v["type"], "query", "${name} is a query variable");
        let q = variable_query(v);
        assert!(
            q.starts_with("label_values(") && q.trim_end().ends_with(&format!(", {label})")),
            "${name} comes from label_values(..., {label}): {q}"
        );
    }

    // Panels: unique ids and titles, inside the 24-column grid, on the chosen data source.
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let ds_ref = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    for p in panels {
        let title = p["title"].as_str().expect("a panel title");
        assert!(
            ids.insert(p["id"].as_i64().expect("a panel id")),
            "duplicate id: {title}"
        );
        assert!(titles.insert(title.to_owned()), "duplicate title {title}");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_i64().unwrap(), g["w"].as_i64().unwrap());
        assert!(x >= 0 && w > 0 && x + w <= 24, "{title} fits the grid");
        if p["type"] == "row" {
            continue;
        }
        assert!(
            p["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title} says what it shows"
        );
        assert_eq!(p["datasource"], ds_ref, "{title} uses ${{DS_PROMETHEUS}}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has queries");
        for t in targets {
            assert_eq!(
                t["datasource"], ds_ref,
                "{title}'s queries use ${{DS_PROMETHEUS}}"
            );
        }
    }

    // Every ingest selector is scoped to the chosen job, so other deployments on the same
    // Prometheus do not mix in.
    let exprs = dashboard_exprs(&dashboard);
    for q in &exprs {
        for (name, labels) in refs(&q.expr).metrics {
            if name.starts_with("sohoa_ingest_") || name.starts_with("process_") || name == "up" {
                assert!(
                    labels.contains("job"),
                    "{}: {name} selects job=~\"$job\"",
                    q.origin
                );
            }
        }
    }
    assert!(exprs.iter().any(|q| q.expr.contains("$topic")));
    assert!(exprs.iter().any(|q| q.expr.contains("$partition")));

    // Each expression, with the variables given a value, is PromQL promtool accepts: as a
    // recording rule of a generated rules file (JSON is YAML).
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let expr = q
                .expr
                .replace("$__rate_interval", "1m")
                .replace("$job", "sohoa-ingestor")
                .replace("$topic", ".*")
                .replace("$partition", ".*");
            assert!(
                !expr.contains('$'),
                "{}: an unknown variable in {expr}",
                q.origin
            );
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard_rules.yml");
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let (ok, out) = run_promtool(dir.path(), &["check", "rules", "dashboard_rules.yml"], None);
    assert!(ok, "the dashboard's queries as PromQL:\n{out}");
}

#[test]
fn promql_references_are_read_correctly() {
    // The reader the contract test relies on, on the shapes the dashboard and alerts use.
    let r = refs(
        r#"histogram_quantile(0.99, sum by (le) (rate(sohoa_ingest_flush_duration_seconds_bucket{job=~"$job"}[$__rate_interval])))"#,
    );
    assert_eq!(
        r.metrics.keys().collect::<Vec<_>>(),
        ["sohoa_ingest_flush_duration_seconds_bucket"]
    );
    assert_eq!(
        r.metrics.values().next().unwrap(),
        &BTreeSet::from(["job".to_owned()])
    );
    assert_eq!(r.grouping, BTreeSet::from(["le".to_owned()]));

    let r = refs(
        r#"deriv(sum by (topic) (max by (topic, partition) (sohoa_ingest_consumer_lag_messages{job="sohoa-ingestor", topic!="sohoa_ingest_x"}))[15m:1m]) > 0 and up == 1"#,
    );
    assert_eq!(
        r.metrics.keys().collect::<Vec<_>>(),
        ["sohoa_ingest_consumer_lag_messages", "up"],
        "names inside strings are not metrics"
    );
    assert_eq!(
        r.grouping,
        BTreeSet::from(["topic".to_owned(), "partition".to_owned()])
    );

    let r = refs(
        r#"label_values(sohoa_ingest_consumer_lag_messages{job=~"$job", topic=~"$topic"}, partition)"#,
    );
    assert_eq!(
        r.metrics["sohoa_ingest_consumer_lag_messages"],
        BTreeSet::from(["job".to_owned(), "topic".to_owned()])
    );
    assert_eq!(r.grouping, BTreeSet::from(["partition".to_owned()]));

    let e = Exposition::parse(
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.7\nh_count 2\n\
         # HELP c x\n# TYPE c counter\nc{topic=\"a\\\"b\",reason=\"syntax\"} 3\n",
    );
    assert_eq!(e.family("h_bucket").as_deref(), Some("h"));
    assert_eq!(e.family("h_count").as_deref(), Some("h"));
    assert_eq!(e.family("c_count"), None);
    assert_eq!(e.sum("c", &[("topic", "a\"b")]), 3.0);
    assert_eq!(e.sum("h_bucket", &[]), 3.0);
}
