//! The Multi-Cluster Services stand-in: what an MCS implementation (Cilium ClusterMesh,
//! Submariner Lighthouse, GKE) does with the API objects, without any networking.
//!
//! A [`ClusterSet`] links running clusters. Whenever a member's `ServiceExport` or `Service`
//! changes, every member gets, for each `ServiceExport` of the *other* members whose `Service`
//! (same namespace and name) exists, a `ServiceImport` of the same namespace and name: `type`
//! `ClusterSetIP` (`Headless` for a headless Service), the Service's ports, a stable fake
//! cluster-set IP, and `status.clusters` listing the exporting clusters. Same-name exports of
//! several clusters merge into one import (the MCS rule); the ports are the first exporter's in
//! set order. Imports whose exports went are deleted. Each export gets a `Valid` condition
//! (False `NoService` while its Service is missing). Only imports the stand-in made (annotation
//! [`MIRROR_ANNOTATION`]) are ever changed or deleted. Members that do not serve the MCS API
//! are skipped. Test-only.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::apply::Scope;
use crate::cluster::ClusterHandle;
use crate::error::{Error, Result};
use crate::resources::ResourceType;
use crate::store::{DeleteOpts, Store, WriteOpts, now};

/// The annotation on every `ServiceImport` the stand-in writes.
pub const MIRROR_ANNOTATION: &str = "kube-harness.test/mcs-mirror";

const MCS_GROUP: &str = "multicluster.x-k8s.io";
const MANAGER: &str = "kube-harness-mcs";
/// How long a pass lets further changes gather.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(5);

/// Linked clusters whose exports are mirrored into each other's imports; dropping it stops the
/// mirroring (the objects stay).
pub struct ClusterSet {
    task: tokio::task::JoinHandle<()>,
}

impl ClusterSet {
    /// Link these clusters (at least two, distinct names) and mirror their exports from now on.
    /// Must be called inside a Tokio runtime.
    pub fn link(members: &[&ClusterHandle]) -> Result<ClusterSet> {
        let mut names: Vec<&str> = members.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        if members.len() < 2 || names.len() != members.len() {
            return Err(Error::Config(
                "a cluster set needs at least two clusters with distinct names".into(),
            ));
        }
        let members: Vec<(String, Arc<Store>)> = members
            .iter()
            .map(|m| (m.name().to_string(), m.store()))
            .collect();
        let task = tokio::spawn(run(members));
        Ok(ClusterSet { task })
    }
}

impl Drop for ClusterSet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(members: Vec<(String, Arc<Store>)>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    // One forwarder per member: any relevant change of any member wakes the one loop.
    let forwarders: Vec<_> = members
        .iter()
        .map(|(_, store)| {
            let mut events = store.subscribe();
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(ev) if relevant(&ev.key) => {}
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                    // A full channel already holds a wake-up: nothing is lost.
                    let _ = tx.try_send(());
                }
            })
        })
        .collect();
    struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.iter().for_each(|t| t.abort());
        }
    }
    let _forwarders = AbortOnDrop(forwarders);
    drop(tx);
    loop {
        reconcile(&members);
        if rx.recv().await.is_none() {
            return;
        }
        tokio::time::sleep(COALESCE).await;
        while rx.try_recv().is_ok() {}
    }
}

fn relevant(key: &(String, String)) -> bool {
    (key.0 == MCS_GROUP && matches!(key.1.as_str(), "serviceexports" | "serviceimports"))
        || (key.0.is_empty() && key.1 == "services")
}

/// Any served version of `group/plural` (versions share storage).
fn served(store: &Store, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
    store
        .resource_types()
        .into_iter()
        .find(|t| t.group == group && t.plural == plural)
}

/// One exported Service: where from, and what the import copies.
struct Exported {
    cluster: String,
    ports: Vec<Value>,
    headless: bool,
}

/// The import's ports from a Service's ports (name, protocol, appProtocol, port).
fn import_ports(service: &Value) -> Vec<Value> {
    service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let mut out = json!({
                "port": p["port"],
                "protocol": p["protocol"].as_str().unwrap_or("TCP"),
            });
            for key in ["name", "appProtocol"] {
                if let Some(v) = p[key].as_str() {
                    out[key] = json!(v);
                }
            }
            out
        })
        .collect()
}

/// A stable fake cluster-set IP per namespace/name (in 242.0.0.0/8, reserved, never routed).
fn clusterset_ip(ns: &str, name: &str) -> String {
    let mut h: u32 = 2166136261;
    for b in ns.bytes().chain([b'/']).chain(name.bytes()) {
        h = (h ^ b as u32).wrapping_mul(16777619);
    }
    format!("242.{}.{}.{}", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff)
}

fn condition(old: &Value, kind: &str, ok: bool, reason: &str, message: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let since = old["status"]["conditions"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == kind && c["status"] == status)
        })
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or_else(|| json!(now()));
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": since})
}

/// One pass over the whole set.
fn reconcile(members: &[(String, Arc<Store>)]) {
    let opts = WriteOpts {
        manager: MANAGER.into(),
        ..Default::default()
    };
    // Every valid export of the set, by namespace/name, in set order.
    let mut exported: BTreeMap<(String, String), Vec<Exported>> = BTreeMap::new();
    for (cluster, store) in members {
        let (Some(exports_rt), Some(services_rt)) = (
            served(store, MCS_GROUP, "serviceexports"),
            store.resource("", "v1", "services"),
        ) else {
            continue;
        };
        for export in store.list(&exports_rt, None).0 {
            let ns = export["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = export["metadata"]["name"].as_str().unwrap_or_default();
            let service = store.get(&services_rt, ns, name).ok();
            let valid = match &service {
                Some(_) => condition(&export, "Valid", true, "Exported", "Service is exported"),
                None => condition(
                    &export,
                    "Valid",
                    false,
                    "NoService",
                    &format!("Service {ns}/{name} not found"),
                ),
            };
            if export["status"]["conditions"] != json!([valid]) {
                let _ = store.modify(&exports_rt, ns, name, Scope::Status, &opts, true, |live| {
                    live.ok_or_else(|| Error::not_found(MCS_GROUP, "serviceexports", name))?;
                    Ok(json!({"status": {"conditions": [valid]}}))
                });
            }
            let Some(service) = service else { continue };
            exported
                .entry((ns.to_string(), name.to_string()))
                .or_default()
                .push(Exported {
                    cluster: cluster.clone(),
                    ports: import_ports(&service),
                    headless: service["spec"]["clusterIP"] == "None",
                });
        }
    }
    for (cluster, store) in members {
        let Some(imports_rt) = served(store, MCS_GROUP, "serviceimports") else {
            continue;
        };
        let mut wanted: BTreeMap<(String, String), Value> = BTreeMap::new();
        for ((ns, name), sources) in &exported {
            let others: Vec<&Exported> = sources.iter().filter(|e| &e.cluster != cluster).collect();
            let Some(first) = others.first() else {
                continue;
            };
            let mut spec = json!({
                "type": if first.headless { "Headless" } else { "ClusterSetIP" },
                "ports": first.ports,
            });
            if !first.headless {
                spec["ips"] = json!([clusterset_ip(ns, name)]);
            }
            let clusters: Vec<Value> = others
                .iter()
                .map(|e| json!({"cluster": e.cluster}))
                .collect();
            wanted.insert(
                (ns.clone(), name.clone()),
                json!({"spec": spec, "status": {"clusters": clusters}}),
            );
        }
        // Remove the mirrored imports nobody exports any more.
        for import in store.list(&imports_rt, None).0 {
            let ns = import["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = import["metadata"]["name"].as_str().unwrap_or_default();
            let ours = import["metadata"]["annotations"][MIRROR_ANNOTATION] == "true";
            if ours && !wanted.contains_key(&(ns.to_string(), name.to_string())) {
                let _ = store.delete(&imports_rt, ns, name, &DeleteOpts::default());
            }
        }
        for ((ns, name), want) in wanted {
            let live = store.get(&imports_rt, &ns, &name).ok();
            if let Some(live) = &live
                && live["metadata"]["annotations"][MIRROR_ANNOTATION] != "true"
            {
                // Someone else's import of that name: leave it.
                continue;
            }
            if live.as_ref().map(|l| &l["spec"]) != Some(&want["spec"]) {
                let _ = store.modify(&imports_rt, &ns, &name, Scope::Main, &opts, true, |live| {
                    let mut obj = live.cloned().unwrap_or_else(|| {
                        json!({
                            "apiVersion": imports_rt.api_version(),
                            "kind": "ServiceImport",
                            "metadata": {"name": name, "namespace": ns,
                                         "annotations": {MIRROR_ANNOTATION: "true"}},
                        })
                    });
                    obj["spec"] = want["spec"].clone();
                    Ok(obj)
                });
            }
            let status_now = store
                .get(&imports_rt, &ns, &name)
                .map(|l| l["status"].clone())
                .unwrap_or_default();
            if status_now != want["status"] {
                let _ = store.modify(
                    &imports_rt,
                    &ns,
                    &name,
                    Scope::Status,
                    &opts,
                    true,
                    |live| {
                        live.ok_or_else(|| Error::not_found(MCS_GROUP, "serviceimports", &name))?;
                        Ok(json!({"status": want["status"]}))
                    },
                );
            }
        }
    }
}

/// Served versions of the MCS API a cluster may be asked to offer.
pub const MCS_VERSIONS: [&str; 2] = ["v1alpha1", "v1beta1"];
