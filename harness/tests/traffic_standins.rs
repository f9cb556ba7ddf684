//! The Gateway API and Multi-Cluster Services CRDs, the Gateway stand-in (routes'
//! `status.parents`) and the MCS stand-in (exports mirrored into the other clusters' imports).

mod common;

use common::*;
use kube_harness::{
    Cluster, ClusterConfig, ClusterSet, GATEWAY_CONTROLLER_NAME, MCS_MIRROR_ANNOTATION,
};
use serde_json::{Value, json};

const GW: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/default";

fn route(name: &str, gateway: &str, backends: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": gateway}],
            "hostnames": ["ranker.example.internal"],
            "rules": [{"backendRefs": backends}],
        }
    })
}

fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name},
                 "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]}
    })
}

fn export(name: &str, version: &str) -> Value {
    json!({"apiVersion": format!("multicluster.x-k8s.io/{version}"), "kind": "ServiceExport",
           "metadata": {"name": name}})
}

fn condition<'a>(parent: &'a Value, kind: &str) -> &'a Value {
    parent["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

async fn get(base: &str, path: &str) -> Answer {
    http("GET", &format!("{base}{path}"), None, "").await
}

#[tokio::test]
async fn gateway_api_crds_are_served_with_upstream_defaults_and_bounds() {
    let plain = start("plain").await;
    assert_eq!(
        get(plain.url(), "/apis/gateway.networking.k8s.io/v1")
            .await
            .code,
        404,
        "off by default"
    );
    let c = Cluster::start(ClusterConfig::new("home").gateway_api(true))
        .await
        .unwrap();
    let discovery = get(c.url(), "/apis/gateway.networking.k8s.io/v1").await;
    let plurals: Vec<&str> = discovery.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .filter(|n| !n.contains('/'))
        .collect();
    assert_eq!(plurals, ["gateways", "grpcroutes", "httproutes"]);

    let stored = post(
        c.url(),
        &format!("{GW}/httproutes"),
        route("r", "gw", json!([{"name": "ranker", "port": 8080}])),
    )
    .await;
    let backend = &stored["spec"]["rules"][0]["backendRefs"][0];
    assert_eq!(backend["weight"], 1, "upstream default weight");
    assert_eq!(backend["kind"], "Service");
    assert_eq!(backend["group"], "");
    assert_eq!(stored["spec"]["parentRefs"][0]["kind"], "Gateway");
    assert_eq!(
        stored["spec"]["rules"][0]["matches"][0]["path"],
        json!({"type": "PathPrefix", "value": "/"})
    );

    let too_heavy = http(
        "POST",
        &format!("{}{GW}/httproutes", c.url()),
        Some("application/json"),
        &route(
            "heavy",
            "gw",
            json!([{"name": "ranker", "port": 8080, "weight": 1_000_001}]),
        )
        .to_string(),
    )
    .await;
    assert_eq!(too_heavy.code, 422, "{}", too_heavy.body);
}

#[tokio::test]
async fn mcs_discovery_offers_only_the_configured_versions() {
    let alpha = Cluster::start(ClusterConfig::new("a").mcs_api(&["v1alpha1"]))
        .await
        .unwrap();
    let beta = Cluster::start(ClusterConfig::new("b").mcs_api(&["v1beta1"]))
        .await
        .unwrap();
    let both = Cluster::start(ClusterConfig::new("c").mcs_api(&["v1alpha1", "v1beta1"]))
        .await
        .unwrap();
    let versions = |body: &Value| -> Vec<String> {
        body["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap().to_string())
            .collect()
    };
    let group = "/apis/multicluster.x-k8s.io";
    assert_eq!(versions(&get(alpha.url(), group).await.body), ["v1alpha1"]);
    assert_eq!(versions(&get(beta.url(), group).await.body), ["v1beta1"]);
    assert_eq!(
        versions(&get(both.url(), group).await.body),
        ["v1alpha1", "v1beta1"]
    );
    assert_eq!(
        get(alpha.url(), &format!("{group}/v1beta1")).await.code,
        404
    );
    // One schema, shared storage: an export written as v1alpha1 reads back as v1beta1.
    post(
        both.url(),
        &format!("{group}/v1alpha1/namespaces/default/serviceexports"),
        export("ranker", "v1alpha1"),
    )
    .await;
    let read = get(
        both.url(),
        &format!("{group}/v1beta1/namespaces/default/serviceexports/ranker"),
    )
    .await;
    assert_eq!(read.code, 200);
    assert_eq!(read.body["apiVersion"], "multicluster.x-k8s.io/v1beta1");

    let unknown = Cluster::start(ClusterConfig::new("d").mcs_api(&["v1"])).await;
    assert!(unknown.is_err(), "an unknown MCS version is a config error");
}

#[tokio::test]
async fn gateway_stand_in_reports_accepted_and_resolved_refs() {
    let c = Cluster::start(
        ClusterConfig::new("home")
            .gateway_api(true)
            .mcs_api(&["v1alpha1"]),
    )
    .await
    .unwrap();
    let backends = json!([
        {"name": "ranker", "port": 8080, "weight": 3},
        {"group": "multicluster.x-k8s.io", "kind": "ServiceImport", "name": "ranker-burst",
         "port": 8080, "weight": 1},
    ]);
    post(
        c.url(),
        &format!("{GW}/httproutes"),
        route("ranker", "edge", backends),
    )
    .await;
    let path = format!("{GW}/httproutes/ranker");
    let parent = eventually("a parent status", 10, || async {
        let r = get(c.url(), &path).await.body;
        r["status"]["parents"].get(0).cloned()
    })
    .await;
    assert_eq!(parent["controllerName"], GATEWAY_CONTROLLER_NAME);
    assert_eq!(parent["parentRef"]["name"], "edge");
    assert_eq!(condition(&parent, "Accepted")["status"], "False");
    assert_eq!(condition(&parent, "Accepted")["reason"], "NoMatchingParent");
    assert_eq!(condition(&parent, "ResolvedRefs")["status"], "False");
    assert_eq!(
        condition(&parent, "ResolvedRefs")["reason"],
        "BackendNotFound"
    );
    let message = condition(&parent, "ResolvedRefs")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("default/ranker:") && message.contains("ranker-burst"),
        "{message}"
    );

    post(
        c.url(),
        &format!("{GW}/gateways"),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "edge"},
               "spec": {"gatewayClassName": "test",
                        "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}),
    )
    .await;
    post(
        c.url(),
        "/api/v1/namespaces/default/services",
        service("ranker"),
    )
    .await;
    let parent = eventually("accepted, one backend still missing", 10, || async {
        let r = get(c.url(), &path).await.body;
        let p = r["status"]["parents"][0].clone();
        (condition(&p, "Accepted")["status"] == "True").then_some(p)
    })
    .await;
    assert_eq!(condition(&parent, "ResolvedRefs")["status"], "False");
    let message = condition(&parent, "ResolvedRefs")["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("ranker-burst") && !message.contains("default/ranker:"),
        "{message}"
    );

    post(
        c.url(),
        "/apis/multicluster.x-k8s.io/v1alpha1/namespaces/default/serviceimports",
        json!({"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
               "metadata": {"name": "ranker-burst"},
               "spec": {"type": "ClusterSetIP", "ports": [{"port": 8080}]}}),
    )
    .await;
    let parent = eventually("every backend resolved", 10, || async {
        let r = get(c.url(), &path).await.body;
        let p = r["status"]["parents"][0].clone();
        (condition(&p, "ResolvedRefs")["status"] == "True").then_some(p)
    })
    .await;
    assert_eq!(condition(&parent, "Accepted")["status"], "True");
    assert_eq!(condition(&parent, "ResolvedRefs")["reason"], "ResolvedRefs");

    // A kind no Gateway resolves.
    post(
        c.url(),
        &format!("{GW}/grpcroutes"),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
               "metadata": {"name": "odd"},
               "spec": {"parentRefs": [{"name": "edge"}],
                        "rules": [{"backendRefs": [{"kind": "ConfigMap", "name": "x", "port": 1}]}]}}),
    )
    .await;
    let parent = eventually("the gRPC route's status", 10, || async {
        let r = get(c.url(), &format!("{GW}/grpcroutes/odd")).await.body;
        r["status"]["parents"].get(0).cloned()
    })
    .await;
    assert_eq!(condition(&parent, "Accepted")["status"], "True");
    assert_eq!(condition(&parent, "ResolvedRefs")["reason"], "InvalidKind");
}

#[tokio::test]
async fn mcs_stand_in_mirrors_exports_into_the_other_clusters() {
    let home = Cluster::start(ClusterConfig::new("home").mcs_api(&["v1beta1"]))
        .await
        .unwrap();
    let burst = Cluster::start(ClusterConfig::new("burst").mcs_api(&["v1alpha1"]))
        .await
        .unwrap();
    let spare = Cluster::start(ClusterConfig::new("spare").mcs_api(&["v1alpha1", "v1beta1"]))
        .await
        .unwrap();
    assert!(ClusterSet::link(&[&home, &home]).is_err(), "distinct names");
    let _set = ClusterSet::link(&[&home, &burst, &spare]).unwrap();
    let imports = |c: &kube_harness::ClusterHandle, version: &str| {
        format!(
            "{}/apis/multicluster.x-k8s.io/{version}/namespaces/default/serviceimports",
            c.url()
        )
    };
    let exports = |c: &kube_harness::ClusterHandle, version: &str| {
        format!(
            "{}/apis/multicluster.x-k8s.io/{version}/namespaces/default/serviceexports",
            c.url()
        )
    };

    // An export without its Service: not valid, nothing imported.
    let a = http(
        "POST",
        &exports(&burst, "v1alpha1"),
        Some("application/json"),
        &export("ranker-burst", "v1alpha1").to_string(),
    )
    .await;
    assert_eq!(a.code, 201);
    let valid = eventually("the export's Valid condition", 10, || async {
        let e = http(
            "GET",
            &format!("{}/ranker-burst", exports(&burst, "v1alpha1")),
            None,
            "",
        )
        .await
        .body;
        e["status"]["conditions"].get(0).cloned()
    })
    .await;
    assert_eq!(valid["type"], "Valid");
    assert_eq!(valid["status"], "False");
    assert_eq!(valid["reason"], "NoService");
    let none = http(
        "GET",
        &format!("{}/ranker-burst", imports(&home, "v1beta1")),
        None,
        "",
    )
    .await;
    assert_eq!(none.code, 404);

    // With its Service: imported into the two other clusters, not into its own.
    post(
        burst.url(),
        "/api/v1/namespaces/default/services",
        service("ranker-burst"),
    )
    .await;
    for (cluster, version) in [(&home, "v1beta1"), (&spare, "v1alpha1")] {
        let import = eventually("the mirrored import", 10, || async {
            let a = http(
                "GET",
                &format!("{}/ranker-burst", imports(cluster, version)),
                None,
                "",
            )
            .await;
            (a.code == 200 && a.body["status"]["clusters"].is_array()).then_some(a.body)
        })
        .await;
        assert_eq!(
            import["apiVersion"],
            format!("multicluster.x-k8s.io/{version}")
        );
        assert_eq!(import["spec"]["type"], "ClusterSetIP");
        assert_eq!(
            import["spec"]["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}])
        );
        assert_eq!(import["spec"]["ips"].as_array().unwrap().len(), 1);
        assert_eq!(import["status"]["clusters"], json!([{"cluster": "burst"}]));
        assert_eq!(
            import["metadata"]["annotations"][MCS_MIRROR_ANNOTATION],
            "true"
        );
    }
    let own = http(
        "GET",
        &format!("{}/ranker-burst", imports(&burst, "v1alpha1")),
        None,
        "",
    )
    .await;
    assert_eq!(own.code, 404, "a cluster does not import its own export");
    let valid = http(
        "GET",
        &format!("{}/ranker-burst", exports(&burst, "v1alpha1")),
        None,
        "",
    )
    .await
    .body["status"]["conditions"][0]
        .clone();
    assert_eq!(valid["status"], "True");

    // The same name exported by a second cluster merges into one import.
    post(
        spare.url(),
        "/api/v1/namespaces/default/services",
        service("ranker-burst"),
    )
    .await;
    let a = http(
        "POST",
        &exports(&spare, "v1beta1"),
        Some("application/json"),
        &export("ranker-burst", "v1beta1").to_string(),
    )
    .await;
    assert_eq!(a.code, 201);
    eventually("both exporters listed in home's import", 10, || async {
        let i = http(
            "GET",
            &format!("{}/ranker-burst", imports(&home, "v1beta1")),
            None,
            "",
        )
        .await
        .body;
        (i["status"]["clusters"] == json!([{"cluster": "burst"}, {"cluster": "spare"}]))
            .then_some(())
    })
    .await;
    eventually("burst imports spare's export", 10, || async {
        let i = http(
            "GET",
            &format!("{}/ranker-burst", imports(&burst, "v1alpha1")),
            None,
            "",
        )
        .await
        .body;
        (i["status"]["clusters"] == json!([{"cluster": "spare"}])).then_some(())
    })
    .await;

    // Someone else's import is never touched.
    let foreign = http(
        "POST",
        &imports(&home, "v1beta1"),
        Some("application/json"),
        &json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceImport",
                "metadata": {"name": "hand-made"},
                "spec": {"type": "ClusterSetIP", "ports": [{"port": 1}]}})
        .to_string(),
    )
    .await;
    assert_eq!(foreign.code, 201);

    // Exports going: the imports go, from every cluster.
    for (cluster, version) in [(&burst, "v1alpha1"), (&spare, "v1beta1")] {
        let d = http(
            "DELETE",
            &format!("{}/ranker-burst", exports(cluster, version)),
            None,
            "",
        )
        .await;
        assert_eq!(d.code, 200);
    }
    for (cluster, version) in [
        (&home, "v1beta1"),
        (&spare, "v1alpha1"),
        (&burst, "v1alpha1"),
    ] {
        eventually("the import removed", 10, || async {
            let a = http(
                "GET",
                &format!("{}/ranker-burst", imports(cluster, version)),
                None,
                "",
            )
            .await;
            (a.code == 404).then_some(())
        })
        .await;
    }
    let kept = http(
        "GET",
        &format!("{}/hand-made", imports(&home, "v1beta1")),
        None,
        "",
    )
    .await;
    assert_eq!(kept.code, 200);
}
