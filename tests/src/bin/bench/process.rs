//! The bench's child processes (this binary run again, one side of a part each) and what
//! `/proc` says about the process running.

use std::collections::HashSet;
use std::net::SocketAddrV4;
use std::process::{Command, Stdio};
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
