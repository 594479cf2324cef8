//! A nisshi broker of one test's own with SASL/SCRAM and/or TLS on its listener.
//!
//! nisshi only creates users (and the tests' topics) while it runs without
//! `--authentication`, so a [`SecureBroker`] starts twice on one port and one sqlite
//! database in a temporary folder: first open (users and topics are created), then as asked
//! (`--authentication`, `--cert/--key`). Hence the topics are named up front.
//!
//! sqlite takes a few tens of thousands of records per second, a fraction of what the
//! in-memory test broker takes. Without authentication (nisshi keeps users only in sqlite)
//! a broker may keep its data in memory instead ([`Setup::in_memory`], for throughput): it
//! starts once, and its topics are made over its own listener, TLS included, at any time
//! ([`SecureBroker::new_topic`]).
//!
//! ```text
//! let b = SecureBroker::with()
//!     .user("alice", "alice-secret", Scram::Sha256)
//!     .topic("sasl", 2)
//!     .tls(&certs::pki().server)
//!     .start();
//! // ... ("servers", &b.addr()), ("topic", b.topic(0)), ("saslMechanism", "SCRAM-SHA-256") ...
//! ```

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kafka_connector::kafka::network::Security;
use kafka_connector::kafka::network::tls::{TlsPem, TlsSettings};

use crate::certs::Pem;
use crate::child::output_within;
use crate::faults::{free_port, nisshi_binary};
use crate::{unique_name, wait_until_blocking};

/// How long a nisshi command (creating a user or a topic) may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// The SCRAM mechanisms nisshi knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scram {
    Sha256,
    Sha512,
}

impl Scram {
    /// Its Kafka name, as in `saslMechanism` and librdkafka's `sasl.mechanisms`.
    pub fn mechanism(self) -> &'static str {
        match self {
            Scram::Sha256 => "SCRAM-SHA-256",
            Scram::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn nisshi(self) -> &'static str {
        match self {
            Scram::Sha256 => "scram256",
            Scram::Sha512 => "scram512",
        }
    }
}

/// A nisshi process in a working folder of its own, its output in `<dir>/<log>`. Killed on
/// drop (its folder is the owner's to remove).
pub(crate) struct Nisshi {
    child: Child,
    log: PathBuf,
}

impl Nisshi {
    /// Runs `nisshi broker --silent <args>` in `dir` and waits until `addr` accepts
    /// connections; panics with its log if it does not within 15 s.
    pub(crate) fn start(dir: &Path, log: &str, addr: SocketAddr, args: &[String]) -> Nisshi {
        let nisshi = nisshi_binary();
        assert!(
            nisshi.exists(),
            "{} is missing: run `scripts/broker.sh install` or set NISSHI",
            nisshi.display()
        );
        let log = dir.join(log);
        let out = File::create(&log).expect("create the broker log");
        // Its own working directory: nisshi reads a .env file from there if one exists.
        let child = Command::new(&nisshi)
            .current_dir(dir)
            .args(["broker", "--silent"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", nisshi.display()));
        let mut n = Nisshi { child, log };
        let mut exited = None;
        let listening = wait_until_blocking(Duration::from_secs(15), || {
            exited = n.child.try_wait().ok().flatten();
            exited.is_some() || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if !listening || exited.is_some() {
            panic!(
                "nisshi on {addr} did not start within 15 s ({exited:?}), args {args:?}: {}",
                n.log()
            );
        }
        n
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it with SIGTERM (so that its database is closed cleanly), SIGKILL after 5 s.
    pub(crate) fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let stopped = wait_until_blocking(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Nisshi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a nisshi command (`user create`, `topic create`) to its end; panics with its output
/// if it fails.
pub(crate) fn nisshi_command(args: &[&str], what: &str) {
    let mut cmd = Command::new(nisshi_binary());
    cmd.args(args);
    let out = output_within(&mut cmd, b"", COMMAND_LIMIT, what);
    assert!(
        out.status.success(),
        "{what}: nisshi {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates a topic through the (open) nisshi listener at `addr` with a name no other test
/// uses: its name.
pub(crate) fn create_topic(addr: SocketAddr, prefix: &str, partitions: i32) -> String {
    let name = unique_name(prefix);
    let broker = format!("tcp://{addr}");
    let parts = partitions.to_string();
    nisshi_command(
        &[
            "topic",
            "create",
            &name,
            "--partitions",
            &parts,
            "--broker",
            &broker,
            "--silent",
        ],
        &format!("create topic {name}"),
    );
    name
}

/// A fresh temporary folder for one broker.
pub(crate) fn broker_dir(kind: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wasm-kafka-{kind}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the broker's working directory");
    dir
}

/// What a [`SecureBroker`] is to be: see [`SecureBroker::with`].
#[must_use]
pub struct Setup {
    users: Vec<(String, String, Scram)>,
    topics: Vec<(String, i32)>,
    tls: Option<Pem>,
    authentication: bool,
    memory: bool,
}

impl Setup {
    /// A SCRAM user `name` with `password`, for `mechanism` (nisshi keeps one credential
    /// per user: give a user of each mechanism to test both).
    pub fn user(mut self, name: &str, password: &str, mechanism: Scram) -> Setup {
        self.users.push((name.into(), password.into(), mechanism));
        self
    }

    /// A topic `<prefix>-<unique>` with `partitions` (see [`SecureBroker::topic`]).
    pub fn topic(mut self, prefix: &str, partitions: i32) -> Setup {
        self.topics.push((prefix.into(), partitions));
        self
    }

    /// TLS on the listener (it then takes TLS only) with `server`'s certificate and key.
    pub fn tls(mut self, server: &Pem) -> Setup {
        self.tls = Some(server.clone());
        self
    }

    /// No `--authentication`: any client may connect (TLS alone, when `tls` is set).
    pub fn no_authentication(mut self) -> Setup {
        self.authentication = false;
        self
    }

    /// Data in memory, as the plaintext test broker keeps it, instead of sqlite: one start
    /// (no restart), so no users and no authentication. Topics are made once it listens.
    pub fn in_memory(mut self) -> Setup {
        self.memory = true;
        self
    }

    /// Starts the broker: creates the users and topics, then restarts it as asked.
    pub fn start(self) -> SecureBroker {
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = broker_dir("secure");
        let storage = if self.memory {
            assert!(
                !self.authentication && self.users.is_empty(),
                "nisshi keeps users only in sqlite: an in-memory broker takes no authentication"
            );
            format!("memory://wasm-kafka-{port}/")
        } else {
            // Relative to its working folder; kept across the restart.
            "sqlite://nisshi.db".into()
        };
        let mut args = vec![
            "--listener-url".to_string(),
            format!("tcp://{addr}"),
            "--advertised-listener-url".into(),
            format!("tcp://{addr}"),
            "--storage-engine".into(),
            storage,
            "--group-initial-rebalance-delay".into(),
            "0s".into(),
        ];
        if self.memory {
            return self.start_in_memory(dir, addr, args);
        }
        let open = Nisshi::start(&dir, "setup.log", addr, &args);
        let broker = format!("tcp://{addr}");
        for (name, password, mechanism) in &self.users {
            nisshi_command(
                &[
                    "user",
                    "create",
                    name,
                    password,
                    "--mechanism",
                    mechanism.nisshi(),
                    "--broker",
                    &broker,
                ],
                &format!("create user {name}"),
            );
        }
        let topics = self
            .topics
            .iter()
            .map(|(prefix, partitions)| create_topic(addr, prefix, *partitions))
            .collect();
        open.stop();

        if self.authentication {
            args.push("--authentication".into());
        }
        if let Some(pem) = &self.tls {
            args.extend(cert_args(pem, &dir));
        }
        let nisshi = Nisshi::start(&dir, "broker.log", addr, &args);
        SecureBroker {
            nisshi: Some(nisshi),
            dir,
            addr,
            topics,
            tls: self.tls.is_some(),
            authentication: self.authentication,
        }
    }

    /// `start` for [`Setup::in_memory`]: as asked at once, the topics made over the listener.
    fn start_in_memory(self, dir: PathBuf, addr: SocketAddr, mut args: Vec<String>) -> SecureBroker {
        if let Some(pem) = &self.tls {
            args.extend(cert_args(pem, &dir));
        }
        let nisshi = Nisshi::start(&dir, "broker.log", addr, &args);
        let mut broker = SecureBroker {
            nisshi: Some(nisshi),
            dir,
            addr,
            topics: Vec::new(),
            tls: self.tls.is_some(),
            authentication: false,
        };
        broker.topics = self
            .topics
            .iter()
            .map(|(prefix, partitions)| broker.new_topic(prefix, *partitions))
            .collect();
        broker
    }
}

/// `--cert` and `--key` with `server`'s files, written into `dir`.
fn cert_args(server: &Pem, dir: &Path) -> [String; 4] {
    let (cert, key) = server.write(dir, "server");
    [
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
    ]
}

/// A nisshi broker with users and topics made before it started securely. Killed (and its
/// folder removed) on drop.
pub struct SecureBroker {
    nisshi: Option<Nisshi>,
    dir: PathBuf,
    addr: SocketAddr,
    topics: Vec<String>,
    tls: bool,
    authentication: bool,
}

impl SecureBroker {
    /// What to start: `--authentication`, no users, no topics, no TLS, until told.
    pub fn with() -> Setup {
        Setup {
            users: Vec::new(),
            topics: Vec::new(),
            tls: None,
            authentication: true,
            memory: false,
        }
    }

    /// "127.0.0.1:P": what the connector takes as `servers` (and the broker advertises).
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name of the `i`-th topic given to [`Setup::topic`].
    pub fn topic(&self, i: usize) -> &str {
        &self.topics[i]
    }

    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Whether its listener takes TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// A new topic `<prefix>-<unique>` with `partitions`, made now over the listener (by the
    /// connector's client, natively; over TLS without verifying the broker, which is the
    /// test's own). Only without authentication: with it, topics are named up front
    /// ([`Setup::topic`]).
    pub fn new_topic(&self, prefix: &str, partitions: i32) -> String {
        assert!(
            !self.authentication,
            "nisshi makes no topics once authentication is on: name them up front (Setup::topic)"
        );
        let tls = self.tls.then(|| {
            TlsSettings::new(TlsPem {
                insecure_skip_verify: true,
                ..TlsPem::default()
            })
            .expect("TLS settings without inputs")
        });
        let security = Security { tls, sasl: None };
        crate::new_topic_secured(&self.addr(), security, prefix, partitions)
    }

    /// Its working folder (a place for files a client needs, e.g. a CA for librdkafka).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the broker printed since its secure start.
    pub fn log(&self) -> String {
        self.nisshi.as_ref().map(Nisshi::log).unwrap_or_default()
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        drop(self.nisshi.take());
        let _ = fs::remove_dir_all(&self.dir);
    }
}
