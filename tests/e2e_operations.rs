//! End to end: restarts, leader election, injected API faults, bad input, probes and metrics.

mod e2e_support;

use e2e_support::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube_harness::FaultRule;
use std::time::Duration;

async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://{addr}{path}")).await.ok()?;
    let code = response.status().as_u16();
    Some((code, response.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_reconcile_and_restarted_duplicates_and_orphans_nothing() {
    let estate = Estate::start(4, 16).await;
    estate.apply_pools();
    let operator = Operator::start(&estate).await;
    estate.apply(&deployment_yaml("ranker", "internal", 6, 8, ""));
    // Kill as soon as the first child exists: the reconcile that created it is cut short.
    eventually("a first child", || async {
        (!children(&estate.private).await.is_empty()).then_some(())
    })
    .await;
    operator.kill();

    let _restarted = Operator::start(&estate).await;
    let md = wait_for(&estate, "ranker", "Ready after restart", |md| {
        is_true(md, "Ready")
    })
    .await;
    assert_eq!(md.status.as_ref().unwrap().ready_replicas, 6);
    let private = children(&estate.private).await;
    let public = children(&estate.public).await;
    assert_eq!(
        private.len(),
        1,
        "one Deployment per (component, pool): {private:?}"
    );
    assert_eq!(public.len(), 1, "{public:?}");
    assert_eq!(total_replicas(&private) + total_replicas(&public), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_the_standby_takes_over() {
    let estate = Estate::start(8, 8).await;
    estate.apply_pools();
    let first = Operator::start_named(&estate, "operator-a", true).await;
    let second = Operator::start_named(&estate, "operator-b", true).await;
    let leases: Api<Lease> = Api::namespaced(estate.hub_client(), OPERATOR_NAMESPACE);
    let holder = eventually("a leader", || async {
        leases
            .get_opt("skybridge-leader")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    })
    .await;
    let leads = |addr, expected: bool| async move {
        let (_, body) = http_get(addr, "/metrics").await?;
        let leading = body
            .lines()
            .find(|l| l.starts_with("skybridge_leader "))?
            .ends_with(" 1");
        (leading == expected).then_some(())
    };
    let (leader, standby, standby_id) = if holder == "operator-a" {
        (first, second, "operator-b")
    } else {
        (second, first, "operator-a")
    };
    eventually("leader metric is 1", || leads(leader.probe_addr, true)).await;
    eventually("standby metric is 0", || leads(standby.probe_addr, false)).await;

    estate.apply(&deployment_yaml("ranker", "internal", 2, 4, ""));
    wait_for(&estate, "ranker", "Ready under the first leader", |md| {
        is_true(md, "Ready")
    })
    .await;

    // The leader dies without releasing the lease; the standby takes over once it expires.
    leader.kill();
    eventually("the standby holds the lease", || async {
        let holder = leases
            .get_opt("skybridge-leader")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity?;
        (holder == standby_id).then_some(())
    })
    .await;
    eventually("new leader metric is 1", || leads(standby.probe_addr, true)).await;
    estate.apply(&deployment_yaml("tagger", "internal", 1, 2, ""));
    wait_for(&estate, "tagger", "Ready under the new leader", |md| {
        is_true(md, "Ready")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_through_conflicts_server_errors_latency_and_dropped_watches() {
    let estate = Estate::start(8, 8).await;
    if !estate.harness_only("converges_through_conflicts_server_errors_latency_and_dropped_watches")
    {
        return;
    }
    estate.apply_pools();
    let _operator = Operator::start(&estate).await;
    // Faults on every cluster the operator talks to. kube-rs retries 429/503 itself, so 500
    // and 409 are what reach the controller's own backoff.
    estate
        .hub
        .set_faults_seeded(
            vec![
                // Deterministic: the first five writes to ModelDeployments fail, more than one
                // request's retries absorb, so at least one reconcile fails and backs off.
                FaultRule::status(500)
                    .path("modeldeployments")
                    .verb("patch")
                    .times(5),
                FaultRule::status(409).fraction(0.2).verb("patch"),
                FaultRule::status(500).fraction(0.15),
                FaultRule::latency(Duration::from_millis(150)).fraction(0.3),
            ],
            11,
        )
        .unwrap();
    estate
        .private
        .set_faults_seeded(
            vec![
                FaultRule::status(500).fraction(0.3),
                FaultRule::status(409).fraction(0.2).verb("patch"),
            ],
            5,
        )
        .unwrap();
    estate.apply(&deployment_yaml("ranker", "internal", 3, 6, ""));
    for _ in 0..3 {
        estate.hub.close_watches();
        estate.private.close_watches();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Errors from the private cluster may fail every attempt of a probe: the pool then counts
    // as unreachable for a moment, and its workload is left alone (stranded) rather than
    // deleted, until adopted or scaled in.
    let md = wait_for(&estate, "ranker", "Ready despite faults", |md| {
        is_true(md, "Ready") && nothing_stranded_pending(md)
    })
    .await;
    assert_eq!(md.status.as_ref().unwrap().ready_replicas, 3);
    estate.hub.clear_faults();
    estate.private.clear_faults();
    let private = children(&estate.private).await;
    let public = children(&estate.public).await;
    assert_eq!(
        total_replicas(&private) + total_replicas(&public),
        3,
        "nothing duplicated by retries"
    );
    assert!(
        private.len() <= 1 && public.len() <= 1,
        "one Deployment per pool: {private:?} {public:?}"
    );
    let (_, metrics) = http_get(_operator.probe_addr, "/metrics").await.unwrap();
    let errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("skybridge_reconcile_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        errors > 0.0,
        "injected faults show up as reconcile errors:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_object_stalls_with_an_event_and_does_not_block_others() {
    let estate = Estate::start(8, 8).await;
    estate.apply_pools();
    let operator = Operator::start(&estate).await;
    let (code, _) = eventually("readyz", || async {
        let (code, body) = http_get(operator.probe_addr, "/readyz").await?;
        (code == 200).then_some((code, body))
    })
    .await;
    assert_eq!(code, 200);
    // Passes the schema (a policy name is just a string) but names a policy that does not exist.
    estate.apply(&deployment_yaml(
        "broken",
        "internal",
        1,
        2,
        "      burstPolicy: no-such-policy",
    ));
    estate.apply(&deployment_yaml("fine", "internal", 1, 2, ""));
    let broken = wait_for(&estate, "broken", "Stalled", |md| is_true(md, "Stalled")).await;
    let stalled = condition(&broken, "Stalled").unwrap();
    assert!(
        stalled
            .message
            .contains("unknown BurstPolicy \"no-such-policy\""),
        "{}",
        stalled.message
    );
    assert!(!is_true(&broken, "Ready"));
    wait_for(
        &estate,
        "fine",
        "the other deployment is unaffected",
        |md| is_true(md, "Ready"),
    )
    .await;
    let events: Api<Event> = Api::namespaced(estate.hub_client(), APP_NAMESPACE);
    let event = eventually("an InvalidSpec Event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("InvalidSpec"))
    })
    .await;
    assert!(event.note.unwrap_or_default().contains("no-such-policy"));
    assert!(
        children(&estate.private)
            .await
            .iter()
            .all(|(name, _, _)| !name.starts_with("broken"))
    );
    let (code, _) = http_get(operator.probe_addr, "/livez").await.unwrap();
    assert_eq!(code, 200);
}
