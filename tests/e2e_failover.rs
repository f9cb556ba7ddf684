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
