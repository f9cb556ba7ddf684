//! CustomResourceDefinitions (serving, scope, defaults, validation incl. CEL), finalizers and
//! owner-reference garbage collection.

mod common;

use common::*;
use serde_json::{Value, json};

const POOLS: &str = "/apis/skybridge.io/v1alpha1/computepools";
const MDS: &str = "/apis/skybridge.io/v1alpha1/namespaces/default/modeldeployments";

fn causes(v: &Value) -> Vec<String> {
    v["details"]["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    format!(
                        "{}: {}",
                        c["field"].as_str().unwrap(),
                        c["message"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn crds_become_served_with_scope_discovery_and_defaults() {
    let c = start("crd").await;
    let base = c.url();
    install_crds(base).await;
    let crd = http("GET", &format!("{base}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/computepools.skybridge.io"), None, "").await;
    let established = crd.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Established" && c["status"] == "True");
    assert!(established);

    // Discovery lists the kinds with scope, short names, categories and status subresources.
    let d = http(
        "GET",
        &format!("{base}/apis/skybridge.io/v1alpha1"),
        None,
        "",
    )
    .await;
    let res = d.body["resources"].as_array().unwrap();
    let pools = res.iter().find(|r| r["name"] == "computepools").unwrap();
    assert_eq!(pools["namespaced"], false);
    assert_eq!(pools["kind"], "ComputePool");
    assert_eq!(pools["shortNames"], json!(["cpool"]));
    assert_eq!(pools["categories"], json!(["skybridge"]));
    assert!(res.iter().any(|r| r["name"] == "computepools/status"));
    assert!(
        res.iter()
            .any(|r| r["name"] == "modeldeployments" && r["namespaced"] == true)
    );
    let groups = http("GET", &format!("{base}/apis"), None, "").await;
    assert!(
        groups.body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "skybridge.io")
    );

    // Cluster-scoped: created without a namespace; a namespaced path is 404.
    let p = post(base, POOLS, pool("dc1", "private")).await;
    assert!(p["metadata"].get("namespace").is_none());
    // Schema defaults applied (startupSeconds: 120, cost: zeros), unknown fields pruned.
    assert_eq!(p["spec"]["startupSeconds"], 120);
    assert_eq!(p["spec"]["cost"]["gpuHour"], 0.0);
    let mut with_unknown = pool("dc2", "private");
    with_unknown["spec"]["bogus"] = json!(1);
    let strict = http(
        "POST",
        &format!("{base}{POOLS}?fieldValidation=Strict"),
        Some("application/json"),
        &with_unknown.to_string(),
    )
    .await;
    assert_eq!(strict.code, 400);
    assert_eq!(
        strict.body["message"],
        "strict decoding error: unknown field \"spec.bogus\""
    );
    let p2 = post(base, POOLS, with_unknown).await;
    assert!(p2["spec"].get("bogus").is_none());
    let ns_path = http(
        "GET",
        &format!("{base}/apis/skybridge.io/v1alpha1/namespaces/default/computepools/dc1"),
        None,
        "",
    )
    .await;
    assert_eq!(ns_path.code, 404);
    // Status subresource: create drops status; PUT without resourceVersion is 422 for CRs.
    let mut with_status = pool("dc3", "private");
    with_status["status"] = json!({"conditions": []});
    let p3 = post(base, POOLS, with_status).await;
    assert!(p3.get("status").is_none());
    let mut no_rv = p3.clone();
    no_rv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let a = http(
        "PUT",
        &format!("{base}{POOLS}/dc3"),
        Some("application/json"),
        &no_rv.to_string(),
    )
    .await;
    assert_eq!(a.code, 422);
    // Strategic merge patch is not supported for custom resources.
    let a = http(
        "PATCH",
        &format!("{base}{POOLS}/dc3"),
        Some("application/strategic-merge-patch+json"),
        "{}",
    )
    .await;
    assert_eq!(a.code, 415);

    // Deleting the CRD removes its objects and stops serving it.
    let a = http("DELETE", &format!("{base}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/computepools.skybridge.io"), None, "").await;
    assert_eq!(a.code, 200);
    let a = http("GET", &format!("{base}{POOLS}"), None, "").await;
    assert_eq!(a.code, 404);
}

#[tokio::test]
async fn crd_schema_validation_and_cel_rules() {
    let c = start("validate").await;
    let base = c.url();
    install_crds(base).await;
    let try_pool = |spec_patch: Value| {
        let mut p = pool("bad", "private");
        json_patch::merge(&mut p["spec"], &spec_patch);
        let url = format!("{base}{POOLS}");
        async move { http("POST", &url, Some("application/json"), &p.to_string()).await }
    };
    // Required, enum, type, minimum/maximum, pattern, minItems/maxItems: each a 422 Invalid
    // whose causes name the field.
    let a = try_pool(json!({"region": null})).await;
    assert_eq!(a.code, 422);
    assert_eq!(a.body["reason"], "Invalid");
    assert_eq!(causes(&a.body), vec!["spec.region: Required value"]);
    assert_eq!(
        a.body["details"]["causes"][0],
        json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.region"})
    );
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .starts_with("ComputePool.skybridge.io \"bad\" is invalid: ")
    );
    let a = try_pool(json!({"cloud": "moon"})).await;
    assert_eq!(
        causes(&a.body),
        vec!["spec.cloud: Unsupported value: \"moon\": supported values: \"private\", \"public\""]
    );
    let a = try_pool(json!({"startupSeconds": "slow"})).await;
    assert_eq!(a.code, 422);
    assert!(causes(&a.body)[0].contains("must be of type integer"));
    let a = try_pool(json!({"startupSeconds": 90000})).await;
    assert!(
        causes(&a.body)[0].contains("should be less than or equal to 86400"),
        "{:?}",
        causes(&a.body)
    );
    let a = try_pool(json!({"artifactStore": {"bucket": "UPPER"}})).await;
    assert!(
        causes(&a.body)[0].contains("should match"),
        "{:?}",
        causes(&a.body)
    );
    let a = try_pool(json!({"dataClasses": []})).await;
    assert!(causes(&a.body)[0].contains("should have at least 1 items"));
    let a = try_pool(json!({"dataClasses": ["public", "internal", "sensitive", "public"]})).await;
    assert!(
        causes(&a.body)
            .iter()
            .any(|c| c.contains("must have at most 3 items")),
        "{:?}",
        causes(&a.body)
    );

    // CEL rules (x-kubernetes-validations): message of the rule, 422.
    let a = try_pool(json!({"dataClasses": ["public", "public"]})).await;
    assert_eq!(a.code, 422);
    assert!(
        causes(&a.body)
            .iter()
            .any(|c| c.contains("dataClasses must not repeat a class")),
        "{:?}",
        a.body
    );
    let mut public = pool("pub", "public");
    public["spec"]["dataClasses"] = json!(["public", "sensitive"]);
    let a = http(
        "POST",
        &format!("{base}{POOLS}"),
        Some("application/json"),
        &public.to_string(),
    )
    .await;
    assert_eq!(a.code, 422);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("a public pool must not admit the sensitive data class")
    );
    let a = try_pool(json!({"artifactStore": {"bucket": "models", "endpoint": "ftp://x"}})).await;
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("endpoint must be an http:// or https:// URL")
    );
    // Valid objects pass; updates are validated too.
    post(base, POOLS, pool("good", "public")).await;
    let a = http(
        "PATCH",
        &format!("{base}{POOLS}/good"),
        Some("application/merge-patch+json"),
        r#"{"spec":{"dataClasses":["sensitive"]}}"#,
    )
    .await;
    assert_eq!(a.code, 422);

    // Namespaced CR with nested CEL rule (replicas.min <= replicas.max).
    let md = |min: u32, max: u32| {
        json!({
            "apiVersion": "skybridge.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "m"},
            "spec": {"model": {"version": "1", "source": {"pool": "good", "uri": "s3://models/x"}},
                     "components": [{"name": "enc", "image": "triton", "dataClass": "public",
                                     "replicas": {"min": min, "max": max}, "resources": {}}]}
        })
    };
    let a = http(
        "POST",
        &format!("{base}{MDS}"),
        Some("application/json"),
        &md(3, 1).to_string(),
    )
    .await;
    assert_eq!(a.code, 422);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("replicas.min must not exceed replicas.max"),
        "{}",
        a.body
    );
    let ok = post(base, MDS, md(1, 3)).await;
    assert_eq!(
        ok["spec"]["components"][0]["resources"]["cpu"], "1",
        "nested default"
    );
    assert_eq!(ok["spec"]["components"][0]["port"], 8080);
    assert_eq!(ok["spec"]["artifacts"]["mode"], "Eager");
    // The same rule on an update: the cause names the full path of the field.
    let a = http(
        "PATCH",
        &format!("{base}{MDS}/m"),
        Some("application/merge-patch+json"),
        &json!({"spec": md(5, 2)["spec"]}).to_string(),
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert!(
        causes(&a.body)
            .iter()
            .any(|c| c.starts_with("spec.components[0].replicas: ")),
        "{:?}",
        causes(&a.body)
    );
}

#[tokio::test]
async fn rules_ratchet_on_fields_an_update_leaves_unchanged() {
    let c = start("ratchet").await;
    let base = c.url();
    // The schema allows one more than the CEL rule, so that each can fail alone.
    let crd = |limit: u32| {
        let max = limit + 1;
        format!(
            r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: gadgets.example.com}}
spec:
  group: example.com
  scope: Namespaced
  names: {{plural: gadgets, singular: gadget, kind: Gadget}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - {{rule: "self.size <= {limit}", message: "too big"}}
            properties:
              size: {{type: integer, maximum: {max}}}
          status:
            type: object
            properties:
              seen: {{type: integer}}
"#
        )
    };
    c.apply_yaml(&crd(10), "setup").unwrap();
    let url = format!("{base}/apis/example.com/v1/namespaces/default/gadgets");
    let created = post(
        base,
        "/apis/example.com/v1/namespaces/default/gadgets",
        json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"size": 8}}),
    )
    .await;
    assert_eq!(created["spec"]["size"], 8);
    // The rules tighten after the object was stored: it now violates them.
    c.apply_yaml(&crd(5), "setup").unwrap();
    let merge = |path: String, body: Value| async move {
        http(
            "PATCH",
            &path,
            Some("application/merge-patch+json"),
            &body.to_string(),
        )
        .await
    };
    // Writes that leave the spec as it is pass: neither its schema nor its CEL rules are
    // evaluated again. What they change still is: an unknown status field is pruned.
    let a = merge(
        format!("{url}/g/status"),
        json!({"status": {"seen": 1, "bogus": true}}),
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["status"], json!({"seen": 1}));
    let a = merge(
        format!("{url}/g"),
        json!({"metadata": {"labels": {"a": "b"}}}),
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    // A write that changes the spec is held to the rule.
    let a = merge(format!("{url}/g"), json!({"spec": {"size": 7}})).await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert!(
        causes(&a.body)
            .iter()
            .any(|c| c.starts_with("spec.size: ") && c.contains("less than or equal to 6")),
        "{:?}",
        causes(&a.body)
    );
    // Within the schema, the changed spec is held to the CEL rule.
    let a = merge(format!("{url}/g"), json!({"spec": {"size": 6}})).await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert!(
        causes(&a.body)
            .iter()
            .any(|c| c.starts_with("spec: ") && c.contains("too big")),
        "{:?}",
        causes(&a.body)
    );
    let a = merge(format!("{url}/g"), json!({"spec": {"size": 5}})).await;
    assert_eq!(a.code, 200, "{}", a.body);
}

#[tokio::test]
async fn finalizers_keep_objects_until_emptied() {
    let c = start("fin").await;
    let base = c.url();
    let url = format!("{base}/api/v1/namespaces/default/configmaps/f");
    post(
        base,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "f", "finalizers": ["example.com/a", "example.com/b"]}}),
    )
    .await;
    let a = http("DELETE", &url, None, "").await;
    assert_eq!(a.code, 200, "deletion pending: {}", a.body);
    let obj = http("GET", &url, None, "").await.body;
    assert!(obj["metadata"]["deletionTimestamp"].is_string());
    // Removing one finalizer keeps it; removing the last one removes it.
    http(
        "PATCH",
        &url,
        Some("application/merge-patch+json"),
        r#"{"metadata":{"finalizers":["example.com/b"]}}"#,
    )
    .await;
    assert_eq!(http("GET", &url, None, "").await.code, 200);
    let a = http(
        "PATCH",
        &url,
        Some("application/json-patch+json"),
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(http("GET", &url, None, "").await.code, 404);
    // 202 Accepted only when the deletion is pending and orphanDependents=false was asked for.
    post(
        base,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "g", "finalizers": ["example.com/a"]}}),
    )
    .await;
    let a = http(
        "DELETE",
        &format!("{base}/api/v1/namespaces/default/configmaps/g"),
        Some("application/json"),
        r#"{"orphanDependents":false}"#,
    )
    .await;
    assert_eq!(a.code, 202, "{}", a.body);
}

#[tokio::test]
async fn owner_references_garbage_collection() {
    let c = start("gc").await;
    let base = c.url();
    let cms = "/api/v1/namespaces/default/configmaps";
    let owner = |name: &str| {
        let base = base.to_string();
        let name = name.to_string();
        async move { post(&base, cms, json!({"metadata": {"name": name}})).await }
    };
    let dependent = |name: &str, owner: &Value, extra_finalizer: bool| {
        let mut meta = json!({"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}]});
        if extra_finalizer {
            meta["finalizers"] = json!(["example.com/hold"]);
        }
        json!({"metadata": meta})
    };
    let get = |name: &str| {
        let url = format!("{base}{cms}/{name}");
        async move { http("GET", &url, None, "").await }
    };

    // Background (default): owner gone at once, dependents (and their dependents) follow.
    let o = owner("o1").await;
    let d = post(base, cms, dependent("d1", &o, false)).await;
    post(base, cms, dependent("dd1", &d, false)).await;
    let a = http("DELETE", &format!("{base}{cms}/o1"), None, "").await;
    assert_eq!(a.code, 200);
    eventually("background GC", 5, || async {
        (get("d1").await.code == 404 && get("dd1").await.code == 404).then_some(())
    })
    .await;

    // Foreground: owner stays (deletionTimestamp, foregroundDeletion) while a dependent is held
    // by a finalizer; goes when the dependent goes.
    let o = owner("o2").await;
    post(base, cms, dependent("d2", &o, true)).await;
    let a = http(
        "DELETE",
        &format!("{base}{cms}/o2"),
        Some("application/json"),
        r#"{"propagationPolicy":"Foreground"}"#,
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    let held = get("o2").await.body;
    assert!(
        held["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "foregroundDeletion")
    );
    assert!(get("d2").await.body["metadata"]["deletionTimestamp"].is_string());
    http(
        "PATCH",
        &format!("{base}{cms}/d2"),
        Some("application/merge-patch+json"),
        r#"{"metadata":{"finalizers":null}}"#,
    )
    .await;
    eventually("foreground owner removed", 5, || async {
        (get("o2").await.code == 404).then_some(())
    })
    .await;

    // An owner that never existed: the dependent is collected, as the real collector does once
    // it finds the owner missing.
    let ghost =
        json!({"metadata": {"name": "ghost", "uid": "00000000-0000-4000-8000-000000000000"}});
    post(base, cms, dependent("d-ghost", &ghost, false)).await;
    eventually("dependent of a missing owner collected", 5, || async {
        (get("d-ghost").await.code == 404).then_some(())
    })
    .await;

    // Orphan: dependents stay, without the owner reference.
    let o = owner("o3").await;
    post(base, cms, dependent("d3", &o, false)).await;
    http(
        "DELETE",
        &format!("{base}{cms}/o3?propagationPolicy=Orphan"),
        None,
        "",
    )
    .await;
    let d3 = get("d3").await;
    assert_eq!(d3.code, 200);
    assert!(
        d3.body["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty())
    );

    // Two owners, one deleted: the dependent stays, minus the dangling reference.
    let o4 = owner("o4").await;
    let o5 = owner("o5").await;
    let mut two = dependent("d4", &o4, false);
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "o5", "uid": o5["metadata"]["uid"]});
    two["metadata"]["ownerReferences"]
        .as_array_mut()
        .unwrap()
        .push(second);
    post(base, cms, two).await;
    http("DELETE", &format!("{base}{cms}/o4"), None, "").await;
    let d4 = get("d4").await;
    assert_eq!(d4.code, 200);
    let refs = d4.body["metadata"]["ownerReferences"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0]["name"], "o5");
    http("DELETE", &format!("{base}{cms}/o5"), None, "").await;
    eventually("last owner gone", 5, || async {
        (get("d4").await.code == 404).then_some(())
    })
    .await;

    // Deleting a namespace: it turns Terminating, its contents are deleted with their finalizers
    // respected, new content is 403 Forbidden, and it goes once empty.
    post(
        base,
        "/api/v1/namespaces",
        json!({"metadata": {"name": "tmp"}}),
    )
    .await;
    post(
        base,
        "/api/v1/namespaces/tmp/configmaps",
        json!({"metadata": {"name": "x"}}),
    )
    .await;
    post(
        base,
        "/api/v1/namespaces/tmp/configmaps",
        json!({"metadata": {"name": "held", "finalizers": ["example.com/cleanup"]}}),
    )
    .await;
    let a = http("DELETE", &format!("{base}/api/v1/namespaces/tmp"), None, "").await;
    assert_eq!(a.code, 200);
    assert_eq!(a.body["status"]["phase"], "Terminating");
    assert_eq!(
        http(
            "GET",
            &format!("{base}/api/v1/namespaces/tmp/configmaps/x"),
            None,
            ""
        )
        .await
        .code,
        404
    );
    let held = http(
        "GET",
        &format!("{base}/api/v1/namespaces/tmp/configmaps/held"),
        None,
        "",
    )
    .await;
    assert!(held.body["metadata"]["deletionTimestamp"].is_string());
    let a = http(
        "POST",
        &format!("{base}/api/v1/namespaces/tmp/configmaps"),
        Some("application/json"),
        r#"{"metadata":{"name":"new"}}"#,
    )
    .await;
    assert_eq!(
        (a.code, a.body["reason"].as_str()),
        (403, Some("Forbidden"))
    );
    assert_eq!(
        http("GET", &format!("{base}/api/v1/namespaces/tmp"), None, "")
            .await
            .body["status"]["phase"],
        "Terminating"
    );
    http(
        "PATCH",
        &format!("{base}/api/v1/namespaces/tmp/configmaps/held"),
        Some("application/merge-patch+json"),
        r#"{"metadata":{"finalizers":null}}"#,
    )
    .await;
    eventually("namespace removed once empty", 5, || async {
        (http("GET", &format!("{base}/api/v1/namespaces/tmp"), None, "")
            .await
            .code
            == 404)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn crd_transition_rules_map_lists_and_preserved_fields() {
    let c = start("crd2").await;
    let base = c.url();
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              region:
                type: string
                x-kubernetes-validations:
                - {rule: "self == oldSelf", message: "region is immutable"}
              ports:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    port: {type: integer}
              extra:
                type: object
                x-kubernetes-preserve-unknown-fields: true
"#;
    c.apply_yaml(crd, "setup").unwrap();
    let url = format!("{base}/apis/example.com/v1/namespaces/default/widgets/w");
    let apply = |manager: &str, body: &str| {
        let url = format!("{url}?fieldManager={manager}");
        let body = format!(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n{body}"
        );
        async move { http("PATCH", &url, Some("application/apply-patch+yaml"), &body).await }
    };
    let a = apply(
        "one",
        "  region: eu\n  ports:\n  - {name: http, port: 80}\n  extra: {anything: {goes: [1]}}\n",
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(
        a.body["spec"]["extra"]["anything"]["goes"],
        json!([1]),
        "preserved unknown fields"
    );
    // list-type=map: a second manager adds an item keyed by name; both survive.
    let a = apply("two", "  ports:\n  - {name: grpc, port: 9090}\n").await;
    assert_eq!(a.code, 200, "{}", a.body);
    let ports: Vec<&str> = a.body["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(ports, vec!["http", "grpc"]);
    let two = a.body["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "two")
        .unwrap()
        .clone();
    assert!(
        two["fieldsV1"]["f:spec"]["f:ports"]
            .get("k:{\"name\":\"grpc\"}")
            .is_some()
    );
    // Transition rule with oldSelf: changing the region is rejected.
    let a = http(
        "PATCH",
        &url,
        Some("application/merge-patch+json"),
        r#"{"spec":{"region":"us"}}"#,
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("region is immutable")
    );
}
