//! The client side of the SASL mechanisms Kafka offers: PLAIN (RFC 4616) and SCRAM
//! (RFC 5802, `scram`). Pure logic: an `Exchange` turns the broker's messages (the
//! `auth_bytes` of SaslAuthenticate responses) into the client's next ones; the network
//! layer carries them.

use std::fmt;

use super::scram;
use crate::error::{Error, Result};

/// A secret string (a password): never printed. Debug and Display show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that needs it: building the mechanism's bytes.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [Mechanism::Plain, Mechanism::ScramSha256, Mechanism::ScramSha512];

    /// Kafka's name for the mechanism, as in `sasl.mechanism` and SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism Kafka names `s`, exactly (SASL mechanism names are case-sensitive).
    pub fn parse(s: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: Secret,
}

/// What the client does after a server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes (the next SaslAuthenticate's `auth_bytes`).
    Send(Vec<u8>),
    /// Authenticated: the server is verified (SCRAM) or has nothing more to say (PLAIN).
    Done,
}

/// One authentication exchange, client side.
pub struct Exchange {
    mechanism: Mechanism,
    state: State,
}

enum State {
    /// PLAIN sent its one message; the server's answer ends it.
    Plain,
    Scram(Box<scram::Client>),
    Done,
}

/// Shows the mechanism and how far the exchange is, never keys or the password.
impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = matches!(self.state, State::Done);
        f.debug_struct("Exchange")
            .field("mechanism", &self.mechanism)
            .field("done", &done)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// Starts an exchange; returns it and the client's first message. Nonces come from the
    /// system random source.
    pub fn start(creds: &Credentials) -> Result<(Exchange, Vec<u8>)> {
        let nonce = match creds.mechanism {
            Mechanism::Plain => String::new(),
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => scram::random_nonce()?,
        };
        Exchange::start_with_nonce(creds, &nonce)
    }

    /// Same, with a given client nonce (tests use the RFC's); PLAIN ignores it.
    pub fn start_with_nonce(creds: &Credentials, nonce: &str) -> Result<(Exchange, Vec<u8>)> {
        check_username(&creds.username)?;
        let (state, first) = match creds.mechanism {
            Mechanism::Plain => (State::Plain, plain_message(creds)?),
            Mechanism::ScramSha256 => scram_start(scram::Hash::Sha256, creds, nonce)?,
            Mechanism::ScramSha512 => scram_start(scram::Hash::Sha512, creds, nonce)?,
        };
        let mechanism = creds.mechanism;
        Ok((Exchange { mechanism, state }, first))
    }

    /// The server's next message (SaslAuthenticate's `auth_bytes`): the client's next
    /// message, or `Done` once the server is verified.
    pub fn step(&mut self, server: &[u8]) -> Result<Step> {
        let step = match &mut self.state {
            // RFC 4616 has no server data; success or failure is SaslAuthenticate's error
            // code, which the network layer reads, so whatever came (normally nothing) ends it.
            State::Plain => Step::Done,
            State::Scram(client) => client.step(server)?,
            State::Done => {
                let message = format!("{} exchange stepped after it was done", self.mechanism.name());
                return Err(Error::InvalidState(message));
            }
        };
        if step == Step::Done {
            self.state = State::Done;
        }
        Ok(step)
    }
}

/// An authentication failure, as a broker reports one: SASL_AUTHENTICATION_FAILED (58),
/// not retriable (the same credentials fail again). `message` must never hold the
/// password or anything derived from it.
pub fn auth_failed(message: impl Into<String>) -> Error {
    Error::Kafka {
        code: 58,
        name: "SASL_AUTHENTICATION_FAILED".into(),
        message: message.into(),
        retriable: false,
    }
}

/// Both mechanisms need a non-empty username (RFC 4616's authcid, RFC 5802's saslname),
/// and NUL is PLAIN's separator and not allowed in a saslname.
fn check_username(username: &str) -> Result<()> {
    if username.is_empty() {
        return Err(Error::config("saslUsername", "is empty"));
    }
    if username.contains('\0') {
        return Err(Error::config("saslUsername", "contains a NUL character"));
    }
    Ok(())
}

/// RFC 4616: `authzid NUL authcid NUL passwd`, with an empty authzid (act as oneself).
fn plain_message(creds: &Credentials) -> Result<Vec<u8>> {
    let password = creds.password.expose();
    if password.contains('\0') {
        return Err(Error::config("saslPassword", "contains a NUL character"));
    }
    let mut out = Vec::with_capacity(2 + creds.username.len() + password.len());
    out.push(0);
    out.extend_from_slice(creds.username.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    Ok(out)
}

fn scram_start(hash: scram::Hash, creds: &Credentials, nonce: &str) -> Result<(State, Vec<u8>)> {
    let (client, first) = scram::Client::new(hash, &creds.username, &creds.password, nonce)?;
    Ok((State::Scram(Box::new(client)), first))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(mechanism: Mechanism, username: &str, password: &str) -> Credentials {
        Credentials {
            mechanism,
            username: username.into(),
            password: Secret::new(password),
        }
    }

    #[test]
    fn secret_is_never_printed() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "***");
        let c = creds(Mechanism::Plain, "alice", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn mechanism_names_round_trip_exactly() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::parse(m.name()), Some(m));
        }
        assert_eq!(Mechanism::ScramSha512.name(), "SCRAM-SHA-512");
        assert_eq!(Mechanism::parse("plain"), None);
        assert_eq!(Mechanism::parse("SCRAM-SHA-1"), None);
        assert_eq!(Mechanism::parse(""), None);
    }

    #[test]
    fn plain_sends_authcid_and_password_then_is_done() {
        let (mut ex, first) = Exchange::start(&creds(Mechanism::Plain, "alice", "p w")).unwrap();
        assert_eq!(first, b"\0alice\0p w");
        assert_eq!(ex.step(b"").unwrap(), Step::Done);
        assert!(matches!(ex.step(b""), Err(Error::InvalidState(_))));
    }

    #[test]
    fn plain_refuses_nul_in_username_or_password() {
        let err = Exchange::start(&creds(Mechanism::Plain, "a\0b", "pw")).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { ref parameter, .. } if parameter == "saslUsername"));
        let err = Exchange::start(&creds(Mechanism::Plain, "alice", "se\0cret")).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { ref parameter, .. } if parameter == "saslPassword"));
        assert!(!err.to_string().contains("se\0cret"));
    }

    #[test]
    fn an_empty_username_is_refused() {
        for m in Mechanism::ALL {
            let err = Exchange::start(&creds(m, "", "pw")).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { ref parameter, .. } if parameter == "saslUsername"));
        }
    }

    #[test]
    fn auth_failed_is_kafkas_non_retriable_code_58() {
        let err = auth_failed("no");
        assert!(!err.is_retriable());
        assert!(
            matches!(err, Error::Kafka { code: 58, ref name, .. } if name == "SASL_AUTHENTICATION_FAILED")
        );
    }

    #[test]
    fn scram_start_draws_a_fresh_nonce_each_time() {
        let c = creds(Mechanism::ScramSha256, "alice", "pw");
        let (_, a) = Exchange::start(&c).unwrap();
        let (_, b) = Exchange::start(&c).unwrap();
        assert!(a.starts_with(b"n,,n=alice,r="));
        assert_ne!(a, b);
        // 32 bytes in base64 with padding.
        assert_eq!(a.len(), "n,,n=alice,r=".len() + 44);
    }
}
