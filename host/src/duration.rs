//! Durations as people write them in pipeline files and on the command line, in Go's
//! syntax as the connector's own parameters take them: `500ms`, `5s`, `1m30s`, `2h`.

use std::time::Duration;

/// Parses one or more `<number><unit>` parts (units `ns`, `us`, `ms`, `s`, `m`, `h`),
/// refusing anything else and any total past `u64` nanoseconds' range.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 500ms, 5s, 1m30s or 2h");
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let nanos_per: u64 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = n
            .checked_mul(nanos_per)
            .ok_or_else(|| format!("{s:?} is too long a duration"))?;
        total = total
            .checked_add(Duration::from_nanos(part))
            .filter(|t| t.as_nanos() <= u128::from(u64::MAX))
            .ok_or_else(|| format!("{s:?} is too long a duration"))?;
    }
    Ok(total)
}

/// `250ms`, `30s`, `2m`, `1m30s`: the shortest exact way to write it.
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
    fn go_durations_parse_and_overflow_is_refused() {
        let ms = Duration::from_millis;
        assert_eq!(parse("250ms"), Ok(ms(250)));
        assert_eq!(parse("2m"), Ok(ms(120_000)));
        assert_eq!(parse("1m30s"), Ok(ms(90_000)));
        assert!(parse("1h0m0.5s").is_err(), "no fractions");
        assert!(parse("5").is_err() && parse("").is_err() && parse("s").is_err() && parse("5 s").is_err());
        assert!(parse("99999999999h").unwrap_err().contains("too long"));
        assert!(parse("18446744073709551615s").unwrap_err().contains("too long"));
    }

    #[test]
    fn shown_as_written() {
        assert_eq!(show(Duration::from_secs(30)), "30s");
        assert_eq!(show(Duration::from_secs(120)), "2m");
        assert_eq!(show(Duration::from_millis(250)), "250ms");
        assert_eq!(show(Duration::from_secs(3600)), "1h");
        assert_eq!(show(Duration::from_secs(90)), "1m30s");
    }
}
