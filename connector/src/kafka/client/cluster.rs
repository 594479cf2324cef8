//! The cluster as this client sees it: bootstrap, brokers and partition leaders from
//! Metadata, and lazily opened connections, keyed by what they are for (`ConnKey`).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    BrokerId, MetadataRequest, MetadataResponse, TopicName, metadata_request::MetadataRequestTopic,
    metadata_response::MetadataResponseTopic,
};
use kafka_protocol::protocol::StrBytes;

use super::{ClientOptions, topics};
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

/// A connection to a node, by what it is for. A node that coordinates a group gets a
/// connection of its own for the group's requests, as the Java client keeps, so a
/// heartbeat or commit never waits behind a long-poll Fetch on the same socket (a broker
/// answers one connection's requests in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConnKey {
    /// The node as partition leader: Produce, Fetch, ListOffsets.
    Broker(i32),
    /// The node as group coordinator: the group's requests.
    Coordinator(i32),
}

pub struct Cluster {
    options: ClientOptions,
    /// Broker addresses by node id, from Metadata.
    brokers: BTreeMap<i32, String>,
    /// Coordinator addresses by node id, from FindCoordinator.
    coordinators: BTreeMap<i32, String>,
    topics: HashMap<String, TopicMeta>,
    /// The error code Metadata last gave for a topic it did not describe: an unknown topic
    /// (retriable) is not one the client may not see (29 TOPIC_AUTHORIZATION_FAILED, final).
    topic_errors: HashMap<String, i16>,
    conns: BTreeMap<ConnKey, Connection>,
    /// The connection for cluster-wide requests (Metadata, FindCoordinator...): to a
    /// bootstrap server at first.
    metadata: Option<Connection>,
}

impl Cluster {
    /// Connects to the first reachable bootstrap server and learns the brokers.
    pub fn connect(options: ClientOptions) -> Result<Self> {
        let mut cluster = Cluster::new(options);
        cluster.refresh(&[])?;
        Ok(cluster)
    }

    fn new(options: ClientOptions) -> Self {
        Cluster {
            options,
            brokers: BTreeMap::new(),
            coordinators: BTreeMap::new(),
            topics: HashMap::new(),
            topic_errors: HashMap::new(),
            conns: BTreeMap::new(),
            metadata: None,
        }
    }

    /// When a request sent now should have its answer.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.options.request_timeout
    }

    /// The connection for cluster-wide requests (Metadata, FindCoordinator, CreateTopics,
    /// InitProducerId): the last one that worked, else each bootstrap server and known
    /// broker in turn.
    pub fn metadata_connection(&mut self) -> Result<&mut Connection> {
        if self.metadata.as_ref().is_some_and(|c| c.broken().is_none()) {
            return Ok(self.metadata.as_mut().expect("checked above"));
        }
        let candidates: Vec<String> = self
            .options
            .bootstrap
            .iter()
            .cloned()
            .chain(self.brokers.values().cloned())
            .collect();
        let (mut errors, mut refused) = (Vec::new(), Vec::new());
        for addr in candidates {
            match Connection::open(
                &addr,
                &self.options.client_id,
                &self.options.security,
                self.deadline(),
            ) {
                Ok(conn) => return Ok(self.metadata.insert(conn)),
                // The host refuses this address, not others: try them.
                Err(Error::NotPermitted(m)) => refused.push(m),
                // Refused credentials or certificates fail the same way at every broker
                // and on every retry: said at once, not retried into a storm.
                Err(e) if e.is_refusal() => return Err(e),
                Err(e) => errors.push(e.to_string()),
            }
        }
        // Only refusals: no retry can reach a broker until the operator allows one.
        if errors.is_empty() && !refused.is_empty() {
            return Err(Error::NotPermitted(refused.join("; ")));
        }
        errors.extend(refused.into_iter().map(|m| format!("not permitted: {m}")));
        Err(Error::Connection(format!(
            "no broker reachable: {}",
            errors.join("; ")
        )))
    }

    /// Fetches Metadata for `topics` (and the broker list) and updates the cache.
    pub fn refresh(&mut self, topics: &[&str]) -> Result<()> {
        let resp = self.metadata(topics, self.deadline())?;
        self.apply(resp)
    }

    /// Fetches Metadata for one topic, answered by `deadline` at the latest, updates the
    /// cache, and returns the topic's error code in the answer (0: known; 3
    /// UNKNOWN_TOPIC_OR_PARTITION when not named at all).
    pub fn topic_status(&mut self, name: &str, deadline: Instant) -> Result<i16> {
        let deadline = deadline.min(self.deadline());
        let resp = self.metadata(&[name], deadline)?;
        let code = resp
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
            .map_or(ResponseError::UnknownTopicOrPartition.code(), |t| t.error_code);
        self.apply(resp)?;
        Ok(code)
    }

    fn metadata(&mut self, topics: &[&str], deadline: Instant) -> Result<MetadataResponse> {
        let conn = self.metadata_connection()?;
        let version = conn.version::<MetadataRequest>()?;
        let request_topics = topics
            .iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
            .collect();
        let req = MetadataRequest::default()
            .with_topics(Some(request_topics))
            .with_allow_auto_topic_creation(false);
        conn.request_at(&req, version, deadline)
    }

    fn apply(&mut self, resp: MetadataResponse) -> Result<()> {
        // Checked before anything changes: a bad answer leaves the cache as it was.
        let mut topics = Vec::new();
        for t in &resp.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            let leaders = if t.error_code == 0 {
                Some(leaders(&name, t)?)
            } else {
                None
            };
            topics.push((name, leaders, t.error_code));
        }
        self.brokers = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, broker_addr(&b.host, b.port)))
            .collect();
        // A broker whose address changed gets a new connection on next use.
        let (brokers, coordinators) = (&self.brokers, &self.coordinators);
        self.conns
            .retain(|key, c| addr(brokers, coordinators, *key).is_some_and(|a| a == c.addr()));
        for (name, leaders, code) in topics {
            match leaders {
                Some(leaders) => {
                    self.topic_errors.remove(&name);
                    self.topics.insert(name.clone(), TopicMeta { name, leaders });
                }
                None => {
                    self.topics.remove(&name);
                    self.topic_errors.insert(name, code);
                }
            }
        }
        Ok(())
    }

    /// The topic's partitions and leaders, fetching Metadata if it is not known yet.
    /// An unknown topic is an error naming it.
    pub fn topic(&mut self, name: &str) -> Result<TopicMeta> {
        if let Some(t) = self.topics.get(name) {
            return Ok(t.clone());
        }
        self.refresh(&[name])?;
        self.topics.get(name).cloned().ok_or_else(|| self.missing(name))
    }

    /// Why Metadata did not describe `name`: the code it gave (an authorization failure is
    /// final), else an unknown topic.
    fn missing(&self, name: &str) -> Error {
        let context = format!("topic \"{name}\"");
        match self
            .topic_errors
            .get(name)
            .and_then(|c| ResponseError::try_from_code(*c))
        {
            Some(e) => errors::kafka_error(e, &context),
            None => errors::kafka_error(ResponseError::UnknownTopicOrPartition, &context),
        }
    }

    /// The topic's partitions and leaders as last seen, without asking the cluster.
    pub fn known(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    /// The connection to broker `node` as partition leader, opened on demand.
    pub fn broker(&mut self, node: i32) -> Result<&mut Connection> {
        self.connection(ConnKey::Broker(node))
    }

    /// The connection to `node` as group coordinator, opened on demand.
    pub fn coordinator(&mut self, node: i32) -> Result<&mut Connection> {
        self.connection(ConnKey::Coordinator(node))
    }

    /// The connection for `key`, opened (or reopened after a failure) on demand.
    pub fn connection(&mut self, key: ConnKey) -> Result<&mut Connection> {
        if self.conns.get(&key).is_some_and(|c| c.broken().is_some()) {
            self.conns.remove(&key);
        }
        if !self.conns.contains_key(&key) {
            let addr = addr(&self.brokers, &self.coordinators, key)
                .cloned()
                .ok_or_else(|| no_address(key))?;
            let conn = Connection::open(
                &addr,
                &self.options.client_id,
                &self.options.security,
                self.deadline(),
            )?;
            self.conns.insert(key, conn);
        }
        Ok(self.conns.get_mut(&key).expect("inserted above"))
    }

    /// Learns a coordinator's address (from a FindCoordinator answer).
    pub fn add_coordinator(&mut self, node: i32, host: &str, port: i32) {
        let addr = broker_addr(&StrBytes::from_string(host.to_string()), port);
        if self.coordinators.get(&node) != Some(&addr) {
            self.conns.remove(&ConnKey::Coordinator(node));
            self.coordinators.insert(node, addr);
        }
    }

    /// The open connection for `key`, if any (without connecting).
    pub fn existing(&mut self, key: ConnKey) -> Option<&mut Connection> {
        self.conns.get_mut(&key)
    }

    /// Blocks until a connection with work in flight or queued has progress, a throttle
    /// holding queued requests passes, or `deadline`.
    pub fn wait(&mut self, deadline: Instant) -> Result<()> {
        let busy: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.broken().is_none() && (c.in_flight() > 0 || c.has_unsent()))
            .map(|(key, _)| *key)
            .collect();
        if busy.is_empty() {
            poll::sleep(deadline.saturating_duration_since(Instant::now()));
            return Ok(());
        }
        let mut interests: Vec<_> = busy.iter().map(|key| self.conns[key].interest()).collect();
        let wake = busy.iter().filter_map(|key| self.conns[key].wake_at()).min();
        let until = wake.map_or(deadline, |t| t.min(deadline));
        poll::wait(&mut interests, until).map_err(|e| crate::error::io("poll", &e))?;
        for (key, ready) in busy.iter().zip(interests) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.on_ready(ready);
            }
        }
        Ok(())
    }

    /// Whether any connection still has request bytes to put on the wire.
    pub fn has_unsent(&self) -> bool {
        self.conns
            .values()
            .any(|c| c.broken().is_none() && c.has_unsent())
    }

    /// Until when the broker behind `key` asked not to be sent to, if that is still ahead.
    pub fn throttled_until(&self, key: ConnKey) -> Option<Instant> {
        self.conns.get(&key).and_then(Connection::throttled_until)
    }

    /// Creates a topic with `partitions` and the broker's default replication factor, and
    /// waits until every partition has a leader (for tooling and tests).
    pub fn create_topic(&mut self, name: &str, partitions: i32) -> Result<()> {
        let deadline = self.deadline();
        let spec = topics::NewTopic {
            partitions,
            replication_factor: topics::BROKER_DEFAULT as i16,
        };
        topics::create(self, name, spec, deadline)?;
        topics::await_ready(self, name, deadline).map(drop)
    }

    /// Closes every connection.
    pub fn close(&mut self) {
        self.conns.clear();
        self.metadata = None;
    }
}

/// Where `key` connects: a broker's address from Metadata, a coordinator's from
/// FindCoordinator.
fn addr<'a>(
    brokers: &'a BTreeMap<i32, String>,
    coordinators: &'a BTreeMap<i32, String>,
    key: ConnKey,
) -> Option<&'a String> {
    match key {
        ConnKey::Broker(node) => brokers.get(&node),
        ConnKey::Coordinator(node) => coordinators.get(&node),
    }
}

/// Each partition's leader, by index. Indices come from the broker: each must be one of
/// the partitions it lists (0 up to their count), or the vector they size could take
/// gigabytes.
pub fn leaders(name: &str, t: &MetadataResponseTopic) -> Result<Vec<i32>> {
    let mut leaders = vec![-1; t.partitions.len()];
    for p in &t.partitions {
        let slot = usize::try_from(p.partition_index)
            .ok()
            .and_then(|i| leaders.get_mut(i));
        let Some(slot) = slot else {
            return Err(Error::CorruptData(format!(
                "Metadata lists partition {} of topic \"{name}\", which has {} partitions",
                p.partition_index,
                t.partitions.len()
            )));
        };
        *slot = p.leader_id.0;
    }
    Ok(leaders)
}

fn no_address(key: ConnKey) -> Error {
    Error::Connection(match key {
        ConnKey::Broker(node) => format!("broker {node} is not in the cluster metadata"),
        ConnKey::Coordinator(node) => format!("coordinator {node} has no known address"),
    })
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::messages::metadata_response::MetadataResponsePartition;

    use super::*;
    use crate::kafka::network::Security;
    use crate::kafka::network::scripted::{self, respond};

    /// A broker whose Metadata lists `topic` with partitions of these indices.
    fn listing(indices: &'static [i32]) -> String {
        scripted::broker(&[ApiKey::Metadata], 12, move |s, asked| {
            let partitions = indices
                .iter()
                .map(|&i| MetadataResponsePartition::default().with_partition_index(i))
                .collect();
            let topic = MetadataResponseTopic::default()
                .with_name(Some(topic_name("topic")))
                .with_partitions(partitions);
            respond(s, asked, &MetadataResponse::default().with_topics(vec![topic]))
        })
    }

    fn connect(addr: String) -> Result<Cluster> {
        Cluster::connect(ClientOptions {
            bootstrap: vec![addr],
            client_id: "test".into(),
            request_timeout: Duration::from_secs(10),
            security: Security::default(),
        })
    }

    #[test]
    fn partition_indices_beyond_the_listed_count_are_refused_naming_the_topic() {
        for indices in [&[0, i32::MAX][..], &[0, 2], &[-1, 0], &[i32::MAX - 1]] {
            let Err(err) = connect(listing(indices)) else {
                panic!("{indices:?} accepted");
            };
            assert!(
                matches!(&err, Error::CorruptData(m) if m.contains("\"topic\"")),
                "{indices:?}: {err}"
            );
        }
    }

    #[test]
    fn partitions_listed_in_any_order_get_their_leaders() {
        let mut cluster = connect(listing(&[2, 0, 1])).unwrap();
        assert_eq!(cluster.topic("topic").unwrap().leaders, [0, 0, 0]);
    }

    #[test]
    fn a_topic_the_client_may_not_see_is_a_final_error_not_an_unknown_topic() {
        let mut cluster = Cluster::new(ClientOptions {
            bootstrap: vec![],
            client_id: "t".into(),
            request_timeout: std::time::Duration::from_secs(1),
            security: Default::default(),
        });
        let topic = |name: &str, code: i16| {
            MetadataResponseTopic::default()
                .with_name(Some(topic_name(name)))
                .with_error_code(code)
        };
        let denied = ResponseError::TopicAuthorizationFailed.code();
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        cluster
            .apply(
                MetadataResponse::default()
                    .with_topics(vec![topic("secret", denied), topic("gone", unknown)]),
            )
            .unwrap();
        match cluster.missing("secret") {
            Error::Kafka {
                code: 29,
                retriable: false,
                message,
                ..
            } => assert!(message.contains("topic \"secret\""), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            cluster.missing("gone"),
            Error::Kafka {
                code: 3,
                retriable: true,
                ..
            }
        ));
        assert!(matches!(
            cluster.missing("never-asked"),
            Error::Kafka { code: 3, .. }
        ));
        // Described later: the old error is forgotten.
        cluster
            .apply(MetadataResponse::default().with_topics(vec![topic("secret", 0)]))
            .unwrap();
        assert!(matches!(cluster.missing("secret"), Error::Kafka { code: 3, .. }));
    }
}
