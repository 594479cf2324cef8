//! What every run reports and how the rounds of both sides are compared: the medians, the
//! rounds' own ratios, the targets.

use anyhow::{Context, Result};

use crate::SIDES;

/// Both sides run `n` times; each side's median run (by records/s) is the one compared.
pub(crate) struct Rounds<M> {
    /// The median run of each side, in `SIDES` order.
    pub(crate) median: [M; 2],
    /// Ours over librdkafka, round by round.
    ratios: Vec<f64>,
}

impl<M: std::ops::Deref<Target = Run>> Rounds<M> {
    /// Runs both sides `n` times, alternating which goes first (so neither always meets a
    /// broker the other just warmed or loaded).
    pub(crate) fn run(n: usize, mut run: impl FnMut(&str) -> Result<M>) -> Result<Self> {
        let mut runs: [Vec<M>; 2] = [Vec::new(), Vec::new()];
        let mut ratios = Vec::new();
        for round in 0..n {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                runs[side].push(run(SIDES[side])?);
            }
            ratios.push(runs[0][round].records_per_sec() / runs[1][round].records_per_sec());
        }
        let median = runs.map(|mut v| {
            v.sort_by(|a, b| a.records_per_sec().total_cmp(&b.records_per_sec()));
            v.swap_remove(v.len() / 2)
        });
        Ok(Rounds { median, ratios })
    }

    /// Ours over librdkafka, median against median.
    pub(crate) fn ratio(&self) -> f64 {
        self.median[0].records_per_sec() / self.median[1].records_per_sec()
    }

    /// The rounds' own ratios, for the spread behind the medians.
    pub(crate) fn spread(&self) -> String {
        let each: Vec<String> = self.ratios.iter().map(|r| format!("{r:.2}x")).collect();
        format!(
            "median of {} runs per side; the rounds' own ratios: {}",
            self.ratios.len(),
            each.join(", ")
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
