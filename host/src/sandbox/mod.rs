//! What one connector instance may touch: the network endpoints on its allowlist and
//! nothing else (no filesystem, no environment, no stdin, no stdout). Policy lives in
//! `egress` as data (`Allowlist`); `wasmtime-wasi` enforces it through its socket address
//! check, which runs on every connect, including to brokers the guest learnt from metadata.
//! `dns` and `sockets` replace two WASI functions so that lookups and sockets are checked
//! and counted too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::escape::shown;
use crate::limits::{Limits, Meters};

pub mod dns;
pub mod egress;
pub mod log;
pub mod sockets;

pub use egress::{Allowlist, Egress};

/// Replaces the WASI functions the sandbox owns (name lookups, socket creation) in a
/// linker that already has wasmtime-wasi's.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    linker.allow_shadowing(true);
    dns::add_to_linker(linker)?;
    sockets::add_to_linker(linker)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The most random bytes one call may ask for.
const RANDOM_MAX: u64 = 64 << 10;

/// The store data of one instance.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) meters: Meters,
    /// Tag put before every line this instance logs, e.g. `tenant-a/orders/source`.
    pub(crate) tag: String,
    pub(crate) stderr: CapturedStderr,
    pub(crate) denied: Denials,
    pub(crate) egress: Arc<Egress>,
    pub(crate) names: dns::Names,
    pub(crate) sockets: sockets::Sockets,
    pub(crate) logs: log::Logs,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostState {
    pub fn new(tag: &str, allow: &Allowlist, limits: &Limits) -> Self {
        let stderr = CapturedStderr::default();
        let denied = Denials::default();
        let egress = Arc::new(Egress::new(allow.clone()));
        let (check, check_tag, check_denied) = (egress.clone(), tag.to_string(), denied.clone());
        let mut b = WasiCtxBuilder::new();
        b.stderr(stderr.clone())
            // A connector asks for a few bytes (seeds, nonces); a guest asking for megabytes
            // per call would make the host compute them outside its CPU meter.
            .max_random_size(RANDOM_MAX)
            .allow_tcp(true)
            .allow_udp(false)
            // Every lookup goes through `dns::resolve`, which checks the name first.
            .allow_ip_name_lookup(true)
            .socket_addr_check(move |addr, usage| {
                let verdict = permitted(&check, addr, usage);
                if let Err(why) = &verdict {
                    check_denied.record(&check_tag, &format!("{usage:?} {addr}: {why}"));
                }
                let ok = verdict.is_ok();
                Box::pin(async move { ok })
            });
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.handles);
        HostState {
            wasi: b.build(),
            table,
            meters: Meters::new(limits),
            tag: tag.to_string(),
            stderr,
            denied,
            egress,
            names: dns::Names::default(),
            sockets: sockets::Sockets::default(),
            logs: log::Logs::new(limits.log_lines),
        }
    }
}

/// Addresses the sandbox refused an instance, logged once each and named when the
/// instance fails.
#[derive(Clone, Default)]
pub struct Denials(Arc<Mutex<Vec<String>>>);

impl Denials {
    const KEPT: usize = 16;

    /// Logs a refusal (the first few of each instance) and keeps it for the failure report.
    pub(crate) fn record(&self, tag: &str, what: &str) {
        // What is refused may carry guest text (a name it looked up): escaped and cut.
        let what = shown(&log::cut(what)).into_owned();
        let what = what.as_str();
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() < Self::KEPT && !seen.iter().any(|s| s == what) {
            crate::progress::log(&format!("[{tag}] sandbox: denied {what}"));
            seen.push(what.to_string());
        }
    }

    /// `the sandbox denied TcpConnect 10.0.0.1:80: ...` (the first few), or empty.
    pub fn summary(&self) -> String {
        const SHOWN: usize = 2;
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = match seen.is_empty() {
            true => return String::new(),
            false => format!("the sandbox denied {}", seen[..seen.len().min(SHOWN)].join(", ")),
        };
        if seen.len() > SHOWN {
            s.push_str(&format!(" (and {} more, logged)", seen.len() - SHOWN));
        }
        s
    }
}

/// A connect first binds the socket implicitly to the unspecified address, port 0; that
/// bind is allowed, everything but connecting to an allowed address is not.
fn permitted(egress: &Egress, addr: SocketAddr, usage: SocketAddrUse) -> Result<(), String> {
    match usage {
        SocketAddrUse::TcpBind if addr.ip().is_unspecified() && addr.port() == 0 => Ok(()),
        SocketAddrUse::TcpConnect => egress.check_connect(addr),
        _ => Err("only connects are allowed".into()),
    }
}

/// The guest's stderr (panic messages), kept in memory up to a cap so a chatty guest
/// cannot exhaust the host, and shown with the instance's tag when it fails.
#[derive(Clone, Default)]
pub struct CapturedStderr(Arc<Mutex<Vec<u8>>>);

const STDERR_CAP: usize = 64 << 10;

impl CapturedStderr {
    pub fn take(&self) -> String {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        shown(String::from_utf8_lossy(&std::mem::take(&mut *buf)).trim()).into_owned()
    }
}

impl IsTerminal for CapturedStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStderr {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CapturedStderr {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = STDERR_CAP.saturating_sub(buf.len());
        if room == 0 {
            // Full: the stream fails, so a guest writing on costs the host nothing more.
            let full = std::io::Error::other("stderr is full (64 KiB per instance)");
            return std::task::Poll::Ready(Err(full));
        }
        buf.extend_from_slice(&data[..data.len().min(room)]);
        std::task::Poll::Ready(Ok(data.len().min(room)))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_implicit_bind_and_allowed_connects_pass() {
        let mut a = Allowlist::default();
        a.allow("127.0.0.1:9092").unwrap();
        let e = Egress::new(a);
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(permitted(&e, addr("0.0.0.0:0"), SocketAddrUse::TcpBind).is_ok());
        assert!(permitted(&e, addr("0.0.0.0:80"), SocketAddrUse::TcpBind).is_err());
        assert!(permitted(&e, addr("127.0.0.1:9092"), SocketAddrUse::TcpConnect).is_ok());
        assert!(permitted(&e, addr("127.0.0.1:9093"), SocketAddrUse::TcpConnect).is_err());
        assert!(permitted(&e, addr("127.0.0.2:9092"), SocketAddrUse::TcpConnect).is_err());
        assert!(permitted(&e, addr("127.0.0.1:9092"), SocketAddrUse::TcpListen).is_err());
        assert!(permitted(&e, addr("127.0.0.1:53"), SocketAddrUse::UdpSend).is_err());
    }
}
