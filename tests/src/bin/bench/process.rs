//! The bench's child processes (this binary run again, one side of a part each) and what
//! `/proc` says about the process running.

use std::collections::HashSet;
use std::net::SocketAddrV4;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};

/// Runs this binary again with `args` (one side of a part); its stdout, once it succeeded.
pub(crate) fn run_child(exe: &std::path::Path, args: &[&str], what: &str) -> Result<String> {
    let out = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "{what} failed: {}\n{stdout}", out.status);
    Ok(stdout)
}

/// A field of /proc/self/status, in KiB.
pub(crate) fn status_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))
}

/// User + system CPU time of this process, all threads (/proc/self/stat, in USER_HZ = 100 ticks).
pub(crate) fn process_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i - 3)
            .and_then(|v| v.parse().ok())
            .context("/proc/self/stat has no CPU times")
    };
    Ok(Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
}

/// Whether a run looks up its connections' traffic: the look-up scans /proc/net/tcp (every
/// socket of the machine) and this process's descriptors, CPU charged to the run, so a run
/// that measures CPU against a side without it leaves it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    Counted,
    Ignored,
}

impl Wire {
    /// [`traffic_to`] `addr` when counted, else nothing.
    pub(crate) fn traffic_to(self, addr: &str) -> Result<Traffic> {
        match self {
            Wire::Counted => traffic_to(addr),
            Wire::Ignored => Ok(Traffic::default()),
        }
    }
}

/// This process's established TCP connections to a broker, and the bytes they moved.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) connections: u64,
    /// Sent (and acknowledged) plus received, over their lifetimes so far (TCP_INFO).
    pub(crate) bytes: u64,
}

/// This process's established TCP connections to `addr` (an IPv4 `address:port`): its
/// socket descriptors (/proc/self/fd) whose remote end in /proc/net/tcp is `addr`, and what
/// TCP_INFO says they moved. A connector's sockets are the host's, so this counts its
/// connections too.
pub(crate) fn traffic_to(addr: &str) -> Result<Traffic> {
    let addr: SocketAddrV4 = addr
        .parse()
        .with_context(|| format!("{addr} is no IPv4 address"))?;
    // "sl local_address rem_address st ... inode": addresses as hex, the IPv4 address in
    // the kernel's (little-endian) order; state 01 is ESTABLISHED.
    let remote = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(addr.ip().octets()),
        addr.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let inodes: HashSet<String> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[2] == remote && f[3] == "01")
        .map(|f| f[9].to_string())
        .collect();
    let mut traffic = Traffic::default();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // closed meanwhile
        };
        let inode = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'));
        let (Some(inode), Some(fd)) = (inode, entry.file_name().to_str().and_then(|f| f.parse().ok())) else {
            continue;
        };
        if inodes.contains(inode) {
            traffic.connections += 1;
            traffic.bytes += tcp_bytes(fd).unwrap_or(0);
        }
    }
    Ok(traffic)
}

/// Bytes a TCP socket of this process sent (acknowledged) and received.
fn tcp_bytes(fd: i32) -> Option<u64> {
    // SAFETY: an all-zero tcp_info is a valid value; getsockopt writes at most `len` bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is one of this process's sockets (it may have closed meanwhile: then an
    // error), `info` and `len` are valid for writes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    (r == 0).then(|| info.tcpi_bytes_acked + info.tcpi_bytes_received)
}

/// What a child process (not this binary) did, from the kernel's account of it.
pub(crate) struct Finished {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// From the spawn to the exit.
    pub(crate) wall: Duration,
    /// Its user + system CPU time, all threads.
    pub(crate) cpu: Duration,
}

/// Starts `cmd` (stdout and stderr captured); `started` is called with its pid while it
/// runs. Waits for it with `wait4`, which hands back its own CPU time (not its peak memory:
/// Linux keeps the forking process's across `exec`). It
/// must exit with 0, or be ended by `SIGTERM` when `terminated` says it was sent one.
pub(crate) fn run_measured(
    cmd: &mut Command,
    what: &str,
    started: impl FnOnce(u32),
    terminated: &AtomicBool,
) -> Result<Finished> {
    let start = std::time::Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let out = drain(child.stdout.take().context("stdout is piped")?);
    let err = drain(child.stderr.take().context("stderr is piped")?);
    started(child.id());
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 writes into both out-parameters.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our child's, not yet waited for (std's Child never waits on drop).
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    ensure!(r > 0, "wait4 on {what}: {}", std::io::Error::last_os_error());
    let (stdout, stderr) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    let exited = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let stopped = libc::WIFSIGNALED(status)
        && libc::WTERMSIG(status) == libc::SIGTERM
        && terminated.load(Ordering::Relaxed);
    ensure!(
        exited || stopped,
        "{what} failed (wait status {status}):\n{stderr}"
    );
    Ok(Finished {
        stdout,
        stderr,
        wall,
        cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
    })
}

/// Reads `pipe` to its end on a thread of its own: its text.
fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = pipe.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// Sends `SIGTERM` to the process `pid` (a child of this one), noting it in `terminated`.
pub(crate) fn terminate(pid: u32, terminated: &AtomicBool) {
    terminated.store(true, Ordering::Relaxed);
    // SAFETY: kill has no memory effects; `pid` is a child this process has not reaped.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
}

/// User + system CPU time of this process, all threads, to the microsecond (getrusage).
pub(crate) fn rusage_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out-pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64)
}
