//! End to end: model version rollouts (issue #17). Harness clusters with the Gateway API and
//! MCS stand-ins, a real Prometheus for the analysis, the real operator. Every traffic assertion
//! is over the watch history of the route, recorded from before the rollout began: the new
//! version's share of the route's weight, version by version.

mod e2e_support;

use e2e_support::demand::{LoadGenerator, Prometheus, REQUESTS_METRIC};
use e2e_support::traffic::*;
use e2e_support::*;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use skybridge::api::{ModelDeployment, RolloutPhase};
use std::time::{Duration, Instant};

const DRAIN_SECONDS: u32 = 1;

/// The ranker with a route and a canary rollout (`rollout` is the YAML of `spec.rollout`).
fn canary_deployment(min: u32, max: u32, rollout: &str) -> String {
    let routed = routed_deployment("ranker", "internal", min, max, DRAIN_SECONDS);
    // The source names its version: a canary runs both versions, each at its own prefix.
    let routed = routed.replace("s3://models/ranker\"", "s3://models/ranker/1\"");
    routed.replace(
        "  components:\n",
        &format!("  rollout:\n{rollout}  components:\n"),
    )
}

/// Rolls `ranker` out to `version` (at its own prefix).
async fn roll_to(estate: &Estate, version: &str) {
    patch_spec(
        estate,
        "ranker",
        json!({"model": {"version": version, "source": {"uri": format!("s3://models/ranker/{version}"), "pool": "dc1-l4"}}}),
    )
    .await;
}

fn rollout_of(md: &ModelDeployment) -> Option<&skybridge::api::RolloutStatus> {
    md.status.as_ref()?.rollout.as_ref()
}

/// The new version's share of a route version's weight, in percent: backends whose name ends
/// with the new version's key.
fn new_share(route: &Value, key: &str) -> f64 {
    let backends = route_backends(route);
    let total: u64 = backends.iter().map(|b| b.3).sum();
    let new: u64 = backends
        .iter()
        .filter(|b| b.2.ends_with(key))
        .map(|b| b.3)
        .sum();
    if total == 0 {
        0.0
    } else {
        100.0 * new as f64 / total as f64
    }
}

/// The key the operator names the version rolling out to by (status.rollout.namesKey once it
/// succeeded; here read from the new Deployments' label in the private cluster).
async fn new_key(estate: &Estate) -> String {
    eventually("the new version's Deployment", || async {
        let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(estate.private.client().ok()?, APP_NAMESPACE);
        let list = api.list(&Default::default()).await.ok()?;
        list.items.iter().find_map(|d| {
            d.metadata
                .labels
                .as_ref()?
                .get("skybridge.io/version-key")
                .cloned()
        })
    })
    .await
}

fn route_history(history: &History) -> Vec<(Instant, Value)> {
    history
        .versions()
        .into_iter()
        .filter(|s| !s.deleted)
        .map(|s| (s.at, s.object))
        .collect()
}

async fn annotate(estate: &Estate, action: &str) {
    estate
        .deployments_api()
        .patch(
            "ranker",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"skybridge.io/rollout-action": action}}}),
            ),
        )
        .await
        .expect("annotation applies");
}

/// A three-step canary passes every step and finishes: the new version's share of the route
/// only grows, step by step, never beyond the step reached; at the end the old version is gone,
/// the new one serves under its own names (recorded in `status.rollout.namesKey`) and the
/// deployment is Ready with `Progressing` True (`RolloutSucceeded`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_passes_every_step_and_finishes() {
    let (estate, _set) = start_traffic_estate(8, 8, Duration::from_millis(300)).await;
    let _operator = Operator::start(&estate).await;
    let routes = History::start(&estate.private, http_routes(), APP_NAMESPACE).await;
    let workloads = History::start(&estate.private, deployments(), APP_NAMESPACE).await;
    estate.apply(&canary_deployment(
        4,
        4,
        "    strategy: Canary\n    maxSurge: 1\n    steps:\n      - {setWeight: 20, pause: {seconds: 1}}\n      - {setWeight: 50, pause: {seconds: 1}}\n      - {setWeight: 80, pause: {seconds: 1}}\n",
    ));
    wait_for(&estate, "ranker", "v1 ready and recorded", |md| {
        is_true(md, "Ready")
            && is_true(md, "TrafficReady")
            && rollout_of(md).is_some_and(|r| r.to.version == "1")
    })
    .await;

    let began = Instant::now();
    roll_to(&estate, "2").await;
    let key = new_key(&estate).await;
    let md = wait_for_within(
        &estate,
        "ranker",
        "the rollout succeeded",
        Duration::from_secs(120),
        |md| {
            rollout_of(md)
                .is_some_and(|r| r.phase == RolloutPhase::Succeeded && r.to.version == "2")
        },
    )
    .await;
    let took = began.elapsed();
    println!(
        "figure: a three-step canary of 4 replicas took {:.1} s, {:.1} s beyond its 3 s of pauses",
        took.as_secs_f64(),
        took.as_secs_f64() - 3.0
    );
    // The surge: over the Deployments' history, the replicas asked for never exceeded the plan
    // (4) by more than maxSurge (1).
    let mut asked: std::collections::BTreeMap<String, i64> = Default::default();
    let mut peak = 0;
    for seen in workloads.versions() {
        let name = seen.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if seen.deleted {
            asked.remove(&name);
        } else {
            asked.insert(name, seen.object["spec"]["replicas"].as_i64().unwrap_or(1));
        }
        peak = peak.max(asked.values().sum::<i64>());
    }
    println!("figure: peak replicas during the rollout {peak} (plan 4, maxSurge 1)");
    assert!(peak <= 5, "the surge went beyond maxSurge: {peak} replicas");
    assert!(
        peak >= 5,
        "the new version started beside the old: peak {peak}"
    );
    let rollout = rollout_of(&md).unwrap();
    assert_eq!(rollout.names_key.as_deref(), Some(key.as_str()));
    assert_eq!(rollout.traffic_percent, 100);
    assert!(is_true(&md, "Progressing"), "{:?}", md.status);

    // The new version's share over the route's history: it only grows, and its distinct values
    // come in the steps' order (20, 50, 80, then all), never beyond the step being taken.
    let shares: Vec<f64> = route_history(&routes)
        .iter()
        .map(|(_, r)| new_share(r, &key))
        .collect();
    assert!(
        shares.windows(2).all(|w| w[1] + 0.5 >= w[0]),
        "the new version's share fell during a passing rollout: {shares:?}"
    );
    let first_positive = shares.iter().copied().find(|s| *s > 0.0);
    assert!(
        first_positive.is_some_and(|s| s <= 20.5),
        "the first share the new version took is the first step's: {shares:?}"
    );
    for step in [20.0, 50.0, 80.0] {
        assert!(
            shares.iter().any(|s| (s - step).abs() < 0.5),
            "the route carried the {step}% step: {shares:?}"
        );
    }

    // The old version is gone; the new one serves under its own names.
    let workloads = eventually("only the new version runs", || async {
        let children = children(&estate.private).await;
        (children.iter().all(|(name, _, _)| name.ends_with(&key)) && !children.is_empty())
            .then_some(children)
    })
    .await;
    assert_eq!(total_replicas(&workloads), 4, "{workloads:?}");
    wait_for(&estate, "ranker", "Ready after the rollout", |md| {
        is_true(md, "Ready") && is_true(md, "TrafficReady")
    })
    .await;
    event_with_reason(&estate, APP_NAMESPACE, "ranker", "RolloutStarted").await;
}

/// A canary whose analysis (a real Prometheus, the served rate) fails at the second step rolls
/// back: all traffic returns to the old version at once, the new replicas go, `Stalled` says
/// why; and over the route's whole history the new version never held more than the second
/// step's share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_analysis_at_the_second_step_rolls_back() {
    let load = LoadGenerator::start().await;
    let prometheus = Prometheus::start(load.addr).await;
    load.set_rate("ranker", 100.0);
    let (estate, _set) = start_traffic_estate(8, 8, Duration::from_millis(300)).await;
    let _operator = Operator::start(&estate).await;
    let routes = History::start(&estate.private, http_routes(), APP_NAMESPACE).await;
    estate.apply(&canary_deployment(
        4,
        4,
        &format!(
            "    strategy: Canary\n    steps:\n      - {{setWeight: 25, pause: {{seconds: 2}}}}\n      - {{setWeight: 50, pause: {{seconds: 30}}}}\n      - {{setWeight: 75, pause: {{seconds: 2}}}}\n    analysis:\n      prometheusUrl: {}\n      intervalSeconds: 1\n      failureLimit: 1\n      metrics:\n        - name: throughput\n          query: sum(rate({REQUESTS_METRIC}{{deployment=\"$deployment\"}}[3s]))\n          comparison: GreaterThan\n          threshold: 50\n",
            prometheus.url
        ),
    ));
    wait_for(&estate, "ranker", "v1 ready and recorded", |md| {
        is_true(md, "Ready")
            && is_true(md, "TrafficReady")
            && rollout_of(md).is_some_and(|r| r.to.version == "1")
    })
    .await;
    roll_to(&estate, "2").await;
    let key = new_key(&estate).await;
    // The first step passes on a healthy rate; at the second, the rate collapses.
    wait_for_within(
        &estate,
        "ranker",
        "the second step reached",
        Duration::from_secs(90),
        |md| rollout_of(md).is_some_and(|r| r.step == 1 && r.traffic_percent == 50),
    )
    .await;
    load.set_rate("ranker", 0.0);
    let md = wait_for_within(
        &estate,
        "ranker",
        "rolled back",
        Duration::from_secs(90),
        |md| rollout_of(md).is_some_and(|r| r.phase == RolloutPhase::RolledBack),
    )
    .await;
    let rollout = rollout_of(&md).unwrap();
    assert_eq!(rollout.traffic_percent, 0);
    assert_eq!(rollout.step, 1, "rolled back at the second step");
    assert!(
        rollout
            .analysis
            .iter()
            .any(|a| a.outcome == skybridge::api::AnalysisOutcome::Fail),
        "{:?}",
        rollout.analysis
    );
    assert!(is_true(&md, "Stalled"), "{:?}", md.status);
    assert!(
        is_true(&md, "Ready"),
        "the old version serves: {:?}",
        md.status
    );

    // The new replicas go after the drain, and the route ends all on the old version.
    eventually("the new version's workloads removed", || async {
        let children = children(&estate.private).await;
        (children.iter().all(|(name, _, _)| !name.ends_with(&key)) && !children.is_empty())
            .then_some(())
    })
    .await;
    let history = route_history(&routes);
    let shares: Vec<f64> = history.iter().map(|(_, r)| new_share(r, &key)).collect();
    assert!(
        shares.iter().all(|s| *s <= 50.5),
        "the new version held more than the second step's share: {shares:?}"
    );
    assert!(
        shares.iter().any(|s| (*s - 50.0).abs() < 0.5),
        "the second step's share reached the route: {shares:?}"
    );
    eventually("the route all on the old version", || async {
        let last = route_history(&routes).last()?.1.clone();
        (new_share(&last, &key) == 0.0
            && route_backends(&last).iter().all(|b| !b.2.ends_with(&key)))
        .then_some(())
    })
    .await;
    event_with_reason(&estate, APP_NAMESPACE, "ranker", "RolloutRolledBack").await;
}

/// A burst in the middle of a rollout (2 GPUs at home, 4 replicas: 2 go public): the public
/// pool runs the new version at the share reached, behind a new export of its own, and the
/// route weights it only once ready; a step paused until resumed waits for `resume`; a later
/// rollout is aborted with `abort` and all traffic returns to the stable version at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_mid_rollout_then_resume_and_abort() {
    let (estate, _set) = start_traffic_estate(2, 8, Duration::from_millis(300)).await;
    let _operator = Operator::start(&estate).await;
    let routes = History::start(&estate.private, http_routes(), APP_NAMESPACE).await;
    estate.apply(&canary_deployment(
        4,
        4,
        "    strategy: Canary\n    maxSurge: 2\n    steps:\n      - {setWeight: 50, pause: {}}\n",
    ));
    wait_for(&estate, "ranker", "v1 ready, burst, recorded", |md| {
        is_true(md, "Ready")
            && is_true(md, "TrafficReady")
            && replicas_on(md, "cloud-l4") == 2
            && rollout_of(md).is_some_and(|r| r.to.version == "1")
    })
    .await;

    // The new version, applied with the rollout paused in the spec (as Git would hold it): it
    // waits at 0%, visibly, until unpaused.
    patch_spec(
        &estate,
        "ranker",
        json!({"model": {"version": "2", "source": {"uri": "s3://models/ranker/2", "pool": "dc1-l4"}}, "rollout": {"paused": true}}),
    )
    .await;
    wait_for_within(
        &estate,
        "ranker",
        "the rollout held by the spec",
        Duration::from_secs(60),
        |md| {
            rollout_of(md).is_some_and(|r| {
                r.to.version == "2" && r.phase == RolloutPhase::Paused && r.reason == "PausedBySpec"
            })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = estate.deployments_api().get("ranker").await.unwrap();
    assert_eq!(
        rollout_of(&held).unwrap().traffic_percent,
        0,
        "paused at 0%"
    );
    let paused_key = new_key(&estate).await;
    assert!(
        route_history(&routes)
            .iter()
            .all(|(_, r)| new_share(r, &paused_key) == 0.0),
        "no traffic moved while paused"
    );
    patch_spec(&estate, "ranker", json!({"rollout": {"paused": false}})).await;
    let md = wait_for_within(
        &estate,
        "ranker",
        "the step reached and waiting for resume",
        Duration::from_secs(90),
        |md| {
            rollout_of(md)
                .is_some_and(|r| r.traffic_percent == 50 && r.phase == RolloutPhase::Paused)
        },
    )
    .await;
    assert!(
        is_true(&md, "Reconciling"),
        "kstatus reads it as in progress"
    );
    let key = new_key(&estate).await;
    // The public pool runs the new version too, exported under its own name.
    let public = children(&estate.public).await;
    assert!(
        public.iter().any(|(name, _, _)| name.ends_with(&key)),
        "the new version runs in the public pool: {public:?}"
    );
    let route = route_history(&routes).last().unwrap().1.clone();
    assert!(
        route_backends(&route)
            .iter()
            .any(|b| b.0 == "ServiceImport" && b.2.ends_with(&key) && b.3 > 0),
        "the public pool's new-version backend takes traffic: {route}"
    );
    // Paused until resumed: a while later it still waits.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = estate.deployments_api().get("ranker").await.unwrap();
    assert_eq!(rollout_of(&still).unwrap().phase, RolloutPhase::Paused);

    annotate(&estate, "resume").await;
    wait_for_within(
        &estate,
        "ranker",
        "succeeded after resume",
        Duration::from_secs(90),
        |md| {
            rollout_of(md)
                .is_some_and(|r| r.phase == RolloutPhase::Succeeded && r.to.version == "2")
        },
    )
    .await;
    eventually("the annotation removed once acted on", || async {
        let md = estate.deployments_api().get("ranker").await.ok()?;
        (!md.annotations().contains_key("skybridge.io/rollout-action")).then_some(())
    })
    .await;

    // A third version, aborted at its first step.
    roll_to(&estate, "3").await;
    wait_for_within(
        &estate,
        "ranker",
        "v3 at its step",
        Duration::from_secs(90),
        |md| rollout_of(md).is_some_and(|r| r.to.version == "3" && r.traffic_percent == 50),
    )
    .await;
    let aborted_from = route_history(&routes).len();
    annotate(&estate, "abort").await;
    let md = wait_for_within(
        &estate,
        "ranker",
        "aborted",
        Duration::from_secs(60),
        |md| {
            rollout_of(md)
                .is_some_and(|r| r.phase == RolloutPhase::Aborted && r.traffic_percent == 0)
        },
    )
    .await;
    assert!(is_true(&md, "Stalled"));
    let key3 = eventually("the v3 key", || async {
        let md = estate.deployments_api().get("ranker").await.ok()?;
        let r = rollout_of(&md)?;
        (r.to.version == "3").then(|| skybridge::operator::rollout::children::version_key(&r.to))
    })
    .await;
    eventually("the route all on v2 after the abort", || async {
        let versions = route_history(&routes);
        let last = &versions.last()?.1;
        (versions.len() > aborted_from && new_share(last, &key3) == 0.0).then_some(())
    })
    .await;
}
