//! Kubernetes resource quantities (`"500m"`, `"16"`, `"64Gi"`) as integers the planner can add.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "invalid quantity {0:?}: expected a number with an optional suffix such as m, k, M, G, Ki, Mi, Gi, Ti"
)]
pub struct QuantityError(pub String);

/// Parses a quantity into thousandths of its unit (millicores for CPU), rounding up.
pub fn parse_milli(text: &str) -> Result<u64, QuantityError> {
    let (number, factor) = split(text)?;
    scale(number, factor * 1000.0, text)
}

/// Parses a quantity into whole units (bytes for memory), rounding up.
pub fn parse_units(text: &str) -> Result<u64, QuantityError> {
    let (number, factor) = split(text)?;
    scale(number, factor, text)
}

/// Formats bytes for people: `64Gi`, `512Mi`, or a plain count when it is not a round binary size.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (suffix, size) in UNITS {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{suffix}", bytes / size);
        }
    }
    bytes.to_string()
}

/// Formats millicores for people: `4`, `500m`.
pub fn format_milli(milli: u64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

fn split(text: &str) -> Result<(f64, f64), QuantityError> {
    let trimmed = text.trim();
    let bad = || QuantityError(text.to_string());
    let suffix_at = trimmed
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(suffix_at);
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    Ok((value, factor))
}

fn scale(number: f64, factor: f64, text: &str) -> Result<u64, QuantityError> {
    let scaled = (number * factor).ceil();
    if scaled > u64::MAX as f64 {
        return Err(QuantityError(text.to_string()));
    }
    Ok(scaled as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_millicores() {
        assert_eq!(parse_milli("500m"), Ok(500));
        assert_eq!(parse_milli("2"), Ok(2000));
        assert_eq!(parse_milli("1.5"), Ok(1500));
        assert_eq!(parse_milli("0.1"), Ok(100));
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(parse_units("64Gi"), Ok(64 << 30));
        assert_eq!(parse_units("512Mi"), Ok(512 << 20));
        assert_eq!(parse_units("1G"), Ok(1_000_000_000));
        assert_eq!(parse_units("1e3"), Ok(1000));
        assert_eq!(format_bytes(64 << 30), "64Gi");
        assert_eq!(format_milli(2500), "2500m");
        assert_eq!(format_milli(4000), "4");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_units("lots").is_err());
        assert!(parse_units("12Qi").is_err());
        assert!(parse_units("-1").is_err());
        assert!(parse_units("").is_err());
    }
}
