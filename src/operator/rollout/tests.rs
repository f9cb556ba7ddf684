use super::*;
use crate::api::{
    CanaryStep, Comparison, ModelDeploymentSpec, ModelDeploymentStatus, ModelSource, ModelSpec,
    NoDataPolicy, RolloutPause,
};
use crate::rollout::{ComponentInput, PoolInput, RolloutInput, VersionCount};

fn md(
    version: &str,
    rollout: Option<RolloutSpec>,
    status: Option<RolloutStatus>,
) -> ModelDeployment {
    let mut md = ModelDeployment::new(
        "ranker",
        ModelDeploymentSpec {
            model: ModelSpec {
                source: ModelSource {
                    uri: "s3://models/ranker".into(),
                    pool: "dc1".into(),
                },
                version: version.into(),
            },
            components: vec![],
            artifacts: Default::default(),
            rollout,
        },
    );
    md.metadata.namespace = Some("shop".into());
    md.status = status.map(|r| ModelDeploymentStatus {
        rollout: Some(r),
        ..Default::default()
    });
    md
}

fn canary_spec() -> RolloutSpec {
    RolloutSpec {
        strategy: RolloutStrategy::Canary,
        steps: vec![
            CanaryStep {
                set_weight: 20,
                pause: Some(RolloutPause { seconds: Some(60) }),
            },
            CanaryStep {
                set_weight: 50,
                pause: Some(RolloutPause { seconds: None }),
            },
        ],
        max_surge: None,
        analysis: None,
        paused: false,
    }
}

fn version(v: &str) -> RolloutVersion {
    RolloutVersion {
        version: v.into(),
        uri: "s3://models/ranker".into(),
        pool: "dc1".into(),
        digest: None,
    }
}

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap())
}

#[test]
fn without_a_canary_or_a_recorded_version_the_spec_is_stable() {
    assert_eq!(
        intent(&md(
            "2",
            None,
            Some(steady_status(version("1"), at(0), None))
        )),
        Intent::Steady {
            stable: version("2")
        },
        "AllAtOnce: a version change is today's behaviour"
    );
    assert_eq!(
        intent(&md("2", Some(canary_spec()), None)),
        Intent::Steady {
            stable: version("2")
        },
        "nothing recorded to roll from"
    );
}

#[test]
fn a_new_version_under_a_canary_starts_a_rollout_from_the_stable_one() {
    let recorded = steady_status(version("1"), at(0), None);
    assert_eq!(
        intent(&md("2", Some(canary_spec()), Some(recorded.clone()))),
        Intent::Rollout {
            from: version("1"),
            to: version("2"),
            previous: None
        }
    );
    assert_eq!(
        intent(&md("1", Some(canary_spec()), Some(recorded))),
        Intent::Steady {
            stable: version("1")
        }
    );
    let mut source_moved = md(
        "1",
        Some(canary_spec()),
        Some(steady_status(version("1"), at(0), None)),
    );
    source_moved.spec.model.source.uri = "s3://models/ranker-v2".into();
    assert!(
        matches!(
            intent(&source_moved),
            Intent::Rollout { previous: None, .. }
        ),
        "a source change is a new model too"
    );
}

#[test]
fn a_running_rollout_goes_on_and_a_third_version_restarts_from_the_stable_one() {
    let mut running = steady_status(version("1"), at(0), None);
    running.to = version("2");
    running.phase = RolloutPhase::Progressing;
    running.step = 1;
    let goes_on = intent(&md("2", Some(canary_spec()), Some(running.clone())));
    assert!(matches!(goes_on, Intent::Rollout { previous: Some(ref p), .. } if p.step == 1));
    assert_eq!(
        intent(&md("3", Some(canary_spec()), Some(running.clone()))),
        Intent::Rollout {
            from: version("1"),
            to: version("3"),
            previous: None
        }
    );
    running.phase = RolloutPhase::RolledBack;
    assert!(
        matches!(intent(&md("2", Some(canary_spec()), Some(running.clone()))), Intent::Rollout { previous: Some(ref p), .. } if p.phase == RolloutPhase::RolledBack),
        "a rolled-back rollout stays rolled back until retry or a new version"
    );
    assert_eq!(
        intent(&md("1", Some(canary_spec()), Some(running))),
        Intent::Steady {
            stable: version("1")
        },
        "back to the stable version: nothing to roll out"
    );
}

#[test]
fn status_round_trips_through_the_decision_memory() {
    let spec = canary_spec();
    let components = [ComponentInput {
        name: "ranker".into(),
        sensitive: false,
        drain_seconds: 30,
        pools: vec![PoolInput {
            pool: "dc1".into(),
            cloud: crate::api::Cloud::Private,
            planned: 5,
            spare: 5,
            old: VersionCount {
                current: 4,
                ready: 4,
            },
            new: VersionCount {
                current: 1,
                ready: 1,
            },
            new_model_verified: true,
        }],
    }];
    let start = RolloutState::start(1000);
    let decision = crate::rollout::decide(RolloutInput {
        spec: &spec,
        previous: &start,
        components: &components,
        action: None,
        round: None,
        now: 1000,
    });
    assert_eq!(decision.state.traffic_percent, 20);
    let status = status_of(version("1"), version("2"), &decision, &[], vec![], None);
    assert_eq!(state_of(&status), decision.state);
    assert_eq!(status.reason, decision.reason);
}

#[test]
fn analysis_results_keep_the_newest() {
    let metric = AnalysisMetric {
        name: "error-rate".into(),
        query: "q".into(),
        comparison: Comparison::LessThan,
        threshold: 0.01,
    };
    let old: Vec<AnalysisResult> = (0..MAX_ANALYSIS_RESULTS as i64)
        .map(|i| judge(&metric, Ok(Some(0.0)), 0, at(i)))
        .collect();
    let decision = RolloutDecision {
        state: RolloutState::start(0),
        components: vec![],
        reason: "Analysing",
        message: String::new(),
        events: vec![],
        next_change_at: None,
    };
    let newest = judge(&metric, Ok(Some(0.5)), 1, at(100));
    let status = status_of(
        version("1"),
        version("2"),
        &decision,
        &old,
        vec![newest.clone()],
        None,
    );
    assert_eq!(status.analysis.len(), MAX_ANALYSIS_RESULTS);
    assert_eq!(status.analysis.last(), Some(&newest));
    assert_eq!(status.analysis[0].at, at(1), "the oldest went");
}

#[test]
fn measurements_are_judged_and_no_data_or_a_failed_query_is_inconclusive() {
    let metric = AnalysisMetric {
        name: "ctr".into(),
        query: "q".into(),
        comparison: Comparison::GreaterThanOrEqual,
        threshold: 0.03,
    };
    assert_eq!(
        judge(&metric, Ok(Some(0.031)), 0, at(0)).outcome,
        AnalysisOutcome::Pass
    );
    let low = judge(&metric, Ok(Some(0.02)), 0, at(0));
    assert_eq!(
        (low.outcome, low.value),
        (AnalysisOutcome::Fail, Some(0.02))
    );
    assert_eq!(
        judge(&metric, Ok(None), 0, at(0)).outcome,
        AnalysisOutcome::Inconclusive
    );
    let down = judge(&metric, Err("connection refused".into()), 0, at(0));
    assert_eq!(down.outcome, AnalysisOutcome::Inconclusive);
    assert!(down.message.contains("connection refused"));
}

#[test]
fn queries_name_the_deployment_and_both_versions() {
    assert_eq!(
        expand_analysis_query(
            r#"errors{ns="$namespace",d="$deployment",v="$version"} / errors{v="$stableVersion"}"#,
            "shop",
            "ranker",
            "2026.12.1",
            "2026.11.30"
        ),
        r#"errors{ns="shop",d="ranker",v="2026.12.1"} / errors{v="2026.11.30"}"#
    );
}

#[test]
fn conditions_read_right_for_kstatus_and_argo_cd() {
    let mut status = steady_status(version("1"), at(0), None);
    status.to = version("2");
    let find = |c: &[Decided], t: &str| c.iter().find(|d| d.type_ == t).cloned();
    status.phase = RolloutPhase::Progressing;
    let running = conditions(&status);
    assert!(find(&running, PROGRESSING).unwrap().status);
    assert!(
        find(&running, "Reconciling").unwrap().status,
        "kstatus: in progress"
    );
    assert!(
        find(&running, "Ready").is_none(),
        "Ready is the serving version's"
    );
    status.phase = RolloutPhase::Paused;
    assert_eq!(
        find(&conditions(&status), PROGRESSING).unwrap().reason,
        "RolloutPaused"
    );
    status.phase = RolloutPhase::RolledBack;
    status.message = "error-rate 0.2 LessThan 0.01".into();
    let rolled_back = conditions(&status);
    let progressing = find(&rolled_back, PROGRESSING).unwrap();
    assert!(!progressing.status);
    assert!(
        progressing.message.contains("error-rate"),
        "{}",
        progressing.message
    );
    assert!(
        find(&rolled_back, "Stalled").unwrap().status,
        "kstatus: failed"
    );
    assert!(find(&rolled_back, "Reconciling").is_none());
    status.phase = RolloutPhase::Succeeded;
    let done = conditions(&status);
    assert!(find(&done, PROGRESSING).unwrap().status);
    assert!(find(&done, "Stalled").is_none() && find(&done, "Reconciling").is_none());
}

#[test]
fn the_annotation_names_one_action_or_is_reported() {
    let mut with = md("1", Some(canary_spec()), None);
    assert_eq!(requested_action(&with), Ok(None));
    for (value, action) in [
        ("resume", Action::Resume),
        ("abort", Action::Abort),
        (" retry ", Action::Retry),
    ] {
        with.metadata.annotations =
            Some([(ROLLOUT_ACTION_ANNOTATION.to_string(), value.to_string())].into());
        assert_eq!(requested_action(&with), Ok(Some(action)));
    }
    with.metadata.annotations =
        Some([(ROLLOUT_ACTION_ANNOTATION.to_string(), "promote".to_string())].into());
    assert!(
        requested_action(&with)
            .unwrap_err()
            .contains("resume, abort or retry")
    );
}

/// A one-answer HTTP server on loopback standing in for Prometheus's query API.
async fn answering(body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    url
}

#[tokio::test]
async fn a_round_measures_every_metric_in_prometheus() {
    let url = answering(
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.0,"0.2"]}]}}"#,
    )
    .await;
    let analysis = RolloutAnalysis {
        prometheus_url: url,
        metrics: vec![
            AnalysisMetric {
                name: "error-rate".into(),
                query: "e".into(),
                comparison: Comparison::LessThan,
                threshold: 0.01,
            },
            AnalysisMetric {
                name: "ctr".into(),
                query: "c".into(),
                comparison: Comparison::GreaterThan,
                threshold: 0.1,
            },
        ],
        interval_seconds: 10,
        failure_limit: 1,
        no_data: NoDataPolicy::Inconclusive,
    };
    let deployment = md("2", Some(canary_spec()), None);
    let results = measure_round(
        &Prometheus::default(),
        &analysis,
        &deployment,
        &version("1"),
        &version("2"),
        1,
        Timestamp::from_second(50).unwrap(),
    )
    .await;
    let outcomes: Vec<_> = results
        .iter()
        .map(|r| (r.metric.as_str(), r.outcome, r.value))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("error-rate", AnalysisOutcome::Fail, Some(0.2)),
            ("ctr", AnalysisOutcome::Pass, Some(0.2))
        ]
    );
    let empty =
        answering(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#).await;
    let analysis = RolloutAnalysis {
        prometheus_url: empty,
        ..analysis
    };
    let results = measure_round(
        &Prometheus::default(),
        &analysis,
        &deployment,
        &version("1"),
        &version("2"),
        1,
        Timestamp::from_second(60).unwrap(),
    )
    .await;
    assert!(
        results
            .iter()
            .all(|r| r.outcome == AnalysisOutcome::Inconclusive && r.value.is_none())
    );
}

#[test]
fn two_versions_at_one_prefix_are_refused() {
    let mut other = version("2");
    assert!(
        refused(&version("1"), &other)
            .unwrap()
            .contains("own prefix")
    );
    other.uri = "s3://models/ranker/2".into();
    assert_eq!(refused(&version("1"), &other), None);
}
