//! What one connector instance may touch: the network hosts on its allowlist and nothing
//! else (no filesystem, no environment, no stdin, no stdout). Policy lives here as data
//! (`Allowlist`); `wasmtime-wasi` enforces it through its socket address check, which
//! runs on every connect, including to brokers the guest learnt from metadata.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use ipnet::IpNet;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::limits::{Limits, Meters};

/// The networks an instance may connect to, any port.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    nets: Vec<IpNet>,
    /// Whether any entry was a host name: only then may the guest resolve names.
    names: bool,
}

impl Allowlist {
    /// Adds a host name (resolved now, and allowed by name lookups in the guest), an IP
    /// address, or a CIDR block (`10.0.0.0/8`).
    pub fn allow(&mut self, entry: &str) -> Result<()> {
        let entry = entry.trim();
        if let Ok(net) = entry.parse::<IpNet>() {
            self.nets.push(net);
        } else if let Ok(ip) = entry
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            self.nets.push(IpNet::from(ip));
        } else if !entry.is_empty() && !entry.contains('/') {
            let addrs: Vec<SocketAddr> = match (entry, 0).to_socket_addrs() {
                Ok(a) => a.collect(),
                Err(e) => bail!("cannot resolve allowlist host {entry:?}: {e}"),
            };
            self.nets.extend(addrs.into_iter().map(|a| IpNet::from(a.ip())));
            self.names = true;
        } else {
            bail!("allowlist entry {entry:?} is not a host, an IP address or a CIDR block");
        }
        Ok(())
    }

    /// Allows the hosts of a comma-separated `host:port` list (a Kafka `servers` value).
    pub fn allow_servers(&mut self, servers: &str) -> Result<()> {
        for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
            self.allow(host)?;
        }
        Ok(())
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether everything `other` allows is allowed here too.
    pub fn covers(&self, other: &Allowlist) -> bool {
        other.nets.iter().all(|o| self.nets.iter().any(|n| n.contains(o)))
    }
}

/// The store data of one instance.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) meters: Meters,
    /// Tag put before every line this instance logs, e.g. `tenant-a/orders/source`.
    pub(crate) tag: String,
    pub(crate) stderr: CapturedStderr,
    pub(crate) denied: Denials,
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
        let (allow, check_tag, check_denied) = (Arc::new(allow.clone()), tag.to_string(), denied.clone());
        let mut b = WasiCtxBuilder::new();
        b.stderr(stderr.clone())
            .allow_tcp(true)
            .allow_udp(false)
            .allow_ip_name_lookup(allow.names)
            .socket_addr_check(move |addr, usage| {
                let ok = permitted(&allow, addr, usage);
                if !ok {
                    check_denied.record(&check_tag, addr, usage);
                }
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
        }
    }
}

/// Addresses the sandbox refused an instance, logged once each and named when the
/// instance fails.
#[derive(Clone, Default)]
pub struct Denials(Arc<Mutex<Vec<String>>>);

impl Denials {
    const KEPT: usize = 16;

    fn record(&self, tag: &str, addr: SocketAddr, usage: SocketAddrUse) {
        let what = format!("{usage:?} {addr}");
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() < Self::KEPT && !seen.contains(&what) {
            crate::progress::log(&format!(
                "[{tag}] sandbox: denied {what}: not in the instance's allowlist"
            ));
            seen.push(what);
        }
    }

    /// `denied TcpConnect 10.0.0.1:80, ...`, or empty.
    pub fn summary(&self) -> String {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.is_empty() {
            return String::new();
        }
        format!("the sandbox denied {}", seen.join(", "))
    }
}

/// A connect first binds the socket implicitly to the unspecified address, port 0; that
/// bind is allowed, everything but connecting to an allowed address is not.
fn permitted(allow: &Allowlist, addr: SocketAddr, usage: SocketAddrUse) -> bool {
    match usage {
        SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
        SocketAddrUse::TcpConnect => allow.permits(addr.ip()),
        _ => false,
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
        String::from_utf8_lossy(&std::mem::take(&mut *buf)).into_owned()
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
        buf.extend_from_slice(&data[..data.len().min(room)]);
        std::task::Poll::Ready(Ok(data.len()))
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
    fn allowlist_takes_hosts_ips_and_cidrs() {
        let mut a = Allowlist::default();
        a.allow_servers("127.0.0.1:9092, [::1]:9093").unwrap();
        a.allow("10.1.0.0/16").unwrap();
        assert!(a.permits("127.0.0.1".parse().unwrap()));
        assert!(a.permits("::1".parse().unwrap()));
        assert!(a.permits("10.1.200.3".parse().unwrap()));
        assert!(!a.permits("10.2.0.1".parse().unwrap()));
        assert!(!a.permits("127.0.0.2".parse().unwrap()));
        assert!(!a.names);
        assert!(a.allow("not a host/").is_err());
    }

    #[test]
    fn only_the_implicit_bind_and_allowed_connects_pass() {
        let mut a = Allowlist::default();
        a.allow("127.0.0.1").unwrap();
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(permitted(&a, addr("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(!permitted(&a, addr("0.0.0.0:80"), SocketAddrUse::TcpBind));
        assert!(permitted(&a, addr("127.0.0.1:9092"), SocketAddrUse::TcpConnect));
        assert!(!permitted(&a, addr("127.0.0.2:9092"), SocketAddrUse::TcpConnect));
        assert!(!permitted(&a, addr("127.0.0.1:9092"), SocketAddrUse::TcpListen));
        assert!(!permitted(&a, addr("127.0.0.1:53"), SocketAddrUse::UdpSend));
    }
}
