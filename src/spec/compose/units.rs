//! Compose's ways of writing durations (`1m30s`, `1.5s`, `500ms`) and byte sizes (`512m`,
//! `1gb`, `1073741824`) in plumb's notation (`90s`, `1500ms`; bytes as a plain number).

/// A Compose duration as plumb writes one; `None` when it is not a duration, or finer than a
/// millisecond.
pub fn duration(text: &str) -> Option<String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    // Whole and fractional digits in integer nanoseconds: `1.001s` is exactly 1,001 ms.
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (whole, fraction) = rest[..number_end].split_once('.').unwrap_or((&rest[..number_end], ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || fraction.len() > 9 {
            return None;
        }
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_end] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_end..];
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        let scale = 10u128.pow(fraction.len() as u32);
        let fraction: u128 = if fraction.is_empty() { 0 } else { fraction.parse().ok()? };
        nanos = nanos
            .checked_add(whole.checked_mul(unit)?)?
            .checked_add(fraction * unit / scale)?;
    }
    // Go's durations (Compose's) end at 2^63 nanoseconds, some 292 years.
    if !nanos.is_multiple_of(1_000_000) || nanos > i64::MAX as u128 {
        return None;
    }
    let millis = nanos / 1_000_000;
    Some(if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    })
}

/// A Compose byte size as a number of bytes (Docker's units are powers of 1024: `m` is MiB).
pub fn bytes(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let number_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let number: f64 = lower[..number_end].parse().ok()?;
    let unit: f64 = match &lower[number_end..] {
        "" | "b" => 1.0,
        "k" | "kb" => 1024.0,
        "m" | "mb" => 1024.0 * 1024.0,
        "g" | "gb" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * unit) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_as_compose_writes_them() {
        assert_eq!(duration("1m30s").as_deref(), Some("90s"));
        assert_eq!(duration("1.5s").as_deref(), Some("1500ms"));
        assert_eq!(duration("10s").as_deref(), Some("10s"));
        assert_eq!(duration("500ms").as_deref(), Some("500ms"));
        assert_eq!(duration("1h").as_deref(), Some("3600s"));
        assert_eq!(duration("10us"), None);
        assert_eq!(duration("1.001s").as_deref(), Some("1001ms"));
        assert_eq!(duration("99999999999999999999h"), None);
        assert_eq!(duration("ten"), None);
        assert_eq!(bytes("512m"), Some(512 << 20));
        assert_eq!(bytes("1gb"), Some(1 << 30));
        assert_eq!(bytes("1.5G"), Some(3 << 29));
        assert_eq!(bytes("2048"), Some(2048));
        assert_eq!(bytes("2 apples"), None);
    }
}
