//! CEL rules and schema defaults, evaluated client-side as the API server would.

use super::*;
use kube::core::cel::Validator;
use serde_json::{Value, json};

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

/// The messages of every CEL rule `object` breaks under the CRD of its kind.
fn cel_errors(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    object: Value,
) -> Vec<String> {
    match Validator::new().validate(&schema_of(crd), &object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.to_string().lines().map(str::to_string).collect(),
    }
}

fn pool(spec: Value) -> Value {
    json!({"apiVersion": "skybridge.io/v1alpha1", "kind": "ComputePool", "metadata": {"name": "p"}, "spec": spec})
}

fn pool_spec(cloud: &str) -> Value {
    json!({"cloud": cloud, "provider": "aws", "region": "eu-central-1", "capacity": {"gpu": {"type": "l4", "count": 4}}})
}

#[test]
fn a_public_pool_admitting_sensitive_data_is_rejected() {
    let crd = ComputePool::crd();
    let mut spec = pool_spec("public");
    spec["dataClasses"] = json!(["internal", "sensitive"]);
    let errors = cel_errors(&crd, pool(spec.clone()));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("public pool must not admit the sensitive")),
        "{errors:?}"
    );
    spec["cloud"] = json!("private");
    assert!(cel_errors(&crd, pool(spec)).is_empty());
    assert!(
        cel_errors(&crd, pool(pool_spec("public"))).is_empty(),
        "defaults are fine"
    );
}

#[test]
fn repeated_data_classes_are_rejected() {
    let mut spec = pool_spec("private");
    spec["dataClasses"] = json!(["internal", "internal"]);
    let errors = cel_errors(&ComputePool::crd(), pool(spec));
    assert!(
        errors.iter().any(|e| e.contains("must not repeat")),
        "{errors:?}"
    );
}

#[test]
fn store_endpoint_must_be_a_url() {
    let mut spec = pool_spec("private");
    spec["artifactStore"] = json!({"bucket": "models", "endpoint": "minio.local:9000"});
    let errors = cel_errors(&ComputePool::crd(), pool(spec.clone()));
    assert!(errors.iter().any(|e| e.contains("http://")), "{errors:?}");
    spec["artifactStore"]["endpoint"] = json!("http://minio.local:9000");
    assert!(cel_errors(&ComputePool::crd(), pool(spec)).is_empty());
}

fn deployment(components: Value) -> Value {
    json!({
        "apiVersion": "skybridge.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "ranker", "namespace": "shop"},
        "spec": {"model": {"source": {"uri": "s3://models/ranker", "pool": "dc1"}, "version": "1"}, "components": components}
    })
}

fn component(name: &str, min: u32, max: u32) -> Value {
    json!({"name": name, "dataClass": "internal", "image": "triton", "resources": {"cpu": "1", "memory": "1Gi"}, "replicas": {"min": min, "max": max}})
}

#[test]
fn replica_bounds_must_be_ordered() {
    let crd = ModelDeployment::crd();
    assert!(cel_errors(&crd, deployment(json!([component("a", 1, 3)]))).is_empty());
    let errors = cel_errors(&crd, deployment(json!([component("a", 4, 3)])));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("replicas.min must not exceed replicas.max")),
        "{errors:?}"
    );
}

#[test]
fn component_names_must_be_unique() {
    let errors = cel_errors(
        &ModelDeployment::crd(),
        deployment(json!([component("a", 1, 2), component("a", 1, 2)])),
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("component names must be unique")),
        "{errors:?}"
    );
}

fn policy(spec_patch: Value) -> Value {
    let mut spec = json!({"metric": {"prometheusUrl": "http://prom:9090", "query": "sum(rate(x[1m]))", "targetPerReplica": 100.0}});
    if let (Some(spec), Some(patch)) = (spec.as_object_mut(), spec_patch.as_object()) {
        for (k, v) in patch {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "skybridge.io/v1alpha1", "kind": "BurstPolicy", "metadata": {"name": "bp"}, "spec": spec})
}

#[test]
fn policy_rules() {
    let crd = BurstPolicy::crd();
    assert!(cel_errors(&crd, policy(json!({}))).is_empty());
    let floor = cel_errors(
        &crd,
        policy(json!({"metricUnavailable": {"action": "Floor"}})),
    );
    assert!(
        floor
            .iter()
            .any(|e| e.contains("floorReplicas is required")),
        "{floor:?}"
    );
    let window = cel_errors(
        &crd,
        policy(
            json!({"prewarm": [{"name": "bf", "start": "2026-11-28T00:00:00Z", "end": "2026-11-27T00:00:00Z", "minReplicas": 4}]}),
        ),
    );
    assert!(
        window
            .iter()
            .any(|e| e.contains("must end after it starts")),
        "{window:?}"
    );
    let target = cel_errors(
        &crd,
        policy(
            json!({"metric": {"prometheusUrl": "http://prom:9090", "query": "q", "targetPerReplica": 0.0}}),
        ),
    );
    assert!(
        target
            .iter()
            .any(|e| e.contains("targetPerReplica must be positive")),
        "{target:?}"
    );
    let pools = cel_errors(&crd, policy(json!({"burst": {"pools": ["a", "a"]}})));
    assert!(
        pools.iter().any(|e| e.contains("must not repeat")),
        "{pools:?}"
    );
}

#[test]
fn printer_columns_and_names() {
    let md = ModelDeployment::crd();
    assert_eq!(
        md.spec.names.short_names.as_deref(),
        Some(&["md".to_string()][..])
    );
    let columns: Vec<String> = md.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        columns,
        [
            "Ready", "Desired", "Bursting", "Traffic", "Cost/h", "Status", "Age"
        ]
    );
    assert_eq!(ComputePool::crd().spec.scope, "Cluster");
    assert_eq!(
        BurstPolicy::crd().spec.names.short_names.as_deref(),
        Some(&["bp".to_string()][..])
    );
}

#[test]
fn default_data_classes_follow_the_cloud() {
    let private: ComputePoolSpec = serde_json::from_value(pool_spec("private")).unwrap();
    let public: ComputePoolSpec = serde_json::from_value(pool_spec("public")).unwrap();
    assert!(private.admits(DataClass::Sensitive));
    assert!(!public.admits(DataClass::Sensitive));
    assert!(public.admits(DataClass::Internal));
    let mut wrong: ComputePoolSpec = serde_json::from_value(pool_spec("public")).unwrap();
    wrong.data_classes = Some(DataClass::ALL.to_vec());
    assert!(
        !wrong.admits(DataClass::Sensitive),
        "residency holds even past the schema"
    );
}

/// `SecretRef.namespace` is withdrawn (issue #18): credentials come only from the operator's
/// namespace, and the API server says so at `kubectl apply`.
#[test]
fn a_store_credentials_secret_in_another_namespace_is_rejected() {
    let crd = ComputePool::crd();
    let mut spec = pool_spec("public");
    spec["artifactStore"] = json!({"bucket": "models", "credentialsSecretRef": {"name": "s", "namespace": "kube-system"}});
    let errors = cel_errors(&crd, pool(spec.clone()));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("operator's namespace only")),
        "{errors:?}"
    );
    spec["artifactStore"]["credentialsSecretRef"] = json!({"name": "s"});
    assert!(cel_errors(&crd, pool(spec)).is_empty());
}

#[test]
fn root_needs_run_as_non_root_false() {
    let crd = ModelDeployment::crd();
    let with_security = |security: Value| {
        let mut c = component("a", 1, 2);
        c["security"] = security;
        deployment(json!([c]))
    };
    let message = "runAsUser 0 is root";
    for ok in [
        json!({}),
        json!({"runAsUser": 1000}),
        json!({"runAsNonRoot": false, "runAsUser": 0}),
        json!({"readOnlyRootFilesystem": false}),
    ] {
        let errors = cel_errors(&crd, with_security(ok.clone()));
        assert!(
            !errors.iter().any(|e| e.contains(message)),
            "{ok}: {errors:?}"
        );
    }
    let errors = cel_errors(&crd, with_security(json!({"runAsUser": 0})));
    assert!(errors.iter().any(|e| e.contains(message)), "{errors:?}");
    // Absent, the component is confined: non-root, read-only root filesystem.
    let parsed: ModelDeployment =
        serde_json::from_value(deployment(json!([component("a", 1, 2)]))).unwrap();
    assert_eq!(
        parsed.spec.components[0].security,
        ContainerSecurity::default()
    );
    assert!(parsed.spec.components[0].security.run_as_non_root);
    assert!(parsed.spec.components[0].security.read_only_root_filesystem);
}

/// Every quantity field of the CRDs carries the grammar `quantity::PATTERN` parses (the client
/// maps a mismatch to the parser's message by comparing patterns), and every price a maximum.
#[test]
fn quantities_and_prices_are_bounded_in_the_schema() {
    fn walk(path: &str, schema: &Value, quantities: &mut Vec<String>, numbers: &mut Vec<String>) {
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && pattern.contains("Ki|Mi|Gi")
        {
            assert_eq!(pattern, quantity::PATTERN, "{path}");
            assert!(schema.get("maxLength").is_some(), "{path}");
            quantities.push(path.to_string());
        }
        if schema.get("type").and_then(Value::as_str) == Some("number") && !path.contains(".status")
        {
            let bounded = schema.get("maximum").is_some();
            assert!(bounded, "{path} has no maximum");
            numbers.push(path.to_string());
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(&format!("{path}.{k}"), v, quantities, numbers);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, quantities, numbers);
        }
    }
    let mut quantities = Vec::new();
    let mut numbers = Vec::new();
    for crd in crds() {
        walk(
            &crd.spec.names.kind,
            &schema_of(&crd),
            &mut quantities,
            &mut numbers,
        );
    }
    quantities.sort();
    assert_eq!(
        quantities,
        [
            "ComputePool.spec.capacity.cpu",
            "ComputePool.spec.capacity.memory",
            "ModelDeployment.spec.components[].resources.cpu",
            "ModelDeployment.spec.components[].resources.memory",
        ]
    );
    assert!(numbers.len() >= 5, "{numbers:?}");
}

fn routed_component(traffic: Value) -> Value {
    let mut c = component("rank", 1, 4);
    c["traffic"] = traffic;
    c
}

fn traffic_errors(traffic: Value) -> Vec<String> {
    cel_errors(
        &ModelDeployment::crd(),
        deployment(json!([routed_component(traffic)])),
    )
}

#[test]
fn traffic_rules() {
    let gateway = json!([{"name": "edge", "namespace": "gateways"}]);
    assert!(
        traffic_errors(
            json!({"parentRefs": gateway, "hostnames": ["rank.shop.internal", "*.shop.example"]})
        )
        .is_empty()
    );
    let grpc_path = traffic_errors(
        json!({"parentRefs": gateway, "protocol": "GRPC", "path": {"type": "PathPrefix", "value": "/v1"}}),
    );
    assert!(
        grpc_path
            .iter()
            .any(|e| e.contains("GRPC route matches gRPC services, not paths")),
        "{grpc_path:?}"
    );
    assert!(traffic_errors(json!({"parentRefs": gateway, "protocol": "GRPC"})).is_empty());
    let repeated = traffic_errors(json!({"parentRefs": gateway, "hostnames": ["a.b", "a.b"]}));
    assert!(
        repeated
            .iter()
            .any(|e| e.contains("hostnames must not repeat")),
        "{repeated:?}"
    );
    let relative = traffic_errors(json!({"parentRefs": gateway, "path": {"value": "v1/rank"}}));
    assert!(
        relative.iter().any(|e| e.contains("must start with '/'")),
        "{relative:?}"
    );
    let port = traffic_errors(json!({"parentRefs": gateway, "port": 9000}));
    assert!(
        port.iter()
            .any(|e| e.contains("traffic.port must be the component's port")),
        "{port:?}"
    );
    assert!(traffic_errors(json!({"parentRefs": gateway, "port": 8080})).is_empty());
}

#[test]
fn traffic_defaults_and_bounds() {
    let parsed: ModelDeployment = serde_json::from_value(deployment(json!([routed_component(
        json!({"parentRefs": [{"name": "edge"}]})
    )])))
    .unwrap();
    let traffic = parsed.spec.components[0].traffic.as_ref().unwrap();
    assert_eq!(traffic.drain_seconds, DEFAULT_DRAIN_SECONDS);
    assert_eq!(traffic.protocol, TrafficProtocol::HTTP);
    assert_eq!(traffic.path, None);
    assert_eq!(PathMatch::default().value, "/");
    let plain: ComputePoolSpec = serde_json::from_value(pool_spec("public")).unwrap();
    assert!(!plain.exports_traffic(), "no MCS unless the pool says so");
    let mut exporting = pool_spec("public");
    exporting["traffic"] = json!({"export": "ServiceExport"});
    let exporting: ComputePoolSpec = serde_json::from_value(exporting).unwrap();
    assert!(exporting.exports_traffic());

    // The schema bounds what the CEL rules cannot: lists, drain seconds, host name format.
    let schema = schema_of(&ModelDeployment::crd());
    let traffic = &schema["properties"]["spec"]["properties"]["components"]["items"]["properties"]
        ["traffic"]["properties"];
    assert_eq!(
        traffic["drainSeconds"]["maximum"],
        json!(f64::from(MAX_DRAIN_SECONDS))
    );
    assert_eq!(traffic["parentRefs"]["maxItems"], json!(8));
    assert_eq!(traffic["parentRefs"]["minItems"], json!(1));
    assert_eq!(traffic["hostnames"]["maxItems"], json!(16));
    let pattern = traffic["hostnames"]["items"]["pattern"].as_str().unwrap();
    let hostname = jsonschema::validator_for(&json!({"type": "string", "pattern": pattern}))
        .expect("the pattern compiles");
    for good in [
        "rank.shop.internal",
        "*.shop.example",
        "localhost",
        "a-b.c1",
    ] {
        assert!(hostname.is_valid(&json!(good)), "{good}");
    }
    for bad in [
        "Rank.shop",
        "-a.b",
        "a..b",
        "*",
        "a.*.b",
        "a_b.c",
        "a.b.",
        "http://a.b",
    ] {
        assert!(!hostname.is_valid(&json!(bad)), "{bad}");
    }
}
