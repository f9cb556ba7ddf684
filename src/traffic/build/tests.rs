use super::*;
use crate::api::{BackendState, DataClass};
use crate::traffic::decision::planned;
use serde_json::{Value, json};

fn deployment(data_class: &str, traffic: Value) -> ModelDeployment {
    serde_json::from_value(json!({
        "apiVersion": "skybridge.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "ranker", "namespace": "shop", "uid": "u-1"},
        "spec": {
            "model": {"source": {"uri": "s3://models/ranker", "pool": "dc1"}, "version": "1"},
            "components": [{
                "name": "rank", "dataClass": data_class, "image": "triton", "port": 8000,
                "resources": {"cpu": "1", "memory": "1Gi"}, "replicas": {"min": 1, "max": 8},
                "traffic": traffic
            }]
        }
    }))
    .unwrap()
}

fn http_traffic() -> Value {
    json!({
        "parentRefs": [{"name": "edge", "namespace": "gateways", "sectionName": "https"}],
        "hostnames": ["rank.shop.internal"],
        "path": {"type": "PathPrefix", "value": "/v1/rank"}
    })
}

fn placements() -> Vec<(String, String, Cloud, u32)> {
    vec![
        ("dc1".into(), "local".into(), Cloud::Private, 3),
        ("aws".into(), "shop/aws".into(), Cloud::Public, 1),
        ("gcp".into(), "shop/gcp".into(), Cloud::Public, 0),
    ]
}

#[test]
fn the_http_route_weights_the_local_service_and_one_import_per_remote_pool() {
    let md = deployment("internal", http_traffic());
    let component = &md.spec.components[0];
    let decision = planned(DataClass::Internal, "dc1", "local", &placements());
    let route = build_route(&md, component, &decision, "shop", |_| "shop".into(), None).unwrap();
    let Route::Http(route) = route else {
        panic!("an HTTP component gets an HTTPRoute")
    };
    let json = serde_json::to_value(&route).unwrap();
    assert_eq!(json["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(json["kind"], "HTTPRoute");
    assert_eq!(json["metadata"]["name"], "ranker-rank");
    assert_eq!(json["metadata"]["labels"]["skybridge.io/component"], "rank");
    assert_eq!(
        json["spec"]["parentRefs"],
        json!([{"name": "edge", "namespace": "gateways", "sectionName": "https"}])
    );
    assert_eq!(json["spec"]["hostnames"], json!(["rank.shop.internal"]));
    let rule = &json["spec"]["rules"][0];
    assert_eq!(
        rule["matches"],
        json!([{"path": {"type": "PathPrefix", "value": "/v1/rank"}}])
    );
    assert_eq!(
        rule["backendRefs"],
        json!([
            {"group": "", "kind": "Service", "name": "ranker-rank", "port": 8000, "weight": 750},
            {"group": "multicluster.x-k8s.io", "kind": "ServiceImport", "name": "ranker-rank-aws", "port": 8000, "weight": 250}
        ]),
        "a pool without replicas is no backend"
    );
    assert!(json.get("status").is_none(), "an apply never claims status");
}

#[test]
fn zero_weight_imports_are_left_out_and_other_namespaces_named() {
    let md = deployment("internal", http_traffic());
    let component = &md.spec.components[0];
    let mut decision = planned(DataClass::Internal, "dc1", "local", &placements());
    decision.backends[1].weight = 0;
    decision.backends[1].state = BackendState::Warming;
    let route = build_route(&md, component, &decision, "shop", |_| "shop".into(), None).unwrap();
    let refs = route.backend_refs();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].kind.as_deref(), Some("Service"));

    let decision = planned(DataClass::Internal, "dc1", "local", &placements());
    let route = build_route(&md, component, &decision, "shop", |_| "burst".into(), None).unwrap();
    let refs = route.backend_refs();
    assert_eq!(refs[0].namespace, None);
    assert_eq!(refs[1].namespace.as_deref(), Some("burst"));
}

#[test]
fn a_grpc_component_gets_a_grpc_route_without_path_matches() {
    let md = deployment(
        "internal",
        json!({"parentRefs": [{"name": "edge", "port": 443}], "protocol": "GRPC"}),
    );
    let decision = planned(DataClass::Internal, "dc1", "local", &placements());
    let route = build_route(
        &md,
        &md.spec.components[0],
        &decision,
        "shop",
        |_| "shop".into(),
        None,
    )
    .unwrap();
    let Route::Grpc(route) = route else {
        panic!("a GRPC component gets a GRPCRoute")
    };
    let json = serde_json::to_value(&route).unwrap();
    assert_eq!(json["kind"], "GRPCRoute");
    assert_eq!(
        json["spec"]["parentRefs"],
        json!([{"name": "edge", "port": 443}])
    );
    assert!(json["spec"]["rules"][0].get("matches").is_none());
    assert_eq!(json["spec"]["rules"][0]["backendRefs"][1]["weight"], 250);
}

#[test]
fn a_sensitive_route_with_a_public_backend_is_refused() {
    let md = deployment("sensitive", http_traffic());
    let component = &md.spec.components[0];
    // The decision itself never has one; a corrupted one must still not reach the Gateway.
    let honest = planned(DataClass::Sensitive, "dc1", "local", &placements());
    assert_eq!(honest.backends.len(), 1);
    let corrupted = planned(DataClass::Internal, "dc1", "local", &placements());
    assert_eq!(corrupted.backends.len(), 2);
    let error =
        build_route(&md, component, &corrupted, "shop", |_| "shop".into(), None).unwrap_err();
    assert!(error.to_string().contains("public pool aws"), "{error}");
    // A backend the decision does not know is refused too.
    let route = build_route(&md, component, &honest, "shop", |_| "shop".into(), None).unwrap();
    let known = known_backends(&md, "rank", &honest);
    assert!(guard_route(&route, "rank", DataClass::Sensitive, &known).is_ok());
    let Route::Http(mut tampered) = route else {
        unreachable!()
    };
    tampered.spec.rules[0].backend_refs.push(BackendRef {
        kind: Some("ServiceImport".into()),
        name: "ranker-rank-aws".into(),
        ..Default::default()
    });
    assert!(matches!(
        guard_route(&Route::Http(tampered), "rank", DataClass::Sensitive, &known),
        Err(GuardError::UnknownBackend { .. })
    ));
}

#[test]
fn each_pool_gets_its_own_service_and_export() {
    let md = deployment("internal", http_traffic());
    let export = build_pool_export(
        &md,
        &md.spec.components[0],
        "aws",
        "shop",
        McsVersion::V1Alpha1,
        None,
    );
    let service = serde_json::to_value(&export.service).unwrap();
    let exported = serde_json::to_value(&export.export).unwrap();
    assert_eq!(service["metadata"]["name"], "ranker-rank-aws");
    assert_eq!(
        exported["metadata"]["name"], "ranker-rank-aws",
        "MCS exports the same-name Service"
    );
    assert_eq!(exported["apiVersion"], "multicluster.x-k8s.io/v1alpha1");
    assert_eq!(exported["kind"], "ServiceExport");
    assert_eq!(service["spec"]["selector"]["skybridge.io/pool"], "aws");
    assert_eq!(
        service["spec"]["selector"]["skybridge.io/component"],
        "rank"
    );
    assert_eq!(service["spec"]["ports"][0]["port"], 8000);
    let other = build_pool_export(
        &md,
        &md.spec.components[0],
        "gcp",
        "shop",
        McsVersion::V1Beta1,
        None,
    );
    assert_ne!(other.export.metadata.name, export.export.metadata.name);
    assert_eq!(other.export.api_version, "multicluster.x-k8s.io/v1beta1");
}

#[test]
fn status_round_trips_into_the_next_decisions_previous_state() {
    use crate::traffic::decision::{PoolObservation, PreviousBackend, TrafficInput, decide};
    let md = deployment("internal", http_traffic());
    let pools = vec![
        PoolObservation {
            pool: "dc1".into(),
            cluster: "local".into(),
            cloud: Cloud::Private,
            placed: 2,
            current: 2,
            ready: 2,
            reachable: true,
        },
        PoolObservation {
            pool: "aws".into(),
            cluster: "shop/aws".into(),
            cloud: Cloud::Public,
            placed: 0,
            current: 2,
            ready: 2,
            reachable: true,
        },
    ];
    let decide_at = |previous: &[PreviousBackend], now| {
        decide(&TrafficInput {
            data_class: DataClass::Internal,
            home_pool: "dc1",
            home_cluster: "local",
            pools: &pools,
            previous,
            drain_seconds: 30,
            now,
        })
    };
    let first = decide_at(&[], 1_764_770_000);
    let status = backend_statuses(&md, "rank", &first);
    assert_eq!(status[1].name, "ranker-rank-aws");
    assert_eq!(status[1].state, BackendState::Draining);
    let json = serde_json::to_value(&status[1]).unwrap();
    assert_eq!(json["kind"], "ServiceImport");
    assert_eq!(json["since"], "2025-12-03T13:53:20Z");
    assert_eq!(json["readyReplicas"], 2);
    let previous = PreviousBackend::from_status(&status);
    let later = decide_at(&previous, 1_764_770_030);
    assert!(
        later.hold("aws").unwrap().released,
        "the drain survives a restart"
    );
    let early = decide_at(&previous, 1_764_770_029);
    assert!(!early.hold("aws").unwrap().released);
}
