//! Where ours' time goes over TLS: the same work over plaintext and over TLS in the same
//! rounds (both brokers in memory), the handshakes from the open times (`open`), and the
//! connections each run holds.
//!
//! For each workload, from the rounds' own differences (a round runs both one after the
//! other):
//! - handshakes on the clock = the run's connections opened on its clock x the TLS
//!   handshake per connection (the rest of its connections were opened in `open()`);
//! - encryption = (TLS time - plaintext time) - handshakes on the clock: what encrypting
//!   and decrypting the records' bytes cost, with what moving them through TLS records
//!   costs besides;
//! - the rest = the plaintext time: everything TLS does not change.
//!
//! SASL costs only at a connection's opening (and at re-authentication, which nisshi never
//! asks for): per connection from the open times, for the run's connections.

use crate::consumer::{self, ConsumeMeasured};
use crate::endpoint::Transport;
use crate::open::OpenCosts;
use crate::producer;
use crate::stats::{Rounds, Run, Spread, Variant, size_name};

/// What one workload's rounds say about TLS.
struct Workload {
    name: String,
    plaintext: Spread,
    tls: Spread,
    /// TLS time minus plaintext time, round by round.
    difference: Spread,
    connections: u64,
    opened_on_clock: u64,
    /// The handshakes of the connections opened on the clock, in seconds.
    handshakes_on_clock: f64,
    /// `difference` less `handshakes_on_clock`, round by round.
    encryption: Spread,
    /// What ours' TLS runs sent and received on the clock (records, protocol and TLS), MB.
    wire_mb: f64,
    /// librdkafka's TLS time over its plaintext time, if both ran.
    librdkafka_slowdown: Option<Spread>,
    /// CPU seconds over TLS minus over plaintext (the consumer measures its CPU).
    cpu_difference: Option<Spread>,
}

fn workload<M: std::ops::Deref<Target = Run>>(
    name: String,
    rounds: &Rounds<M>,
    handshake_s: f64,
) -> Workload {
    let [ours_plain, ours_tls] = [Transport::Plaintext, Transport::Tls].map(Variant::ours);
    let seconds = |v| -> Vec<f64> { rounds.runs(v).iter().map(|r| r.seconds).collect() };
    let difference = rounds.round_differences(ours_tls, ours_plain, |r| r.seconds);
    let tls_runs = rounds.runs(ours_tls);
    let median = |f: fn(&Run) -> u64| -> u64 {
        Spread::of(&tls_runs.iter().map(|r| f(r) as f64).collect::<Vec<_>>()).median as u64
    };
    let opened_on_clock = median(|r| r.opened_on_clock);
    let encryption: Vec<f64> = difference
        .iter()
        .zip(tls_runs)
        .map(|(d, r)| d - r.opened_on_clock as f64 * handshake_s)
        .collect();
    let [lib_plain, lib_tls] = [Transport::Plaintext, Transport::Tls].map(Variant::librdkafka);
    let librdkafka_slowdown = (rounds.has(lib_plain) && rounds.has(lib_tls)).then(|| {
        let (t, p) = (rounds.runs(lib_tls), rounds.runs(lib_plain));
        Spread::of(
            &t.iter()
                .zip(p)
                .map(|(t, p)| t.seconds / p.seconds)
                .collect::<Vec<_>>(),
        )
    });
    Workload {
        name,
        plaintext: Spread::of(&seconds(ours_plain)),
        tls: Spread::of(&seconds(ours_tls)),
        difference: Spread::of(&difference),
        connections: median(|r| r.connections),
        opened_on_clock,
        handshakes_on_clock: opened_on_clock as f64 * handshake_s,
        encryption: Spread::of(&encryption),
        wire_mb: Spread::of(
            &tls_runs
                .iter()
                .map(|r| r.wire_bytes as f64 / 1e6)
                .collect::<Vec<_>>(),
        )
        .median,
        librdkafka_slowdown,
        cpu_difference: None,
    }
}

pub(crate) fn print(
    produced: Option<&producer::Results>,
    consumed: Option<&consumer::Results>,
    opens: &OpenCosts,
) {
    let handshake = opens.extra_ms(Transport::Tls, Transport::Plaintext);
    let sasl = opens.extra_ms(Transport::TlsSasl, Transport::TlsSqlite);
    let handshake_s = handshake.median / 1e3;
    let mut workloads = Vec::new();
    for (size, rounds) in produced.map_or(&[][..], |p| &p.memory[..]) {
        workloads.push(workload(
            format!("producer {}", size_name(*size)),
            rounds,
            handshake_s,
        ));
    }
    if let Some(c) = consumed {
        let mut w = workload("consumer 100 B".into(), &c.memory, handshake_s);
        let [plain, tls] = [Transport::Plaintext, Transport::Tls].map(Variant::ours);
        let cpu = |m: &ConsumeMeasured| m.cpu_seconds;
        w.cpu_difference = Some(Spread::of(&c.memory.round_differences(tls, plain, cpu)));
        workloads.push(w);
    }

    println!(
        "where ours' time goes over TLS: the same records over plaintext and over TLS (both nisshi in memory), seconds on the clock, medians [min - max] of the rounds (differences: round by round)"
    );
    println!(
        "{:<16} {:>12} {:>12} {:>24} {:>18} {:>12} {:>24} {:>10} {:>10}",
        "workload",
        "plaintext s",
        "TLS s",
        "TLS - plaintext s",
        "connections",
        "handshakes s",
        "encryption s",
        "the rest s",
        "wire MB"
    );
    for w in &workloads {
        println!(
            "{:<16} {:>12.3} {:>12.3} {:>24} {:>18} {:>12.3} {:>24} {:>10.3} {:>10.0}",
            w.name,
            w.plaintext.median,
            w.tls.median,
            w.difference.show(3, ""),
            format!("{} ({} on clock)", w.connections, w.opened_on_clock),
            w.handshakes_on_clock,
            w.encryption.show(3, ""),
            w.plaintext.median,
            w.wire_mb,
        );
    }
    println!(
        "(wire MB: what ours' connections sent and received on the clock over TLS, TCP_INFO; the rest: the plaintext time, what TLS does not change)"
    );
    println!();
    for w in &workloads {
        // Of the plaintext median plus the median difference, so the three add up.
        let total = w.plaintext.median + w.difference.median;
        let share = |s: f64| 100.0 * s / total;
        println!(
            "{:<16} over TLS: encryption {:.0}% ({:.0} wire MB per second of it), handshakes {:.1}%, the rest {:.0}%; TLS takes {:.2}x the plaintext time{}",
            w.name,
            share(w.encryption.median),
            w.wire_mb / w.encryption.median,
            share(w.handshakes_on_clock),
            share(w.plaintext.median),
            w.tls.median / w.plaintext.median,
            w.librdkafka_slowdown
                .map(|s| format!(" (librdkafka: {}x)", s.show(2, "")))
                .unwrap_or_default()
        );
        if let Some(cpu) = w.cpu_difference {
            println!(
                "{:<16} CPU over TLS minus over plaintext: {} s",
                "",
                cpu.show(3, "")
            );
        }
    }
    println!();
    println!(
        "handshake (ours, a full TLS 1.3 handshake in the component): {} ms per connection; for a run's connections, in total:",
        handshake.show(1, "")
    );
    for w in &workloads {
        println!(
            "  {:<16} {} connections: {:.0} ms ({:.0} ms of it on the clock, the rest in open())",
            w.name,
            w.connections,
            w.connections as f64 * handshake.median,
            w.handshakes_on_clock * 1e3,
        );
    }
    println!(
        "SASL SCRAM-SHA-512 adds {} ms per connection at its opening (nothing after: nisshi never asks to re-authenticate), {} for these runs",
        sasl.show(1, ""),
        workloads
            .iter()
            .map(|w| format!("{:.0} ms ({})", w.connections as f64 * sasl.median, w.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
