//! The `/harness/...` control endpoint, for tests that drive the binary over HTTP:
//!
//! - `GET /harness/nodes` – the Node objects; `PUT|POST /harness/nodes` – add or replace a node,
//!   body a JSON `NodeSpec` or the CLI form as text (`gpu-a,gpu=8,...`);
//!   `DELETE /harness/nodes/<name>`.
//! - `GET|PUT|DELETE /harness/faults` – body `{"seed": 1, "rules": [FaultRule...]}`.
//! - `POST /harness/watches/close` – end every open watch stream now.
//! - `POST /harness/unreachable?durationMs=N[&mode=refuse|hang]` – refuse connections (or, with
//!   `hang`, accept them and never answer) for N ms, then serve again on the same port (the answer
//!   is sent before the cluster goes down).
//! - `PUT /harness/readiness-delay?ms=N` – kubelet readiness delay.
//! - `GET|PUT|DELETE /harness/capacity` – stockouts and elastic pools, body a JSON
//!   `CapacityScenario` (`{"stockouts": [{"pool": "spot"}], "elastic": [{"selector": {...},
//!   "template": NodeSpec, "delayMs": N, "maxNodes": N, "noScaleUp": false}]}`; `noScaleUp`:
//!   the autoscaler adds no node and tells each unschedulable pod of the pool so, with
//!   cluster-autoscaler's `NotTriggerScaleUp` Event).
//! - `POST /harness/nodes/<name>/reclaim?noticeMs=N[&taint=KEY[=VALUE]]` – taint the node for
//!   reclamation now (default `karpenter.sh/disrupted`, `NoSchedule`) and delete it after N ms.
//! - `DELETE /harness/nodes/<name>/reclaim[?taint=KEY]` – cancel a reclamation: the node is not
//!   deleted and the taint (default `karpenter.sh/disrupted`) is removed.
//!
//! Faults never apply to these paths.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};

use crate::api::{Body, error_response, json_response};
use crate::cluster::Inner;
use crate::error::{Error, Result};
use crate::faults::FaultRule;
use crate::kubelet::{CapacityScenario, NodeSpec, cancel_reclaim, reclaim_node};

/// Handle one control request.
pub async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    path: &str,
    q: &HashMap<String, String>,
) -> Response<Body> {
    match serve(inner, req, path, q).await {
        Ok(v) => json_response(200, &v),
        Err(e) => error_response(&e),
    }
}

async fn serve(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    path: &str,
    q: &HashMap<String, String>,
) -> Result<Value> {
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| Error::bad_request(e.to_string()))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    match (method, path.trim_end_matches('/')) {
        (Method::GET, "/harness/healthz") => Ok(json!({"ok": true})),
        (Method::GET, "/harness/nodes") => Ok(json!({"items": inner.nodes()})),
        (Method::PUT | Method::POST, "/harness/nodes") => {
            let spec: NodeSpec = if text.starts_with('{') {
                serde_json::from_str(&text).map_err(|e| Error::bad_request(e.to_string()))?
            } else {
                NodeSpec::parse(&text)?
            };
            inner.upsert_node(&spec)
        }
        (Method::POST, p) if p.starts_with("/harness/nodes/") && p.ends_with("/reclaim") => {
            let name = &p["/harness/nodes/".len()..p.len() - "/reclaim".len()];
            let notice: u64 = q
                .get("noticeMs")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::bad_request("noticeMs is required"))?;
            let (key, value) = match q.get("taint") {
                Some(taint) => match taint.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (taint.clone(), None),
                },
                None => ("karpenter.sh/disrupted".to_string(), None),
            };
            if key.is_empty() {
                return Err(Error::bad_request("taint needs a key"));
            }
            reclaim_node(
                inner.store.clone(),
                &inner.kubelet,
                name,
                &key,
                value.as_deref(),
                Duration::from_millis(notice),
            )
        }
        (Method::GET, "/harness/capacity") => {
            let scenario = inner
                .kubelet
                .capacity
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            serde_json::to_value(scenario).map_err(|e| Error::bad_request(e.to_string()))
        }
        (Method::PUT | Method::POST, "/harness/capacity") => {
            let scenario: CapacityScenario =
                serde_json::from_str(&text).map_err(|e| Error::bad_request(e.to_string()))?;
            scenario.check()?;
            *inner
                .kubelet
                .capacity
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = scenario;
            inner.kubelet.kick.notify_one();
            Ok(json!({"ok": true}))
        }
        (Method::DELETE, "/harness/capacity") => {
            *inner
                .kubelet
                .capacity
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = CapacityScenario::default();
            inner.kubelet.kick.notify_one();
            Ok(json!({"ok": true}))
        }
        (Method::DELETE, p) if p.starts_with("/harness/nodes/") && p.ends_with("/reclaim") => {
            let name = &p["/harness/nodes/".len()..p.len() - "/reclaim".len()];
            let key = q
                .get("taint")
                .map(|t| t.split_once('=').map_or(t.as_str(), |(k, _)| k))
                .unwrap_or("karpenter.sh/disrupted");
            cancel_reclaim(&inner.store, &inner.kubelet, name, key)
        }
        (Method::DELETE, p) if p.starts_with("/harness/nodes/") => {
            inner.remove_node(&p["/harness/nodes/".len()..])?;
            Ok(json!({"deleted": true}))
        }
        (Method::GET, "/harness/faults") => {
            Ok(json!({"rules": inner.faults.lock().unwrap_or_else(|e| e.into_inner()).rules()}))
        }
        (Method::PUT | Method::POST, "/harness/faults") => {
            let v: Value =
                serde_json::from_str(&text).map_err(|e| Error::bad_request(e.to_string()))?;
            let rules: Vec<FaultRule> = serde_json::from_value(v["rules"].clone())
                .map_err(|e| Error::bad_request(e.to_string()))?;
            inner.set_faults(rules, v["seed"].as_u64())?;
            Ok(json!({"ok": true}))
        }
        (Method::DELETE, "/harness/faults") => {
            inner.set_faults(Vec::new(), None)?;
            Ok(json!({"ok": true}))
        }
        (Method::POST, "/harness/watches/close") => {
            inner.close_watches();
            Ok(json!({"ok": true}))
        }
        (Method::POST, "/harness/unreachable") => {
            let ms: u64 = q
                .get("durationMs")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::bad_request("durationMs is required"))?;
            let hang = match q.get("mode").map(String::as_str) {
                None | Some("refuse") => false,
                Some("hang") => true,
                Some(other) => {
                    return Err(Error::bad_request(format!(
                        "unknown mode {other}: refuse or hang"
                    )));
                }
            };
            let inner2 = inner.clone();
            tokio::spawn(async move {
                // Let this answer reach the client before the connections drop.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if hang {
                    if let Err(e) = inner2.set_unresponsive().await {
                        tracing::error!("cluster {} could not rebind: {e}", inner2.name);
                    }
                } else {
                    inner2.set_unreachable();
                }
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if let Err(e) = inner2.set_reachable().await {
                    tracing::error!("cluster {} could not rebind: {e}", inner2.name);
                }
            });
            Ok(json!({"ok": true}))
        }
        (Method::PUT | Method::POST, "/harness/readiness-delay") => {
            let ms: u64 = q
                .get("ms")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::bad_request("ms is required"))?;
            inner.set_readiness_delay(Duration::from_millis(ms));
            Ok(json!({"ok": true}))
        }
        _ => Err(Error::no_route()),
    }
}
