//! Group commit for planning: reconciles that want a decision while another is being made wait
//! their turn, and the first to get it decides for everyone waiting, in one pass.
//!
//! Planning looks at the whole estate, so one pass costs about the same for one deployment as
//! for fifty. Deciding one deployment at a time made that cost O(N) per reconcile; a batch pays
//! it once for every reconcile that queued behind the previous pass. Passes are also spaced at
//! least `min_interval` apart, so that under a stream of requests each pass gathers what
//! arrived meanwhile instead of starting as soon as one request is there; a request that finds
//! the planner idle is decided at once. The spacing also grows with the cost of a pass, so that
//! passes take at most `share` of the time: a large estate is planned in fewer, larger batches
//! instead of keeping a core busy.

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A queue of requests decided in batches by `run`.
pub struct Batcher<Request, Outcome> {
    pending: Mutex<Vec<(Request, oneshot::Sender<Outcome>)>>,
    /// Fair (FIFO): whoever holds it runs the next pass; everyone else waits. It holds when
    /// the next pass may start.
    turn: tokio::sync::Mutex<Option<Instant>>,
    min_interval: Duration,
    share: f64,
}

/// The pass that held this request panicked: the request has no outcome.
#[derive(Debug, thiserror::Error)]
#[error("the planning pass for this request failed")]
pub struct Abandoned;

impl<Request, Outcome> Batcher<Request, Outcome> {
    /// A queue whose passes start at least `min_interval` apart, and far enough apart that
    /// passes take at most `share` (in (0, 1]) of the time.
    pub fn new(min_interval: Duration, share: f64) -> Self {
        Batcher {
            pending: Mutex::new(Vec::new()),
            turn: tokio::sync::Mutex::new(None),
            min_interval,
            share: share.clamp(f64::EPSILON, 1.0),
        }
    }

    /// Queues `request` and returns its outcome. If no earlier pass picked it up by the time
    /// this caller's turn comes, this caller runs `run` on every request queued so far; `run`
    /// returns one outcome per request, in order, and must not block.
    pub async fn submit(
        &self,
        request: Request,
        run: impl FnOnce(Vec<Request>) -> Vec<Outcome>,
    ) -> Result<Outcome, Abandoned> {
        let (reply, mut outcome) = oneshot::channel();
        self.lock_pending().push((request, reply));
        let mut next_pass = self.turn.lock().await;
        match outcome.try_recv() {
            Ok(done) => return Ok(done),
            // A pass took the request and panicked before answering.
            Err(oneshot::error::TryRecvError::Closed) => return Err(Abandoned),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        if let Some(at) = *next_pass {
            // Requests arriving meanwhile join this pass.
            tokio::time::sleep_until(at).await;
        }
        let started = Instant::now();
        // Every pass answers all it took before it gives up the turn, so this caller's own
        // request is still queued: it is in this batch.
        let (requests, replies): (Vec<_>, Vec<_>) = std::mem::take(&mut *self.lock_pending())
            .into_iter()
            .unzip();
        let outcomes = run(requests);
        for (reply, done) in replies.into_iter().zip(outcomes) {
            // A caller that went away (its reconcile was cancelled) needs no answer.
            let _ = reply.send(done);
        }
        let spacing = self.min_interval.max(started.elapsed().div_f64(self.share));
        *next_pass = Some(started + spacing);
        outcome.try_recv().map_err(|_| Abandoned)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<(Request, oneshot::Sender<Outcome>)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn one_caller_decides_its_own_request() {
        let batcher = Batcher::new(Duration::ZERO, 1.0);
        let out = batcher
            .submit(3, |reqs: Vec<u32>| reqs.iter().map(|r| r * 2).collect())
            .await
            .unwrap();
        assert_eq!(out, 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_callers_are_decided_together_and_each_gets_its_own_outcome() {
        let batcher: Arc<Batcher<u32, u32>> = Arc::new(Batcher::new(Duration::ZERO, 1.0));
        let passes = Arc::new(AtomicUsize::new(0));
        // Hold the turn so that the requests queue up behind it.
        let held = batcher.turn.lock().await;
        let mut callers = Vec::new();
        for i in 0..20u32 {
            let (batcher, passes) = (batcher.clone(), passes.clone());
            callers.push(tokio::spawn(async move {
                batcher
                    .submit(i, |reqs| {
                        passes.fetch_add(1, Ordering::SeqCst);
                        reqs.iter().map(|r| r + 100).collect()
                    })
                    .await
            }));
        }
        // Every caller has queued its request once all 20 are pending.
        while batcher.lock_pending().len() < 20 {
            tokio::task::yield_now().await;
        }
        drop(held);
        for (i, caller) in callers.into_iter().enumerate() {
            assert_eq!(caller.await.unwrap().unwrap(), i as u32 + 100);
        }
        assert_eq!(passes.load(Ordering::SeqCst), 1, "one pass for all 20");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pass_that_panics_abandons_its_requests_and_the_queue_goes_on() {
        let batcher: Arc<Batcher<u32, u32>> = Arc::new(Batcher::new(Duration::ZERO, 1.0));
        let held = batcher.turn.lock().await;
        let (b1, b2) = (batcher.clone(), batcher.clone());
        let first = tokio::spawn(async move { b1.submit(1, |_| panic!("planner bug")).await });
        let second = tokio::spawn(async move { b2.submit(2, |_| panic!("planner bug")).await });
        while batcher.lock_pending().len() < 2 {
            tokio::task::yield_now().await;
        }
        drop(held);
        // Whichever ran the pass panicked; the other learns its request was abandoned.
        let results = [first.await, second.await];
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        assert!(
            results.iter().any(|r| matches!(r, Ok(Err(Abandoned)))),
            "the waiting caller gets Abandoned, not a hang"
        );
        // The queue still works.
        let out = batcher.submit(5, |reqs| reqs).await.unwrap();
        assert_eq!(out, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn passes_are_spaced_so_that_a_stream_of_requests_is_batched() {
        let batcher: Arc<Batcher<u32, u32>> =
            Arc::new(Batcher::new(Duration::from_millis(10), 1.0));
        let passes = Arc::new(AtomicUsize::new(0));
        let run = |passes: Arc<AtomicUsize>| {
            move |reqs: Vec<u32>| {
                passes.fetch_add(1, Ordering::SeqCst);
                reqs
            }
        };
        // An idle planner decides at once.
        let started = Instant::now();
        batcher.submit(0, run(passes.clone())).await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        // Nine requests, one every millisecond, right after a pass: the next pass waits for the
        // rest of the interval and takes them all.
        let mut callers = Vec::new();
        for i in 1..=9u32 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let (batcher, passes) = (batcher.clone(), passes.clone());
            callers.push(tokio::spawn(
                async move { batcher.submit(i, run(passes)).await },
            ));
        }
        for (i, caller) in callers.into_iter().enumerate() {
            assert_eq!(caller.await.unwrap().unwrap(), i as u32 + 1);
        }
        assert_eq!(
            passes.load(Ordering::SeqCst),
            2,
            "one pass for the first, one for the nine"
        );
        assert!(started.elapsed() >= Duration::from_millis(10));
    }

    /// A pass that takes 5 ms with a share of 1/4 keeps the next one 20 ms after its start, even
    /// with a shorter minimum interval.
    #[tokio::test]
    async fn costly_passes_are_spaced_by_their_share_of_the_time() {
        let batcher: Batcher<u32, u32> = Batcher::new(Duration::from_millis(1), 0.25);
        let started = Instant::now();
        batcher
            .submit(1, |reqs| {
                std::thread::sleep(Duration::from_millis(5));
                reqs
            })
            .await
            .unwrap();
        batcher.submit(2, |reqs| reqs).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(20),
            "second pass after {:?}",
            started.elapsed()
        );
    }
}
