//! End to end with real demand: a load generator, a real Prometheus scraping it, and the
//! operator reading its policy's query. The test changes the request rate and watches replicas
//! follow, bursts start and end, failback wait for its window, and a policy change take effect.
//! Rates sit mid-way between replica boundaries (150 rps for 2 replicas of 100 rps), so that
//! the measuring error of `rate()` cannot tip a count.

mod e2e_support;

use e2e_support::demand::{DEMAND_QUERY, LoadGenerator, Prometheus, policy_yaml};
use e2e_support::*;
use kube::api::{Api, Patch, PatchParams};
use kube_harness::NodeSpec;
use serde_json::json;
use skybridge::api::BurstPolicy;
use std::time::{Duration, Instant};

/// Real demand for the deployment `ranker`: a load generator and Prometheus scraping it.
struct Demand {
    load: LoadGenerator,
    prometheus: Prometheus,
}

impl Demand {
    /// Sets the load on `ranker` to `rps` and waits until Prometheus sees it.
    async fn set(&self, rps: f64) {
        self.load.set_rate("ranker", rps);
        let query = DEMAND_QUERY.replace("$deployment", "ranker");
        eventually(&format!("Prometheus measures {rps} rps"), || {
            let query = query.clone();
            async move {
                let value = self.prometheus.value(&query).await?;
                ((value - rps).abs() <= rps * 0.1).then_some(())
            }
        })
        .await;
    }
}

/// `startupSeconds` of the public pool `cloud-l4` in `e2e_support`'s estate.
const PUBLIC_STARTUP_SECONDS: u64 = 120;

/// `burst` settings of a policy whose private pools are shared with other work.
const SHARED_PRIVATE: &str = "    privateCapacityShared: true";

/// Pools, `rps` of demand seen by Prometheus, the policy `ranking` reading it (with
/// `policy_extra` under `burst`), the operator, then `ranker` with at most `max` replicas.
async fn ranker_on_demand(
    estate: &Estate,
    rps: f64,
    policy_extra: &str,
    max: u32,
) -> (Demand, Operator) {
    estate.apply_pools();
    let load = LoadGenerator::start().await;
    let prometheus = Prometheus::start(load.addr).await;
    let demand = Demand { load, prometheus };
    demand.set(rps).await;
    estate.apply(&policy_yaml(
        "ranking",
        &demand.prometheus.url,
        100.0,
        policy_extra,
    ));
    let operator = Operator::start(estate).await;
    estate.apply(&ranker_with_policy("ranker", max));
    (demand, operator)
}

fn ranker_with_policy(name: &str, max: u32) -> String {
    deployment_yaml(name, "internal", 1, max, "      burstPolicy: ranking")
}

fn desired(md: &skybridge::api::ModelDeployment) -> u32 {
    md.status.as_ref().map_or(0, |s| s.desired_replicas)
}

async fn policy_status(estate: &Estate) -> Option<skybridge::api::BurstPolicyStatus> {
    let api: Api<BurstPolicy> = Api::all(estate.hub_client());
    api.get_opt("ranking").await.ok().flatten()?.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_demand_read_from_prometheus() {
    let estate = Estate::start(8, 8).await;
    // Private GPUs shared with other work: idle private replicas are released, so private
    // replicas follow demand too (owned capacity would be kept warm, see burst_controller tests).
    let (demand, _operator) = ranker_on_demand(&estate, 150.0, SHARED_PRIVATE, 8).await;

    wait_for(&estate, "ranker", "2 replicas for 150 rps, Ready", |md| {
        desired(md) == 2 && is_true(md, "Ready")
    })
    .await;

    demand.set(350.0).await;
    let md = wait_for(&estate, "ranker", "4 replicas for 350 rps, Ready", |md| {
        desired(md) == 4 && is_true(md, "Ready")
    })
    .await;
    assert_eq!(replicas_on(&md, "dc1-l4"), 4, "private capacity suffices");
    assert!(!is_true(&md, "Bursting"));
    event_with_reason(&estate, APP_NAMESPACE, "ranker", "ScaleUp").await;

    demand.set(150.0).await;
    wait_for(&estate, "ranker", "back to 2 replicas for 150 rps", |md| {
        desired(md) == 2 && is_true(md, "Ready")
    })
    .await;
    event_with_reason(&estate, APP_NAMESPACE, "ranker", "ScaleDown").await;
    eventually("the private cluster runs 2 replicas", || async {
        (total_replicas(&children(&estate.private).await) == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peak_bursts_to_public_and_its_end_releases_public_replicas_first() {
    let estate = Estate::start(4, 16).await;
    let (demand, _operator) = ranker_on_demand(&estate, 150.0, SHARED_PRIVATE, 10).await;
    wait_for(&estate, "ranker", "2 private replicas, Ready", |md| {
        desired(md) == 2 && is_true(md, "Ready") && !is_true(md, "Bursting")
    })
    .await;

    // The peak: 7 replicas, of which 4 fit the private GPUs. Prometheus's rate climbs to 650
    // over a few scrapes; a burst that went public on the way up is not chased by one more
    // replica while its replicas start (up to the public start-up), so allow for that.
    demand.set(650.0).await;
    let patience = PATIENCE + Duration::from_secs(PUBLIC_STARTUP_SECONDS);
    let md = wait_for_within(
        &estate,
        "ranker",
        "7 replicas, bursting, Ready",
        patience,
        |md| desired(md) == 7 && is_true(md, "Ready") && is_true(md, "Bursting"),
    )
    .await;
    assert_eq!(replicas_on(&md, "dc1-l4"), 4);
    assert_eq!(replicas_on(&md, "cloud-l4"), 3);
    assert_eq!(total_replicas(&children(&estate.public).await), 3);
    event_with_reason(&estate, APP_NAMESPACE, "ranker", "BurstStart").await;
    let bursting = eventually("the policy reports 3 public replicas", || async {
        policy_status(&estate)
            .await
            .filter(|s| s.public_replicas == 3)
    })
    .await;
    assert!((bursting.cost_per_hour - 2.7).abs() < 1e-9, "3 × 0.9/h");

    // The peak passes down to what private capacity holds: the scale-down removes the public
    // replicas, not the cheaper private ones.
    // Public replicas are held through a dip shorter than the public pool's start-up (120 s:
    // released and needed again, they would start again, paid and not serving), unless demand
    // is forecast to keep falling; so this wait may last that long.
    demand.set(350.0).await;
    let md = wait_for_within(
        &estate,
        "ranker",
        "4 replicas, all private",
        patience,
        |md| desired(md) == 4 && is_true(md, "Ready") && !is_true(md, "Bursting"),
    )
    .await;
    assert_eq!(replicas_on(&md, "dc1-l4"), 4);
    assert_eq!(replicas_on(&md, "cloud-l4"), 0);
    event_with_reason(&estate, APP_NAMESPACE, "ranker", "BurstEnd").await;
    eventually("the public cluster is empty", || async {
        (total_replicas(&children(&estate.public).await) == 0).then_some(())
    })
    .await;
    eventually("the policy reports no public replicas", || async {
        policy_status(&estate)
            .await
            .filter(|s| s.public_replicas == 0 && s.cost_per_hour == 0.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_pushed_public_fail_back_only_after_the_window() {
    const FAILBACK_SECONDS: u64 = 20;
    let estate = Estate::start(4, 16).await;
    if !estate.harness_only("replicas_pushed_public_fail_back_only_after_the_window") {
        return;
    }
    let failback = format!("    failbackAfterSeconds: {FAILBACK_SECONDS}");
    let (_demand, _operator) = ranker_on_demand(&estate, 250.0, &failback, 10).await;
    wait_for(&estate, "ranker", "3 private replicas, Ready", |md| {
        desired(md) == 3 && replicas_on(md, "dc1-l4") == 3 && is_true(md, "Ready")
    })
    .await;

    // The data centre loses 3 of its 4 GPUs: 2 replicas burst.
    let gpus = |n| {
        NodeSpec::new("dc1-gpu-0")
            .gpus(n)
            .label(POOL_LABEL, "dc1-l4")
    };
    estate.private.upsert_node(gpus(1)).expect("node resized");
    wait_for(&estate, "ranker", "2 replicas pushed public, Ready", |md| {
        replicas_on(md, "dc1-l4") == 1 && replicas_on(md, "cloud-l4") == 2 && is_true(md, "Ready")
    })
    .await;

    // The GPUs come back: the public replicas stay for the whole window, then come home.
    let restored = Instant::now();
    estate.private.upsert_node(gpus(4)).expect("node restored");
    let md = wait_for(&estate, "ranker", "failed back to private", |md| {
        replicas_on(md, "cloud-l4") == 0 && replicas_on(md, "dc1-l4") == 3 && is_true(md, "Ready")
    })
    .await;
    let waited = restored.elapsed();
    assert!(
        waited >= Duration::from_secs(FAILBACK_SECONDS),
        "failback after {waited:?}, before the {FAILBACK_SECONDS} s window"
    );
    assert!(!is_true(&md, "Bursting"));
    event_with_reason(&estate, APP_NAMESPACE, "ranker", "Failback").await;
    eventually("the public cluster is empty", || async {
        (total_replicas(&children(&estate.public).await) == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_changed_live_rescales_and_its_budget_binds() {
    let estate = Estate::start(4, 16).await;
    let (_demand, _operator) = ranker_on_demand(&estate, 375.0, "", 10).await;
    wait_for(&estate, "ranker", "4 private replicas, Ready", |md| {
        desired(md) == 4 && is_true(md, "Ready") && !is_true(md, "Bursting")
    })
    .await;

    // Half the requests per replica: twice the replicas, half of them public.
    let policies: Api<BurstPolicy> = Api::all(estate.hub_client());
    policies
        .patch(
            "ranking",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"metric": {"targetPerReplica": 50.0}}})),
        )
        .await
        .expect("policy patch applies");
    let md = wait_for(&estate, "ranker", "8 replicas, bursting, Ready", |md| {
        desired(md) == 8 && is_true(md, "Ready") && is_true(md, "Bursting")
    })
    .await;
    assert_eq!(replicas_on(&md, "cloud-l4"), 4);

    // A budget of 2 public replicas: 2 go, 2 wait, and both objects say why.
    policies
        .patch(
            "ranking",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"burst": {"maxPublicReplicas": 2}}})),
        )
        .await
        .expect("policy patch applies");
    let md = wait_for(
        &estate,
        "ranker",
        "2 public replicas under the budget",
        |md| {
            replicas_on(md, "cloud-l4") == 2
                && md.status.as_ref().unwrap().components[0].unplaced_replicas == 2
        },
    )
    .await;
    let reason = md.status.as_ref().unwrap().components[0]
        .unplaced_reason
        .clone()
        .unwrap_or_default();
    assert!(reason.contains("maxPublicReplicas 2"), "{reason}");
    let status = eventually("the policy reports its budget exhausted", || async {
        policy_status(&estate).await.filter(|s| {
            s.public_replicas == 2
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "BudgetExhausted" && c.status == "True")
        })
    })
    .await;
    assert_eq!(status.components, vec!["shop/ranker/ranker".to_string()]);
    let exhausted = status
        .conditions
        .iter()
        .find(|c| c.type_ == "BudgetExhausted")
        .unwrap();
    assert!(
        exhausted.message.contains("maxPublicReplicas 2 reached")
            && exhausted.message.contains("shop/ranker/ranker (2)"),
        "{}",
        exhausted.message
    );
    let event = event_with_reason(&estate, "default", "ranking", "BudgetExhausted").await;
    let note = event.note.unwrap_or_default();
    assert!(note.contains("maxPublicReplicas 2"), "{note}");
    eventually("the public cluster runs 2 replicas", || async {
        (total_replicas(&children(&estate.public).await) == 2).then_some(())
    })
    .await;
}
