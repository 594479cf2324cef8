//! Everything the host tells a person on stderr: log lines (its own and the guests',
//! tagged `[tenant/pipeline/role]`) and pipeline progress. On a terminal the progress is a
//! live block redrawn in place below the log lines; otherwise it is a plain line per
//! pipeline now and then, so logs stay greppable.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::metrics::{PipelineMetrics, Registry};

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
    let mut err = std::io::stderr().lock();
    c.clear(&mut err);
    let _ = writeln!(err, "{line}");
    if c.live {
        c.draw(&mut err);
    }
}

/// Reports the registry's progress every `every` until `done` resolves: a live block on a
/// terminal (redrawn each second), else one log line per pipeline.
pub async fn report(reg: &Registry, every: Duration, done: impl Future<Output = ()>) {
    let live = std::io::stderr().is_terminal();
    console().live = live;
    let tick = if live { Duration::from_secs(1) } else { every };
    let mut last: Vec<Snapshot> = reg.iter().map(|m| Snapshot::of(m)).collect();
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    tokio::pin!(done);
    loop {
        tokio::select! {
            _ = &mut done => break,
            _ = interval.tick() => {}
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
            let mut err = std::io::stderr().lock();
            c.clear(&mut err);
            c.block = lines;
            c.draw(&mut err);
        } else {
            lines.iter().for_each(|l| log(l));
        }
    }
    let mut c = console();
    c.clear(&mut std::io::stderr().lock());
    c.live = false;
    c.block.clear();
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
    format!(
        "progress {}: {} {rate:.0} rec/s {mib:.2} MiB/s lag {lag} written {} errors {}",
        m.id(),
        m.status().word(),
        b.written,
        m.errors.load(Relaxed)
    )
}
