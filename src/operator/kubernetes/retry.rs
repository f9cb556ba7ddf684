//! Quick retries of idempotent API requests (server-side apply, get, list, delete), so that one
//! 500 or a dropped connection costs milliseconds instead of a whole reconcile and its backoff.

use std::future::Future;
use std::time::Duration;

/// Attempts per request, and the pause before each retry.
const PAUSES: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(150),
    Duration::from_millis(400),
];

/// Whether a request may succeed if simply sent again.
pub fn transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code >= 500 || status.code == 409 || status.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs `request` until it succeeds, fails for good, or the attempts are spent. Only for
/// requests whose repetition is harmless.
pub async fn idempotent<T, F, Fut>(mut request: F) -> kube::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = kube::Result<T>>,
{
    let mut pauses = PAUSES.iter();
    loop {
        match request().await {
            Err(err) if transient(&err) => match pauses.next() {
                Some(pause) => tokio::time::sleep(*pause).await,
                None => return Err(err),
            },
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("injected", "InternalError").with_code(code),
        ))
    }

    #[tokio::test]
    async fn retries_transient_errors_then_succeeds() {
        let calls = AtomicU32::new(0);
        let result = idempotent(|| async {
            if calls.fetch_add(1, Ordering::Relaxed) < 2 {
                Err(api_error(500))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn gives_up_on_permanent_errors_at_once() {
        let calls = AtomicU32::new(0);
        let result: kube::Result<()> = idempotent(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(api_error(422))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn stops_after_the_last_attempt() {
        let calls = AtomicU32::new(0);
        let result: kube::Result<()> = idempotent(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(api_error(503))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 4);
    }
}
