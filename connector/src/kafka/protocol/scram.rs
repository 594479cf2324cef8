//! SCRAM (RFC 5802; SHA-256 per RFC 7677, SHA-512 the same way), client side, as Kafka's
//! Java client does it: no channel binding and no authzid (gs2 header `n,,`), the username
//! escaped as a saslname.
//!
//! Kafka's Java client does not SASLprep (RFC 4013) usernames or passwords, and brokers
//! store credentials made the same way; preparing them here would derive other keys than
//! the broker's for any name or password SASLprep changes, so neither is prepared.

use std::num::NonZeroU32;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

use super::sasl::{Secret, Step, auth_failed};
use crate::error::{Error, Result};

/// Kafka's minimum (its `ScramMechanism.minIterations`); fewer makes the stored keys
/// cheap to brute-force, so a broker asking for fewer is refused, as the Java client does.
pub const MIN_ITERATIONS: u32 = 4096;

/// The most iterations this client computes. The count comes from the broker, and
/// PBKDF2 costs one HMAC per iteration: a hostile or broken broker saying `i=2000000000`
/// would hold the (single-threaded) connector computing for minutes on every connection
/// attempt. Kafka brokers refuse to store credentials with more than 16384 iterations
/// (`ScramMechanism.maxIterations`), so this leaves ample room for other brokers.
pub const MAX_ITERATIONS: u32 = 100_000;

/// No channel binding, no authorization identity.
const GS2_HEADER: &str = "n,,";

/// The gs2 header in base64: the channel binding attribute (`c=`) when there is none.
const CHANNEL_BINDING: &str = "biws";

/// Random bytes in a client nonce (Kafka's Java client draws 32 too).
const NONCE_BYTES: usize = 32;

/// Standard base64; decoding takes it with or without padding, as Java's decoder does.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The hash a SCRAM mechanism is named after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            Hash::Sha256 => hmac::HMAC_SHA256,
            Hash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Hash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Hash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha512 => &digest::SHA512,
        }
    }
}

/// A username as RFC 5802's saslname: `=` and `,` would end or confuse the attribute.
pub fn saslname(username: &str) -> String {
    // `=` first, so the `=` of `=2C` is not escaped again.
    username.replace('=', "=3D").replace(',', "=2C")
}

/// A fresh client nonce: random bytes in base64, which is printable and has no commas.
pub fn random_nonce() -> Result<String> {
    let mut bytes = [0u8; NONCE_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Other("the system random source failed".into()))?;
    Ok(BASE64.encode(bytes))
}

/// One SCRAM exchange, client side: client-first, then client-final after the server's
/// first message, then the server's signature checked.
pub struct Client {
    hash: Hash,
    password: Secret,
    nonce: String,
    client_first_bare: String,
    state: State,
}

enum State {
    AwaitingServerFirst,
    /// What checking the server's signature needs.
    AwaitingServerFinal {
        server_key: hmac::Key,
        auth_message: String,
    },
    /// Verified, or failed: nothing more is accepted.
    Over,
}

impl Client {
    /// Starts an exchange with the given client nonce; returns it and client-first.
    pub fn new(hash: Hash, username: &str, password: &Secret, nonce: &str) -> Result<(Client, Vec<u8>)> {
        if nonce.is_empty() || !nonce.bytes().all(is_printable) {
            let message = "a SCRAM client nonce must be printable ASCII without commas";
            return Err(Error::InvalidState(message.into()));
        }
        let client_first_bare = format!("n={},r={nonce}", saslname(username));
        let first = format!("{GS2_HEADER}{client_first_bare}").into_bytes();
        let client = Client {
            hash,
            password: password.clone(),
            nonce: nonce.to_string(),
            client_first_bare,
            state: State::AwaitingServerFirst,
        };
        Ok((client, first))
    }

    /// The server's next message: client-final after server-first, `Done` after a
    /// server-final that proves the server knows the password.
    pub fn step(&mut self, server: &[u8]) -> Result<Step> {
        // A failed step leaves the exchange over: none is retried mid-way.
        match std::mem::replace(&mut self.state, State::Over) {
            State::AwaitingServerFirst => {
                let server_first = utf8(server, "server-first-message")?;
                let (client_final, next) = self.client_final(server_first)?;
                self.state = next;
                Ok(Step::Send(client_final))
            }
            State::AwaitingServerFinal {
                server_key,
                auth_message,
            } => {
                let server_final = utf8(server, "server-final-message")?;
                verify_server_final(&server_key, &auth_message, server_final)?;
                Ok(Step::Done)
            }
            State::Over => Err(Error::InvalidState(
                "SCRAM exchange stepped after it was over".into(),
            )),
        }
    }

    /// client-final for `server_first`, and the state awaiting server-final.
    fn client_final(&self, server_first: &str) -> Result<(Vec<u8>, State)> {
        let parsed = ServerFirst::parse(server_first, &self.nonce)?;
        let keys = Keys::derive(self.hash, &self.password, &parsed.salt, parsed.iterations);
        let without_proof = format!("c={CHANNEL_BINDING},r={}", parsed.nonce);
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let proof = keys.proof(self.hash, &auth_message);
        let client_final = format!("{without_proof},p={}", BASE64.encode(proof));
        let next = State::AwaitingServerFinal {
            server_key: keys.server_key,
            auth_message,
        };
        Ok((client_final.into_bytes(), next))
    }
}

/// The keys RFC 5802 §3 derives from the password.
struct Keys {
    client_key: hmac::Tag,
    stored_key: digest::Digest,
    server_key: hmac::Key,
}

impl Keys {
    fn derive(hash: Hash, password: &Secret, salt: &[u8], iterations: NonZeroU32) -> Keys {
        let mut salted = vec![0u8; hash.digest().output_len()];
        let secret = password.expose().as_bytes();
        pbkdf2::derive(hash.pbkdf2(), iterations, salt, secret, &mut salted);
        let salted = hmac::Key::new(hash.hmac(), &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let server_key = hmac::sign(&salted, b"Server Key");
        Keys {
            stored_key: digest::digest(hash.digest(), client_key.as_ref()),
            client_key,
            server_key: hmac::Key::new(hash.hmac(), server_key.as_ref()),
        }
    }

    /// ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage).
    fn proof(&self, hash: Hash, auth_message: &str) -> Vec<u8> {
        let stored_key = hmac::Key::new(hash.hmac(), self.stored_key.as_ref());
        let signature = hmac::sign(&stored_key, auth_message.as_bytes());
        let key = self.client_key.as_ref();
        key.iter().zip(signature.as_ref()).map(|(k, s)| k ^ s).collect()
    }
}

/// What server-first carries.
struct ServerFirst<'a> {
    nonce: &'a str,
    salt: Vec<u8>,
    iterations: NonZeroU32,
}

impl<'a> ServerFirst<'a> {
    /// RFC 5802: `[m=...,]r=nonce,s=salt,i=count[,extensions]`, in that order.
    fn parse(message: &'a str, client_nonce: &str) -> Result<ServerFirst<'a>> {
        let mut parts = message.split(',');
        let first = parts.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return Err(mandatory_extension());
        }
        let nonce = server_nonce(attribute(first, 'r', "nonce")?, client_nonce)?;
        let salt = salt(attribute(parts.next(), 's', "salt")?)?;
        let iterations = iterations(attribute(parts.next(), 'i', "iteration count")?)?;
        extensions(parts)?;
        Ok(ServerFirst {
            nonce,
            salt,
            iterations,
        })
    }
}

fn malformed(problem: impl std::fmt::Display) -> Error {
    auth_failed(format!("the broker's SCRAM server-first-message {problem}"))
}

/// RFC 5802 §5.1: a client that does not understand a mandatory extension must fail.
fn mandatory_extension() -> Error {
    malformed("asks for a mandatory extension (m=), which this client does not support")
}

/// The value of `part` if it is attribute `name`.
fn attribute<'a>(part: Option<&'a str>, name: char, what: &str) -> Result<&'a str> {
    let value = part
        .and_then(|p| p.strip_prefix(name))
        .and_then(|p| p.strip_prefix('='));
    value.ok_or_else(|| malformed(format!("has no {name}= ({what}) where RFC 5802 puts it")))
}

/// The server's nonce extends the client's (so the client knows it answers this exchange)
/// and is echoed in client-final, so it must be printable.
fn server_nonce<'a>(nonce: &'a str, client_nonce: &str) -> Result<&'a str> {
    if !nonce.starts_with(client_nonce) || nonce.len() <= client_nonce.len() {
        return Err(malformed("has a nonce (r=) that does not extend the client's"));
    }
    if !nonce.bytes().all(is_printable) {
        return Err(malformed(
            "has a nonce (r=) with characters RFC 5802 does not allow",
        ));
    }
    Ok(nonce)
}

fn salt(value: &str) -> Result<Vec<u8>> {
    let salt = BASE64
        .decode(value)
        .map_err(|_| malformed("has a salt (s=) that is not base64"))?;
    if salt.is_empty() {
        return Err(malformed("has an empty salt (s=)"));
    }
    Ok(salt)
}

fn iterations(value: &str) -> Result<NonZeroU32> {
    // Digits only: `u32::from_str` would also take a leading `+`.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("has an iteration count (i=) that is not a number"));
    }
    // All digits, so a failed parse is an overflow: above the cap too.
    let count = value.parse::<u32>().unwrap_or(u32::MAX);
    if count < MIN_ITERATIONS {
        let problem = format!("asks for {count} iterations, below Kafka's minimum of {MIN_ITERATIONS}");
        return Err(malformed(problem));
    }
    if count > MAX_ITERATIONS {
        let problem = format!("asks for more iterations than this client's limit of {MAX_ITERATIONS}");
        return Err(malformed(problem));
    }
    NonZeroU32::new(count).ok_or_else(|| malformed("asks for zero iterations"))
}

/// Extensions after `i=` are `letter=value` and ignored, except `m=` (reserved, RFC 5802
/// §5.1: its presence must fail the exchange).
fn extensions<'a>(parts: impl Iterator<Item = &'a str>) -> Result<()> {
    for part in parts {
        let mut bytes = part.bytes();
        let name = bytes.next();
        if name == Some(b'm') {
            return Err(mandatory_extension());
        }
        if !name.is_some_and(|b| b.is_ascii_alphabetic()) || bytes.next() != Some(b'=') {
            return Err(malformed("has an attribute that is not letter=value"));
        }
    }
    Ok(())
}

/// server-final is `e=error` or `v=signature` (extensions after it are ignored).
fn verify_server_final(server_key: &hmac::Key, auth_message: &str, server_final: &str) -> Result<()> {
    let first = server_final.split(',').next().unwrap_or_default();
    if let Some(error) = first.strip_prefix("e=") {
        let message = format!("the broker refused the credentials: {}", for_message(error));
        return Err(auth_failed(message));
    }
    let Some(signature) = first.strip_prefix("v=") else {
        return Err(auth_failed(
            "the broker's SCRAM server-final-message has neither v= nor e=",
        ));
    };
    let signature = BASE64
        .decode(signature)
        .map_err(|_| auth_failed("the broker's SCRAM server signature (v=) is not base64"))?;
    // In constant time: `hmac::verify` compares the tags without early exit.
    hmac::verify(server_key, auth_message.as_bytes(), &signature).map_err(|_| {
        auth_failed(
            "the broker could not prove it knows the password: its SCRAM server signature does not match",
        )
    })
}

/// A broker's error text, fit for a log line: no control characters, bounded.
fn for_message(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|_| auth_failed(format!("the broker's SCRAM {what} is not UTF-8")))
}

/// RFC 5802's `printable`: visible ASCII except the comma that separates attributes.
fn is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x7e) && b != b','
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::protocol::sasl::{Credentials, Exchange, Mechanism};

    const PASSWORD: &str = "pencil";
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    fn creds(mechanism: Mechanism, username: &str, password: &str) -> Credentials {
        Credentials {
            mechanism,
            username: username.into(),
            password: Secret::new(password),
        }
    }

    /// An RFC 7677 exchange after its client-first.
    fn rfc_exchange() -> Exchange {
        let creds = creds(Mechanism::ScramSha256, "user", PASSWORD);
        let (exchange, first) = Exchange::start_with_nonce(&creds, NONCE).unwrap();
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        exchange
    }

    /// The error a step fails with, checked not to reveal the password.
    fn refusal(exchange: &mut Exchange, server: &[u8]) -> Error {
        let err = exchange.step(server).expect_err("the step should fail");
        assert!(!format!("{err} {err:?}").contains(PASSWORD), "{err}");
        err
    }

    /// Server-first fails as an authentication failure whose message mentions `expected`.
    fn refuses_server_first(server_first: &str, expected: &str) {
        let err = refusal(&mut rfc_exchange(), server_first.as_bytes());
        match err {
            Error::Kafka {
                code: 58,
                ref message,
                ..
            } => assert!(message.contains(expected), "{message}"),
            other => panic!("not an authentication failure: {other:?}"),
        }
    }

    #[test]
    fn rfc7677_sha256_vector() {
        let mut exchange = rfc_exchange();
        let client_final = exchange.step(SERVER_FIRST.as_bytes()).unwrap();
        let expected = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                        p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(client_final, Step::Send(expected.as_bytes().to_vec()));
        let server_final = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
        assert_eq!(exchange.step(server_final).unwrap(), Step::Done);
        assert!(matches!(exchange.step(b""), Err(Error::InvalidState(_))));
    }

    #[test]
    fn a_tampered_server_signature_is_refused() {
        let mut exchange = rfc_exchange();
        exchange.step(SERVER_FIRST.as_bytes()).unwrap();
        // The RFC's signature with its first byte changed.
        let err = refusal(&mut exchange, b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert!(
            err.to_string().contains("could not prove it knows the password"),
            "{err}"
        );
        assert!(matches!(exchange.step(b"v="), Err(Error::InvalidState(_))));
    }

    #[test]
    fn a_malformed_server_final_is_refused() {
        for server_final in [&b""[..], b"x=1", b"v=!!!", b"v=", b"\xff"] {
            let mut exchange = rfc_exchange();
            exchange.step(SERVER_FIRST.as_bytes()).unwrap();
            let err = refusal(&mut exchange, server_final);
            assert!(matches!(err, Error::Kafka { code: 58, .. }), "{err:?}");
        }
    }

    #[test]
    fn a_server_error_is_an_authentication_failure_naming_it() {
        let mut exchange = rfc_exchange();
        exchange.step(SERVER_FIRST.as_bytes()).unwrap();
        let err = refusal(&mut exchange, b"e=invalid-proof");
        let expected = auth_failed("the broker refused the credentials: invalid-proof");
        assert_eq!(err, expected);
    }

    #[test]
    fn a_server_nonce_not_extending_ours_is_refused() {
        let expected = "does not extend the client's";
        refuses_server_first("r=someoneElse%hvYD,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", expected);
        refuses_server_first(
            "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            expected,
        );
        refuses_server_first("r=rOprNGfwEbe,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", expected);
        let tab = "r=rOprNGfwEbeRWgbNEkqO\tx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        refuses_server_first(tab, "characters RFC 5802 does not allow");
    }

    #[test]
    fn iterations_outside_kafkas_minimum_and_our_cap_are_refused() {
        let with = |i: &str| format!("r={NONCE}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i={i}");
        refuses_server_first(&with("4095"), "below Kafka's minimum of 4096");
        refuses_server_first(&with("0"), "below Kafka's minimum");
        refuses_server_first(&with("100001"), "limit of 100000");
        refuses_server_first(&with("99999999999999999999"), "limit of 100000");
        refuses_server_first(&with("+5000"), "not a number");
        refuses_server_first(&with(""), "not a number");
        // The cap itself is accepted (PBKDF2 of 100 000 rounds, a fraction of a second).
        let mut exchange = rfc_exchange();
        assert!(exchange.step(with("100000").as_bytes()).is_ok());
    }

    #[test]
    fn a_bad_or_empty_salt_is_refused() {
        refuses_server_first(
            &format!("r={NONCE}x,s=!!notbase64,i=4096"),
            "salt (s=) that is not base64",
        );
        refuses_server_first(&format!("r={NONCE}x,s=,i=4096"), "empty salt");
    }

    #[test]
    fn a_mandatory_extension_is_refused() {
        refuses_server_first(&format!("m=ext,{}", SERVER_FIRST), "mandatory extension (m=)");
        refuses_server_first(&format!("{SERVER_FIRST},m=ext"), "mandatory extension (m=)");
    }

    #[test]
    fn attributes_must_come_in_rfc_order() {
        refuses_server_first(&format!("s=W22ZaJ0SNY7soEsUEjb6gQ==,r={NONCE}x,i=4096"), "no r=");
        refuses_server_first(&format!("r={NONCE}x,i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ=="), "no s=");
        refuses_server_first(&format!("r={NONCE}x,s=W22ZaJ0SNY7soEsUEjb6gQ=="), "no i=");
        refuses_server_first("", "no r=");
        refuses_server_first(&format!("{SERVER_FIRST},=x"), "not letter=value");
    }

    #[test]
    fn a_non_utf8_server_first_is_refused() {
        let err = refusal(&mut rfc_exchange(), b"r=\xff\xfe");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn unknown_extensions_after_the_iteration_count_are_ignored() {
        let mut exchange = rfc_exchange();
        let server_first = format!("{SERVER_FIRST},x=future,y=");
        assert!(matches!(
            exchange.step(server_first.as_bytes()),
            Ok(Step::Send(_))
        ));
    }

    #[test]
    fn usernames_are_escaped_as_saslnames() {
        assert_eq!(saslname("a=b,c"), "a=3Db=2Cc");
        assert_eq!(saslname("=2C"), "=3D2C");
        let (_, first) =
            Exchange::start_with_nonce(&creds(Mechanism::ScramSha512, "a=b,c", "pw"), "abc").unwrap();
        assert_eq!(first, b"n,,n=a=3Db=2Cc,r=abc");
    }

    #[test]
    fn a_given_nonce_must_be_printable_without_commas() {
        let c = creds(Mechanism::ScramSha256, "user", PASSWORD);
        for nonce in ["", "a,b", "a b", "é"] {
            assert!(matches!(
                Exchange::start_with_nonce(&c, nonce),
                Err(Error::InvalidState(_))
            ));
        }
    }

    /// A SCRAM server as RFC 5802 §3 describes it, independent of the client's code: it
    /// keeps only StoredKey and ServerKey, and checks the client's proof against StoredKey.
    struct TestServer {
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
        salt: &'static [u8],
        iterations: u32,
    }

    const SHA512_SALT: &[u8] = b"NaCl, but longer";

    impl TestServer {
        fn sha512(password: &str) -> TestServer {
            let iterations = 4096;
            let mut salted = [0u8; 64];
            let rounds = NonZeroU32::new(iterations).unwrap();
            pbkdf2::derive(
                pbkdf2::PBKDF2_HMAC_SHA512,
                rounds,
                SHA512_SALT,
                password.as_bytes(),
                &mut salted,
            );
            let salted = hmac::Key::new(hmac::HMAC_SHA512, &salted);
            let client_key = hmac::sign(&salted, b"Client Key");
            TestServer {
                stored_key: digest::digest(&digest::SHA512, client_key.as_ref())
                    .as_ref()
                    .to_vec(),
                server_key: hmac::sign(&salted, b"Server Key").as_ref().to_vec(),
                salt: SHA512_SALT,
                iterations,
            }
        }

        /// server-first for a client-first, and client-first-bare.
        fn first(&self, client_first: &[u8]) -> (String, String) {
            let bare = std::str::from_utf8(client_first)
                .unwrap()
                .strip_prefix("n,,")
                .unwrap();
            let client_nonce = bare.split_once(",r=").unwrap().1;
            let salt = BASE64.encode(self.salt);
            let server_first = format!("r={client_nonce}SERVER+nonce,s={salt},i={}", self.iterations);
            (server_first, bare.to_string())
        }

        /// server-final for client-final: `v=` if the proof holds, `e=invalid-proof` if not.
        fn last(&self, bare: &str, server_first: &str, client_final: &[u8]) -> String {
            let client_final = std::str::from_utf8(client_final).unwrap();
            let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
            let auth_message = format!("{bare},{server_first},{without_proof}");
            let stored_key = hmac::Key::new(hmac::HMAC_SHA512, &self.stored_key);
            let signature = hmac::sign(&stored_key, auth_message.as_bytes());
            let proof = BASE64.decode(proof).unwrap();
            let client_key: Vec<u8> = proof.iter().zip(signature.as_ref()).map(|(p, s)| p ^ s).collect();
            if digest::digest(&digest::SHA512, &client_key).as_ref() != self.stored_key {
                return "e=invalid-proof".into();
            }
            let server_key = hmac::Key::new(hmac::HMAC_SHA512, &self.server_key);
            let verifier = hmac::sign(&server_key, auth_message.as_bytes());
            format!("v={}", BASE64.encode(verifier))
        }
    }

    /// Runs an exchange with `password` against a server that knows `server_password`.
    fn sha512_exchange(password: &str, server_password: &str) -> Result<Step> {
        let server = TestServer::sha512(server_password);
        let (mut exchange, first) =
            Exchange::start(&creds(Mechanism::ScramSha512, "alice", password)).unwrap();
        let (server_first, bare) = server.first(&first);
        let Step::Send(client_final) = exchange.step(server_first.as_bytes())? else {
            panic!("no client-final");
        };
        let server_final = server.last(&bare, &server_first, &client_final);
        exchange.step(server_final.as_bytes())
    }

    #[test]
    fn sha512_against_a_server_that_checks_the_proof() {
        assert_eq!(
            sha512_exchange("correct horse", "correct horse").unwrap(),
            Step::Done
        );
    }

    #[test]
    fn sha512_with_a_wrong_password_is_refused_by_the_server() {
        let err = sha512_exchange("wrong horse", "correct horse").unwrap_err();
        assert_eq!(
            err,
            auth_failed("the broker refused the credentials: invalid-proof")
        );
        assert!(!err.to_string().contains("horse"));
    }

    #[test]
    fn a_servers_error_text_is_cleaned_for_messages() {
        assert_eq!(for_message("bad\r\nline"), "badline");
        assert_eq!(for_message(&"x".repeat(500)).len(), 200);
    }
}
