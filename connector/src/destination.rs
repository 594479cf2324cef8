//! The destination: maps records to Kafka, partitions them, writes each write call's
//! batch and reports exactly how many records, from the start, are durably written.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::records::Record as KafkaRecord;

use crate::config::DestinationConfig;
use crate::error::{Error, Result};
use crate::kafka::batch;
use crate::kafka::cluster::Cluster;
use crate::kafka::partitioner::{self, Sticky};
use crate::kafka::producer::{self, PartitionBatch};
use crate::mapping;
use crate::record::Record;

pub struct Destination {
    config: DestinationConfig,
    cluster: Cluster,
    sticky: Sticky,
}

/// How a write ended: `written` records from the start are written; `error` is why the
/// next one was not.
#[derive(Debug)]
pub struct WriteOutcome {
    pub written: usize,
    pub error: Option<Error>,
}

impl Destination {
    /// Connects and checks that the topic exists.
    pub fn open(config: DestinationConfig) -> Result<Self> {
        let mut cluster = Cluster::connect(&config.client, config.delivery_timeout)?;
        cluster.topic(&config.topic)?;
        Ok(Destination {
            config,
            cluster,
            sticky: Sticky::default(),
        })
    }

    pub fn write(&mut self, records: Vec<Record>) -> WriteOutcome {
        let deadline = Instant::now() + self.config.delivery_timeout;
        let total = records.len();
        // The first record that cannot even be sent bounds what the write can report.
        let (parts, mut first_failure) = match self.partition(records) {
            Ok(v) => v,
            Err(e) => {
                return WriteOutcome {
                    written: 0,
                    error: Some(e),
                };
            }
        };
        let mut batches = Vec::new();
        let mut first_index = Vec::new();
        for (partition, recs) in parts {
            let indices: Vec<usize> = recs.iter().map(|(i, _)| *i).collect();
            let mut kafka: Vec<KafkaRecord> = recs.into_iter().map(|(_, r)| r).collect();
            match batch::encode(&mut kafka, -1) {
                Ok(records) => {
                    batches.push(PartitionBatch {
                        topic: self.config.topic.clone(),
                        partition,
                        records,
                    });
                    first_index.push(indices[0]);
                }
                Err(e) => keep_first(&mut first_failure, indices[0], e),
            }
        }
        let results = producer::produce(&mut self.cluster, &batches, self.config.acks, deadline);
        for (i, result) in results.into_iter().enumerate() {
            if let Err(e) = result {
                keep_first(&mut first_failure, first_index[i], e);
            }
        }
        match first_failure {
            None => WriteOutcome {
                written: total,
                error: None,
            },
            Some((index, e)) => WriteOutcome {
                written: index,
                error: Some(e),
            },
        }
    }

    /// Maps records to Kafka and groups them by partition, in order. Records from the
    /// first one that cannot be mapped on are left out, and that failure is returned.
    #[allow(clippy::type_complexity)]
    fn partition(
        &mut self,
        records: Vec<Record>,
    ) -> Result<(BTreeMap<i32, Vec<(usize, KafkaRecord)>>, Option<(usize, Error)>)> {
        let partitions = self.cluster.topic(&self.config.topic)?.leaders.len();
        let unkeyed = self.sticky.advance(partitions);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut parts: BTreeMap<i32, Vec<(usize, KafkaRecord)>> = BTreeMap::new();
        for (i, rec) in records.into_iter().enumerate() {
            let kafka = match mapping::to_kafka(rec, now_ms) {
                Ok(k) => k,
                Err(e) => return Ok((parts, Some((i, e)))),
            };
            let p = kafka
                .key
                .as_ref()
                .map_or(unkeyed, |k| partitioner::for_key(k, partitions));
            parts.entry(p).or_default().push((i, kafka));
        }
        Ok((parts, None))
    }

    pub fn teardown(&mut self) {
        self.cluster.close();
    }
}

fn keep_first(slot: &mut Option<(usize, Error)>, index: usize, e: Error) {
    if slot.as_ref().is_none_or(|(i, _)| index < *i) {
        *slot = Some((index, e));
    }
}
