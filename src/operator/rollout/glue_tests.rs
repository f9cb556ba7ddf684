//! Tests of the pure glue between the reconcile and the rollout decision: the children of each
//! version, and the decision's input from the plan.

use super::children::{OWN_NAMES_KEY, VersionNames, model_at, version_key};
use super::inputs::{Seen, component_inputs};
use crate::api::{
    CanaryStep, Cloud, ComputePool, DataClass, ModelDeployment, RolloutPause, RolloutSpec,
    RolloutStrategy, RolloutVersion,
};
use crate::operator::kubernetes::names::deployment_name;
use crate::planner::{ComponentKey, ComponentPlan, Placement};
use crate::rollout::{RolloutInput, RolloutState, VersionCount, decide};
use kube::ResourceExt;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) fn deployment(name: &str, ranker_class: &str) -> ModelDeployment {
    serde_yaml_ng::from_str(&format!(
        r#"
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}, namespace: web, uid: "u-1"}}
spec:
  model: {{source: {{uri: "s3://models/m/1", pool: a}}, version: "1"}}
  components:
  - {{name: enc, dataClass: internal, image: "serve:1", resources: {{cpu: "1", memory: 1Gi}}, replicas: {{min: 1, max: 4}}}}
  - {{name: rank, dataClass: {ranker_class}, image: "serve:1", resources: {{cpu: "1", memory: 1Gi}}, replicas: {{min: 1, max: 4}}}}
"#
    ))
    .unwrap()
}

pub(crate) fn pool(name: &str, cloud: Cloud) -> Arc<ComputePool> {
    let cloud = match cloud {
        Cloud::Private => "private",
        Cloud::Public => "public",
    };
    Arc::new(
        serde_yaml_ng::from_str(&format!(
            "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {{name: {name}}}\nspec: {{cloud: {cloud}, provider: onprem, region: fra, capacity: {{}}}}\n"
        ))
        .unwrap(),
    )
}

pub(crate) fn version(v: &str, uri: &str) -> RolloutVersion {
    RolloutVersion {
        version: v.into(),
        uri: uri.into(),
        pool: "a".into(),
        digest: None,
    }
}

fn plan(component: &str, placements: &[(&str, u32)]) -> ComponentPlan {
    ComponentPlan {
        key: ComponentKey {
            namespace: "web".into(),
            deployment: "shop".into(),
            component: component.into(),
        },
        data_class: DataClass::Internal,
        desired_replicas: placements.iter().map(|p| p.1).sum(),
        placements: placements
            .iter()
            .map(|&(pool, replicas)| Placement {
                pool: pool.into(),
                cloud: Cloud::Private,
                replicas,
                reason: String::new(),
            })
            .collect(),
        unplaced: 0,
        reasons: Vec::new(),
        cost_per_hour: 0.0,
    }
}

fn canary() -> RolloutSpec {
    RolloutSpec {
        strategy: RolloutStrategy::Canary,
        steps: vec![
            CanaryStep {
                set_weight: 25,
                pause: Some(RolloutPause { seconds: Some(60) }),
            },
            CanaryStep {
                set_weight: 75,
                pause: Some(RolloutPause { seconds: Some(60) }),
            },
        ],
        max_surge: None,
        analysis: None,
        paused: false,
    }
}

#[test]
fn the_stable_version_keeps_the_names_it_runs_under() {
    let md = deployment("shop", "internal");
    let own = VersionNames::stable(&md);
    assert_eq!(
        own,
        VersionNames::default(),
        "no rollout recorded: own names"
    );
    assert_eq!(
        own.deployment_name(&md, "rank", "dc1"),
        deployment_name(&md, "rank", "dc1"),
        "nothing renamed, nothing orphaned"
    );
    assert_eq!(own.label_value(), OWN_NAMES_KEY);
    // After a rollout succeeded, the new stable version keeps its suffixed names.
    let mut after = md.clone();
    let next = version("2", "s3://models/m/2");
    let since = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    );
    let mut status = super::steady_status(next.clone(), since, None);
    status.names_key = Some(version_key(&next));
    after.status = Some(crate::api::ModelDeploymentStatus {
        rollout: Some(status),
        ..Default::default()
    });
    assert_eq!(
        VersionNames::stable(&after).deployment_name(&after, "rank", "dc1"),
        VersionNames::keyed(&next).deployment_name(&md, "rank", "dc1")
    );
}

#[test]
fn another_version_gets_its_own_names() {
    let md = deployment("shop", "internal");
    let next = version("2", "s3://models/m/2");
    let names = VersionNames::keyed(&next);
    let name = names.deployment_name(&md, "rank", "dc1");
    assert_ne!(name, deployment_name(&md, "rank", "dc1"));
    assert!(name.ends_with(&version_key(&next)), "{name}");
    assert_eq!(names.label_value(), version_key(&next));
    assert!(
        names
            .service_name(&md, "rank")
            .ends_with(&version_key(&next))
    );
    assert!(
        names
            .export_name(&md, "rank", "cloud")
            .ends_with(&version_key(&next))
    );
    // The same version is named the same on every reconcile (a digest is learnt, not named); a
    // moved source is another model.
    let mut with_digest = next.clone();
    with_digest.digest = Some("sha256:ab".into());
    assert_eq!(
        name,
        VersionNames::keyed(&with_digest).deployment_name(&md, "rank", "dc1")
    );
    let moved = version("2", "s3://models/m/2b");
    assert_ne!(
        name,
        VersionNames::keyed(&moved).deployment_name(&md, "rank", "dc1")
    );
}

#[test]
fn a_version_builds_with_its_own_model() {
    let md = deployment("shop", "internal");
    let old = model_at(&md, &version("0.9", "s3://models/m/0.9"));
    assert_eq!(old.spec.model.version, "0.9");
    assert_eq!(old.spec.model.source.uri, "s3://models/m/0.9");
    assert_eq!(old.spec.components, md.spec.components);
    assert_eq!(old.name_any(), md.name_any());
}

#[test]
fn inputs_cover_planned_pools_and_pools_still_holding_replicas() {
    let md = deployment("shop", "internal");
    let pools = BTreeMap::from([
        ("dc1".to_string(), pool("dc1", Cloud::Private)),
        ("cloud".to_string(), pool("cloud", Cloud::Public)),
    ]);
    let seen = Seen {
        counts: BTreeMap::from([(
            ("rank".to_string(), "old-pool".to_string()),
            (
                VersionCount {
                    current: 2,
                    ready: 2,
                },
                VersionCount::default(),
            ),
        )]),
        spare: BTreeMap::from([("dc1".to_string(), 3)]),
        new_model_unfetchable: BTreeMap::from([("cloud".to_string(), "copying".to_string())]),
    };
    let inputs = component_inputs(
        &md,
        &[
            plan("enc", &[("dc1", 2)]),
            plan("rank", &[("dc1", 1), ("cloud", 4)]),
        ],
        &pools,
        DataClass::Internal,
        &seen,
    );
    assert_eq!(inputs.len(), 2);
    let rank = &inputs[1];
    assert_eq!(rank.name, "rank");
    let by_pool: BTreeMap<&str, _> = rank.pools.iter().map(|p| (p.pool.as_str(), p)).collect();
    assert_eq!(by_pool.len(), 3);
    assert_eq!(by_pool["dc1"].planned, 1);
    assert_eq!(by_pool["dc1"].spare, 3);
    assert!(by_pool["dc1"].new_model_verified);
    // Held for the new model only: the plan's replicas stay for the old version.
    assert_eq!(by_pool["cloud"].planned, 4);
    assert!(!by_pool["cloud"].new_model_verified);
    // Dropped from the plan, still serving: there for the decision to scale in, and unknown
    // pools are taken as public.
    assert_eq!(by_pool["old-pool"].planned, 0);
    assert_eq!(by_pool["old-pool"].old.current, 2);
    assert_eq!(by_pool["old-pool"].cloud, Cloud::Public);
}

#[test]
fn held_pools_keep_the_old_version_serving_in_the_decision() {
    let md = deployment("shop", "internal");
    let pools = BTreeMap::from([("dc1".to_string(), pool("dc1", Cloud::Private))]);
    let ready = VersionCount {
        current: 4,
        ready: 4,
    };
    let seen = Seen {
        counts: BTreeMap::from([
            (
                ("enc".to_string(), "dc1".to_string()),
                (ready, VersionCount::default()),
            ),
            (
                ("rank".to_string(), "dc1".to_string()),
                (ready, VersionCount::default()),
            ),
        ]),
        spare: BTreeMap::from([("dc1".to_string(), 4)]),
        new_model_unfetchable: BTreeMap::from([("dc1".to_string(), "syncing".to_string())]),
    };
    let plans = [plan("enc", &[("dc1", 4)]), plan("rank", &[("dc1", 4)])];
    let components = component_inputs(&md, &plans, &pools, DataClass::Internal, &seen);
    let spec = canary();
    let decision = decide(RolloutInput {
        spec: &spec,
        previous: &RolloutState::start(1_000),
        components: &components,
        action: None,
        round: None,
        now: 1_000,
    });
    for component in &decision.components {
        for p in &component.pools {
            assert_eq!(
                p.new, 0,
                "{}: the new model is not in the store yet",
                component.name
            );
            assert_eq!(
                p.old, 4,
                "{}: the old version keeps its pool",
                component.name
            );
        }
    }
}

fn cloud_of(public: bool) -> Cloud {
    if public {
        Cloud::Public
    } else {
        Cloud::Private
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Residency: whatever the plan, the counts seen and the holds, a sensitive component (or
    /// a component of a sensitive model) never gets the new version verified in a public pool,
    /// and the decision on those inputs starts no replica of either version there.
    #[test]
    fn a_sensitive_component_never_runs_a_version_in_a_public_pool(
        ranker_sensitive in any::<bool>(),
        model_sensitive in any::<bool>(),
        pools_public in proptest::collection::vec(any::<bool>(), 1..5),
        planned in proptest::collection::vec(0u32..6, 5),
        old in proptest::collection::vec((0u32..6, 0u32..6), 5),
        new in proptest::collection::vec((0u32..6, 0u32..6), 5),
        spare in proptest::collection::vec(0u32..6, 5),
        held in proptest::collection::vec(any::<bool>(), 5),
        step in 0u32..2,
        now in 1_000i64..100_000,
    ) {
        let md = deployment("shop", if ranker_sensitive { "sensitive" } else { "internal" });
        let class = if model_sensitive { DataClass::Sensitive } else { DataClass::Internal };
        let names: Vec<String> = (0..pools_public.len()).map(|i| format!("p{i}")).collect();
        let pools: BTreeMap<String, Arc<ComputePool>> = names
            .iter()
            .zip(&pools_public)
            .map(|(n, &public)| (n.clone(), pool(n, cloud_of(public))))
            .collect();
        let placements: Vec<(&str, u32)> =
            names.iter().zip(&planned).map(|(n, &r)| (n.as_str(), r)).collect();
        let mut seen = Seen::default();
        for (i, name) in names.iter().enumerate() {
            let count = |(current, ready): (u32, u32)| VersionCount { current, ready: ready.min(current) };
            seen.counts.insert(("rank".into(), name.clone()), (count(old[i]), count(new[i])));
            seen.spare.insert(name.clone(), spare[i]);
            if held[i] {
                seen.new_model_unfetchable.insert(name.clone(), "syncing".into());
            }
        }
        let plans = [plan("enc", &placements), plan("rank", &placements)];
        let components = component_inputs(&md, &plans, &pools, class, &seen);
        let sensitive_rank = ranker_sensitive || model_sensitive;
        let rank = components.iter().find(|c| c.name == "rank").unwrap();
        prop_assert_eq!(rank.sensitive, sensitive_rank);
        for input in &rank.pools {
            let public = input.cloud == Cloud::Public;
            prop_assert!(!(sensitive_rank && public && input.new_model_verified));
            prop_assert!(!(held[names.iter().position(|n| *n == input.pool).unwrap()] && input.new_model_verified));
        }
        let mut state = RolloutState::start(now - 500);
        state.step = step;
        let spec = canary();
        let decision = decide(RolloutInput {
            spec: &spec,
            previous: &state,
            components: &components,
            action: None,
            round: None,
            now,
        });
        for component in decision.components.iter().filter(|c| c.name == "rank" && sensitive_rank) {
            for p in &component.pools {
                if pools[&p.pool].spec.cloud == Cloud::Public {
                    prop_assert_eq!(p.new, 0, "pool {}", &p.pool);
                    prop_assert_eq!(p.old, 0, "pool {}", &p.pool);
                }
            }
        }
    }
}

mod step {
    use super::*;
    use crate::api::{
        ModelDeploymentStatus, ROLLOUT_ACTION_ANNOTATION, RolloutPhase, RolloutStatus,
    };
    use crate::operator::rollout::steady_status;
    use crate::operator::rollout::step::{RolloutContext, Serving, decide_rollout};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    /// `shop` at `spec_version` (source `s3://models/m/<version>`), by canary or not, with
    /// `recorded` as its `status.rollout`.
    fn shop(
        spec_version: &str,
        by_canary: bool,
        recorded: Option<RolloutStatus>,
    ) -> ModelDeployment {
        let mut md = deployment("shop", "internal");
        md.spec.model.version = spec_version.into();
        md.spec.model.source.uri = format!("s3://models/m/{spec_version}");
        md.spec.rollout = by_canary.then(canary);
        md.status = recorded.map(|r| ModelDeploymentStatus {
            rollout: Some(r),
            ..Default::default()
        });
        md
    }

    fn v(version: &str) -> RolloutVersion {
        version_at(version, &format!("s3://models/m/{version}"))
    }

    fn version_at(version: &str, uri: &str) -> RolloutVersion {
        super::version(version, uri)
    }

    fn run(
        md: &ModelDeployment,
        seen: &Seen,
        now: i64,
    ) -> crate::operator::rollout::step::RolloutOutcome {
        let pools = BTreeMap::from([("dc1".to_string(), pool("dc1", Cloud::Private))]);
        let plans = [plan("enc", &[("dc1", 4)]), plan("rank", &[("dc1", 4)])];
        decide_rollout(RolloutContext {
            md,
            plans: &plans,
            pools: &pools,
            class: DataClass::Internal,
            seen,
            measured: Vec::new(),
            digest: None,
            now: at(now),
        })
    }

    fn old_serving(ready: u32) -> Seen {
        let count = VersionCount {
            current: ready,
            ready,
        };
        Seen {
            counts: BTreeMap::from([
                (
                    ("enc".to_string(), "dc1".to_string()),
                    (count, VersionCount::default()),
                ),
                (
                    ("rank".to_string(), "dc1".to_string()),
                    (count, VersionCount::default()),
                ),
            ]),
            spare: BTreeMap::from([("dc1".to_string(), 8)]),
            new_model_unfetchable: BTreeMap::new(),
        }
    }

    #[test]
    fn without_a_canary_nothing_is_recorded_or_conditioned() {
        let md = shop("2", false, Some(steady_status(v("1"), Time(at(0)), None)));
        let outcome = run(&md, &old_serving(4), 100);
        assert_eq!(
            outcome.serving,
            Serving::One {
                stable: v("2"),
                names: VersionNames::default()
            },
            "all at once, as today"
        );
        assert_eq!(outcome.record, None);
        assert!(outcome.conditions.is_empty());
        assert!(outcome.events.is_empty());
    }

    #[test]
    fn a_canary_deployment_records_the_version_it_serves_once() {
        let first = run(&shop("1", true, None), &old_serving(4), 100);
        assert_eq!(
            first.serving,
            Serving::One {
                stable: v("1"),
                names: VersionNames::default()
            }
        );
        let recorded = first.record.expect("the stable version is recorded");
        assert_eq!(recorded.to, v("1"));
        assert_eq!(recorded.phase, RolloutPhase::Succeeded);
        let again = run(&shop("1", true, Some(recorded)), &old_serving(4), 200);
        assert_eq!(again.record, None, "already recorded: no write");
        assert!(!again.conditions.is_empty(), "Progressing stays reported");
    }

    #[test]
    fn a_new_version_starts_a_rollout_with_both_versions_and_an_event() {
        let md = shop("2", true, Some(steady_status(v("1"), Time(at(0)), None)));
        let outcome = run(&md, &old_serving(4), 100);
        let Serving::Two {
            from, to, replicas, ..
        } = &outcome.serving
        else {
            panic!("both versions serve: {:?}", outcome.serving);
        };
        assert_eq!((from, to), (&v("1"), &v("2")));
        for ((component, pool), (old, new)) in replicas {
            assert_eq!(pool, "dc1");
            assert_eq!(
                *old, 4,
                "{component}: the old version keeps serving at first"
            );
            assert!(*new >= 1, "{component}: the canary starts");
        }
        let status = outcome.record.expect("status.rollout is written");
        assert_eq!(status.phase, RolloutPhase::Progressing);
        assert_eq!((status.from.clone(), status.to.clone()), (v("1"), v("2")));
        assert!(
            outcome
                .events
                .iter()
                .any(|(warning, reason, _)| !warning && *reason == "RolloutStarted")
        );
        assert!(
            outcome
                .conditions
                .iter()
                .any(|c| c.type_ == "Reconciling" && c.status)
        );
        assert!(!outcome.remove_annotation);
    }

    #[test]
    fn abort_by_annotation_returns_to_the_old_version_and_consumes_the_annotation() {
        let md = shop("2", true, Some(steady_status(v("1"), Time(at(0)), None)));
        let started = run(&md, &old_serving(4), 100).record.unwrap();
        let mut aborting = shop("2", true, Some(started));
        aborting.metadata.annotations = Some(BTreeMap::from([(
            ROLLOUT_ACTION_ANNOTATION.to_string(),
            "abort".to_string(),
        )]));
        let outcome = run(&aborting, &old_serving(4), 130);
        assert!(outcome.remove_annotation);
        let status = outcome.record.unwrap();
        assert_eq!(status.phase, RolloutPhase::Aborted);
        assert_eq!(status.traffic_percent, 0);
        assert!(
            outcome
                .conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status)
        );
        let Serving::Two { replicas, .. } = outcome.serving else {
            panic!("an ended rollout keeps its two versions until retry or a new version");
        };
        assert!(replicas.values().all(|&(old, _)| old == 4), "{replicas:?}");
    }

    #[test]
    fn a_bad_annotation_is_reported_and_left_and_an_idle_one_is_consumed() {
        let mut md = shop("1", true, Some(steady_status(v("1"), Time(at(0)), None)));
        md.metadata.annotations = Some(BTreeMap::from([(
            ROLLOUT_ACTION_ANNOTATION.to_string(),
            "promote-now".to_string(),
        )]));
        let outcome = run(&md, &old_serving(4), 100);
        assert!(!outcome.remove_annotation, "left for the user to correct");
        assert!(
            outcome
                .events
                .iter()
                .any(|(warning, reason, _)| *warning && *reason == "RolloutActionInvalid")
        );
        md.metadata.annotations = Some(BTreeMap::from([(
            ROLLOUT_ACTION_ANNOTATION.to_string(),
            "resume".to_string(),
        )]));
        let idle = run(&md, &old_serving(4), 100);
        assert!(idle.remove_annotation);
        assert!(
            idle.events
                .iter()
                .any(|(_, reason, _)| *reason == "RolloutActionIgnored")
        );
    }

    #[test]
    fn two_versions_at_one_prefix_roll_out_at_once_with_a_warning() {
        let mut md = shop(
            "2",
            true,
            Some(steady_status(
                version_at("1", "s3://models/m"),
                Time(at(0)),
                None,
            )),
        );
        md.spec.model.source.uri = "s3://models/m".into();
        let outcome = run(&md, &old_serving(4), 100);
        assert_eq!(
            outcome.serving,
            Serving::One {
                stable: version_at("2", "s3://models/m"),
                names: VersionNames::default()
            }
        );
        assert!(
            outcome
                .events
                .iter()
                .any(|(warning, reason, _)| *warning && *reason == "RolloutRefused")
        );
        assert_eq!(
            outcome.record.unwrap().to.version,
            "2",
            "the next change rolls from 2"
        );
    }
}
