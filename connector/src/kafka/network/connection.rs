//! One connection to one broker: request framing, correlation ids, several requests in
//! flight at once, and the API versions both sides speak, over a [`Transport`]. The
//! transport is non-blocking; the owner drives it with [`Connection::interest`] and
//! [`Connection::on_ready`] (see `poll::wait`), so many connections progress together on
//! one thread.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::time::Instant;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use super::poll::{self, Interest};
use super::transport::Transport;
use crate::error::{Error, Result};
use crate::kafka::protocol::errors;
use crate::kafka::protocol::throttle::ThrottleTime;
use crate::kafka::protocol::versions::{Versions, our_versions};

/// Responses larger than this are taken as a corrupt length prefix, not a real response.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// A request sent and not yet answered, typed by its request so its response decodes
/// with the right message type and version.
#[derive(Debug)]
pub struct Pending<R> {
    corr: i32,
    version: i16,
    _request: PhantomData<fn() -> R>,
}

impl<R> Pending<R> {
    pub fn version(&self) -> i16 {
        self.version
    }
}

struct InFlight {
    corr: i32,
    response_header_version: i16,
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
    broken: Option<Error>,
    /// Until when the broker asked not to be sent to (see `protocol::throttle`): queued
    /// requests stay in `out` until then.
    throttled_until: Option<Instant>,
}

impl Connection {
    /// Connects to `addr` (`host:port`) and negotiates API versions.
    pub fn open(addr: &str, client_id: &str, deadline: Instant) -> Result<Self> {
        let transport = Transport::connect(addr, deadline)?;
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
            broken: None,
            throttled_until: None,
        };
        conn.negotiate(deadline)?;
        Ok(conn)
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
        });
        Ok(Pending {
            corr,
            version,
            _request: PhantomData,
        })
    }

    /// Queues a request the broker will not answer (a Produce with acks=0).
    pub fn send_unanswered<R: Request>(&mut self, req: &R, version: i16) -> Result<()> {
        self.queue(req, version).map(drop)
    }

    fn queue<R: Request>(&mut self, req: &R, version: i16) -> Result<i32> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
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
        let Some(mut body) = self.ready.remove(&pending.corr) else {
            return self.broken.clone().map(Err);
        };
        let resp = R::Response::decode(&mut body, pending.version)
            .map_err(|e| Error::CorruptData(format!("undecodable response from {}: {e}", self.addr)));
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
        let write = self.has_unsent() && self.throttled_until().is_none();
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
        if self.throttled_until().is_some() {
            return;
        }
        while self.broken.is_none() && self.out_pos < self.out.len() {
            match self.transport.write(&self.out[self.out_pos..]) {
                Ok(0) => self.fail(Error::Connection(format!("{} closed the connection", self.addr))),
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
            self.inbuf.reserve_exact(want);
            let before = self.inbuf.len();
            // `read_to_end` reads into the spare capacity without zero-filling it first
            // (std tracks what is initialized), and keeps what it read when it stops on an
            // error, WouldBlock included.
            let read = (&mut self.transport)
                .take(want as u64)
                .read_to_end(&mut self.inbuf);
            let got = self.inbuf.len() - before;
            if got > 0 {
                self.split_frames();
            }
            match read {
                // `take` ends at `want` bytes; fewer means the stream ended.
                Ok(n) if n < want => {
                    self.fail(Error::Connection(format!("{} closed the connection", self.addr)))
                }
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
        self.ready.insert(expected.corr, frame);
        Ok(())
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
        Error::Connection(format!("{}: {e}", self.addr))
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
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::Duration;

    use bytes::BytesMut;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};

    use super::*;

    /// Reads one request frame: its API version and correlation id (every request header
    /// starts with key, version, correlation id).
    fn read_request(s: &mut TcpStream) -> io::Result<(i16, i32)> {
        let mut len = [0; 4];
        s.read_exact(&mut len)?;
        let mut frame = vec![0; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut frame)?;
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        Ok((version, i32::from_be_bytes(frame[4..8].try_into().unwrap())))
    }

    fn respond<M: Encodable + HeaderVersion>(s: &mut TcpStream, (version, corr): (i16, i32), resp: &M) {
        let mut buf = BytesMut::new();
        let header = ResponseHeader::default().with_correlation_id(corr);
        header.encode(&mut buf, M::header_version(version)).unwrap();
        resp.encode(&mut buf, version).unwrap();
        s.write_all(&(buf.len() as u32).to_be_bytes()).unwrap();
        s.write_all(&buf).unwrap();
    }

    /// A broker that throttles its first Metadata answer by `throttle_ms` and reports how
    /// long after that answer the next request arrived.
    fn throttling_broker(throttle_ms: i32) -> (String, mpsc::Receiver<Duration>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let keys = [ApiKey::ApiVersions, ApiKey::Metadata]
                .map(|k| ApiVersion::default().with_api_key(k as i16).with_max_version(12));
            let versions = ApiVersionsResponse::default().with_api_keys(keys.to_vec());
            let asked = read_request(&mut s).unwrap();
            respond(&mut s, asked, &versions);
            let first = read_request(&mut s).unwrap();
            let answered = Instant::now();
            respond(
                &mut s,
                first,
                &MetadataResponse::default().with_throttle_time_ms(throttle_ms),
            );
            // An error when the client gave up first.
            let Ok(second) = read_request(&mut s) else {
                return;
            };
            tx.send(answered.elapsed()).unwrap();
            respond(&mut s, second, &MetadataResponse::default());
        });
        (addr, rx)
    }

    #[test]
    fn a_throttled_broker_is_not_sent_to_before_the_throttle_passes() {
        let (addr, held) = throttling_broker(300);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = Connection::open(&addr, "test", deadline).unwrap();
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
        let mut conn = Connection::open(&addr, "test", deadline).unwrap();
        conn.request(&MetadataRequest::default(), deadline).unwrap();
        let soon = Instant::now() + Duration::from_millis(100);
        let err = conn.request(&MetadataRequest::default(), soon).unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
        assert!(Instant::now() < soon + Duration::from_secs(1));
    }
}
