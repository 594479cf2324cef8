//! Shared test harness: the broker the tests run against (started by
//! `scripts/broker.sh run`), the compiled connector, fresh topics, config helpers.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod certs;

pub mod child;

pub mod durable;

pub mod faults;

pub mod gateway;

pub mod interop;

pub mod pipelines;

pub mod secure;

pub mod soak;

use connector_host::{Allowlist, Destination, EngineOptions, Limits, Runtime, SharedEngine, Source, wit};
use kafka_connector::config::{ClientConfig, parse_server};
use kafka_connector::kafka::client::cluster::Cluster;
use kafka_connector::kafka::network::Security;

/// The broker's address. Tests fail (they do not skip) without one.
pub fn broker() -> String {
    std::env::var("KAFKA_BROKER")
        .expect("KAFKA_BROKER is not set: run the tests with `just test` (it starts a broker)")
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// The connector component `just build` made.
pub fn component_path() -> PathBuf {
    let path = std::env::var_os("CONNECTOR_COMPONENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("wasm32-wasip2/release/kafka_connector.wasm"));
    assert!(path.exists(), "{} is missing: run `just build`", path.display());
    path
}

/// Where the tests and benchmarks cache compiled components.
pub fn component_cache() -> PathBuf {
    target_dir().join("component-cache")
}

/// The hostile guest component `just build` made (tests/guests/hostile).
pub fn hostile_component_path() -> PathBuf {
    let path = target_dir().join("wasm32-wasip2/release/hostile_guest.wasm");
    assert!(path.exists(), "{} is missing: run `just build`", path.display());
    path
}

/// The host binary `just build` made.
pub fn host_binary() -> PathBuf {
    let path = target_dir().join("debug/connector-host");
    assert!(path.exists(), "{} is missing: run `just build`", path.display());
    path
}

/// The engine shared by every instance of the test binary, as in one host process.
pub fn engine() -> SharedEngine {
    static ENGINE: OnceLock<SharedEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| SharedEngine::new(&EngineOptions::default()).expect("the engine starts"))
        .clone()
}

/// One runtime for the whole test binary: the component is compiled (or loaded from the
/// cache) once.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::load(&engine(), &component_path(), &component_cache())
            .expect("the connector component loads")
    })
}

pub type Config = Vec<(String, String)>;

pub fn config(pairs: &[(&str, &str)]) -> Config {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An allowlist with just the test broker's address and port.
pub fn allow_broker() -> Allowlist {
    allow_servers(&broker())
}

/// An allowlist with exactly the address and port of each of `servers`.
pub fn allow_servers(servers: &str) -> Allowlist {
    let mut a = Allowlist::default();
    a.allow_servers(servers).expect("server addresses");
    a
}

pub async fn source(allow: &Allowlist) -> Source {
    runtime()
        .instantiate("test/source", allow, &Limits::default())
        .await
        .expect("instantiate")
        .into_source()
}

pub async fn destination(allow: &Allowlist) -> Destination {
    runtime()
        .instantiate("test/destination", allow, &Limits::default())
        .await
        .expect("instantiate")
        .into_destination()
}

/// Creates a topic on the test broker with a name no other test uses.
pub fn new_topic(prefix: &str, partitions: i32) -> String {
    new_topic_at(&broker(), prefix, partitions)
}

/// `<prefix>-<pid>-<n>`: a name (of a topic) no other test uses.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a topic through `servers` with a name no other test uses.
pub fn new_topic_at(servers: &str, prefix: &str, partitions: i32) -> String {
    new_topic_secured(servers, Security::default(), prefix, partitions)
}

/// Creates a topic through `servers`, reached with `security` (the connector's own client,
/// natively), with a name no other test uses.
pub fn new_topic_secured(servers: &str, security: Security, prefix: &str, partitions: i32) -> String {
    let name = unique_name(prefix);
    let client = ClientConfig {
        servers: vec![parse_server(servers).expect("broker address")],
        client_id: "tests".into(),
        security,
    };
    let mut cluster =
        Cluster::connect(client.options(Duration::from_secs(10))).expect("connect to the broker");
    cluster.create_topic(&name, partitions).expect("create topic");
    name
}

pub fn metadata_value<'a>(r: &'a wit::Record, key: &str) -> Option<&'a str> {
    r.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Reads until `n` records arrived or `timeout` passed.
pub async fn read_n(src: &mut Source, n: usize, timeout: Duration) -> Vec<wit::Record> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(src.read((n - out.len()) as u32, 500).await.expect("read"));
    }
    out
}

/// How often the waits below look at their condition: often enough not to slow a test down,
/// seldom enough not to take the CPU from what is awaited on a loaded machine.
const POLL: Duration = Duration::from_millis(5);

/// Waits until `cond` holds, looking every few milliseconds, for at most `limit`: whether it
/// held. For what no event announces (a proxy's counters, another process's state); give it
/// a generous `limit` and fail naming what was awaited and what was seen.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    wait_for(limit, async || cond().then_some(())).await.is_some()
}

/// Calls `probe` every few milliseconds until it finds something, for at most `limit`: what
/// it found, or `None` when the time was up.
pub async fn wait_for<T>(limit: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // The polling interval: nothing is expected to happen in it.
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for code outside an async runtime: blocks the thread between looks.
pub fn wait_until_blocking(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // The polling interval: nothing is expected to happen in it.
        std::thread::sleep(POLL);
    }
}

/// The connector's error behind an `anyhow::Error`, if it is one.
pub fn guest_error(e: &anyhow::Error) -> &wit::Error {
    &e.downcast_ref::<connector_host::GuestError>()
        .unwrap_or_else(|| panic!("not a connector error: {e:#}"))
        .0
}

/// A record with raw or structured key and value and the given metadata.
pub fn record(key: Option<wit::Data>, after: Option<wit::Data>, metadata: &[(&str, &str)]) -> wit::Record {
    wit::Record {
        position: vec![],
        operation: wit::Operation::Create,
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        key,
        payload: wit::Change { before: None, after },
    }
}

/// The bytes Kafka holds for a key or value.
pub fn bytes(d: &Option<wit::Data>) -> Option<Vec<u8>> {
    d.as_ref().map(|d| match d {
        wit::Data::Raw(b) => b.clone(),
        wit::Data::Structured(s) => s.as_bytes().to_vec(),
    })
}

/// A destination opened on `servers` with `extra` settings (`topic` among them, if any).
pub async fn open_destination_at(servers: &str, extra: &[(&str, &str)]) -> Destination {
    let mut dst = destination(&allow_servers(servers)).await;
    let mut cfg = config(&[("servers", servers)]);
    cfg.extend(config(extra));
    dst.open(&cfg).await.expect("open destination");
    dst
}

/// A destination on the test broker writing to `topic`.
pub async fn open_destination(topic: &str, extra: &[(&str, &str)]) -> Destination {
    let mut cfg = vec![("topic", topic)];
    cfg.extend_from_slice(extra);
    open_destination_at(&broker(), &cfg).await
}

/// A source on `servers` reading `topic`.
pub async fn open_source_at(servers: &str, topic: &str, from_beginning: bool) -> Source {
    let mut src = source(&allow_servers(servers)).await;
    let cfg = config(&[
        ("servers", servers),
        ("topic", topic),
        ("readFromBeginning", &from_beginning.to_string()),
    ]);
    src.open(&cfg, None).await.expect("open source");
    src
}

/// A source on the test broker reading `topic`.
pub async fn open_source(topic: &str, from_beginning: bool) -> Source {
    open_source_at(&broker(), topic, from_beginning).await
}
