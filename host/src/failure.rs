//! Whether a failure is worth another try: every error a pipeline can end with is
//! permanent (the same run would fail the same way until someone changes a setting, the
//! allowlist, a limit or the data) or retriable (the remote system may answer next time).
//! One function, `classify`, decides it for the connector's errors and the host's own
//! (a trap, a limit, a deadline); the restart policy and what a failed pipeline says use it.

use std::fmt;

use crate::runtime::{GuestError, wit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retrying cannot help until something is changed.
    Permanent,
    /// The same run may succeed later.
    Retriable,
}

impl Class {
    pub fn word(self) -> &'static str {
        match self {
            Class::Permanent => "permanent",
            Class::Retriable => "retriable",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// An instance the host stopped (a trap, a limit hit, a deadline passed, something it
/// returned that the host refuses), with the class of that cause.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub why: String,
    pub class: Class,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for Stopped {}

/// The class of an error a connector returned. Its word is taken as it is: a tenant's
/// component could call anything retriable, and the restart policy bounds what that costs.
pub fn of_guest(e: &wit::Error) -> Class {
    use wit::Error::*;
    match e {
        Connection(_) | Timeout(_) | CorruptData(_) => Class::Retriable,
        Remote(r) if r.retriable => Class::Retriable,
        // Authentication (58), authorization (29-31) and the other codes Kafka marks final.
        Remote(_) => Class::Permanent,
        NotPermitted(_) | InvalidConfig(_) | Tls(_) | RecordTooLarge(_) | InvalidRecord(_) => {
            Class::Permanent
        }
        InvalidState(_) | Other(_) => Class::Permanent,
    }
}

/// The class of anything a pipeline failed with: the first connector error or stopped
/// instance among its causes; anything else (a bad input line, a file that cannot be
/// written, a count the host refuses) is permanent.
pub fn classify(e: &anyhow::Error) -> Class {
    e.chain()
        .find_map(|cause| {
            cause
                .downcast_ref::<GuestError>()
                .map(|g| of_guest(&g.0))
                .or_else(|| cause.downcast_ref::<Stopped>().map(|s| s.class))
        })
        .unwrap_or(Class::Permanent)
}

#[cfg(test)]
mod tests {
    use anyhow::{Context, anyhow};

    use super::*;

    fn remote(code: i32, name: &str, retriable: bool) -> wit::Error {
        wit::Error::Remote(wit::RemoteError {
            code,
            name: name.into(),
            message: String::new(),
            retriable,
        })
    }

    fn guest(e: wit::Error) -> anyhow::Error {
        anyhow::Error::new(GuestError(e)).context("source open")
    }

    #[test]
    fn refusals_settings_and_records_are_permanent() {
        for e in [
            wit::Error::NotPermitted("cannot connect to 10.0.0.5:9092".into()),
            wit::Error::InvalidConfig(wit::ConfigError {
                parameter: "acks".into(),
                message: "no".into(),
            }),
            wit::Error::Tls("unknown issuer".into()),
            wit::Error::RecordTooLarge("r".into()),
            wit::Error::InvalidRecord("r".into()),
            remote(58, "SASL_AUTHENTICATION_FAILED", false),
            remote(29, "TOPIC_AUTHORIZATION_FAILED", false),
            remote(30, "GROUP_AUTHORIZATION_FAILED", false),
            remote(31, "CLUSTER_AUTHORIZATION_FAILED", false),
        ] {
            assert_eq!(classify(&guest(e.clone())), Class::Permanent, "{e:?}");
        }
    }

    #[test]
    fn broken_connections_timeouts_and_retriable_codes_are_retriable() {
        for e in [
            wit::Error::Connection("b:9092 closed the connection".into()),
            wit::Error::Timeout("t".into()),
            remote(6, "NOT_LEADER_OR_FOLLOWER", true),
            remote(15, "COORDINATOR_NOT_AVAILABLE", true),
        ] {
            assert_eq!(classify(&guest(e.clone())), Class::Retriable, "{e:?}");
        }
    }

    #[test]
    fn the_hosts_own_failures_carry_their_class_and_the_rest_is_permanent() {
        let stopped = |class| {
            anyhow::Error::new(Stopped {
                why: "connector t/p/source stopped: ...".into(),
                class,
            })
            .context("source read")
        };
        assert_eq!(classify(&stopped(Class::Retriable)), Class::Retriable);
        assert_eq!(classify(&stopped(Class::Permanent)), Class::Permanent);
        let line = Err::<(), _>(anyhow!("stdin:3: not JSON")).context("source read");
        assert_eq!(classify(&line.unwrap_err()), Class::Permanent);
    }
}
