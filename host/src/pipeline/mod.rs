//! Pipelines: a source and a destination, run together for one tenant. `file` reads a
//! pipeline file (TOML) into validated `Pipeline`s, `ends` adapts connector instances and
//! JSON Lines files to one read/write/ack shape, `run` drives them all concurrently,
//! `restart` starts a pipeline again after a retriable failure.

use std::time::Duration;

use crate::limits::Limits;
use crate::runtime::ConfigPairs;
use crate::sandbox::Allowlist;

pub mod ends;
pub mod file;
pub mod paths;
pub mod restart;
pub mod run;
pub mod text;

/// One validated pipeline, ready to run.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub tenant: String,
    pub name: String,
    /// Where it was defined, for messages: `pipelines.toml:12`, or `command line`.
    pub at: String,
    pub allow: Allowlist,
    pub limits: Limits,
    /// Stop after this many records were written.
    pub max_records: Option<u64>,
    /// Stop once no record arrived for this long.
    pub idle_exit: Option<Duration>,
    /// Records per read.
    pub batch: u32,
    pub source: Endpoint,
    /// Where the source starts (a position it produced before); none: its own default.
    pub start: Option<Vec<u8>>,
    pub destination: Endpoint,
    /// How it is restarted after a retriable failure.
    pub restart: restart::RestartPolicy,
}

impl Pipeline {
    /// `tenant/name`, the prefix of everything this pipeline logs.
    pub fn id(&self) -> String {
        format!("{}/{}", self.tenant, self.name)
    }

    /// The components its connector ends run (`None`: the bundled Kafka connector).
    pub fn components(&self) -> impl Iterator<Item = Option<&paths::Confined>> {
        [&self.source, &self.destination]
            .into_iter()
            .filter_map(|e| match e {
                Endpoint::Connector { component, .. } => Some(component.as_ref()),
                _ => None,
            })
    }
}

/// One end of a pipeline. Its Debug shows a connector's setting keys, never their values:
/// some are secrets (the parameters a spec marks `sensitive`).
#[derive(Clone)]
pub enum Endpoint {
    /// A connector component instance: the bundled Kafka connector when `component` is
    /// none. `at` is where its settings were given.
    Connector {
        component: Option<paths::Confined>,
        config: ConfigPairs,
        at: String,
    },
    /// OpenCDC records as JSON Lines in a file: `path`, already joined to `base`, must
    /// stay inside `base` (see `paths`).
    File(paths::Confined),
    /// JSON Lines on the process's stdin (as a source) or stdout (as a destination).
    Stdio,
    /// Text for people on stdout, a line per record (`read --format text`); a destination
    /// only.
    Text,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Connector {
                component,
                config,
                at,
            } => {
                let keys: Vec<&str> = config.iter().map(|(k, _)| k.as_str()).collect();
                f.debug_struct("Connector")
                    .field("component", component)
                    .field("settings", &keys)
                    .field("at", at)
                    .finish()
            }
            Endpoint::File(path) => f.debug_tuple("File").field(path).finish(),
            Endpoint::Stdio => f.write_str("Stdio"),
            Endpoint::Text => f.write_str("Text"),
        }
    }
}

impl Endpoint {
    /// The `servers` setting of a connector end: the hosts it is allowed by default.
    pub fn servers(&self) -> Option<&str> {
        match self {
            Endpoint::Connector { config, .. } => config
                .iter()
                .find(|(k, _)| k == "servers")
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

pub const DEFAULT_BATCH: u32 = 1000;
/// The most records one read may ask for (what a batch may cost is bounded in bytes too).
pub const MAX_BATCH: u32 = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_setting_keys_not_values() {
        let end = Endpoint::Connector {
            component: None,
            config: vec![("saslPassword".into(), "hunter2".into())],
            at: "p.toml:3".into(),
        };
        let shown = format!("{end:?}");
        assert!(
            shown.contains("saslPassword") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
