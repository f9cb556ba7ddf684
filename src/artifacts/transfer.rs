//! Shared transfer plumbing for sync and fetch: the memory budget that bounds in-flight buffers,
//! abort-on-drop task handles, and resumable streaming reads.

use super::digest::{Digest, Hasher};
use super::error::ArtifactError;
use super::store::Store;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Granularity of the memory budget. Small objects take at least one unit.
const UNIT: u64 = 64 * 1024;

/// Bounds the bytes held in part/object buffers across all concurrent transfers. Every buffer is
/// allocated only after its bytes are reserved here, so peak buffer memory is at most the budget
/// whatever the parallelism.
#[derive(Clone, Debug)]
pub(crate) struct MemoryBudget {
    sem: Arc<Semaphore>,
    units: u32,
}

impl MemoryBudget {
    pub(crate) fn new(bytes: u64) -> Self {
        let units = (bytes / UNIT).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        MemoryBudget {
            sem: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// Reserves room for a buffer of `bytes`. A request larger than the whole budget takes the
    /// whole budget (it then runs alone) rather than waiting forever.
    pub(crate) async fn reserve(&self, bytes: u64) -> OwnedSemaphorePermit {
        let want = bytes.div_ceil(UNIT).clamp(1, u64::from(self.units)) as u32;
        self.sem
            .clone()
            .acquire_many_owned(want)
            .await
            .expect("budget semaphore is never closed")
    }
}

/// A spawned task that is aborted when its handle is dropped, so cancelling a sync (dropping its
/// future) also stops the transfers it started.
pub(crate) struct Task<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> Task<T> {
    pub(crate) fn spawn(fut: impl std::future::Future<Output = T> + Send + 'static) -> Self {
        Task(tokio::spawn(fut))
    }

    pub(crate) async fn join(mut self) -> T {
        match (&mut self.0).await {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("transfer task cancelled unexpectedly: {e}"),
        }
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Streams `path` from `store`, feeding each chunk to `sink`, resuming at the offset reached when
/// the body breaks off (transient errors, with the store's retry policy). Returns the SHA-256 of
/// everything read and checks the length is `size`.
pub(crate) async fn stream_object<F>(
    store: &Store,
    path: &str,
    size: u64,
    if_match: Option<&str>,
    mut sink: F,
) -> Result<Digest, ArtifactError>
where
    F: FnMut(&[u8]) -> Result<(), ArtifactError>,
{
    let policy = store.retry_policy().clone();
    let mut hasher = Hasher::new();
    let mut pos = 0u64;
    let mut failures = 0u32;
    'open: loop {
        if pos == size && size > 0 {
            break;
        }
        let mut body = store.open(path, pos, if_match).await?;
        loop {
            match store.next_chunk(path, &mut body).await {
                Ok(Some(chunk)) => {
                    if pos + chunk.len() as u64 > size {
                        return Err(ArtifactError::ContentMismatch {
                            what: store.location().key(path),
                            expected: format!("{size} bytes"),
                            actual: "more".into(),
                        });
                    }
                    hasher.update(&chunk);
                    sink(&chunk)?;
                    pos += chunk.len() as u64;
                }
                Ok(None) => break 'open,
                Err(e) if e.is_transient() && failures + 1 < policy.max_attempts => {
                    tracing::debug!(%path, pos, error = %e, "stream broke off, resuming");
                    tokio::time::sleep(policy.backoff(failures)).await;
                    failures += 1;
                    continue 'open;
                }
                Err(e) => return Err(e),
            }
        }
    }
    if pos != size {
        return Err(ArtifactError::ContentMismatch {
            what: store.location().key(path),
            expected: format!("{size} bytes"),
            actual: format!("{pos} bytes"),
        });
    }
    Ok(hasher.finish())
}
