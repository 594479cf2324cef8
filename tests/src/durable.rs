//! A nisshi broker of one test's own whose data outlives its process: sqlite in a folder of
//! its own, behind a [`Proxy`] it advertises (as a [`crate::faults::PrivateBroker`] does), so
//! a test can cut connections, kill the broker with SIGKILL and start it again on the same
//! port and data while its clients keep the one address they were given.
//!
//! ```text
//! let mut b = DurableBroker::start();
//! let topic = b.new_topic("orders", 3);
//! // ... write through ("servers", &b.addr()) ...
//! b.kill();      // SIGKILL: no clean close of the database
//! b.restart();   // same port, same data
//! ```
//!
//! What nisshi keeps across a SIGKILL (see `tests/tests/durable.rs`): topics, every record
//! whose write it acknowledged, and the groups' committed offsets. sqlite takes a few tens of
//! thousands of records per second, a fraction of what the in-memory broker takes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kafka_connector::config::{ClientConfig, parse_server};
use kafka_connector::kafka::client::cluster::Cluster;
use kafka_connector::kafka::client::group::{GroupSettings, Membership};
use kafka_connector::kafka::client::offsets::list_offsets;
use kafka_connector::kafka::network::Security;

use crate::faults::{Proxy, free_port};
use crate::secure::{Nisshi, broker_dir};

/// How long the tests' own Kafka requests (topics, offsets) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A sqlite-backed nisshi on 127.0.0.1 behind its proxy; killed on drop, its folder removed.
pub struct DurableBroker {
    nisshi: Option<Nisshi>,
    dir: PathBuf,
    broker: SocketAddr,
    args: Vec<String>,
    proxy: Proxy,
    starts: u32,
}

impl DurableBroker {
    /// Starts the proxy, then the broker behind it with an empty database, and waits until
    /// it accepts connections.
    pub fn start() -> DurableBroker {
        let broker: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let proxy = Proxy::start(broker).expect("start the proxy");
        let args = vec![
            "--listener-url".to_string(),
            format!("tcp://{broker}"),
            "--advertised-listener-url".into(),
            format!("tcp://{}", proxy.addr()),
            // Relative to its working folder, which outlives each process.
            "--storage-engine".into(),
            "sqlite://nisshi.db".into(),
            "--group-initial-rebalance-delay".into(),
            "0s".into(),
        ];
        let mut b = DurableBroker {
            nisshi: None,
            dir: broker_dir("durable"),
            broker,
            args,
            proxy,
            starts: 0,
        };
        b.restart();
        b
    }

    /// Kills the broker with SIGKILL (no chance to close its database) and waits for its end.
    /// Clients see their connections end; new ones are refused until [`DurableBroker::restart`].
    pub fn kill(&mut self) {
        // Dropping a `Nisshi` kills it (SIGKILL) and reaps it.
        self.nisshi.take();
    }

    /// Starts the broker (again) on the same port and database; waits until it listens.
    pub fn restart(&mut self) {
        assert!(
            self.nisshi.is_none(),
            "restart: the broker is still running (kill it first)"
        );
        self.starts += 1;
        let log = format!("broker-{}.log", self.starts);
        self.nisshi = Some(Nisshi::start(&self.dir, &log, self.broker, &self.args));
    }

    /// The proxy's address, "127.0.0.1:P": what clients take as `servers`.
    pub fn addr(&self) -> String {
        self.proxy.addr().to_string()
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The broker's folder (its database, a log per start).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a topic (through the proxy) with a name no other test uses.
    pub fn new_topic(&self, prefix: &str, partitions: i32) -> String {
        crate::new_topic_at(&self.addr(), prefix, partitions)
    }

    /// The end offset of each of `topic`'s `partitions` (the next offset to be written).
    pub fn end_offsets(&self, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        let parts: Vec<i32> = (0..partitions).collect();
        list_offsets(&mut self.cluster(), topic, &parts, false).expect("ListOffsets")
    }

    /// `group`'s committed offset of each of `topic`'s `partitions` that has one, asked
    /// without joining the group.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        let mut membership = Membership::new(GroupSettings {
            group_id: group.into(),
            topics: vec![topic.into()],
            session_timeout: Duration::from_secs(30),
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(3),
        });
        let parts: Vec<_> = (0..partitions).map(|p| (topic.to_string(), p)).collect();
        let committed = membership
            .committed(&mut self.cluster(), &parts)
            .expect("OffsetFetch");
        committed.into_iter().map(|((_, p), o)| (p, o)).collect()
    }

    fn cluster(&self) -> Cluster {
        let client = ClientConfig {
            servers: vec![parse_server(&self.addr()).expect("the proxy's address")],
            client_id: "tests".into(),
            security: Security::default(),
        };
        Cluster::connect(client.options(REQUEST_TIMEOUT)).expect("connect to the durable broker")
    }
}

impl Drop for DurableBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
