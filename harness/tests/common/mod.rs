//! Helpers shared by the harness's integration tests: raw HTTP (to check status codes and
//! bodies exactly), polling with a deadline, and the project's CRDs.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kube_harness::{Cluster, ClusterConfig, ClusterHandle};
use serde_json::Value;

/// The project's CRDs, as `skybridge crd` prints them.
pub const CRDS: &str = include_str!("../../../crds/skybridge.yaml");

/// Start a cluster with defaults suitable for tests.
pub async fn start(name: &str) -> ClusterHandle {
    Cluster::start(ClusterConfig::new(name))
        .await
        .expect("cluster starts")
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    pub body: Value,
    pub headers: hyper::HeaderMap,
}

/// One HTTP request; the body is parsed as JSON (Null if empty or not JSON).
pub async fn http(method: &str, url: &str, content_type: Option<&str>, body: &str) -> Answer {
    try_http(method, url, content_type, body)
        .await
        .expect("HTTP request")
}

/// One HTTP request that may fail at the connection level.
pub async fn try_http(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: &str,
) -> Result<Answer, String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder().method(method).uri(url);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        code,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
    })
}

/// Create from JSON, expecting success.
pub async fn post(base: &str, path: &str, body: Value) -> Value {
    let a = http(
        "POST",
        &format!("{base}{path}"),
        Some("application/json"),
        &body.to_string(),
    )
    .await;
    assert!(
        a.code == 201 || a.code == 200,
        "POST {path}: {} {}",
        a.code,
        a.body
    );
    a.body
}

/// A watch stream as parsed events; ends when the server ends it.
pub async fn watch_events(url: &str) -> (u16, futures::stream::BoxStream<'static, Value>) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(
            hyper::Request::get(url)
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("watch request");
    let code = resp.status().as_u16();
    let body = resp.into_body();
    let frames =
        futures::stream::unfold((body, Vec::<u8>::new()), |(mut body, mut buf)| async move {
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let v: Value = serde_json::from_slice(&line).expect("watch line is JSON");
                    return Some((v, (body, buf)));
                }
                match body.frame().await {
                    Some(Ok(f)) => {
                        if let Ok(d) = f.into_data() {
                            buf.extend_from_slice(&d);
                        }
                    }
                    _ => return None,
                }
            }
        });
    (code, frames.boxed())
}

/// Next event within a deadline (None: stream ended).
pub async fn next_event(
    s: &mut futures::stream::BoxStream<'static, Value>,
    secs: u64,
) -> Option<Value> {
    tokio::time::timeout(Duration::from_secs(secs), s.next())
        .await
        .expect("watch event within deadline")
}

/// Poll `f` until it returns Some or the deadline passes (then panic with `what`).
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Install the project's CRDs through the API (as `kubectl create -f` would).
pub async fn install_crds(base: &str) {
    for doc in serde_yaml_ng::Deserializer::from_str(CRDS) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("CRD yaml");
        if v.is_null() {
            continue;
        }
        post(
            base,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            v,
        )
        .await;
    }
}

/// A valid ComputePool.
pub fn pool(name: &str, cloud: &str) -> Value {
    serde_json::json!({
        "apiVersion": "skybridge.io/v1alpha1",
        "kind": "ComputePool",
        "metadata": {"name": name},
        "spec": {
            "cloud": cloud,
            "provider": "onprem",
            "region": "fra-dc1",
            "capacity": {"gpu": {"type": "nvidia-a100-80gb", "count": 16}},
        }
    })
}

/// A Deployment asking `replicas` pods of `gpus` GPUs each.
pub fn deployment(name: &str, replicas: u32, gpus: u32) -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "server", "image": "triton:1",
                    "resources": {"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": gpus.to_string()},
                                  "limits": {"nvidia.com/gpu": gpus.to_string()}}}]}
            }
        }
    })
}
