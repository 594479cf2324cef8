//! A broker for unit tests of the producer: one topic on one node, each partition's log
//! kept as the values appended, Kafka's sequence check for idempotent batches (a batch
//! must start at the partition's next sequence: a lower one is a duplicate if it is one of
//! the last five appended, else out of order; a higher one out of order), and a script
//! that answers chosen batches with an error instead, or appends them without answering.

use std::collections::{HashMap, VecDeque};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, InitProducerIdResponse, MetadataResponse, ProduceRequest,
    ProduceResponse, ProducerId, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use crate::kafka::network::scripted::{Asked, read_frame, respond};
use crate::kafka::protocol::batch;

pub const TOPIC: &str = "t";
/// Script codes: the batch is appended and not answered (`SILENT`), or appended and then
/// the connection closed without an answer (`CUT`).
pub const SILENT: i16 = i16::MIN;
pub const CUT: i16 = i16::MIN + 1;
/// How many of a partition's last batches the broker recognises when they come again.
const REMEMBERED: usize = 5;

/// What the broker saw and holds, shared with the test.
#[derive(Default)]
pub struct State {
    /// Each partition's values, in the order appended.
    pub logs: HashMap<i32, Vec<Vec<u8>>>,
    next_sequence: HashMap<i32, i32>,
    /// Each partition's last `REMEMBERED` batches' first sequences.
    recent: HashMap<i32, VecDeque<i32>>,
    /// Batches received so far (every partition's, resends included).
    pub batches_seen: usize,
    /// Batch number (counted from 0, as received) -> the error code it is answered with.
    pub fail: HashMap<usize, i16>,
    /// The most Produce requests the client had sent and not seen answered at once.
    pub most_in_flight: usize,
    held_once: bool,
}

pub struct Broker {
    pub addr: String,
    pub state: Arc<Mutex<State>>,
}

impl Broker {
    /// Starts the broker with `partitions` partitions. Before it answers a Produce, it
    /// reads what else the client sends meanwhile (until a second passes without a request
    /// before the first answer, a tenth of that later), to see how many it has in flight.
    pub fn start(partitions: i32, fail: HashMap<usize, i16>) -> Broker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            fail,
            ..State::default()
        }));
        let shared = state.clone();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let shared = shared.clone();
                std::thread::spawn(move || serve(conn, &shared, partitions, port));
            }
        });
        Broker { addr, state }
    }

    pub fn log(&self, partition: i32) -> Vec<Vec<u8>> {
        let state = self.state.lock().unwrap();
        state.logs.get(&partition).cloned().unwrap_or_default()
    }
}

fn serve(mut s: TcpStream, state: &Mutex<State>, partitions: i32, port: u16) {
    // Frames are read whole on a thread of their own, so waiting for more never cuts one.
    let (frames, arrived) = mpsc::channel();
    let Ok(mut reader) = s.try_clone() else { return };
    std::thread::spawn(move || {
        while let Ok(frame) = read_frame(&mut reader) {
            if frames.send(frame).is_err() {
                return;
            }
        }
    });
    let mut queued: VecDeque<Bytes> = VecDeque::new();
    loop {
        let mut frame = match queued.pop_front() {
            Some(f) => f,
            None => match arrived.recv() {
                Ok(f) => f,
                Err(_) => return,
            },
        };
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let api = ApiKey::try_from(key).unwrap();
        let header = RequestHeader::decode(&mut frame, api.request_header_version(version)).unwrap();
        let corr = header.correlation_id;
        match api {
            ApiKey::ApiVersions => {
                let keys = [
                    (ApiKey::ApiVersions, 0, 3),
                    (ApiKey::Metadata, 0, 12),
                    (ApiKey::InitProducerId, 0, 4),
                    (ApiKey::Produce, 3, 12),
                ]
                .map(|(k, min, max)| {
                    ApiVersion::default()
                        .with_api_key(k as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                });
                let resp = ApiVersionsResponse::default().with_api_keys(keys.to_vec());
                // A client's first ApiVersions may be newer than the broker answers in.
                let _ = respond(
                    &mut s,
                    Asked {
                        key,
                        version: version.min(3),
                        corr,
                    },
                    &resp,
                );
            }
            ApiKey::Metadata => {
                let broker = MetadataResponseBroker::default()
                    .with_node_id(BrokerId(0))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(port as i32);
                let parts = (0..partitions)
                    .map(|p| {
                        MetadataResponsePartition::default()
                            .with_partition_index(p)
                            .with_leader_id(BrokerId(0))
                    })
                    .collect();
                let topic = MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))
                    .with_partitions(parts);
                let resp = MetadataResponse::default()
                    .with_brokers(vec![broker])
                    .with_topics(vec![topic]);
                let _ = respond(&mut s, Asked { key, version, corr }, &resp);
            }
            ApiKey::InitProducerId => {
                let resp = InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(7))
                    .with_producer_epoch(0);
                let _ = respond(&mut s, Asked { key, version, corr }, &resp);
            }
            ApiKey::Produce => {
                let first = !std::mem::replace(&mut state.lock().unwrap().held_once, true);
                let quiet = Duration::from_millis(if first { 1000 } else { 100 });
                // Whatever the client sends before this answer.
                while let Ok(next) = arrived.recv_timeout(quiet) {
                    queued.push_back(next);
                }
                let waiting = queued
                    .iter()
                    .filter(|f| f[..2] == (ApiKey::Produce as i16).to_be_bytes())
                    .count();
                let mut seen = state.lock().unwrap();
                seen.most_in_flight = seen.most_in_flight.max(1 + waiting);
                drop(seen);
                let req = ProduceRequest::decode(&mut frame, version).unwrap();
                let resp = produce(&req, &mut state.lock().unwrap());
                let codes: Vec<i16> = resp
                    .responses
                    .iter()
                    .flat_map(|t| &t.partition_responses)
                    .map(|p| p.error_code)
                    .collect();
                if codes.contains(&CUT) {
                    // Shut down: the reading thread's handle would keep it open.
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    return;
                }
                if req.acks != 0 && !codes.contains(&SILENT) {
                    let _ = respond(&mut s, Asked { key, version, corr }, &resp);
                }
            }
            other => panic!("the scripted broker does not answer {other:?}"),
        }
    }
}

/// Appends each partition's batch unless the script or the sequence check refuses it.
fn produce(req: &ProduceRequest, state: &mut State) -> ProduceResponse {
    let topics = req.topic_data.iter().map(|t| {
        let parts = t.partition_data.iter().map(|p| {
            let records = p.records.clone().unwrap_or_default();
            let n = state.batches_seen;
            state.batches_seen += 1;
            let code = match state.fail.get(&n) {
                Some(&code) if code == SILENT || code == CUT => {
                    append(state, p.index, records);
                    code
                }
                Some(&code) => code,
                None => append(state, p.index, records),
            };
            PartitionProduceResponse::default()
                .with_index(p.index)
                .with_error_code(code)
        });
        TopicProduceResponse::default()
            .with_name(t.name.clone())
            .with_partition_responses(parts.collect())
    });
    ProduceResponse::default().with_responses(topics.collect())
}

/// Appends a batch's values; the error code (0: appended).
fn append(state: &mut State, partition: i32, records: Bytes) -> i16 {
    let be_i32 = |at: usize| i32::from_be_bytes(records[at..at + 4].try_into().unwrap());
    let (base_sequence, count) = (be_i32(53), be_i32(57));
    if base_sequence >= 0 {
        let next = state.next_sequence.entry(partition).or_default();
        let recent = state.recent.entry(partition).or_default();
        if base_sequence < *next && recent.contains(&base_sequence) {
            return 46; // DUPLICATE_SEQUENCE_NUMBER
        }
        if base_sequence != *next {
            return 45; // OUT_OF_ORDER_SEQUENCE_NUMBER
        }
        *next += count;
        recent.push_back(base_sequence);
        if recent.len() > REMEMBERED {
            recent.pop_front();
        }
    }
    let fetched = batch::decode_batches(records, 0, "scripted", &mut { usize::MAX }).unwrap();
    let log = state.logs.entry(partition).or_default();
    for mut b in fetched.batches {
        while let Some(r) = b.next_record().unwrap() {
            log.push(r.value.unwrap_or_default().to_vec());
        }
    }
    0
}
