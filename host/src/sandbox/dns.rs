//! Name lookups, done by the host for the guest: only names the instance's allowlist can
//! match are looked up (a guest cannot send `<secret>.exfil.example` to a resolver), at a
//! bounded rate, and what they resolve to is remembered so that the connects that follow
//! are checked against the name's rule. wasmtime-wasi's own `resolve-addresses` is
//! replaced in the linker by `resolve`.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{Host as _, ResolveAddressStream};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, Network};
use wasmtime_wasi::sockets::WasiSocketsView;

use super::HostState;

/// The interface whose `resolve-addresses` the sandbox replaces (wasmtime-wasi's WASI 0.2
/// version; imports of older 0.2 versions resolve to it too).
const INTERFACE: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// Real lookups one instance may make: a burst, then this many per second.
pub const LOOKUP_BURST: f64 = 50.0;
pub const LOOKUPS_PER_SEC: f64 = 10.0;

/// How long a name's addresses are kept per instance (repeated lookups cost no query).
const TTL: Duration = Duration::from_secs(30);

type Answer = wasmtime::Result<(Result<Resource<ResolveAddressStream>, ErrorCode>,)>;

/// Replaces `resolve-addresses` in `linker` (which must allow shadowing).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    linker
        .instance(INTERFACE)?
        .func_wrap_async(
            "resolve-addresses",
            |store, (network, name): (Resource<Network>, String)| Box::new(resolve(store, network, name)),
        )
        .map_err(anyhow::Error::from)
}

async fn resolve(
    mut store: StoreContextMut<'_, HostState>,
    network: Resource<Network>,
    name: String,
) -> Answer {
    let ip = match literal(&name) {
        Some(ip) => ip,
        None => match lookup(&mut store, &name).await {
            Ok(ip) => ip,
            Err(code) => return Ok((Err(code),)),
        },
    };
    // Hand the address back through wasmtime-wasi's own stream, as a literal (no query).
    let mut view = store.data_mut().sockets();
    match view.resolve_addresses(network, ip.to_string()) {
        Ok(stream) => Ok((Ok(stream),)),
        Err(e) => e.downcast().map(|code| (Err(code),)),
    }
}

/// An address written as one: no query is made for it.
fn literal(name: &str) -> Option<IpAddr> {
    name.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Looks `name` up if the allowlist matches it and the budget allows; the first address
/// the allowlist permits.
async fn lookup(store: &mut StoreContextMut<'_, HostState>, name: &str) -> Result<IpAddr, ErrorCode> {
    let state = store.data_mut();
    if !super::egress::valid_name(name) {
        let start = &name[..name.floor_char_boundary(64)];
        let what = format!(
            "name lookup of {start:?}…: not a host name ({} bytes)",
            name.len()
        );
        state.denied.record(&state.tag, &what);
        return Err(ErrorCode::InvalidArgument);
    }
    if let Err(why) = state.egress.check_lookup(name) {
        state
            .denied
            .record(&state.tag, &format!("name lookup {name}: {why}"));
        // As a refused connect: the guest sees EACCES (a final refusal), not a resolver
        // failure it would take for the network's.
        return Err(ErrorCode::AccessDenied);
    }
    let ips = match state.names.cached(name) {
        Some(ips) => ips,
        None => {
            if !state.names.budget.take(1.0) {
                state.denied.record(
                    &state.tag,
                    &format!("name lookup {name}: over {LOOKUPS_PER_SEC} lookups per second"),
                );
                return Err(ErrorCode::TemporaryResolverFailure);
            }
            let ips = query(name).await?;
            let state = store.data_mut();
            state.names.keep(name, &ips);
            ips
        }
    };
    let state = store.data_mut();
    state.egress.learn(name, &ips);
    // Of several addresses, one a connect will be allowed to (a name may also lead to an
    // address only an address rule allows, e.g. `localhost` to `127.0.0.1`).
    let allowed = |ip: &&IpAddr| state.egress.permits_any_port_of(name, **ip);
    ips.iter()
        .find(allowed)
        .or(ips.first())
        .copied()
        .ok_or(ErrorCode::NameUnresolvable)
}

async fn query(name: &str) -> Result<Vec<IpAddr>, ErrorCode> {
    match tokio::net::lookup_host((name, 0)).await {
        Ok(addrs) => Ok(addrs.map(|a| a.ip().to_canonical()).collect()),
        Err(_) => Err(ErrorCode::NameUnresolvable),
    }
}

/// One instance's lookups: a small cache and the rate budget.
pub struct Names {
    cache: Vec<(String, Vec<IpAddr>, std::time::Instant)>,
    pub budget: crate::limits::Budget,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            cache: Vec::new(),
            budget: crate::limits::Budget::new(LOOKUP_BURST, LOOKUPS_PER_SEC),
        }
    }
}

impl Names {
    /// Names cached per instance; the budget bounds how fast new ones come.
    const KEPT: usize = 64;

    fn cached(&mut self, name: &str) -> Option<Vec<IpAddr>> {
        self.cache.retain(|(_, _, at)| at.elapsed() < TTL);
        let name = name.to_ascii_lowercase();
        self.cache
            .iter()
            .find(|(n, ..)| *n == name)
            .map(|(_, ips, _)| ips.clone())
    }

    fn keep(&mut self, name: &str, ips: &[IpAddr]) {
        if self.cache.len() >= Self::KEPT {
            self.cache.remove(0);
        }
        self.cache
            .push((name.to_ascii_lowercase(), ips.to_vec(), std::time::Instant::now()));
    }
}
