//! A Kafka client small enough to read in an afternoon, in three layers, each importing
//! only the ones below it:
//!
//! - `protocol`: bytes, no I/O. Record batches and their codecs, the consumer protocol's
//!   bytes, API versions, error codes, broker throttling, the client side of SASL
//!   mechanisms.
//! - `network`: one connection to one broker over its transport, and waiting on many
//!   sockets at once.
//! - `client`: the cluster and what is done with it: producing, fetching, consumer group
//!   membership and assignment, partitioning, retry pacing.
//!
//! The client serves the connector and knows nothing of it: nothing here imports the
//! connector's roles (`config`, `mapping`, `packed`, `position`, `source`, `destination`,
//! `record*`, `commits`); they build `client::ClientOptions` and call in. `crate::error`
//! and `crate::log` are shared by all.

pub mod client;
pub mod network;
pub mod protocol;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`, with its text.
    fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(sources(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
        out
    }

    /// What no file in `layer` may name: the connector's roles, paths that climb out of
    /// the layer with `super::super` (layers name each other from `crate::kafka`, where
    /// this check sees it), and the layers above.
    fn forbidden(layer: &str) -> Vec<String> {
        let roles = [
            "config",
            "mapping",
            "packed",
            "position",
            "source",
            "destination",
            "record",
            "commits",
        ];
        let mut out: Vec<String> = roles.iter().map(|r| format!("crate::{r}")).collect();
        out.push(["super"; 2].join("::"));
        let above: &[&str] = match layer {
            "protocol" => &["kafka::network", "kafka::client"],
            "network" => &["kafka::client"],
            _ => &[],
        };
        out.extend(above.iter().map(|a| a.to_string()));
        out
    }

    /// The layering the module docs state, checked on the code (comments aside).
    #[test]
    fn layers_import_only_what_they_may() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kafka");
        for (path, text) in sources(&root) {
            let layer = path.parent().and_then(Path::file_name).and_then(|n| n.to_str());
            let forbidden = forbidden(layer.unwrap_or_default());
            let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
            for line in code {
                let found = forbidden.iter().find(|f| line.contains(f.as_str()));
                assert!(found.is_none(), "{}: {line}", path.display());
            }
        }
    }
}
