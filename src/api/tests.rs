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
    // Windows are named in Events and status: two of one name could not be told apart.
    let bf = json!({"name": "bf", "start": "2026-11-27T00:00:00Z", "end": "2026-11-28T00:00:00Z", "minReplicas": 4});
    let mut later = bf.clone();
    later["start"] = json!("2027-11-26T00:00:00Z");
    later["end"] = json!("2027-11-27T00:00:00Z");
    let repeated = cel_errors(
        &crd,
        policy(json!({"prewarm": [bf.clone(), later.clone()]})),
    );
    assert!(
        repeated
            .iter()
            .any(|e| e.contains("prewarm window names must be unique")),
        "{repeated:?}"
    );
    later["name"] = json!("bf-2027");
    let distinct = cel_errors(&crd, policy(json!({"prewarm": [bf, later]})));
    assert!(distinct.is_empty(), "{distinct:?}");
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

#[test]
fn only_a_public_pool_can_be_spot() {
    let crd = ComputePool::crd();
    let mut spec = pool_spec("private");
    spec["capacityType"] = json!("Spot");
    let errors = cel_errors(&crd, pool(spec.clone()));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("only a public pool can be Spot")),
        "{errors:?}"
    );
    spec["cloud"] = json!("public");
    assert!(cel_errors(&crd, pool(spec.clone())).is_empty());
    spec["cloud"] = json!("private");
    spec["capacityType"] = json!("OnDemand");
    assert!(cel_errors(&crd, pool(spec)).is_empty());
}

#[test]
fn capacity_type_elasticity_and_stockout_default_sensibly() {
    let plain: ComputePoolSpec = serde_json::from_value(pool_spec("public")).unwrap();
    assert_eq!(plain.capacity_type, CapacityType::OnDemand);
    assert_eq!(plain.elastic, None);
    assert_eq!(plain.stockout, None);
    let written = serde_json::to_value(&plain).unwrap();
    for absent in ["capacityType", "elastic", "stockout"] {
        assert!(
            written.get(absent).is_none(),
            "{absent} is omitted when unset"
        );
    }
    let mut spec = pool_spec("public");
    spec["capacityType"] = json!("Spot");
    spec["elastic"] = json!({"autoscaler": "Karpenter", "maxNodes": 4});
    spec["stockout"] = json!({"backoffSeconds": 60});
    let elastic: ComputePoolSpec = serde_json::from_value(spec).unwrap();
    assert_eq!(elastic.capacity_type, CapacityType::Spot);
    let nodes = elastic.elastic.unwrap();
    assert_eq!(nodes.autoscaler, AutoscalerKind::Karpenter);
    assert_eq!(nodes.node_startup_seconds, 420);
    assert_eq!(nodes.max_nodes, Some(4));
    let stockout = elastic.stockout.unwrap();
    assert_eq!(stockout.backoff_seconds, 60);
    assert_eq!(
        stockout.unschedulable_seconds,
        StockoutHandling::default().unschedulable_seconds
    );
    let unknown: Result<ComputePoolSpec, _> = serde_json::from_value({
        let mut spec = pool_spec("public");
        spec["elastic"] = json!({"autoscaler": "Nomad"});
        spec
    });
    assert!(unknown.is_err(), "an unknown autoscaler is refused");
}

/// Every new duration and share has bounds in the schema, so that `kubectl apply` refuses a
/// typo (a back-off of years, a floor of 300 %).
#[test]
fn capacity_settings_are_bounded_in_the_schema() {
    let pool = schema_of(&ComputePool::crd());
    let spec = &pool["properties"]["spec"]["properties"];
    let bounds = |field: &Value| (field["minimum"].as_f64(), field["maximum"].as_f64());
    let elastic = &spec["elastic"]["properties"];
    assert_eq!(
        bounds(&elastic["nodeStartupSeconds"]),
        (Some(0.0), Some(7200.0))
    );
    assert_eq!(bounds(&elastic["maxNodes"]), (Some(0.0), Some(100000.0)));
    // A node of no GPUs is a typo, not a node size.
    assert_eq!(bounds(&elastic["gpusPerNode"]), (Some(1.0), Some(64.0)));
    assert_eq!(
        elastic["autoscaler"]["enum"],
        json!(["Karpenter", "ClusterAutoscaler"])
    );
    let stockout = &spec["stockout"]["properties"];
    assert_eq!(
        bounds(&stockout["unschedulableSeconds"]),
        (Some(10.0), Some(86400.0))
    );
    for field in ["backoffSeconds", "recoverySeconds"] {
        assert_eq!(
            bounds(&stockout[field]),
            (Some(0.0), Some(86400.0)),
            "{field}"
        );
    }
    assert_eq!(spec["capacityType"]["enum"], json!(["OnDemand", "Spot"]));
    let policy = schema_of(&BurstPolicy::crd());
    let floor =
        &policy["properties"]["spec"]["properties"]["burst"]["properties"]["onDemandFloorPercent"];
    assert_eq!(bounds(floor), (Some(0.0), Some(100.0)));
    let status = &pool["properties"]["status"]["properties"];
    for field in ["addableCapacity", "shortage", "reclaimingNodes"] {
        assert!(status.get(field).is_some(), "status.{field} in the schema");
    }
}

fn with_rollout(rollout: Value) -> Value {
    let mut md = deployment(json!([component("a", 1, 3)]));
    md["spec"]["rollout"] = rollout;
    md
}

fn rollout_errors(rollout: Value) -> Vec<String> {
    cel_errors(&ModelDeployment::crd(), with_rollout(rollout))
}

fn canary(steps: Value) -> Value {
    json!({"strategy": "Canary", "steps": steps})
}

#[test]
fn a_canary_with_increasing_steps_is_accepted() {
    let errors = rollout_errors(json!({
        "strategy": "Canary",
        "maxSurge": "25%",
        "steps": [{"setWeight": 10, "pause": {"seconds": 300}}, {"setWeight": 50, "pause": {}}, {"setWeight": 100}],
        "analysis": {"prometheusUrl": "http://prom:9090", "metrics": [
            {"name": "error-rate", "query": "sum(rate(errors{version=\"$version\"}[1m]))", "comparison": "LessThan", "threshold": 0.01}
        ]}
    }));
    assert!(errors.is_empty(), "{errors:?}");
    assert!(rollout_errors(json!({"strategy": "AllAtOnce"})).is_empty());
    assert!(
        rollout_errors(json!({"strategy": "Canary", "maxSurge": 2, "steps": [{"setWeight": 5}]}))
            .is_empty()
    );
}

#[test]
fn canary_steps_must_strictly_increase() {
    for steps in [
        json!([{"setWeight": 50}, {"setWeight": 20}]),
        json!([{"setWeight": 20}, {"setWeight": 20}]),
        json!([{"setWeight": 10}, {"setWeight": 30}, {"setWeight": 40}, {"setWeight": 35}]),
    ] {
        let errors = rollout_errors(canary(steps.clone()));
        assert!(
            errors.iter().any(|e| e.contains("must strictly increase")),
            "{steps}: {errors:?}"
        );
    }
    let twenty: Vec<Value> = (1..=20).map(|i| json!({"setWeight": i * 5})).collect();
    assert!(rollout_errors(canary(json!(twenty))).is_empty());
    let mut last_breaks: Vec<Value> = (1..=20).map(|i| json!({"setWeight": i * 4})).collect();
    last_breaks[19] = json!({"setWeight": 4});
    assert!(
        rollout_errors(canary(json!(last_breaks)))
            .iter()
            .any(|e| e.contains("must strictly increase")),
        "the last pair of the longest list is checked too"
    );
}

#[test]
fn rollout_rules_name_the_field_at_fault() {
    // Absent, or present and empty (as `steps: []` in a manifest): has() is true for an empty
    // list, so the rule must count.
    for rollout in [
        json!({"strategy": "Canary"}),
        json!({"strategy": "Canary", "steps": []}),
    ] {
        let no_steps = rollout_errors(rollout);
        assert!(
            no_steps
                .iter()
                .any(|e| e.contains("needs at least one step")),
            "{no_steps:?}"
        );
    }
    // An empty list under AllAtOnce says nothing: accepted.
    let empty = rollout_errors(json!({"strategy": "AllAtOnce", "steps": []}));
    assert!(empty.is_empty(), "{empty:?}");
    let all_at_once_with_steps =
        rollout_errors(json!({"strategy": "AllAtOnce", "steps": [{"setWeight": 10}]}));
    assert!(
        all_at_once_with_steps
            .iter()
            .any(|e| e.contains("apply to the Canary strategy only")),
        "{all_at_once_with_steps:?}"
    );
    for surge in [
        json!("a lot"),
        json!("0"),
        json!(0),
        json!(-1),
        json!("1000%"),
    ] {
        let errors = rollout_errors(
            json!({"strategy": "Canary", "maxSurge": surge, "steps": [{"setWeight": 10}]}),
        );
        assert!(
            errors.iter().any(|e| e.contains("maxSurge must be")),
            "{surge}: {errors:?}"
        );
    }
    let blank_query = rollout_errors(json!({"strategy": "Canary", "steps": [{"setWeight": 10}],
        "analysis": {"prometheusUrl": "http://prom:9090", "metrics": [{"name": "e", "query": "  ", "comparison": "LessThan", "threshold": 1.0}]}}));
    assert!(
        blank_query.iter().any(|e| e.contains("must not be empty")),
        "{blank_query:?}"
    );
    let bad_url = rollout_errors(json!({"strategy": "Canary", "steps": [{"setWeight": 10}],
        "analysis": {"prometheusUrl": "prom:9090", "metrics": [{"name": "e", "query": "q", "comparison": "LessThan", "threshold": 1.0}]}}));
    assert!(
        bad_url.iter().any(|e| e.contains("http:// or https://")),
        "{bad_url:?}"
    );
    let repeated = rollout_errors(json!({"strategy": "Canary", "steps": [{"setWeight": 10}],
        "analysis": {"prometheusUrl": "http://p", "metrics": [
            {"name": "e", "query": "q", "comparison": "LessThan", "threshold": 1.0},
            {"name": "e", "query": "r", "comparison": "GreaterThan", "threshold": 0.0}]}}));
    assert!(
        repeated.iter().any(|e| e.contains("must be unique")),
        "{repeated:?}"
    );
}

#[test]
fn setweight_bounds_and_step_count_are_in_the_schema() {
    let crd = ModelDeployment::crd();
    let schema = schema_of(&crd);
    let rollout = &schema["properties"]["spec"]["properties"]["rollout"];
    let steps = &rollout["properties"]["steps"];
    assert_eq!(steps["maxItems"], json!(20));
    let weight = &steps["items"]["properties"]["setWeight"];
    assert_eq!(weight["minimum"], json!(1.0));
    assert_eq!(weight["maximum"], json!(100.0));
    assert_eq!(MAX_STEPS, 20);
}

#[test]
fn effective_steps_end_at_full_traffic_and_surge_rounds_up() {
    let spec: RolloutSpec =
        serde_json::from_value(canary(json!([{"setWeight": 10}, {"setWeight": 50}]))).unwrap();
    let weights: Vec<u32> = spec
        .effective_steps()
        .iter()
        .map(|s| s.set_weight)
        .collect();
    assert_eq!(weights, [10, 50, 100]);
    let full: RolloutSpec = serde_json::from_value(canary(json!([{"setWeight": 100}]))).unwrap();
    assert_eq!(full.effective_steps().len(), 1);
    assert_eq!(spec.max_surge_for(4), 1, "25% of 4");
    assert_eq!(spec.max_surge_for(5), 2, "25% of 5, rounded up");
    assert_eq!(spec.max_surge_for(0), 1, "at least one");
    let counted: RolloutSpec = serde_json::from_value(
        json!({"strategy": "Canary", "steps": [{"setWeight": 1}], "maxSurge": 3}),
    )
    .unwrap();
    assert_eq!(counted.max_surge_for(100), 3);
    let percent: RolloutSpec = serde_json::from_value(
        json!({"strategy": "Canary", "steps": [{"setWeight": 1}], "maxSurge": "50%"}),
    )
    .unwrap();
    assert_eq!(percent.max_surge_for(7), 4);
    let quoted: RolloutSpec = serde_json::from_value(
        json!({"strategy": "Canary", "steps": [{"setWeight": 1}], "maxSurge": "2"}),
    )
    .unwrap();
    assert_eq!(quoted.max_surge_for(100), 2, "a quoted count is a count");
    assert!(Comparison::LessThan.passes(0.5, 1.0));
    assert!(!Comparison::LessThan.passes(1.0, 1.0));
    assert!(Comparison::GreaterThanOrEqual.passes(1.0, 1.0));
    assert!(!Comparison::GreaterThan.passes(0.9, 1.0));
}

#[test]
fn the_example_ranker_rolls_out_by_canary_and_passes_the_rules() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/ecommerce/recommendation.yaml"),
    )
    .unwrap();
    let ranker = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .find(|doc| doc["metadata"]["name"] == "ctr-ranker")
        .expect("the example has the ranker");
    let errors = cel_errors(&ModelDeployment::crd(), ranker.clone());
    assert!(errors.is_empty(), "{errors:?}");
    let parsed: ModelDeployment = serde_json::from_value(ranker).unwrap();
    let rollout = parsed.spec.rollout.expect("the ranker has a rollout");
    assert_eq!(rollout.strategy, RolloutStrategy::Canary);
    assert_eq!(rollout.steps.len(), 3);
    assert!(rollout.analysis.is_some());
}
