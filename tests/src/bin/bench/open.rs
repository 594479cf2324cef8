//! What opening a connection costs ours: a destination's `open()` timed on each broker, in
//! one child process (`bench open-run N ENDPOINT TOPIC...`), the brokers' order rotating
//! from round to round after one untimed round. A destination's `open()` checks its
//! settings and opens exactly one connection (TCP, the TLS handshake, ApiVersions, SASL),
//! on which it asks for Metadata and a producer id; the child counts the connections to
//! be sure. `validate()` of the same settings (parsing them, TLS's roots and CA included)
//! is timed too, so the settings are not taken for the handshake.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use connector_host::{Allowlist, Limits, Role};

use crate::Brokers;
use crate::endpoint::{Endpoint, Transport};
use crate::process::{run_child, traffic_to};
use crate::stats::Spread;

/// Opens timed per broker.
pub(crate) const OPENS: usize = 15;

/// One broker's opens, in round order.
pub(crate) struct Opens {
    pub(crate) transport: Transport,
    pub(crate) open_ms: Vec<f64>,
    pub(crate) validate_ms: Vec<f64>,
    pub(crate) connections: Vec<u64>,
}

/// Every broker's opens, all timed in one process.
pub(crate) struct OpenCosts(pub(crate) Vec<Opens>);

impl OpenCosts {
    pub(crate) fn of(&self, t: Transport) -> &Opens {
        self.0
            .iter()
            .find(|o| o.transport == t)
            .unwrap_or_else(|| panic!("no opens over {t}"))
    }

    /// `a`'s open time minus `b`'s, less the difference in checking their settings, round
    /// by round (in ms): what `a`'s connection costs more to open.
    pub(crate) fn extra_ms(&self, a: Transport, b: Transport) -> Spread {
        let (a, b) = (self.of(a), self.of(b));
        let d: Vec<f64> = (0..a.open_ms.len())
            .map(|i| (a.open_ms[i] - a.validate_ms[i]) - (b.open_ms[i] - b.validate_ms[i]))
            .collect();
        Spread::of(&d)
    }
}

pub(crate) fn parent(brokers: &Brokers) -> Result<OpenCosts> {
    let exe = std::env::current_exe()?;
    let mut args = vec!["open-run".to_string(), OPENS.to_string()];
    for b in brokers.iter() {
        args.push(b.endpoint.arg());
        args.push(b.topic("bench-open")?);
    }
    eprintln!("bench: ours opens a destination {OPENS} times on each broker ...");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdout = run_child(&exe, &args, "the open run")?;
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .with_context(|| format!("the open run said no RESULT: {stdout}"))?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let list = |o: &serde_json::Value, key: &str| -> Result<Vec<f64>> {
        o[key]
            .as_array()
            .with_context(|| format!("no {key} in {o}"))?
            .iter()
            .map(|x| x.as_f64().with_context(|| format!("{key} in {o}")))
            .collect()
    };
    let mut costs = Vec::new();
    for o in v.as_array().context("RESULT is no list")? {
        let tag = o["transport"].as_str().context("no transport")?;
        let transport = Transport::ALL
            .into_iter()
            .find(|t| t.to_string() == tag)
            .with_context(|| format!("unknown transport {tag}"))?;
        costs.push(Opens {
            transport,
            open_ms: list(o, "open_ms")?,
            validate_ms: list(o, "validate_ms")?,
            connections: list(o, "connections")?.into_iter().map(|c| c as u64).collect(),
        });
    }
    Ok(OpenCosts(costs))
}

/// Prints the open times and what TLS and SASL add per connection.
pub(crate) fn print(costs: &OpenCosts) {
    println!(
        "opening a connection (ours: a destination's open(), which checks its settings and opens one connection: TCP, TLS handshake, ApiVersions, SASL, then Metadata and InitProducerId on it), {OPENS} opens per broker, median [min - max]:"
    );
    println!(
        "{:<20} {:>24} {:>24} {:>12}",
        "broker", "open() ms", "validate() ms", "connections"
    );
    for o in &costs.0 {
        let connections = Spread::of(&o.connections.iter().map(|&c| c as f64).collect::<Vec<_>>());
        println!(
            "{:<20} {:>24} {:>24} {:>12}",
            o.transport.to_string(),
            Spread::of(&o.open_ms).show(1, ""),
            Spread::of(&o.validate_ms).show(1, ""),
            connections.show(0, ""),
        );
    }
    println!(
        "  per connection, the TLS handshake: {} ms (TLS minus plaintext, both in memory; the settings' share, validate(), taken out)",
        costs.extra_ms(Transport::Tls, Transport::Plaintext).show(1, "")
    );
    println!(
        "  per connection, SASL SCRAM-SHA-512: {} ms (TLS+SASL minus TLS, both on sqlite)",
        costs
            .extra_ms(Transport::TlsSasl, Transport::TlsSqlite)
            .show(1, "")
    );
    println!("  each a full handshake: a new instance has no TLS session to resume");
}

pub(crate) fn child(n: usize, targets: &[(Endpoint, String)]) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let k = targets.len();
    let mut open_ms = vec![Vec::new(); k];
    let mut validate_ms = vec![Vec::new(); k];
    let mut connections = vec![Vec::new(); k];
    rt.block_on(async {
        let runtime = integration_tests::runtime();
        // Round 0 is untimed: the first instance and the first connections warm up.
        for round in 0..=n {
            for i in 0..k {
                let j = (round + i) % k;
                let (at, topic) = &targets[j];
                let mut allow = Allowlist::default();
                allow.allow_servers(&at.addr)?;
                let mut instance = runtime
                    .instantiate("bench/destination", &allow, &Limits::default())
                    .await?;
                let mut config = at.ours()?;
                config.extend([
                    ("topic".to_string(), topic.clone()),
                    ("acks".to_string(), "all".to_string()),
                ]);
                let t = Instant::now();
                instance.validate(Role::Destination, &config).await?;
                let validated = t.elapsed();
                let mut dst = instance.into_destination();
                let t = Instant::now();
                dst.open(&config).await?;
                let opened = t.elapsed();
                let c = traffic_to(&at.addr)?.connections;
                dst.teardown().await?;
                ensure!(c >= 1, "no connection to {} after open()", at.addr);
                if round > 0 {
                    open_ms[j].push(opened.as_secs_f64() * 1e3);
                    validate_ms[j].push(validated.as_secs_f64() * 1e3);
                    connections[j].push(c);
                }
            }
        }
        anyhow::Ok(())
    })?;
    let result: Vec<serde_json::Value> = (0..k)
        .map(|j| {
            serde_json::json!({
                "transport": targets[j].0.transport.to_string(),
                "open_ms": open_ms[j],
                "validate_ms": validate_ms[j],
                "connections": connections[j],
            })
        })
        .collect();
    println!("RESULT {}", serde_json::Value::Array(result));
    Ok(())
}
