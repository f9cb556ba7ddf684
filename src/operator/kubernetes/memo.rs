//! What this operator last applied to each child, so that a reconcile skips a server-side apply
//! that would change nothing: the same object, applied recently, still at the generation the
//! apply returned (as the child's watch reports). Entries age out, so every child is re-applied
//! now and then anyway, which repairs drift the watch cannot see (a Service edited by hand).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A child: (cluster id, kind, namespace, name).
pub type ChildKey = (String, &'static str, String, String);

struct Applied {
    content: u64,
    generation: Option<i64>,
    at: Instant,
}

pub struct AppliedChildren {
    ttl: Duration,
    children: Mutex<HashMap<ChildKey, Applied>>,
}

/// A fingerprint of an object as it would be applied.
pub fn content_hash<T: serde::Serialize>(object: &T) -> u64 {
    json_hash(&serde_json::to_vec(object).unwrap_or_default())
}

/// The fingerprint of an object already serialized (see `AppliedBody`).
pub fn json_hash(json: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    json.hash(&mut hasher);
    hasher.finish()
}

/// An object serialized once, both to fingerprint it and as the body of its apply.
pub struct AppliedBody {
    pub json: Box<serde_json::value::RawValue>,
    pub content: u64,
}

impl AppliedBody {
    pub fn of<T: serde::Serialize>(object: &T) -> serde_json::Result<Self> {
        let json = serde_json::value::to_raw_value(object)?;
        let content = json_hash(json.get().as_bytes());
        Ok(Self { json, content })
    }
}

/// What the memo recorded of a child's last apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub content: u64,
    /// The generation that apply returned.
    pub generation: Option<i64>,
    /// How long ago.
    pub age: Duration,
}

/// What the children watch knows of a child, for the apply-memo rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A kind the watch follows by generation (Deployments): `None` when its index has no such
    /// child, else its generation and ready replicas.
    Generation(Option<(Option<i64>, u32)>),
    /// A kind the watch follows by presence (Services): `None` while its index is incomplete.
    Presence(Option<bool>),
    /// No watch of this kind or cluster.
    Unwatched,
}

/// Whether an apply may be skipped, and with what readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoVerdict {
    /// Nothing to write: the child is as last applied; its ready replicas as the watch saw them.
    Skip {
        ready: u32,
    },
    Apply,
}

/// The apply-memo rule. A child is not applied again when exactly this content was applied
/// less than `ttl` ago (so every child is re-applied now and then, which repairs drift the
/// watch cannot see) and:
/// - a generation-watched child (Deployment) is seen at the generation that apply returned,
///   or that apply is less than `grace` old (the watch lags under load; the write is on its
///   way). A cluster without a watch re-applies: readiness would be unknown otherwise;
/// - a presence-watched child (Service) is not missing from a complete index (deleted behind
///   the operator's back);
/// - an unwatched child (Secret) needs nothing more.
pub fn memo_verdict(
    recorded: Option<Recorded>,
    content: u64,
    seen: Seen,
    ttl: Duration,
    grace: Duration,
) -> MemoVerdict {
    let Some(recorded) = recorded.filter(|r| r.content == content && r.age < ttl) else {
        return MemoVerdict::Apply;
    };
    match seen {
        Seen::Generation(Some((generation, ready))) if generation == recorded.generation => {
            MemoVerdict::Skip { ready }
        }
        Seen::Generation(seen) if recorded.age < grace => MemoVerdict::Skip {
            ready: seen.map_or(0, |(_, ready)| ready),
        },
        Seen::Generation(_) => MemoVerdict::Apply,
        Seen::Presence(Some(false)) => MemoVerdict::Apply,
        Seen::Presence(_) | Seen::Unwatched => MemoVerdict::Skip { ready: 0 },
    }
}

impl AppliedChildren {
    /// What was last recorded of `key`, as of now.
    pub fn recorded(&self, key: &ChildKey) -> Option<Recorded> {
        let children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.get(key).map(|a| Recorded {
            content: a.content,
            generation: a.generation,
            age: a.at.elapsed(),
        })
    }

    /// Every child is re-applied at least this often.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How many children are remembered.
    pub fn len(&self) -> usize {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether no child is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            children: Mutex::new(HashMap::new()),
        }
    }

    /// The generation an apply of exactly `content` returned, if that was recent.
    pub fn unchanged(&self, key: &ChildKey, content: u64) -> Option<Option<i64>> {
        let children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children
            .get(key)
            .filter(|a| a.content == content && a.at.elapsed() < self.ttl)
            .map(|a| a.generation)
    }

    pub fn record(&self, key: ChildKey, content: u64, generation: Option<i64>) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.insert(
            key,
            Applied {
                content,
                generation,
                at: Instant::now(),
            },
        );
    }

    /// Whether exactly `content` was applied less than `within` ago: the child's watch may not
    /// have seen that write yet.
    pub fn applied_within(&self, key: &ChildKey, content: u64, within: Duration) -> bool {
        let children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children
            .get(key)
            .is_some_and(|a| a.content == content && a.at.elapsed() < within)
    }

    /// Forgets a child (deleted, or its apply failed).
    pub fn forget(&self, key: &ChildKey) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ChildKey {
        ("c".into(), "Deployment", "ns".into(), "d".into())
    }

    #[test]
    fn same_content_recently_applied_is_unchanged_until_it_ages_out() {
        let applied = AppliedChildren::new(Duration::from_millis(50));
        assert_eq!(applied.unchanged(&key(), 1), None);
        applied.record(key(), 1, Some(3));
        assert_eq!(applied.unchanged(&key(), 1), Some(Some(3)));
        assert_eq!(applied.unchanged(&key(), 2), None, "other content");
        applied.forget(&key());
        assert_eq!(applied.unchanged(&key(), 1), None);
        let aged = AppliedChildren::new(Duration::ZERO);
        aged.record(key(), 1, Some(3));
        assert_eq!(aged.unchanged(&key(), 1), None, "aged out");
        applied.record(key(), 1, Some(3));
        assert!(applied.applied_within(&key(), 1, Duration::from_secs(60)));
        assert!(
            !applied.applied_within(&key(), 2, Duration::from_secs(60)),
            "other content"
        );
        assert!(
            !applied.applied_within(&key(), 1, Duration::ZERO),
            "too long ago"
        );
    }

    fn recorded(content: u64, generation: Option<i64>, age_secs: u64) -> Option<Recorded> {
        Some(Recorded {
            content,
            generation,
            age: Duration::from_secs(age_secs),
        })
    }

    const TTL: Duration = Duration::from_secs(300);
    const GRACE: Duration = Duration::from_secs(10);

    #[test]
    fn a_deployment_seen_at_the_applied_generation_is_not_applied_again() {
        let seen = Seen::Generation(Some((Some(3), 2)));
        assert_eq!(
            memo_verdict(recorded(7, Some(3), 60), 7, seen, TTL, GRACE),
            MemoVerdict::Skip { ready: 2 }
        );
        // Other content, aged out, never applied, or seen at another generation past the grace.
        assert_eq!(
            memo_verdict(recorded(8, Some(3), 60), 7, seen, TTL, GRACE),
            MemoVerdict::Apply
        );
        assert_eq!(
            memo_verdict(recorded(7, Some(3), 300), 7, seen, TTL, GRACE),
            MemoVerdict::Apply
        );
        assert_eq!(memo_verdict(None, 7, seen, TTL, GRACE), MemoVerdict::Apply);
        let other = Seen::Generation(Some((Some(4), 2)));
        assert_eq!(
            memo_verdict(recorded(7, Some(3), 60), 7, other, TTL, GRACE),
            MemoVerdict::Apply
        );
    }

    #[test]
    fn a_deployment_applied_a_moment_ago_waits_for_its_watch() {
        let unseen = Seen::Generation(None);
        assert_eq!(
            memo_verdict(recorded(7, Some(3), 2), 7, unseen, TTL, GRACE),
            MemoVerdict::Skip { ready: 0 }
        );
        let lagging = Seen::Generation(Some((Some(2), 1)));
        assert_eq!(
            memo_verdict(recorded(7, Some(3), 2), 7, lagging, TTL, GRACE),
            MemoVerdict::Skip { ready: 1 }
        );
        assert_eq!(
            memo_verdict(recorded(7, Some(3), 11), 7, unseen, TTL, GRACE),
            MemoVerdict::Apply
        );
    }

    #[test]
    fn a_service_missing_from_a_complete_index_is_applied_again() {
        let at = recorded(7, None, 60);
        assert_eq!(
            memo_verdict(at, 7, Seen::Presence(Some(false)), TTL, GRACE),
            MemoVerdict::Apply
        );
        assert_eq!(
            memo_verdict(at, 7, Seen::Presence(Some(true)), TTL, GRACE),
            MemoVerdict::Skip { ready: 0 }
        );
        assert_eq!(
            memo_verdict(at, 7, Seen::Presence(None), TTL, GRACE),
            MemoVerdict::Skip { ready: 0 },
            "an incomplete index proves nothing"
        );
    }

    #[test]
    fn an_unwatched_child_is_skipped_on_the_memo_alone_until_it_ages_out() {
        assert_eq!(
            memo_verdict(recorded(7, None, 299), 7, Seen::Unwatched, TTL, GRACE),
            MemoVerdict::Skip { ready: 0 }
        );
        assert_eq!(
            memo_verdict(recorded(7, None, 300), 7, Seen::Unwatched, TTL, GRACE),
            MemoVerdict::Apply
        );
        assert_eq!(
            memo_verdict(recorded(6, None, 1), 7, Seen::Unwatched, TTL, GRACE),
            MemoVerdict::Apply
        );
    }

    #[test]
    fn content_hash_tells_objects_apart() {
        assert_eq!(
            content_hash(&serde_json::json!({"a": 1})),
            content_hash(&serde_json::json!({"a": 1}))
        );
        assert_ne!(
            content_hash(&serde_json::json!({"a": 1})),
            content_hash(&serde_json::json!({"a": 2}))
        );
    }
}
