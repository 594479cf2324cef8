//! The byte stream under a connection: today a plain TCP socket. TLS, and SASL's
//! handshake over it, will be further kinds of transport here, so the connection above
//! frames requests the same way whatever carries them.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use crate::error::{Error, Result};

/// A connected, non-blocking byte stream to one broker.
pub enum Transport {
    Tcp(TcpStream),
}

impl Transport {
    /// Resolves `addr` (`host:port`) and connects to the first address that accepts,
    /// before `deadline`.
    pub fn connect(addr: &str, deadline: Instant) -> Result<Self> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| Error::Connection(format!("cannot resolve {addr}: {e}")))?
            .collect();
        let mut last = Error::Connection(format!("{addr} resolved to no address"));
        for sa in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(format!("connecting to {addr}")));
            }
            match TcpStream::connect_timeout(&sa, left) {
                Ok(stream) => {
                    stream.set_nodelay(true).ok();
                    stream
                        .set_nonblocking(true)
                        .map_err(|e| Error::Connection(format!("{addr}: {e}")))?;
                    return Ok(Transport::Tcp(stream));
                }
                Err(e) => last = Error::Connection(format!("cannot connect to {addr}: {e}")),
            }
        }
        Err(last)
    }

    /// The socket to wait on (see `poll::wait`). A transport that buffers decrypted bytes
    /// (TLS) will also have to say when it holds some the socket's readiness does not show.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Transport::Tcp(s) => s.as_raw_fd(),
        }
    }

    /// Closes both directions; errors are ignored, the connection is given up anyway.
    pub fn shutdown(&self) {
        match self {
            Transport::Tcp(s) => drop(s.shutdown(Shutdown::Both)),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.flush(),
        }
    }
}
