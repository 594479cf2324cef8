//! Waiting on many sockets at once without spinning. `poll(2)` is the one primitive that
//! exists both natively and on wasm32-wasip2 (where wasi-libc maps it onto WASI pollables),
//! so the client's I/O code is the same on both targets.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// What a caller wants to hear about one socket, and what it got.
#[derive(Debug, Clone, Copy)]
pub struct Interest {
    pub fd: RawFd,
    pub write: bool,
    pub readable: bool,
    pub writable: bool,
}

impl Interest {
    pub fn new(fd: RawFd, write: bool) -> Self {
        Interest {
            fd,
            write,
            readable: false,
            writable: false,
        }
    }
}

/// Blocks until one of the sockets is ready or `deadline` passes. Every socket is watched
/// for reading (responses, or the peer closing); those with `write` set also for writing.
pub fn wait(interests: &mut [Interest], deadline: Instant) -> io::Result<()> {
    let mut fds: Vec<libc::pollfd> = interests
        .iter()
        .map(|i| libc::pollfd {
            fd: i.fd,
            events: libc::POLLIN | if i.write { libc::POLLOUT } else { 0 },
            revents: 0,
        })
        .collect();
    let timeout = timeout_ms(deadline);
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd entries.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, timeout) };
    if n < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted {
            Ok(())
        } else {
            Err(err)
        };
    }
    for (i, p) in interests.iter_mut().zip(&fds) {
        // Errors and hang-ups count as readable: the read that follows reports them.
        i.readable = p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0;
        i.writable = p.revents & libc::POLLOUT != 0;
    }
    Ok(())
}

/// Milliseconds until `deadline`, rounded up so a wait never ends just short of it.
fn timeout_ms(deadline: Instant) -> i32 {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = left.as_micros().div_ceil(1000);
    ms.min(i32::MAX as u128) as i32
}

/// Sleeps without a socket (used by retry backoff).
pub fn sleep(d: Duration) {
    std::thread::sleep(d);
}
