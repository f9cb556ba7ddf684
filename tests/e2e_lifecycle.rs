//! End to end, through the Kubernetes API only: apply to Ready, scale, delete.

mod e2e_support;

use e2e_support::*;
use kube::api::DeleteParams;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_to_ready_then_delete_removes_everything() {
    let estate = Estate::start(8, 8).await;
    estate.apply_pools();
    let _operator = Operator::start(&estate).await;
    estate.apply(&deployment_yaml("ranker", "internal", 3, 6, ""));

    let md = wait_for(&estate, "ranker", "Ready", |md| is_true(md, "Ready")).await;
    let status = md.status.as_ref().unwrap();
    assert_eq!(status.ready_replicas, 3);
    assert_eq!(status.desired_replicas, 3);
    assert!(!is_true(&md, "Bursting"), "private capacity suffices");
    assert!(is_true(&md, "Placed"));
    let private = children(&estate.private).await;
    assert_eq!(total_replicas(&private), 3, "{private:?}");
    assert!(children(&estate.public).await.is_empty());
    let pool = estate.pools_api().get("dc1-l4").await.unwrap();
    let ready = pool
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");

    // Scale: a new minimum is a spec change; generation and status follow.
    patch_spec(
        &estate,
        "ranker",
        json!({"components": [{
            "name": "ranker", "dataClass": "internal", "image": "pytorch/torchserve:0.12.0-gpu",
            "resources": {"gpu": {"count": 1, "type": "nvidia-l4"}, "cpu": "1", "memory": "1Gi"},
            "replicas": {"min": 5, "max": 6}
        }]}),
    )
    .await;
    let md = wait_for(&estate, "ranker", "Ready at 5", |md| {
        is_true(md, "Ready") && md.status.as_ref().is_some_and(|s| s.ready_replicas == 5)
    })
    .await;
    assert_eq!(md.metadata.generation, Some(2));

    estate
        .deployments_api()
        .delete("ranker", &DeleteParams::default())
        .await
        .unwrap();
    eventually_gone(
        "the ModelDeployment is gone",
        &estate.deployments_api(),
        "ranker",
    )
    .await;
    eventually("no children left in any cluster", || async {
        (children(&estate.private).await.is_empty() && children(&estate.public).await.is_empty())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_beyond_private_capacity_bursts_and_sensitive_stays_private() {
    let estate = Estate::start(4, 16).await;
    estate.apply_pools();
    let _operator = Operator::start(&estate).await;
    // The pool's spec says 64 GPUs, but only 4 exist: observed capacity bounds the plan.
    estate.apply(&deployment_yaml("ranker", "internal", 6, 10, ""));
    estate.apply(&deployment_yaml("encoder", "sensitive", 3, 3, ""));

    let ranker = wait_for(&estate, "ranker", "ranker Ready and bursting", |md| {
        is_true(md, "Ready") && is_true(md, "Bursting")
    })
    .await;
    let placements = &ranker.status.as_ref().unwrap().components[0].placements;
    assert!(
        placements
            .iter()
            .any(|p| p.pool == "cloud-l4" && p.replicas > 0),
        "{placements:?}"
    );
    let public = children(&estate.public).await;
    assert!(total_replicas(&public) > 0);

    // The sensitive encoder's floor outranks the ranker's private replicas: it gets the private
    // GPUs, the ranker moves further out, and nothing sensitive ever reaches the public cluster.
    let encoder = wait_for(&estate, "encoder", "encoder Ready on private GPUs", |md| {
        is_true(md, "Ready")
    })
    .await;
    for placement in encoder
        .status
        .as_ref()
        .unwrap()
        .components
        .iter()
        .flat_map(|c| &c.placements)
    {
        assert_eq!(placement.pool, "dc1-l4", "sensitive replicas stay private");
    }
    wait_for(
        &estate,
        "ranker",
        "ranker re-placed around the encoder",
        |md| {
            let placements = &md.status.as_ref().unwrap().components[0].placements;
            is_true(md, "Ready")
                && placements
                    .iter()
                    .filter(|p| p.pool == "dc1-l4")
                    .map(|p| p.replicas)
                    .sum::<u32>()
                    == 1
        },
    )
    .await;
    let public = children(&estate.public).await;
    assert!(
        public
            .iter()
            .all(|(name, _, _)| !name.starts_with("encoder")),
        "{public:?}"
    );
    assert_eq!(
        total_replicas(&children(&estate.private).await),
        4,
        "3 encoder + 1 ranker on 4 private GPUs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_shortage_stays_private_and_reports_degraded() {
    let estate = Estate::start(2, 16).await;
    estate.apply_pools();
    let _operator = Operator::start(&estate).await;
    estate.apply(&deployment_yaml("encoder", "sensitive", 3, 3, ""));
    let md = wait_for(&estate, "encoder", "Degraded", |md| is_true(md, "Degraded")).await;
    let status = md.status.as_ref().unwrap();
    assert!(!is_true(&md, "Ready"));
    assert!(!is_true(&md, "Bursting"));
    assert_eq!(status.components[0].unplaced_replicas, 1);
    assert!(
        status.components[0]
            .unplaced_reason
            .as_deref()
            .unwrap_or_default()
            .contains("residency")
    );
    assert!(
        condition(&md, "Degraded")
            .unwrap()
            .message
            .contains("sensitive")
    );
    assert!(
        children(&estate.public).await.is_empty(),
        "nothing reaches the public cluster"
    );
}

/// The operator remembers which target namespaces exist in each cluster: one deleted behind its
/// back is created again by the next apply into it, with the children that went with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_namespace_deleted_behind_the_operator_is_created_again() {
    let estate = Estate::start(8, 8).await;
    estate.apply_pools();
    let _operator = Operator::start(&estate).await;
    estate.apply(&deployment_yaml("ranker", "internal", 2, 2, ""));
    wait_for(&estate, "ranker", "Ready", |md| is_true(md, "Ready")).await;

    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(estate.private.client().unwrap());
    namespaces
        .delete(APP_NAMESPACE, &DeleteParams::default())
        .await
        .unwrap();
    eventually_gone(
        "the namespace is gone in the private cluster",
        &namespaces,
        APP_NAMESPACE,
    )
    .await;

    estate.apply(&deployment_yaml("tagger", "internal", 1, 1, ""));
    wait_for(&estate, "tagger", "Ready", |md| is_true(md, "Ready")).await;
    wait_for(&estate, "ranker", "Ready again", |md| {
        is_true(md, "Ready") && md.status.as_ref().is_some_and(|s| s.ready_replicas == 2)
    })
    .await;
    assert!(
        namespaces.get_opt(APP_NAMESPACE).await.unwrap().is_some(),
        "the namespace was created again"
    );
    assert_eq!(total_replicas(&children(&estate.private).await), 3);
}

/// A member cluster where the operator may write into a namespace but not read it (403 on
/// `get namespaces`): the namespace is assumed to be there, and created when an apply into it
/// finds it missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_the_operator_may_not_read_is_created_when_an_apply_finds_it_missing() {
    let estate = Estate::start(8, 8).await;
    if !estate.harness_only(
        "a_namespace_the_operator_may_not_read_is_created_when_an_apply_finds_it_missing",
    ) {
        return;
    }
    estate.apply_pools();
    estate
        .private
        .set_faults(vec![
            kube_harness::FaultRule::status(403)
                .verb("get")
                .path(&format!("^/api/v1/namespaces/{APP_NAMESPACE}$")),
        ])
        .unwrap();
    let _operator = Operator::start(&estate).await;
    estate.apply(&deployment_yaml("ranker", "internal", 2, 2, ""));
    wait_for(&estate, "ranker", "Ready", |md| is_true(md, "Ready")).await;
    assert_eq!(total_replicas(&children(&estate.private).await), 2);
}

/// A new deployment whose replicas start slowly reports its progress (Ready False, reason
/// Progressing, for its generation) while they start, then Ready. The operator holds a new
/// deployment's first report back only for a short grace, waiting for its replicas: this checks
/// the report is not held back for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_slow_to_start_reports_progress_until_ready() {
    let estate = Estate::start(8, 8).await;
    if !estate.harness_only("a_deployment_slow_to_start_reports_progress_until_ready") {
        return;
    }
    estate.apply_pools();
    // Well beyond the operator's grace for a first report (2 s).
    estate.private.set_readiness_delay(Duration::from_secs(8));
    let _operator = Operator::start(&estate).await;
    estate.apply(&deployment_yaml("ranker", "internal", 2, 2, ""));

    let md = wait_for(&estate, "ranker", "a progress report", |md| {
        md.status.is_some()
    })
    .await;
    let status = md.status.as_ref().unwrap();
    let ready = condition(&md, "Ready").expect("a Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Progressing"),
        "{status:?}"
    );
    assert_eq!(status.observed_generation, md.metadata.generation);
    assert_eq!((status.ready_replicas, status.desired_replicas), (0, 2));
    assert!(is_true(&md, "Reconciling"));
    assert!(is_true(&md, "Placed"));

    let md = wait_for(&estate, "ranker", "Ready", |md| is_true(md, "Ready")).await;
    assert_eq!(md.status.as_ref().unwrap().ready_replicas, 2);
}
