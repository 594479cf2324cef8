//! Durations as people write them, in Go's syntax (Conduit's parameters are Go
//! durations): `500ms`, `1.5s`, `1m30s`, `2h`, a bare `0`. One grammar for the
//! connector's parameters, pipeline files and the host's command line.

use std::time::Duration;

const UNITS: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a sequence of decimal numbers, each with an optional fraction and a unit
/// (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`). Signs are refused (a wait is never negative),
/// and so is any total past `u64` nanoseconds (about 584 years). Digits of a fraction
/// finer than a nanosecond are dropped, as Go does.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (examples: 500ms, 1.5s, 1m30s, 2h)");
    let too_long = || format!("{s:?} is too long a duration");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let (whole, fraction, after) = number(rest).ok_or_else(bad)?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let per = UNITS
            .iter()
            .find(|(name, _)| *name == &after[..unit_len])
            .map(|(_, n)| *n)
            .ok_or_else(bad)?;
        let part = whole
            .parse::<u64>()
            .ok()
            .and_then(|w| w.checked_mul(per))
            .and_then(|w| w.checked_add(fraction_of(fraction, per)))
            .ok_or_else(too_long)?;
        total = total.checked_add(part).ok_or_else(too_long)?;
        rest = &after[unit_len..];
    }
    Ok(Duration::from_nanos(total))
}

/// `parse`, refusing zero: for an interval or a limit, where zero would never end or never
/// let anything run.
pub fn parse_positive(s: &str) -> Result<Duration, String> {
    match parse(s)? {
        d if d.is_zero() => Err(format!("{s:?} must be more than zero")),
        d => Ok(d),
    }
}

/// The digits before and after a decimal point at the start of `s` (at least one digit
/// in all), and what follows.
fn number(s: &str) -> Option<(&str, &str, &str)> {
    let digits = |t: &str| t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let w = digits(s);
    let (whole, rest) = s.split_at(w);
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(r) => r.split_at(digits(r)),
        None => ("", rest),
    };
    (!(whole.is_empty() && fraction.is_empty())).then_some((
        if whole.is_empty() { "0" } else { whole },
        fraction,
        rest,
    ))
}

/// Nanoseconds of the decimal fraction `.digits` of a unit of `per` nanoseconds.
fn fraction_of(digits: &str, per: u64) -> u64 {
    let (mut n, mut scale) = (0u128, 1u128);
    for d in digits.bytes().take(19) {
        n = n * 10 + u128::from(d - b'0');
        scale *= 10;
    }
    (n * u128::from(per) / scale) as u64
}

/// `250ms`, `30s`, `2m`, `1m30s`: the shortest exact way to write it, to the millisecond.
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    let whole = |unit: u128| ms > 0 && ms.is_multiple_of(unit);
    match ms {
        _ if whole(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if whole(60_000) => format!("{}m", ms / 60_000),
        _ if whole(1000) && ms > 60_000 => format!("{}m{}s", ms / 60_000, ms % 60_000 / 1000),
        _ if whole(1000) || ms == 0 => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let ms = Duration::from_millis;
        assert_eq!(parse("250ms"), Ok(ms(250)));
        assert_eq!(parse("10s"), Ok(ms(10_000)));
        assert_eq!(parse("2m"), Ok(ms(120_000)));
        assert_eq!(parse("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse("1.5s"), Ok(ms(1500)));
        assert_eq!(parse(".5s"), Ok(ms(500)));
        assert_eq!(parse("1.s"), Ok(ms(1000)));
        assert_eq!(parse("1h0m0.5s"), Ok(ms(3_600_500)));
        assert_eq!(parse("1.0000000001s"), Ok(Duration::from_nanos(1_000_000_000)));
        assert_eq!(parse("3µs"), Ok(Duration::from_micros(3)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn anything_else_is_refused_and_overflow_too() {
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "10x",
            "-1s",
            "+1s",
            "1.2.3s",
            ".s",
            "ten seconds",
            "1m30",
        ] {
            assert!(parse(bad).unwrap_err().contains("is not a duration"), "{bad}");
        }
        for long in [
            "99999999999h",
            "18446744073709551615s",
            "584y",
            "6000000h",
            "18446744073709551616ns",
        ] {
            assert!(parse(long).is_err(), "{long}");
        }
        assert!(parse("99999999999h").unwrap_err().contains("too long"));
        assert_eq!(
            parse("18446744073709551615ns"),
            Ok(Duration::from_nanos(u64::MAX))
        );
    }

    #[test]
    fn a_positive_duration_is_not_zero() {
        assert_eq!(parse_positive("1ms"), Ok(Duration::from_millis(1)));
        for zero in ["0", "0s", "0h0m", "0.0000000001s"] {
            assert!(
                parse_positive(zero).unwrap_err().contains("more than zero"),
                "{zero}"
            );
        }
        assert!(parse_positive("1 s").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn shown_as_written() {
        assert_eq!(show(Duration::from_secs(30)), "30s");
        assert_eq!(show(Duration::from_secs(120)), "2m");
        assert_eq!(show(Duration::from_millis(250)), "250ms");
        assert_eq!(show(Duration::from_secs(3600)), "1h");
        assert_eq!(show(Duration::from_secs(90)), "1m30s");
        assert_eq!(show(Duration::ZERO), "0s");
    }
}
