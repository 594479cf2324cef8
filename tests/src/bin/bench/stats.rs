//! What every run reports and how the rounds of the variants (a side on a broker) are
//! compared: the medians, the rounds' own ratios and differences, the targets.

use anyhow::{Context, Result};

use crate::SIDES;
use crate::endpoint::Transport;

/// A way to run a part: one side on one broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Variant {
    pub(crate) side: &'static str,
    pub(crate) transport: Transport,
}

impl Variant {
    pub(crate) fn ours(transport: Transport) -> Variant {
        Variant {
            side: SIDES[0],
            transport,
        }
    }

    pub(crate) fn librdkafka(transport: Transport) -> Variant {
        Variant {
            side: SIDES[1],
            transport,
        }
    }

    /// `side` (a part's own) on the plaintext broker.
    pub(crate) fn plaintext(side: &'static str) -> Variant {
        Variant {
            side,
            transport: Transport::Plaintext,
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} over {}", self.side, self.transport)
    }
}

/// Every variant runs `n` times; each variant's median run (by records/s) is the one
/// compared, and variants run in the same round are compared round by round.
pub(crate) struct Rounds<M> {
    variants: Vec<Variant>,
    /// Each variant's runs, in round order.
    runs: Vec<Vec<M>>,
}

impl<M: std::ops::Deref<Target = Run>> Rounds<M> {
    /// Runs every variant `n` times, the order rotating from round to round (with two,
    /// alternating which goes first), so none always meets a broker another just warmed or
    /// loaded.
    pub(crate) fn run(
        n: usize,
        variants: Vec<Variant>,
        mut run: impl FnMut(Variant) -> Result<M>,
    ) -> Result<Self> {
        let k = variants.len();
        let mut runs: Vec<Vec<M>> = (0..k).map(|_| Vec::new()).collect();
        for round in 0..n {
            for i in 0..k {
                let v = (round + i) % k;
                runs[v].push(run(variants[v])?);
            }
        }
        Ok(Rounds { variants, runs })
    }

    pub(crate) fn has(&self, v: Variant) -> bool {
        self.variants.contains(&v)
    }

    /// `v`'s runs, in round order.
    pub(crate) fn runs(&self, v: Variant) -> &[M] {
        let i = self
            .variants
            .iter()
            .position(|&x| x == v)
            .unwrap_or_else(|| panic!("{v} was not run"));
        &self.runs[i]
    }

    /// `v`'s median run by records/s.
    pub(crate) fn median(&self, v: Variant) -> &M {
        let runs = self.runs(v);
        let mut order: Vec<&M> = runs.iter().collect();
        order.sort_by(|a, b| a.records_per_sec().total_cmp(&b.records_per_sec()));
        order[runs.len() / 2]
    }

    /// `a` over `b` in records/s, median against median.
    pub(crate) fn ratio(&self, a: Variant, b: Variant) -> f64 {
        self.median(a).records_per_sec() / self.median(b).records_per_sec()
    }

    /// `a` over `b` round by round, for the spread behind the medians.
    pub(crate) fn round_ratios(&self, a: Variant, b: Variant) -> Vec<f64> {
        let (a, b) = (self.runs(a), self.runs(b));
        a.iter()
            .zip(b)
            .map(|(a, b)| a.records_per_sec() / b.records_per_sec())
            .collect()
    }

    /// `f(a) - f(b)` round by round (variants of one round ran one after the other).
    pub(crate) fn round_differences(&self, a: Variant, b: Variant, f: impl Fn(&M) -> f64) -> Vec<f64> {
        let (a, b) = (self.runs(a), self.runs(b));
        a.iter().zip(b).map(|(a, b)| f(a) - f(b)).collect()
    }

    /// The rounds' own ratios of `a` over `b`, as one line.
    pub(crate) fn spread(&self, a: Variant, b: Variant) -> String {
        let ratios = self.round_ratios(a, b);
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
        format!(
            "median of {} runs per side; the rounds' own ratios: {}",
            ratios.len(),
            each.join(", ")
        )
    }
}

/// The median of some values and their range.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    pub(crate) fn of(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Spread {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// `median [min - max]` with `decimals` and `unit`.
    pub(crate) fn show(&self, decimals: usize, unit: &str) -> String {
        format!(
            "{:.d$}{unit} [{:.d$} - {:.d$}]",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// What every child measures, read from its `RESULT` line.
pub(crate) struct Run {
    pub(crate) records: u64,
    pub(crate) value_bytes: u64,
    pub(crate) seconds: f64,
    /// VmHWM of the whole child process.
    pub(crate) peak_kib: u64,
    /// The process's connections to the broker when the clock stopped, and how many of
    /// them were opened while it ran.
    pub(crate) connections: u64,
    pub(crate) opened_on_clock: u64,
    /// What those connections sent and received on the clock (TCP_INFO).
    pub(crate) wire_bytes: u64,
}

impl Run {
    /// The child's `RESULT {json}` line, and the run it reports.
    pub(crate) fn parse(stdout: &str) -> Result<(serde_json::Value, Run)> {
        let line = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("RESULT "))
            .context("no RESULT line")?;
        let v: serde_json::Value = serde_json::from_str(line)?;
        let run = Run {
            records: number(&v, "records")? as u64,
            value_bytes: number(&v, "value_bytes")? as u64,
            seconds: number(&v, "seconds")?,
            peak_kib: number(&v, "peak_kib")? as u64,
            connections: number(&v, "connections")? as u64,
            opened_on_clock: number(&v, "opened_on_clock")? as u64,
            wire_bytes: number(&v, "wire_bytes")? as u64,
        };
        Ok((v, run))
    }
    pub(crate) fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.seconds
    }
    pub(crate) fn mb_per_sec(&self) -> f64 {
        self.value_bytes as f64 / self.seconds / 1e6
    }
    pub(crate) fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

pub(crate) fn number(v: &serde_json::Value, key: &str) -> Result<f64> {
    v[key].as_f64().with_context(|| format!("no {key} in {v}"))
}

pub(crate) fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

pub(crate) fn size_name(size: usize) -> String {
    if size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}
