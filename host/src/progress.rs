//! Everything the host tells a person on stderr: log lines (its own and the guests',
//! tagged `[tenant/pipeline/role]`) and pipeline progress. On a terminal the progress is a
//! live block redrawn in place below the log lines; otherwise it is a plain line per
//! pipeline now and then, so logs stay greppable.
//!
//! One thread writes stderr; everyone else hands it text through a bounded queue and never
//! waits for it: a reader of stderr that falls behind costs dropped lines (counted and
//! said), never a stalled pipeline.

use std::io::{IsTerminal, Write};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::metrics::{PipelineMetrics, Registry, Status};

struct Console {
    live: bool,
    /// Lines of the live block currently on screen.
    drawn: usize,
    block: Vec<String>,
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    live: false,
    drawn: 0,
    block: Vec::new(),
});

fn console() -> std::sync::MutexGuard<'static, Console> {
    CONSOLE.lock().unwrap_or_else(|p| p.into_inner())
}

enum Out {
    Text(Vec<u8>),
    /// Answer once everything before has been written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// Pieces of text the writer may be behind by.
const QUEUE: usize = 4096;

/// Pieces dropped because the writer was behind, not yet said.
static DROPPED: AtomicU64 = AtomicU64::new(0);

fn writer() -> &'static SyncSender<Out> {
    static TX: OnceLock<SyncSender<Out>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || write_all(rx));
        if spawned.is_err() {
            DROPPED.fetch_add(1, Relaxed);
        }
        tx
    })
}

fn write_all(rx: Receiver<Out>) {
    let mut err = std::io::stderr();
    for out in rx {
        match out {
            Out::Text(t) => drop(err.write_all(&t)),
            Out::Flush(done) => drop(done.send(())),
        }
    }
}

/// Hands `text` to the writer, or drops it if the writer is behind.
fn emit(mut text: Vec<u8>) {
    if text.is_empty() {
        return;
    }
    let dropped = DROPPED.swap(0, Relaxed);
    if dropped > 0 {
        let note = format!("[{dropped} pieces of log output dropped: stderr was not read fast enough]\n");
        text.splice(0..0, note.into_bytes());
    }
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = writer().try_send(Out::Text(text)) {
        DROPPED.fetch_add(dropped + 1, Relaxed);
    }
}

/// Waits (at most `limit`) until everything logged so far is written: before the process
/// exits.
pub fn flush(limit: Duration) {
    let deadline = Instant::now() + limit;
    let (done, wait) = std::sync::mpsc::channel();
    let mut out = Out::Flush(done);
    loop {
        match writer().try_send(out) {
            Ok(()) => break,
            Err(TrySendError::Full(o)) if Instant::now() < deadline => {
                out = o;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let _ = wait.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}

impl Console {
    fn clear(&mut self, err: &mut impl Write) {
        if self.drawn > 0 {
            let _ = write!(err, "\x1b[{}A\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn draw(&mut self, err: &mut impl Write) {
        for line in &self.block {
            let _ = writeln!(err, "{line}");
        }
        self.drawn = self.block.len();
    }
}

/// Writes one log line, above the live block when there is one.
pub fn log(line: &str) {
    let mut c = console();
    let mut text = Vec::with_capacity(line.len() + 1);
    c.clear(&mut text);
    let _ = writeln!(text, "{line}");
    if c.live {
        c.draw(&mut text);
    }
    emit(text);
}

/// Reports the registry's progress every `every` until `done` resolves: a live block on a
/// terminal (redrawn each second), else one log line per pipeline.
pub async fn report(reg: &Registry, every: Duration, done: impl Future<Output = ()>) {
    let live = std::io::stderr().is_terminal();
    console().live = live;
    let tick = if live { Duration::from_secs(1) } else { every };
    let mut last: Vec<Snapshot> = reg.iter().map(|m| Snapshot::of(m)).collect();
    // An interval too long to fall on any clock reports nothing until the end.
    let mut interval = tokio::time::Instant::now().checked_add(tick).and_then(|first| {
        first
            .checked_add(tick)
            .map(|_| tokio::time::interval_at(first, tick))
    });
    tokio::pin!(done);
    loop {
        tokio::select! {
            _ = &mut done => break,
            _ = next_tick(interval.as_mut()) => {}
        }
        let now: Vec<Snapshot> = reg.iter().map(|m| Snapshot::of(m)).collect();
        let lines: Vec<String> = reg
            .iter()
            .zip(last.iter().zip(&now))
            .map(|(m, (a, b))| line(m, a, b))
            .collect();
        last = now;
        if live {
            let mut c = console();
            let mut text = Vec::new();
            c.clear(&mut text);
            c.block = lines;
            c.draw(&mut text);
            emit(text);
        } else {
            lines.iter().for_each(|l| log(l));
        }
    }
    let mut c = console();
    let mut text = Vec::new();
    c.clear(&mut text);
    emit(text);
    c.live = false;
    c.block.clear();
}

/// The interval's next tick; never without one.
async fn next_tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(i) => drop(i.tick().await),
        None => std::future::pending().await,
    }
}

struct Snapshot {
    at: Instant,
    written: u64,
    bytes: u64,
}

impl Snapshot {
    fn of(m: &PipelineMetrics) -> Self {
        Snapshot {
            at: Instant::now(),
            written: m.written.load(Relaxed),
            bytes: m.bytes.load(Relaxed),
        }
    }
}

fn line(m: &PipelineMetrics, a: &Snapshot, b: &Snapshot) -> String {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    let rate = (b.written - a.written) as f64 / secs;
    let mib = (b.bytes - a.bytes) as f64 / secs / (1 << 20) as f64;
    let lag = m.lag().map_or("-".to_string(), |l| l.to_string());
    // A failed pipeline says whether running it again could help.
    let status = match (m.status(), m.last_failure()) {
        (Status::Failed(_), Some(class)) => format!("failed ({class})"),
        (s, _) => s.word().to_string(),
    };
    format!(
        "progress {}: {status} {rate:.0} rec/s {mib:.2} MiB/s lag {lag} written {} errors {} restarts {}",
        m.id(),
        b.written,
        m.errors.load(Relaxed),
        m.restarts.load(Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Class;

    #[test]
    fn a_progress_line_counts_restarts_and_says_a_failures_class() {
        let m = PipelineMetrics::new("acme", "orders");
        m.restarts.store(2, Relaxed);
        m.set_status(Status::Restarting);
        let s = Snapshot::of(&m);
        let shown = line(&m, &s, &s);
        assert!(shown.starts_with("progress acme/orders: restarting "), "{shown}");
        assert!(shown.ends_with(" restarts 2"), "{shown}");
        m.failed_with(Class::Permanent);
        m.set_status(Status::Failed("refused".into()));
        let shown = line(&m, &s, &s);
        assert!(
            shown.starts_with("progress acme/orders: failed (permanent) "),
            "{shown}"
        );
    }
}
