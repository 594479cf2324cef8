//! What nisshi lacks, in front of a nisshi of its own: SASL PLAIN, mutual TLS, and
//! sessions that expire (KIP-368).
//!
//! A [`Gateway`] listens on 127.0.0.1 and forwards every connection to a plaintext nisshi
//! that advertises the gateway's address (as [`crate::faults::PrivateBroker`] advertises
//! its proxy), so every connection a client makes, bootstrap or not, comes through it. Per
//! connection it may
//! - speak TLS (rustls, ring) with the given server certificate, and require a client
//!   certificate signed by a given CA;
//! - require SASL PLAIN with one user: it answers SaslHandshake (v0 and v1; after v0 the
//!   token comes as a bare frame) and SaslAuthenticate itself, a wrong password getting
//!   error 58 SASL_AUTHENTICATION_FAILED (then the connection closes), and may give the
//!   session a lifetime in its SaslAuthenticate answer (`session_lifetime_ms`, v1 and
//!   later). Once a session expired, a request other than SaslHandshake/SaslAuthenticate
//!   closes the connection, as Kafka does; a new SaslHandshake + SaslAuthenticate on an
//!   open connection re-authenticates it.
//!
//! ApiVersions goes to nisshi (before or after authentication); if its answer lacks
//! SaslHandshake (17) or SaslAuthenticate (36) they are added. Everything else goes to
//! nisshi and back byte for byte, a frame at a time, in order (answers the gateway makes
//! itself wait for those of requests sent before). Threads, no async runtime.
//!
//! ```text
//! let pki = certs::pki();
//! let g = Gateway::with()
//!     .tls(&pki.server)
//!     .client_ca(&pki.ca.cert)
//!     .plain("alice", "alice-secret")
//!     .session_lifetime(Duration::from_secs(2))
//!     .start();
//! let topic = g.new_topic("gw", 2);
//! // ... ("servers", &g.addr()) ...
//! assert!(g.reauthentications() > 0);
//! ```

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, ProduceRequest, ResponseHeader, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes, decode_request_header_from_buffer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use crate::certs::Pem;
use crate::faults::free_port;
use crate::secure::{Nisshi, broker_dir, create_topic};

/// Frames larger than this are taken as garbage and close the connection.
const MAX_FRAME: usize = 256 << 20;

const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
const PRODUCE: i16 = 0;

/// Kafka error codes the gateway answers with.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// What Kafka's PLAIN callback says to a wrong user or password.
pub const PLAIN_FAILURE_MESSAGE: &str = "Authentication failed: Invalid username or password";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a [`Gateway`] is to do: see [`Gateway::with`].
#[must_use]
pub struct Setup {
    tls: Option<Pem>,
    client_ca: Option<String>,
    plain: Option<(String, String)>,
    session_lifetime: Option<Duration>,
}

impl Setup {
    /// TLS (only) on the gateway's listener, with `server`'s certificate and key.
    pub fn tls(mut self, server: &Pem) -> Setup {
        self.tls = Some(server.clone());
        self
    }

    /// Requires a client certificate signed by the CA `ca_pem` (needs [`Setup::tls`]).
    pub fn client_ca(mut self, ca_pem: &str) -> Setup {
        self.client_ca = Some(ca_pem.to_string());
        self
    }

    /// Requires SASL PLAIN as `user` with `password`.
    pub fn plain(mut self, user: &str, password: &str) -> Setup {
        self.plain = Some((user.into(), password.into()));
        self
    }

    /// Sessions last `lifetime` from their (re-)authentication, as the SaslAuthenticate
    /// answer says (KIP-368): then a connection must re-authenticate or be closed.
    pub fn session_lifetime(mut self, lifetime: Duration) -> Setup {
        self.session_lifetime = Some(lifetime);
        self
    }

    /// Starts the gateway, then the nisshi behind it; waits until nisshi listens.
    pub fn start(self) -> Gateway {
        assert!(
            self.client_ca.is_none() || self.tls.is_some(),
            "a client certificate needs TLS"
        );
        let tls = self
            .tls
            .as_ref()
            .map(|server| server_config(server, self.client_ca.as_deref()));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the gateway");
        let addr = listener.local_addr().expect("the gateway's address");
        let backend: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let shared = Arc::new(Shared {
            backend,
            tls,
            plain: self.plain,
            session_lifetime: self.session_lifetime,
            stopped: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            tls_failures: AtomicU64::new(0),
            authenticated: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            reauthenticated: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            unauthenticated: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        });
        let s = shared.clone();
        thread::Builder::new()
            .name(format!("gateway-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))
            .expect("start the gateway's thread");
        let dir = broker_dir("gateway");
        let args = [
            "--listener-url".to_string(),
            format!("tcp://{backend}"),
            "--advertised-listener-url".into(),
            format!("tcp://{addr}"),
            "--storage-engine".into(),
            format!("memory://wasm-kafka-gateway-{}/", backend.port()),
            "--group-initial-rebalance-delay".into(),
            "0s".into(),
        ];
        let nisshi = Nisshi::start(&dir, "broker.log", backend, &args);
        Gateway {
            addr,
            shared,
            nisshi: Some(nisshi),
            dir,
        }
    }
}

/// The rustls configuration of the gateway's listener.
fn server_config(server: &Pem, client_ca: Option<&str>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots
                    .add(cert.expect("a client CA certificate"))
                    .expect("a usable CA");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("a client certificate verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(server.cert.as_bytes())
        .collect::<Result<_, _>>()
        .expect("the server certificate");
    let key = PrivateKeyDer::from_pem_slice(server.key.as_bytes()).expect("the server key");
    Arc::new(
        builder
            .with_single_cert(chain, key)
            .expect("the server certificate and key"),
    )
}

/// A listener with TLS and/or SASL PLAIN in front of a nisshi of its own. Stops (the
/// gateway, its connections and nisshi) on drop.
pub struct Gateway {
    addr: SocketAddr,
    shared: Arc<Shared>,
    nisshi: Option<Nisshi>,
    dir: PathBuf,
}

impl Gateway {
    /// Nothing required (a plain forwarder) until told.
    pub fn with() -> Setup {
        Setup {
            tls: None,
            client_ca: None,
            plain: None,
            session_lifetime: None,
        }
    }

    /// "127.0.0.1:P": what clients take as `servers` (and nisshi advertises).
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// nisshi's own (plaintext, open) listener, bypassing the gateway.
    pub fn backend_addr(&self) -> SocketAddr {
        self.shared.backend
    }

    /// Creates a topic (directly on nisshi) with a name no other test uses.
    pub fn new_topic(&self, prefix: &str, partitions: i32) -> String {
        create_topic(self.shared.backend, prefix, partitions)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections whose TLS handshake failed (e.g. no or an unknown client certificate).
    pub fn tls_failures(&self) -> u64 {
        self.shared.tls_failures.load(Ordering::SeqCst)
    }

    /// First authentications that succeeded (re-authentications not counted).
    pub fn authentications(&self) -> u64 {
        self.shared.authenticated.load(Ordering::SeqCst)
    }

    /// Authentications (first or again) refused: wrong user or password.
    pub fn failed_authentications(&self) -> u64 {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Successful re-authentications of connections already authenticated.
    pub fn reauthentications(&self) -> u64 {
        self.shared.reauthenticated.load(Ordering::SeqCst)
    }

    /// Connections closed because a request came after their session expired.
    pub fn sessions_expired(&self) -> u64 {
        self.shared.expired.load(Ordering::SeqCst)
    }

    /// Connections closed because a request other than ApiVersions, SaslHandshake or
    /// SaslAuthenticate came before authentication.
    pub fn unauthenticated_requests(&self) -> u64 {
        self.shared.unauthenticated.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// What nisshi printed.
    pub fn log(&self) -> String {
        self.nisshi.as_ref().map(Nisshi::log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let conns: Vec<_> = lock(&self.shared.conns).drain().collect();
        for (_, (client, upstream)) in conns {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
        drop(self.nisshi.take());
        let _ = fs::remove_dir_all(&self.dir);
    }
}

struct Shared {
    backend: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    plain: Option<(String, String)>,
    session_lifetime: Option<Duration>,
    stopped: AtomicBool,
    accepted: AtomicU64,
    tls_failures: AtomicU64,
    authenticated: AtomicU64,
    failed: AtomicU64,
    reauthenticated: AtomicU64,
    expired: AtomicU64,
    unauthenticated: AtomicU64,
    next_id: AtomicU64,
    /// Open connections: client and upstream sockets, to shut down from outside.
    conns: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let s = shared.clone();
        let _ = thread::Builder::new()
            .name("gateway-conn".into())
            .spawn(move || connection(client, s));
    }
}

/// The client's side of a connection, TLS or not, shared by the thread reading requests
/// and whichever thread writes an answer.
#[derive(Clone)]
struct ClientIo {
    sock: Arc<TcpStream>,
    tls: Option<Arc<Mutex<ServerConnection>>>,
    shared: Arc<Shared>,
}

impl ClientIo {
    /// Reads plaintext: from the socket, or what TLS decrypted from it (doing the handshake
    /// on the way). 0 at the end.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return (&*self.sock).read(buf);
        };
        loop {
            {
                let mut c = lock(tls);
                match c.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            // Not under the lock: an answer may be written meanwhile.
            let mut raw = [0u8; 8192];
            let n = (&*self.sock).read(&mut raw)?;
            let mut c = lock(tls);
            if n == 0 {
                return Ok(0);
            }
            let mut rest = &raw[..n];
            while !rest.is_empty() {
                c.read_tls(&mut rest)?;
                if let Err(e) = c.process_new_packets() {
                    // The alert that says why, then the end.
                    while c.wants_write() {
                        if c.write_tls(&mut &*self.sock).is_err() {
                            break;
                        }
                    }
                    self.shared.tls_failures.fetch_add(1, Ordering::SeqCst);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
            while c.wants_write() {
                c.write_tls(&mut &*self.sock)?;
            }
        }
    }

    fn read_exact(&self, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read(buf)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => buf = &mut buf[n..],
            }
        }
        Ok(())
    }

    fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return (&*self.sock).write_all(data);
        };
        let mut c = lock(tls);
        c.writer().write_all(data)?;
        while c.wants_write() {
            c.write_tls(&mut &*self.sock)?;
        }
        Ok(())
    }
}

/// Reads one length-prefixed frame (prefix included) with `read_exact`; `None` at end of
/// file.
fn read_frame(mut read_exact: impl FnMut(&mut [u8]) -> io::Result<()>) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 4];
    match read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = i32::from_be_bytes(prefix);
    if len < 0 || len as usize > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {len}"),
        ));
    }
    let mut frame = vec![0u8; 4 + len as usize];
    frame[..4].copy_from_slice(&prefix);
    read_exact(&mut frame[4..])?;
    Ok(Some(frame))
}

/// An answer the client is owed, in the order of its requests.
enum Owed {
    /// From nisshi, to the request with this correlation id, API key and version.
    Upstream {
        correlation: i32,
        api_key: i16,
        version: i16,
    },
    /// Made by the gateway; the connection closes after it when `close` is set.
    Local { frame: Vec<u8>, close: bool },
}

/// Answers owed on one connection, and the client to write them to: whoever writes to the
/// client holds this lock, so answers go out in order.
struct Answers {
    owed: VecDeque<Owed>,
    client: ClientIo,
}

/// Sets up one connection and runs its two directions.
fn connection(client: TcpStream, shared: Arc<Shared>) {
    let Ok(upstream) = TcpStream::connect_timeout(&shared.backend, Duration::from_secs(5)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let (Ok(c_reg), Ok(u_reg), Ok(u_read)) = (client.try_clone(), upstream.try_clone(), upstream.try_clone())
    else {
        return;
    };
    lock(&shared.conns).insert(id, (c_reg, u_reg));
    let tls = match &shared.tls {
        Some(config) => match ServerConnection::new(config.clone()) {
            Ok(c) => Some(Arc::new(Mutex::new(c))),
            Err(_) => {
                close(&shared, id);
                return;
            }
        },
        None => None,
    };
    let io = ClientIo {
        sock: Arc::new(client),
        tls,
        shared: shared.clone(),
    };
    let answers = Arc::new(Mutex::new(Answers {
        owed: VecDeque::new(),
        client: io.clone(),
    }));
    let (s, a) = (shared.clone(), answers.clone());
    let down = thread::Builder::new().name("gateway-down".into()).spawn(move || {
        let _ = responses_down(&u_read, &a, &s);
        close(&s, id);
    });
    let mut session = Session::default();
    let ended = requests_up(&io, &upstream, &answers, &shared, &mut session);
    if !matches!(ended, Ok(End::AfterOwed)) {
        close(&shared, id);
    }
    if let Ok(down) = down {
        let _ = down.join();
    }
    close(&shared, id);
}

/// Shuts down both sockets of connection `id`, if it is still open.
fn close(shared: &Shared, id: u64) {
    if let Some((client, upstream)) = lock(&shared.conns).remove(&id) {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
    }
}

/// How the client → nisshi direction ended.
enum End {
    /// The client closed, or the gateway closes the connection now.
    Now,
    /// The connection closes once the answers owed are written (the last one the
    /// gateway's own, e.g. a failed authentication).
    AfterOwed,
}

/// Where a connection is with SASL.
#[derive(Default)]
struct Session {
    authenticated: bool,
    /// The SaslHandshake version answered, while its authentication is to come.
    handshake: Option<i16>,
    expires: Option<Instant>,
}

/// A request's header fields the gateway needs.
struct Head {
    api_key: i16,
    version: i16,
    correlation: i32,
}

fn head(frame: &[u8]) -> Option<Head> {
    (frame.len() >= 12).then(|| Head {
        api_key: i16::from_be_bytes([frame[4], frame[5]]),
        version: i16::from_be_bytes([frame[6], frame[7]]),
        correlation: i32::from_be_bytes(frame[8..12].try_into().expect("4 bytes")),
    })
}

/// Client → nisshi: answers SASL itself, forwards the rest.
fn requests_up(
    client: &ClientIo,
    upstream: &TcpStream,
    answers: &Mutex<Answers>,
    shared: &Shared,
    session: &mut Session,
) -> io::Result<End> {
    while let Some(frame) = read_frame(|b| client.read_exact(b))? {
        let Some(plain) = &shared.plain else {
            let Some(h) = head(&frame) else {
                return Ok(End::Now);
            };
            forward(&frame, &h, upstream, answers)?;
            continue;
        };
        // After a v0 handshake the token comes bare, and a bare frame answers it.
        if session.handshake == Some(0) {
            session.handshake = None;
            let ok = plain_ok(&frame[4..], plain);
            count_authentication(shared, session, ok);
            if !ok {
                return Ok(End::Now);
            }
            answer(answers, 0u32.to_be_bytes().to_vec(), false)?;
            continue;
        }
        let Some(h) = head(&frame) else {
            return Ok(End::Now);
        };
        match h.api_key {
            SASL_HANDSHAKE => {
                let mechanism = decode_body(&frame, SaslHandshakeRequest::decode)
                    .map(|r| r.mechanism.as_str().to_string());
                let ok = mechanism.as_deref() == Some("PLAIN");
                let resp = SaslHandshakeResponse::default()
                    .with_error_code(if ok { 0 } else { UNSUPPORTED_SASL_MECHANISM })
                    .with_mechanisms(vec![StrBytes::from_static_str("PLAIN")]);
                let frame = response(ApiKey::SaslHandshake, &h, &resp)?;
                if !ok {
                    return answer(answers, frame, true);
                }
                session.handshake = Some(h.version);
                answer(answers, frame, false)?;
            }
            SASL_AUTHENTICATE => {
                if session.handshake.take() != Some(1) {
                    let resp = SaslAuthenticateResponse::default()
                        .with_error_code(ILLEGAL_SASL_STATE)
                        .with_error_message(Some(StrBytes::from_static_str(
                            "SaslAuthenticate without a SaslHandshake v1 before it",
                        )));
                    return answer(answers, response(ApiKey::SaslAuthenticate, &h, &resp)?, true);
                }
                let ok = decode_body(&frame, SaslAuthenticateRequest::decode)
                    .is_some_and(|r| plain_ok(&r.auth_bytes, plain));
                count_authentication(shared, session, ok);
                let mut resp = SaslAuthenticateResponse::default();
                if ok {
                    let lifetime = shared.session_lifetime.filter(|_| h.version >= 1);
                    session.expires = lifetime.map(|l| Instant::now() + l);
                    resp.session_lifetime_ms = lifetime.map_or(0, |l| l.as_millis() as i64);
                } else {
                    resp.error_code = SASL_AUTHENTICATION_FAILED;
                    resp.error_message = Some(StrBytes::from_static_str(PLAIN_FAILURE_MESSAGE));
                }
                let frame = response(ApiKey::SaslAuthenticate, &h, &resp)?;
                if !ok {
                    return answer(answers, frame, true);
                }
                answer(answers, frame, false)?;
            }
            API_VERSIONS => forward(&frame, &h, upstream, answers)?,
            _ if !session.authenticated => {
                shared.unauthenticated.fetch_add(1, Ordering::SeqCst);
                return Ok(End::Now);
            }
            _ if session.expires.is_some_and(|at| Instant::now() >= at) => {
                shared.expired.fetch_add(1, Ordering::SeqCst);
                return Ok(End::Now);
            }
            _ => forward(&frame, &h, upstream, answers)?,
        }
    }
    Ok(End::Now)
}

/// Counts an authentication's outcome and notes it in `session`.
fn count_authentication(shared: &Shared, session: &mut Session, ok: bool) {
    let counter = match (ok, session.authenticated) {
        (false, _) => &shared.failed,
        (true, false) => &shared.authenticated,
        (true, true) => &shared.reauthenticated,
    };
    counter.fetch_add(1, Ordering::SeqCst);
    if ok {
        session.authenticated = true;
    } else {
        session.expires = None;
    }
}

/// Whether a PLAIN token (`authzid \0 user \0 password`) is the configured user's.
fn plain_ok(token: &[u8], (user, password): &(String, String)) -> bool {
    let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
    match parts[..] {
        [authzid, u, p] => {
            (authzid.is_empty() || authzid == user.as_bytes())
                && u == user.as_bytes()
                && p == password.as_bytes()
        }
        _ => false,
    }
}

/// The body of request `frame` (after its header), decoded; `None` if it does not decode.
fn decode_body<T>(frame: &[u8], decode: impl FnOnce(&mut Bytes, i16) -> anyhow::Result<T>) -> Option<T> {
    let mut buf = Bytes::copy_from_slice(&frame[4..]);
    let header = decode_request_header_from_buffer(&mut buf).ok()?;
    decode(&mut buf, header.request_api_version).ok()
}

/// A response frame (length prefix included) to the request `h`.
fn response(key: ApiKey, h: &Head, body: &impl Encodable) -> io::Result<Vec<u8>> {
    let bad = |e: anyhow::Error| io::Error::new(io::ErrorKind::InvalidData, format!("{e:#}"));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(h.correlation)
        .encode(&mut buf, key.response_header_version(h.version))
        .map_err(bad)?;
    body.encode(&mut buf, h.version).map_err(bad)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.to_vec())
}

/// Sends the gateway's own answer: now, if no answer from nisshi is owed before it, else
/// after those. With `close`, the connection is to close after it: how (what the caller
/// returns); without, the caller goes on.
fn answer(answers: &Mutex<Answers>, frame: Vec<u8>, close: bool) -> io::Result<End> {
    let mut a = lock(answers);
    if a.owed.is_empty() {
        a.client.write_all(&frame)?;
        return Ok(End::Now);
    }
    a.owed.push_back(Owed::Local { frame, close });
    Ok(End::AfterOwed)
}

/// Forwards a request to nisshi, noting the answer it owes (none to a Produce with
/// acks=0).
fn forward(frame: &[u8], h: &Head, mut upstream: &TcpStream, answers: &Mutex<Answers>) -> io::Result<()> {
    let unanswered =
        h.api_key == PRODUCE && decode_body(frame, ProduceRequest::decode).is_some_and(|p| p.acks == 0);
    if !unanswered {
        lock(answers).owed.push_back(Owed::Upstream {
            correlation: h.correlation,
            api_key: h.api_key,
            version: h.version,
        });
    }
    upstream.write_all(frame)
}

/// nisshi → client: forwards answers a frame at a time, in order with the gateway's own,
/// adding the SASL APIs to ApiVersions answers that lack them.
fn responses_down(upstream: &TcpStream, answers: &Mutex<Answers>, shared: &Shared) -> io::Result<()> {
    let mut from = upstream;
    while let Some(mut frame) = read_frame(|b| from.read_exact(b))? {
        let mut a = lock(answers);
        if let Some(Owed::Upstream {
            correlation,
            api_key: API_VERSIONS,
            version,
        }) = a.owed.front()
            && shared.plain.is_some()
            && frame.len() >= 8
            && i32::from_be_bytes(frame[4..8].try_into().expect("4 bytes")) == *correlation
            && let Some(patched) = with_sasl_apis(&frame, *correlation, *version)
        {
            frame = patched;
        }
        if matches!(a.owed.front(), Some(Owed::Upstream { .. })) {
            a.owed.pop_front();
        }
        a.client.write_all(&frame)?;
        while let Some(Owed::Local { .. }) = a.owed.front() {
            let Some(Owed::Local { frame, close }) = a.owed.pop_front() else {
                unreachable!()
            };
            a.client.write_all(&frame)?;
            if close {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// An ApiVersions answer frame with SaslHandshake and SaslAuthenticate added if missing;
/// `None` when it has them or does not decode (an error answer, say).
fn with_sasl_apis(frame: &[u8], correlation: i32, version: i16) -> Option<Vec<u8>> {
    // ApiVersions answers have header v0 (the correlation id only) in every version.
    let mut body = Bytes::copy_from_slice(&frame[8..]);
    let mut resp = ApiVersionsResponse::decode(&mut body, version).ok()?;
    if resp.error_code != 0 {
        return None;
    }
    let mut added = false;
    for (key, max) in [(SASL_HANDSHAKE, 1), (SASL_AUTHENTICATE, 2)] {
        if !resp.api_keys.iter().any(|k| k.api_key == key) {
            resp.api_keys.push(
                ApiVersion::default()
                    .with_api_key(key)
                    .with_min_version(0)
                    .with_max_version(max),
            );
            added = true;
        }
    }
    if !added {
        return None;
    }
    let h = Head {
        api_key: API_VERSIONS,
        version,
        correlation,
    };
    response(ApiKey::ApiVersions, &h, &resp).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ApiVersions answer frame (length prefix included) listing `keys`.
    fn api_versions(keys: &[i16], version: i16) -> Vec<u8> {
        let resp = ApiVersionsResponse::default().with_api_keys(
            keys.iter()
                .map(|k| ApiVersion::default().with_api_key(*k).with_max_version(3))
                .collect(),
        );
        let h = Head {
            api_key: API_VERSIONS,
            version,
            correlation: 42,
        };
        response(ApiKey::ApiVersions, &h, &resp).unwrap()
    }

    fn keys_of(frame: &[u8], version: i16) -> Vec<(i16, i16)> {
        assert_eq!(
            i32::from_be_bytes(frame[4..8].try_into().unwrap()),
            42,
            "correlation id"
        );
        let mut body = Bytes::copy_from_slice(&frame[8..]);
        let resp = ApiVersionsResponse::decode(&mut body, version).unwrap();
        resp.api_keys.iter().map(|k| (k.api_key, k.max_version)).collect()
    }

    #[test]
    fn the_sasl_apis_are_added_to_an_api_versions_answer_that_lacks_them() {
        for version in [0, 3] {
            let patched =
                with_sasl_apis(&api_versions(&[0, 1, 3, 18], version), 42, version).expect("patched");
            let len = i32::from_be_bytes(patched[..4].try_into().unwrap()) as usize;
            assert_eq!(len, patched.len() - 4, "v{version}: the length prefix");
            assert_eq!(
                keys_of(&patched, version),
                [(0, 3), (1, 3), (3, 3), (18, 3), (17, 1), (36, 2)],
                "v{version}"
            );
        }
    }

    #[test]
    fn an_answer_with_the_sasl_apis_or_an_error_is_left_alone() {
        assert!(with_sasl_apis(&api_versions(&[17, 18, 36], 3), 42, 3).is_none());
        assert!(with_sasl_apis(&[0, 0, 0, 6, 0, 0, 0, 42, 0, 35], 42, 3).is_none());
    }

    #[test]
    fn a_plain_token_is_checked_whole() {
        let user = ("u".to_string(), "p".to_string());
        assert!(plain_ok(b"\0u\0p", &user));
        assert!(plain_ok(b"u\0u\0p", &user));
        for bad in [&b"\0u\0q"[..], b"\0v\0p", b"x\0u\0p", b"\0u\0p\0", b"u\0p", b""] {
            assert!(!plain_ok(bad, &user), "{bad:?}");
        }
    }
}
