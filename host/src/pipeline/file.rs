//! The pipeline file: TOML with one `[[pipeline]]` table per pipeline. Everything is
//! checked before anything starts, and every problem is reported with its line.
//!
//! ```toml
//! [[pipeline]]
//! name = "orders-mirror"
//! tenant = "acme"
//! allow = ["10.0.0.5:9092", "*.kafka.example.com:9092-9094"]  # the operator's egress
//!                               # rules, host:port (default: the exact `servers`, public only)
//! max-records = 1000000         # optional: stop after this many written
//! idle-exit = "30s"             # optional: stop once nothing arrived for this long
//! batch = 1000                  # optional: records per read
//! limits = { memory = "128MiB", cpu = "5s", handles = 500, sockets = 50, log-lines = 100 }
//! deadlines = { open = "2m", write = "5m" }   # optional: validate, open, read, write, ack, teardown
//! restart = { attempts = 5, backoff = "1s", max-backoff = "30s" }  # optional (these are the
//!                               # defaults): restarts after a retriable failure; 0 attempts: none
//!
//! [pipeline.source]
//! type = "kafka"                # kafka | component | file | stdin
//! settings = { servers = "10.0.0.5:9092", topics = "orders", groupID = "mirror" }
//!
//! [pipeline.destination]
//! type = "file"                 # kafka | component | file | stdout
//! path = "orders.jsonl"
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use std::os::unix::fs::MetadataExt;

use super::paths::Confined;
use super::restart::RestartPolicy;
use super::{DEFAULT_BATCH, Endpoint, MAX_BATCH, Pipeline};
use crate::limits::{Deadlines, Limits};
use crate::sandbox::Allowlist;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    pipeline: Vec<PipelineDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PipelineDoc {
    name: Spanned<String>,
    tenant: Spanned<String>,
    allow: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    limits: LimitsDoc,
    #[serde(default)]
    deadlines: DeadlinesDoc,
    restart: Option<Spanned<RestartDoc>>,
    max_records: Option<u64>,
    idle_exit: Option<Text<Duration>>,
    batch: Option<Spanned<u32>>,
    source: Spanned<EndpointDoc>,
    destination: Spanned<EndpointDoc>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct LimitsDoc {
    memory: Option<Text<Bytes>>,
    cpu: Option<Text<Positive>>,
    handles: Option<usize>,
    sockets: Option<usize>,
    log_lines: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RestartDoc {
    attempts: Option<u32>,
    backoff: Option<Text<Duration>>,
    max_backoff: Option<Text<Duration>>,
}

impl RestartDoc {
    fn policy(self) -> Result<RestartPolicy, String> {
        let d = RestartPolicy::default();
        let backoff = self.backoff.map_or(d.backoff, |t| t.0);
        let policy = RestartPolicy {
            attempts: self.attempts.unwrap_or(d.attempts),
            backoff,
            // A first pause above the default cap raises the cap with it.
            max_backoff: self.max_backoff.map_or(d.max_backoff.max(backoff), |t| t.0),
        };
        if policy.backoff.is_zero() {
            return Err("restart.backoff must be more than 0".into());
        }
        if policy.max_backoff < policy.backoff {
            return Err("restart.max-backoff must be at least restart.backoff".into());
        }
        Ok(policy)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeadlinesDoc {
    validate: Option<Text<Positive>>,
    open: Option<Text<Positive>>,
    read: Option<Text<Positive>>,
    write: Option<Text<Positive>>,
    ack: Option<Text<Positive>>,
    teardown: Option<Text<Positive>>,
}

impl LimitsDoc {
    fn limits(self, deadlines: DeadlinesDoc) -> Limits {
        let d = Limits::default();
        let dd = d.deadlines;
        let or = |t: Option<Text<Positive>>, default: Duration| t.map_or(default, |t| t.0.0);
        Limits {
            memory: self.memory.map_or(d.memory, |m| m.0.0),
            cpu: or(self.cpu, d.cpu),
            handles: self.handles.unwrap_or(d.handles),
            sockets: self.sockets.unwrap_or(d.sockets),
            log_lines: self.log_lines.unwrap_or(d.log_lines),
            deadlines: Deadlines {
                validate: or(deadlines.validate, dd.validate),
                open: or(deadlines.open, dd.open),
                read: or(deadlines.read, dd.read),
                write: or(deadlines.write, dd.write),
                ack: or(deadlines.ack, dd.ack),
                teardown: or(deadlines.teardown, dd.teardown),
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointDoc {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    component: Option<Spanned<PathBuf>>,
    settings: Option<Spanned<BTreeMap<String, toml::Value>>>,
    path: Option<Spanned<PathBuf>>,
}

/// A value written as text (`"5s"`, `"64MiB"`) and parsed on deserialization, so that a
/// bad one is reported at its line by the TOML parser.
struct Text<T>(T);

trait FromText: Sized {
    fn from_text(s: &str) -> Result<Self, String>;
}

impl FromText for Duration {
    fn from_text(s: &str) -> Result<Self, String> {
        connector_format::duration::parse(s)
    }
}

/// A duration of more than zero: a CPU limit or a deadline of zero would stop every call.
struct Positive(Duration);

impl FromText for Positive {
    fn from_text(s: &str) -> Result<Self, String> {
        connector_format::duration::parse_positive(s).map(Positive)
    }
}

/// An instance's memory limit, within what the engine can give.
struct Bytes(usize);

impl FromText for Bytes {
    fn from_text(s: &str) -> Result<Self, String> {
        let bytes = parse_size(s)?;
        crate::limits::memory_limit(bytes as u128).map(Bytes)
    }
}

impl<'de, T: FromText> Deserialize<'de> for Text<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        T::from_text(&s).map(Text).map_err(de::Error::custom)
    }
}

/// `65536`, `512KiB`, `64MiB`, `1GiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("{s:?} is not a size like 512KiB, 64MiB or 1GiB");
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = num.parse().map_err(|_| bad())?;
    let shift = match unit {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// Reads and checks the pipeline file at `path`. Paths in it (components, files) are
/// relative to the file's folder, and must stay inside it.
pub fn load(path: &Path) -> Result<Vec<Pipeline>> {
    load_in(path, None, false)
}

/// As `load`, with the paths in it relative to `data_dir` when given, and with
/// `per_tenant`, to a folder of each tenant's own in it (`<folder>/<tenant>/`).
pub fn load_in(path: &Path, data_dir: Option<&Path>, per_tenant: bool) -> Result<Vec<Pipeline>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let base = data_dir.unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")));
    let folders = Folders {
        base,
        per_tenant,
        file: Some(path),
    };
    parse_in(&text, &path.display().to_string(), &folders)
}

/// Where a pipeline file's paths lead.
pub struct Folders<'a> {
    /// The folder they are relative to and confined in.
    pub base: &'a Path,
    /// Each tenant's in `base/<tenant>/` instead, out of the others' reach.
    pub per_tenant: bool,
    /// The pipeline file itself, which no path may name.
    pub file: Option<&'a Path>,
}

/// Checks a pipeline file's text; `name` is how messages refer to it, `base` the folder its
/// paths are relative to and confined in.
pub fn parse(text: &str, name: &str, base: &Path) -> Result<Vec<Pipeline>> {
    let folders = Folders {
        base,
        per_tenant: false,
        file: None,
    };
    parse_in(text, name, &folders)
}

/// A parser message with what it quotes of the file's values (`invalid type: string
/// "...", expected a map`) left out: a value may be a secret. Names stay (in backticks).
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('"').enumerate() {
        out.push_str(if i % 2 == 1 { "\"…\"" } else { part });
    }
    out
}

/// `parse`, with the paths where `folders` says.
pub fn parse_in(text: &str, name: &str, folders: &Folders) -> Result<Vec<Pipeline>> {
    // Where and what, never the parser's quote of the offending line: that line may hold
    // a secret (a password, a key) and is the tenant's text.
    let doc: Doc = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(String::new(), |s| {
            let n = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!(":{n}")
        });
        let message = without_quoted_values(e.message().trim_end());
        anyhow!("{name}{line}: {}", crate::escape::shown(&message))
    })?;
    let mut check = Checker {
        text,
        name,
        folders,
        problems: Vec::new(),
    };
    let pipelines: Vec<Pipeline> = doc
        .pipeline
        .into_iter()
        .filter_map(|p| check.pipeline(p))
        .collect();
    check.across(&pipelines);
    if pipelines.is_empty() && check.problems.is_empty() {
        check
            .problems
            .push(format!("{name}: no [[pipeline]] in the file"));
    }
    match check.problems.is_empty() {
        true => Ok(pipelines),
        false => Err(anyhow!("{}", check.problems.join("\n"))),
    }
}

/// Collects every problem of a file instead of stopping at the first.
struct Checker<'a> {
    text: &'a str,
    name: &'a str,
    folders: &'a Folders<'a>,
    problems: Vec<String>,
}

impl Checker<'_> {
    fn at(&self, span: std::ops::Range<usize>) -> String {
        let line = self.text[..span.start.min(self.text.len())].matches('\n').count() + 1;
        format!("{}:{line}", self.name)
    }

    /// Records a problem; its text may quote what a tenant wrote, so it is escaped.
    fn problem(&mut self, span: std::ops::Range<usize>, msg: impl std::fmt::Display) {
        let at = self.at(span);
        let msg = crate::escape::shown(&msg.to_string()).into_owned();
        self.problems.push(format!("{at}: {msg}"));
    }

    fn pipeline(&mut self, p: PipelineDoc) -> Option<Pipeline> {
        let before = self.problems.len();
        for field in [&p.tenant, &p.name] {
            if !valid_name(field.get_ref()) {
                self.problem(
                    field.span(),
                    format!(
                        "{:?} must be letters, digits, '.', '_' or '-', and not start with '.'",
                        field.get_ref()
                    ),
                );
            }
        }
        let f = self.folders;
        let folder = match f.per_tenant {
            true => f.base.join(p.tenant.get_ref()),
            false => f.base.to_path_buf(),
        };
        let source = self.endpoint(&p.source, Side::Source, &folder);
        let destination = self.endpoint(&p.destination, Side::Destination, &folder);
        let allow = self.allowlist(&p, [&source, &destination]);
        if let Some(b) = &p.batch
            && !(1..=MAX_BATCH).contains(b.get_ref())
        {
            self.problem(b.span(), format!("batch must be from 1 to {MAX_BATCH}"));
        }
        let restart = match p.restart.map(|r| (r.span(), r.into_inner().policy())) {
            None => RestartPolicy::default(),
            Some((_, Ok(policy))) => policy,
            Some((span, Err(why))) => {
                self.problem(span, why);
                RestartPolicy::default()
            }
        };
        if self.problems.len() > before {
            return None;
        }
        Some(Pipeline {
            at: self.at(p.name.span()),
            tenant: p.tenant.into_inner(),
            name: p.name.into_inner(),
            allow: allow?,
            limits: p.limits.limits(p.deadlines),
            max_records: p.max_records,
            idle_exit: p.idle_exit.map(|t| t.0),
            batch: p.batch.map_or(DEFAULT_BATCH, |b| b.into_inner()),
            source: source?,
            start: None,
            destination: destination?,
            restart,
        })
    }

    fn endpoint(&mut self, e: &Spanned<EndpointDoc>, side: Side, folder: &Path) -> Option<Endpoint> {
        let (doc, span) = (e.get_ref(), e.span());
        let kind = doc.kind.get_ref().as_str();
        let allowed: &[&str] = match side {
            Side::Source => &["kafka", "component", "file", "stdin"],
            Side::Destination => &["kafka", "component", "file", "stdout"],
        };
        if !allowed.contains(&kind) {
            let msg = format!("{side} type {kind:?} is not one of {}", allowed.join(", "));
            self.problem(doc.kind.span(), msg);
            return None;
        }
        let wants = |field: bool, name: &str, needed: bool| -> Option<String> {
            match (field, needed) {
                (false, true) => Some(format!("a {kind} {side} needs `{name}`")),
                (true, false) => Some(format!("a {kind} {side} takes no `{name}`")),
                _ => None,
            }
        };
        let connector = matches!(kind, "kafka" | "component");
        let misfits = [
            wants(doc.settings.is_some(), "settings", connector),
            wants(doc.component.is_some(), "component", kind == "component"),
            wants(doc.path.is_some(), "path", kind == "file"),
        ];
        let mut ok = true;
        for m in misfits.into_iter().flatten() {
            self.problem(span.clone(), m);
            ok = false;
        }
        if !ok {
            return None;
        }
        match kind {
            "file" => Some(Endpoint::File(self.confined(
                folder,
                doc.path.as_ref()?,
                "path",
            )?)),
            "stdin" | "stdout" => Some(Endpoint::Stdio),
            _ => {
                let component = match &doc.component {
                    Some(c) => Some(self.confined(folder, c, "component")?),
                    None => None,
                };
                let settings = doc.settings.as_ref()?;
                let config = self.settings(settings)?;
                Some(Endpoint::Connector {
                    component,
                    config,
                    at: self.at(settings.span()),
                })
            }
        }
    }

    /// `given` inside the base folder: a tenant's path must not reach another's files.
    fn confined(&mut self, folder: &Path, given: &Spanned<PathBuf>, field: &str) -> Option<Confined> {
        let path = super::paths::confine(folder, given.get_ref())
            .map_err(|e| self.problem(given.span(), format!("`{field}`: {e}")))
            .ok()?;
        let plain = |p: &Path| {
            p.components()
                .filter(|c| *c != std::path::Component::CurDir)
                .collect::<PathBuf>()
        };
        if self.folders.file.is_some_and(|f| plain(f) == plain(&path)) {
            self.problem(
                given.span(),
                format!("`{field}`: {:?} is the pipeline file", given.get_ref()),
            );
            return None;
        }
        let id = |f: &Path| std::fs::metadata(f).ok().map(|m| (m.dev(), m.ino()));
        Some(Confined {
            base: folder.to_path_buf(),
            path,
            forbidden: self.folders.file.and_then(id),
        })
    }

    /// Settings are strings to the connector; numbers, booleans and lists are accepted
    /// and written the way its parameters take them (lists comma-separated).
    fn settings(&mut self, s: &Spanned<BTreeMap<String, toml::Value>>) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (k, v) in s.get_ref() {
            match setting_text(v) {
                Some(text) => out.push((k.clone(), text)),
                None => self.problem(
                    s.span(),
                    format!("setting {k:?} must be a string, number, boolean or list"),
                ),
            }
        }
        (out.len() == s.get_ref().len()).then_some(out)
    }

    /// The pipeline's allowlist: the operator's `allow`, which every `servers` host must
    /// fall within (a tenant's settings narrow it, never widen it); or, when the operator
    /// gave none, each `servers` host:port exactly, public addresses only.
    fn allowlist(&mut self, p: &PipelineDoc, ends: [&Option<Endpoint>; 2]) -> Option<Allowlist> {
        let servers = ends.into_iter().flatten().filter_map(Endpoint::servers);
        let Some(given) = &p.allow else {
            let mut allow = Allowlist::default();
            for s in servers {
                if let Err(e) = allow.add_tenant_servers(s) {
                    self.problem(p.name.span(), format!("{e:#}"));
                    return None;
                }
            }
            return Some(allow);
        };
        let mut allow = Allowlist::default();
        for entry in given.get_ref() {
            if let Err(e) = allow.allow(entry) {
                self.problem(given.span(), format!("{e:#}"));
                return None;
            }
        }
        for s in servers {
            if let Err(e) = allow.check_servers(s) {
                self.problem(given.span(), e);
            }
        }
        Some(allow)
    }

    fn across(&mut self, pipelines: &[Pipeline]) {
        let mut seen = HashSet::new();
        for p in pipelines {
            if !seen.insert(p.id()) {
                self.problems
                    .push(format!("{}: pipeline {} is defined twice", p.at, p.id()));
            }
        }
        let stdin = pipelines
            .iter()
            .filter(|p| matches!(p.source, Endpoint::Stdio))
            .count();
        if stdin > 1 {
            self.problems.push(format!(
                "{}: {stdin} pipelines read stdin; at most one may",
                self.name
            ));
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Source,
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// A tenant or pipeline name: also a folder name, so never `.` or `..`.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn setting_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                toml::Value::Array(_) | toml::Value::Table(_) => None,
                scalar => setting_text(scalar),
            })
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.join(",")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[pipeline]]
name = "mirror"
tenant = "acme"
max-records = 10
limits = { memory = "64MiB", cpu = "2s" }

[pipeline.source]
type = "kafka"
settings = { servers = "203.0.113.7:9092", topics = ["a", "b"], readFromBeginning = true }

[pipeline.destination]
type = "file"
path = "out.jsonl"
"#;

    #[test]
    fn a_good_file_gives_validated_pipelines() {
        let ps = parse(GOOD, "p.toml", Path::new("/etc/p")).unwrap();
        let p = &ps[0];
        assert_eq!(p.id(), "acme/mirror");
        assert_eq!(p.at, "p.toml:3");
        assert_eq!(p.limits.memory, 64 << 20);
        assert_eq!(p.limits.cpu, Duration::from_secs(2));
        assert_eq!(p.limits.handles, Limits::default().handles);
        assert!(p.allow.permits("203.0.113.7:9092".parse().unwrap()));
        assert!(
            !p.allow.permits("203.0.113.7:9093".parse().unwrap()),
            "that port only"
        );
        let Endpoint::Connector { config, at, .. } = &p.source else {
            panic!()
        };
        assert!(config.contains(&("topics".into(), "a,b".into())));
        assert!(config.contains(&("readFromBeginning".into(), "true".into())));
        assert_eq!(at, "p.toml:10");
        assert!(
            matches!(&p.destination, Endpoint::File(Confined { base, path, .. })
            if base == Path::new("/etc/p") && path == Path::new("/etc/p/out.jsonl"))
        );
    }

    #[test]
    fn a_restart_policy_has_defaults_and_is_checked_at_its_line() {
        let ps = parse(GOOD, "p.toml", Path::new("/etc/p")).unwrap();
        assert_eq!(ps[0].restart, RestartPolicy::default());
        let with = |policy: &str| GOOD.replace("max-records = 10", &format!("restart = {policy}"));
        let ps = parse(
            &with(r#"{ attempts = 2, backoff = "250ms", max-backoff = "1m" }"#),
            "p.toml",
            Path::new("/"),
        )
        .unwrap();
        let expected = RestartPolicy {
            attempts: 2,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(60),
        };
        assert_eq!(ps[0].restart, expected);
        let off = parse(&with("{ attempts = 0 }"), "p.toml", Path::new("/")).unwrap();
        assert_eq!(off[0].restart.attempts, 0);
        assert!(
            problems(&with(r#"{ backoff = "0" }"#)).contains("p.toml:5: restart.backoff must be more than 0")
        );
        let inverted = problems(&with(r#"{ backoff = "10s", max-backoff = "1s" }"#));
        assert!(
            inverted.contains("p.toml:5: restart.max-backoff must be at least"),
            "{inverted}"
        );
        assert!(problems(&with(r#"{ backoff = "soon" }"#)).contains("p.toml:5"));
        assert!(problems(&with("{ tries = 3 }")).contains("unknown field `tries`"));
    }

    fn problems(text: &str) -> String {
        parse(text, "p.toml", Path::new("/etc/p"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn with_folders_per_tenant_each_tenants_paths_are_in_its_own_and_none_is_the_pipeline_file() {
        let folders = |per_tenant| Folders {
            base: Path::new("/etc/p"),
            per_tenant,
            file: Some(Path::new("/etc/p/p.toml")),
        };
        let ps = parse_in(GOOD, "p.toml", &folders(true)).unwrap();
        assert!(
            matches!(&ps[0].destination, Endpoint::File(Confined { base, path, .. })
            if base == Path::new("/etc/p/acme") && path == Path::new("/etc/p/acme/out.jsonl"))
        );
        let own = GOOD.replace("\"out.jsonl\"", "\"./p.toml\"");
        let e = parse_in(&own, "p.toml", &folders(false)).unwrap_err().to_string();
        assert!(
            e.contains("p.toml:14: `path`: \"./p.toml\" is the pipeline file"),
            "{e}"
        );
        assert!(
            parse_in(&own, "p.toml", &folders(true)).is_ok(),
            "acme/p.toml is another file"
        );
    }

    #[test]
    fn a_tenant_named_like_a_folder_above_is_refused() {
        let e = problems(&GOOD.replace("tenant = \"acme\"", "tenant = \"..\""));
        assert!(e.contains("p.toml:4: \"..\" must be letters"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let bad = GOOD
            .replace("type = \"file\"", "type = \"ftp\"")
            .replace("tenant = \"acme\"", "tenant = \"ac me\"");
        let e = problems(&bad);
        assert!(e.contains("p.toml:4: \"ac me\" must be"), "{e}");
        assert!(
            e.contains("p.toml:13: destination type \"ftp\" is not one of"),
            "{e}"
        );
    }

    #[test]
    fn syntax_unknown_keys_and_bad_values_name_their_line() {
        let e = problems(&GOOD.replace("max-records = 10", "max-records = 10\nmax-recs = 3"));
        assert!(e.contains("p.toml:6: ") && e.contains("max-recs"), "{e}");
        let e = problems(&GOOD.replace("cpu = \"2s\"", "cpu = \"2 seconds\""));
        assert!(e.contains("p.toml:6: ") && e.contains("not a duration"), "{e}");
        let e = problems(&GOOD.replace("name = \"mirror\"", "name = mirror"));
        assert!(e.contains("p.toml:3: "), "{e}");
    }

    #[test]
    fn a_syntax_error_never_quotes_its_line() {
        let e = problems(&GOOD.replace("name = \"mirror\"", "name = \"mirror\"\nsecret = \"hunter2"));
        assert!(e.contains("p.toml:4: ") && !e.contains("hunter2"), "{e}");
        let e = problems(&GOOD.replace("max-records = 10", "max-records = \"hunter2\""));
        assert!(
            e.contains("p.toml:5: invalid type") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn endpoints_need_their_fields_and_servers_must_be_allowed() {
        let e = problems(&GOOD.replace("path = \"out.jsonl\"", ""));
        assert!(e.contains("p.toml:12: a file destination needs `path`"), "{e}");
        let e = problems(&GOOD.replace(
            "tenant = \"acme\"",
            "tenant = \"acme\"\nallow = [\"10.0.0.0/8:9092\"]",
        ));
        assert!(
            e.contains("p.toml:5: server \"203.0.113.7:9092\" is not in the allow list"),
            "{e}"
        );
        let twice = format!("{GOOD}\n{GOOD}");
        assert!(problems(&twice).contains("pipeline acme/mirror is defined twice"));
    }

    #[test]
    fn a_tenant_reaches_special_addresses_only_through_the_operators_allow() {
        let local = GOOD.replace("203.0.113.7:9092", "127.0.0.1:9092");
        let e = problems(&local);
        assert!(
            e.contains("p.toml:3: server \"127.0.0.1:9092\" is a loopback address: only the operator"),
            "{e}"
        );
        let e = problems(&GOOD.replace("203.0.113.7:9092", "0.0.0.0/0:9092"));
        assert!(e.contains("is not a host:port"), "{e}");
        let allowed = local.replace(
            "tenant = \"acme\"",
            "tenant = \"acme\"\nallow = [\"127.0.0.1:9092\"]",
        );
        let p = &parse(&allowed, "p.toml", Path::new("/etc/p")).unwrap()[0];
        assert!(p.allow.permits("127.0.0.1:9092".parse().unwrap()));
        let e = problems(&allowed.replace("127.0.0.1:9092\"]", "127.0.0.1\"]"));
        assert!(e.contains("needs a port"), "{e}");
    }

    #[test]
    fn limits_and_deadlines_are_read_with_defaults_for_the_rest() {
        let text = GOOD.replace(
            "cpu = \"2s\" }",
            "cpu = \"2s\", sockets = 7, log-lines = 5 }\ndeadlines = { open = \"1m30s\" }",
        );
        let p = &parse(&text, "p.toml", Path::new("/etc/p")).unwrap()[0];
        assert_eq!((p.limits.sockets, p.limits.log_lines), (7, 5));
        assert_eq!(p.limits.deadlines.open, Duration::from_secs(90));
        assert_eq!(p.limits.deadlines.write, Limits::default().deadlines.write);
    }

    #[test]
    fn limits_of_zero_or_past_what_the_engine_gives_are_refused() {
        let e = problems(&GOOD.replace("\"64MiB\"", "\"5GiB\""));
        assert!(
            e.contains("p.toml:6: ") && e.contains("from 1 MiB to 4096 MiB") && e.contains("not 5120 MiB"),
            "{e}"
        );
        let e = problems(&GOOD.replace("\"64MiB\"", "\"17179869184GiB\""));
        assert!(e.contains("p.toml:6: ") && e.contains("is not a size"), "{e}");
        let e = problems(&GOOD.replace("\"64MiB\"", "\"1000KiB\""));
        assert!(e.contains("not 0 MiB"), "{e}");
        let e = problems(&GOOD.replace("cpu = \"2s\"", "cpu = \"0s\""));
        assert!(
            e.contains("p.toml:6: ") && e.contains("must be more than zero"),
            "{e}"
        );
        let deadline = GOOD.replace(
            "max-records = 10",
            "max-records = 10\ndeadlines = { write = \"0\" }",
        );
        let e = problems(&deadline);
        assert!(
            e.contains("p.toml:6: ") && e.contains("must be more than zero"),
            "{e}"
        );
    }

    #[test]
    fn paths_must_stay_in_the_base_folder() {
        let e = problems(&GOOD.replace("\"out.jsonl\"", "\"/home/other/.bashrc\""));
        let want = "p.toml:14: `path`: path \"/home/other/.bashrc\" must be relative";
        assert!(e.contains(want), "{e}");
        let e = problems(&GOOD.replace("\"out.jsonl\"", "\"logs/../../other/in.jsonl\""));
        let want = "p.toml:14: `path`: path \"logs/../../other/in.jsonl\" must not contain \"..\"";
        assert!(e.contains(want), "{e}");
        let kind = "type = \"component\"\ncomponent = \"../other/c.wasm\"";
        let component = GOOD.replace("type = \"kafka\"", kind);
        let e = problems(&component);
        let want = "p.toml:10: `component`: path \"../other/c.wasm\" must not contain";
        assert!(e.contains(want), "{e}");
        let e = problems(&component.replace("../other/c.wasm", "/opt/c.wasm"));
        let want = "p.toml:10: `component`: path \"/opt/c.wasm\" must be relative";
        assert!(e.contains(want), "{e}");
        let inside = component.replace("../other/c.wasm", "c/c.wasm");
        let ps = parse(&inside, "p.toml", Path::new("/d")).unwrap();
        let Endpoint::Connector { component, .. } = &ps[0].source else {
            panic!()
        };
        assert_eq!(
            component.as_ref().map(|c| c.path.as_path()),
            Some(Path::new("/d/c/c.wasm"))
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("64MB").is_err());
    }
}
