//! What is fuzzed: the body of every broker response the connector reads, decoded through
//! the function the connector decodes them with (`connection::decode`), and what the
//! connector reads inside them (record batches in Fetch, the consumer protocol in
//! JoinGroup and SyncGroup); record batches alone (every codec); response headers. Each
//! target starts from valid encodings of real structs at every version the connector
//! speaks.

use bytes::{Bytes, BytesMut};
use kafka_connector::error::{Error, Result};
use kafka_connector::kafka::client::cluster;
use kafka_connector::kafka::network::connection::decode;
use kafka_connector::kafka::protocol::batch::{self, MAX_DECOMPRESSED_BATCH, MAX_DECOMPRESSED_FETCH};
use kafka_connector::kafka::protocol::compression::Compression;
use kafka_connector::kafka::protocol::consumer;
use kafka_connector::kafka::protocol::versions::our_versions;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::records::{Record, TimestampType};

/// How a target's inputs are mutated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A message: mutated anywhere.
    Message,
    /// A lone record batch: resealed (CRC) after mutating half the time, so mutations
    /// reach the records and the codecs.
    Batch,
}

pub struct Target {
    pub name: &'static str,
    pub kind: Kind,
    /// What the decode may allocate beyond what the input's size allows (see `bound`).
    pub fixed_allowance: usize,
    /// Valid inputs and the version each is decoded at.
    pub seeds: Vec<(i16, Vec<u8>)>,
    pub decode: Box<dyn Fn(Bytes, i16) -> Result<()>>,
}

/// Bytes a decode may allocate per byte of input: a decoded struct takes more memory than
/// its wire bytes (a 1-byte compact string becomes a 32-byte `StrBytes`, an array grows by
/// doubling).
pub const PER_INPUT_BYTE: usize = 64;
/// Bytes any decode may allocate whatever its input: error messages, small tables.
pub const FIXED: usize = 4 << 20;

impl Target {
    /// The most one decode of `len` bytes may allocate.
    pub fn bound(&self, len: usize) -> usize {
        PER_INPUT_BYTE * len + FIXED + self.fixed_allowance
    }
}

/// What decompressing may take whatever the input's size: an answer's output (up to
/// `MAX_DECOMPRESSED_FETCH`, then one more batch of up to `MAX_DECOMPRESSED_BATCH`) and a
/// zstd window as large as a batch, which the decoder reserves up front.
const DECOMPRESSION: usize = MAX_DECOMPRESSED_FETCH + 2 * MAX_DECOMPRESSED_BATCH;

pub fn all() -> Vec<Target> {
    let mut targets = vec![
        response::<ApiVersionsRequest>("ApiVersions", api_versions(), only),
        response::<MetadataRequest>("Metadata", metadata(), metadata_leaders),
        response::<FindCoordinatorRequest>("FindCoordinator", find_coordinator(), only),
        response::<JoinGroupRequest>("JoinGroup", join_group(), join_group_members),
        response::<SyncGroupRequest>("SyncGroup", sync_group(), sync_group_assignment),
        response::<HeartbeatRequest>(
            "Heartbeat",
            HeartbeatResponse::default().with_error_code(27),
            only,
        ),
        response::<LeaveGroupRequest>("LeaveGroup", leave_group(), only),
        response::<OffsetFetchRequest>("OffsetFetch", offset_fetch(), only),
        response::<OffsetCommitRequest>("OffsetCommit", offset_commit(), only),
        response::<ListOffsetsRequest>("ListOffsets", list_offsets(), only),
        response::<ProduceRequest>("Produce", produce(), only),
        response::<InitProducerIdRequest>("InitProducerId", init_producer_id(), only),
        response::<SaslHandshakeRequest>("SaslHandshake", sasl_handshake(), only),
        response::<SaslAuthenticateRequest>("SaslAuthenticate", sasl_authenticate(), only),
        response::<CreateTopicsRequest>("CreateTopics", create_topics(), only),
        Target {
            name: "ResponseHeader",
            kind: Kind::Message,
            fixed_allowance: 0,
            seeds: [0, 1].map(|v| (v, encoded(&response_header(), v))).to_vec(),
            decode: Box::new(|mut b, v| {
                ResponseHeader::decode(&mut b, v)
                    .map(drop)
                    .map_err(|e| Error::CorruptData(e.to_string()))
            }),
        },
        Target {
            name: "RecordBatch",
            kind: Kind::Batch,
            fixed_allowance: DECOMPRESSION,
            seeds: batches(),
            decode: Box::new(|b, _| read_batches(b, &mut { MAX_DECOMPRESSED_FETCH })),
        },
    ];
    // A Fetch answer carries record batches, compressed ones too.
    let fetch = response::<FetchRequest>("Fetch", fetch(), fetch_records);
    targets.push(Target {
        fixed_allowance: DECOMPRESSION,
        ..fetch
    });
    targets
}

/// A target decoding the response to `R` at every version the connector speaks, then
/// reading it as the connector does (`read`).
fn response<R>(name: &'static str, value: R::Response, read: fn(R::Response) -> Result<()>) -> Target
where
    R: Request + 'static,
    R::Response: Default + 'static,
{
    let seeds = our_versions::<R>()
        .flat_map(|v| {
            // A field the version lacks cannot be encoded: the default then.
            let rich = encoded_at(&value, v).map(|b| (v, b));
            rich.or_else(|| encoded_at(&R::Response::default(), v).map(|b| (v, b)))
        })
        .collect();
    Target {
        name,
        kind: Kind::Message,
        fixed_allowance: 0,
        seeds,
        decode: Box::new(move |body, v| read(decode::<R>(body, v, "fuzz")?)),
    }
}

fn only<T>(_: T) -> Result<()> {
    Ok(())
}

/// As the cluster reads each topic's partition leaders.
fn metadata_leaders(resp: MetadataResponse) -> Result<()> {
    for t in &resp.topics {
        let name = t.name.as_ref().map_or("", |n| n.0.as_str());
        cluster::leaders(name, t)?;
    }
    Ok(())
}

/// As the group leader reads members' subscriptions.
fn join_group_members(resp: JoinGroupResponse) -> Result<()> {
    for m in &resp.members {
        consumer::decode_subscription(&m.metadata)?;
    }
    Ok(())
}

/// As a member reads its assignment.
fn sync_group_assignment(resp: SyncGroupResponse) -> Result<()> {
    consumer::decode_assignment(&resp.assignment).map(drop)
}

/// As the fetcher and the source read a Fetch answer: each partition's batches, then
/// every record and header.
fn fetch_records(resp: FetchResponse) -> Result<()> {
    let mut budget = MAX_DECOMPRESSED_FETCH;
    for t in resp.responses {
        for p in t.partitions {
            if let Some(records) = p.records {
                read_batches(records, &mut budget)?;
            }
        }
    }
    Ok(())
}

fn read_batches(data: Bytes, budget: &mut usize) -> Result<()> {
    for mut b in batch::decode_batches(data, 0, "fuzz-0", budget)?.batches {
        while let Some(r) = b.next_record()? {
            std::hint::black_box(r.headers().count());
        }
    }
    Ok(())
}

fn encoded<M: Encodable>(m: &M, version: i16) -> Vec<u8> {
    encoded_at(m, version).expect("encodes")
}

fn encoded_at<M: Encodable>(m: &M, version: i16) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    m.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn topic(name: &str) -> TopicName {
    TopicName(s(name))
}

fn response_header() -> ResponseHeader {
    ResponseHeader::default().with_correlation_id(7)
}

fn api_versions() -> ApiVersionsResponse {
    use api_versions_response::ApiVersion;
    let keys = (0..20)
        .map(|k| ApiVersion::default().with_api_key(k).with_max_version(12))
        .collect();
    ApiVersionsResponse::default().with_api_keys(keys)
}

fn metadata() -> MetadataResponse {
    use metadata_response::*;
    let brokers = (0..3)
        .map(|i| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(i))
                .with_host(s("broker.example"))
                .with_port(9092)
        })
        .collect();
    let partitions: Vec<_> = (0..40)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(p % 3))
                .with_replica_nodes(vec![BrokerId(0), BrokerId(1)])
                .with_isr_nodes(vec![BrokerId(0)])
        })
        .collect();
    let topics = ["orders", "payments"]
        .map(|t| {
            MetadataResponseTopic::default()
                .with_name(Some(topic(t)))
                .with_partitions(partitions.clone())
        })
        .to_vec();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics)
}

fn find_coordinator() -> FindCoordinatorResponse {
    FindCoordinatorResponse::default()
        .with_node_id(BrokerId(1))
        .with_host(s("broker.example"))
        .with_port(9092)
}

fn join_group() -> JoinGroupResponse {
    use join_group_response::JoinGroupResponseMember;
    let metadata = consumer::encode_subscription(&["orders".into(), "payments".into()]);
    let members = ["m-1", "m-2"]
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(s(m))
                .with_metadata(metadata.clone())
        })
        .to_vec();
    JoinGroupResponse::default()
        .with_generation_id(3)
        .with_protocol_name(Some(s("range")))
        .with_leader(s("m-1"))
        .with_member_id(s("m-1"))
        .with_members(members)
}

fn sync_group() -> SyncGroupResponse {
    let parts = [
        ("orders".to_string(), 0),
        ("orders".to_string(), 1),
        ("payments".to_string(), 0),
    ];
    SyncGroupResponse::default().with_assignment(consumer::encode_assignment(&parts))
}

fn leave_group() -> LeaveGroupResponse {
    use leave_group_response::MemberResponse;
    LeaveGroupResponse::default().with_members(vec![MemberResponse::default().with_member_id(s("m-1"))])
}

fn offset_fetch() -> OffsetFetchResponse {
    use offset_fetch_response::*;
    let partitions = (0..3)
        .map(|p| {
            OffsetFetchResponsePartition::default()
                .with_partition_index(p)
                .with_committed_offset(100 + p as i64)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(vec![
        OffsetFetchResponseTopic::default()
            .with_name(topic("orders"))
            .with_partitions(partitions),
    ])
}

fn offset_commit() -> OffsetCommitResponse {
    use offset_commit_response::*;
    let partitions = (0..3)
        .map(|p| OffsetCommitResponsePartition::default().with_partition_index(p))
        .collect();
    OffsetCommitResponse::default().with_topics(vec![
        OffsetCommitResponseTopic::default()
            .with_name(topic("orders"))
            .with_partitions(partitions),
    ])
}

fn list_offsets() -> ListOffsetsResponse {
    use list_offsets_response::*;
    let partitions = (0..3)
        .map(|p| {
            ListOffsetsPartitionResponse::default()
                .with_partition_index(p)
                .with_offset(42)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(vec![
        ListOffsetsTopicResponse::default()
            .with_name(topic("orders"))
            .with_partitions(partitions),
    ])
}

fn produce() -> ProduceResponse {
    use produce_response::*;
    let partitions = (0..3)
        .map(|p| {
            PartitionProduceResponse::default()
                .with_index(p)
                .with_base_offset(1000)
        })
        .collect();
    ProduceResponse::default().with_responses(vec![
        TopicProduceResponse::default()
            .with_name(topic("orders"))
            .with_partition_responses(partitions),
    ])
}

fn init_producer_id() -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(4711))
        .with_producer_epoch(2)
}

fn sasl_handshake() -> SaslHandshakeResponse {
    SaslHandshakeResponse::default().with_mechanisms(vec![s("PLAIN"), s("SCRAM-SHA-256"), s("SCRAM-SHA-512")])
}

fn sasl_authenticate() -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from_static(b"r=abc,s=c2FsdA==,i=4096"))
}

fn create_topics() -> CreateTopicsResponse {
    use create_topics_response::CreatableTopicResult;
    CreateTopicsResponse::default().with_topics(vec![
        CreatableTopicResult::default()
            .with_name(topic("orders"))
            .with_error_code(36),
    ])
}

fn fetch() -> FetchResponse {
    use fetch_response::*;
    let partitions = [Compression::None, Compression::Zstd]
        .iter()
        .enumerate()
        .map(|(p, &c)| {
            PartitionData::default()
                .with_partition_index(p as i32)
                .with_high_watermark(10)
                .with_records(Some(records(c, 3 + 20 * p as i64)))
        })
        .collect();
    FetchResponse::default().with_responses(vec![
        FetchableTopicResponse::default()
            .with_topic(topic("orders"))
            .with_partitions(partitions),
    ])
}

/// Lone batches of every codec, some with headers.
fn batches() -> Vec<(i16, Vec<u8>)> {
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    codecs
        .iter()
        .flat_map(|&c| [1, 5, 40].map(|n| (0, records(c, n).to_vec())))
        .collect()
}

/// A v2 batch of `n` records compressed with `c`.
fn records(c: Compression, n: i64) -> Bytes {
    let mut records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("value {i} ").repeat(i as usize + 1))),
            headers: [(s("trace"), Some(Bytes::from_static(b"abc"))), (s("empty"), None)]
                .into_iter()
                .take(i as usize % 3)
                .collect(),
            delete_horizon: false,
        })
        .collect();
    batch::encode(&mut records, -1, c).expect("encodes")
}
