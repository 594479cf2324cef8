//! Topics a producer writes to: Kafka's rules for their names, and making sure one exists
//! (CreateTopics when it is missing), ready to be written to (every partition has a leader).

use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{CreateTopicsRequest, create_topics_request::CreatableTopic};

use super::backoff::Backoff;
use super::cluster::{Cluster, TopicMeta, topic_name};
use crate::error::{Error, Result};
use crate::kafka::protocol::errors;
use crate::log;

/// The longest topic name Kafka takes.
pub const MAX_NAME: usize = 249;

/// The most partitions Kafka (KRaft) creates in one CreateTopics request.
pub const MAX_PARTITIONS: i32 = 10_000;

/// Leaves a count to the broker's default (`num.partitions`, `default.replication.factor`).
pub const BROKER_DEFAULT: i32 = -1;

/// How long a topic nothing here creates may be unknown before its absence is final: one
/// another client is creating, or that a broker's Metadata has not caught up with, shows
/// up within moments.
pub const MISSING_WAIT: Duration = Duration::from_secs(5);

/// The first CreateTopics version that takes `BROKER_DEFAULT` (KIP-464, Kafka 2.4).
const DEFAULTS_SINCE: i16 = 4;

/// How a missing topic is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewTopic {
    /// A count, or `BROKER_DEFAULT`.
    pub partitions: i32,
    /// A count, or `BROKER_DEFAULT`.
    pub replication_factor: i16,
}

/// Why Kafka would refuse `name` as a topic name, if it would; the name is shown cut short.
pub fn name_problem(name: &str) -> Option<String> {
    let legal = (1..=MAX_NAME).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    (!legal).then(|| {
        format!(
            "{:?} is not a Kafka topic name (1 to {MAX_NAME} of a-z, A-Z, 0-9, '.', '_', '-'; not \".\" or \"..\")",
            shown(name)
        )
    })
}

/// The first 64 characters of a long value, for an error message.
pub fn shown(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

/// The topic's partitions and leaders, from fresh Metadata. A missing topic is created with
/// `create` and awaited until every partition has a leader; without `create` it is `None`.
/// A topic another client is creating at the same time is awaited the same way.
pub fn ensure(
    cluster: &mut Cluster,
    name: &str,
    create: Option<NewTopic>,
    deadline: Instant,
) -> Result<Option<TopicMeta>> {
    match status(cluster, name, deadline)? {
        Status::Ready(t) => return Ok(Some(t)),
        Status::Pending => {}
        Status::Missing => match create {
            Some(spec) => self::create(cluster, name, spec, deadline)?,
            None => return Ok(None),
        },
    }
    await_ready(cluster, name, deadline).map(Some)
}

/// What Metadata says of a topic.
enum Status {
    Ready(TopicMeta),
    /// Known but without partitions or leaders yet (5 LEADER_NOT_AVAILABLE while created).
    Pending,
    /// 3 UNKNOWN_TOPIC_OR_PARTITION.
    Missing,
}

fn status(cluster: &mut Cluster, name: &str, deadline: Instant) -> Result<Status> {
    match cluster.topic_status(name, deadline)? {
        0 => Ok(match cluster.known(name) {
            Some(t) if !t.leaders.is_empty() => Status::Ready(t.clone()),
            _ => Status::Pending,
        }),
        3 => Ok(Status::Missing),
        5 => Ok(Status::Pending),
        code => Err(errors::kafka_error(
            ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError),
            &format!("Metadata for topic \"{name}\""),
        )),
    }
}

/// Creates the topic. One that already exists (36 TOPIC_ALREADY_EXISTS: another writer was
/// first) is fine. Retriable answers and broken connections are tried again until
/// `deadline`; a refusal (authorization, partitions, replication factor, config, policy)
/// is returned at once, naming the topic and the broker's reason.
pub fn create(cluster: &mut Cluster, name: &str, spec: NewTopic, deadline: Instant) -> Result<()> {
    let mut backoff = Backoff::default();
    loop {
        let err = match create_once(cluster, name, spec, deadline) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if !err.is_retriable() || !backoff.sleep(None, deadline) {
            return Err(err);
        }
    }
}

fn create_once(cluster: &mut Cluster, name: &str, spec: NewTopic, deadline: Instant) -> Result<()> {
    let answer_by = cluster.deadline().min(deadline);
    let conn = cluster.metadata_connection()?;
    let version = conn.version::<CreateTopicsRequest>()?;
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(millis_until(deadline))
        .with_topics(vec![creatable(name, spec, version)?]);
    let resp = conn.request_at(&req, version, answer_by)?;
    let answer = resp
        .topics
        .iter()
        .find(|t| t.name.0.as_str() == name)
        .ok_or_else(|| {
            Error::CorruptData(format!("the CreateTopics answer does not name topic \"{name}\""))
        })?;
    if answer.error_code == ResponseError::TopicAlreadyExists.code() {
        return Ok(());
    }
    let mut context = format!("creating topic \"{name}\"");
    if let Some(said) = answer.error_message.as_deref().filter(|m| !m.is_empty()) {
        context.push_str(&format!(" ({})", shown(said)));
    }
    errors::check(answer.error_code, &context)?;
    // The counts the broker chose are in answers from v5 on.
    let counts = match (answer.num_partitions, answer.replication_factor) {
        (p, r) if p > 0 && r > 0 => format!(": {p} partitions, replication factor {r}"),
        _ => String::new(),
    };
    log::info(&format!("created topic \"{name}\"{counts}"));
    Ok(())
}

/// The CreateTopics entry for `name` at `version`: the broker's defaults (-1) need v4.
fn creatable(name: &str, spec: NewTopic, version: i16) -> Result<CreatableTopic> {
    let defaulted = [
        ("partition count", spec.partitions == BROKER_DEFAULT),
        (
            "replication factor",
            spec.replication_factor == BROKER_DEFAULT as i16,
        ),
    ];
    if let Some((what, _)) = defaulted.iter().find(|(_, d)| *d && version < DEFAULTS_SINCE) {
        return Err(Error::Other(format!(
            "cannot create topic \"{name}\" with the broker's default {what}: the broker speaks \
             CreateTopics up to v{version}, and leaving it to the broker needs v{DEFAULTS_SINCE} \
             (Kafka 2.4); give the {what} explicitly"
        )));
    }
    Ok(CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(spec.partitions)
        .with_replication_factor(spec.replication_factor))
}

/// A topic nothing here creates, looked up until `deadline`; while Metadata says it does
/// not exist, waited for `MISSING_WAIT` at most. Still missing then, it is final:
/// `missing(name, why)`.
pub fn wait_for(cluster: &mut Cluster, name: &str, why: &str, deadline: Instant) -> Result<TopicMeta> {
    let give_up = deadline.min(Instant::now() + MISSING_WAIT);
    let mut backoff = Backoff::default();
    loop {
        if let Some(t) = ensure(cluster, name, None, deadline)? {
            return Ok(t);
        }
        if !backoff.sleep(None, give_up) {
            return Err(missing(name, why));
        }
    }
}

/// A topic that does not exist and will not be created, and `why`: not retriable.
pub fn missing(name: &str, why: &str) -> Error {
    Error::Kafka {
        code: ResponseError::UnknownTopicOrPartition.code(),
        name: "UNKNOWN_TOPIC_OR_PARTITION".into(),
        message: format!("topic \"{name}\" does not exist, and {why}"),
        retriable: false,
    }
}

/// Waits until Metadata shows the topic with partitions, each with a leader: a broker takes
/// a moment after CreateTopics before it can take writes to a new topic.
pub fn await_ready(cluster: &mut Cluster, name: &str, deadline: Instant) -> Result<TopicMeta> {
    let mut backoff = Backoff::default();
    loop {
        let last = match status(cluster, name, deadline) {
            Ok(Status::Ready(t)) if t.leaders.iter().all(|l| *l >= 0) => return Ok(t),
            Ok(_) => Error::Timeout(format!(
                "topic \"{name}\" was created, but not every partition of it had a leader in time"
            )),
            Err(e) if e.is_retriable() => e,
            Err(e) => return Err(e),
        };
        if !backoff.sleep(None, deadline) {
            return Err(last);
        }
    }
}

/// What is left until `deadline`, in the milliseconds of a request's timeout field.
fn millis_until(deadline: Instant) -> i32 {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    left.as_millis().min(i32::MAX as u128) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafkas_rules() {
        for good in ["t", "orders.v1", "a_b-C9", &"x".repeat(249), "..."] {
            assert_eq!(name_problem(good), None, "{good}");
        }
        for bad in ["", ".", "..", "a b", "t/1", "ü", "a\0b", &"x".repeat(250)] {
            let why = name_problem(bad).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(why.contains("is not a Kafka topic name"), "{why}");
        }
        let long = name_problem(&"y".repeat(10_000)).unwrap();
        assert!(long.len() < 200 && long.contains("yyy..."), "{long}");
    }

    #[test]
    fn the_request_asks_for_the_configured_counts_or_the_brokers_defaults() {
        let spec = |partitions, replication_factor| NewTopic {
            partitions,
            replication_factor,
        };
        let t = creatable("t", spec(6, 3), 0).unwrap();
        assert_eq!(
            (t.name.0.as_str(), t.num_partitions, t.replication_factor),
            ("t", 6, 3)
        );
        let t = creatable("t", spec(-1, -1), 4).unwrap();
        assert_eq!((t.num_partitions, t.replication_factor), (-1, -1));
        assert!(t.assignments.is_empty() && t.configs.is_empty());
    }

    #[test]
    fn a_broker_before_kip_464_is_told_which_count_to_give() {
        let err = creatable(
            "t",
            NewTopic {
                partitions: -1,
                replication_factor: 2,
            },
            3,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("topic \"t\"") && err.contains("default partition count"),
            "{err}"
        );
        assert!(err.contains("up to v3"), "{err}");
        let err = creatable(
            "t",
            NewTopic {
                partitions: 4,
                replication_factor: -1,
            },
            3,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("replication factor"), "{err}");
        assert!(
            creatable(
                "t",
                NewTopic {
                    partitions: 4,
                    replication_factor: 2
                },
                3
            )
            .is_ok()
        );
    }
}
