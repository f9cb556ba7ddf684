//! Coalescing of reconcile triggers: the children of one deployment usually change together (its
//! Deployments in one cluster turn ready in the same kubelet pass), and a reconcile per change
//! would write the deployment's status once per child. Triggers are gathered for a short window
//! after the first of a burst, and each deployment is sent on once.

use futures::{Stream, StreamExt};
use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;

/// Yields every distinct item of `input` once per burst: a burst starts with an item and lasts
/// `window`. Ends when `input` ends, after yielding what it gathered.
pub fn coalesce<T>(
    input: impl Stream<Item = T> + Send + 'static,
    window: Duration,
) -> impl Stream<Item = T>
where
    T: Clone + Eq + Hash + Send + 'static,
{
    futures::stream::unfold(
        (input.boxed(), VecDeque::new()),
        move |(mut input, mut ready)| async move {
            if ready.is_empty() {
                let first = input.next().await?;
                let deadline = tokio::time::Instant::now() + window;
                let mut seen = HashSet::from([first.clone()]);
                ready.push_back(first);
                while let Ok(Some(item)) = tokio::time::timeout_at(deadline, input.next()).await {
                    if seen.insert(item.clone()) {
                        ready.push_back(item);
                    }
                }
            }
            let item = ready.pop_front()?;
            Some((item, (input, ready)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;

    #[tokio::test(start_paused = true)]
    async fn a_burst_yields_each_item_once_after_the_window() {
        let (tx, rx) = mpsc::unbounded();
        let mut out = Box::pin(coalesce(rx, Duration::from_millis(20)));
        let started = tokio::time::Instant::now();
        for item in ["a", "b", "a", "c", "b"] {
            tx.unbounded_send(item).unwrap();
        }
        assert_eq!(out.next().await, Some("a"));
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(20),
            "held for the window"
        );
        assert_eq!(out.next().await, Some("b"));
        assert_eq!(out.next().await, Some("c"));
        // A later burst is a new one: "a" again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.unbounded_send("a").unwrap();
        assert_eq!(out.next().await, Some("a"));
        drop(tx);
        assert_eq!(out.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn what_was_gathered_is_yielded_when_the_input_ends() {
        let (tx, rx) = mpsc::unbounded();
        let mut out = Box::pin(coalesce(rx, Duration::from_secs(10)));
        tx.unbounded_send(1).unwrap();
        tx.unbounded_send(2).unwrap();
        drop(tx);
        assert_eq!(out.next().await, Some(1));
        assert_eq!(out.next().await, Some(2));
        assert_eq!(out.next().await, None);
    }
}
