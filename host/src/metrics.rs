//! What each pipeline did: counters the pipeline task bumps and everyone else reads
//! (the progress display, the summary, the Prometheus endpoint). Lock-free except the
//! status, which changes a few times per run.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::failure::Class;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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

/// How long a client may take to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one connection may last in all, answer included: a client that reads the
/// answer slowly is not kept for ever.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; more wait in the listen backlog until one ends (within the
/// timeouts above), so idle connections delay a scrape at most that long.
const MAX_CONNECTIONS: usize = 64;

/// The most a request's head (request line and headers) may take, in bytes.
const MAX_HEAD: usize = 16 << 10;

/// Serves the registry over HTTP/1 at `addr` until the process ends: `GET` or `HEAD` of
/// `/metrics` gets the Prometheus text, another path 404, another method 405. One request
/// per connection; a request's body is never read. Returns the bound address.
pub async fn serve(addr: SocketAddr, reg: Arc<Registry>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let conn = match listener.accept().await {
                Ok((conn, _)) => conn,
                // Out of descriptors, say: try again shortly rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let reg = reg.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let answer =
                    service_fn(move |req| std::future::ready(Ok::<_, Infallible>(answer(&req, &reg))));
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(false)
                    .max_buf_size(MAX_HEAD)
                    .serve_connection(TokioIo::new(conn), answer);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, served).await;
            });
        }
    });
    Ok(bound)
}

/// The answer to one request (its body unread).
fn answer<B>(req: &Request<B>, reg: &Registry) -> Response<String> {
    let respond = |status: StatusCode, body: String| {
        let mut r = Response::new(body);
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return respond(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n".into(),
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = respond(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = respond(StatusCode::OK, prometheus_text(reg));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
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

    /// A server of one pipeline's metrics on a free port.
    async fn server() -> SocketAddr {
        let m = PipelineMetrics::new("acme", "orders");
        m.written.store(42, Relaxed);
        serve("127.0.0.1:0".parse().unwrap(), Arc::new(vec![m]))
            .await
            .unwrap()
    }

    /// Far more than anything here takes: only a hang reaches it.
    const HANG: Duration = Duration::from_secs(60);

    /// Sends `parts` with a pause after each, then reads the answer to its end.
    async fn ask(addr: SocketAddr, parts: &[&str]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        for part in parts {
            conn.write_all(part.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut answer = Vec::new();
        let read = tokio::time::timeout(HANG, conn.read_to_end(&mut answer)).await;
        read.expect("the server answers and closes").unwrap();
        String::from_utf8(answer).unwrap()
    }

    const SCRAPE: &str = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

    #[tokio::test]
    async fn a_request_in_two_segments_is_answered() {
        let addr = server().await;
        let answer = ask(addr, &["GET /met", "rics HTTP/1.1\r\nHost: x\r\n\r\n"]).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains("content-type: text/plain; version=0.0.4"),
            "{answer}"
        );
        assert!(answer.contains("connector_records_written_total{tenant=\"acme\",pipeline=\"orders\"} 42"));
    }

    #[tokio::test]
    async fn other_methods_get_405_other_paths_404_and_head_no_body() {
        let addr = server().await;
        // A body announced as 1 GiB and never sent: refused without waiting for it.
        let post = ask(
            addr,
            &["POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\nab"],
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{post}");
        assert!(post.contains("allow: GET, HEAD"), "{post}");
        let other = ask(addr, &["GET /other HTTP/1.1\r\nHost: x\r\n\r\n"]).await;
        assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
        let head = ask(addr, &["HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"]).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(!head.contains("connector_records_written_total"), "{head}");
    }

    #[tokio::test]
    async fn a_client_that_never_ends_its_headers_is_dropped() {
        let addr = server().await;
        // `ask` reads to the end: it returns only once the server closed the connection.
        let answer = ask(addr, &["GET /metrics HTTP/1.1\r\nHost: x\r\n"]).await;
        assert!(!answer.contains("200 OK"), "{answer}");
    }

    #[tokio::test]
    async fn idle_connections_past_the_bound_do_not_keep_a_scrape_out() {
        let addr = server().await;
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 16 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let answer = ask(addr, &[SCRAPE]).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        drop(idle);
    }
}
