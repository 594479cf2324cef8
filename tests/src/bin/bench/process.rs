//! The bench's child processes (this binary run again, one side of a part each) and what
//! `/proc` says about the process running.

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
