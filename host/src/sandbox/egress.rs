//! Where an instance may connect: the operator's allowlist of `host:port` rules, checked on
//! the resolved address at every connect and on the name at every lookup.
//!
//! Who writes a rule matters. The operator (a pipeline file's `allow`, the CLI's `--allow`
//! and the `servers` of a one-off command) may allow anything, by address, network, name or
//! `*.domain`. A tenant's `servers` only stand in for an `allow` the operator left out, and
//! then only as exact `host:port` pairs on public addresses. Loopback, private, link-local
//! and cloud-metadata addresses are reached only through an operator rule that names them:
//! the exact address, or (metadata excepted) a network wholly inside that kind of space or
//! the exact name (`localhost:9092`). A wildcard or a tenant's name never leads there, so a
//! tenant cannot use DNS to point a rule at the host's own services.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;

use anyhow::{Result, bail};
use ipnet::IpNet;

/// Who wrote a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Operator,
    Tenant,
}

#[derive(Debug, Clone, PartialEq)]
enum Host {
    Ip(IpAddr),
    Net(IpNet),
    /// A DNS name, lower case, no trailing dot.
    Name(String),
    /// `*.example.com`, kept as `.example.com`: any name below it, not the name itself.
    Below(String),
}

#[derive(Debug, Clone)]
struct Rule {
    host: Host,
    ports: (u16, u16),
    owner: Owner,
}

/// An instance's allowlist: data only; `Egress` applies it.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    rules: Vec<Rule>,
}

impl Allowlist {
    /// Adds an operator rule: `HOST:PORT` or `HOST:LOW-HIGH`, where HOST is an IP address
    /// (`[v6]` in brackets), a network (`10.0.0.0/8`, `[fd00::/8]`), a name or `*.domain`.
    pub fn allow(&mut self, entry: &str) -> Result<()> {
        self.add(entry, Owner::Operator)
    }

    /// Adds the `host:port` of each server of a comma-separated `servers` value, as the
    /// operator (a one-off command, whose user is the operator).
    pub fn allow_servers(&mut self, servers: &str) -> Result<()> {
        for server in split_servers(servers) {
            self.add_server(server, Owner::Operator)?;
        }
        Ok(())
    }

    /// The allowlist a tenant's `servers` give when the operator wrote none: each exact
    /// `host:port`, on public addresses only.
    pub fn from_tenant_servers(servers: &str) -> Result<Self> {
        let mut a = Allowlist::default();
        for server in split_servers(servers) {
            a.add_server(server, Owner::Tenant)?;
        }
        Ok(a)
    }

    /// Adds the tenant's `servers` to the allowlist it got from other `servers`.
    pub fn add_tenant_servers(&mut self, servers: &str) -> Result<()> {
        self.rules.extend(Self::from_tenant_servers(servers)?.rules);
        Ok(())
    }

    fn add_server(&mut self, server: &str, owner: Owner) -> Result<()> {
        let (host, ports) = split_entry(server)?;
        let host = match parse_host(host)? {
            Host::Net(_) | Host::Below(_) => bail!("server {server:?} is not a host:port"),
            h => h,
        };
        if ports.0 != ports.1 {
            bail!("server {server:?} is not a host:port");
        }
        if let (Host::Ip(ip), Owner::Tenant) = (&host, owner)
            && let Some(kind) = special(*ip)
        {
            bail!(
                "server {server:?} is a {kind} address: only the operator can allow it, with \
                 allow = [\"{}\"]",
                endpoint(*ip, ports.0)
            );
        }
        self.rules.push(Rule { host, ports, owner });
        Ok(())
    }

    fn add(&mut self, entry: &str, owner: Owner) -> Result<()> {
        let (host, ports) = split_entry(entry)?;
        let host = parse_host(host)?;
        self.rules.push(Rule { host, ports, owner });
        Ok(())
    }

    /// Whether a rule permits connecting to `addr` by its address alone (not by a name it
    /// was looked up as).
    pub fn permits(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.rules
            .iter()
            .any(|r| r.has_port(addr.port()) && r.permits_ip(ip))
    }

    /// Whether the guest may look `name` up (some name rule matches it, any port).
    pub fn permits_lookup(&self, name: &str) -> bool {
        let name = normal_name(name);
        self.rules.iter().any(|r| r.matches_name(&name))
    }

    /// What the name rules matching `name` grant.
    fn name_grants(&self, name: &str) -> Vec<Grant> {
        let name = normal_name(name);
        self.rules
            .iter()
            .filter(|r| r.matches_name(&name))
            .map(|r| Grant {
                ports: r.ports,
                special: r.owner == Owner::Operator && matches!(r.host, Host::Name(_)),
            })
            .collect()
    }

    /// Whether each server of `servers` is allowed here, by address or by name; the first
    /// that is not, otherwise.
    pub fn check_servers(&self, servers: &str) -> Result<(), String> {
        for server in split_servers(servers) {
            let Ok((host, (port, _))) = split_entry(server) else {
                return Err(format!("server {server:?} is not a host:port"));
            };
            let ok = match parse_host(host) {
                Ok(Host::Ip(ip)) => self.permits(SocketAddr::new(ip, port)),
                Ok(Host::Name(n)) => self.name_grants(&n).iter().any(|g| g.has_port(port)),
                _ => false,
            };
            if !ok {
                return Err(format!("server {server:?} is not in the allow list"));
            }
        }
        Ok(())
    }
}

impl Rule {
    fn has_port(&self, port: u16) -> bool {
        (self.ports.0..=self.ports.1).contains(&port)
    }

    fn permits_ip(&self, ip: IpAddr) -> bool {
        let (contains, unlocks_special) = match &self.host {
            Host::Ip(a) => (a.to_canonical() == ip, self.owner == Owner::Operator),
            Host::Net(n) => (
                n.contains(&ip),
                self.owner == Owner::Operator && !is_metadata(ip) && wholly_special(n),
            ),
            Host::Name(_) | Host::Below(_) => (false, false),
        };
        contains && (unlocks_special || special(ip).is_none())
    }

    fn matches_name(&self, name: &str) -> bool {
        match &self.host {
            Host::Name(n) => n == name,
            Host::Below(suffix) => name.len() > suffix.len() && name.ends_with(suffix.as_str()),
            _ => false,
        }
    }
}

/// What a name rule grants the addresses its name resolves to: its ports, and whether
/// they may be special addresses (loopback, private: only through an operator's exact
/// name, `localhost:9092`; never through a wildcard or a tenant's name, and never to
/// cloud metadata).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Grant {
    ports: (u16, u16),
    special: bool,
}

impl Grant {
    fn has_port(&self, port: u16) -> bool {
        (self.ports.0..=self.ports.1).contains(&port)
    }

    fn permits(&self, ip: IpAddr) -> bool {
        special(ip).is_none() || (self.special && !is_metadata(ip))
    }
}

/// What the sandbox knows of one instance's connections: its allowlist, and the
/// addresses its lookups of allowed names returned (a connect to one of them is allowed as
/// that name's rules grant).
#[derive(Debug, Default)]
pub struct Egress {
    pub allow: Allowlist,
    learned: Mutex<HashMap<IpAddr, Vec<Grant>>>,
}

/// Addresses remembered per instance from lookups; past this, the oldest are forgotten by
/// starting afresh (a guest that needs them looks them up again).
const LEARNED_MAX: usize = 1024;

impl Egress {
    pub fn new(allow: Allowlist) -> Self {
        Egress {
            allow,
            learned: Mutex::default(),
        }
    }

    /// Whether a connect to `addr` is allowed; if not, why and what would allow it.
    pub fn check_connect(&self, addr: SocketAddr) -> Result<(), String> {
        let ip = addr.ip().to_canonical();
        if self.allow.permits(SocketAddr::new(ip, addr.port())) {
            return Ok(());
        }
        let learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        let grants = learned.get(&ip).map(Vec::as_slice).unwrap_or_default();
        let by_name = grants.iter().any(|g| g.has_port(addr.port()) && g.permits(ip));
        drop(learned);
        let wanted = endpoint(ip, addr.port());
        match (by_name, special(ip)) {
            (true, _) => Ok(()),
            (false, Some(kind)) => Err(format!(
                "{wanted} is a {kind} address; only an operator allow entry \"{wanted}\" permits it"
            )),
            (false, None) => Err(format!(
                "{wanted} is not in the allow list; an allow entry \"{wanted}\" would permit it"
            )),
        }
    }

    /// Whether a connect to `ip` on one of `name`'s rule ports would be allowed.
    pub fn permits_any_port_of(&self, name: &str, ip: IpAddr) -> bool {
        let grants = self.allow.name_grants(name);
        grants
            .iter()
            .any(|g| self.check_connect(SocketAddr::new(ip, g.ports.0)).is_ok())
    }

    /// Whether the guest may look `name` up; if not, what would allow it.
    pub fn check_lookup(&self, name: &str) -> Result<(), String> {
        if self.allow.permits_lookup(name) {
            return Ok(());
        }
        let name = normal_name(name);
        let below = name
            .split_once('.')
            .map(|(_, parent)| format!(" or \"*.{parent}:PORT\""));
        Err(format!(
            "name {name:?} is not in the allow list; an allow entry \"{name}:PORT\"{} would permit it",
            below.unwrap_or_default()
        ))
    }

    /// Remembers what an allowed `name` resolved to, for the connects that follow.
    pub fn learn(&self, name: &str, ips: &[IpAddr]) {
        let grants = self.allow.name_grants(name);
        let mut learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        if learned.len() + ips.len() > LEARNED_MAX {
            learned.clear();
        }
        for ip in ips {
            let known = learned.entry(ip.to_canonical()).or_default();
            let new: Vec<Grant> = grants.iter().filter(|g| !known.contains(g)).copied().collect();
            known.extend(new);
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Owner::Operator => "operator",
            Owner::Tenant => "tenant",
        })
    }
}

/// `a.b.c.d:p` or `[v6]:p`.
pub fn endpoint(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

fn split_servers(servers: &str) -> impl Iterator<Item = &str> {
    servers.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// `host:ports` → (host, (low, high)); a port is required.
fn split_entry(entry: &str) -> Result<(&str, (u16, u16))> {
    let entry = entry.trim();
    let split = match entry.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .and_then(|(h, p)| Some((h, p.strip_prefix(':')?))),
        None => entry.rsplit_once(':').filter(|(h, _)| !h.contains(':')),
    };
    let Some((host, ports)) = split else {
        if entry.matches(':').count() > 1 && !entry.starts_with('[') {
            bail!("allow entry {entry:?}: an IPv6 address goes in brackets, e.g. \"[::1]:9092\"");
        }
        bail!(
            "allow entry {entry:?} needs a port or a range, e.g. \"{entry}:9092\" or \"{entry}:9092-9094\""
        );
    };
    let port = |p: &str| p.trim().parse::<u16>().ok().filter(|&p| p > 0);
    let range = match ports.split_once('-') {
        Some((lo, hi)) => port(lo).zip(port(hi)).filter(|(lo, hi)| lo <= hi),
        None => port(ports).map(|p| (p, p)),
    };
    match range {
        Some(r) => Ok((host, r)),
        None => bail!("allow entry {entry:?}: {ports:?} is not a port (1-65535) or a range like 9092-9094"),
    }
}

fn parse_host(host: &str) -> Result<Host> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Host::Ip(ip.to_canonical()));
    }
    if host.contains('/') {
        return match host.parse::<IpNet>() {
            Ok(n) => Ok(Host::Net(n.trunc())),
            Err(_) => bail!("{host:?} is not a network like 10.0.0.0/8"),
        };
    }
    let (below, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let name = normal_name(name);
    if !valid_name(&name) {
        bail!("{host:?} is not a host name, an IP address, a network or *.domain");
    }
    if below && !name.contains('.') {
        bail!("{host:?} is too wide: a wildcard needs a domain of at least two labels");
    }
    Ok(match below {
        true => Host::Below(format!(".{name}")),
        false => Host::Name(name),
    })
}

/// A DNS name: at most 253 bytes, labels of letters, digits, `-` and `_`, 63 bytes each.
pub fn valid_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

fn normal_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The kind of address a tenant must never reach by default, if `ip` is one.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    if is_metadata(ip) {
        return Some("cloud metadata");
    }
    match ip.to_canonical() {
        IpAddr::V4(a) => special_v4(a),
        IpAddr::V6(a) => special_v6(a),
    }
}

fn special_v4(a: Ipv4Addr) -> Option<&'static str> {
    let [b0, b1, ..] = a.octets();
    Some(match () {
        _ if a.is_loopback() => "loopback",
        _ if a.is_private() => "private",
        _ if a.is_link_local() => "link-local",
        _ if a.is_unspecified() || b0 == 0 => "unspecified",
        _ if a.is_broadcast() || a.is_multicast() || b0 >= 240 => "multicast or reserved",
        _ if b0 == 100 && (64..128).contains(&b1) => "shared (carrier-grade NAT)",
        _ if b0 == 198 && (18..20).contains(&b1) => "benchmarking",
        _ if b0 == 192 && b1 == 0 && a.octets()[2] == 0 => "reserved",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 one carries to (NAT64 `64:ff9b::/96`, 6to4 `2002::/16`): what
/// the packet finally reaches.
fn carried_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match () {
        _ if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => Some(v4(s[6], s[7])),
        _ if s[0] == 0x2002 => Some(v4(s[1], s[2])),
        _ => None,
    }
}

fn special_v6(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    if let Some(v4) = carried_v4(a) {
        return special_v4(v4);
    }
    Some(match () {
        _ if a.is_loopback() => "loopback",
        _ if a.is_unspecified() => "unspecified",
        _ if s[..3] == [0x64, 0xff9b, 1] => "private (local NAT64)",
        _ if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 => "private",
        _ if (s[0] & 0xffc0) == 0xfe80 => "link-local",
        _ if a.is_multicast() => "multicast or reserved",
        // IPv4-compatible (deprecated), Teredo (its IPv4 hidden), discard-only.
        _ if s[..6] == [0; 6] || s[..2] == [0x2001, 0] || s[..4] == [0x100, 0, 0, 0] => "reserved",
        _ => return None,
    })
}

/// Cloud instance metadata services (AWS, GCP, Azure, Oracle; ECS; Alibaba; AWS over IPv6).
fn is_metadata(ip: IpAddr) -> bool {
    const V4: [Ipv4Addr; 3] = [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(169, 254, 170, 2),
        Ipv4Addr::new(100, 100, 100, 200),
    ];
    match ip.to_canonical() {
        IpAddr::V4(a) => V4.contains(&a),
        IpAddr::V6(a) => {
            a == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || carried_v4(a).is_some_and(|v4| V4.contains(&v4))
        }
    }
}

/// Whether the whole network is special space of one kind (an operator who writes
/// `10.0.0.0/8` means private addresses; one who writes `0.0.0.0/0` does not).
fn wholly_special(n: &IpNet) -> bool {
    let kind = special(n.network());
    kind.is_some() && kind == special(n.broadcast())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn operator(entries: &[&str]) -> Egress {
        let mut a = Allowlist::default();
        for e in entries {
            a.allow(e).unwrap();
        }
        Egress::new(a)
    }

    #[test]
    fn entries_need_a_port_and_take_ranges_names_and_networks() {
        let e = operator(&[
            "203.0.113.7:9092",
            "198.51.100.0/24:9092-9094",
            "[2001:db8::1]:9093",
        ]);
        assert!(e.check_connect(sa("203.0.113.7:9092")).is_ok());
        assert!(e.check_connect(sa("203.0.113.7:9093")).is_err(), "another port");
        assert!(e.check_connect(sa("198.51.100.9:9094")).is_ok());
        assert!(e.check_connect(sa("198.51.100.9:9095")).is_err());
        assert!(e.check_connect(sa("[2001:db8::1]:9093")).is_ok());
        let mut a = Allowlist::default();
        let err = a.allow("10.0.0.0/8").unwrap_err().to_string();
        assert!(err.contains("needs a port"), "{err}");
        assert!(a.allow("::1:9092").unwrap_err().to_string().contains("brackets"));
        assert!(a.allow("h:0").is_err() && a.allow("h:9-1").is_err() && a.allow("h:x").is_err());
        assert!(
            a.allow("*.com:9092")
                .unwrap_err()
                .to_string()
                .contains("too wide")
        );
        assert!(a.allow("bad host:9092").is_err());
    }

    #[test]
    fn special_addresses_need_the_operator_to_name_them() {
        let e = operator(&["0.0.0.0/0:1-65535", "[::/0]:1-65535"]);
        for addr in [
            "127.0.0.1:9092",
            "10.1.2.3:9092",
            "169.254.169.254:80",
            "192.168.1.1:22",
            "[::1]:9092",
            "[fd00:ec2::254]:80",
            "[::ffff:127.0.0.1]:9092",
            "100.64.0.1:9092",
        ] {
            let err = e.check_connect(sa(addr)).unwrap_err();
            assert!(
                err.contains("address; only an operator allow entry"),
                "{addr}: {err}"
            );
        }
        assert!(
            e.check_connect(sa("8.8.8.8:53")).is_ok(),
            "public addresses pass a wide rule"
        );
        let e = operator(&["127.0.0.1:9092", "10.0.0.0/8:9092", "169.254.0.0/16:80"]);
        assert!(e.check_connect(sa("127.0.0.1:9092")).is_ok());
        assert!(
            e.check_connect(sa("[::ffff:127.0.0.1]:9092")).is_ok(),
            "mapped v4 is the v4"
        );
        assert!(
            e.check_connect(sa("127.0.0.1:9464")).is_err(),
            "another port of the host"
        );
        assert!(
            e.check_connect(sa("10.9.9.9:9092")).is_ok(),
            "a private network, by the operator"
        );
        assert!(
            e.check_connect(sa("169.254.169.254:80")).is_err(),
            "metadata only by exact address"
        );
        assert!(
            operator(&["169.254.169.254:80"])
                .check_connect(sa("169.254.169.254:80"))
                .is_ok()
        );
    }

    #[test]
    fn cloud_metadata_is_recognised_through_nat64_and_6to4() {
        for ip in [
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::ffff:169.254.169.254",
        ] {
            assert_eq!(special(ip.parse().unwrap()), Some("cloud metadata"), "{ip}");
        }
    }

    #[test]
    fn tenant_servers_are_exact_public_host_ports_only() {
        let a = Allowlist::from_tenant_servers("broker.example.com:9092, 203.0.113.7:9093").unwrap();
        let e = Egress::new(a);
        assert!(e.check_connect(sa("203.0.113.7:9093")).is_ok());
        assert!(e.check_connect(sa("203.0.113.7:9092")).is_err());
        assert!(e.check_lookup("broker.example.com").is_ok());
        assert!(e.check_lookup("other.example.com").is_err());
        let err = Allowlist::from_tenant_servers("127.0.0.1:9092")
            .unwrap_err()
            .to_string();
        assert!(err.contains("loopback address: only the operator"), "{err}");
        assert!(
            Allowlist::from_tenant_servers("0.0.0.0/0:9092").is_err(),
            "no network from a tenant"
        );
        assert!(Allowlist::from_tenant_servers("*.example.com:9092").is_err());
        assert!(
            Allowlist::from_tenant_servers("203.0.113.7").is_err(),
            "a port is needed"
        );
    }

    #[test]
    fn names_are_looked_up_only_when_a_rule_matches_and_allow_their_ports() {
        let e = operator(&["*.kafka.example.com:9092", "boot.example.org:9093"]);
        assert!(e.check_lookup("b1.kafka.example.com").is_ok());
        assert!(e.check_lookup("B1.Kafka.Example.com.").is_ok());
        assert!(
            e.check_lookup("kafka.example.com").is_err(),
            "the wildcard is below the domain"
        );
        let err = e.check_lookup("s3cret.exfil.example").unwrap_err();
        assert!(err.contains("\"*.exfil.example:PORT\""), "{err}");
        let public: IpAddr = "203.0.113.9".parse().unwrap();
        let private: IpAddr = "10.0.0.9".parse().unwrap();
        assert!(
            e.check_connect(SocketAddr::new(public, 9092)).is_err(),
            "not learnt yet"
        );
        e.learn("b1.kafka.example.com", &[public, private]);
        assert!(e.check_connect(SocketAddr::new(public, 9092)).is_ok());
        assert!(
            e.check_connect(SocketAddr::new(public, 9093)).is_err(),
            "the name's ports only"
        );
        assert!(
            e.check_connect(SocketAddr::new(private, 9092)).is_err(),
            "a wildcard never unlocks private space"
        );
        // An operator's exact name may lead to a special address; a tenant's may not.
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        e.learn("boot.example.org", &[loopback]);
        assert!(e.check_connect(SocketAddr::new(loopback, 9093)).is_ok());
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        e.learn("boot.example.org", &[metadata]);
        let err = e.check_connect(SocketAddr::new(metadata, 9093));
        assert!(err.is_err(), "never cloud metadata by name");
        let t = Egress::new(Allowlist::from_tenant_servers("boot.example.org:9093").unwrap());
        t.learn("boot.example.org", &[loopback]);
        assert!(t.check_connect(SocketAddr::new(loopback, 9093)).is_err());
    }

    #[test]
    fn servers_must_fall_within_the_operators_list() {
        let mut a = Allowlist::default();
        a.allow("127.0.0.1:9092").unwrap();
        a.allow("*.example.com:9092").unwrap();
        assert!(a.check_servers("127.0.0.1:9092, b.example.com:9092").is_ok());
        assert!(a.check_servers("127.0.0.1:9093").is_err());
        assert!(a.check_servers("x.example.org:9092").is_err());
    }
}
