//! TLS inside the component (rustls with ring), so every component host gets the same
//! behaviour without TLS support of its own. A broker is verified under the name it is
//! known by: the bootstrap address as written, then the host each broker advertises in
//! Metadata (an IP address is checked against the certificate's IP names).
//!
//! The stream is non-blocking like the TCP socket under it: reads and writes move what
//! they can and say `WouldBlock` otherwise, and the connection above asks
//! [`TlsStream::wants_write`] what to wait for.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, CipherSuite, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SupportedCipherSuite,
};

use super::poll::{self, Interest};
use crate::error::{Error, Result};

/// Which of the TLS inputs a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsInput {
    CaCert,
    ClientCert,
    ClientKey,
}

/// What is wrong with one of the TLS inputs; never quotes a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInputError {
    pub input: TlsInput,
    pub message: String,
}

/// How to set up TLS with every broker of a cluster: built once from the settings, shared
/// by every connection.
#[derive(Clone)]
pub struct TlsSettings {
    config: Arc<ClientConfig>,
    insecure: bool,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsSettings")
    }
}

impl PartialEq for TlsSettings {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for TlsSettings {}

/// PEM inputs of [`TlsSettings::new`].
#[derive(Default)]
pub struct TlsPem<'a> {
    /// CA certificates trusted besides the public roots.
    pub ca: Option<&'a str>,
    /// A client certificate chain and its key, for mutual TLS.
    pub client: Option<(&'a str, &'a str)>,
    /// Accept any certificate under any name (tests only).
    pub insecure_skip_verify: bool,
}

impl TlsSettings {
    /// Parses the PEM inputs and builds the client configuration: TLS 1.2 and 1.3,
    /// ring's algorithms, the public (Mozilla) roots plus `ca`.
    pub fn new(pem: TlsPem<'_>) -> Result<Self, TlsInputError> {
        let provider = Arc::new(provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        // Parsed even when unused (insecureSkipVerify), so a bad caCert is said at once.
        let roots = roots(pem.ca)?;
        let builder = if pem.insecure_skip_verify {
            let verifier = AnyCertificate(provider.signature_verification_algorithms);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        } else {
            builder.with_root_certificates(roots)
        };
        let config = match pem.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(TlsInput::ClientCert, cert)?;
                let key = private_key(key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsInputError {
                        input: TlsInput::ClientKey,
                        message: key_problem(&e),
                    })?
            }
        };
        Ok(TlsSettings {
            config: Arc::new(config),
            insecure: pem.insecure_skip_verify,
        })
    }

    /// Whether brokers are taken without verification (`insecureSkipVerify`).
    pub fn skips_verification(&self) -> bool {
        self.insecure
    }
}

/// ring's algorithms and every cipher suite it has, in the order offered to brokers (a
/// broker takes the first it has, or picks by its own order; nisshi, a rustls server,
/// takes the client's).
///
/// In the component ChaCha20-Poly1305 comes first, the rest in ring's order: wasm has no
/// AES instructions, and ring's AES-GCM without them is several times slower than its
/// ChaCha20-Poly1305. `just bench tls` on 2 cores (AMD EPYC) on 2026-12-01, 3 rounds, the
/// same component but for this order, ring's (TLS13_AES_256_GCM_SHA384 negotiated) against
/// ChaCha20 first (TLS13_CHACHA20_POLY1305_SHA256): the consumer's CPU for 1,000,000
/// records of 100 B over TLS, above its CPU over plaintext, 3.99 s against 0.60 s; records/s
/// over TLS 200,000 against 600,000 reading, 22,700 against 73,400 writing 1 KiB values,
/// 147,000 against 281,000 writing 100 B (0.24x, 0.27x, 0.51x of librdkafka's against
/// 0.61x, 0.89x, 0.94x). AES-GCM stays offered, for brokers without ChaCha20.
fn provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    if cfg!(target_arch = "wasm32") {
        chacha20_first(&mut provider.cipher_suites);
    }
    provider
}

/// The ChaCha20-Poly1305 suites first, the others after them in their order.
fn chacha20_first(suites: &mut [SupportedCipherSuite]) {
    suites.sort_by_key(|s| !is_chacha20(s.suite()));
}

fn is_chacha20(suite: CipherSuite) -> bool {
    matches!(
        suite,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}

fn roots(ca: Option<&str>) -> Result<RootCertStore, TlsInputError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca {
        for (i, cert) in certificates(TlsInput::CaCert, ca)?.into_iter().enumerate() {
            roots.add(cert).map_err(|e| TlsInputError {
                input: TlsInput::CaCert,
                message: format!("certificate {} is not a usable CA certificate: {e}", i + 1),
            })?;
        }
    }
    Ok(roots)
}

/// Every CERTIFICATE block of `pem`, at least one.
fn certificates(input: TlsInput, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsInputError> {
    let bad = |message: String| TlsInputError { input, message };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no PEM CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// The one private key of `pem`. Errors say what is wrong, never what the key holds.
fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsInputError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsInputError {
        input: TlsInput::ClientKey,
        message: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM PRIVATE KEY block found (PKCS#8, PKCS#1 or SEC1)".into()
            }
            _ => "not a readable PEM private key".into(),
        },
    })
}

fn key_problem(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => "does not match the certificate of clientCert".into(),
        _ => "not a private key ring can sign with (RSA, ECDSA P-256/P-384 or Ed25519)".into(),
    }
}

/// `insecureSkipVerify`: any certificate under any name. Handshake signatures are still
/// checked, so the peer holds the key of the certificate it shows.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The most plaintext one write takes (and so the most ciphertext held): a produce request
/// goes out in one socket write, not rustls's default of one per 64 KiB. Writing 300,000
/// records of 1 KiB over TLS (ChaCha20-Poly1305) took 3.4 s instead of 5.5 s (medians of
/// 4 runs, 2 cores).
const WRITE_LIMIT: usize = 1 << 20;

/// A TLS session over a non-blocking TCP socket.
pub struct TlsStream {
    tcp: TcpStream,
    tls: ClientConnection,
    addr: String,
    /// Ciphertext taken from rustls that the socket has not taken yet, from `out_pos` on.
    /// rustls hands out each record on its own, and a component's socket has no
    /// TCP_NODELAY (WASI has no such option): a small write made while an earlier one is
    /// unacknowledged waits for the broker's delayed ACK, 40 ms on Linux. Written one by
    /// one, the handshake's last records (ChangeCipherSpec, Finished, then the first
    /// request) stalled every connection's opening by 40 ms; so everything rustls has
    /// ready goes to the socket in one call (a destination's `open()` over TLS: 48 ms
    /// before, 4.5 ms after, medians of 10).
    out: Vec<u8>,
    out_pos: usize,
}

impl TlsStream {
    /// Runs the handshake with the broker at `addr` (`host:port`, verified as `host`) over
    /// the connected `tcp`, before `deadline`.
    pub fn handshake(tcp: TcpStream, settings: &TlsSettings, addr: &str, deadline: Instant) -> Result<Self> {
        let host = host_of(addr);
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| Error::Tls(format!("{addr}: \"{host}\" is not a name TLS can verify")))?;
        let mut tls = ClientConnection::new(settings.config.clone(), name)
            .map_err(|e| Error::Tls(format!("{addr}: {e}")))?;
        tls.set_buffer_limit(Some(WRITE_LIMIT));
        let mut stream = TlsStream {
            tcp,
            tls,
            addr: addr.to_string(),
            out: Vec::new(),
            out_pos: 0,
        };
        while stream.tls.is_handshaking() {
            stream.handshake_step(deadline)?;
        }
        // TLS 1.3: the client's Finished waits in rustls, to go out with the first request.
        Ok(stream)
    }

    /// Moves the handshake on: sends what is due, else waits for and takes in the broker's
    /// next flight.
    fn handshake_step(&mut self, deadline: Instant) -> Result<()> {
        if self.wants_write() {
            self.send_pending().map_err(|e| self.handshake_io_error(e))?;
            if !self.wants_write() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "{}: the TLS handshake did not complete in time (a slow or filtered network, or a listener that is not TLS)",
                self.addr
            )));
        }
        let mut interest = [Interest::new(self.tcp.as_raw_fd(), self.wants_write())];
        poll::wait(&mut interest, deadline).map_err(|e| self.handshake_io_error(e))?;
        if interest[0].readable {
            match self.tls.read_tls(&mut self.tcp) {
                Ok(0) => return Err(self.handshake_io_error(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => self.process().map_err(|e| tls_error(&self.addr, &e))?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(self.handshake_io_error(e)),
            }
        }
        Ok(())
    }

    /// The broker closed or reset the connection mid-handshake: a plaintext listener does
    /// that to a TLS hello, and a restarting broker too (so it stays retriable).
    fn handshake_io_error(&self, e: io::Error) -> Error {
        Error::Connection(format!(
            "{}: the connection ended during the TLS handshake ({}); is the listener plaintext? (then set tls.enabled=false)",
            self.addr,
            crate::error::io_reason(&e)
        ))
    }

    /// Decrypts what was read; an alert or a protocol error breaks the session (and is
    /// sent to the broker as an alert).
    fn process(&mut self) -> std::result::Result<(), rustls::Error> {
        let result = self.tls.process_new_packets().map(drop);
        if result.is_err() {
            let _ = self.send_pending();
        }
        result
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Whether encrypted bytes wait to go out: the socket's writability matters then.
    pub fn wants_write(&self) -> bool {
        self.out_pos < self.out.len() || self.tls.wants_write()
    }

    /// Sends encrypted bytes until none are left or the socket is full: all rustls has
    /// ready, in one write when the socket takes it.
    pub fn send_pending(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.out)?;
        }
        self.send_out()
    }

    /// Writes `out` from `out_pos` until it is all sent or the socket is full.
    fn send_out(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.tcp.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Says goodbye (close_notify) as far as the socket takes it.
    pub fn close(&mut self) {
        self.tls.send_close_notify();
        let _ = self.send_pending();
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            // No plaintext buffered: take in more of the socket's bytes.
            if self.tls.read_tls(&mut self.tcp)? == 0 {
                return Ok(0);
            }
            if let Err(e) = self.process() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    TlsFailure(session_error(&self.addr, &e)),
                ));
            }
            // A key update or an alert to answer.
            self.send_pending()?;
        }
    }
}

impl Write for TlsStream {
    /// Takes plaintext only once earlier ciphertext has reached the socket, so what is
    /// buffered stays bounded by one write. Records rustls holds (a handshake's Finished)
    /// go out with the new ones, in one socket write.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_out()?;
        if self.out_pos < self.out.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.tls.writer().write(buf)?;
        self.send_pending()?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }
}

/// A TLS error found while reading, carried through `io::Error` to the connection.
#[derive(Debug)]
pub struct TlsFailure(pub Error);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TlsFailure {}

/// The host part of `host:port` (an IPv6 address without its brackets).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// An error of an established session. Under TLS 1.3 a broker refuses a client
/// certificate after the handshake, on the first read: that stays a TLS error, as do
/// certificate problems. Anything else (a bad record, a broker's internal error alert)
/// breaks this connection only, and a new one may well work.
fn session_error(addr: &str, e: &rustls::Error) -> Error {
    use rustls::AlertDescription as Alert;
    match e {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            | Alert::AccessDenied,
        ) => tls_error(addr, e),
        other => Error::Connection(format!("{addr}: TLS session broken: {other}")),
    }
}

/// A rustls error as the user can act on it, naming the broker.
fn tls_error(addr: &str, e: &rustls::Error) -> Error {
    use rustls::AlertDescription as Alert;
    let why = match e {
        rustls::Error::InvalidCertificate(c) => certificate_problem(c),
        rustls::Error::InvalidMessage(_) => {
            "the broker does not speak TLS; is the listener plaintext? (then set tls.enabled=false)".into()
        }
        rustls::Error::AlertReceived(Alert::CertificateRequired) => {
            "the broker requires a client certificate (clientCert, clientKey)".into()
        }
        rustls::Error::AlertReceived(Alert::HandshakeFailure) => {
            format!(
                "the broker refused the handshake ({e}); does it require a client certificate (clientCert, clientKey)?"
            )
        }
        rustls::Error::AlertReceived(
            Alert::BadCertificate | Alert::UnknownCA | Alert::CertificateUnknown,
        ) => {
            format!("the broker refused the client certificate ({e})")
        }
        other => other.to_string(),
    };
    Error::Tls(format!("{addr}: {why}"))
}

fn certificate_problem(c: &CertificateError) -> String {
    let what = match c {
        CertificateError::UnknownIssuer => {
            "has an unknown issuer: no trusted CA signed it (add the broker's CA with caCert)".to_string()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("has expired ({c})")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("is not valid yet ({c})")
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("is not valid for the name the broker is reached by ({c})")
        }
        other => format!("was refused: {other}"),
    };
    format!("the broker's certificate {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_cut_from_addresses() {
        assert_eq!(host_of("broker-1.example.com:9093"), "broker-1.example.com");
        assert_eq!(host_of("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9093"), "::1");
    }

    #[test]
    fn bad_pem_names_its_input_and_never_quotes_a_key() {
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
        let ca = TlsSettings::new(TlsPem {
            ca: Some("not a certificate"),
            ..TlsPem::default()
        })
        .unwrap_err();
        assert_eq!(ca.input, TlsInput::CaCert);
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let key = TlsSettings::new(TlsPem {
            client: Some((cert, secret)),
            ..TlsPem::default()
        })
        .unwrap_err();
        assert_eq!(key.input, TlsInput::ClientKey, "{}", key.message);
        assert!(!key.message.contains("c2VjcmV0"), "{}", key.message);
    }

    #[test]
    fn chacha20_goes_first_and_every_suite_stays_in_order() {
        let ring: Vec<CipherSuite> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let mut suites = rustls::crypto::ring::default_provider().cipher_suites;
        chacha20_first(&mut suites);
        let suites: Vec<CipherSuite> = suites.iter().map(|s| s.suite()).collect();
        let (chacha, rest): (Vec<_>, Vec<_>) = ring.iter().partition(|s| is_chacha20(**s));
        assert_eq!(suites, [chacha, rest].concat());
        assert_eq!(suites[0], CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        assert!(suites.contains(&CipherSuite::TLS13_AES_256_GCM_SHA384));
    }

    #[test]
    fn no_pem_at_all_is_refused() {
        let e = TlsSettings::new(TlsPem {
            ca: Some(""),
            ..TlsPem::default()
        })
        .unwrap_err();
        assert!(e.message.contains("no PEM"), "{}", e.message);
    }
}
