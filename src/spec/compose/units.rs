//! Compose's ways of writing durations (`1m30s`, `1.5s`, `500ms`) and byte sizes (`512m`,
//! `1gb`, `1073741824`) in plumb's notation (`90s`, `1500ms`; bytes as a plain number).

/// A Compose duration as plumb writes one; `None` when it is not a duration, or finer than a
/// millisecond.
pub fn duration(text: &str) -> Option<String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * nanos;
    }
    let millis = total / 1e6;
    if millis.fract() != 0.0 {
        return None;
    }
    let millis = millis as u64;
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
        assert_eq!(duration("ten"), None);
        assert_eq!(bytes("512m"), Some(512 << 20));
        assert_eq!(bytes("1gb"), Some(1 << 30));
        assert_eq!(bytes("1.5G"), Some(3 << 29));
        assert_eq!(bytes("2048"), Some(2048));
        assert_eq!(bytes("2 apples"), None);
    }
}
