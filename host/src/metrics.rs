//! What each pipeline did: counters the pipeline task bumps and everyone else reads
//! (the progress display, the summary, the Prometheus endpoint). Lock-free except the
//! status, which changes a few times per run.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::failure::Class;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Where a pipeline is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Starting,
    Running,
    /// Failed with a retriable cause; waiting to start again (see `pipeline::restart`).
    Restarting,
    /// Stopping on a signal: finishing the batch in hand, committing, tearing down.
    Draining,
    /// Drained after a signal; a restart continues where it stopped.
    Stopped,
    /// Ran out of input or reached its stop condition.
    Finished,
    Failed(String),
}

impl Status {
    pub fn word(&self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Draining => "draining",
            Status::Stopped => "stopped",
            Status::Finished => "finished",
            Status::Failed(_) => "failed",
        }
    }
}

pub struct PipelineMetrics {
    pub tenant: String,
    pub name: String,
    pub read: AtomicU64,
    pub written: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    /// Records the source has not delivered yet, as it last reported; -1: unknown.
    pub lag: AtomicI64,
    /// Times the pipeline was started again after a failure.
    pub restarts: AtomicU64,
    status: Mutex<Status>,
    /// The class of its last failure, if it failed.
    last_failure: Mutex<Option<Class>>,
}

impl PipelineMetrics {
    pub fn new(tenant: &str, name: &str) -> Arc<Self> {
        Arc::new(PipelineMetrics {
            tenant: tenant.to_string(),
            name: name.to_string(),
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            lag: AtomicI64::new(-1),
            restarts: AtomicU64::new(0),
            status: Mutex::new(Status::Starting),
            last_failure: Mutex::new(None),
        })
    }

    pub fn id(&self) -> String {
        format!("{}/{}", self.tenant, self.name)
    }

    pub fn status(&self) -> Status {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_status(&self, s: Status) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    pub fn lag(&self) -> Option<u64> {
        u64::try_from(self.lag.load(Relaxed)).ok()
    }

    /// Notes a failure of the pipeline, of `class` (it may still be restarted).
    pub fn failed_with(&self, class: Class) {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(class);
    }

    pub fn last_failure(&self) -> Option<Class> {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The exit code of a run: 0 when no pipeline failed, 75 (`EX_TEMPFAIL`: try again later)
/// when every failure had a retriable cause, else 1.
pub fn exit_code(reg: &Registry) -> i32 {
    let failed = reg.iter().filter(|m| matches!(m.status(), Status::Failed(_)));
    failed.fold(0, |code, m| match (code, m.last_failure()) {
        (0 | 75, Some(Class::Retriable)) => 75,
        _ => 1,
    })
}

/// Every pipeline of the process.
pub type Registry = Vec<Arc<PipelineMetrics>>;

/// The registry in the Prometheus text exposition format (version 0.0.4).
pub fn prometheus_text(reg: &Registry) -> String {
    type Get = fn(&PipelineMetrics) -> Option<u64>;
    let families: [(&str, &str, &str, Get); 9] = [
        (
            "records_read_total",
            "counter",
            "Records read by the pipeline's source.",
            |m| Some(m.read.load(Relaxed)),
        ),
        (
            "records_written_total",
            "counter",
            "Records written by the pipeline's destination.",
            |m| Some(m.written.load(Relaxed)),
        ),
        (
            "bytes_written_total",
            "counter",
            "Key and payload bytes of the records written.",
            |m| Some(m.bytes.load(Relaxed)),
        ),
        ("errors_total", "counter", "Failed reads and writes.", |m| {
            Some(m.errors.load(Relaxed))
        }),
        (
            "consumer_lag_records",
            "gauge",
            "Records the source has not delivered yet.",
            |m| m.lag(),
        ),
        ("pipeline_running", "gauge", "1 while the pipeline runs.", |m| {
            Some((m.status() == Status::Running) as u64)
        }),
        ("pipeline_failed", "gauge", "1 once the pipeline failed.", |m| {
            Some(matches!(m.status(), Status::Failed(_)) as u64)
        }),
        (
            "pipeline_restarts_total",
            "counter",
            "Times the pipeline was started again after a retriable failure.",
            |m| Some(m.restarts.load(Relaxed)),
        ),
        (
            "pipeline_last_failure_permanent",
            "gauge",
            "Whether the pipeline's last failure was permanent (1: restarting cannot help) or retriable (0); absent before its first.",
            |m| m.last_failure().map(|c| (c == Class::Permanent) as u64),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in families {
        let _ = writeln!(
            out,
            "# HELP connector_{name} {help}\n# TYPE connector_{name} {kind}"
        );
        for m in reg {
            if let Some(v) = get(m) {
                let (t, p) = (label(&m.tenant), label(&m.name));
                let _ = writeln!(out, "connector_{name}{{tenant=\"{t}\",pipeline=\"{p}\"}} {v}");
            }
        }
    }
    out
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Serves `GET /metrics` on `addr` until the process ends; returns the bound address.
pub async fn serve(addr: SocketAddr, reg: Arc<Registry>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let reg = reg.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 2048];
                let n = conn.read(&mut head).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&head[..n]);
                let response = match request.split_whitespace().nth(1) {
                    Some("/metrics") => {
                        let body = prometheus_text(&reg);
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    _ => {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                    }
                };
                let _ = conn.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_one_sample_per_pipeline_and_escapes_labels() {
        let a = PipelineMetrics::new("acme", "orders");
        a.written.store(42, Relaxed);
        a.set_status(Status::Running);
        let b = PipelineMetrics::new("t\"x", "p");
        b.lag.store(7, Relaxed);
        let text = prometheus_text(&vec![a, b]);
        assert!(text.contains("# TYPE connector_records_written_total counter"));
        assert!(text.contains("connector_records_written_total{tenant=\"acme\",pipeline=\"orders\"} 42"));
        assert!(text.contains("connector_pipeline_running{tenant=\"acme\",pipeline=\"orders\"} 1"));
        assert!(text.contains("connector_consumer_lag_records{tenant=\"t\\\"x\",pipeline=\"p\"} 7"));
        assert!(!text.contains("connector_consumer_lag_records{tenant=\"acme\""));
    }

    #[test]
    fn restarts_and_the_last_failures_class_are_exported() {
        let a = PipelineMetrics::new("acme", "orders");
        a.restarts.store(2, Relaxed);
        a.failed_with(Class::Retriable);
        let b = PipelineMetrics::new("acme", "refused");
        b.failed_with(Class::Permanent);
        let c = PipelineMetrics::new("acme", "fine");
        let text = prometheus_text(&vec![a, b, c]);
        assert!(text.contains("connector_pipeline_restarts_total{tenant=\"acme\",pipeline=\"orders\"} 2"));
        assert!(
            text.contains("connector_pipeline_last_failure_permanent{tenant=\"acme\",pipeline=\"orders\"} 0")
        );
        assert!(
            text.contains(
                "connector_pipeline_last_failure_permanent{tenant=\"acme\",pipeline=\"refused\"} 1"
            )
        );
        assert!(
            !text.contains("connector_pipeline_last_failure_permanent{tenant=\"acme\",pipeline=\"fine\"}")
        );
    }

    #[test]
    fn the_exit_code_says_whether_trying_again_may_help() {
        let failed = |class| {
            let m = PipelineMetrics::new("t", "p");
            m.failed_with(class);
            m.set_status(Status::Failed("x".into()));
            m
        };
        let fine = PipelineMetrics::new("t", "ok");
        fine.set_status(Status::Finished);
        assert_eq!(exit_code(&vec![fine.clone()]), 0);
        assert_eq!(exit_code(&vec![fine.clone(), failed(Class::Retriable)]), 75);
        let both = vec![
            failed(Class::Retriable),
            failed(Class::Permanent),
            failed(Class::Retriable),
        ];
        assert_eq!(exit_code(&both), 1);
        // Restarted after a failure and finished: no failure to report.
        fine.failed_with(Class::Retriable);
        assert_eq!(exit_code(&vec![fine]), 0);
    }
}
