//! The guest's `log` import, bounded: a line is cut at `LINE_MAX` bytes and escaped, and
//! an instance may write `Limits::log_lines` lines per second after a burst of ten times as
//! many. Lines past the budget are dropped and counted (the next line shown says how many);
//! an instance that keeps writing far past it is flooding and is stopped.

use std::time::{Duration, Instant};

use crate::limits::Budget;

/// The longest line shown, in bytes; the rest is cut.
pub const LINE_MAX: usize = 4096;

/// Dropped lines within one `WINDOW` that make a flood.
const FLOOD: u64 = 10_000;
const WINDOW: Duration = Duration::from_secs(10);

/// What to do with one line.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Show it, saying first how many lines were dropped before it (if any).
    Show {
        dropped: u64,
    },
    Drop,
    /// Stop the instance, for this cause.
    Flood(String),
}

pub struct Logs {
    budget: Budget,
    rate: u32,
    dropped: u64,
    window: (Instant, u64),
}

impl Logs {
    pub fn new(lines_per_sec: u32) -> Self {
        let rate = f64::from(lines_per_sec);
        Logs {
            budget: Budget::new(rate * 10.0, rate),
            rate: lines_per_sec,
            dropped: 0,
            window: (Instant::now(), 0),
        }
    }

    pub fn admit(&mut self) -> Verdict {
        if self.budget.take(1.0) {
            return Verdict::Show {
                dropped: std::mem::take(&mut self.dropped),
            };
        }
        self.dropped += 1;
        let (since, n) = &mut self.window;
        if since.elapsed() > WINDOW {
            (*since, *n) = (Instant::now(), 0);
        }
        *n += 1;
        if *n > FLOOD {
            return Verdict::Flood(format!(
                "log limit: more than {FLOOD} lines over its budget of {} lines/s within {} s",
                self.rate,
                WINDOW.as_secs()
            ));
        }
        Verdict::Drop
    }
}

/// `message` cut to `LINE_MAX` bytes (on a character boundary), saying how much was cut.
pub fn cut(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= LINE_MAX {
        return message.into();
    }
    let end = message.floor_char_boundary(LINE_MAX);
    format!("{}… [{} more bytes cut]", &message[..end], message.len() - end).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_dropped_counted_and_a_flood_stops_the_instance() {
        let mut logs = Logs::new(1);
        for _ in 0..10 {
            assert_eq!(logs.admit(), Verdict::Show { dropped: 0 });
        }
        let mut verdicts = (0..FLOOD).map(|_| logs.admit());
        assert!(verdicts.all(|v| v == Verdict::Drop));
        let Verdict::Flood(why) = logs.admit() else {
            panic!("a flood")
        };
        assert!(why.contains("log limit: more than 10000 lines"), "{why}");
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(LINE_MAX);
        let c = cut(&long);
        assert!(
            c.len() < LINE_MAX + 40 && c.ends_with(&format!("[{} more bytes cut]", long.len() - LINE_MAX))
        );
    }
}
