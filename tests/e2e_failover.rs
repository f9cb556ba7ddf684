//! End to end: a cluster that becomes unreachable, and a pool that shrinks.

mod e2e_support;

use e2e_support::*;
use kube_harness::NodeSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_private_cluster_moves_burstable_replicas_and_degrades_sensitive_ones() {
    let estate = Estate::start(8, 16).await;
    if !estate.harness_only(
        "unreachable_private_cluster_moves_burstable_replicas_and_degrades_sensitive_ones",
    ) {
        return;
    }
    estate.apply_pools();
    let _operator = Operator::start(&estate).await;
    estate.apply(&deployment_yaml("ranker", "internal", 3, 6, ""));
    estate.apply(&deployment_yaml("encoder", "sensitive", 2, 2, ""));
    wait_for(&estate, "ranker", "ranker Ready on private", |md| {
        is_true(md, "Ready") && replicas_on(md, "dc1-l4") == 3
    })
    .await;
    wait_for(&estate, "encoder", "encoder Ready", |md| {
        is_true(md, "Ready")
    })
    .await;

    let private_uids = private_child_uids(&estate).await;
    assert_eq!(private_uids.len(), 2, "{private_uids:?}");

    estate.private.set_unreachable();
    let pool = eventually("dc1-l4 reported unreachable", || async {
        let pool = estate.pools_api().get("dc1-l4").await.ok()?;
        let reachable = pool
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Reachable")?;
        (reachable.status == "False").then_some(pool)
    })
    .await;
    let ready = pool
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    let ranker = wait_for(&estate, "ranker", "ranker moved to the public pool", |md| {
        is_true(md, "Ready") && replicas_on(md, "cloud-l4") == 3
    })
    .await;
    assert_eq!(replicas_on(&ranker, "dc1-l4"), 0);
    let encoder = wait_for(&estate, "encoder", "encoder Degraded", |md| {
        is_true(md, "Degraded")
    })
    .await;
    assert_eq!(
        replicas_on(&encoder, "cloud-l4"),
        0,
        "sensitive replicas never move to public"
    );
    assert!(
        children(&estate.public)
            .await
            .iter()
            .all(|(name, _, _)| !name.starts_with("encoder"))
    );

    estate
        .private
        .set_reachable()
        .await
        .expect("the cluster comes back");
    wait_for(&estate, "encoder", "encoder Ready again", |md| {
        is_true(md, "Ready") && !is_true(md, "Degraded")
    })
    .await;
    wait_for(&estate, "ranker", "ranker back on private", |md| {
        is_true(md, "Ready") && replicas_on(md, "dc1-l4") == 3 && replicas_on(md, "cloud-l4") == 0
    })
    .await;
    eventually("public children removed after failback", || async {
        children(&estate.public).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(
        private_child_uids(&estate).await,
        private_uids,
        "the private workloads, left alone during the outage, were adopted, not re-created"
    );
}

/// Name and uid of every Skybridge Deployment in the private cluster.
async fn private_child_uids(estate: &Estate) -> Vec<(String, String)> {
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::all(estate.private.client().expect("client"));
    let listed = api
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=skybridge"))
        .await
        .expect("children list");
    let mut uids: Vec<(String, String)> = listed
        .items
        .into_iter()
        .map(|d| {
            (
                d.metadata.name.unwrap_or_default(),
                d.metadata.uid.unwrap_or_default(),
            )
        })
        .collect();
    uids.sort();
    uids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrinking_pool_sheds_replicas_to_other_pools() {
    let estate = Estate::start(6, 16).await;
    if !estate.harness_only("a_shrinking_pool_sheds_replicas_to_other_pools") {
        return;
    }
    estate.apply_pools();
    let _operator = Operator::start(&estate).await;
    estate.apply(&deployment_yaml("ranker", "internal", 5, 6, ""));
    wait_for(&estate, "ranker", "Ready on private", |md| {
        is_true(md, "Ready") && replicas_on(md, "dc1-l4") == 5
    })
    .await;

    // The data centre loses GPUs: the node now offers 2.
    estate
        .private
        .upsert_node(
            NodeSpec::new("dc1-gpu-0")
                .gpus(2)
                .label(POOL_LABEL, "dc1-l4"),
        )
        .expect("node resized");
    let md = wait_for(&estate, "ranker", "replicas re-placed", |md| {
        is_true(md, "Ready") && replicas_on(md, "dc1-l4") == 2 && replicas_on(md, "cloud-l4") == 3
    })
    .await;
    assert!(is_true(&md, "Bursting"));
    let pool = estate.pools_api().get("dc1-l4").await.unwrap();
    assert_eq!(pool.status.unwrap().observed_capacity.unwrap().gpus, 2);
}

/// How the public cluster is cut off from the operator.
#[derive(Clone, Copy, Debug)]
enum Partition {
    /// Connections are refused.
    Refused,
    /// Connections are accepted, requests never answered.
    Hung,
}

/// A deployment of one GPU component with `replicas`, on `pools` only (all pools: empty).
fn pinned_deployment(name: &str, replicas: u32, pools: &[&str]) -> String {
    let pools = if pools.is_empty() {
        String::new()
    } else {
        format!("      pools: [{}]\n", pools.join(", "))
    };
    deployment_yaml(name, "internal", replicas, replicas, &pools)
}

/// A stranded entry of `md` for `pool`, if any.
fn stranded_on<'a>(
    md: &'a skybridge::api::ModelDeployment,
    pool: &str,
) -> Option<&'a skybridge::api::StrandedReplicas> {
    md.status.as_ref()?.stranded.iter().find(|s| s.pool == pool)
}

/// The Deployment the operator placed for `deployment`'s component `ranker` in `pool`.
async fn public_child(
    estate: &Estate,
    deployment: &str,
) -> Option<k8s_openapi::api::apps::v1::Deployment> {
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(estate.public.client().expect("client"), "burst");
    let name =
        skybridge::operator::kubernetes::names::child_name(&[deployment, "ranker", "cloud-l4"]);
    api.get_opt(&name)
        .await
        .expect("the public cluster answers")
}

/// The public cluster is cut off while three deployments run replicas there, then comes back:
/// - `adopted` keeps its two replicas there (it may use no other pool);
/// - `shrunk` (three there) is scaled down to one during the outage;
/// - `moved` has two on dc1 and two there; dc1 grows during the outage and takes them over.
///
/// While cut off, nothing is deleted there and each status reports its replicas there as
/// stranded, not ready. After: the same workloads (same uids) are adopted or scaled in, never
/// re-created; `moved`'s, wholly surplus once its replacements are ready, is scaled to zero and
/// removed.
async fn partition_leaves_serving_replicas_alone(partition: Partition) {
    let estate = Estate::start(2, 16).await;
    if !estate.harness_only(&format!("partition ({partition:?})")) {
        return;
    }
    estate.apply_pools();
    let _operator = Operator::start(&estate).await;
    estate.apply(&pinned_deployment("adopted", 2, &["cloud-l4"]));
    estate.apply(&pinned_deployment("shrunk", 3, &["cloud-l4"]));
    estate.apply(&pinned_deployment("moved", 4, &[]));
    for (name, on_public) in [("adopted", 2), ("shrunk", 3), ("moved", 2)] {
        wait_for(
            &estate,
            name,
            "Ready with replicas on the public pool",
            |md| is_true(md, "Ready") && replicas_on(md, "cloud-l4") == on_public,
        )
        .await;
    }
    let mut before = std::collections::BTreeMap::new();
    for name in ["adopted", "shrunk", "moved"] {
        let child = eventually("the public child is ready", || async {
            public_child(&estate, name)
                .await
                .filter(|d| d.status.as_ref().and_then(|s| s.ready_replicas) == d.spec.replicas)
        })
        .await;
        before.insert(name, child);
    }

    let cut_at = std::time::Instant::now();
    match partition {
        Partition::Refused => estate.public.set_unreachable(),
        Partition::Hung => estate
            .public
            .set_unresponsive()
            .await
            .expect("the public cluster hangs"),
    }
    // The status stops counting the public replicas as ready and reports them stranded.
    for (name, stranded, ready) in [("adopted", 2, 0), ("shrunk", 3, 0), ("moved", 2, 2)] {
        let md = wait_for(&estate, name, "public replicas reported stranded", |md| {
            stranded_on(md, "cloud-l4").is_some_and(|s| {
                s.action == skybridge::api::StrandedAction::LeftAlone && s.replicas == stranded
            }) && md
                .status
                .as_ref()
                .is_some_and(|s| s.ready_replicas == ready)
        })
        .await;
        assert!(
            !is_true(&md, "Ready"),
            "{name} lacks replicas while cut off"
        );
        assert_eq!(
            replicas_on(&md, "cloud-l4"),
            0,
            "{name}: re-placed, not there"
        );
        // A figure for the record (periods are 1 s here), not an assertion.
        eprintln!(
            "{partition:?}: {name} reports its stranded replicas {:.1}s after the cut",
            cut_at.elapsed().as_secs_f64()
        );
    }
    // Meanwhile `shrunk` is scaled down and dc1 grows, taking over `moved`'s public replicas.
    patch_spec(
        &estate,
        "shrunk",
        serde_json::json!({"components": [{
            "name": "ranker", "dataClass": "internal", "image": "pytorch/torchserve:0.12.0-gpu",
            "resources": {"gpu": {"count": 1, "type": "nvidia-l4"}, "cpu": "1", "memory": "1Gi"},
            "replicas": {"min": 1, "max": 1}, "pools": ["cloud-l4"],
        }]}),
    )
    .await;
    estate
        .private
        .upsert_node(
            NodeSpec::new("dc1-gpu-0")
                .gpus(6)
                .label(POOL_LABEL, "dc1-l4"),
        )
        .expect("node grows");
    wait_for(
        &estate,
        "moved",
        "moved's replicas all on dc1 and ready",
        |md| {
            replicas_on(md, "dc1-l4") == 4
                && md.status.as_ref().is_some_and(|s| s.ready_replicas == 4)
        },
    )
    .await;

    estate
        .public
        .set_reachable()
        .await
        .expect("the public cluster comes back");
    let back_at = std::time::Instant::now();
    let adopted = wait_for(&estate, "adopted", "adopted after the partition", |md| {
        is_true(md, "Ready")
            && stranded_on(md, "cloud-l4")
                .is_some_and(|s| s.action == skybridge::api::StrandedAction::Adopted)
    })
    .await;
    eprintln!(
        "{partition:?}: adopted {:.1}s after the cluster came back",
        back_at.elapsed().as_secs_f64()
    );
    assert_eq!(replicas_on(&adopted, "cloud-l4"), 2);
    let child = public_child(&estate, "adopted").await.expect("kept");
    let was = &before["adopted"];
    assert_eq!(child.metadata.uid, was.metadata.uid, "never re-created");
    assert_eq!(
        child.metadata.generation, was.metadata.generation,
        "not changed: no rollout, no readiness drop"
    );
    assert_eq!(child.status.and_then(|s| s.ready_replicas), Some(2));

    wait_for(&estate, "shrunk", "scaled in after the partition", |md| {
        is_true(md, "Ready")
            && stranded_on(md, "cloud-l4").is_some_and(|s| {
                s.action == skybridge::api::StrandedAction::ScaledIn && s.replicas == 1
            })
    })
    .await;
    let child = public_child(&estate, "shrunk").await.expect("kept");
    assert_eq!(
        child.metadata.uid, before["shrunk"].metadata.uid,
        "scaled, not re-created"
    );
    assert_eq!(child.spec.replicas, Some(1));

    wait_for(
        &estate,
        "moved",
        "surplus scaled in after the partition",
        |md| {
            is_true(md, "Ready")
                && stranded_on(md, "cloud-l4").is_some_and(|s| {
                    s.action == skybridge::api::StrandedAction::ScaledIn && s.replicas == 0
                })
        },
    )
    .await;
    eventually("moved's public workload removed once scaled in", || async {
        public_child(&estate, "moved").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_partition_leaves_serving_replicas_alone_and_adopts_them_after() {
    partition_leaves_serving_replicas_alone(Partition::Refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_partition_leaves_serving_replicas_alone_and_adopts_them_after() {
    partition_leaves_serving_replicas_alone(Partition::Hung).await;
}

/// Every request to a member cluster ends by its own deadline when the cluster accepts
/// connections but never answers, marks the cluster down, and succeeds again once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_a_hung_cluster_end_by_their_deadline_and_mark_it_down() {
    use skybridge::operator::kubernetes::clusters::{Clusters, unreachable_error};
    let estate = Estate::start(2, 2).await;
    if !estate.harness_only("requests_to_a_hung_cluster_end_by_their_deadline_and_mark_it_down") {
        return;
    }
    estate.apply_pools();
    let clusters = Clusters::new(estate.hub_client(), OPERATOR_NAMESPACE.into(), 100);
    let pool = estate.pools_api().get("cloud-l4").await.expect("pool");
    let cluster = clusters.for_pool(&pool).await.expect("client");
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(cluster.client().await);
    let list = kube::api::ListParams::default();
    cluster.send(nodes.list(&list)).await.expect("answers");
    assert_eq!(cluster.down_within(PATIENCE), None);

    estate.public.set_unresponsive().await.expect("hangs");
    // PATIENCE only guards the test against a request without a deadline, which would hang.
    let sent = tokio::time::timeout(PATIENCE, cluster.send(nodes.list(&list)))
        .await
        .expect("the request ends by its deadline");
    let err = sent.expect_err("no answer");
    assert!(unreachable_error(&err), "{err}");
    assert!(cluster.down_within(PATIENCE).is_some(), "marked down");
    // Meanwhile further requests are not sent: they fail at once, with the cause.
    let held = tokio::time::timeout(PATIENCE, cluster.send(nodes.list(&list)))
        .await
        .expect("fails at once");
    assert!(
        held.as_ref()
            .is_err_and(|e| unreachable_error(e) && e.to_string().contains("not sent")),
        "{held:?}"
    );
    // A request sent on the client directly ends by the client's own read timeout.
    let direct = tokio::time::timeout(PATIENCE, nodes.list(&list))
        .await
        .expect("the client's read timeout ends it");
    assert!(direct.is_err());

    estate.public.set_reachable().await.expect("answers again");
    eventually("the cluster answers again", || async {
        cluster.send(nodes.list(&list)).await.ok()
    })
    .await;
    assert_eq!(
        cluster.down_within(PATIENCE),
        None,
        "marked up by an answer"
    );
}
