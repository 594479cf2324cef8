//! The two ends of a pipeline behind one shape each, whether a connector instance or
//! OpenCDC JSON Lines (a file, stdin, stdout), or text for people on stdout.

use anyhow::{Context, Result, anyhow};
use connector_format::{Record, opencdc_json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use super::{Endpoint, text};
use crate::batch::{DataRef, RecordBatch, RecordRef};
use crate::runtime::{Destination, Instance, Source};

/// The longest line read: input without newlines (`/dev/zero`, a runaway writer) would
/// otherwise grow one line until the process, and every tenant's pipeline, is killed.
const MAX_LINE: usize = 16 << 20;

/// How much JSON a file destination gathers before it writes.
const WRITE_PIECE: usize = 1 << 20;

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
    /// Bytes of lines one batch takes at most (after its first line): what a batch costs
    /// the host is bounded like a connector's.
    batch_bytes: usize,
}

impl LinesIn {
    /// `batch_bytes`: see the field; a quarter of the pipeline's memory limit, since a line
    /// is held as text, as parsed JSON, as a record and packed.
    pub fn new(reader: Box<dyn AsyncBufRead + Unpin + Send>, name: &str, batch_bytes: usize) -> Self {
        LinesIn {
            reader,
            name: name.to_string(),
            line: 0,
            eof: false,
            batch_bytes,
        }
    }

    async fn read(&mut self, max: u32) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        let mut text = Vec::new();
        let mut bytes = 0;
        let line_max = MAX_LINE.min(self.batch_bytes.max(1 << 10));
        while records.len() < max as usize && !self.eof && bytes < self.batch_bytes {
            text.clear();
            let read = read_line_capped(&mut self.reader, &mut text, line_max).await;
            if read.with_context(|| format!("{}:{}", self.name, self.line + 1))? == 0 {
                self.eof = true;
                break;
            }
            self.line += 1;
            bytes += text.len();
            if text.trim_ascii().is_empty() {
                continue;
            }
            let at = || format!("{}:{}", self.name, self.line);
            let mut record = opencdc_json::read(&text).with_context(at)?;
            if record.position.is_empty() {
                record.position = self.line.to_be_bytes().to_vec();
            }
            records.push(record);
        }
        Ok(records)
    }
}

/// Appends one line, with its newline, to `line`: its length, 0 at the end of input. A
/// line of more than `max` bytes (newline aside) is an error, and never held in full.
async fn read_line_capped<R>(reader: &mut R, line: &mut Vec<u8>, max: usize) -> std::io::Result<usize>
where
    R: AsyncBufRead + Unpin + ?Sized,
{
    loop {
        let chunk = reader.fill_buf().await?;
        let newline = chunk.iter().position(|&b| b == b'\n');
        let take = newline.map_or(chunk.len(), |i| i + 1);
        let done = newline.is_some() || chunk.is_empty();
        if line.len() + take - usize::from(newline.is_some()) > max {
            let size = match max >> 20 {
                0 => format!("{} KiB", max >> 10),
                mib => format!("{mib} MiB"),
            };
            return Err(std::io::Error::other(format!("a line longer than {size}")));
        }
        line.extend_from_slice(&chunk[..take]);
        reader.consume(take);
        if done {
            return Ok(line.len());
        }
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
    /// OpenCDC JSON Lines.
    Lines(Box<dyn AsyncWrite + Unpin + Send>),
    /// Text for people, a line per record (`text::write_line`).
    Text(Box<dyn AsyncWrite + Unpin + Send>),
}

impl DestEnd {
    /// The process's stdout, as `end` (`Stdio` or `Text`) asks.
    pub fn stdout(end: &Endpoint) -> Self {
        match end {
            Endpoint::Text => DestEnd::Text(Box::new(tokio::io::stdout())),
            _ => DestEnd::Lines(Box::new(tokio::io::stdout())),
        }
    }

    /// Writes `records` in order: how many were written, and why the next was not. A
    /// connector's count is checked, not trusted (see `checked`).
    pub async fn write(&mut self, records: &RecordBatch) -> Result<(usize, Option<anyhow::Error>)> {
        match self {
            DestEnd::Connector(d) => {
                let (n, err) = d.write_batch(records).await?;
                checked(
                    d.instance().tag(),
                    n as usize,
                    records.len(),
                    err.map(anyhow::Error::new),
                )
            }
            DestEnd::Lines(out) => write_lines(out, records, |r, buf| opencdc_json::write_line(r, buf)).await,
            DestEnd::Text(out) => {
                let text = |r: &RecordRef<'_>, buf: &mut Vec<u8>| {
                    text::write_line(r, buf);
                    Ok(())
                };
                write_lines(out, records, text).await
            }
        }
    }

    pub async fn teardown(&mut self) -> Result<()> {
        match self {
            DestEnd::Connector(d) => d.teardown().await,
            DestEnd::Lines(out) | DestEnd::Text(out) => Ok(out.flush().await?),
        }
    }

    pub fn instance(&self) -> Option<&Instance> {
        match self {
            DestEnd::Connector(d) => Some(d.instance()),
            DestEnd::Lines(_) | DestEnd::Text(_) => None,
        }
    }
}

/// A destination's write outcome, held to the contract: `written` records from the start
/// of the `total` given, and an error when not all. More than it was given would count
/// and ack records never written; fewer with no error would skip the rest silently. Both
/// are the tenant component's fault, and said so with the numbers: the first fails the
/// pipeline before anything of the batch is acked, the second after the prefix is.
fn checked(
    tag: &str,
    written: usize,
    total: usize,
    error: Option<anyhow::Error>,
) -> Result<(usize, Option<anyhow::Error>)> {
    let broke = |what: String| format!("connector {tag} broke the write contract: {what}");
    match (written.cmp(&total), error) {
        (std::cmp::Ordering::Greater, _) => Err(anyhow!(broke(format!(
            "reported {written} of {total} records written"
        )))),
        (std::cmp::Ordering::Less, None) => Ok((
            written,
            Some(anyhow!(broke(format!(
                "wrote {written} of {total} records and gave no error for the rest"
            )))),
        )),
        (_, error) => Ok((written, error)),
    }
}

/// Writes `records` a line each, as `line` makes them, a piece at a time: what a batch
/// becomes as text is never held whole.
async fn write_lines(
    out: &mut (dyn AsyncWrite + Unpin + Send),
    records: &RecordBatch,
    line: impl Fn(&RecordRef<'_>, &mut Vec<u8>) -> connector_format::Result<()>,
) -> Result<(usize, Option<anyhow::Error>)> {
    let mut buf = Vec::with_capacity(WRITE_PIECE + (WRITE_PIECE >> 2));
    for (i, r) in records.iter().enumerate() {
        if let Err(e) = line(&r, &mut buf) {
            out.write_all(&buf).await?;
            out.flush().await?;
            return Ok((i, Some(anyhow::Error::new(e))));
        }
        if buf.len() >= WRITE_PIECE {
            out.write_all(&buf).await?;
            buf.clear();
        }
    }
    out.write_all(&buf).await?;
    out.flush().await?;
    Ok((records.len(), None))
}

/// The bytes of a record's key and payload, as counted in throughput figures.
pub fn record_bytes(r: &RecordRef<'_>) -> u64 {
    let len = |d: Option<DataRef>| d.map_or(0, |d| d.as_bytes().len());
    (len(r.key()) + len(r.before()) + len(r.after())) as u64
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, BufReader};

    use super::*;

    #[tokio::test]
    async fn an_endless_line_is_refused_with_bounded_memory() {
        let endless = BufReader::new(tokio::io::repeat(b'x'));
        let mut lines = LinesIn::new(
            Box::new(BufReader::new(&b"\n\n"[..]).chain(endless)),
            "mem",
            1 << 30,
        );
        let e = lines.read(10).await.expect_err("a too-long line fails");
        assert_eq!(format!("{e:#}"), "mem:3: a line longer than 16 MiB");

        let mut endless = BufReader::new(tokio::io::repeat(b'x'));
        let mut line = Vec::new();
        assert!(read_line_capped(&mut endless, &mut line, 1000).await.is_err());
        assert!(line.len() <= 1000, "{}", line.len());
    }

    #[test]
    fn a_write_outcome_past_the_batch_or_short_without_a_reason_is_the_components_fault() {
        let tag = "evil/p/destination";
        let e = checked(tag, 11, 10, None).unwrap_err().to_string();
        assert_eq!(
            e,
            "connector evil/p/destination broke the write contract: reported 11 of 10 records written"
        );
        let x = || Some(anyhow!("x"));
        assert!(checked(tag, 11, 10, x()).is_err());
        let (n, why) = checked(tag, 3, 10, None).unwrap();
        assert_eq!(n, 3, "the prefix written is acked");
        let why = why.expect("a reason the host gives").to_string();
        assert!(
            why.contains("wrote 3 of 10 records and gave no error for the rest"),
            "{why}"
        );
        let (n, why) = checked(tag, 3, 10, x()).unwrap();
        assert_eq!((n, why.map(|e| e.to_string())), (3, Some("x".into())));
        let (n, why) = checked(tag, 10, 10, None).unwrap();
        assert!(n == 10 && why.is_none());
    }

    #[tokio::test]
    async fn lines_up_to_the_cap_are_read_whole() {
        let mut input = BufReader::with_capacity(3, &b"ab\ncde\nf"[..]);
        let mut line = Vec::new();
        for want in ["ab\n", "cde\n", "f", ""] {
            line.clear();
            let n = read_line_capped(&mut input, &mut line, 3).await.unwrap();
            assert_eq!((n, line.as_slice()), (want.len(), want.as_bytes()));
        }
        let mut input = BufReader::new(&b"abcd\n"[..]);
        assert!(read_line_capped(&mut input, &mut Vec::new(), 3).await.is_err());
    }
}
