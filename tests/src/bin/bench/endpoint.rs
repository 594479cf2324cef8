//! The brokers a run may use and how each side reaches them: the plaintext test broker
//! (`KAFKA_BROKER`, in memory), and brokers of the bench's own started by the parent
//! (`integration_tests::secure`): TLS in memory, and TLS with or without SCRAM-SHA-512 on
//! sqlite (nisshi keeps users only there). A child is told its broker as one argument
//! ([`Endpoint::arg`]).

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use integration_tests::certs::{self, write_pem};
use integration_tests::new_topic;
use integration_tests::secure::{Scram, SecureBroker};
use rdkafka::config::ClientConfig;

use crate::PARTITIONS;

/// The SCRAM user of the TLS + SASL broker.
const USER: &str = "bench";
const PASSWORD: &str = "bench-secret";
const MECHANISM: Scram = Scram::Sha512;

/// How a broker is reached, and what keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Transport {
    /// The test broker: plaintext, in memory.
    Plaintext,
    /// TLS, in memory, no authentication.
    Tls,
    /// TLS, sqlite, no authentication: TLS+SASL's twin without SASL.
    TlsSqlite,
    /// TLS and SCRAM-SHA-512, sqlite.
    TlsSasl,
}

impl Transport {
    pub(crate) const ALL: [Transport; 4] = [
        Transport::Plaintext,
        Transport::Tls,
        Transport::TlsSqlite,
        Transport::TlsSasl,
    ];

    fn tag(self) -> &'static str {
        match self {
            Transport::Plaintext => "plaintext",
            Transport::Tls => "tls",
            Transport::TlsSqlite => "tls-sqlite",
            Transport::TlsSasl => "tls+sasl",
        }
    }

    fn tls(self) -> bool {
        self != Transport::Plaintext
    }

    fn sasl(self) -> bool {
        self == Transport::TlsSasl
    }

    /// Whether the broker keeps its data in sqlite (slow; see `Broker::start`).
    pub(crate) fn sqlite(self) -> bool {
        matches!(self, Transport::TlsSqlite | Transport::TlsSasl)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Plaintext => "plaintext",
            Transport::Tls => "TLS",
            Transport::TlsSqlite => "TLS (sqlite)",
            Transport::TlsSasl => "TLS+SASL (sqlite)",
        })
    }
}

/// A broker as a child reaches it.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub(crate) transport: Transport,
    pub(crate) addr: String,
    /// The test CA, PEM, in a file (librdkafka takes a path; ours reads it as `caCert`).
    ca_file: Option<PathBuf>,
}

impl Endpoint {
    /// `transport,addr[,ca-file]`: how a child is told its broker.
    pub(crate) fn arg(&self) -> String {
        let mut arg = format!("{},{}", self.transport.tag(), self.addr);
        if let Some(ca) = &self.ca_file {
            arg.push(',');
            arg.push_str(&ca.display().to_string());
        }
        arg
    }

    pub(crate) fn parse(arg: &str) -> Result<Endpoint> {
        let mut parts = arg.splitn(3, ',');
        let (tag, addr) = (parts.next().unwrap_or(""), parts.next());
        let transport = Transport::ALL
            .into_iter()
            .find(|t| t.tag() == tag)
            .with_context(|| format!("unknown transport in {arg:?}"))?;
        let addr = addr.with_context(|| format!("no address in {arg:?}"))?;
        let ca_file = parts.next().map(PathBuf::from);
        if transport.tls() && ca_file.is_none() {
            bail!("{arg:?}: TLS without a CA file");
        }
        Ok(Endpoint {
            transport,
            addr: addr.to_string(),
            ca_file,
        })
    }

    /// The connector's settings for this broker: `servers`, and TLS trusting the test CA
    /// and SCRAM-SHA-512 as the transport needs them.
    pub(crate) fn ours(&self) -> Result<Vec<(String, String)>> {
        let mut config = vec![("servers".to_string(), self.addr.clone())];
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read_to_string(ca).with_context(|| format!("read {}", ca.display()))?;
            config.push(("tls.enabled".into(), "true".into()));
            config.push(("caCert".into(), pem));
        }
        if self.transport.sasl() {
            config.push(("saslMechanism".into(), MECHANISM.mechanism().into()));
            config.push(("saslUsername".into(), USER.into()));
            config.push(("saslPassword".into(), PASSWORD.into()));
        }
        Ok(config)
    }

    /// librdkafka's settings for this broker: `bootstrap.servers`, and `security.protocol`
    /// SSL or SASL_SSL with the test CA and SCRAM-SHA-512.
    pub(crate) fn librdkafka(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.addr);
        if let Some(ca) = &self.ca_file {
            let protocol = if self.transport.sasl() { "SASL_SSL" } else { "SSL" };
            config
                .set("security.protocol", protocol)
                .set("ssl.ca.location", ca.display().to_string());
        }
        if self.transport.sasl() {
            config
                .set("sasl.mechanisms", MECHANISM.mechanism())
                .set("sasl.username", USER)
                .set("sasl.password", PASSWORD);
        }
        config
    }
}

/// A broker of the run (the parent's): how to reach it and where its topics come from.
pub(crate) struct Broker {
    pub(crate) endpoint: Endpoint,
    /// Ours, when the bench started it (stopped on drop).
    secure: Option<SecureBroker>,
    /// Topics made before authentication was on, handed out in turn.
    made: Mutex<VecDeque<String>>,
}

impl Broker {
    /// The test broker (`KAFKA_BROKER`).
    pub(crate) fn plaintext() -> Broker {
        Broker {
            endpoint: Endpoint {
                transport: Transport::Plaintext,
                addr: integration_tests::broker(),
                ca_file: None,
            },
            secure: None,
            made: Mutex::new(VecDeque::new()),
        }
    }

    /// Starts a nisshi of the bench's own for `transport` (TLS with the test CA's
    /// certificate for 127.0.0.1); a TLS + SASL one with `topics` topics made up front,
    /// since it makes none once authentication is on.
    pub(crate) fn start(transport: Transport, topics: usize) -> Broker {
        let pki = certs::pki();
        let setup = SecureBroker::with().tls(&pki.server);
        let setup = match transport {
            Transport::Plaintext => return Broker::plaintext(),
            Transport::Tls => setup.no_authentication().in_memory(),
            Transport::TlsSqlite => setup.no_authentication(),
            Transport::TlsSasl => (0..topics).fold(setup.user(USER, PASSWORD, MECHANISM), |s, _| {
                s.topic("bench", PARTITIONS)
            }),
        };
        let secure = setup.start();
        let ca_file = write_pem(secure.dir(), "ca.pem", &pki.ca.cert);
        Broker {
            endpoint: Endpoint {
                transport,
                addr: secure.addr(),
                ca_file: Some(ca_file),
            },
            made: Mutex::new(secure.topics().iter().cloned().collect()),
            secure: Some(secure),
        }
    }

    pub(crate) fn transport(&self) -> Transport {
        self.endpoint.transport
    }

    /// A fresh topic of `PARTITIONS` partitions: made now, or one of those made up front.
    pub(crate) fn topic(&self, prefix: &str) -> Result<String> {
        if let Some(t) = self.made.lock().unwrap().pop_front() {
            return Ok(t);
        }
        match &self.secure {
            None => Ok(new_topic(prefix, PARTITIONS)),
            Some(_) if self.transport().sasl() => {
                bail!(
                    "the {} broker has no topic left of those made up front",
                    self.transport()
                )
            }
            Some(b) => Ok(b.new_topic(prefix, PARTITIONS)),
        }
    }
}
