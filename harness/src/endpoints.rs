//! The EndpointSlice controller stand-in: every Service with a selector gets one
//! `discovery.k8s.io/v1` EndpointSlice listing the pods its selector picks, as the
//! kube-controller-manager's endpointslice controller writes it, so that a test can read which
//! pods a Service sends requests to (and watch that change).
//!
//! - the slice is named `<service>-<5 characters>` (stable per Service uid), labelled
//!   `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
//!   endpointslice-controller.k8s.io`, owned by the Service (deleted with it);
//! - a pod is an endpoint when it is in the Service's namespace, carries every label of the
//!   selector, is not finished (`Succeeded`/`Failed`) and has a `status.podIP` (the kubelet
//!   stand-in gives bound pods a fake one); `conditions`: `ready` (Ready=True and not
//!   terminating), `serving` (Ready=True), `terminating` (a deletionTimestamp); `nodeName` and a
//!   `targetRef` to the pod;
//! - ports: one per Service port, its `targetPort` resolved on the pods (a name through the
//!   containers' named ports); a pod without a named port is left out, as the real controller
//!   leaves it out of that port's slice;
//! - a Service without a selector is left alone (its slices are its owner's), and only slices
//!   labelled managed by the controller are ever changed or deleted.
//!
//! Relabelling a pod out of a Service's selector takes it out of the slice at once; nothing is
//! routed. Test-only.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::apply::Scope;
use crate::store::{DeleteOpts, Store, WriteOpts};

/// `endpointslice.kubernetes.io/managed-by` of the slices the stand-in writes.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const COALESCE: std::time::Duration = std::time::Duration::from_millis(5);

fn relevant(key: &(String, String)) -> bool {
    key.0.is_empty() && matches!(key.1.as_str(), "services" | "pods")
}

fn labels(obj: &Value) -> BTreeMap<String, String> {
    crate::selectors::labels_of(obj)
}

/// The port a Service port's `targetPort` names on `pod` (`None`: the pod has no such port).
fn target_port(service_port: &Value, pod: &Value) -> Option<i64> {
    match &service_port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_i64()),
        _ => service_port["port"].as_i64(),
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The slice's `endpoints` and `ports` for `service` among `pods` (its namespace's).
fn slice_content(service: &Value, pods: &[Value]) -> (Vec<Value>, Vec<Value>) {
    let selector: BTreeMap<String, String> = service["spec"]["selector"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let service_ports: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let mut endpoints = Vec::new();
    let mut ports: Option<Vec<Value>> = None;
    let mut selected: Vec<&Value> = pods
        .iter()
        .filter(|pod| {
            let have = labels(pod);
            selector.iter().all(|(k, v)| have.get(k) == Some(v))
                && !matches!(
                    pod["status"]["phase"].as_str(),
                    Some("Succeeded" | "Failed")
                )
                && pod["status"]["podIP"]
                    .as_str()
                    .is_some_and(|ip| !ip.is_empty())
        })
        .collect();
    selected.sort_by_key(|p| {
        p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    for pod in selected {
        let resolved: Option<Vec<Value>> = service_ports
            .iter()
            .map(|sp| {
                target_port(sp, pod).map(|port| {
                    json!({
                        "name": sp["name"].as_str().unwrap_or_default(),
                        "port": port,
                        "protocol": sp["protocol"].as_str().unwrap_or("TCP"),
                    })
                })
            })
            .collect();
        let Some(resolved) = resolved else {
            continue;
        };
        // One slice per port set in the real controller; pods of these Services share one.
        match &ports {
            Some(p) if *p != resolved => continue,
            None => ports = Some(resolved),
            _ => {}
        }
        let terminating = pod["metadata"].get("deletionTimestamp").is_some();
        let ready = is_ready(pod);
        let mut endpoint = json!({
            "addresses": [pod["status"]["podIP"].clone()],
            "conditions": {
                "ready": ready && !terminating,
                "serving": ready,
                "terminating": terminating,
            },
            "targetRef": {
                "kind": "Pod",
                "namespace": pod["metadata"]["namespace"].clone(),
                "name": pod["metadata"]["name"].clone(),
                "uid": pod["metadata"]["uid"].clone(),
            },
        });
        if let Some(node) = pod["spec"]["nodeName"].as_str() {
            endpoint["nodeName"] = json!(node);
        }
        endpoints.push(endpoint);
    }
    (endpoints, ports.unwrap_or_default())
}

/// A stable 5-character suffix per Service uid, as `generateName` would give once.
fn suffix(uid: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..5)
        .map(|i| ALPHABET[((h >> (i * 8)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// One pass: every selecting Service's slice as it should be; writes only what differs.
fn reconcile(store: &Store) {
    let Some(slices_rt) = store.resource("discovery.k8s.io", "v1", "endpointslices") else {
        return;
    };
    let services_rt = store.resource("", "v1", "services").expect("built-in");
    let pods_rt = store.resource("", "v1", "pods").expect("built-in");
    let opts = WriteOpts {
        manager: "endpointslice-controller".into(),
        internal: true,
        ..Default::default()
    };
    let mut pods_by_ns: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pod in store.list(&pods_rt, None).0 {
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        pods_by_ns.entry(ns).or_default().push(pod);
    }
    let mut wanted: BTreeMap<(String, String), ()> = BTreeMap::new();
    for service in store.list(&services_rt, None).0 {
        let selects = service["spec"]["selector"]
            .as_object()
            .is_some_and(|s| !s.is_empty());
        if !selects || service["metadata"].get("deletionTimestamp").is_some() {
            continue;
        }
        let ns = service["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let service_name = service["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let uid = service["metadata"]["uid"].as_str().unwrap_or_default();
        let name = format!("{service_name}-{}", suffix(uid));
        wanted.insert((ns.clone(), name.clone()), ());
        let (endpoints, ports) =
            slice_content(&service, pods_by_ns.get(&ns).map_or(&[][..], |p| &p[..]));
        let live = store.get(&slices_rt, &ns, &name).ok();
        if live.as_ref().is_some_and(|l| {
            l["endpoints"].as_array().cloned().unwrap_or_default() == endpoints
                && l["ports"].as_array().cloned().unwrap_or_default() == ports
        }) {
            continue;
        }
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {
                    SERVICE_NAME_LABEL: service_name,
                    MANAGED_BY_LABEL: MANAGED_BY,
                },
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service_name,
                    "uid": uid, "controller": true, "blockOwnerDeletion": true}],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        });
        let _ = store.modify(&slices_rt, &ns, &name, Scope::Main, &opts, true, |live| {
            let mut slice = slice.clone();
            if let Some(live) = live {
                slice["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
            }
            Ok(slice)
        });
    }
    // Slices of Services gone or no longer selecting (only the controller's own).
    for slice in store.list(&slices_rt, None).0 {
        if labels(&slice).get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
            continue;
        }
        let ns = slice["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = slice["metadata"]["name"].as_str().unwrap_or_default();
        if !wanted.contains_key(&(ns.to_string(), name.to_string())) {
            let _ = store.delete(&slices_rt, ns, name, &DeleteOpts::default());
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
            tokio::time::sleep(COALESCE).await;
            while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
                rx.try_recv()
            {}
        }
    })
}
