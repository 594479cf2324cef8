//! The cluster as this client sees it: bootstrap, brokers and partition leaders from
//! Metadata, and one lazily opened connection per broker.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, MetadataRequest, MetadataResponse, TopicName,
    create_topics_request::CreatableTopic, metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::StrBytes;

use super::ClientOptions;
use crate::error::{Error, Result};
use crate::kafka::network::connection::Connection;
use crate::kafka::network::poll;
use crate::kafka::protocol::errors;

/// Leaders of one topic's partitions, indexed by partition number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    /// `leaders[p]` is the node id leading partition `p` (-1 while there is none).
    pub leaders: Vec<i32>,
}

/// Connection ids above this are coordinator connections (see `coordinator_connection`).
const COORDINATOR_IDS: i32 = i32::MAX / 2;

/// The connection id for talking to node `node` as a group coordinator: a connection of
/// its own, as the Java client keeps, so group requests (heartbeats, commits) never wait
/// behind a long-poll Fetch on the same socket (a broker answers one connection's
/// requests in order).
pub fn coordinator_connection(node: i32) -> i32 {
    i32::MAX - node.clamp(0, COORDINATOR_IDS - 1)
}

pub struct Cluster {
    options: ClientOptions,
    brokers: BTreeMap<i32, String>,
    topics: HashMap<String, TopicMeta>,
    conns: BTreeMap<i32, Connection>,
    /// The connection Metadata goes over: to a bootstrap server at first.
    any: Option<Connection>,
}

impl Cluster {
    /// Connects to the first reachable bootstrap server and learns the brokers.
    pub fn connect(options: ClientOptions) -> Result<Self> {
        let mut cluster = Cluster {
            options,
            brokers: BTreeMap::new(),
            topics: HashMap::new(),
            conns: BTreeMap::new(),
            any: None,
        };
        cluster.refresh(&[])?;
        Ok(cluster)
    }

    /// When a request sent now should have its answer.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.options.request_timeout
    }

    /// A connection for cluster-wide requests (Metadata, CreateTopics): the last one that
    /// worked, else each bootstrap server and known broker in turn.
    pub fn any(&mut self) -> Result<&mut Connection> {
        if self.any.as_ref().is_some_and(|c| c.broken().is_none()) {
            return Ok(self.any.as_mut().expect("checked above"));
        }
        let candidates: Vec<String> = self
            .options
            .bootstrap
            .iter()
            .cloned()
            .chain(self.brokers.values().cloned())
            .collect();
        let mut errors = Vec::new();
        for addr in candidates {
            match Connection::open(&addr, &self.options.client_id, self.deadline()) {
                Ok(conn) => return Ok(self.any.insert(conn)),
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(Error::Connection(format!(
            "no broker reachable: {}",
            errors.join("; ")
        )))
    }

    /// Fetches Metadata for `topics` (and the broker list) and updates the cache.
    pub fn refresh(&mut self, topics: &[&str]) -> Result<()> {
        let deadline = self.deadline();
        let conn = self.any()?;
        let version = conn.version::<MetadataRequest>()?;
        let request_topics = topics
            .iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
            .collect();
        let req = MetadataRequest::default()
            .with_topics(Some(request_topics))
            .with_allow_auto_topic_creation(false);
        let resp = conn.request_at(&req, version, deadline)?;
        self.apply(resp);
        Ok(())
    }

    fn apply(&mut self, resp: MetadataResponse) {
        let mut brokers: BTreeMap<i32, String> = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, broker_addr(&b.host, b.port)))
            .collect();
        // Coordinator connections are learnt from FindCoordinator, not from Metadata.
        for (id, addr) in &self.brokers {
            if *id > COORDINATOR_IDS {
                brokers.insert(*id, addr.clone());
            }
        }
        self.brokers = brokers;
        // A broker whose address changed gets a new connection on next use.
        let brokers = &self.brokers;
        self.conns
            .retain(|id, c| brokers.get(id).is_some_and(|a| a == c.addr()));
        for t in resp.topics {
            let Some(name) = t.name.map(|n| n.0.to_string()) else {
                continue;
            };
            if t.error_code != 0 {
                self.topics.remove(&name);
                continue;
            }
            let count = t
                .partitions
                .iter()
                .map(|p| p.partition_index + 1)
                .max()
                .unwrap_or(0);
            let mut leaders = vec![-1; count.max(0) as usize];
            for p in &t.partitions {
                if p.partition_index >= 0 {
                    leaders[p.partition_index as usize] = p.leader_id.0;
                }
            }
            self.topics.insert(name.clone(), TopicMeta { name, leaders });
        }
    }

    /// The topic's partitions and leaders, fetching Metadata if it is not known yet.
    /// An unknown topic is an error naming it.
    pub fn topic(&mut self, name: &str) -> Result<TopicMeta> {
        if let Some(t) = self.topics.get(name) {
            return Ok(t.clone());
        }
        self.refresh(&[name])?;
        self.topics.get(name).cloned().ok_or_else(|| {
            errors::kafka_error(
                ResponseError::UnknownTopicOrPartition,
                &format!("topic \"{name}\""),
            )
        })
    }

    /// The connection to broker `node`, opened (or reopened after a failure) on demand.
    pub fn broker(&mut self, node: i32) -> Result<&mut Connection> {
        if self.conns.get(&node).is_some_and(|c| c.broken().is_some()) {
            self.conns.remove(&node);
        }
        if !self.conns.contains_key(&node) {
            let addr =
                self.brokers.get(&node).cloned().ok_or_else(|| {
                    Error::Connection(format!("broker {node} is not in the cluster metadata"))
                })?;
            let conn = Connection::open(&addr, &self.options.client_id, self.deadline())?;
            self.conns.insert(node, conn);
        }
        Ok(self.conns.get_mut(&node).expect("inserted above"))
    }

    /// Learns a broker's address from outside Metadata (a FindCoordinator answer).
    pub fn add_broker(&mut self, node: i32, host: &str, port: i32) {
        let addr = broker_addr(&StrBytes::from_string(host.to_string()), port);
        if self.brokers.get(&node) != Some(&addr) {
            self.conns.remove(&node);
            self.brokers.insert(node, addr);
        }
    }

    /// The open connection to `node`, if any (without connecting).
    pub fn connection(&mut self, node: i32) -> Option<&mut Connection> {
        self.conns.get_mut(&node)
    }

    /// Blocks until a connection with work in flight or queued has progress, or `deadline`.
    pub fn wait(&mut self, deadline: Instant) -> Result<()> {
        let busy: Vec<i32> = self
            .conns
            .iter()
            .filter(|(_, c)| c.broken().is_none() && (c.in_flight() > 0 || c.interest().write))
            .map(|(id, _)| *id)
            .collect();
        if busy.is_empty() {
            poll::sleep(deadline.saturating_duration_since(Instant::now()));
            return Ok(());
        }
        let mut interests: Vec<_> = busy.iter().map(|id| self.conns[id].interest()).collect();
        poll::wait(&mut interests, deadline).map_err(|e| Error::Connection(format!("poll: {e}")))?;
        for (id, ready) in busy.iter().zip(interests) {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.on_ready(ready);
            }
        }
        Ok(())
    }

    /// Whether any connection still has request bytes to put on the wire.
    pub fn has_unsent(&self) -> bool {
        self.conns
            .values()
            .any(|c| c.broken().is_none() && c.interest().write)
    }

    /// Creates a topic (used by tooling and tests; connectors never create topics).
    pub fn create_topic(&mut self, name: &str, partitions: i32) -> Result<()> {
        let deadline = self.deadline();
        let timeout_ms = self.options.request_timeout.as_millis().min(i32::MAX as u128) as i32;
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(timeout_ms)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic_name(name))
                    .with_num_partitions(partitions)
                    .with_replication_factor(-1),
            ]);
        let resp = self.any()?.request(&req, deadline)?;
        for t in resp.topics {
            errors::check(t.error_code, &format!("CreateTopics \"{name}\""))?;
        }
        self.refresh(&[name])
    }

    /// Closes every connection.
    pub fn close(&mut self) {
        self.conns.clear();
        self.any = None;
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn broker_addr(host: &StrBytes, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub fn broker_id(node: i32) -> BrokerId {
    BrokerId(node)
}
