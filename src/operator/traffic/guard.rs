//! The last check before a route is written: a sensitive component's route references no
//! backend that reaches a public pool. The decision already never places one there; this looks
//! at the very object about to be sent (its `spec.rules[].backendRefs[]`), so that no later
//! change between the decision and the write (a builder, a merge of routes) can leak a public
//! backend. A backendRef the operator cannot trace to its pools is refused too: what cannot be
//! shown private is treated as public.

use crate::api::Cloud;
use serde_json::Value;
use std::collections::BTreeMap;

/// A backend as the route references it: (kind, namespace, name); `namespace` empty = the
/// route's own.
pub type BackendRef = (String, String, String);

/// The clouds of the pools each backend reaches, as the operator built them.
pub type Provenance = BTreeMap<BackendRef, Vec<Cloud>>;

/// Every backendRef of a route object (HTTPRoute or GRPCRoute), with defaults applied
/// (`kind` Service, namespace of the route).
pub fn backend_refs(route: &Value) -> Vec<BackendRef> {
    let route_ns = route["metadata"]["namespace"].as_str().unwrap_or_default();
    route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["backendRefs"].as_array().into_iter().flatten())
        .map(|b| {
            (
                b["kind"].as_str().unwrap_or("Service").to_string(),
                b["namespace"].as_str().unwrap_or(route_ns).to_string(),
                b["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Refuses `route` (with the reason) when the component is sensitive and one of its
/// backendRefs reaches a public pool, or a pool the provenance does not know.
pub fn check_route(sensitive: bool, route: &Value, provenance: &Provenance) -> Result<(), String> {
    if !sensitive {
        return Ok(());
    }
    for backend in backend_refs(route) {
        match provenance.get(&backend) {
            None => {
                return Err(format!(
                    "backend {} {}/{} cannot be traced to a private pool",
                    backend.0, backend.1, backend.2
                ));
            }
            Some(clouds) if clouds.contains(&Cloud::Public) || clouds.is_empty() => {
                return Err(format!(
                    "backend {} {}/{} reaches a public pool (or none)",
                    backend.0, backend.1, backend.2
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn route(backends: &[(bool, &str, Option<&str>)]) -> Value {
        let refs: Vec<Value> = backends
            .iter()
            .map(|(import, name, ns)| {
                let mut b = json!({"name": name, "port": 8080, "weight": 1});
                if *import {
                    b["group"] = json!("multicluster.x-k8s.io");
                    b["kind"] = json!("ServiceImport");
                }
                if let Some(ns) = ns {
                    b["namespace"] = json!(ns);
                }
                b
            })
            .collect();
        json!({"metadata": {"namespace": "shop"},
               "spec": {"rules": [{"backendRefs": refs}]}})
    }

    #[test]
    fn public_and_untraced_backends_of_a_sensitive_route_are_refused() {
        let mut provenance = Provenance::new();
        provenance.insert(
            ("Service".into(), "shop".into(), "ranker".into()),
            vec![Cloud::Private],
        );
        provenance.insert(
            ("ServiceImport".into(), "shop".into(), "ranker-dc2".into()),
            vec![Cloud::Private],
        );
        provenance.insert(
            ("ServiceImport".into(), "shop".into(), "ranker-aws".into()),
            vec![Cloud::Public],
        );
        let private = route(&[(false, "ranker", None), (true, "ranker-dc2", Some("shop"))]);
        assert_eq!(check_route(true, &private, &provenance), Ok(()));
        let public = route(&[(false, "ranker", None), (true, "ranker-aws", None)]);
        assert!(check_route(true, &public, &provenance).is_err());
        assert_eq!(check_route(false, &public, &provenance), Ok(()));
        let untraced = route(&[(true, "ranker-dc2", Some("elsewhere"))]);
        assert!(check_route(true, &untraced, &provenance).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(30_000))]
        /// Whatever the route and the provenance: a sensitive route that passes references only
        /// backends known to reach private pools only.
        #[test]
        fn a_sensitive_route_that_passes_reaches_no_public_pool(
            backends in proptest::collection::vec((any::<bool>(), 0..6u8, any::<bool>()), 0..6),
            clouds in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(any::<bool>(), 0..3)), 12),
        ) {
            let names: Vec<String> = (0..6).map(|i| format!("b{i}")).collect();
            let refs: Vec<(bool, &str, Option<&str>)> = backends
                .iter()
                .map(|(import, i, own_ns)| {
                    (*import, names[*i as usize].as_str(), (!own_ns).then_some("other"))
                })
                .collect();
            let route = route(&refs);
            let mut provenance = Provenance::new();
            for (slot, c) in clouds.iter().enumerate() {
                if let Some(public) = c {
                    let kind = if slot % 2 == 0 { "Service" } else { "ServiceImport" };
                    let clouds = public
                        .iter()
                        .map(|p| if *p { Cloud::Public } else { Cloud::Private })
                        .collect();
                    provenance.insert(
                        (kind.into(), "shop".into(), names[slot / 2].clone()),
                        clouds,
                    );
                }
            }
            let passed = check_route(true, &route, &provenance).is_ok();
            let really_private = backend_refs(&route).iter().all(|b| {
                provenance
                    .get(b)
                    .is_some_and(|c| !c.is_empty() && c.iter().all(|c| *c == Cloud::Private))
            });
            prop_assert_eq!(passed, really_private);
            prop_assert!(check_route(false, &route, &provenance).is_ok());
        }
    }
}
