//! Membership in a consumer group: finding the coordinator, joining (with the
//! member-id-required rejoin), assigning partitions as leader, syncing, heartbeats,
//! committed offsets, commits and leaving. A guest only runs when its host calls it, so
//! heartbeats are sent from the source's calls, whenever one is due.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::TopicPartition;
use super::assignor::{self, Subscription};
use super::backoff::Backoff;
use super::cluster::{Cluster, ConnKey};
use super::per_topic;
use crate::error::{Error, Result};
use crate::kafka::network::poll;
use crate::kafka::protocol::{consumer, errors};
use crate::log;

const PROTOCOL_TYPE: &str = "consumer";

#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub group_id: String,
    pub topics: Vec<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub heartbeat_interval: Duration,
}

pub struct Membership {
    settings: GroupSettings,
    coordinator: Option<i32>,
    member_id: String,
    generation: i32,
    next_heartbeat: Instant,
}

/// What a heartbeat found out.
#[derive(Debug, PartialEq, Eq)]
pub enum Pulse {
    Fine,
    /// The group is rebalancing, or forgot this member: join again.
    Rejoin,
}

impl Membership {
    pub fn new(settings: GroupSettings) -> Self {
        Membership {
            settings,
            coordinator: None,
            member_id: String::new(),
            generation: -1,
            next_heartbeat: Instant::now(),
        }
    }

    pub fn group_id(&self) -> &str {
        &self.settings.group_id
    }

    pub fn next_heartbeat(&self) -> Instant {
        self.next_heartbeat
    }

    fn group(&self) -> GroupId {
        GroupId(StrBytes::from_string(self.settings.group_id.clone()))
    }

    /// The coordinator's node id, found once and again after it moved.
    fn find_coordinator(&mut self, cluster: &mut Cluster) -> Result<i32> {
        if let Some(node) = self.coordinator {
            return Ok(node);
        }
        let req =
            FindCoordinatorRequest::default().with_key(StrBytes::from_string(self.settings.group_id.clone()));
        let deadline = cluster.deadline();
        let resp = cluster.metadata_connection()?.request(&req, deadline)?;
        errors::check(
            resp.error_code,
            &format!("FindCoordinator for group {}", self.settings.group_id),
        )?;
        let node = resp.node_id.0;
        cluster.add_coordinator(node, &resp.host, resp.port);
        self.coordinator = Some(node);
        Ok(node)
    }

    /// An error from the coordinator; one saying it moved makes the next call look again.
    fn coordinator_error(&mut self, code: i16, what: &str) -> Error {
        let moved = [
            ResponseError::NotCoordinator,
            ResponseError::CoordinatorNotAvailable,
        ];
        if moved.iter().any(|e| e.code() == code) {
            self.coordinator = None;
        }
        errors::check(code, &format!("{what} for group {}", self.settings.group_id))
            .err()
            .unwrap_or_else(|| Error::Other(format!("{what}: no error code where one was expected")))
    }

    /// Joins the group (again) and returns this member's partitions.
    pub fn join(&mut self, cluster: &mut Cluster) -> Result<Vec<TopicPartition>> {
        let give_up = Instant::now() + self.settings.rebalance_timeout + self.settings.session_timeout;
        let mut backoff = Backoff::default();
        loop {
            match self.try_join(cluster) {
                Ok(Some(assignment)) => {
                    self.next_heartbeat = Instant::now() + self.settings.heartbeat_interval;
                    log::info(&format!(
                        "group {}: generation {}, assigned {assignment:?}",
                        self.settings.group_id, self.generation
                    ));
                    return Ok(assignment);
                }
                Ok(None) if Instant::now() < give_up => continue,
                Ok(None) => {
                    let msg = format!(
                        "group {} did not settle within the rebalance timeout",
                        self.settings.group_id
                    );
                    return Err(Error::Timeout(msg));
                }
                Err(e) if e.is_retriable() => {
                    let now = Instant::now();
                    let throttled = self
                        .coordinator
                        .and_then(|node| cluster.throttled_until(ConnKey::Coordinator(node)));
                    let Some(at) = backoff.retry_at(now, throttled, Some(give_up)) else {
                        return Err(e);
                    };
                    log::warn(&format!(
                        "joining group {}: {e}; trying again in {} ms",
                        self.settings.group_id,
                        (at - now).as_millis()
                    ));
                    poll::sleep(at - now);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One JoinGroup + SyncGroup; None when the group asks to join again at once.
    fn try_join(&mut self, cluster: &mut Cluster) -> Result<Option<Vec<TopicPartition>>> {
        let node = self.find_coordinator(cluster)?;
        let subscription = consumer::encode_subscription(&self.settings.topics);
        let protocols = assignor::PROTOCOLS
            .iter()
            .map(|p| {
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(p))
                    .with_metadata(subscription.clone())
            })
            .collect();
        let req = JoinGroupRequest::default()
            .with_group_id(self.group())
            .with_session_timeout_ms(millis(self.settings.session_timeout))
            .with_rebalance_timeout_ms(millis(self.settings.rebalance_timeout))
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_protocol_type(StrBytes::from_static_str(PROTOCOL_TYPE))
            .with_protocols(protocols);
        // The coordinator holds a JoinGroup until every member has joined.
        let deadline = Instant::now() + self.settings.rebalance_timeout + Duration::from_secs(5);
        let resp = cluster.coordinator(node)?.request(&req, deadline)?;
        match ResponseError::try_from_code(resp.error_code) {
            None => {}
            Some(ResponseError::MemberIdRequired) => {
                self.member_id = resp.member_id.to_string();
                return Ok(None);
            }
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                return Ok(None);
            }
            Some(ResponseError::RebalanceInProgress) => return Ok(None),
            Some(_) => return Err(self.coordinator_error(resp.error_code, "JoinGroup")),
        }
        self.member_id = resp.member_id.to_string();
        self.generation = resp.generation_id;
        let protocol = resp
            .protocol_name
            .clone()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let assignments = if resp.leader == resp.member_id {
            self.lead(cluster, &resp, &protocol)?
        } else {
            vec![]
        };
        self.sync(cluster, node, &protocol, assignments)
    }

    /// As leader: every member's partitions, by the protocol the group chose.
    fn lead(
        &mut self,
        cluster: &mut Cluster,
        resp: &JoinGroupResponse,
        protocol: &str,
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        let members = resp
            .members
            .iter()
            .map(|m| {
                Ok(Subscription {
                    member_id: m.member_id.to_string(),
                    topics: consumer::decode_subscription(&m.metadata)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut topics: Vec<String> = members.iter().flat_map(|m| m.topics.clone()).collect();
        topics.sort();
        topics.dedup();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        cluster.refresh(&names)?;
        let mut partitions = BTreeMap::new();
        for t in &topics {
            match cluster.topic(t) {
                Ok(meta) => drop(partitions.insert(t.clone(), meta.leaders.len() as i32)),
                Err(e) => log::warn(&format!(
                    "group {}: not assigning {t}: {e}",
                    self.settings.group_id
                )),
            }
        }
        let plan = assignor::assign(protocol, &members, &partitions).ok_or_else(|| {
            Error::Other(format!(
                "group {} chose protocol {protocol:?}, which this client does not know",
                self.settings.group_id
            ))
        })?;
        Ok(plan
            .into_iter()
            .map(|(member, parts)| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member))
                    .with_assignment(consumer::encode_assignment(&parts))
            })
            .collect())
    }

    fn sync(
        &mut self,
        cluster: &mut Cluster,
        node: i32,
        protocol: &str,
        assignments: Vec<SyncGroupRequestAssignment>,
    ) -> Result<Option<Vec<TopicPartition>>> {
        let conn = cluster.coordinator(node)?;
        let version = conn.version::<SyncGroupRequest>()?;
        let mut req = SyncGroupRequest::default()
            .with_group_id(self.group())
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_assignments(assignments);
        if version >= 5 {
            req.protocol_type = Some(StrBytes::from_static_str(PROTOCOL_TYPE));
            req.protocol_name = Some(StrBytes::from_string(protocol.to_string()));
        }
        let deadline = Instant::now() + self.settings.rebalance_timeout + Duration::from_secs(5);
        let resp = conn.request_at(&req, version, deadline)?;
        match ResponseError::try_from_code(resp.error_code) {
            None => Ok(Some(consumer::decode_assignment(&resp.assignment)?)),
            Some(ResponseError::RebalanceInProgress) | Some(ResponseError::IllegalGeneration) => Ok(None),
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                Ok(None)
            }
            Some(_) => Err(self.coordinator_error(resp.error_code, "SyncGroup")),
        }
    }

    /// Sends a heartbeat if one is due.
    pub fn heartbeat_if_due(&mut self, cluster: &mut Cluster) -> Result<Pulse> {
        if Instant::now() < self.next_heartbeat {
            return Ok(Pulse::Fine);
        }
        self.next_heartbeat = Instant::now() + self.settings.heartbeat_interval;
        let node = self.find_coordinator(cluster)?;
        let req = HeartbeatRequest::default()
            .with_group_id(self.group())
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let deadline = cluster.deadline();
        let code = match cluster.coordinator(node).and_then(|c| c.request(&req, deadline)) {
            Ok(resp) => resp.error_code,
            Err(e) if e.is_retriable() => {
                self.coordinator = None;
                log::warn(&format!("heartbeat to group {}: {e}", self.settings.group_id));
                return Ok(Pulse::Fine);
            }
            Err(e) => return Err(e),
        };
        self.pulse(code, "Heartbeat")
    }

    /// Reads an error code from the coordinator about this member.
    fn pulse(&mut self, code: i16, what: &str) -> Result<Pulse> {
        match ResponseError::try_from_code(code) {
            None => Ok(Pulse::Fine),
            Some(ResponseError::RebalanceInProgress) | Some(ResponseError::IllegalGeneration) => {
                Ok(Pulse::Rejoin)
            }
            Some(ResponseError::UnknownMemberId) | Some(ResponseError::FencedInstanceId) => {
                self.member_id.clear();
                Ok(Pulse::Rejoin)
            }
            Some(e) if e.is_retriable() => {
                let _ = self.coordinator_error(code, what);
                Ok(Pulse::Fine)
            }
            Some(_) => Err(self.coordinator_error(code, what)),
        }
    }

    /// The group's committed offset for each partition (those without one are left out).
    pub fn committed(
        &mut self,
        cluster: &mut Cluster,
        parts: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let node = self.find_coordinator(cluster)?;
        let topics = per_topic(parts.iter().map(|(t, p)| (t.as_str(), *p)), |name, ps| {
            OffsetFetchRequestTopic::default()
                .with_name(name)
                .with_partition_indexes(ps)
        });
        let req = OffsetFetchRequest::default()
            .with_group_id(self.group())
            .with_topics(Some(topics));
        let deadline = cluster.deadline();
        let resp = cluster.coordinator(node)?.request(&req, deadline)?;
        if resp.error_code != 0 {
            return Err(self.coordinator_error(resp.error_code, "OffsetFetch"));
        }
        let mut out = BTreeMap::new();
        for t in resp.topics {
            for p in t.partitions {
                errors::check(
                    p.error_code,
                    &format!("OffsetFetch {}-{}", t.name.0, p.partition_index),
                )?;
                if p.committed_offset >= 0 {
                    out.insert((t.name.0.to_string(), p.partition_index), p.committed_offset);
                }
            }
        }
        Ok(out)
    }

    /// Commits `offsets` (the next offset to read, per partition). `Rejoin` when the group
    /// moved on without this member's generation: the commit did not happen.
    pub fn commit(
        &mut self,
        cluster: &mut Cluster,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<Pulse> {
        if offsets.is_empty() {
            return Ok(Pulse::Fine);
        }
        let node = self.find_coordinator(cluster)?;
        let partitions = offsets.iter().map(|((t, p), offset)| {
            let part = OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(-1);
            (t.as_str(), part)
        });
        let topics = per_topic(partitions, |name, ps| {
            OffsetCommitRequestTopic::default()
                .with_name(name)
                .with_partitions(ps)
        });
        let req = OffsetCommitRequest::default()
            .with_group_id(self.group())
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_retention_time_ms(-1)
            .with_topics(topics);
        let deadline = cluster.deadline();
        let resp = cluster.coordinator(node)?.request(&req, deadline)?;
        for p in resp.topics.iter().flat_map(|t| &t.partitions) {
            if self.pulse(p.error_code, "OffsetCommit")? == Pulse::Rejoin {
                return Ok(Pulse::Rejoin);
            }
        }
        Ok(Pulse::Fine)
    }

    /// Leaves the group so the others take this member's partitions over at once.
    pub fn leave(&mut self, cluster: &mut Cluster) {
        if self.member_id.is_empty() {
            return;
        }
        let Ok(node) = self.find_coordinator(cluster) else {
            return;
        };
        let member_id = StrBytes::from_string(self.member_id.clone());
        let group = self.group();
        let deadline = cluster.deadline();
        let left = cluster.coordinator(node).and_then(|conn| {
            let version = conn.version::<LeaveGroupRequest>()?;
            // Version 3 names the leaving members in a list; older ones name one member.
            let req = if version >= 3 {
                let member = MemberIdentity::default().with_member_id(member_id);
                LeaveGroupRequest::default()
                    .with_group_id(group)
                    .with_members(vec![member])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(group)
                    .with_member_id(member_id)
            };
            conn.request_at(&req, version, deadline)
        });
        if let Err(e) = left {
            log::warn(&format!("leaving group {}: {e}", self.settings.group_id));
        }
        self.member_id.clear();
    }
}

fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}
