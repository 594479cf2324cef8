//! The source: reads every partition of its topic, hands out records in batches, and
//! takes acks for them.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::SourceConfig;
use crate::error::{Error, Result};
use crate::kafka::cluster::Cluster;
use crate::kafka::fetcher::Fetcher;
use crate::mapping::{self, Position};
use crate::record::Record;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Source {
    config: SourceConfig,
    cluster: Cluster,
    fetcher: Fetcher,
    buffer: VecDeque<Record>,
}

impl Source {
    /// Connects and positions every partition: after `position` for its partition, else
    /// at the beginning or the end as `readFromBeginning` says.
    pub fn open(config: SourceConfig, position: Option<&[u8]>) -> Result<Self> {
        let mut start = BTreeMap::new();
        if let Some(bytes) = position {
            let pos = Position::decode(bytes)?;
            if pos.topic == config.topic {
                start.insert(pos.partition, pos.offset + 1);
            }
        }
        let mut cluster = Cluster::connect(&config.client, REQUEST_TIMEOUT)?;
        let fetcher = Fetcher::new(&mut cluster, &config.topic, start, config.read_from_beginning)?;
        Ok(Source {
            config,
            cluster,
            fetcher,
            buffer: VecDeque::new(),
        })
    }

    /// Up to `max` records, waiting at most `wait` for the first.
    pub fn read(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        let deadline = Instant::now() + wait;
        while self.buffer.is_empty() {
            let fetched = self.fetcher.poll(&mut self.cluster, deadline)?;
            let read_at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            let topic = &self.config.topic;
            self.buffer.extend(
                fetched
                    .into_iter()
                    .map(|(p, r)| mapping::from_kafka(topic, p, r, read_at)),
            );
            if Instant::now() >= deadline {
                break;
            }
        }
        let n = max.min(self.buffer.len());
        Ok(self.buffer.drain(..n).collect())
    }

    /// Takes acks for records this source handed out. Without a consumer group there is
    /// nothing to commit yet: an ack is checked to be one of this source's positions.
    pub fn ack(&mut self, positions: &[Vec<u8>]) -> Result<()> {
        for p in positions {
            let pos = Position::decode(p)?;
            if pos.topic != self.config.topic {
                return Err(Error::InvalidState(format!(
                    "ack for topic {} read by no one here",
                    pos.topic
                )));
            }
        }
        Ok(())
    }

    pub fn teardown(&mut self) {
        self.cluster.close();
    }
}
