//! The Gateway API stand-in: serves nothing but the routes' `status.parents`, as a Gateway
//! implementation (Envoy Gateway, Istio, Cilium) would write it, so that a client can read
//! whether its route was accepted and its backends resolved.
//!
//! For each `HTTPRoute` and `GRPCRoute`, one entry per `parentRef` (controller
//! [`CONTROLLER_NAME`]) with two conditions:
//! - `Accepted`: True when the parentRef names a Gateway (group `gateway.networking.k8s.io`,
//!   kind `Gateway`) that exists, else False `NoMatchingParent`;
//! - `ResolvedRefs`: True when every backendRef resolves (a `Service` of core group, or a
//!   `ServiceImport` of `multicluster.x-k8s.io`, existing in the referenced namespace), else
//!   False `BackendNotFound` (missing) or `InvalidKind` (another kind).
//!
//! Nothing routes packets: this is only the status contract. Test-only.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::apply::Scope;
use crate::error::Error;
use crate::store::{Store, WriteOpts, now};

/// The `controllerName` the stand-in writes in `status.parents[]`.
pub const CONTROLLER_NAME: &str = "kube-harness.test/gateway-controller";

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
const MCS_GROUP: &str = "multicluster.x-k8s.io";
const ROUTE_PLURALS: [&str; 2] = ["httproutes", "grpcroutes"];
/// How long a pass lets further changes gather (as the kubelet stand-in does).
const COALESCE: std::time::Duration = std::time::Duration::from_millis(5);

/// Whether a change to this storage key can change some route's status.
fn relevant(key: &(String, String)) -> bool {
    match key.0.as_str() {
        GATEWAY_GROUP => matches!(key.1.as_str(), "gateways" | "httproutes" | "grpcroutes"),
        MCS_GROUP => key.1 == "serviceimports",
        "" => key.1 == "services",
        _ => false,
    }
}

/// Any served version of `group/plural` (versions share storage).
fn served(store: &Store, group: &str, plural: &str) -> Option<Arc<crate::resources::ResourceType>> {
    store
        .resource_types()
        .into_iter()
        .find(|t| t.group == group && t.plural == plural)
}

fn exists(store: &Store, group: &str, plural: &str, ns: &str, name: &str) -> bool {
    served(store, group, plural).is_some_and(|rt| store.get(&rt, ns, name).is_ok())
}

/// A condition, keeping `lastTransitionTime` of the same condition in `old` when its status
/// did not change (the convention every controller follows).
fn condition(
    old: Option<&Value>,
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: &Value,
) -> Value {
    let status = if ok { "True" } else { "False" };
    let since = old
        .and_then(|conds| conds.as_array())
        .and_then(|conds| conds.iter().find(|c| c["type"] == kind))
        .filter(|c| c["status"] == status)
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or_else(|| json!(now()));
    let mut c = json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    });
    if generation.is_i64() || generation.is_u64() {
        c["observedGeneration"] = generation.clone();
    }
    c
}

/// Why a backendRef does not resolve, if it does not.
fn unresolved(store: &Store, route_ns: &str, backend: &Value) -> Option<(&'static str, String)> {
    let group = backend["group"].as_str().unwrap_or("");
    let kind = backend["kind"].as_str().unwrap_or("Service");
    let name = backend["name"].as_str().unwrap_or_default();
    let ns = backend["namespace"].as_str().unwrap_or(route_ns);
    let (g, plural) = match (group, kind) {
        ("", "Service") => ("", "services"),
        (MCS_GROUP, "ServiceImport") => (MCS_GROUP, "serviceimports"),
        _ => {
            return Some((
                "InvalidKind",
                format!("backendRef {name}: unsupported kind {kind} of group {group:?}"),
            ));
        }
    };
    (!exists(store, g, plural, ns, name)).then(|| {
        (
            "BackendNotFound",
            format!("backendRef {ns}/{name}: {kind} not found"),
        )
    })
}

/// The `status.parents` the stand-in gives `route`.
fn parents_status(store: &Store, route: &Value) -> Value {
    let ns = route["metadata"]["namespace"].as_str().unwrap_or_default();
    let generation = &route["metadata"]["generation"];
    let old_parents = route["status"]["parents"].as_array();
    let backends: Vec<&Value> = route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["backendRefs"].as_array().into_iter().flatten())
        .collect();
    let unresolved: Vec<(&str, String)> = backends
        .iter()
        .filter_map(|b| unresolved(store, ns, b))
        .collect();
    let parents: Vec<Value> = route["spec"]["parentRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|parent| {
            let old = old_parents
                .and_then(|ps| ps.iter().find(|p| p["parentRef"] == *parent))
                .map(|p| &p["conditions"]);
            let group = parent["group"].as_str().unwrap_or(GATEWAY_GROUP);
            let kind = parent["kind"].as_str().unwrap_or("Gateway");
            let name = parent["name"].as_str().unwrap_or_default();
            let parent_ns = parent["namespace"].as_str().unwrap_or(ns);
            let accepted = group == GATEWAY_GROUP
                && kind == "Gateway"
                && exists(store, GATEWAY_GROUP, "gateways", parent_ns, name);
            let accepted = if accepted {
                condition(
                    old,
                    "Accepted",
                    true,
                    "Accepted",
                    "Route is accepted".into(),
                    generation,
                )
            } else {
                condition(
                    old,
                    "Accepted",
                    false,
                    "NoMatchingParent",
                    format!("no {kind} {parent_ns}/{name} of group {group}"),
                    generation,
                )
            };
            let resolved = match unresolved.first() {
                None => condition(
                    old,
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "Resolved all the Object references for the Route".into(),
                    generation,
                ),
                Some((reason, _)) => condition(
                    old,
                    "ResolvedRefs",
                    false,
                    reason,
                    unresolved
                        .iter()
                        .map(|(_, m)| m.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                    generation,
                ),
            };
            json!({
                "parentRef": parent,
                "controllerName": CONTROLLER_NAME,
                "conditions": [accepted, resolved],
            })
        })
        .collect();
    json!(parents)
}

/// One pass: every route's status as it should be; writes only the ones that differ.
fn reconcile(store: &Store) {
    let opts = WriteOpts {
        manager: "kube-harness-gateway".into(),
        ..Default::default()
    };
    for plural in ROUTE_PLURALS {
        let Some(rt) = served(store, GATEWAY_GROUP, plural) else {
            continue;
        };
        for route in store.list(&rt, None).0 {
            let parents = parents_status(store, &route);
            if route["status"]["parents"] == parents {
                continue;
            }
            let ns = route["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = route["metadata"]["name"].as_str().unwrap_or_default();
            let uid = route["metadata"]["uid"].clone();
            let generation = route["metadata"]["generation"].clone();
            let _ = store.modify(&rt, ns, name, Scope::Status, &opts, true, |live| {
                let live = live.ok_or_else(|| Error::not_found(GATEWAY_GROUP, plural, name))?;
                if live["metadata"]["uid"] != uid || live["metadata"]["generation"] != generation {
                    // Changed since the pass read it: its change event brings another pass.
                    return Err(Error::conflict(GATEWAY_GROUP, plural, name));
                }
                Ok(json!({"status": {"parents": parents}}))
            });
        }
    }
}

/// Run the stand-in on `store` until the store's event channel closes or the task is aborted.
pub fn spawn(store: Arc<Store>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rx = store.subscribe();
        loop {
            reconcile(&store);
            loop {
                match rx.recv().await {
                    Ok(ev) if relevant(&ev.key) => break,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
            // Let a burst of writes gather into one pass.
            tokio::time::sleep(COALESCE).await;
            while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
                rx.try_recv()
            {}
        }
    })
}
