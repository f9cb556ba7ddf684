//! What the operator reports about traffic (pure): the `TrafficReady` condition from each
//! route's own `status.parents` (or why there is no route), the Events of backend state changes
//! (drains above all), and the per-backend weights for the metric.

use crate::api::{BackendState, TRAFFIC_READY, TrafficBackendStatus};
use crate::operator::kubernetes::conditions::Decided;
use serde_json::Value;

/// How one component's route fared in this reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteOutcome {
    /// Written (or unchanged); the route as the API server returned it, with its status.
    Written(Value),
    /// Written, but something it needs is not in place (an export failed): the reason and
    /// message say what.
    WrittenWithProblem {
        route: Value,
        reason: String,
        message: String,
    },
    /// Not written: the reason is the condition's (e.g. `GatewayAPIMissing`), the message says
    /// why for people.
    NotWritten { reason: String, message: String },
}

/// Whether one route is accepted by every Gateway it names and resolves every backend, from
/// its `status.parents`: `Ok(())`, or `Err((reason, message))`.
pub fn route_ready(route: &Value) -> Result<(), (&'static str, String)> {
    let parents = route["spec"]["parentRefs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let reported = route["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let name = route["metadata"]["name"].as_str().unwrap_or_default();
    for parent in &parents {
        let gateway = parent["name"].as_str().unwrap_or_default();
        // A parentRef as written; the status repeats it with defaults filled in.
        let same = |p: &Value| {
            let r = &p["parentRef"];
            ["name", "namespace", "sectionName", "port"]
                .iter()
                .all(|k| parent[*k].is_null() || r[*k] == parent[*k])
        };
        let Some(entry) = reported.iter().find(|p| same(p)) else {
            return Err((
                "Pending",
                format!("route {name}: Gateway {gateway} has not reported on it yet"),
            ));
        };
        for (kind, reason_if_false) in [
            ("Accepted", "RouteNotAccepted"),
            ("ResolvedRefs", "BackendsUnresolved"),
        ] {
            let condition = entry["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == kind));
            match condition {
                Some(c) if c["status"] == "True" => {}
                Some(c) => {
                    return Err((
                        reason_if_false,
                        format!(
                            "route {name} on Gateway {gateway}: {kind} {} ({}): {}",
                            c["status"].as_str().unwrap_or("Unknown"),
                            c["reason"].as_str().unwrap_or_default(),
                            c["message"].as_str().unwrap_or_default()
                        ),
                    ));
                }
                None => {
                    return Err((
                        "Pending",
                        format!("route {name} on Gateway {gateway}: no {kind} condition yet"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `TrafficReady` over a deployment's components with `traffic` (None when it has none):
/// True when every route is written, accepted and resolved; else the first problem, with
/// every component's message.
pub fn traffic_ready(routes: &[(String, RouteOutcome)]) -> Option<Decided> {
    if routes.is_empty() {
        return None;
    }
    let mut first_reason: Option<String> = None;
    let mut messages = Vec::new();
    for (component, outcome) in routes {
        let problem = match outcome {
            RouteOutcome::Written(route) => route_ready(route)
                .err()
                .map(|(reason, message)| (reason.to_string(), message)),
            RouteOutcome::WrittenWithProblem {
                reason, message, ..
            }
            | RouteOutcome::NotWritten { reason, message } => {
                Some((reason.clone(), message.clone()))
            }
        };
        if let Some((reason, message)) = problem {
            first_reason.get_or_insert(reason);
            messages.push(format!("component {component}: {message}"));
        }
    }
    Some(match first_reason {
        None => Decided::new(
            TRAFFIC_READY,
            true,
            "RoutesAccepted",
            format!(
                "{} route(s) accepted by their Gateways, every backend resolved",
                routes.len()
            ),
        ),
        Some(reason) => Decided::new(TRAFFIC_READY, false, reason, messages.join("; ")),
    })
}

/// The Events of one component's backend changes between two decisions: a drain starting
/// (`TrafficDraining`), a drained backend released (`TrafficDrained`), a backend serving
/// (`TrafficServing`) or cut off (`TrafficUnreachable`). Warnings are the cut-offs.
pub fn state_events(
    component: &str,
    before: &[TrafficBackendStatus],
    after: &[TrafficBackendStatus],
    drain_seconds: u32,
) -> Vec<(bool, &'static str, String)> {
    let mut events = Vec::new();
    let key =
        |b: &TrafficBackendStatus| (b.cluster.clone(), b.pool.clone(), b.kind, b.name.clone());
    for b in after {
        let previous = before.iter().find(|p| key(p) == key(b)).map(|p| p.state);
        if previous == Some(b.state) {
            continue;
        }
        let what = format!(
            "component {component}: backend {} {} (pool {}, cluster {})",
            b.kind.as_str(),
            b.name,
            b.pool,
            b.cluster
        );
        match b.state {
            BackendState::Draining => events.push((
                false,
                "TrafficDraining",
                format!(
                    "{what} draining at weight {}: its replicas go after {drain_seconds}s",
                    b.weight
                ),
            )),
            BackendState::Serving => events.push((
                false,
                "TrafficServing",
                format!(
                    "{what} serving at weight {} ({} ready)",
                    b.weight, b.ready_replicas
                ),
            )),
            BackendState::Unreachable => events.push((
                true,
                "TrafficUnreachable",
                format!("{what}: its cluster does not answer, weight 0"),
            )),
            BackendState::Warming => {}
        }
    }
    for b in before {
        if b.state == BackendState::Draining && !after.iter().any(|a| key(a) == key(b)) {
            events.push((
                false,
                "TrafficDrained",
                format!(
                    "component {component}: backend {} {} (pool {}) drained and removed from the route",
                    b.kind.as_str(),
                    b.name,
                    b.pool
                ),
            ));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackendKind;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn route(parents: Value) -> Value {
        json!({"metadata": {"name": "ranker"},
               "spec": {"parentRefs": [{"name": "edge", "namespace": "gw"}]},
               "status": {"parents": parents}})
    }

    fn parent(accepted: &str, resolved: &str) -> Value {
        json!({"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                             "name": "edge", "namespace": "gw"},
               "controllerName": "example.com/gw",
               "conditions": [
                   {"type": "Accepted", "status": accepted, "reason": "R", "message": "m"},
                   {"type": "ResolvedRefs", "status": resolved, "reason": "BackendNotFound",
                    "message": "import missing"}]})
    }

    #[test]
    fn ready_only_when_every_parent_accepts_and_resolves() {
        assert_eq!(route_ready(&route(json!([parent("True", "True")]))), Ok(()));
        assert_eq!(
            route_ready(&route(json!([parent("False", "True")])))
                .unwrap_err()
                .0,
            "RouteNotAccepted"
        );
        let (reason, message) = route_ready(&route(json!([parent("True", "False")]))).unwrap_err();
        assert_eq!(reason, "BackendsUnresolved");
        assert!(message.contains("import missing"), "{message}");
        assert_eq!(route_ready(&route(json!([]))).unwrap_err().0, "Pending");
        let other_gateway = json!([{"parentRef": {"name": "other", "namespace": "gw"},
                                    "conditions": []}]);
        assert_eq!(route_ready(&route(other_gateway)).unwrap_err().0, "Pending");
    }

    #[test]
    fn the_condition_names_every_component_with_a_problem() {
        assert_eq!(traffic_ready(&[]), None);
        let ok = RouteOutcome::Written(route(json!([parent("True", "True")])));
        let ready = traffic_ready(&[("a".into(), ok.clone())]).unwrap();
        assert!(ready.status);
        let missing = RouteOutcome::NotWritten {
            reason: "GatewayAPIMissing".into(),
            message: "no gateway.networking.k8s.io/v1 in cluster private".into(),
        };
        let not = traffic_ready(&[
            ("a".into(), ok),
            ("b".into(), missing),
            (
                "c".into(),
                RouteOutcome::Written(route(json!([parent("False", "True")]))),
            ),
        ])
        .unwrap();
        assert!(!not.status);
        assert_eq!(not.reason, "GatewayAPIMissing");
        assert!(not.message.contains("component b") && not.message.contains("component c"));
        assert!(!not.message.contains("component a"));
    }

    fn backend(pool: &str, state: BackendState, weight: u32) -> TrafficBackendStatus {
        TrafficBackendStatus {
            cluster: "public-kubeconfig".into(),
            pool: pool.into(),
            kind: BackendKind::ServiceImport,
            name: format!("ranker-{pool}"),
            weight,
            ready_replicas: 2,
            state,
            since: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            reason: String::new(),
        }
    }

    #[test]
    fn drains_and_cut_offs_are_told_once() {
        let serving = vec![backend("cloud", BackendState::Serving, 500)];
        let draining = vec![backend("cloud", BackendState::Draining, 0)];
        let events = state_events("ranker", &serving, &draining, 30);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].1, "TrafficDraining");
        assert!(events[0].2.contains("after 30s"));
        assert!(state_events("ranker", &draining, &draining, 30).is_empty());
        let gone = state_events("ranker", &draining, &[], 30);
        assert_eq!(gone[0].1, "TrafficDrained");
        let cut = state_events(
            "ranker",
            &serving,
            &[backend("cloud", BackendState::Unreachable, 0)],
            30,
        );
        assert_eq!((cut[0].0, cut[0].1), (true, "TrafficUnreachable"));
        assert!(
            state_events("ranker", &[], &[backend("c", BackendState::Warming, 0)], 30).is_empty()
        );
    }
}
