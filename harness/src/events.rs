//! Core `v1` Events as a view of the `events.k8s.io/v1` Events the harness stores, as the API
//! server serves both groups from one storage: the same objects (names, uids, resourceVersions,
//! watches) under the core field names, with the API server's conversion
//! (`pkg/apis/events/v1/conversion.go`). kubectl reads core Events (`get events`, `events`,
//! `describe`); controllers such as kube's `Recorder` write `events.k8s.io` ones.

use serde_json::{Map, Value, json};

use crate::resources::ResourceType;

/// `events.k8s.io/v1` field ↔ core `v1` field, for the fields that differ only in name.
const RENAMED: &[(&str, &str)] = &[
    ("note", "message"),
    ("regarding", "involvedObject"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Whether `rt` is the core `v1` Event view.
pub fn is_core_view(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "events"
}

fn rename(obj: Value, pairs: impl Iterator<Item = (&'static str, &'static str)>) -> Value {
    let Value::Object(mut m) = obj else {
        return obj;
    };
    let mut moved = Map::new();
    for (from, to) in pairs {
        // A field already under its target name wins over none: drop the source name's value
        // only when it is moved.
        if let Some(v) = m.remove(from) {
            moved.insert(to.to_string(), v);
        }
    }
    m.extend(moved);
    Value::Object(m)
}

/// The core `v1` form of a stored `events.k8s.io/v1` Event.
pub fn to_core(stored: Value) -> Value {
    let mut core = rename(stored, RENAMED.iter().copied());
    core["apiVersion"] = json!("v1");
    // Events written through events.k8s.io carry no deprecated source; the server's core view
    // names the reporting controller there, which is what `kubectl describe` shows as "From".
    let component = core["reportingComponent"].clone();
    let has_source = core["source"]["component"]
        .as_str()
        .is_some_and(|c| !c.is_empty());
    if !has_source && component.as_str().is_some_and(|c| !c.is_empty()) {
        if !core["source"].is_object() {
            core["source"] = json!({});
        }
        core["source"]["component"] = component;
    }
    core
}

/// The `events.k8s.io/v1` form (as stored) of a core `v1` Event.
pub fn from_core(core: Value) -> Value {
    let mut stored = rename(core, RENAMED.iter().map(|(a, b)| (*b, *a)));
    stored["apiVersion"] = json!("events.k8s.io/v1");
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "md.1", "namespace": "shop", "uid": "u1", "resourceVersion": "7"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "series": {"count": 3, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
            "reportingController": "skybridge.io/operator", "reportingInstance": "op-0",
            "action": "Burst", "reason": "BurstStarted", "type": "Normal",
            "regarding": {"kind": "ModelDeployment", "name": "ranker", "namespace": "shop", "uid": "md-uid"},
            "related": {"kind": "ComputePool", "name": "aws"},
            "note": "2 replicas to aws",
            "deprecatedCount": 4,
            "deprecatedFirstTimestamp": "2026-01-01T00:00:00Z",
            "deprecatedLastTimestamp": "2026-01-01T00:02:00Z",
        })
    }

    #[test]
    fn the_core_view_uses_the_api_servers_field_mapping() {
        let core = to_core(stored());
        assert_eq!(
            core,
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "md.1", "namespace": "shop", "uid": "u1", "resourceVersion": "7"},
                "eventTime": "2026-01-01T00:00:00.000000Z",
                "series": {"count": 3, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
                "reportingComponent": "skybridge.io/operator", "reportingInstance": "op-0",
                "source": {"component": "skybridge.io/operator"},
                "action": "Burst", "reason": "BurstStarted", "type": "Normal",
                "involvedObject": {"kind": "ModelDeployment", "name": "ranker", "namespace": "shop", "uid": "md-uid"},
                "related": {"kind": "ComputePool", "name": "aws"},
                "message": "2 replicas to aws",
                "count": 4,
                "firstTimestamp": "2026-01-01T00:00:00Z",
                "lastTimestamp": "2026-01-01T00:02:00Z",
            })
        );
    }

    #[test]
    fn a_core_write_round_trips_through_storage() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "pod.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-0"},
            "reason": "Pulled", "message": "pulled", "type": "Normal",
            "source": {"component": "kubelet", "host": "node-a"},
            "reportingComponent": "kubelet", "reportingInstance": "node-a",
            "count": 2, "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:05Z",
        });
        let stored = from_core(core.clone());
        assert_eq!(stored["note"], "pulled");
        assert_eq!(stored["regarding"]["name"], "web-0");
        assert_eq!(stored["deprecatedSource"]["host"], "node-a");
        assert_eq!(stored["deprecatedCount"], 2);
        assert!(stored.get("message").is_none() && stored.get("count").is_none());
        assert_eq!(to_core(stored), core);
    }

    #[test]
    fn an_explicit_source_is_kept() {
        let mut s = stored();
        s["deprecatedSource"] = json!({"component": "kubelet", "host": "n1"});
        assert_eq!(
            to_core(s)["source"],
            json!({"component": "kubelet", "host": "n1"})
        );
    }
}
