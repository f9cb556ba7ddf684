//! Publishes Kubernetes Events (`events.k8s.io/v1`) whose note always says what happened.
//!
//! kube-runtime's `Recorder` keys its series cache by type, action, reason, reporter and the
//! objects, not by the note: a second `ScaleUp` within six minutes bumps the first one's
//! `series.count` and keeps its note (`0 → 4 replicas` while the component is at 24). The Events
//! API's `series` is for repeated *identical* events, so this recorder keys by the note too: the
//! same note again is a series (count and last-observed time), a changed note is a new Event.
//! Runbooks can then grep the notes and find the latest one.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;

/// How long an Event may gain a series after it was last seen: as kube-runtime's recorder.
pub const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// Most Events remembered for series; the oldest is forgotten first (its next occurrence then
/// starts a new Event), so memory stays bounded however many notes differ.
pub const MAX_REMEMBERED: usize = 4096;

/// What makes two occurrences the same Event: everything it says, the note included.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventKey {
    pub type_: &'static str,
    pub reason: String,
    pub action: String,
    pub note: Option<String>,
    /// `apiVersion/kind/namespace/name/uid` of the object the Event is about.
    pub regarding: String,
    pub related: Option<String>,
}

impl EventKey {
    pub fn new(event: &Event, regarding: &ObjectReference) -> Self {
        Self {
            type_: type_name(event.type_),
            reason: event.reason.clone(),
            action: event.action.clone(),
            note: event.note.clone(),
            regarding: reference_key(regarding),
            related: event.secondary.as_ref().map(reference_key),
        }
    }
}

fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

fn reference_key(r: &ObjectReference) -> String {
    let part = |s: &Option<String>| s.clone().unwrap_or_default();
    format!(
        "{}/{}/{}/{}/{}",
        part(&r.api_version),
        part(&r.kind),
        part(&r.namespace),
        part(&r.name),
        part(&r.uid)
    )
}

/// What to do with an occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publish {
    /// A new Event object.
    Create,
    /// The same note again: the Event `name` gains a series of `count` occurrences.
    Series { name: String, count: i32 },
}

#[derive(Clone, Debug)]
struct Remembered {
    name: String,
    count: i32,
    last_seen: Timestamp,
}

/// The series memory, pure: which Event an occurrence continues, if any.
#[derive(Debug)]
pub struct SeriesCache {
    entries: HashMap<EventKey, Remembered>,
    capacity: usize,
}

impl Default for SeriesCache {
    fn default() -> Self {
        Self::with_capacity(MAX_REMEMBERED)
    }
}

impl SeriesCache {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether an occurrence of `key` at `now` creates an Event or continues a series.
    pub fn decide(&mut self, key: &EventKey, now: Timestamp) -> Publish {
        self.entries.retain(|_, e| e.last_seen + SERIES_TTL > now);
        match self.entries.get(key) {
            Some(e) => Publish::Series {
                name: e.name.clone(),
                count: e.count + 1,
            },
            None => Publish::Create,
        }
    }

    /// Whether an Event of `key` was published within [`SERIES_TTL`] before `now`.
    pub fn knows(&mut self, key: &EventKey, now: Timestamp) -> bool {
        self.decide(key, now) != Publish::Create
    }

    /// Records that the occurrence was published as `name`, with `count` occurrences so far.
    pub fn remember(&mut self, key: EventKey, name: String, count: i32, now: Timestamp) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            key,
            Remembered {
                name,
                count,
                last_seen: now,
            },
        );
    }

    /// Forgets `key`, e.g. when its Event is gone from the API server.
    pub fn forget(&mut self, key: &EventKey) {
        self.entries.remove(key);
    }
}

/// Publishes Events as kube-runtime's `Recorder` does (same fields, same RBAC: `create` and
/// `patch` on `events.k8s.io` events), with series only for identical notes.
pub struct EventRecorder {
    client: Client,
    reporter: Reporter,
    cache: Mutex<SeriesCache>,
}

impl EventRecorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            cache: Mutex::new(SeriesCache::default()),
        }
    }

    /// Publishes `event` about `regarding` (cluster-scoped objects report to `default`).
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = EventKey::new(event, regarding);
        let decision = self
            .cache
            .lock()
            .expect("event cache lock")
            .decide(&key, now);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let (name, count) = match decision {
            Publish::Series { name, count } => {
                let series = EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                };
                let patch = Patch::Merge(json!({ "series": series }));
                match api.patch(&name, &PatchParams::default(), &patch).await {
                    Ok(_) => (name, count),
                    // The API server dropped it (its Event TTL): start over with a new Event.
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        self.cache.lock().expect("event cache lock").forget(&key);
                        (self.create(&api, event, regarding, now).await?, 1)
                    }
                    Err(err) => return Err(err),
                }
            }
            Publish::Create => (self.create(&api, event, regarding, now).await?, 1),
        };
        self.cache
            .lock()
            .expect("event cache lock")
            .remember(key, name, count, now);
        Ok(())
    }

    /// Publishes `event` unless the same Event, note included, was published within
    /// [`SERIES_TTL`]: for what a reconcile finds again and again while nothing else changes (a
    /// failing metric), so that a changed note is told at once and an unchanged one is not
    /// repeated every reconcile. Returns whether it was published.
    pub async fn publish_if_new(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<bool, kube::Error> {
        let key = EventKey::new(event, regarding);
        let known = self
            .cache
            .lock()
            .expect("event cache lock")
            .knows(&key, Timestamp::now());
        if known {
            return Ok(false);
        }
        self.publish(event, regarding).await.map(|()| true)
    }

    async fn create(
        &self,
        api: &Api<K8sEvent>,
        event: &Event,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Result<String, kube::Error> {
        let name = format!(
            "{}.{:x}",
            regarding
                .name
                .as_deref()
                .unwrap_or(&self.reporter.controller),
            now.as_nanosecond()
        );
        let object = K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            note: event.note.clone(),
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(type_name(event.type_).to_string()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &object).await?;
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    fn regarding(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("skybridge.io/v1alpha1".into()),
            kind: Some("ModelDeployment".into()),
            namespace: Some("shop".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn key(reason: &str, note: &str) -> EventKey {
        EventKey::new(&event(reason, note), &regarding("ranker"))
    }

    #[test]
    fn the_same_note_again_is_a_series_and_a_changed_note_a_new_event() {
        let mut cache = SeriesCache::default();
        let first = key("ScaleUp", "component ranker: 0 → 4 replicas");
        assert_eq!(cache.decide(&first, at(0)), Publish::Create);
        cache.remember(first.clone(), "ranker.1".into(), 1, at(0));
        assert_eq!(
            cache.decide(&first, at(10)),
            Publish::Series {
                name: "ranker.1".into(),
                count: 2
            }
        );
        cache.remember(first.clone(), "ranker.1".into(), 2, at(10));
        let second = key("ScaleUp", "component ranker: 4 → 24 replicas");
        assert_eq!(
            cache.decide(&second, at(20)),
            Publish::Create,
            "a changed note is a new Event, not the old note's series"
        );
        cache.remember(second.clone(), "ranker.2".into(), 1, at(20));
        // The first note again continues its own series.
        assert_eq!(
            cache.decide(&first, at(30)),
            Publish::Series {
                name: "ranker.1".into(),
                count: 3
            }
        );
    }

    #[test]
    fn other_objects_reasons_and_types_are_other_events() {
        let base = key("ScaleUp", "n");
        let other_object = EventKey::new(&event("ScaleUp", "n"), &regarding("encoder"));
        let other_reason = key("ScaleDown", "n");
        let mut warning = event("ScaleUp", "n");
        warning.type_ = EventType::Warning;
        let other_type = EventKey::new(&warning, &regarding("ranker"));
        for other in [other_object, other_reason, other_type] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn a_note_is_known_until_its_ttl_and_a_changed_note_is_not() {
        let mut cache = SeriesCache::default();
        let failing = key(
            "MetricUnavailable",
            "component ranker: Prometheus at http://a did not answer",
        );
        assert!(!cache.knows(&failing, at(0)));
        cache.remember(failing.clone(), "ranker.1".into(), 1, at(0));
        assert!(cache.knows(&failing, at(60)));
        let other = key(
            "MetricUnavailable",
            "component ranker: Prometheus at http://b did not answer",
        );
        assert!(!cache.knows(&other, at(60)), "another URL is news");
        assert!(
            !cache.knows(&failing, at(SERIES_TTL.as_secs())),
            "told again after the TTL"
        );
    }

    #[test]
    fn a_series_ends_after_its_ttl() {
        let mut cache = SeriesCache::default();
        let k = key(
            "MetricUnavailable",
            "component ranker: Prometheus at http://a did not answer",
        );
        cache.remember(k.clone(), "ranker.1".into(), 1, at(0));
        let ttl = SERIES_TTL.as_secs();
        assert!(matches!(
            cache.decide(&k, at(ttl - 1)),
            Publish::Series { .. }
        ));
        assert_eq!(cache.decide(&k, at(ttl)), Publish::Create);
        assert!(cache.is_empty(), "expired entries are dropped");
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_is_forgotten_first() {
        let mut cache = SeriesCache::with_capacity(3);
        for i in 0..10 {
            let k = key("ScaleUp", &format!("{i} → {} replicas", i + 1));
            assert_eq!(cache.decide(&k, at(i)), Publish::Create);
            cache.remember(k, format!("ranker.{i}"), 1, at(i));
            assert!(cache.len() <= 3);
        }
        let newest = key("ScaleUp", "9 → 10 replicas");
        assert!(matches!(
            cache.decide(&newest, at(10)),
            Publish::Series { .. }
        ));
        let oldest = key("ScaleUp", "0 → 1 replicas");
        assert_eq!(cache.decide(&oldest, at(10)), Publish::Create);
    }
}
