//! Restarting a failed pipeline. A pipeline that fails with a retriable cause (`failure`:
//! a broken connection, a timeout, a retriable Kafka code, a call past its deadline) is
//! torn down and started again from scratch, both ends instantiated anew: a Kafka source
//! resumes from its group's commits, so what was read and not written comes again
//! (at-least-once). A permanent cause is never restarted. Pauses between restarts grow
//! exponentially with jitter (the connector's backoff, shared through `connector_format`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_format::backoff::Backoff;
use connector_format::duration::show;
use tokio::sync::watch;

use super::Endpoint;
use super::run::{self, Running};
use crate::failure::{Class, classify};
use crate::metrics::{PipelineMetrics, Status};

/// How a pipeline is restarted after a retriable failure (`restart = { ... }` in a
/// pipeline file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts in a row before the pipeline fails for good; 0: never restarted.
    pub attempts: u32,
    /// The first pause; each next one about twice as long, at most `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RestartPolicy {
    /// Why restarting a pipeline that failed with `class` after `in_row` restarts in a row
    /// is not done; `None`: restart it.
    fn refusal(&self, class: Class, in_row: u32, source: &Endpoint) -> Option<String> {
        Some(match class {
            Class::Permanent => "permanent: restarting cannot help".into(),
            Class::Retriable if self.attempts == 0 => {
                "retriable: a restart may help; restarts are off (restart.attempts = 0)".into()
            }
            Class::Retriable if in_row >= self.attempts => {
                format!("retriable: gave up after {in_row} restarts in a row")
            }
            // The records of the batch in hand would be lost with it.
            Class::Retriable if matches!(source, Endpoint::Stdio) => {
                "retriable, but stdin cannot be read again: not restarted".into()
            }
            Class::Retriable => return None,
        })
    }
}

/// Runs a pipeline until it finishes, drains, or fails in a way its policy does not
/// restart; its status ends in `m`.
pub(super) async fn supervise(mut p: Running, m: Arc<PipelineMetrics>, stop: watch::Receiver<bool>) {
    let policy = p.pipeline.restart.clone();
    let mut pauses = Backoff::new(policy.backoff, policy.max_backoff);
    let mut in_row = 0;
    let mut fresh = true;
    loop {
        let started = Instant::now();
        let ran = match fresh {
            true => run::drive(&mut p, &m, stop.clone()).await,
            false => match run::renew(&mut p).await {
                Ok(()) => run::drive(&mut p, &m, stop.clone()).await,
                Err(e) => Err(e),
            },
        };
        let Err(e) = ran else { return };
        let (class, why) = (classify(&e), run::failure_text(&p, &e));
        m.failed_with(class);
        // A run that lasted longer than the longest pause was not a crash loop.
        if started.elapsed() >= policy.max_backoff {
            (in_row, pauses) = (0, Backoff::new(policy.backoff, policy.max_backoff));
        }
        if let Some(note) = policy.refusal(class, in_row, &p.pipeline.source) {
            return m.set_status(Status::Failed(format!("{why} ({note})")));
        }
        in_row += 1;
        let pause = pauses.next_delay();
        crate::progress::log(&format!(
            "restart {in_row} of {} of pipeline {} in {}, after a {class} failure: {why}",
            policy.attempts,
            m.id(),
            show(pause)
        ));
        m.set_status(Status::Restarting);
        if stopped_within(stop.clone(), pause).await {
            return m.set_status(Status::Failed(format!(
                "{why} (retriable; not restarted: stopping)"
            )));
        }
        m.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        fresh = false;
    }
}

/// Waits `pause`; true when a stop was asked for meanwhile (or before).
async fn stopped_within(mut stop: watch::Receiver<bool>, pause: Duration) -> bool {
    let asked = async {
        // Without a stop (no signal handlers) nothing ends the pause early.
        if stop.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(pause) => false,
        _ = asked => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_retriable_failures_within_the_attempts_are_restarted() {
        let p = RestartPolicy::default();
        let kafka = Endpoint::Connector {
            component: None,
            config: vec![],
            at: "x".into(),
        };
        assert_eq!(p.refusal(Class::Retriable, 0, &kafka), None);
        assert_eq!(p.refusal(Class::Retriable, 4, &kafka), None);
        let gave_up = p.refusal(Class::Retriable, 5, &kafka).unwrap();
        assert!(gave_up.contains("gave up after 5 restarts"), "{gave_up}");
        let permanent = p.refusal(Class::Permanent, 0, &kafka).unwrap();
        assert!(permanent.starts_with("permanent"), "{permanent}");
        let off = RestartPolicy {
            attempts: 0,
            ..RestartPolicy::default()
        };
        assert!(
            off.refusal(Class::Retriable, 0, &kafka)
                .unwrap()
                .contains("restarts are off")
        );
        assert!(
            p.refusal(Class::Retriable, 0, &Endpoint::Stdio)
                .unwrap()
                .contains("stdin")
        );
    }
}
