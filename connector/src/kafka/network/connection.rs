//! One connection to one broker: request framing, correlation ids, several requests in
//! flight at once, and the API versions both sides speak, over a [`Transport`]. The
//! transport is non-blocking; the owner drives it with [`Connection::interest`] and
//! [`Connection::on_ready`] (see `poll::wait`), so many connections progress together on
//! one thread.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use super::Security;
use super::poll::{self, Interest};
use super::sasl;
use super::tls::TlsFailure;
use super::transport::Transport;
use crate::error::{self, Error, Result};
use crate::kafka::protocol::errors;
use crate::kafka::protocol::jitter::random_up_to;
use crate::kafka::protocol::sasl::Credentials;
use crate::kafka::protocol::throttle::ThrottleTime;
use crate::kafka::protocol::versions::{Versions, our_versions};

/// Responses larger than this are taken as a corrupt length prefix, not a real response.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// Room made for a frame at once from its length prefix: more than a Fetch answer
/// (`FETCH_MAX_BYTES`, 4 MiB), so those still arrive in one buffer of their size.
const FRAME_ROOM: usize = 8 * 1024 * 1024;
/// The shortest time between two logins on a connection, whatever session the broker
/// grants: a broker granting 1 ms would otherwise have every request wait for a SCRAM
/// exchange (up to 100,000 PBKDF2 rounds). Kafka's sessions are minutes to hours.
const MIN_SESSION: Duration = Duration::from_secs(1);

/// A request sent and not yet answered, typed by its request so its response decodes
/// with the right message type and version. Dropping it gives the answer up: the
/// connection drops the answer when it comes (or has come), so answers nobody takes any
/// more (a caller past its deadline) never pile up.
#[derive(Debug)]
pub struct Pending<R> {
    corr: i32,
    version: i16,
    dropped: Dropped,
    _request: PhantomData<fn() -> R>,
}

impl<R> Drop for Pending<R> {
    fn drop(&mut self) {
        if let Ok(mut d) = self.dropped.lock() {
            d.push(self.corr);
        }
    }
}

/// Correlation ids of `Pending`s dropped since the connection last looked: taken ones
/// too, which it ignores.
type Dropped = Arc<Mutex<Vec<i32>>>;

impl<R> Pending<R> {
    pub fn version(&self) -> i16 {
        self.version
    }
}

/// A request queued that the broker will not answer (a Produce with acks=0), bound to the
/// connection it was queued on: only that connection can put it on the wire, so one
/// opened in its place after a failure says nothing of it.
#[derive(Debug)]
pub struct Unanswered {
    connection: Dropped,
}

struct InFlight {
    corr: i32,
    response_header_version: i16,
    /// Its `Pending` was dropped: the answer is read and dropped.
    abandoned: bool,
}

pub struct Connection {
    addr: String,
    transport: Transport,
    client_id: StrBytes,
    versions: Versions,
    next_corr: i32,
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes read and not yet cut into frames.
    inbuf: Vec<u8>,
    in_flight: VecDeque<InFlight>,
    ready: HashMap<i32, Bytes>,
    dropped: Dropped,
    broken: Option<Error>,
    /// Until when the broker asked not to be sent to (see `protocol::throttle`): queued
    /// requests stay in `out` until then.
    throttled_until: Option<Instant>,
    /// The credentials this connection authenticated with, kept to authenticate again.
    sasl: Option<Credentials>,
    /// When to authenticate again, before the broker's session ends (KIP-368).
    reauthenticate_at: Option<Instant>,
    /// Set while a SASL exchange runs: its own requests must not start another.
    authenticating: bool,
    /// How long opening may take: the budget of a later re-authentication too.
    timeout: Duration,
    /// Responses received so far.
    answered: u64,
}

/// Decodes the body of a response to `R` (after its header) at `version`; `from` names
/// the broker for errors. The body is untrusted: every length in it is checked against
/// the bytes left before anything is allocated for it (see connector/vendor/kafka-protocol).
pub fn decode<R: Request>(mut body: Bytes, version: i16, from: &str) -> Result<R::Response> {
    R::Response::decode(&mut body, version)
        .map_err(|e| Error::CorruptData(format!("undecodable response from {from}: {e}")))
}

impl Connection {
    /// Connects to `addr` (`host:port`) with `security`'s TLS, negotiates API versions and
    /// authenticates with its SASL credentials.
    pub fn open(addr: &str, client_id: &str, security: &Security, deadline: Instant) -> Result<Self> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let transport = Transport::connect(addr, security.tls.as_ref(), deadline)?;
        let mut conn = Connection {
            addr: addr.to_string(),
            transport,
            client_id: StrBytes::from_string(client_id.to_string()),
            versions: Versions::default(),
            next_corr: 1,
            out: Vec::new(),
            out_pos: 0,
            inbuf: Vec::new(),
            in_flight: VecDeque::new(),
            ready: HashMap::new(),
            dropped: Dropped::default(),
            broken: None,
            throttled_until: None,
            sasl: security.sasl.clone(),
            reauthenticate_at: None,
            authenticating: false,
            timeout,
            answered: 0,
        };
        conn.negotiate(deadline)
            .map_err(|e| conn.plaintext_hint(e, security))?;
        conn.authenticate(deadline)?;
        Ok(conn)
    }

    /// Runs the SASL exchange, if the connection has credentials, and schedules the next
    /// one at a random 85-95% of the session the broker grants, as the Java client does,
    /// so a cluster's connections do not all re-authenticate at once.
    fn authenticate(&mut self, deadline: Instant) -> Result<()> {
        let Some(creds) = self.sasl.clone() else {
            return Ok(());
        };
        self.authenticating = true;
        let lifetime = sasl::authenticate(self, &creds, deadline);
        self.authenticating = false;
        let lifetime = lifetime.inspect_err(|e| self.fail(e.clone()))?;
        let renew_in = |l: Duration| {
            l.mul_f64(0.85 + random_up_to(100) as f64 / 1000.0)
                .max(MIN_SESSION)
        };
        self.reauthenticate_at = lifetime.map(|l| Instant::now() + renew_in(l));
        Ok(())
    }

    /// Authenticates again when the session is about to end. Requests in flight stay so:
    /// their answers come first (a broker answers in order) and are kept for their takers.
    /// The broker takes no other request during the exchange, and none is sent: this
    /// blocks until it is done.
    fn reauthenticate_if_due(&mut self) -> Result<()> {
        if self.authenticating || self.reauthenticate_at.is_none_or(|t| Instant::now() < t) {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeout;
        self.authenticate(deadline)
    }

    /// A broker that closed the connection on the first request may have a TLS listener
    /// that could not read it (one that answered with an alert is caught in `split_frames`).
    fn plaintext_hint(&self, e: Error, security: &Security) -> Error {
        match e {
            Error::Connection(m) if security.tls.is_none() => Error::Connection(format!(
                "{m} before answering ApiVersions; if its listener expects TLS, set tls.enabled=true"
            )),
            other => other,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The error that broke this connection, if it is broken.
    pub fn broken(&self) -> Option<&Error> {
        self.broken.as_ref()
    }

    /// Requests sent whose responses have not arrived yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The version of `R` to use with this broker: the highest both sides support.
    pub fn version<R: Request>(&self) -> Result<i16> {
        self.versions.pick(R::KEY, our_versions::<R>(), &self.addr)
    }

    /// Queues `req` at `version`; the bytes go out as the socket accepts them.
    pub fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<Pending<R>> {
        let corr = self.queue(req, version)?;
        self.in_flight.push_back(InFlight {
            corr,
            response_header_version: R::Response::header_version(version),
            abandoned: false,
        });
        Ok(Pending {
            corr,
            version,
            dropped: self.dropped.clone(),
            _request: PhantomData,
        })
    }

    /// Queues a request the broker will not answer (a Produce with acks=0).
    pub fn send_unanswered<R: Request>(&mut self, req: &R, version: i16) -> Result<Unanswered> {
        self.queue(req, version)?;
        Ok(Unanswered {
            connection: self.dropped.clone(),
        })
    }

    /// Whether `sent` was queued on this connection (not on one it replaced), and so is on
    /// the wire once nothing is left unsent here.
    pub fn queued(&self, sent: &Unanswered) -> bool {
        Arc::ptr_eq(&sent.connection, &self.dropped)
    }

    fn queue<R: Request>(&mut self, req: &R, version: i16) -> Result<i32> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        if R::KEY != SaslHandshakeRequest::KEY && R::KEY != SaslAuthenticateRequest::KEY {
            self.reauthenticate_if_due()?;
        }
        // Before a correlation id is reused (they wrap), answers given up on are gone.
        self.forget_dropped();
        let corr = self.next_corr;
        self.next_corr = self.next_corr.wrapping_add(1).max(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(corr)
            .with_client_id(Some(self.client_id.clone()));
        let start = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        let encoded = header
            .encode(&mut self.out, R::header_version(version))
            .and_then(|_| req.encode(&mut self.out, version));
        if let Err(e) = encoded {
            self.out.truncate(start);
            return Err(Error::InvalidRecord(format!("cannot encode request: {e}")));
        }
        let len = (self.out.len() - start - 4) as u32;
        self.out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        self.flush();
        Ok(corr)
    }

    /// The response to `pending`, once it has arrived. A response that says the broker
    /// throttles this client holds the requests that follow until the throttle has passed.
    pub fn take<R: Request>(&mut self, pending: &Pending<R>) -> Option<Result<R::Response>>
    where
        R::Response: ThrottleTime,
    {
        // Correlation ids start again on a new connection: a request sent on the one this
        // replaced (its `dropped` list is that connection's) lost its answer with it.
        if !Arc::ptr_eq(&pending.dropped, &self.dropped) {
            let lost = format!("connection to {} lost before the answer came", self.addr);
            return Some(Err(Error::Connection(lost)));
        }
        let Some(body) = self.ready.remove(&pending.corr) else {
            return self.broken.clone().map(Err);
        };
        let resp = decode::<R>(body, pending.version, &self.addr);
        if let Ok(r) = &resp {
            self.throttle(r.throttled_until(pending.version, Instant::now()));
        }
        Some(resp)
    }

    fn throttle(&mut self, until: Option<Instant>) {
        if until > self.throttled_until {
            self.throttled_until = until;
        }
    }

    /// Until when the broker asked not to be sent to, if that is still ahead.
    pub fn throttled_until(&self) -> Option<Instant> {
        self.throttled_until.filter(|&t| t > Instant::now())
    }

    /// Whether requests are queued that are not on the wire yet (throttled, or waiting for
    /// the socket).
    pub fn has_unsent(&self) -> bool {
        self.has_queued() || self.transport.wants_write()
    }

    /// Requests queued that the transport has not taken yet.
    fn has_queued(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// When a wait on this connection must end though the socket has nothing to say: when
    /// a throttle holding queued requests passes.
    pub fn wake_at(&self) -> Option<Instant> {
        self.throttled_until().filter(|_| self.has_unsent())
    }

    /// Sends `req` and waits for its response, giving up at `deadline`. A request that
    /// times out closes the connection (as Kafka clients do): its answer can no longer
    /// be matched to anyone waiting.
    pub fn request<R: Request>(&mut self, req: &R, deadline: Instant) -> Result<R::Response>
    where
        R::Response: ThrottleTime,
    {
        let version = self.version::<R>()?;
        self.request_at(req, version, deadline)
    }

    pub fn request_at<R: Request>(&mut self, req: &R, version: i16, deadline: Instant) -> Result<R::Response>
    where
        R::Response: ThrottleTime,
    {
        let pending = self.send(req, version)?;
        loop {
            if let Some(result) = self.take(&pending) {
                return result;
            }
            if Instant::now() >= deadline {
                let err = Error::Timeout(format!("no response from {} in time", self.addr));
                self.fail(err.clone());
                return Err(err);
            }
            let mut interest = [self.interest()];
            let until = self.wake_at().map_or(deadline, |t| t.min(deadline));
            poll::wait(&mut interest, until).map_err(|e| self.io_error(e))?;
            self.on_ready(interest[0]);
        }
    }

    /// What to wait for on this connection's socket: writing only while requests are
    /// queued and the broker does not throttle.
    pub fn interest(&self) -> Interest {
        // Encrypted bytes the transport holds go out whatever the throttle: they are
        // requests sent before it.
        let write = (self.has_queued() && self.throttled_until().is_none()) || self.transport.wants_write();
        Interest::new(self.transport.raw_fd(), write)
    }

    /// Moves bytes after `poll::wait` said the socket is ready.
    pub fn on_ready(&mut self, ready: Interest) {
        if ready.writable {
            self.flush();
        }
        if ready.readable {
            self.fill();
        }
    }

    fn flush(&mut self) {
        // What the transport holds (TLS records) goes out first: alone when nothing else
        // may be written now, else in the same socket write as what is (see `TlsStream`).
        let throttled = self.throttled_until().is_some();
        if (throttled || !self.has_queued())
            && let Err(e) = self.transport.send_pending()
        {
            let err = self.io_error(e);
            return self.fail(err);
        }
        if throttled {
            return;
        }
        while self.broken.is_none() && self.out_pos < self.out.len() {
            match self.transport.write(&self.out[self.out_pos..]) {
                Ok(0) => self.fail(self.closed()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let err = self.io_error(e);
                    self.fail(err);
                }
            }
        }
        self.out.clear();
        self.out_pos = 0;
    }

    fn fill(&mut self) {
        while self.broken.is_none() {
            // Up to the end of the frame coming in once its length is known, so a large
            // response arrives in one buffer of its size and is handed on without a copy;
            // a chunk otherwise.
            let want = match self.frame_len() {
                Some(len) => 4 + len - self.inbuf.len(),
                None => READ_CHUNK,
            };
            // A frame's length is the broker's word: room for more than `FRAME_ROOM` is
            // made only as bytes come (at most doubling what is in), so a length prefix
            // alone never takes `MAX_RESPONSE_BYTES`. Only when the room left runs short:
            // growing on every partial read would move the buffer each time.
            let spare = self.inbuf.capacity() - self.inbuf.len();
            if spare < want.min(READ_CHUNK) {
                self.inbuf
                    .reserve_exact(want.min(FRAME_ROOM.max(self.inbuf.len())));
            }
            let before = self.inbuf.len();
            // `read_to_end` reads into the spare capacity without zero-filling it first
            // (std tracks what is initialized), and keeps what it read when it stops on an
            // error, WouldBlock included.
            let read = (&mut self.transport)
                .take(want as u64)
                .read_to_end(&mut self.inbuf);
            let got = self.inbuf.len() - before;
            if got > 0 {
                self.forget_dropped();
                self.split_frames();
            }
            match read {
                // `take` ends at `want` bytes; fewer means the stream ended.
                Ok(n) if n < want => self.fail(self.closed()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let err = self.io_error(e);
                    self.fail(err);
                }
            }
        }
    }

    /// The length of the frame at the start of the read buffer, once its prefix is in and
    /// if it is not corrupt.
    fn frame_len(&self) -> Option<usize> {
        let prefix: [u8; 4] = self.inbuf.get(..4)?.try_into().ok()?;
        let len = u32::from_be_bytes(prefix) as usize;
        (len <= MAX_RESPONSE_BYTES).then_some(len)
    }

    /// Cuts complete responses out of the read buffer and files them by correlation id.
    fn split_frames(&mut self) {
        while self.inbuf.len() >= 4 {
            let Some(len) = self.frame_len() else {
                if matches!(self.transport, Transport::Tcp(_)) && self.inbuf.starts_with(&[0x15, 0x03]) {
                    let msg = format!("{} answered with a TLS alert: set tls.enabled=true", self.addr);
                    return self.fail(Error::Tls(msg));
                }
                let len = u32::from_be_bytes(self.inbuf[..4].try_into().expect("4 bytes"));
                let msg = format!("{} sent a response of {len} bytes: a corrupt length", self.addr);
                return self.fail(Error::CorruptData(msg));
            };
            let end = 4 + len;
            let rest = self.inbuf.len().saturating_sub(end);
            let mut frame = if self.inbuf.len() < end {
                return;
            } else if rest == 0 {
                // The usual case for a large response: the buffer is the frame.
                Bytes::from(std::mem::take(&mut self.inbuf))
            } else if rest >= len {
                // Only after a chunk read from a frame's start: copy the smaller part.
                let frame = Bytes::copy_from_slice(&self.inbuf[..end]);
                self.inbuf.drain(..end);
                frame
            } else {
                let tail = self.inbuf.split_off(end);
                Bytes::from(std::mem::replace(&mut self.inbuf, tail))
            };
            frame.advance(4);
            if let Err(e) = self.file_response(frame) {
                return self.fail(e);
            }
        }
    }

    /// Drops the answers of dropped `Pending`s that came, and marks those still in flight
    /// so theirs are dropped when they come.
    fn forget_dropped(&mut self) {
        let Ok(mut dropped) = self.dropped.lock() else {
            return;
        };
        for corr in dropped.drain(..) {
            if self.ready.remove(&corr).is_none()
                && let Some(f) = self.in_flight.iter_mut().find(|f| f.corr == corr)
            {
                f.abandoned = true;
            }
        }
    }

    fn file_response(&mut self, mut frame: Bytes) -> Result<()> {
        let Some(expected) = self.in_flight.pop_front() else {
            return Err(Error::CorruptData(format!(
                "{} sent a response nobody asked for",
                self.addr
            )));
        };
        let header = ResponseHeader::decode(&mut frame, expected.response_header_version)
            .map_err(|e| Error::CorruptData(format!("bad response header from {}: {e}", self.addr)))?;
        if header.correlation_id != expected.corr {
            return Err(Error::CorruptData(format!(
                "{} answered correlation id {} where {} was due",
                self.addr, header.correlation_id, expected.corr
            )));
        }
        self.answered += 1;
        if !expected.abandoned {
            self.ready.insert(expected.corr, frame);
        }
        Ok(())
    }

    /// The peer closed the connection. A broker that requires SASL closes one that sends
    /// anything but ApiVersions before authenticating: say so when that may be the cause.
    fn closed(&self) -> Error {
        let unauthenticated = self.sasl.is_none() && self.answered == 1;
        let hint = if unauthenticated {
            " (if the broker requires authentication, set saslMechanism)"
        } else {
            ""
        };
        Error::Connection(format!("{} closed the connection{hint}", self.addr))
    }

    /// Marks the connection broken: every request still in flight fails with `err`.
    pub fn fail(&mut self, err: Error) {
        if self.broken.is_none() {
            self.broken = Some(err);
            self.in_flight.clear();
            self.transport.shutdown();
        }
    }

    fn io_error(&self, e: io::Error) -> Error {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<TlsFailure>()) {
            Some(TlsFailure(tls)) => tls.clone(),
            None => error::io(&self.addr, &e),
        }
    }

    /// ApiVersions: v3 first; a broker that does not know it answers in v0 format with
    /// UNSUPPORTED_VERSION and its own range, and we ask again at that version.
    fn negotiate(&mut self, deadline: Instant) -> Result<()> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kafka-wasm-connector"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = *our_versions::<ApiVersionsRequest>().end();
        let mut resp: ApiVersionsResponse = self.request_at(&req, version, deadline)?;
        if resp.error_code == 35 {
            let broker_max = resp
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiVersionsRequest::KEY);
            version = broker_max.map_or(0, |k| k.max_version.min(version));
            resp = self.request_at(&req, version, deadline)?;
        }
        errors::check(resp.error_code, "ApiVersions")?;
        self.versions = Versions::from_response(&resp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::os::fd::RawFd;
    use std::sync::mpsc;
    use std::time::Duration;

    use bytes::BytesMut;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        ApiKey, MetadataRequest, MetadataResponse, SaslAuthenticateResponse, SaslHandshakeResponse, TopicName,
    };

    use super::*;
    use crate::alloc_meter::peak_during;
    use crate::kafka::network::scripted::{self, respond};
    use crate::kafka::network::tls::{TlsPem, TlsSettings};
    use crate::kafka::protocol::sasl::{Mechanism, Secret};

    /// A broker that throttles its first Metadata answer by `throttle_ms` and reports how
    /// long after that answer the next request arrived.
    fn throttling_broker(throttle_ms: i32) -> (String, mpsc::Receiver<Duration>) {
        let (tx, rx) = mpsc::channel();
        let mut answered: Option<Instant> = None;
        let addr = scripted::broker(&[ApiKey::Metadata], 12, move |s, asked| {
            let Some(first) = answered else {
                answered = Some(Instant::now());
                let throttled = MetadataResponse::default().with_throttle_time_ms(throttle_ms);
                return respond(s, asked, &throttled);
            };
            tx.send(first.elapsed()).map_err(io::Error::other)?;
            respond(s, asked, &MetadataResponse::default())
        });
        (addr, rx)
    }

    #[test]
    fn a_throttled_broker_is_not_sent_to_before_the_throttle_passes() {
        let (addr, held) = throttling_broker(300);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = Connection::open(&addr, "test", &Security::default(), deadline).unwrap();
        conn.request(&MetadataRequest::default(), deadline).unwrap();
        assert!(conn.throttled_until().is_some());
        let pending = conn.send(&MetadataRequest::default(), 12).unwrap();
        assert!(conn.has_unsent() && !conn.interest().write, "queued, not written");
        assert!(conn.wake_at().is_some());
        while conn.take(&pending).is_none() {
            let mut interest = [conn.interest()];
            let until = conn.wake_at().unwrap_or(deadline);
            poll::wait(&mut interest, until).unwrap();
            conn.on_ready(interest[0]);
        }
        let held = held.recv().unwrap();
        assert!(held >= Duration::from_millis(300), "sent after {held:?}");
        assert_eq!(conn.throttled_until(), None);
    }

    #[test]
    fn a_throttle_outlasting_the_deadline_times_the_request_out() {
        let (addr, _) = throttling_broker(60_000);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = Connection::open(&addr, "test", &Security::default(), deadline).unwrap();
        conn.request(&MetadataRequest::default(), deadline).unwrap();
        let soon = Instant::now() + Duration::from_millis(100);
        let err = conn.request(&MetadataRequest::default(), soon).unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
        assert!(Instant::now() < soon + Duration::from_secs(1));
    }

    /// A broker that takes PLAIN logins (or refuses them) for sessions of `lifetime_ms`,
    /// answers Metadata, and reports the API key of each request after ApiVersions.
    fn sasl_broker(lifetime_ms: i64, accept: bool) -> (String, mpsc::Receiver<i16>) {
        let (tx, rx) = mpsc::channel();
        let keys = [ApiKey::Metadata, ApiKey::SaslHandshake, ApiKey::SaslAuthenticate];
        let addr = scripted::broker(&keys, 3, move |s, asked| {
            tx.send(asked.key).map_err(io::Error::other)?;
            match ApiKey::try_from(asked.key) {
                Ok(ApiKey::SaslHandshake) => {
                    let plain = vec![StrBytes::from_static_str("PLAIN")];
                    respond(s, asked, &SaslHandshakeResponse::default().with_mechanisms(plain))
                }
                Ok(ApiKey::SaslAuthenticate) => {
                    let resp = SaslAuthenticateResponse::default()
                        .with_error_code(if accept { 0 } else { 58 })
                        .with_error_message((!accept).then(|| StrBytes::from_static_str("bad password")))
                        .with_session_lifetime_ms(lifetime_ms);
                    respond(s, asked, &resp)
                }
                _ => respond(s, asked, &MetadataResponse::default()),
            }
        });
        (addr, rx)
    }

    fn plain() -> Security {
        Security {
            tls: None,
            sasl: Some(Credentials {
                mechanism: Mechanism::Plain,
                username: "user".into(),
                password: Secret::new("pencil"),
            }),
        }
    }

    #[test]
    fn a_session_is_renewed_before_it_ends_with_requests_in_flight() {
        let (addr, keys) = sasl_broker(1200, true);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = Connection::open(&addr, "test", &plain(), deadline).unwrap();
        let early = conn.send(&MetadataRequest::default(), 3).unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        // Past 85-95% of the session: this request waits for a new login, which takes the
        // early answer in passing and keeps it.
        conn.request(&MetadataRequest::default(), deadline).unwrap();
        assert!(conn.take(&early).unwrap().is_ok());
        let seen: Vec<i16> = keys.try_iter().collect();
        let (hs, auth, meta) = (
            ApiKey::SaslHandshake as i16,
            ApiKey::SaslAuthenticate as i16,
            ApiKey::Metadata as i16,
        );
        assert_eq!(seen, [hs, auth, meta, hs, auth, meta]);
    }

    #[test]
    fn a_refused_login_names_the_broker_and_is_not_retried() {
        let (addr, keys) = sasl_broker(0, false);
        let deadline = Instant::now() + Duration::from_secs(10);
        let Err(err) = Connection::open(&addr, "test", &plain(), deadline) else {
            panic!("a refused login opened the connection");
        };
        assert!(matches!(&err, Error::Kafka { code: 58, .. }), "{err}");
        assert!(!err.is_retriable() && err.to_string().contains(&addr), "{err}");
        assert!(!err.to_string().contains("pencil"), "{err}");
        assert_eq!(keys.try_iter().count(), 2, "SaslHandshake, one SaslAuthenticate");
    }

    /// A broker that answers each Metadata request after the next one arrived, so the
    /// first answer comes late, after its caller gave up.
    fn late_broker() -> String {
        let mut held = None;
        scripted::broker(&[ApiKey::Metadata], 12, move |s, asked| {
            if let Some(earlier) = held.replace(asked) {
                respond(s, earlier, &MetadataResponse::default())?;
                respond(s, asked, &MetadataResponse::default())?;
                held = None;
            }
            Ok(())
        })
    }

    #[test]
    fn an_answer_nobody_waits_for_any_more_is_dropped_not_kept() {
        let addr = late_broker();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = Connection::open(&addr, "test", &Security::default(), deadline).unwrap();
        for _ in 0..3 {
            // The caller gives up on the first request (a deadline passed elsewhere).
            drop(conn.send(&MetadataRequest::default(), 12).unwrap());
            conn.request(&MetadataRequest::default(), deadline).unwrap();
        }
        assert_eq!(conn.ready.len(), 0, "answers kept for no one");
        assert_eq!(conn.in_flight(), 0);
    }

    #[test]
    fn a_request_of_another_connection_never_takes_this_ones_answer() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let silent = scripted::broker(&[ApiKey::Metadata], 12, |_, _| Ok(()));
        let mut old = Connection::open(&silent, "test", &Security::default(), deadline).unwrap();
        // Sent on a connection since replaced (it broke): the same correlation id comes
        // again on the new one.
        let lost = old.send(&MetadataRequest::default(), 12).unwrap();
        old.fail(Error::Connection("cut".into()));
        let answering = scripted::broker(&[ApiKey::Metadata], 12, |s, asked| {
            respond(s, asked, &MetadataResponse::default())
        });
        let mut new = Connection::open(&answering, "test", &Security::default(), deadline).unwrap();
        let mine = new.send(&MetadataRequest::default(), 12).unwrap();
        assert_eq!(mine.corr, lost.corr);
        while !new.ready.contains_key(&mine.corr) {
            let mut interest = [new.interest()];
            poll::wait(&mut interest, deadline).unwrap();
            new.on_ready(interest[0]);
        }
        assert!(matches!(new.take(&lost), Some(Err(Error::Connection(_)))));
        assert!(matches!(new.take(&mine), Some(Ok(_))));
    }

    #[test]
    fn an_array_longer_than_the_bytes_left_is_refused_before_allocating() {
        // Metadata v12: throttle time, then the brokers' compact array, claiming 10^7
        // brokers (its length is a varint of the count plus one) in 64 bytes.
        let mut body = vec![0, 0, 0, 0, 0x81, 0xad, 0xe2, 0x04];
        body.extend([0; 64]);
        let (decoded, peak) = peak_during(|| decode::<MetadataRequest>(Bytes::from(body), 12, "broker 1"));
        assert!(
            matches!(&decoded, Err(Error::CorruptData(m)) if m.contains("broker 1")),
            "{decoded:?}"
        );
        assert!(peak < 4096, "{peak} bytes allocated to decode 72");
    }

    #[test]
    fn a_frame_length_is_not_taken_on_trust() {
        // The broker claims a 200 MiB answer and sends 1 MiB of it, in pieces: room is
        // not made again for each.
        let addr = scripted::broker(&[ApiKey::Metadata], 12, |s, _| {
            s.write_all(&(200u32 << 20).to_be_bytes())?;
            for _ in 0..16 {
                s.write_all(&[0; 1 << 16])?;
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_secs(5));
            Ok(())
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = Connection::open(&addr, "test", &Security::default(), deadline).unwrap();
        let soon = Instant::now() + Duration::from_millis(1500);
        let (answer, peak) = peak_during(|| conn.request(&MetadataRequest::default(), soon));
        assert!(matches!(answer, Err(Error::Timeout(_))), "{answer:?}");
        assert!(peak < 2 * FRAME_ROOM, "{peak} bytes allocated for 1 MiB received");
    }

    /// Shrinks a socket's kernel buffer (`SO_RCVBUF` or `SO_SNDBUF`) to its minimum.
    fn small_buffer(fd: RawFd, option: libc::c_int) {
        let small: libc::c_int = 4096;
        // SAFETY: a valid socket and a c_int option value of the size given.
        let set = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0);
    }

    /// A TLS broker that answers ApiVersions, then reads frames until the client is gone
    /// and reports their total length; before the last 40 KiB of each it reads nothing for
    /// a while (its socket fills, and the client's TLS records wait).
    fn slow_tls_broker() -> (String, Security, mpsc::Receiver<usize>) {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = TlsPem {
            ca: Some(&cert.pem()),
            ..TlsPem::default()
        };
        let security = Security {
            tls: Some(TlsSettings::new(pem).unwrap()),
            sasl: None,
        };
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // A small receive window (inherited by the accepted socket), so what the broker
        // does not read backs up into the client quickly.
        small_buffer(std::os::fd::AsRawFd::as_raw_fd(&listener), libc::SO_RCVBUF);
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let tls = rustls::ServerConnection::new(std::sync::Arc::new(server)).unwrap();
            let mut s = rustls::StreamOwned::new(tls, tcp);
            let mut len = [0; 4];
            s.read_exact(&mut len).unwrap();
            let mut frame = vec![0; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut frame).unwrap();
            let corr = i32::from_be_bytes(frame[4..8].try_into().unwrap());
            let keys = [ApiKey::ApiVersions, ApiKey::Metadata]
                .map(|k| ApiVersion::default().with_api_key(k as i16).with_max_version(12));
            let mut buf = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(corr)
                .encode(&mut buf, 0)
                .unwrap();
            let versions = ApiVersionsResponse::default().with_api_keys(keys.to_vec());
            versions.encode(&mut buf, 3).unwrap();
            s.write_all(&(buf.len() as u32).to_be_bytes()).unwrap();
            s.write_all(&buf).unwrap();
            // The end of the next frame waits while the broker reads nothing, so the
            // client's last records stay in TLS when it has handed over its last bytes.
            let mut total = 0;
            while s.read_exact(&mut len).is_ok() {
                let size = u32::from_be_bytes(len) as usize;
                let mut frame = vec![0; size];
                let (head, tail) = frame.split_at_mut(size.saturating_sub(40 << 10));
                if s.read_exact(head).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
                if s.read_exact(tail).is_err() {
                    break;
                }
                total += 4 + frame.len();
            }
            tx.send(total).unwrap();
        });
        (addr, security, rx)
    }

    /// What TLS still holds counts as unsent: a caller that drives the connection until
    /// nothing is unsent (an acks=0 write) gets every byte to the broker, though the end
    /// of the request was handed to TLS while the broker read nothing.
    #[test]
    fn tls_records_not_yet_on_the_wire_are_unsent() {
        let (addr, security, received) = slow_tls_broker();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut conn = Connection::open(&addr, "test", &security, deadline).unwrap();
        small_buffer(conn.transport.raw_fd(), libc::SO_SNDBUF);
        let name = |i| TopicName(StrBytes::from_string(format!("topic-with-a-long-name-{i:08}")));
        let topics = (0..30_000)
            .map(|i| MetadataRequestTopic::default().with_name(Some(name(i))))
            .collect();
        let req = MetadataRequest::default().with_topics(Some(topics));
        let header = RequestHeader::default()
            .with_request_api_key(MetadataRequest::KEY)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut frame = Vec::new();
        header
            .encode(&mut frame, MetadataRequest::header_version(12))
            .unwrap();
        req.encode(&mut frame, 12).unwrap();
        conn.send_unanswered(&req, 12).unwrap();
        while conn.has_unsent() && Instant::now() < deadline {
            let mut interest = [conn.interest()];
            poll::wait(&mut interest, deadline).unwrap();
            conn.on_ready(interest[0]);
        }
        assert!(!conn.has_unsent(), "still unsent at the deadline");
        drop(conn);
        assert_eq!(received.recv().unwrap(), 4 + frame.len(), "bytes the broker got");
    }
}
