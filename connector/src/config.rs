//! Configuration: one table of parameters drives both the specification the connector
//! publishes and the parsing of what a user wrote, so the two cannot drift.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use connector_format::duration;

use crate::error::{Error, Result};
use crate::kafka::client::ClientOptions;
use crate::kafka::client::topics::{self, NewTopic};
use crate::kafka::network::Security;
use crate::kafka::protocol::compression::Compression;
use crate::position::MAX_NAME;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Int,
    Float,
    Bool,
    Duration,
    List,
}

/// Which side of the connector a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Destination,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Source => "source",
            Role::Destination => "destination",
        })
    }
}

#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub description: &'static str,
    pub kind: ParamType,
    pub default: Option<&'static str>,
    pub required: bool,
    pub allowed: &'static [&'static str],
    pub roles: &'static [Role],
    /// A secret: hosts never print it, and no error repeats it.
    pub sensitive: bool,
}

const BOTH: &[Role] = &[Role::Source, Role::Destination];
const SOURCE: &[Role] = &[Role::Source];
const DESTINATION: &[Role] = &[Role::Destination];

pub const SERVERS: &str = "servers";
pub const TOPIC: &str = "topic";
pub const CLIENT_ID: &str = "clientID";
pub const ACKS: &str = "acks";
pub const DELIVERY_TIMEOUT: &str = "deliveryTimeout";
pub const READ_FROM_BEGINNING: &str = "readFromBeginning";
pub const COMPRESSION: &str = "compression";
pub const BATCH_BYTES: &str = "batchBytes";
pub const PARTITIONER: &str = "partitioner";
pub const PARTITION: &str = "partition";
pub const VALUE_FORMAT: &str = "valueFormat";
pub const HEADERS: &str = "headers";
pub const TOPICS: &str = "topics";
pub const GROUP_ID: &str = "groupID";
pub const COMMIT_OFFSETS_SIZE: &str = "commitOffsetsSize";
pub const COMMIT_OFFSETS_DELAY: &str = "commitOffsetsDelay";
pub const SESSION_TIMEOUT: &str = "sessionTimeout";
pub const REBALANCE_TIMEOUT: &str = "rebalanceTimeout";
pub const TLS_ENABLED: &str = "tls.enabled";
pub const CA_CERT: &str = "caCert";
pub const CLIENT_CERT: &str = "clientCert";
pub const CLIENT_KEY: &str = "clientKey";
pub const INSECURE_SKIP_VERIFY: &str = "insecureSkipVerify";
pub const SASL_MECHANISM: &str = "saslMechanism";
pub const SASL_USERNAME: &str = "saslUsername";
pub const SASL_PASSWORD: &str = "saslPassword";
pub const ALLOW_AUTO_TOPIC_CREATION: &str = "allowAutoTopicCreation";
pub const TOPIC_PARTITIONS: &str = "topicPartitions";
pub const TOPIC_REPLICATION_FACTOR: &str = "topicReplicationFactor";

mod security;

/// Every parameter the connector takes.
pub const PARAMS: &[Param] = &[
    Param {
        name: SERVERS,
        description: "Comma-separated list of bootstrap brokers (host:port) used to discover the cluster.",
        kind: ParamType::List,
        default: None,
        required: true,
        allowed: &[],
        roles: BOTH,
        sensitive: false,
    },
    Param {
        name: TOPIC,
        description: "A topic to read from (topic, topics or both).",
        kind: ParamType::String,
        default: None,
        required: false,
        allowed: &[],
        roles: SOURCE,
        sensitive: false,
    },
    Param {
        name: TOPICS,
        description: "Comma-separated list of topics to read from.",
        kind: ParamType::List,
        default: None,
        required: false,
        allowed: &[],
        roles: SOURCE,
        sensitive: false,
    },
    Param {
        name: GROUP_ID,
        description: "The consumer group; when empty, the one in the position, else a new one (kept in every record's position).",
        kind: ParamType::String,
        default: None,
        required: false,
        allowed: &[],
        roles: SOURCE,
        sensitive: false,
    },
    Param {
        name: COMMIT_OFFSETS_SIZE,
        description: "Commit acknowledged offsets once this many records were acked since the last commit.",
        kind: ParamType::Int,
        default: Some("1000"),
        required: false,
        allowed: &[],
        roles: SOURCE,
        sensitive: false,
    },
    Param {
        name: COMMIT_OFFSETS_DELAY,
        description: "Commit acknowledged offsets at least this often.",
        kind: ParamType::Duration,
        default: Some("5s"),
        required: false,
        allowed: &[],
        roles: SOURCE,
        sensitive: false,
    },
    Param {
        name: SESSION_TIMEOUT,
        description: "How long the group waits for a silent member before giving its partitions to others; the host must call the source more often than this.",
        kind: ParamType::Duration,
        default: Some("30s"),
        required: false,
        allowed: &[],
        roles: SOURCE,
        sensitive: false,
    },
    Param {
        name: REBALANCE_TIMEOUT,
        description: "How long a rebalance may wait for every member to rejoin.",
        kind: ParamType::Duration,
        default: Some("30s"),
        required: false,
        allowed: &[],
        roles: SOURCE,
        sensitive: false,
    },
    Param {
        name: TOPIC,
        description: "The topic to write to; when unset, each record's opencdc.collection metadata names its topic.",
        kind: ParamType::String,
        default: None,
        required: false,
        allowed: &[],
        roles: DESTINATION,
        sensitive: false,
    },
    Param {
        name: CLIENT_ID,
        description: "Client ID sent to the brokers with every request.",
        kind: ParamType::String,
        default: Some("conduit-connector-kafka"),
        required: false,
        allowed: &[],
        roles: BOTH,
        sensitive: false,
    },
    Param {
        name: TLS_ENABLED,
        description: "Connect to the brokers over TLS, verifying each under the name it advertises.",
        kind: ParamType::Bool,
        default: Some("false"),
        required: false,
        allowed: &[],
        roles: BOTH,
        sensitive: false,
    },
    Param {
        name: CA_CERT,
        description: "PEM text of CA certificates trusted besides the public roots (tls.enabled).",
        kind: ParamType::String,
        default: None,
        required: false,
        allowed: &[],
        roles: BOTH,
        sensitive: false,
    },
    Param {
        name: CLIENT_CERT,
        description: "PEM text of the client certificate (chain) for mutual TLS; needs clientKey.",
        kind: ParamType::String,
        default: None,
        required: false,
        allowed: &[],
        roles: BOTH,
        sensitive: false,
    },
    Param {
        name: CLIENT_KEY,
        description: "PEM text of clientCert's private key (PKCS#8, PKCS#1 or SEC1).",
        kind: ParamType::String,
        default: None,
        required: false,
        allowed: &[],
        roles: BOTH,
        sensitive: true,
    },
    Param {
        name: INSECURE_SKIP_VERIFY,
        description: "Accept any broker certificate and name (tls.enabled). For tests only: anyone on the path can read and change the traffic.",
        kind: ParamType::Bool,
        default: Some("false"),
        required: false,
        allowed: &[],
        roles: BOTH,
        sensitive: false,
    },
    Param {
        name: SASL_MECHANISM,
        description: "SASL mechanism to authenticate with: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty: none.",
        kind: ParamType::String,
        default: Some(""),
        required: false,
        allowed: &["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
        roles: BOTH,
        sensitive: false,
    },
    Param {
        name: SASL_USERNAME,
        description: "SASL user name (with saslMechanism and saslPassword).",
        kind: ParamType::String,
        default: None,
        required: false,
        allowed: &[],
        roles: BOTH,
        sensitive: false,
    },
    Param {
        name: SASL_PASSWORD,
        description: "SASL password (with saslMechanism and saslUsername).",
        kind: ParamType::String,
        default: None,
        required: false,
        allowed: &[],
        roles: BOTH,
        sensitive: true,
    },
    Param {
        name: ACKS,
        description: "Acknowledgments a write waits for: 0 (none), 1 (leader only), all (every in-sync replica).",
        kind: ParamType::String,
        default: Some("all"),
        required: false,
        allowed: &["0", "1", "all"],
        roles: DESTINATION,
        sensitive: false,
    },
    Param {
        name: DELIVERY_TIMEOUT,
        description: "How long a write may take, retries included, before it fails (e.g. 10s, 1m30s).",
        kind: ParamType::Duration,
        default: Some("10s"),
        required: false,
        allowed: &[],
        roles: DESTINATION,
        sensitive: false,
    },
    Param {
        name: COMPRESSION,
        description: "Compression of the record batches written.",
        kind: ParamType::String,
        default: Some("snappy"),
        required: false,
        allowed: &["none", "gzip", "snappy", "lz4", "zstd"],
        roles: DESTINATION,
        sensitive: false,
    },
    Param {
        name: BATCH_BYTES,
        description: "Largest record batch sent to one partition in one request, in bytes; a single record larger than this is refused.",
        kind: ParamType::Int,
        default: Some("1000012"),
        required: false,
        allowed: &[],
        roles: DESTINATION,
        sensitive: false,
    },
    Param {
        name: PARTITIONER,
        description: "How records find their partition: murmur2 (of the key, like the Java client; records without a key spread), metadata (the kafka.partition metadata, else murmur2), fixed (the partition parameter).",
        kind: ParamType::String,
        default: Some("murmur2"),
        required: false,
        allowed: &["murmur2", "metadata", "fixed"],
        roles: DESTINATION,
        sensitive: false,
    },
    Param {
        name: PARTITION,
        description: "The partition every record goes to with partitioner fixed.",
        kind: ParamType::Int,
        default: None,
        required: false,
        allowed: &[],
        roles: DESTINATION,
        sensitive: false,
    },
    Param {
        name: VALUE_FORMAT,
        description: "What the Kafka value holds: raw (payload.after as it is) or opencdc (the whole record as OpenCDC JSON).",
        kind: ParamType::String,
        default: Some("raw"),
        required: false,
        allowed: &["raw", "opencdc"],
        roles: DESTINATION,
        sensitive: false,
    },
    Param {
        name: HEADERS,
        description: "Which metadata entries become Kafka headers: all, none, or a comma-separated list of metadata keys.",
        kind: ParamType::List,
        default: Some("all"),
        required: false,
        allowed: &[],
        roles: DESTINATION,
        sensitive: false,
    },
    Param {
        name: ALLOW_AUTO_TOPIC_CREATION,
        description: "Create a topic that does not exist (the topic parameter at open, a record's opencdc.collection when first written to), with topicPartitions and topicReplicationFactor; false: a missing topic is an error.",
        kind: ParamType::Bool,
        default: Some("true"),
        required: false,
        allowed: &[],
        roles: DESTINATION,
        sensitive: false,
    },
    Param {
        name: TOPIC_PARTITIONS,
        description: "Partitions of a topic the destination creates, at most 10000; -1: the broker's default (num.partitions).",
        kind: ParamType::Int,
        default: Some("-1"),
        required: false,
        allowed: &[],
        roles: DESTINATION,
        sensitive: false,
    },
    Param {
        name: TOPIC_REPLICATION_FACTOR,
        description: "Replicas of each partition of a topic the destination creates; -1: the broker's default (default.replication.factor).",
        kind: ParamType::Int,
        default: Some("-1"),
        required: false,
        allowed: &[],
        roles: DESTINATION,
        sensitive: false,
    },
    Param {
        name: READ_FROM_BEGINNING,
        description: "With no position: true reads the topic from the beginning, false only new records.",
        kind: ParamType::Bool,
        default: Some("false"),
        required: false,
        allowed: &[],
        roles: SOURCE,
        sensitive: false,
    },
];

/// The parameters of one side, in table order.
pub fn params(role: Role) -> impl Iterator<Item = &'static Param> {
    PARAMS.iter().filter(move |p| p.roles.contains(&role))
}

/// A broker address as written in `servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The `acks` setting is the producer's own.
pub use crate::kafka::client::Acks;

/// How the destination picks a record's partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioner {
    /// murmur2 of the key; records without a key spread.
    Murmur2,
    /// The record's `kafka.partition` metadata, else as `Murmur2`.
    Metadata,
    Fixed(i32),
}

/// What the destination writes as the Kafka value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// `payload.after` as it is.
    Raw,
    /// The whole record as OpenCDC JSON.
    OpenCdc,
}

/// Which metadata entries the destination writes as headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSelection {
    All,
    None,
    Keys(Vec<String>),
}

impl HeaderSelection {
    pub fn includes(&self, key: &str) -> bool {
        match self {
            HeaderSelection::All => true,
            HeaderSelection::None => false,
            HeaderSelection::Keys(keys) => keys.iter().any(|k| k == key),
        }
    }
}

/// Settings every Kafka connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub servers: Vec<Server>,
    pub client_id: String,
    pub security: Security,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub client: ClientConfig,
    /// `topic` and `topics` together, in order, without repeats.
    pub topics: Vec<String>,
    pub group_id: Option<String>,
    pub read_from_beginning: bool,
    pub commit_size: usize,
    pub commit_delay: Duration,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationConfig {
    pub client: ClientConfig,
    /// None: each record's `opencdc.collection` names its topic.
    pub topic: Option<String>,
    pub acks: Acks,
    pub delivery_timeout: Duration,
    pub compression: Compression,
    pub batch_bytes: usize,
    pub partitioner: Partitioner,
    pub value_format: ValueFormat,
    pub headers: HeaderSelection,
    /// How a missing topic is created; None: it is an error.
    pub topic_creation: Option<NewTopic>,
}

impl SourceConfig {
    pub fn parse(raw: &[(String, String)]) -> Result<Self> {
        let v = Values::new(Role::Source, raw)?;
        let mut topics: Vec<String> = split_list(&v.string(TOPIC)?);
        for t in v.list(TOPICS)? {
            if !topics.contains(&t) {
                topics.push(t);
            }
        }
        if topics.is_empty() {
            return Err(Error::config(TOPIC, "topic missing"));
        }
        if let Some(why) = topics.iter().find_map(|t| topics::name_problem(t)) {
            return Err(Error::config(TOPIC, why));
        }
        let group_id = Some(v.string(GROUP_ID)?).filter(|g| !g.is_empty());
        if group_id.as_ref().is_some_and(|g| g.len() > MAX_NAME) {
            return Err(Error::config(GROUP_ID, format!("longer than {MAX_NAME} bytes")));
        }
        let commit_size = v.int(COMMIT_OFFSETS_SIZE)?;
        if commit_size < 1 {
            return Err(Error::config(
                COMMIT_OFFSETS_SIZE,
                format!("{commit_size} is not a positive count"),
            ));
        }
        let session_timeout = v.duration(SESSION_TIMEOUT)?;
        if session_timeout < Duration::from_secs(1) {
            return Err(Error::config(SESSION_TIMEOUT, "must be at least 1s"));
        }
        Ok(SourceConfig {
            client: ClientConfig::from_values(&v)?,
            topics,
            group_id,
            read_from_beginning: v.bool(READ_FROM_BEGINNING)?,
            commit_size: commit_size as usize,
            commit_delay: v.duration(COMMIT_OFFSETS_DELAY)?,
            session_timeout,
            rebalance_timeout: v.duration(REBALANCE_TIMEOUT)?,
        })
    }
}

impl DestinationConfig {
    pub fn parse(raw: &[(String, String)]) -> Result<Self> {
        let v = Values::new(Role::Destination, raw)?;
        let acks = match v.string(ACKS)?.as_str() {
            "0" => Acks::None,
            "1" => Acks::Leader,
            _ => Acks::All,
        };
        let topic = Some(v.string(TOPIC)?).filter(|t| !t.is_empty());
        if let Some(why) = topic.as_deref().and_then(topics::name_problem) {
            return Err(Error::config(TOPIC, why));
        }
        let compression = crate::kafka::protocol::compression::parse(&v.string(COMPRESSION)?)
            .ok_or_else(|| Error::config(COMPRESSION, "unknown codec"))?;
        let batch_bytes = v.int(BATCH_BYTES)?;
        if !(1..=i32::MAX as i64).contains(&batch_bytes) {
            return Err(Error::config(
                BATCH_BYTES,
                format!("{batch_bytes} is not a positive size"),
            ));
        }
        let partitioner = match v.string(PARTITIONER)?.as_str() {
            "metadata" => Partitioner::Metadata,
            "fixed" => match v.string(PARTITION)?.as_str() {
                "" => {
                    return Err(Error::config(
                        PARTITION,
                        "partition missing: partitioner fixed needs it",
                    ));
                }
                _ => Partitioner::Fixed(non_negative(PARTITION, v.int(PARTITION)?)?),
            },
            _ if !v.string(PARTITION)?.is_empty() => {
                return Err(Error::config(
                    PARTITION,
                    "partition is only used with partitioner fixed",
                ));
            }
            _ => Partitioner::Murmur2,
        };
        let value_format = match v.string(VALUE_FORMAT)?.as_str() {
            "opencdc" => ValueFormat::OpenCdc,
            _ => ValueFormat::Raw,
        };
        let headers = match v.list(HEADERS)?.as_slice() {
            [one] if one == "all" => HeaderSelection::All,
            [one] if one == "none" => HeaderSelection::None,
            keys => HeaderSelection::Keys(keys.to_vec()),
        };
        Ok(DestinationConfig {
            client: ClientConfig::from_values(&v)?,
            topic,
            acks,
            delivery_timeout: v.duration(DELIVERY_TIMEOUT)?,
            compression,
            batch_bytes: batch_bytes as usize,
            partitioner,
            value_format,
            headers,
            topic_creation: topic_creation(&v)?,
        })
    }
}

/// `allowAutoTopicCreation` with its counts: each -1 (the broker's default) or a count
/// Kafka takes; the counts only with creation on.
fn topic_creation(v: &Values) -> Result<Option<NewTopic>> {
    let counts = [TOPIC_PARTITIONS, TOPIC_REPLICATION_FACTOR];
    if !v.bool(ALLOW_AUTO_TOPIC_CREATION)? {
        return match counts.iter().find(|c| v.given_text(c).is_some()) {
            Some(c) => Err(Error::config(
                c,
                format!("{c} is only used with {ALLOW_AUTO_TOPIC_CREATION}=true"),
            )),
            None => Ok(None),
        };
    }
    let count = |name: &str, max: i64| {
        let n = v.int(name)?;
        match n {
            -1 => Ok(n),
            1.. if n <= max => Ok(n),
            _ => Err(Error::config(
                name,
                format!("{n} is not a count from 1 to {max}, or -1 for the broker's default"),
            )),
        }
    };
    Ok(Some(NewTopic {
        partitions: count(TOPIC_PARTITIONS, topics::MAX_PARTITIONS.into())? as i32,
        replication_factor: count(TOPIC_REPLICATION_FACTOR, i16::MAX.into())? as i16,
    }))
}

impl ClientConfig {
    /// The Kafka client's options for these settings; warns (once per open) when they
    /// send a password readably.
    pub fn options(&self, request_timeout: Duration) -> ClientOptions {
        if let Some(why) = security::exposed(&self.security) {
            crate::log::warn(why);
        }
        ClientOptions {
            bootstrap: self.servers.iter().map(Server::to_string).collect(),
            client_id: self.client_id.clone(),
            request_timeout,
            security: self.security.clone(),
        }
    }

    fn from_values(v: &Values) -> Result<Self> {
        let servers = v
            .list(SERVERS)?
            .iter()
            .map(|s| parse_server(s))
            .collect::<Result<Vec<_>>>()?;
        Ok(ClientConfig {
            servers,
            client_id: v.string(CLIENT_ID)?,
            security: security::security(v)?,
        })
    }
}

/// A user's config checked against the parameter table of one side: no unknown or
/// repeated keys, every required parameter present, every value of its declared type.
struct Values<'a> {
    role: Role,
    given: HashMap<&'a str, &'a str>,
}

impl<'a> Values<'a> {
    fn new(role: Role, raw: &'a [(String, String)]) -> Result<Self> {
        let mut given = HashMap::new();
        for (key, value) in raw {
            let param = param(role, key)?;
            if given.insert(param.name, value.as_str()).is_some() {
                return Err(Error::config(key, "given more than once"));
            }
            check_value(param, value.trim())?;
        }
        for p in params(role).filter(|p| p.required) {
            if given.get(p.name).is_none_or(|v| split_list(v).is_empty()) {
                return Err(Error::config(p.name, format!("{} missing", p.name)));
            }
        }
        Ok(Values { role, given })
    }

    /// The value given for `name`, or its default.
    fn raw(&self, name: &str) -> Result<&str> {
        let p = param(self.role, name)?;
        Ok(self.given.get(p.name).copied().or(p.default).unwrap_or("").trim())
    }

    fn string(&self, name: &str) -> Result<String> {
        self.raw(name).map(str::to_string)
    }

    /// A text given and not blank, trimmed (PEM, names).
    fn given_text(&self, name: &str) -> Option<&'a str> {
        self.given.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A value given and not empty, exactly as given: a password's spaces are its own.
    fn given_exact(&self, name: &str) -> Option<&'a str> {
        self.given.get(name).copied().filter(|v| !v.is_empty())
    }

    fn bool(&self, name: &str) -> Result<bool> {
        parse_bool(name, self.raw(name)?)
    }

    fn duration(&self, name: &str) -> Result<Duration> {
        duration::parse(self.raw(name)?).map_err(|m| Error::config(name, m))
    }

    fn list(&self, name: &str) -> Result<Vec<String>> {
        Ok(split_list(self.raw(name)?))
    }

    fn int(&self, name: &str) -> Result<i64> {
        let raw = self.raw(name)?;
        raw.parse()
            .map_err(|_| Error::config(name, format!("\"{raw}\" is not an integer")))
    }
}

fn non_negative(name: &str, n: i64) -> Result<i32> {
    i32::try_from(n)
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::config(name, format!("{n} is not a partition number")))
}

fn param(role: Role, key: &str) -> Result<&'static Param> {
    params(role).find(|p| p.name == key).ok_or_else(|| {
        let known: Vec<_> = params(role).map(|p| p.name).collect();
        Error::config(
            key,
            format!(
                "unknown parameter for a {role}; known parameters: {}",
                known.join(", ")
            ),
        )
    })
}

/// Checks a given value against its parameter's type and allowed values.
fn check_value(p: &Param, value: &str) -> Result<()> {
    if !p.allowed.is_empty() && !p.allowed.contains(&value) {
        let named: Vec<&str> = p.allowed.iter().copied().filter(|a| !a.is_empty()).collect();
        let or_empty = if named.len() < p.allowed.len() {
            " (or empty)"
        } else {
            ""
        };
        return Err(Error::config(
            p.name,
            format!("\"{value}\" is not one of {}{or_empty}", named.join(", ")),
        ));
    }
    match p.kind {
        ParamType::Bool => parse_bool(p.name, value).map(drop),
        ParamType::Duration => duration::parse(value)
            .map(drop)
            .map_err(|m| Error::config(p.name, m)),
        ParamType::Int => value
            .parse::<i64>()
            .map(drop)
            .map_err(|_| Error::config(p.name, format!("\"{value}\" is not an integer"))),
        ParamType::Float => value
            .parse::<f64>()
            .map(drop)
            .map_err(|_| Error::config(p.name, format!("\"{value}\" is not a number"))),
        ParamType::List if p.name == SERVERS => split_list(value)
            .iter()
            .try_for_each(|s| parse_server(s).map(drop)),
        ParamType::List | ParamType::String => Ok(()),
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::config(
            name,
            format!("\"{value}\" is not a boolean (true or false)"),
        )),
    }
}

/// Parses `host:port` or `[ipv6]:port`.
pub fn parse_server(s: &str) -> Result<Server> {
    let bad = |why: &str| Error::config(SERVERS, format!("malformed server address \"{s}\": {why}"));
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(|| bad("expected [ipv6]:port"))?;
        (host, port)
    } else {
        s.rsplit_once(':').ok_or_else(|| bad("expected host:port"))?
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !host_ok || (host.contains(':') && !s.starts_with('[')) {
        return Err(bad("invalid host"));
    }
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(bad("port must be a number from 1 to 65535")),
    };
    Ok(Server {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err_of(r: Result<impl fmt::Debug>) -> (String, String) {
        match r.unwrap_err() {
            Error::InvalidConfig { parameter, message } => (parameter, message),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn topic_names_kafka_refuses_and_overlong_groups_are_config_errors() {
        let source = |pairs: &[(&str, &str)]| SourceConfig::parse(&cfg(pairs));
        for bad in ["a b", "t/1", "..", &"t".repeat(250)] {
            let (param, msg) = err_of(source(&[("servers", "a:1"), ("topic", bad)]));
            assert_eq!(param, "topic");
            assert!(msg.contains("is not a Kafka topic name"), "{msg}");
        }
        assert!(source(&[("servers", "a:1"), ("topic", &"t".repeat(249))]).is_ok());
        let long = "g".repeat(32768);
        let (param, msg) = err_of(source(&[("servers", "a:1"), ("topic", "t"), ("groupID", &long)]));
        assert_eq!(
            (param.as_str(), msg.as_str()),
            ("groupID", "longer than 32767 bytes")
        );
    }

    #[test]
    fn defaults_fill_in() {
        let d = DestinationConfig::parse(&cfg(&[("servers", "a:1, b:2"), ("topic", "t")])).unwrap();
        assert_eq!(d.client.servers.len(), 2);
        assert_eq!(
            d.client.servers[1],
            Server {
                host: "b".into(),
                port: 2
            }
        );
        assert_eq!(d.acks, Acks::All);
        assert_eq!(d.delivery_timeout, Duration::from_secs(10));
        assert_eq!(d.client.client_id, "conduit-connector-kafka");
        assert_eq!(d.topic.as_deref(), Some("t"));
        assert_eq!(d.compression, Compression::Snappy);
        assert_eq!(d.batch_bytes, 1_000_012);
        assert_eq!(d.partitioner, Partitioner::Murmur2);
        assert_eq!(d.value_format, ValueFormat::Raw);
        assert_eq!(d.headers, HeaderSelection::All);
        let s = SourceConfig::parse(&cfg(&[("servers", "a:1"), ("topic", "t")])).unwrap();
        assert!(!s.read_from_beginning);
        assert_eq!((s.topics, s.group_id), (vec!["t".to_string()], None));
        assert_eq!((s.commit_size, s.commit_delay), (1000, Duration::from_secs(5)));
        let s = SourceConfig::parse(&cfg(&[
            ("servers", "a:1"),
            ("topic", "t"),
            ("topics", "u, t,v"),
            ("groupID", "g"),
        ]))
        .unwrap();
        assert_eq!(s.topics, ["t", "u", "v"]);
        assert_eq!(s.group_id.as_deref(), Some("g"));
    }

    #[test]
    fn missing_required_values_are_named_like_the_original() {
        assert_eq!(
            err_of(SourceConfig::parse(&cfg(&[("topic", "t")]))),
            ("servers".into(), "servers missing".into())
        );
        assert_eq!(
            err_of(DestinationConfig::parse(&cfg(&[
                ("servers", " , "),
                ("topic", "t")
            ])))
            .1,
            "servers missing"
        );
        assert_eq!(
            err_of(SourceConfig::parse(&cfg(&[("servers", "a:1")]))),
            ("topic".into(), "topic missing".into())
        );
        let d = DestinationConfig::parse(&cfg(&[("servers", "a:1")])).unwrap();
        assert_eq!(
            d.topic, None,
            "a destination without topic writes to each record's collection"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        let base = [("servers", "a:1"), ("topic", "t")];
        let with = |k, v| {
            let mut c = cfg(&base);
            c.push((String::from(k), String::from(v)));
            c
        };
        let (p, m) = err_of(DestinationConfig::parse(&with("acks", "2")));
        assert_eq!(p, "acks");
        assert!(m.contains("\"2\""), "{m}");
        let (p, m) = err_of(DestinationConfig::parse(&with("deliveryTimeout", "10")));
        assert_eq!(p, "deliveryTimeout");
        assert!(m.contains("\"10\""), "{m}");
        let (p, m) = err_of(SourceConfig::parse(&with("readFromBeginning", "yes")));
        assert_eq!(p, "readFromBeginning");
        assert!(m.contains("\"yes\""), "{m}");
        let (p, m) = err_of(SourceConfig::parse(&with("acks", "all")));
        assert_eq!(p, "acks");
        assert!(m.contains("unknown parameter for a source"), "{m}");
        let (p, _) = err_of(SourceConfig::parse(&with("topic", "u")));
        assert_eq!(p, "topic");
    }

    #[test]
    fn destination_options_parse_and_check_each_other() {
        let parse = |extra: &[(&str, &str)]| {
            let mut c = cfg(&[("servers", "a:1")]);
            c.extend(cfg(extra));
            DestinationConfig::parse(&c)
        };
        let d = parse(&[
            ("partitioner", "fixed"),
            ("partition", "2"),
            ("headers", "a, b"),
            ("valueFormat", "opencdc"),
        ])
        .unwrap();
        assert_eq!(d.partitioner, Partitioner::Fixed(2));
        assert_eq!(d.headers, HeaderSelection::Keys(vec!["a".into(), "b".into()]));
        assert_eq!(d.value_format, ValueFormat::OpenCdc);
        assert_eq!(
            parse(&[("headers", "none")]).unwrap().headers,
            HeaderSelection::None
        );
        assert_eq!(
            parse(&[("compression", "zstd")]).unwrap().compression,
            Compression::Zstd
        );
        assert_eq!(err_of(parse(&[("partitioner", "fixed")])).0, "partition");
        assert_eq!(err_of(parse(&[("partition", "1")])).0, "partition");
        assert_eq!(
            err_of(parse(&[("partitioner", "fixed"), ("partition", "-1")])).0,
            "partition"
        );
        assert_eq!(err_of(parse(&[("batchBytes", "0")])).0, "batchBytes");
        assert_eq!(err_of(parse(&[("batchBytes", "1k")])).0, "batchBytes");
        assert_eq!(err_of(parse(&[("compression", "brotli")])).0, "compression");
    }

    #[test]
    fn missing_topics_are_created_with_the_brokers_defaults_unless_told_otherwise() {
        let parse = |extra: &[(&str, &str)]| {
            let mut c = cfg(&[("servers", "a:1")]);
            c.extend(cfg(extra));
            DestinationConfig::parse(&c)
        };
        let defaults = NewTopic {
            partitions: -1,
            replication_factor: -1,
        };
        assert_eq!(parse(&[]).unwrap().topic_creation, Some(defaults));
        let given = parse(&[("topicPartitions", "6"), ("topicReplicationFactor", "3")]);
        let six_by_three = NewTopic {
            partitions: 6,
            replication_factor: 3,
        };
        assert_eq!(given.unwrap().topic_creation, Some(six_by_three));
        let off = parse(&[("allowAutoTopicCreation", "false")]).unwrap();
        assert_eq!(off.topic_creation, None);
        for (key, bad) in [
            ("topicPartitions", "0"),
            ("topicPartitions", "-2"),
            ("topicPartitions", "10001"),
            ("topicReplicationFactor", "0"),
            ("topicReplicationFactor", "32768"),
        ] {
            let (p, m) = err_of(parse(&[(key, bad)]));
            assert_eq!(p, key);
            assert!(
                m.contains(bad) && m.contains("-1 for the broker's default"),
                "{m}"
            );
        }
        assert!(parse(&[("topicPartitions", "10000"), ("topicReplicationFactor", "32767")]).is_ok());
        let (p, m) = err_of(parse(&[
            ("allowAutoTopicCreation", "false"),
            ("topicPartitions", "3"),
        ]));
        assert_eq!(
            (p.as_str(), m.as_str()),
            (
                "topicPartitions",
                "topicPartitions is only used with allowAutoTopicCreation=true"
            )
        );
    }

    #[test]
    fn a_destinations_topic_must_be_a_kafka_topic_name() {
        let (p, m) = err_of(DestinationConfig::parse(&cfg(&[
            ("servers", "a:1"),
            ("topic", "a/b"),
        ])));
        assert_eq!(p, "topic");
        assert!(m.contains("\"a/b\" is not a Kafka topic name"), "{m}");
    }

    #[test]
    fn server_addresses_are_checked() {
        assert_eq!(parse_server("[::1]:9092").unwrap().to_string(), "[::1]:9092");
        assert_eq!(parse_server("127.0.0.1:9092").unwrap().port, 9092);
        for bad in [
            "localhost",
            "host:",
            ":9092",
            "host:0",
            "host:99999",
            "ho st:1",
            "::1:9092",
        ] {
            let (p, m) = err_of(parse_server(bad));
            assert_eq!(p, "servers");
            assert!(m.contains(bad), "{m}");
        }
    }

    #[test]
    fn every_default_is_valid_for_its_parameter() {
        for p in PARAMS {
            if let Some(d) = p.default {
                check_value(p, d).unwrap();
            }
        }
    }
}
