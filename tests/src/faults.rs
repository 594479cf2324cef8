//! Network faults between the connector and a real broker.
//!
//! Kafka clients learn broker addresses from Metadata, so a plain TCP proxy in front of
//! the shared broker would only see the bootstrap connection. A [`PrivateBroker`] is a
//! nisshi process of its own that advertises its [`Proxy`] as its address: every
//! connection a client makes to it, bootstrap or not, goes through the proxy, where a
//! test can cut, refuse, truncate or corrupt it.
//!
//! ```text
//! let broker = PrivateBroker::start();
//! let topic = broker.new_topic("faults", 1);
//! // ... open the connector with ("servers", &broker.addr()) ...
//! broker.proxy().cut(); // every open connection closes now
//! broker.proxy().cut_while_in_flight(api::FETCH); // ... as soon as a fetch is in flight
//! broker.proxy().corrupt_responses(|api_key, frame| {
//!     if api_key == api::FETCH && frame.len() > 100 {
//!         frame[100] ^= 0xff;
//!     }
//! });
//! ```

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// API keys of the requests a response hook is most likely to care about.
pub mod api {
    pub const PRODUCE: i16 = 0;
    pub const FETCH: i16 = 1;
    pub const LIST_OFFSETS: i16 = 2;
    pub const METADATA: i16 = 3;
    pub const API_VERSIONS: i16 = 18;
    pub const CREATE_TOPICS: i16 = 19;
}

/// Frames larger than this are taken as garbage and close the connection.
const MAX_FRAME: usize = 256 << 20;

/// A hook that may change a response frame in place: it gets the API key of the request
/// the response answers (-1 if unknown) and the frame's bytes after its 4-byte length
/// prefix (correlation id first). The length cannot change.
type Hook = Box<dyn FnMut(i16, &mut [u8]) + Send>;

/// A TCP proxy on 127.0.0.1 that forwards every connection it accepts to one upstream
/// address, on background threads, and injects faults on demand. It understands Kafka
/// framing only as far as it must: responses are forwarded one whole frame at a time,
/// so a hook sees a complete response and knows which request it answers, and a test can
/// wait until a request of some kind is in flight ([`Proxy::requests_in_flight`]) or has
/// been answered ([`Proxy::responses`]) instead of guessing how long that takes.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: SocketAddr,
    stopped: AtomicBool,
    refuse: AtomicBool,
    accepted: AtomicU64,
    refused: AtomicU64,
    next_id: AtomicU64,
    /// Open connections: both sockets of each, to shut them down from outside, and the
    /// requests forwarded on it and not answered yet.
    conns: Mutex<HashMap<u64, Conn>>,
    /// Bytes broker→client still to forward before one connection is cut, when armed.
    cut_budget: Mutex<Option<u64>>,
    /// The API key of the requests whose being in flight cuts every connection, when armed.
    cut_in_flight: Mutex<Option<i16>>,
    /// Responses forwarded to clients so far, by the API key of the request they answer.
    responses: Mutex<HashMap<i16, u64>>,
    gate: Mutex<Gate>,
    /// Signalled when the gate opens.
    gate_opened: Condvar,
    hook: Mutex<Option<Hook>>,
}

/// One forwarded connection, as seen from outside its threads.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    /// Correlation id → API key of the requests forwarded and not yet answered.
    requests: Arc<Mutex<HashMap<i32, i16>>>,
}

/// Holds responses back (see [`Proxy::hold_responses`]).
#[derive(Default)]
struct Gate {
    /// The API key whose responses are held, and how many more pass before that.
    armed: Option<(i16, u64)>,
    /// Responses being held now.
    held: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            stopped: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            cut_budget: Mutex::new(None),
            cut_in_flight: Mutex::new(None),
            responses: Mutex::new(HashMap::new()),
            gate: Mutex::new(Gate::default()),
            gate_opened: Condvar::new(),
            hook: Mutex::new(None),
        });
        let s = shared.clone();
        thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))?;
        Ok(Proxy { addr, shared })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection now, both directions (the client reads end of file).
    /// New connections are accepted as before.
    pub fn cut(&self) {
        self.shared.cut_all();
    }

    /// Arms a one-shot cut of every open connection (as [`Proxy::cut`]) for as soon as a
    /// request with `api_key` (see [`api`]) is in flight: forwarded to the broker and not
    /// answered yet. If one is in flight now, the cut is now; otherwise it comes right after
    /// the next such request is forwarded, before the broker can answer it. So a cut armed
    /// for [`api::FETCH`] lands while a consumer waits on a fetch (the broker holds a fetch
    /// it has nothing for up to the fetch's max wait).
    pub fn cut_while_in_flight(&self, api_key: i16) {
        let mut armed = lock(&self.shared.cut_in_flight);
        if self.requests_in_flight(api_key) > 0 {
            *armed = None;
            drop(armed);
            self.shared.cut_all();
        } else {
            *armed = Some(api_key);
        }
    }

    /// While `true`, a new connection is accepted and closed at once, before a byte is
    /// forwarded: the broker is gone. Open connections are left alone (see [`Proxy::cut`]).
    pub fn set_refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Arms a one-shot cut: once `n` more bytes have been forwarded broker→client (counted
    /// over all connections from now), the connection that forwarded the `n`-th byte is
    /// cut right after it, possibly in the middle of a response. `n = 0` cuts the next
    /// connection that has a response to forward, before any of it.
    pub fn cut_after_response_bytes(&self, n: u64) {
        *lock(&self.shared.cut_budget) = Some(n);
    }

    /// Whether a cut armed by [`Proxy::cut_after_response_bytes`] or
    /// [`Proxy::cut_while_in_flight`] is still to happen.
    pub fn cut_pending(&self) -> bool {
        lock(&self.shared.cut_budget).is_some() || lock(&self.shared.cut_in_flight).is_some()
    }

    /// Requests with `api_key` forwarded to the broker on an open connection and not
    /// answered yet.
    pub fn requests_in_flight(&self, api_key: i16) -> usize {
        lock(&self.shared.conns)
            .values()
            .map(|c| lock(&c.requests).values().filter(|k| **k == api_key).count())
            .sum()
    }

    /// Responses to requests with `api_key` forwarded to clients so far.
    pub fn responses(&self, api_key: i16) -> u64 {
        lock(&self.shared.responses).get(&api_key).copied().unwrap_or(0)
    }

    /// Lets `pass` more responses to requests with `api_key` through, then holds every later
    /// one back (its connection forwards nothing more broker→client) until
    /// [`Proxy::release_responses`]: the client waits on its request as long as the test
    /// wants. Replaces an earlier hold, releasing what it held.
    pub fn hold_responses(&self, api_key: i16, pass: u64) {
        lock(&self.shared.gate).armed = Some((api_key, pass));
        self.shared.gate_opened.notify_all();
    }

    /// Responses being held back by [`Proxy::hold_responses`] now.
    pub fn held_responses(&self) -> usize {
        lock(&self.shared.gate).held
    }

    /// Ends [`Proxy::hold_responses`]: what was held is forwarded, and what follows.
    pub fn release_responses(&self) {
        self.shared.release();
    }

    /// Passes every response frame from now on through `f` before it is forwarded: `f`
    /// gets the API key of the request it answers (see [`api`]; -1 if unknown) and the
    /// frame after its length prefix, which it may change in place. Replaces any earlier
    /// hook.
    pub fn corrupt_responses(&self, f: impl FnMut(i16, &mut [u8]) + Send + 'static) {
        *lock(&self.shared.hook) = Some(Box::new(f));
    }

    /// Removes the hook set by [`Proxy::corrupt_responses`]: responses pass unchanged.
    pub fn stop_corrupting(&self) {
        *lock(&self.shared.hook) = None;
    }

    /// Connections accepted so far, refused ones included.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections accepted and closed at once because of [`Proxy::set_refuse`].
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections being forwarded now.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        self.shared.release();
        self.cut();
    }
}

impl Shared {
    fn cut_all(&self) {
        let conns: Vec<_> = lock(&self.conns).drain().collect();
        for (_, c) in conns {
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.upstream.shutdown(Shutdown::Both);
        }
    }

    fn release(&self) {
        lock(&self.gate).armed = None;
        self.gate_opened.notify_all();
    }

    /// Returns once a response to a request with `api_key` may be forwarded: at once, unless
    /// the gate holds such responses (see [`Proxy::hold_responses`]).
    fn pass_gate(&self, api_key: i16) {
        let mut gate = lock(&self.gate);
        match &mut gate.armed {
            Some((key, pass)) if *key == api_key => {
                if *pass > 0 {
                    *pass -= 1;
                    return;
                }
            }
            _ => return,
        }
        gate.held += 1;
        while matches!(gate.armed, Some((key, 0)) if key == api_key) {
            gate = self.gate_opened.wait(gate).unwrap_or_else(|e| e.into_inner());
        }
        gate.held -= 1;
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refuse.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let s = shared.clone();
        let _ = thread::Builder::new()
            .name("proxy-conn".into())
            .spawn(move || connection(client, s));
    }
}

/// Sets up one forwarded connection and runs its two directions.
fn connection(client: TcpStream, shared: Arc<Shared>) {
    let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let clones = (
        client.try_clone(),
        upstream.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
    );
    let (Ok(c_reg), Ok(u_reg), Ok(c_read), Ok(u_write)) = clones else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        return;
    };
    // Correlation id → API key of the requests sent and not yet answered.
    let requests: Arc<Mutex<HashMap<i32, i16>>> = Arc::default();
    let conn = Conn {
        client: c_reg,
        upstream: u_reg,
        requests: requests.clone(),
    };
    lock(&shared.conns).insert(id, conn);

    let s = shared.clone();
    let r = requests.clone();
    let up = thread::Builder::new().name("proxy-up".into()).spawn(move || {
        let _ = requests_up(c_read, u_write, &r, &s);
        close(&s, id);
    });
    let _ = responses_down(upstream, client, &requests, &shared, id);
    close(&shared, id);
    if let Ok(up) = up {
        let _ = up.join();
    }
}

/// Shuts down both sockets of connection `id`, if it is still open.
fn close(shared: &Shared, id: u64) {
    if let Some(c) = lock(&shared.conns).remove(&id) {
        let _ = c.client.shutdown(Shutdown::Both);
        let _ = c.upstream.shutdown(Shutdown::Both);
    }
}

/// Reads one length-prefixed frame (prefix included); `None` at end of file.
fn read_frame(from: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 4];
    match from.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = i32::from_be_bytes(prefix);
    if len < 4 || len as usize > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {len}"),
        ));
    }
    let mut frame = vec![0u8; 4 + len as usize];
    frame[..4].copy_from_slice(&prefix);
    from.read_exact(&mut frame[4..])?;
    Ok(Some(frame))
}

/// Client → broker: forwards requests a frame at a time, noting each one's API key by
/// its correlation id (request header: api key i16, api version i16, correlation id i32),
/// and honours a cut armed for a request in flight.
fn requests_up(
    mut client: TcpStream,
    mut upstream: TcpStream,
    requests: &Mutex<HashMap<i32, i16>>,
    shared: &Shared,
) -> io::Result<()> {
    while let Some(frame) = read_frame(&mut client)? {
        let mut api_key = None;
        if frame.len() >= 12 {
            let key = i16::from_be_bytes([frame[4], frame[5]]);
            let corr = i32::from_be_bytes(frame[8..12].try_into().expect("4 bytes"));
            lock(requests).insert(corr, key);
            api_key = Some(key);
        }
        upstream.write_all(&frame)?;
        let cut = {
            let mut armed = lock(&shared.cut_in_flight);
            let hit = api_key.is_some() && *armed == api_key;
            if hit {
                *armed = None;
            }
            hit
        };
        if cut {
            shared.cut_all();
            return Ok(());
        }
    }
    Ok(())
}

/// Broker → client: forwards responses a frame at a time, through the hook if one is set,
/// and honours an armed cut.
fn responses_down(
    mut upstream: TcpStream,
    mut client: TcpStream,
    requests: &Mutex<HashMap<i32, i16>>,
    shared: &Shared,
    id: u64,
) -> io::Result<()> {
    while let Some(mut frame) = read_frame(&mut upstream)? {
        let corr = i32::from_be_bytes(frame[4..8].try_into().expect("4 bytes"));
        let api_key = lock(requests).get(&corr).copied().unwrap_or(-1);
        // Still in flight while held: its request is only answered once it is forwarded.
        shared.pass_gate(api_key);
        lock(requests).remove(&corr);
        if let Some(hook) = lock(&shared.hook).as_mut() {
            hook(api_key, &mut frame[4..]);
        }
        let cut_at = {
            let mut budget = lock(&shared.cut_budget);
            match *budget {
                Some(left) if left <= frame.len() as u64 => {
                    *budget = None;
                    Some(left as usize)
                }
                Some(left) => {
                    *budget = Some(left - frame.len() as u64);
                    None
                }
                None => None,
            }
        };
        if let Some(n) = cut_at {
            client.write_all(&frame[..n])?;
            client.flush()?;
            close(shared, id);
            return Ok(());
        }
        client.write_all(&frame)?;
        *lock(&shared.responses).entry(api_key).or_default() += 1;
    }
    Ok(())
}

/// The nisshi binary: `$NISSHI` (which `scripts/broker.sh run` sets), else where
/// `scripts/broker.sh install` puts it.
pub fn nisshi_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NISSHI") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("WASM_KAFKA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("wasm-kafka")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wasm-kafka")))
        .expect("none of WASM_KAFKA_CACHE, XDG_CACHE_HOME, HOME is set");
    cache.join("nisshi-0.8.1-dynostore-libsql/bin/nisshi")
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// A nisshi broker of one test's own (in memory, 127.0.0.1) that advertises its proxy:
/// every client connection goes through [`PrivateBroker::proxy`]. Killed on drop.
pub struct PrivateBroker {
    child: Child,
    dir: PathBuf,
    broker: SocketAddr,
    proxy: Proxy,
}

impl PrivateBroker {
    /// Starts the proxy, then the broker behind it, and waits until the broker accepts
    /// connections. Panics (with the broker's log) if it does not within 15 s.
    pub fn start() -> PrivateBroker {
        static N: AtomicU32 = AtomicU32::new(0);
        let port = free_port();
        let broker: SocketAddr = ([127, 0, 0, 1], port).into();
        let proxy = Proxy::start(broker).expect("start the proxy");
        let dir = std::env::temp_dir().join(format!(
            "wasm-kafka-private-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the broker's working directory");
        let log = File::create(dir.join("broker.log")).expect("create the broker log");
        let nisshi = nisshi_binary();
        assert!(
            nisshi.exists(),
            "{} is missing: run `scripts/broker.sh install` or set NISSHI",
            nisshi.display()
        );
        // Its own empty working directory: nisshi reads a .env file from there if one exists.
        let child = Command::new(&nisshi)
            .current_dir(&dir)
            .args(["broker", "--silent", "--listener-url"])
            .arg(format!("tcp://{broker}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{}", proxy.addr()))
            .arg("--storage-engine")
            .arg(format!("memory://wasm-kafka-private-{port}/"))
            .args(["--group-initial-rebalance-delay", "0s"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", nisshi.display()));
        let mut b = PrivateBroker {
            child,
            dir,
            broker,
            proxy,
        };
        let mut exited = None;
        let listening = crate::wait_until_blocking(Duration::from_secs(15), || {
            exited = b.child.try_wait().ok().flatten();
            exited.is_some() || TcpStream::connect_timeout(&broker, Duration::from_millis(200)).is_ok()
        });
        if !listening || exited.is_some() {
            let log = fs::read_to_string(b.dir.join("broker.log")).unwrap_or_default();
            panic!("private broker on {broker} did not start within 15 s ({exited:?}): {log}");
        }
        b
    }

    /// The proxy's address, "127.0.0.1:P": what the connector takes as `servers`.
    pub fn addr(&self) -> String {
        self.proxy.addr().to_string()
    }

    /// The broker's own listener, bypassing the proxy (it still advertises the proxy).
    pub fn broker_addr(&self) -> SocketAddr {
        self.broker
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Creates a topic on this broker (through the proxy) with a name no other test uses.
    pub fn new_topic(&self, prefix: &str, partitions: i32) -> String {
        crate::new_topic_at(&self.addr(), prefix, partitions)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
