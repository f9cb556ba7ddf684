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

impl AppliedChildren {
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
