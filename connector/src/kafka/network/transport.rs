//! The byte stream under a connection: a plain TCP socket, or TLS over one (`tls`). The
//! connection above frames requests the same way whatever carries them; SASL is spoken
//! in Kafka requests over either (`sasl`).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use super::tls::{TlsSettings, TlsStream};
use crate::error::{self, Error, Result};

/// A connected, non-blocking byte stream to one broker.
pub enum Transport {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
}

impl Transport {
    /// Connects to `addr` (`host:port`) before `deadline`, with TLS when `tls` is given.
    pub fn connect(addr: &str, tls: Option<&TlsSettings>, deadline: Instant) -> Result<Self> {
        let tcp = Self::tcp(addr, deadline)?;
        Ok(match tls {
            None => Transport::Tcp(tcp),
            Some(settings) => Transport::Tls(Box::new(TlsStream::handshake(tcp, settings, addr, deadline)?)),
        })
    }

    /// Resolves `addr` and connects to the first of its addresses that accepts.
    fn tcp(addr: &str, deadline: Instant) -> Result<TcpStream> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| error::io(&format!("cannot resolve {addr}"), &e))?
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
                    stream.set_nonblocking(true).map_err(|e| error::io(addr, &e))?;
                    return Ok(stream);
                }
                Err(e) => last = error::io(&format!("cannot connect to {addr}"), &e),
            }
        }
        Err(last)
    }

    /// The socket to wait on (see `poll::wait`). Decrypted bytes TLS buffers do not show
    /// in its readiness: the connection reads until `WouldBlock`, so none are left behind.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Transport::Tcp(s) => s.as_raw_fd(),
            Transport::Tls(s) => s.tcp().as_raw_fd(),
        }
    }

    /// Whether bytes the transport holds (TLS records) wait for the socket to take them.
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Tcp(_) => false,
            Transport::Tls(s) => s.wants_write(),
        }
    }

    /// Hands held bytes to the socket as far as it takes them.
    pub fn send_pending(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(_) => Ok(()),
            Transport::Tls(s) => s.send_pending(),
        }
    }

    /// Closes both directions; errors are ignored, the connection is given up anyway.
    pub fn shutdown(&mut self) {
        match self {
            Transport::Tcp(s) => drop(s.shutdown(Shutdown::Both)),
            Transport::Tls(s) => {
                s.close();
                drop(s.tcp().shutdown(Shutdown::Both));
            }
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}
