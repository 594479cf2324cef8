//! The two ends of a pipeline behind one shape each, whether a connector instance or
//! OpenCDC JSON Lines (a file, stdin, stdout).

use anyhow::{Context, Result};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::batch::{DataRef, RecordBatch, RecordRef};
use crate::opencdc_json;
use crate::runtime::{Destination, Instance, Source};
use crate::wit::Record;

/// Where a pipeline's records come from.
pub enum SourceEnd {
    Connector(Box<Source>),
    Lines(LinesIn),
}

/// JSON Lines read a batch at a time; a record's position is its line number unless the
/// line carries one.
pub struct LinesIn {
    reader: Box<dyn AsyncBufRead + Unpin + Send>,
    /// How messages name it: a path, or `stdin`.
    name: String,
    line: u64,
    eof: bool,
}

impl LinesIn {
    pub fn new(reader: Box<dyn AsyncBufRead + Unpin + Send>, name: &str) -> Self {
        LinesIn {
            reader,
            name: name.to_string(),
            line: 0,
            eof: false,
        }
    }

    async fn read(&mut self, max: u32) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        let mut text = String::new();
        while records.len() < max as usize && !self.eof {
            text.clear();
            if self.reader.read_line(&mut text).await? == 0 {
                self.eof = true;
                break;
            }
            self.line += 1;
            if text.trim().is_empty() {
                continue;
            }
            let at = || format!("{}:{}", self.name, self.line);
            let value: serde_json::Value = serde_json::from_str(&text).with_context(at)?;
            let mut record = opencdc_json::from_json(&value).with_context(at)?;
            if record.position.is_empty() {
                record.position = self.line.to_be_bytes().to_vec();
            }
            records.push(record);
        }
        Ok(records)
    }
}

impl SourceEnd {
    /// Up to `max` records, waiting at most `wait_ms` for a connector's first one. They
    /// stay packed from source to destination.
    pub async fn read(&mut self, max: u32, wait_ms: u32) -> Result<RecordBatch> {
        match self {
            SourceEnd::Connector(s) => s.read_batch(max, wait_ms).await,
            SourceEnd::Lines(l) => RecordBatch::pack(&l.read(max).await?),
        }
    }

    /// Records the source has not handed out yet, if it knows.
    pub async fn lag(&mut self) -> Result<Option<u64>> {
        match self {
            SourceEnd::Connector(s) => s.lag().await,
            SourceEnd::Lines(_) => Ok(None),
        }
    }

    /// Whether the source has nothing more, ever (the end of a file).
    pub fn exhausted(&self) -> bool {
        matches!(self, SourceEnd::Lines(l) if l.eof)
    }

    pub async fn ack<'p>(&mut self, positions: impl IntoIterator<Item = &'p [u8]>) -> Result<()> {
        match self {
            SourceEnd::Connector(s) => s.ack_batch(positions).await,
            SourceEnd::Lines(_) => Ok(()),
        }
    }

    pub async fn teardown(&mut self) -> Result<()> {
        match self {
            SourceEnd::Connector(s) => s.teardown().await,
            SourceEnd::Lines(_) => Ok(()),
        }
    }

    pub fn instance(&self) -> Option<&Instance> {
        match self {
            SourceEnd::Connector(s) => Some(s.instance()),
            SourceEnd::Lines(_) => None,
        }
    }
}

/// Where a pipeline's records go.
pub enum DestEnd {
    Connector(Box<Destination>),
    Lines(Box<dyn AsyncWrite + Unpin + Send>),
}

impl DestEnd {
    /// Writes `records` in order: how many were written, and why the next was not.
    pub async fn write(&mut self, records: &RecordBatch) -> Result<(usize, Option<String>)> {
        match self {
            DestEnd::Connector(d) => {
                let (n, err) = d.write_batch(records).await?;
                Ok((n as usize, err.map(|e| e.to_string())))
            }
            DestEnd::Lines(out) => {
                let mut buf = Vec::with_capacity(records.len() * 256);
                for r in records.iter() {
                    serde_json::to_writer(&mut buf, &opencdc_json::to_json(&r.to_record())?)?;
                    buf.push(b'\n');
                }
                out.write_all(&buf).await?;
                out.flush().await?;
                Ok((records.len(), None))
            }
        }
    }

    pub async fn teardown(&mut self) -> Result<()> {
        match self {
            DestEnd::Connector(d) => d.teardown().await,
            DestEnd::Lines(out) => Ok(out.flush().await?),
        }
    }

    pub fn instance(&self) -> Option<&Instance> {
        match self {
            DestEnd::Connector(d) => Some(d.instance()),
            DestEnd::Lines(_) => None,
        }
    }
}

/// The bytes of a record's key and payload, as counted in throughput figures.
pub fn record_bytes(r: &RecordRef<'_>) -> u64 {
    let len = |d: Option<DataRef>| d.map_or(0, |d| d.as_bytes().len());
    (len(r.key()) + len(r.before()) + len(r.after())) as u64
}
