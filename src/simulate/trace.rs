//! Demand traces: `timestamp,value` CSV rows, scaled to a peak and sampled at a fixed step.
//! Parsing is pure (text in, trace or an error naming the line out); reading the file is the
//! caller's job.

use crate::estate::printable;
use std::path::{Path, PathBuf};

/// Earliest and latest timestamps a trace may hold: years 0000 to 9999, as the
/// `YYYY-MM-DD HH:MM:SS` form can write them. Keeping Unix seconds in this range keeps every
/// difference and step arithmetic far from the edges of `i64`.
pub const EARLIEST_TIMESTAMP: i64 = -62_167_219_200;
pub const LATEST_TIMESTAMP: i64 = 253_402_300_799;

/// Steps a simulation may take by default (`--max-steps` raises it): about 1.9 years at the
/// default step of 60 seconds. Memory is linear in steps, so this bounds it too.
pub const DEFAULT_MAX_STEPS: u64 = 1_000_000;

/// A problem with a trace, naming the file and line. File name and message are escaped
/// (`printable`): both can carry text from the input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{}{}: {}",
    printable(&file.display().to_string()),
    line.map(|l| format!(":{l}")).unwrap_or_default(),
    printable(message)
)]
pub struct TraceError {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub message: String,
}

/// Demand samples at strictly increasing times.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// `(unix seconds, value)`, strictly increasing in time.
    pub points: Vec<(i64, f64)>,
}

/// Parses CSV text with a `timestamp,value` header. Timestamps are `YYYY-MM-DD HH:MM:SS` (UTC),
/// RFC 3339 with `Z`, or Unix seconds; values are finite and not negative. `file` only names the
/// source in errors.
pub fn parse_trace(text: &str, file: &Path) -> Result<Trace, TraceError> {
    let err = |line: Option<u64>, message: String| TraceError {
        file: file.to_path_buf(),
        line,
        message,
    };
    if text.trim().is_empty() {
        return Err(err(
            None,
            "the trace is empty; expected a timestamp,value header and at least two rows".into(),
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| err(Some(1), format!("cannot read the header: {e}")))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(ts_col), Some(value_col)) = (column("timestamp"), column("value")) else {
        return Err(err(
            Some(1),
            format!(
                "expected a header with columns timestamp,value, found {:?}",
                headers.iter().collect::<Vec<_>>().join(",")
            ),
        ));
    };
    let mut points: Vec<(i64, f64)> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line());
            err(line, format!("malformed CSV row: {e}"))
        })?;
        let line = record.position().map(|p| p.line());
        let ts_text = record.get(ts_col).unwrap_or("");
        let value_text = record.get(value_col).unwrap_or("");
        let t = parse_timestamp(ts_text).ok_or_else(|| {
            err(
                line,
                format!(
                    "timestamp {ts_text:?} is not YYYY-MM-DD HH:MM:SS, RFC 3339 or Unix seconds"
                ),
            )
        })?;
        if !(EARLIEST_TIMESTAMP..=LATEST_TIMESTAMP).contains(&t) {
            return Err(err(
                line,
                format!(
                    "timestamp {ts_text:?} is outside the years 0000 to 9999 \
                     (Unix seconds {EARLIEST_TIMESTAMP} to {LATEST_TIMESTAMP})"
                ),
            ));
        }
        let value: f64 = value_text
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                err(
                    line,
                    format!("value {value_text:?} is not a finite non-negative number"),
                )
            })?;
        if let Some(&(previous, _)) = points.last()
            && t <= previous
        {
            return Err(err(
                line,
                format!("timestamp {ts_text} does not come after the previous row's"),
            ));
        }
        points.push((t, value));
    }
    if points.len() < 2 {
        return Err(err(
            None,
            format!(
                "a trace needs at least two rows after the header, found {}",
                points.len()
            ),
        ));
    }
    Ok(Trace { points })
}

impl Trace {
    pub fn start(&self) -> i64 {
        self.points[0].0
    }

    pub fn end(&self) -> i64 {
        self.points[self.points.len() - 1].0
    }

    pub fn peak(&self) -> f64 {
        self.points.iter().map(|p| p.1).fold(0.0, f64::max)
    }

    /// The trace with values scaled so that its peak is `peak`. Each value is divided by the
    /// trace's peak before it is multiplied, so that no ratio overflows: a trace peaking at a
    /// subnormal `1e-320` would otherwise give an infinite factor, and `0 × ∞` is NaN.
    pub fn scaled_to(&self, peak: f64) -> Trace {
        let own_peak = self.peak();
        let scale = |v: f64| {
            if own_peak > 0.0 {
                (v / own_peak) * peak
            } else {
                0.0
            }
        };
        Trace {
            points: self.points.iter().map(|&(t, v)| (t, scale(v))).collect(),
        }
    }

    /// How many samples `sample(step)` gives, computed without overflow: `None` when the count
    /// does not fit a `u64` (it cannot, for timestamps parsed by `parse_trace`). Check it against
    /// a cap before sampling: memory is linear in it.
    pub fn step_count(&self, step: i64) -> Option<u64> {
        let span = self.end().checked_sub(self.start())?;
        let steps = span.checked_div(step.max(1))?.checked_add(1)?;
        u64::try_from(steps).ok()
    }

    /// Values every `step` seconds from the first timestamp to the last, interpolated linearly
    /// between rows (a 30-minute bucket becomes a ramp, not a staircase).
    pub fn sample(&self, step: i64) -> Vec<f64> {
        let step = step.max(1);
        // Traces from `parse_trace` always have a count; callers cap it before sampling.
        let n = self
            .step_count(step)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        let mut out = Vec::with_capacity(n);
        let mut segment = 0;
        for k in 0..n {
            let t = self.start() + k as i64 * step;
            while segment + 2 < self.points.len() && self.points[segment + 1].0 <= t {
                segment += 1;
            }
            let (t0, v0) = self.points[segment];
            let (t1, v1) = self.points[segment + 1];
            let f = ((t as f64 - t0 as f64) / (t1 as f64 - t0 as f64)).clamp(0.0, 1.0);
            out.push(v0 + (v1 - v0) * f);
        }
        out
    }
}

/// Unix seconds from `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DDTHH:MM:SSZ` or an integer.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Some(seconds);
    }
    let text = text.strip_suffix('Z').unwrap_or(text);
    let b = text.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b' ' || b[10] == b'T') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// `YYYY-MM-DD HH:MM:SS` of Unix seconds, for tables and CSV.
pub fn format_timestamp(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms for the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Trace, TraceError> {
        parse_trace(text, Path::new("t.csv"))
    }

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp("2014-07-01 00:30:00"), Some(1_404_174_600));
        assert_eq!(parse_timestamp("2014-07-01T00:30:00Z"), Some(1_404_174_600));
        assert_eq!(format_timestamp(1_404_174_600), "2014-07-01 00:30:00");
        assert_eq!(parse_timestamp("2014-02-30 00:00:00"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn errors_name_the_line() {
        let e =
            parse("timestamp,value\n2014-07-01 00:00:00,1\n2014-07-01 00:30:00,x\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        let e =
            parse("timestamp,value\n2014-07-01 00:30:00,1\n2014-07-01 00:00:00,2\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.to_string().starts_with("t.csv:3: "), "{e}");
        let e = parse("time,v\n1,2\n").unwrap_err();
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn scaling_a_subnormal_peak_keeps_the_shape() {
        // 1 / 1e-320 overflows to infinity, and 0 × ∞ is NaN: scale by ratios instead.
        let t = Trace {
            points: vec![(0, 0.0), (60, 1e-320), (120, 5e-321)],
        };
        let scaled = t.scaled_to(500.0);
        let values: Vec<f64> = scaled.points.iter().map(|p| p.1).collect();
        assert!(values.iter().all(|v| v.is_finite()), "{values:?}");
        assert_eq!(values[0], 0.0);
        assert_eq!(values[1], 500.0);
        assert!((values[2] - 250.0).abs() < 1.0, "{values:?}");
        let huge = Trace {
            points: vec![(0, 1e308), (60, f64::MAX)],
        };
        assert_eq!(huge.scaled_to(10.0).peak(), 10.0);
    }

    #[test]
    fn step_counts_never_overflow() {
        let edges = Trace {
            points: vec![(i64::MIN, 1.0), (i64::MAX, 1.0)],
        };
        assert_eq!(edges.step_count(1), None);
        assert!(edges.sample(1).is_empty());
        let t = Trace {
            points: vec![(EARLIEST_TIMESTAMP, 1.0), (LATEST_TIMESTAMP, 1.0)],
        };
        assert_eq!(
            t.step_count(1),
            Some((LATEST_TIMESTAMP - EARLIEST_TIMESTAMP + 1) as u64)
        );
        assert_eq!(t.step_count(i64::MAX), Some(1));
        assert_eq!(t.step_count(0), t.step_count(1));
    }

    #[test]
    fn timestamps_outside_years_0000_to_9999_are_named() {
        let e = parse(&format!("timestamp,value\n0,1\n{},2\n", i64::MAX)).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("outside the years"), "{e}");
        let ok = parse("timestamp,value\n0000-01-01 00:00:00,1\n9999-12-31 23:59:59,2\n").unwrap();
        assert_eq!(ok.start(), EARLIEST_TIMESTAMP);
        assert_eq!(ok.end(), LATEST_TIMESTAMP);
        assert!(parse("").unwrap_err().message.contains("empty"));
    }

    #[test]
    fn errors_escape_control_characters() {
        let e = parse_trace("timestamp,value\n0,\u{1b}[31m\n", Path::new("a\u{7}.csv"))
            .unwrap_err()
            .to_string();
        assert!(!e.chars().any(|c| c.is_control()), "{e:?}");
        assert!(e.starts_with("a\\u{7}.csv:2: "), "{e}");
    }

    #[test]
    fn samples_interpolate_linearly() {
        let t = parse("timestamp,value\n0,0\n1800,1800\n3600,0\n").unwrap();
        let s = t.sample(600);
        assert_eq!(s, vec![0.0, 600.0, 1200.0, 1800.0, 1200.0, 600.0, 0.0]);
        assert_eq!(t.scaled_to(100.0).peak(), 100.0);
    }
}
