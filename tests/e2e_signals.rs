//! End to end: the signals users and runbooks read are true. Failback waits its whole hold for
//! every component sharing a pool, counted from when private capacity returned; Events say what
//! happened each time; a pool's `gpusFree` drops as replicas run.
//!
//! Demand comes from a stand-in for Prometheus's query API that answers each component's query
//! with the value the test sets, so the counts are exact.

mod e2e_support;

use e2e_support::*;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube_harness::NodeSpec;
use skybridge::api::{Cloud, ModelDeployment};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Answers `/api/v1/query` with the demand set for the component named in the query
/// (`demand_NAME`), as an instant vector.
struct FakePrometheus {
    url: String,
    demand: Arc<Mutex<BTreeMap<String, f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakePrometheus {
    async fn start() -> Self {
        let demand: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let addr: SocketAddr = listener.local_addr().expect("bound");
        let app = {
            let demand = demand.clone();
            axum::Router::new().route(
                "/api/v1/query",
                axum::routing::get(move |query: axum::extract::RawQuery| {
                    let demand = demand.clone();
                    async move {
                        // The query `demand_NAME` needs no URL encoding: `query=demand_NAME`.
                        let raw = query.0.unwrap_or_default();
                        let component = raw.strip_prefix("query=demand_").unwrap_or_default();
                        let value = demand
                            .lock()
                            .unwrap()
                            .get(component)
                            .copied()
                            .unwrap_or(0.0);
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs_f64();
                        serde_json::json!({
                            "status": "success",
                            "data": {"resultType": "vector", "result": [
                                {"metric": {}, "value": [now, value.to_string()]}
                            ]}
                        })
                        .to_string()
                    }
                }),
            )
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            demand,
            task,
        }
    }

    fn set(&self, component: &str, demand: f64) {
        self.demand
            .lock()
            .unwrap()
            .insert(component.to_string(), demand);
    }
}

impl Drop for FakePrometheus {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A policy reading `demand_$component`, 100 per replica, failback after
/// `failback_seconds`.
fn policy(prometheus: &FakePrometheus, failback_seconds: u32) -> String {
    format!(
        r#"
apiVersion: skybridge.io/v1alpha1
kind: BurstPolicy
metadata: {{name: signals}}
spec:
  metric:
    prometheusUrl: "{}"
    query: demand_$component
    targetPerReplica: 100
    intervalSeconds: 5
  scaleUp: {{stabilizationWindowSeconds: 0, periodSeconds: 1}}
  scaleDown: {{stabilizationWindowSeconds: 0, periodSeconds: 1}}
  burst:
    enabled: true
    pools: [cloud-l4]
    failbackAfterSeconds: {failback_seconds}
"#,
        prometheus.url
    )
}

/// A deployment of GPU components, each `(name, min, max)`, all naming the policy.
fn deployment(name: &str, components: &[(&str, u32, u32)]) -> String {
    let mut yaml = format!(
        r#"
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}, namespace: {APP_NAMESPACE}}}
spec:
  model: {{source: {{uri: "s3://models/{name}", pool: dc1-l4}}, version: "1"}}
  components:
"#
    );
    for (component, min, max) in components {
        yaml.push_str(&format!(
            r#"    - name: {component}
      dataClass: internal
      image: pytorch/torchserve:0.12.0-gpu
      resources: {{gpu: {{count: 1, type: nvidia-l4}}, cpu: "1", memory: 1Gi}}
      replicas: {{min: {min}, max: {max}}}
      burstPolicy: signals
"#
        ));
    }
    yaml
}

/// Replicas of `component` on pools of `cloud`, from the status.
fn on_cloud(md: &ModelDeployment, component: &str, cloud: Cloud) -> u32 {
    md.status
        .as_ref()
        .and_then(|s| s.components.iter().find(|c| c.name == component))
        .map_or(0, |c| {
            c.placements
                .iter()
                .filter(|p| p.cloud == cloud)
                .map(|p| p.replicas)
                .sum()
        })
}

fn private_gpus(n: u32) -> NodeSpec {
    NodeSpec::new("dc1-gpu-0")
        .gpus(n)
        .label(POOL_LABEL, "dc1-l4")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_sharing_a_full_pool_each_wait_their_hold_from_the_capacity_return() {
    const HOLD_SECONDS: u64 = 15;
    let estate = Estate::start(4, 16).await;
    if !estate.harness_only(
        "components_sharing_a_full_pool_each_wait_their_hold_from_the_capacity_return",
    ) {
        return;
    }
    estate.apply_pools();
    let prometheus = FakePrometheus::start().await;
    // 2 + 2 replicas fill the 4 private GPUs; then 4 + 3: each bursts its extra replicas. Rates
    // sit mid-way between replica boundaries, so the scale-down dead band cannot hold one more.
    prometheus.set("a", 150.0);
    prometheus.set("b", 150.0);
    estate.apply(&policy(&prometheus, HOLD_SECONDS as u32));
    let _operator = Operator::start(&estate).await;
    estate.apply(&deployment("pair", &[("a", 1, 8), ("b", 1, 8)]));
    wait_for(&estate, "pair", "2 + 2 private replicas, Ready", |md| {
        on_cloud(md, "a", Cloud::Private) == 2
            && on_cloud(md, "b", Cloud::Private) == 2
            && is_true(md, "Ready")
    })
    .await;
    prometheus.set("a", 350.0);
    prometheus.set("b", 250.0);
    wait_for(
        &estate,
        "pair",
        "4 + 3 replicas, both bursting, Ready",
        |md| {
            let total = |c| on_cloud(md, c, Cloud::Private) + on_cloud(md, c, Cloud::Public);
            total("a") == 4
                && total("b") == 3
                && on_cloud(md, "a", Cloud::Public) > 0
                && on_cloud(md, "b", Cloud::Public) > 0
                && on_cloud(md, "a", Cloud::Private) + on_cloud(md, "b", Cloud::Private) == 4
                && is_true(md, "Ready")
        },
    )
    .await;

    // The pool stays full for longer than the hold: a hold counted from before the return (a
    // component "fitting" next to its sibling's replicas) has run out when the GPUs come back.
    tokio::time::sleep(Duration::from_secs(HOLD_SECONDS + 5)).await;
    let md = estate.deployments_api().get("pair").await.unwrap();
    for component in ["a", "b"] {
        assert!(
            on_cloud(&md, component, Cloud::Public) > 0,
            "{component} stays public while the pool is full"
        );
    }

    let restored = Instant::now();
    estate
        .private
        .upsert_node(private_gpus(12))
        .expect("node restored");
    // When each component first moves replicas from public to private.
    let mut first_failback: BTreeMap<&str, Duration> = BTreeMap::new();
    let placed = |md: &ModelDeployment, c| {
        (
            on_cloud(md, c, Cloud::Private),
            on_cloud(md, c, Cloud::Public),
        )
    };
    let mut last: BTreeMap<&str, (u32, u32)> =
        ["a", "b"].iter().map(|c| (*c, placed(&md, c))).collect();
    let api = estate.deployments_api();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let md = api.get("pair").await.expect("deployment readable");
        for component in ["a", "b"] {
            let (private, public) = placed(&md, component);
            let (was_private, was_public) = last[component];
            if public < was_public && private > was_private {
                first_failback
                    .entry(component)
                    .or_insert_with(|| restored.elapsed());
            }
            last.insert(component, (private, public));
        }
        let home = last.values().all(|&(_, public)| public == 0)
            && on_cloud(&md, "a", Cloud::Private) == 4
            && on_cloud(&md, "b", Cloud::Private) == 3;
        if home {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for both components back on private GPUs: {:?}",
            md.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for component in ["a", "b"] {
        let waited = first_failback[component];
        assert!(
            waited >= Duration::from_secs(HOLD_SECONDS),
            "{component} failed back {waited:?} after the GPUs returned, before its {HOLD_SECONDS} s hold"
        );
    }
    event_with_reason(&estate, APP_NAMESPACE, "pair", "Failback").await;
}

/// Notes of the Events with `reason` about `regarding`.
async fn notes(estate: &Estate, regarding: &str, reason: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(estate.hub_client(), APP_NAMESPACE);
    let Ok(list) = events.list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
        })
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scale_up_event_says_what_happened_that_time() {
    let estate = Estate::start(16, 8).await;
    estate.apply_pools();
    let prometheus = FakePrometheus::start().await;
    prometheus.set("ranker", 150.0);
    estate.apply(&policy(&prometheus, 600));
    let _operator = Operator::start(&estate).await;
    estate.apply(&deployment("ranker", &[("ranker", 1, 16)]));
    wait_for(&estate, "ranker", "2 replicas for 150", |md| {
        md.status.as_ref().is_some_and(|s| s.desired_replicas == 2) && is_true(md, "Ready")
    })
    .await;

    prometheus.set("ranker", 350.0);
    wait_for(&estate, "ranker", "4 replicas for 350", |md| {
        md.status.as_ref().is_some_and(|s| s.desired_replicas == 4) && is_true(md, "Ready")
    })
    .await;
    prometheus.set("ranker", 1150.0);
    wait_for(&estate, "ranker", "12 replicas for 1150", |md| {
        md.status.as_ref().is_some_and(|s| s.desired_replicas == 12) && is_true(md, "Ready")
    })
    .await;

    // Both scale-ups are visible with their own numbers (the demand forecast may overshoot a
    // step and scale back down, so the targets are compared, not the exact notes).
    let seen = eventually("ScaleUp notes to 4 or more and to 12 or more", || async {
        let seen = notes(&estate, "ranker", "ScaleUp").await;
        let targets: Vec<u32> = seen.iter().filter_map(|n| scale_target(n)).collect();
        let has = |range: std::ops::Range<u32>| targets.iter().any(|t| range.contains(t));
        (has(4..12) && has(12..17)).then_some(seen)
    })
    .await;
    assert!(
        seen.iter()
            .all(|n| n.starts_with("component ranker: ") && scale_target(n).is_some()),
        "{seen:?}"
    );
}

/// The replicas a `ScaleUp`/`ScaleDown` note scales to: `component C: A → B replicas: why`.
fn scale_target(note: &str) -> Option<u32> {
    let (_, after) = note.split_once(" → ")?;
    after.split_once(" replicas")?.0.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_failing_with_another_url_is_a_new_event_naming_it() {
    let estate = Estate::start(8, 8).await;
    estate.apply_pools();
    // Nothing listens on port 9 of loopback: every read fails, naming the URL.
    let (first, second) = ("http://127.0.0.1:9", "http://localhost:9");
    let policy_at = |url: &str| {
        format!(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: BurstPolicy
metadata: {{name: signals}}
spec:
  metric: {{prometheusUrl: "{url}", query: demand_$component, targetPerReplica: 100, intervalSeconds: 5}}
  burst: {{enabled: true, pools: [cloud-l4]}}
"#
        )
    };
    estate.apply(&policy_at(first));
    let _operator = Operator::start(&estate).await;
    estate.apply(&deployment("ranker", &[("ranker", 2, 4)]));
    eventually("a MetricUnavailable Event naming the first URL", || async {
        let seen = notes(&estate, "ranker", "MetricUnavailable").await;
        seen.iter().any(|n| n.contains(first)).then_some(())
    })
    .await;

    // The platform team points the policy elsewhere, still broken: the status does not change
    // (the last decision holds), but the Event tells the new error.
    estate.apply(&policy_at(second));
    let seen = eventually(
        "a MetricUnavailable Event naming the second URL",
        || async {
            let seen = notes(&estate, "ranker", "MetricUnavailable").await;
            seen.iter().any(|n| n.contains(second)).then_some(seen)
        },
    )
    .await;
    assert!(seen.iter().any(|n| n.contains(first)), "{seen:?}");
}

/// The dc1-l4 pool's `(gpus, gpusFree)` once it reports free capacity.
async fn pool_gpus(estate: &Estate) -> Option<(u32, u32)> {
    let pool = estate.pools_api().get("dc1-l4").await.ok()?;
    let observed = pool.status?.observed_capacity?;
    Some((observed.gpus, observed.gpus_free?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_free_drops_as_replicas_run_and_returns_when_they_go() {
    gpus_free_under_load(
        "gpus_free_drops_as_replicas_run_and_returns_when_they_go",
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_free_of_a_pool_of_many_nodes_counts_the_pods_of_the_whole_cluster() {
    // Beyond 8 Nodes the probe lists every unfinished pod of the cluster, page by page, rather
    // than the pods of each Node.
    gpus_free_under_load(
        "gpus_free_of_a_pool_of_many_nodes_counts_the_pods_of_the_whole_cluster",
        8,
    )
    .await;
}

/// The private pool: one Node with 8 GPUs and `cpu_nodes` Nodes without GPUs.
async fn gpus_free_under_load(test: &str, cpu_nodes: u32) {
    let estate = Estate::start(8, 8).await;
    if !estate.harness_only(test) {
        return;
    }
    for i in 0..cpu_nodes {
        estate
            .private
            .upsert_node(NodeSpec::new(&format!("dc1-cpu-{i}")).label(POOL_LABEL, "dc1-l4"))
            .expect("node added");
    }
    estate.apply_pools();
    let _operator = Operator::start(&estate).await;
    eventually("8 of 8 GPUs free before any replica", || async {
        (pool_gpus(&estate).await? == (8, 8)).then_some(())
    })
    .await;

    estate.apply(&deployment_yaml("ranker", "internal", 3, 3, ""));
    wait_for(&estate, "ranker", "3 replicas Ready", |md| {
        is_true(md, "Ready")
    })
    .await;
    eventually("3 GPUs requested, 5 free", || async {
        (pool_gpus(&estate).await? == (8, 5)).then_some(())
    })
    .await;

    // Pods Skybridge does not own count too: whatever runs on the pool's Nodes requests GPUs.
    estate
        .private
        .apply_yaml(
            &format!(
                r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: batch-job, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: batch-job}}}}
  template:
    metadata: {{labels: {{app: batch-job}}}}
    spec:
      nodeSelector: {{{POOL_LABEL}: dc1-l4}}
      containers:
        - name: train
          image: trainer:1
          resources: {{limits: {{nvidia.com/gpu: "2"}}}}
"#
            ),
            "kubectl",
        )
        .expect("batch job applies");
    eventually("5 GPUs requested, 3 free", || async {
        (pool_gpus(&estate).await? == (8, 3)).then_some(())
    })
    .await;

    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(estate.private.client().unwrap(), "default");
    deployments
        .delete("batch-job", &Default::default())
        .await
        .expect("batch job deleted");
    eventually("its GPUs are free again", || async {
        (pool_gpus(&estate).await? == (8, 5)).then_some(())
    })
    .await;
}
