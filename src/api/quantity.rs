//! Kubernetes resource quantities (`"500m"`, `"16"`, `"64Gi"`) as integers the planner can add.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error(
        "invalid quantity {0:?}: expected a number with an optional suffix such as m, k, M, G, Ki, Mi, Gi, Ti"
    )]
    Invalid(String),
    /// Finite but beyond any real machine: sums of such values would overflow the planner's
    /// integers and costs.
    #[error("quantity {text:?} is too large: at most {max} is accepted")]
    TooLarge { text: String, max: &'static str },
}

/// Largest CPU quantity, in millicores: a billion cores.
pub const MAX_MILLI: u64 = 1_000_000_000_000;
/// Largest memory quantity, in bytes: 1 EiB.
pub const MAX_UNITS: u64 = 1 << 60;

/// The Kubernetes quantity grammar this module parses (without signs, `n`, `u` or `E`), for the
/// CRD schema: a string that does not match is rejected at `kubectl apply`.
pub const PATTERN: &str =
    r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,2}|m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$";

/// Parses a quantity into thousandths of its unit (millicores for CPU), rounding up; at most
/// `MAX_MILLI`.
pub fn parse_milli(text: &str) -> Result<u64, QuantityError> {
    let (number, factor) = split(text)?;
    scale(number, factor * 1000.0, text, MAX_MILLI, "1e9 cores")
}

/// Parses a quantity into whole units (bytes for memory), rounding up; at most `MAX_UNITS`.
pub fn parse_units(text: &str) -> Result<u64, QuantityError> {
    let (number, factor) = split(text)?;
    scale(number, factor, text, MAX_UNITS, "1Ei")
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
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{suffix}", bytes / size);
        }
    }
    bytes.to_string()
}

/// Formats millicores for people: `4`, `500m`.
pub fn format_milli(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

fn split(text: &str) -> Result<(f64, f64), QuantityError> {
    let trimmed = text.trim();
    let bad = || QuantityError::Invalid(text.to_string());
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

fn scale(
    number: f64,
    factor: f64,
    text: &str,
    max: u64,
    max_text: &'static str,
) -> Result<u64, QuantityError> {
    let scaled = (number * factor).ceil();
    if !scaled.is_finite() || scaled > max as f64 {
        return Err(QuantityError::TooLarge {
            text: text.to_string(),
            max: max_text,
        });
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
        assert!(parse_units("nan").is_err());
        assert!(parse_units("inf").is_err());
    }

    #[test]
    fn absurd_sizes_are_named_not_wrapped() {
        assert_eq!(parse_units("1Ei").ok(), None);
        assert_eq!(parse_units("1024Pi"), Ok(MAX_UNITS));
        assert!(matches!(
            parse_units("1e300"),
            Err(QuantityError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_milli("1e10"),
            Err(QuantityError::TooLarge { .. })
        ));
        assert_eq!(parse_milli("1e9"), Ok(MAX_MILLI));
        assert!(
            parse_units("1e300")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
    }

    struct PatternCheck(jsonschema::Validator);

    impl PatternCheck {
        fn is_match(&self, text: &str) -> bool {
            self.0.is_valid(&serde_json::json!(text))
        }
    }

    #[test]
    fn the_schema_pattern_accepts_what_the_parser_reads() {
        // The pattern as the CRD schema carries it, checked by a JSON-Schema engine.
        let schema = serde_json::json!({"type": "string", "pattern": PATTERN});
        let validator = jsonschema::validator_for(&schema).unwrap();
        let pattern = PatternCheck(validator);
        for good in ["4", "500m", "16Gi", "1.5", ".5", "1e3", "2Ti", "64000m"] {
            assert!(pattern.is_match(good), "{good}");
            assert!(parse_units(good).is_ok(), "{good}");
        }
        for bad in [
            "", "-1", "nan", "inf", "1e400x", "12Qi", "1 Gi", "1Gi\n", "0x10",
        ] {
            assert!(!pattern.is_match(bad), "{bad}");
        }
    }
}
