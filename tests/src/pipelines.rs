//! Helpers for tests of `connector-host run`: topics filled and read back through the
//! connector, pipeline files in a scratch folder, the host run as a child process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use connector_host::wit::Data;
use tokio::process::Command;

use crate::child::Running;
use crate::{
    allow_servers, broker, bytes, component_path, host_binary, open_destination_at, read_n, record, source,
};

/// Writes `n` raw values `{tag}-{i}` to `topic`; returns them.
pub async fn fill(topic: &str, n: usize, tag: &str) -> Vec<String> {
    fill_at(&broker(), topic, n, tag).await
}

/// [`fill`] through `servers`.
pub async fn fill_at(servers: &str, topic: &str, n: usize, tag: &str) -> Vec<String> {
    let values: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let mut dst = open_destination_at(servers, &[("topic", topic)]).await;
    for chunk in values.chunks(5000) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|v| record(None, Some(Data::Raw(v.clone().into_bytes())), &[]))
            .collect();
        let (written, err) = dst.write(&batch).await.expect("write");
        assert!(err.is_none() && written as usize == batch.len(), "{err:?}");
    }
    dst.teardown().await.expect("teardown");
    values
}

/// Every value in `topic` (expecting `n`, and waiting a little longer for any extra, so
/// that duplicates show), sorted.
pub async fn topic_values(topic: &str, n: usize) -> Vec<String> {
    topic_values_at(&broker(), topic, n).await
}

/// [`topic_values`] through `servers`.
pub async fn topic_values_at(servers: &str, topic: &str, n: usize) -> Vec<String> {
    static GROUP: AtomicU32 = AtomicU32::new(0);
    let group = format!(
        "check-{}-{}",
        std::process::id(),
        GROUP.fetch_add(1, Ordering::Relaxed)
    );
    let mut src = source(&allow_servers(servers)).await;
    let cfg = crate::config(&[
        ("servers", servers),
        ("topic", topic),
        ("readFromBeginning", "true"),
        ("groupID", &group),
    ]);
    src.open(&cfg, None).await.expect("open source");
    let mut records = read_n(&mut src, n, Duration::from_secs(60)).await;
    records.extend(src.read(1000, 1000).await.expect("read"));
    src.teardown().await.expect("teardown");
    let mut values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(bytes(&r.payload.after).unwrap_or_default()).expect("utf-8"))
        .collect();
    values.sort();
    values
}

/// The folder of `tenant`'s files (components, JSON Lines) under a pipeline file's folder,
/// made if missing.
pub fn tenant_dir(dir: &Path, tenant: &str) -> PathBuf {
    let d = dir.join(tenant);
    std::fs::create_dir_all(&d).expect("tenant folder");
    d
}

/// A fresh scratch folder for one test's pipeline file and JSON Lines files.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pipelines-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    // A folder of an earlier run whose test process had the same id would add its files.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// `connector-host run <file>` with the Kafka connector, stdout and stderr piped.
pub fn run_host(file: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(host_binary());
    c.arg("--component")
        .arg(component_path())
        .args(["--progress-every", "1s"])
        .arg("run")
        .arg(file)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// `run_host`, started by a shell `script` that ends in `exec "$0" "$@"` (the host and its
/// arguments), run by `launcher` (e.g. `["unshare", "--net"]`, or nothing).
pub fn run_host_in(file: &Path, extra: &[&str], launcher: &[&str], script: &str) -> Command {
    let host = run_host(file, extra);
    let host = host.as_std();
    let (first, rest) = launcher.split_first().map_or(("sh", &[][..]), |(f, r)| (*f, r));
    let mut c = Command::new(first);
    c.args(rest);
    if !launcher.is_empty() {
        c.arg("sh");
    }
    c.arg("-c")
        .arg(script)
        .arg(host.get_program())
        .args(host.get_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs `cmd` (see [`run_host`]) to its exit, for at most `limit`: its exit code and stderr.
/// Past `limit` the test fails, showing what the host printed (its progress lines say what
/// moved), and the host is killed.
pub async fn finish(cmd: &mut Command, limit: Duration) -> (i32, String) {
    Running::spawn(cmd).finish(limit).await
}

/// `finish`, also measuring the host's peak resident memory (bytes), sampled from
/// `/proc/<pid>/status` (VmHWM, the high-water mark) until it exits.
pub async fn finish_measured(cmd: &mut Command, limit: Duration) -> (i32, String, u64) {
    let host = Running::spawn(cmd);
    let pid = host.id();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            while let Some(bytes) = peak_rss(pid) {
                peak.fetch_max(bytes, Ordering::Relaxed);
                // The sampling period, not a wait: VmHWM only grows, so each sample holds
                // the peak so far, and the last one before the exit the peak of the run
                // (the status file goes with the process).
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (code, stderr) = host.finish(limit).await;
    sampler.abort();
    (code, stderr, peak.load(Ordering::Relaxed))
}

/// The peak resident memory (bytes) of process `pid` so far: VmHWM of `/proc/<pid>/status`,
/// the high-water mark. `None` once the process is gone.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?;
    Some(kib << 10)
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The line `pipeline <id> <status> (<r> read, <w> written, <e> errors)...` of a run.
pub fn summary<'a>(stderr: &'a str, id: &str) -> &'a str {
    let prefix = format!("pipeline {id} ");
    stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no summary for {id} in:\n{stderr}"))
}

/// The written count of a summary line.
pub fn written(summary: &str) -> usize {
    let (_, rest) = summary.split_once(" read, ").expect("a summary line");
    rest.split_once(' ')
        .and_then(|(n, _)| n.parse().ok())
        .expect("a written count")
}

/// The operator's `allow` line for the test broker (a loopback address: only an operator
/// entry naming it lets a pipeline reach it).
pub fn allow_broker_line() -> String {
    allow_line(&broker())
}

/// The operator's `allow` line for `servers` (e.g. a private broker's proxy).
pub fn allow_line(servers: &str) -> String {
    format!("allow = [\"{servers}\"]\n")
}

/// A `[pipeline.<side>]` table of the bundled Kafka connector on the test broker.
pub fn kafka_end(side: &str, settings: &str) -> String {
    kafka_end_at(&broker(), side, settings)
}

/// [`kafka_end`] on `servers`.
pub fn kafka_end_at(servers: &str, side: &str, settings: &str) -> String {
    format!("[pipeline.{side}]\ntype = \"kafka\"\nsettings = {{ servers = \"{servers}\", {settings} }}\n")
}

/// The value of counter or gauge `connector_<name>` of pipeline `id` (`tenant/name`) in a
/// scrape of the metrics endpoint.
pub fn metric(metrics: &str, name: &str, id: &str) -> Option<u64> {
    let (tenant, pipeline) = id.split_once('/').expect("a pipeline id tenant/name");
    let key = format!("connector_{name}{{tenant=\"{tenant}\",pipeline=\"{pipeline}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&key)?.parse().ok())
}

/// Scrapes `http://addr/metrics` once.
pub async fn scrape(addr: &str) -> String {
    try_scrape(addr).await.expect("the metrics endpoint answers")
}

/// [`scrape`], `None` when the endpoint does not answer (its host is gone).
pub async fn try_scrape(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    conn.read_to_string(&mut body).await.ok()?;
    Some(body)
}

/// The `host:port` a `connector-host run --metrics 127.0.0.1:0` announces, once it has.
pub async fn metrics_addr(host: &mut crate::child::Running, limit: Duration) -> String {
    let announced = host
        .wait_for_stderr(limit, "the metrics address", |s| s.contains("metrics at http://"))
        .await;
    announced
        .lines()
        .find_map(|l| l.strip_prefix("metrics at http://"))
        .expect("the announced line")
        .trim_end_matches("/metrics")
        .to_string()
}
