//! Fault injection: status codes, latency and matching rules, drawn from a seeded RNG so a test
//! run is reproducible. Reachability (refusing connections) lives in `server`.

use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// SplitMix64: tiny, seedable, good enough for fault draws and uids.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator with this seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One fault rule. A request matching `verb` and `path` (all requests when both are absent) is,
/// with probability `fraction`, delayed by `latency_ms` and then failed with `status` (if set).
/// `times` limits how many requests the rule hits before it disarms.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// HTTP status to fail with: 409, 429, 500 or 503 (or any other 4xx/5xx). None: only latency.
    #[serde(default)]
    pub status: Option<u16>,
    /// Probability in [0, 1] that a matching request is hit; default 1.
    #[serde(default = "one")]
    pub fraction: f64,
    /// Kubernetes verb to match (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`).
    #[serde(default)]
    pub verb: Option<String>,
    /// Regular expression the request path must match (e.g. `/deployments`).
    #[serde(default)]
    pub path: Option<String>,
    /// Added latency in milliseconds.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Disarm after this many hits.
    #[serde(default)]
    pub times: Option<u64>,
}

fn one() -> f64 {
    1.0
}

impl FaultRule {
    /// Fail every matching request with `status`.
    pub fn status(status: u16) -> Self {
        FaultRule {
            status: Some(status),
            fraction: 1.0,
            ..Default::default()
        }
    }

    /// Only delay matching requests.
    pub fn latency(latency: Duration) -> Self {
        FaultRule {
            latency_ms: Some(latency.as_millis() as u64),
            fraction: 1.0,
            ..Default::default()
        }
    }

    /// Hit only this fraction of matching requests.
    pub fn fraction(mut self, fraction: f64) -> Self {
        self.fraction = fraction;
        self
    }

    /// Only requests with this verb.
    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.to_string());
        self
    }

    /// Only requests whose path matches this regular expression.
    pub fn path(mut self, regex: &str) -> Self {
        self.path = Some(regex.to_string());
        self
    }

    /// Disarm after `n` hits.
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    /// Parse the CLI form `status=503,fraction=0.1,verb=list,path=REGEX,latency-ms=100,times=3`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut rule = FaultRule {
            fraction: 1.0,
            ..Default::default()
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("fault attribute without '=': {part}")))?;
            let bad = |e: &dyn std::fmt::Display| Error::Config(format!("fault {k}={v}: {e}"));
            match k {
                "status" => rule.status = Some(v.parse().map_err(|e| bad(&e))?),
                "fraction" => rule.fraction = v.parse().map_err(|e| bad(&e))?,
                "verb" => rule.verb = Some(v.to_string()),
                "path" => rule.path = Some(v.to_string()),
                "latency-ms" => rule.latency_ms = Some(v.parse().map_err(|e| bad(&e))?),
                "times" => rule.times = Some(v.parse().map_err(|e| bad(&e))?),
                other => return Err(Error::Config(format!("unknown fault attribute {other}"))),
            }
        }
        rule.check()?;
        Ok(rule)
    }

    /// Validate the rule (regex compiles, fraction in range).
    pub fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.fraction) {
            return Err(Error::Config(format!(
                "fraction {} not in [0, 1]",
                self.fraction
            )));
        }
        if let Some(p) = &self.path {
            Regex::new(p).map_err(|e| Error::Config(format!("fault path regex: {e}")))?;
        }
        if let Some(s) = self.status
            && !(400..=599).contains(&s)
        {
            return Err(Error::Config(format!("fault status {s} is not 4xx/5xx")));
        }
        Ok(())
    }
}

/// The active rules plus the RNG they draw from.
#[derive(Debug)]
pub struct Faults {
    rules: Vec<(FaultRule, Option<Regex>)>,
    rng: Rng,
}

/// What to do to one request.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Delay before answering.
    pub latency: Duration,
    /// Fail with this status instead of serving.
    pub status: Option<u16>,
}

impl Faults {
    /// No rules, this seed.
    pub fn new(seed: u64) -> Self {
        Faults {
            rules: Vec::new(),
            rng: Rng::new(seed),
        }
    }

    /// Replace the rules and reseed.
    pub fn set(&mut self, rules: Vec<FaultRule>, seed: Option<u64>) -> Result<()> {
        let mut compiled = Vec::new();
        for r in rules {
            r.check()?;
            let re = r
                .path
                .as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| Error::Config(e.to_string()))?;
            compiled.push((r, re));
        }
        self.rules = compiled;
        if let Some(seed) = seed {
            self.rng = Rng::new(seed);
        }
        Ok(())
    }

    /// The rules still armed.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.iter().map(|(r, _)| r.clone()).collect()
    }

    /// Decide for one request; every matching rule draws once, latencies add up, the first
    /// status wins.
    pub fn decide(&mut self, verb: &str, path: &str) -> Decision {
        let mut d = Decision::default();
        for (rule, re) in self.rules.iter_mut() {
            if rule.times == Some(0) {
                continue;
            }
            if rule.verb.as_deref().is_some_and(|v| v != verb) {
                continue;
            }
            if re.as_ref().is_some_and(|re| !re.is_match(path)) {
                continue;
            }
            if self.rng.next_f64() >= rule.fraction {
                continue;
            }
            if let Some(t) = rule.times.as_mut() {
                *t -= 1;
            }
            d.latency += Duration::from_millis(rule.latency_ms.unwrap_or(0));
            if d.status.is_none() {
                d.status = rule.status;
            }
        }
        d
    }
}

/// The `Status` error an injected status code answers with.
pub fn injected_error(status: u16) -> Error {
    let (reason, message) = match status {
        409 => ("Conflict", "injected fault: conflict"),
        429 => (
            "TooManyRequests",
            "injected fault: too many requests, please try again later",
        ),
        500 => ("InternalError", "injected fault: internal error"),
        503 => (
            "ServiceUnavailable",
            "injected fault: the server is currently unable to handle the request",
        ),
        504 => ("Timeout", "injected fault: timeout"),
        _ => ("InternalError", "injected fault"),
    };
    let mut e = Error::api(status, reason, message);
    if status == 429
        && let Error::Api { details, .. } = &mut e
    {
        *details = Some(serde_json::json!({"retryAfterSeconds": 1}));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_fraction_is_deterministic_and_roughly_right() {
        let run = || {
            let mut f = Faults::new(7);
            f.set(vec![FaultRule::status(503).fraction(0.3)], None)
                .unwrap();
            (0..1000)
                .map(|_| f.decide("get", "/api/v1/pods").status.is_some())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|h| **h).count();
        assert!((200..400).contains(&hits), "{hits}");
    }

    #[test]
    fn parse_cli_form() {
        let r = FaultRule::parse("status=429,verb=list,path=/deployments,times=2").unwrap();
        assert_eq!(r.status, Some(429));
        assert_eq!(r.times, Some(2));
        assert!(FaultRule::parse("status=200").is_err());
    }
}
