//! Retries with capped exponential backoff and full jitter. The SDK's own retry layer is turned
//! off (see `store.rs`) so that every request, including streamed bodies that break mid-way, goes
//! through this one policy and tests can see exactly what is retried.

use super::error::ArtifactError;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often and how patiently to retry transient failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (1 = no retry).
    pub max_attempts: u32,
    /// Backoff cap of the first retry; doubles per attempt.
    pub base_delay: Duration,
    /// Upper bound on any single backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // 10 attempts with a 100 ms base and 5 s cap ride out ~20 s of throttling per request.
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `retry` (0-based): uniform in `[0, min(max, base * 2^retry)]`
    /// ("full jitter"), so that many parallel requests throttled together do not retry together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max_delay);
        let nanos = cap.as_nanos() as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(next_random() % (nanos + 1))
    }

    /// Runs `op` until it succeeds, fails permanently, or attempts run out.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, ArtifactError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ArtifactError>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt + 1 < self.max_attempts.max(1) => {
                    let delay = self.backoff(attempt);
                    tracing::debug!(%what, attempt, ?delay, error = %e, "transient failure, retrying");
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A tiny splitmix64 generator: jitter needs spread, not cryptographic quality, and this avoids
/// a dependency.
fn next_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut seed = STATE.load(Ordering::Relaxed);
    if seed == 0 {
        seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id());
    }
    let next = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    STATE.store(next, Ordering::Relaxed);
    let mut z = next;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::error::S3Error;
    use std::sync::atomic::AtomicU32;

    fn s3(transient: bool) -> ArtifactError {
        ArtifactError::S3(S3Error {
            operation: "GetObject",
            bucket: "b".into(),
            key: "k".into(),
            status: Some(if transient { 503 } else { 403 }),
            code: None,
            message: "x".into(),
            transient,
        })
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        };
        for retry in 0..30 {
            let cap =
                Duration::from_millis(10 * (1u64 << retry.min(20))).min(Duration::from_millis(50));
            assert!(p.backoff(retry) <= cap);
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| p.backoff(3)).collect();
        assert!(samples.len() > 1, "jitter must spread delays");
    }

    #[tokio::test]
    async fn retries_transient_until_success_and_stops_on_permanent() {
        let p = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let calls = AtomicU32::new(0);
        let out = p
            .run("t", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(s3(true))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let out: Result<(), _> = p
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(s3(false))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        calls.store(0, Ordering::SeqCst);
        let out: Result<(), _> = p
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(s3(true))
            })
            .await;
        assert!(out.unwrap_err().is_transient());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
