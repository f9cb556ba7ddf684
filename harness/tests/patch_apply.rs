//! Patch types and server-side apply, checked against the API's documented behaviour.

mod common;

use common::*;
use serde_json::{Value, json};

const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const SMP: &str = "application/strategic-merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap().to_string(),
                        e["operation"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    let c = start("patch").await;
    let base = c.url();
    post(
        base,
        "/apis/apps/v1/namespaces/default/deployments",
        deployment("web", 1, 0),
    )
    .await;
    let url = format!("{base}/apis/apps/v1/namespaces/default/deployments/web");

    // Merge patch: maps merge, null deletes, lists are replaced.
    let a = http(
        "PATCH",
        &url,
        Some(MERGE),
        r#"{"metadata":{"labels":{"a":"1","b":"2"}}}"#,
    )
    .await;
    assert_eq!(a.body["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    let a = http(
        "PATCH",
        &url,
        Some(MERGE),
        r#"{"metadata":{"labels":{"a":null}}}"#,
    )
    .await;
    assert_eq!(a.body["metadata"]["labels"], json!({"b": "2"}));

    // Strategic merge: containers merge by name.
    let a = http(
        "PATCH",
        &url,
        Some(SMP),
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"envoy:1"}]}}}}"#,
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    let containers = a.body["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["image"], "triton:1");
    let a = http("PATCH", &url, Some(SMP), r#"{"spec":{"template":{"spec":{"containers":[{"name":"server","image":"triton:2"},{"name":"sidecar","$patch":"delete"}]}}}}"#).await;
    let containers = a.body["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["image"], "triton:2");
    assert_eq!(
        containers[0]["resources"]["requests"]["cpu"], "1",
        "untouched fields kept"
    );
    // ... whereas a merge patch replaces the list.
    let a = http(
        "PATCH",
        &url,
        Some(MERGE),
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"only","image":"x"}]}}}}"#,
    )
    .await;
    let containers = a.body["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(containers.len(), 1);
    assert_eq!(
        (
            containers[0]["name"].as_str(),
            containers[0]["image"].as_str()
        ),
        (Some("only"), Some("x"))
    );
    // Defaulted like the API server does (untagged image: imagePullPolicy Always).
    assert_eq!(containers[0]["imagePullPolicy"], "Always");
    assert_eq!(
        a.body["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        "25%"
    );
    assert_eq!(
        a.body["spec"]["template"]["spec"]["restartPolicy"],
        "Always"
    );

    // JSON patch, including a passing test op; a failing test op is 422 and changes nothing.
    let a = http("PATCH", &url, Some(JSON_PATCH), r#"[{"op":"test","path":"/spec/replicas","value":1},{"op":"replace","path":"/spec/replicas","value":4}]"#).await;
    assert_eq!(a.body["spec"]["replicas"], 4);
    let a = http("PATCH", &url, Some(JSON_PATCH), r#"[{"op":"test","path":"/spec/replicas","value":1},{"op":"replace","path":"/spec/replicas","value":9}]"#).await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(a.body["kind"], "Status");
    assert_eq!(
        http("GET", &url, None, "").await.body["spec"]["replicas"],
        4
    );
    let a = http("PATCH", &url, Some(JSON_PATCH), r#"{"not":"a list"}"#).await;
    assert_eq!(a.code, 400);
    // A patch carrying a stale resourceVersion is a 409 Conflict.
    let a = http(
        "PATCH",
        &url,
        Some(MERGE),
        r#"{"metadata":{"resourceVersion":"1"},"spec":{"replicas":2}}"#,
    )
    .await;
    assert_eq!(a.code, 409);
    // Missing object: 404; unknown content type: 415.
    let a = http("PATCH", &format!("{url}x"), Some(MERGE), "{}").await;
    assert_eq!(a.code, 404);
    let a = http("PATCH", &url, Some("text/plain"), "{}").await;
    assert_eq!(a.code, 415);
}

#[tokio::test]
async fn server_side_apply_ownership_conflicts_and_force() {
    let c = start("ssa").await;
    let base = c.url();
    let url = format!("{base}/api/v1/namespaces/default/configmaps/cfg");
    let cfg_a = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  labels:\n    team: a\ndata:\n  shared: one\n  onlyA: x\n";

    // Apply creates the object (201) and records the manager with operation Apply.
    let a = http(
        "PATCH",
        &format!("{url}?fieldManager=alice"),
        Some(APPLY),
        cfg_a,
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(managers(&a.body), vec![("alice".into(), "Apply".into())]);
    let fields = &a.body["metadata"]["managedFields"][0];
    assert_eq!(fields["fieldsType"], "FieldsV1");
    assert_eq!(fields["apiVersion"], "v1");
    assert_eq!(
        fields["fieldsV1"],
        json!({"f:data": {"f:onlyA": {}, "f:shared": {}}, "f:metadata": {"f:labels": {"f:team": {}}}})
    );

    // fieldManager is required for apply.
    let a = http("PATCH", &url, Some(APPLY), cfg_a).await;
    assert_eq!(a.code, 422, "{}", a.body);

    // Another manager setting a field alice owns to a different value: 409 naming the field
    // and the manager; same value: shared ownership, no conflict.
    let a = http(
        "PATCH",
        &format!("{url}?fieldManager=bob"),
        Some(APPLY),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  shared: two\n",
    )
    .await;
    assert_eq!(a.code, 409);
    assert_eq!(a.body["reason"], "Conflict");
    let msg = a.body["message"].as_str().unwrap();
    assert_eq!(
        msg,
        "Apply failed with 1 conflict: conflict with \"alice\" using v1: .data.shared"
    );
    assert_eq!(a.body["details"]["causes"][0]["field"], ".data.shared");
    assert_eq!(
        a.body["details"]["causes"][0]["reason"],
        "FieldManagerConflict"
    );
    let a = http("PATCH", &format!("{url}?fieldManager=bob"), Some(APPLY), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  shared: one\n  onlyB: y\n").await;
    assert_eq!(a.code, 200, "{}", a.body);

    // Force takes ownership.
    let a = http("PATCH", &format!("{url}?fieldManager=bob&force=true"), Some(APPLY), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  shared: three\n  onlyB: y\n").await;
    assert_eq!(a.code, 200);
    assert_eq!(a.body["data"]["shared"], "three");
    let alice = a.body["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "alice")
        .unwrap()
        .clone();
    assert!(
        alice["fieldsV1"]["f:data"].get("f:shared").is_none(),
        "alice lost .data.shared"
    );

    // Alice drops onlyA and the label from her config: they are removed (nobody else owns them).
    // Bob drops onlyB: removed too. Shared is bob's now and stays.
    let a = http(
        "PATCH",
        &format!("{url}?fieldManager=alice"),
        Some(APPLY),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata: {}\n",
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert!(a.body["data"].get("onlyA").is_none());
    assert!(
        a.body["metadata"]
            .get("labels")
            .is_none_or(|l| l.get("team").is_none())
    );
    let a = http(
        "PATCH",
        &format!("{url}?fieldManager=bob"),
        Some(APPLY),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  shared: three\n",
    )
    .await;
    assert!(a.body["data"].get("onlyB").is_none());
    assert_eq!(a.body["data"]["shared"], "three");

    // A non-apply update takes ownership of what it changes (operation Update), so a later apply
    // of a different value conflicts with that manager.
    let a = http(
        "PATCH",
        &format!("{url}?fieldManager=editor"),
        Some(MERGE),
        r#"{"data":{"shared":"edited"}}"#,
    )
    .await;
    assert!(managers(&a.body).contains(&("editor".into(), "Update".into())));
    let a = http(
        "PATCH",
        &format!("{url}?fieldManager=bob"),
        Some(APPLY),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  shared: three\n",
    )
    .await;
    assert_eq!(a.code, 409);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("conflict with \"editor\"")
    );
}

#[tokio::test]
async fn apply_keyed_lists_and_status_subresource() {
    let c = start("ssa2").await;
    let base = c.url();
    let url = format!("{base}/apis/apps/v1/namespaces/default/deployments/web");
    let yaml = |image: &str, replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: server\n        image: {image}\n"
        )
    };
    let a = http(
        "PATCH",
        &format!("{url}?fieldManager=op"),
        Some(APPLY),
        &yaml("a:1", 2),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);
    let f = &a.body["metadata"]["managedFields"][0]["fieldsV1"];
    let item = &f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"server\"}"];
    assert_eq!(item, &json!({".": {}, "f:image": {}, "f:name": {}}));
    // Another manager adds a container: merged by name, both kept.
    let side = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n      - name: sidecar\n        image: envoy\n";
    let a = http(
        "PATCH",
        &format!("{url}?fieldManager=mesh"),
        Some(APPLY),
        side,
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(
        a.body["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Generation follows spec changes made through apply.
    let g = a.body["metadata"]["generation"].as_i64().unwrap();
    let a = http(
        "PATCH",
        &format!("{url}?fieldManager=op"),
        Some(APPLY),
        &yaml("a:2", 2),
    )
    .await;
    assert_eq!(a.body["metadata"]["generation"].as_i64().unwrap(), g + 1);
    let a = http(
        "PATCH",
        &format!("{url}?fieldManager=op"),
        Some(APPLY),
        &yaml("a:2", 2),
    )
    .await;
    assert_eq!(
        a.body["metadata"]["generation"].as_i64().unwrap(),
        g + 1,
        "no-op apply"
    );

    // Status apply through /status records a status-subresource manager and ignores spec.
    let st = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 9\nstatus:\n  replicas: 2\n";
    let a = http(
        "PATCH",
        &format!("{url}/status?fieldManager=ctrl"),
        Some(APPLY),
        st,
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["status"]["replicas"], 2);
    assert_eq!(a.body["spec"]["replicas"], 2);
    let entry = a.body["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "ctrl")
        .unwrap()
        .clone();
    assert_eq!(entry["subresource"], "status");
    // And status in a main-resource apply is ignored.
    let a = http(
        "PATCH",
        &format!("{url}?fieldManager=op"),
        Some(APPLY),
        &format!("{}status:\n  replicas: 7\n", yaml("a:2", 2)),
    )
    .await;
    assert_eq!(a.body["status"]["replicas"], 2);
    // Defaulted fields belong to nobody: another manager may set them without a conflict.
    let a = http(
        "PATCH",
        &format!("{url}?fieldManager=tuner"),
        Some(APPLY),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  revisionHistoryLimit: 5\n",
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["spec"]["revisionHistoryLimit"], 5);
}

#[tokio::test]
async fn kube_client_server_side_apply() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};
    let c = start("ssa3").await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    let cm: ConfigMap = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "k"}, "data": {"x": "1"}})).unwrap();
    let out = api
        .patch("k", &PatchParams::apply("skybridge"), &Patch::Apply(&cm))
        .await
        .unwrap();
    assert_eq!(out.data.unwrap()["x"], "1");
    let other: ConfigMap = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "k"}, "data": {"x": "2"}})).unwrap();
    let err = api
        .patch("k", &PatchParams::apply("intruder"), &Patch::Apply(&other))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
    let out = api
        .patch(
            "k",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(out.data.unwrap()["x"], "2");
}

#[tokio::test]
async fn apply_dropping_a_whole_struct_removes_it() {
    let c = start("apply-drop-struct").await;
    let url = format!(
        "{}/api/v1/namespaces/default/configmaps/cfg?fieldManager=op",
        c.url()
    );
    let with = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}});
    assert_eq!(
        http("PATCH", &url, Some(APPLY), &with.to_string())
            .await
            .code,
        201
    );
    let without = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}});
    let answer = http("PATCH", &url, Some(APPLY), &without.to_string()).await;
    assert_eq!(answer.code, 200);
    assert!(
        answer.body.get("data").is_none(),
        "no empty struct left behind: {}",
        answer.body
    );
}
