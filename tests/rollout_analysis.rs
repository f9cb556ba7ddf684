//! A rollout's analysis against a real Prometheus (as in `e2e_demand`): rounds measured by the
//! operator's analysis client pass, fail and are inconclusive as the served rate says, and the
//! pure decision rolls back on them. No cluster is involved: this is the analysis edge only.

mod e2e_support;

use e2e_support::demand::{LoadGenerator, Prometheus};
use e2e_support::eventually;
use skybridge::api::{
    AnalysisMetric, AnalysisOutcome, CanaryStep, Comparison, ModelDeployment, NoDataPolicy,
    RolloutAnalysis, RolloutPause, RolloutPhase, RolloutSpec, RolloutStrategy, RolloutVersion,
};
use skybridge::demand::Prometheus as Client;
use skybridge::operator::rollout::measure_round;
use skybridge::rollout::{
    ComponentInput, PoolInput, RolloutInput, RolloutState, VersionCount, decide,
};

const RATE: &str = "sum(rate(shop_requests_total{deployment=\"$deployment\"}[4s]))";

fn deployment(name: &str) -> ModelDeployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "skybridge.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"model": {"source": {"uri": "s3://models/ranker", "pool": "dc1"}, "version": "2"},
                 "components": [{"name": "r", "dataClass": "internal", "image": "i", "resources": {}, "replicas": {"min": 1, "max": 4}}]}
    }))
    .unwrap()
}

fn version(v: &str) -> RolloutVersion {
    RolloutVersion {
        version: v.into(),
        uri: "s3://models/ranker".into(),
        pool: "dc1".into(),
        digest: None,
    }
}

fn analysis(url: &str, metrics: Vec<AnalysisMetric>) -> RolloutAnalysis {
    RolloutAnalysis {
        prometheus_url: url.into(),
        metrics,
        interval_seconds: 1,
        failure_limit: 1,
        no_data: NoDataPolicy::Inconclusive,
    }
}

fn metric(name: &str, query: &str, comparison: Comparison, threshold: f64) -> AnalysisMetric {
    AnalysisMetric {
        name: name.into(),
        query: query.into(),
        comparison,
        threshold,
    }
}

async fn round(analysis: &RolloutAnalysis, md: &ModelDeployment) -> Vec<AnalysisOutcome> {
    measure_round(
        &Client::default(),
        analysis,
        md,
        &version("1"),
        &version("2"),
        0,
        k8s_openapi::jiff::Timestamp::now(),
    )
    .await
    .into_iter()
    .map(|r| r.outcome)
    .collect()
}

#[tokio::test]
async fn rounds_follow_the_served_rate_and_a_failing_one_rolls_back() {
    let load = LoadGenerator::start().await;
    let prometheus = Prometheus::start(load.addr).await;
    let md = deployment("ranker");
    load.set_rate("ranker", 100.0);
    let query = RATE.replace("$deployment", "ranker");
    eventually("Prometheus sees about 100 per second", || {
        let (prometheus, query) = (&prometheus, query.clone());
        async move {
            prometheus
                .value(&query)
                .await
                .filter(|v| (*v - 100.0).abs() < 10.0)
        }
    })
    .await;
    let healthy = analysis(
        &prometheus.url,
        vec![metric("throughput", RATE, Comparison::GreaterThan, 50.0)],
    );
    assert_eq!(round(&healthy, &md).await, [AnalysisOutcome::Pass]);

    // A deployment nobody calls: an empty answer is no data, not zero.
    let nobody = deployment("nobody");
    assert_eq!(
        round(&healthy, &nobody).await,
        [AnalysisOutcome::Inconclusive]
    );
    // Prometheus that does not answer: inconclusive, the error in the message.
    let down = analysis("http://127.0.0.1:9", healthy.metrics.clone());
    let results = measure_round(
        &Client::default(),
        &down,
        &md,
        &version("1"),
        &version("2"),
        0,
        k8s_openapi::jiff::Timestamp::now(),
    )
    .await;
    assert_eq!(results[0].outcome, AnalysisOutcome::Inconclusive);
    assert!(
        results[0].message.contains("query failed"),
        "{}",
        results[0].message
    );

    // The rate falls: the same threshold fails, and the decision rolls back at once.
    load.set_rate("ranker", 10.0);
    eventually("Prometheus sees about 10 per second", || {
        let (prometheus, query) = (&prometheus, query.clone());
        async move {
            prometheus
                .value(&query)
                .await
                .filter(|v| (*v - 10.0).abs() < 3.0)
        }
    })
    .await;
    let outcomes = round(&healthy, &md).await;
    assert_eq!(outcomes, [AnalysisOutcome::Fail]);
    let spec = RolloutSpec {
        strategy: RolloutStrategy::Canary,
        steps: vec![CanaryStep {
            set_weight: 25,
            pause: Some(RolloutPause { seconds: Some(60) }),
        }],
        max_surge: None,
        analysis: Some(healthy),
        paused: false,
    };
    let mut state = RolloutState::start(0);
    state.traffic_percent = 25;
    state.step_started_at = Some(0);
    let components = [ComponentInput {
        name: "r".into(),
        sensitive: false,
        drain_seconds: 30,
        pools: vec![PoolInput {
            pool: "dc1".into(),
            cloud: skybridge::api::Cloud::Private,
            planned: 4,
            spare: 4,
            old: VersionCount {
                current: 3,
                ready: 3,
            },
            new: VersionCount {
                current: 1,
                ready: 1,
            },
            new_model_verified: true,
        }],
    }];
    let decision = decide(RolloutInput {
        spec: &spec,
        previous: &state,
        components: &components,
        action: None,
        round: Some(outcomes),
        now: 10,
    });
    assert_eq!(decision.state.phase, RolloutPhase::RolledBack);
    assert_eq!(decision.state.traffic_percent, 0);
}

#[tokio::test]
async fn a_ratio_over_no_requests_is_inconclusive_and_holds_the_step() {
    let load = LoadGenerator::start().await;
    let prometheus = Prometheus::start(load.addr).await;
    load.set_rate("idle", 0.0);
    let md = deployment("idle");
    let series = "shop_requests_total{deployment=\"idle\"}";
    eventually("Prometheus has scraped the idle counter twice", || {
        let prometheus = &prometheus;
        async move {
            prometheus
                .value(&format!("count_over_time({series}[10s])"))
                .await
                .filter(|n| *n >= 3.0)
        }
    })
    .await;
    // errors / requests with no requests: 0/0 is NaN, which must not pass as a zero error rate.
    let ratio = format!("{RATE} / {RATE}");
    let check = analysis(
        &prometheus.url,
        vec![metric("error-rate", &ratio, Comparison::LessThan, 0.01)],
    );
    assert_eq!(round(&check, &md).await, [AnalysisOutcome::Inconclusive]);
}
