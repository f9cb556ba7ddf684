//! Object lifecycle through the HTTP API, checked against the API conventions: status codes,
//! `Status` bodies, metadata the server owns, generation and the status subresource.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn create_get_conflicts_and_status_bodies() {
    let c = start("crud").await;
    let base = c.url();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
    let created = post(base, "/api/v1/namespaces/default/configmaps", cm.clone()).await;
    let meta = &created["metadata"];
    assert_eq!(meta["namespace"], "default");
    assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    let rv1: u64 = meta["resourceVersion"].as_str().unwrap().parse().unwrap();

    // 409 AlreadyExists, as a metav1.Status.
    let dup = http(
        "POST",
        &format!("{base}/api/v1/namespaces/default/configmaps"),
        Some("application/json"),
        &cm.to_string(),
    )
    .await;
    assert_eq!(dup.code, 409);
    assert_eq!(dup.body["kind"], "Status");
    assert_eq!(dup.body["status"], "Failure");
    assert_eq!(dup.body["reason"], "AlreadyExists");
    assert_eq!(dup.body["code"], 409);
    assert_eq!(dup.body["message"], "configmaps \"a\" already exists");
    assert_eq!(dup.body["details"]["name"], "a");

    // 404 for a missing object and for a missing namespace.
    let missing = http(
        "GET",
        &format!("{base}/api/v1/namespaces/default/configmaps/nope"),
        None,
        "",
    )
    .await;
    assert_eq!(
        (missing.code, missing.body["reason"].as_str()),
        (404, Some("NotFound"))
    );
    let no_ns = http(
        "POST",
        &format!("{base}/api/v1/namespaces/ghost/configmaps"),
        Some("application/json"),
        &cm.to_string(),
    )
    .await;
    assert_eq!(no_ns.code, 404);
    assert_eq!(no_ns.body["message"], "namespaces \"ghost\" not found");
    let no_type = http("GET", &format!("{base}/apis/nope.io/v1/things"), None, "").await;
    assert_eq!(no_type.code, 404);

    // PUT with a stale resourceVersion: 409 Conflict; with the current one: success and a
    // higher resourceVersion.
    let mut upd = created.clone();
    upd["data"]["k"] = json!("w");
    let ok = http(
        "PUT",
        &format!("{base}/api/v1/namespaces/default/configmaps/a"),
        Some("application/json"),
        &upd.to_string(),
    )
    .await;
    assert_eq!(ok.code, 200, "{}", ok.body);
    let rv2: u64 = ok.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    let stale = http(
        "PUT",
        &format!("{base}/api/v1/namespaces/default/configmaps/a"),
        Some("application/json"),
        &upd.to_string(),
    )
    .await;
    assert_eq!(stale.code, 409);
    assert_eq!(stale.body["reason"], "Conflict");
    assert!(
        stale.body["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );
    // uid and creationTimestamp cannot be changed by an update.
    let mut forged = ok.body.clone();
    forged["metadata"]["uid"] = json!("forged");
    let kept = http(
        "PUT",
        &format!("{base}/api/v1/namespaces/default/configmaps/a"),
        Some("application/json"),
        &forged.to_string(),
    )
    .await;
    assert_eq!(kept.body["metadata"]["uid"], created["metadata"]["uid"]);

    // A PUT of a missing object is 404; a no-op PUT keeps the resourceVersion.
    let put_missing = http(
        "PUT",
        &format!("{base}/api/v1/namespaces/default/configmaps/zzz"),
        Some("application/json"),
        &json!({"metadata": {"name": "zzz"}}).to_string(),
    )
    .await;
    assert_eq!(put_missing.code, 404);
    let same = http(
        "PUT",
        &format!("{base}/api/v1/namespaces/default/configmaps/a"),
        Some("application/json"),
        &kept.body.to_string(),
    )
    .await;
    assert_eq!(
        same.body["metadata"]["resourceVersion"],
        kept.body["metadata"]["resourceVersion"]
    );

    // generateName.
    let generated = post(
        base,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"generateName": "x-"}}),
    )
    .await;
    assert!(
        generated["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("x-")
    );
    assert_eq!(generated["metadata"]["name"].as_str().unwrap().len(), 7);

    // Default namespaces exist.
    for ns in ["default", "kube-system"] {
        let a = http("GET", &format!("{base}/api/v1/namespaces/{ns}"), None, "").await;
        assert_eq!(a.code, 200);
        assert_eq!(a.body["status"]["phase"], "Active");
    }
}

#[tokio::test]
async fn generation_and_status_subresource() {
    let c = start("gen").await;
    let base = c.url();
    let mut d = deployment("web", 1, 0);
    d["status"] = json!({"replicas": 99});
    let created = post(base, "/apis/apps/v1/namespaces/default/deployments", d).await;
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(
        created["status"].get("replicas").is_none(),
        "status is dropped on create"
    );
    let url = format!("{base}/apis/apps/v1/namespaces/default/deployments/web");

    // Metadata-only change: generation stays.
    let a = http(
        "PATCH",
        &url,
        Some("application/merge-patch+json"),
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    )
    .await;
    assert_eq!(a.body["metadata"]["generation"], 1);
    // Status through the main resource is ignored.
    let a = http(
        "PATCH",
        &url,
        Some("application/merge-patch+json"),
        r#"{"status":{"replicas":5}}"#,
    )
    .await;
    assert_eq!(a.code, 200);
    assert_ne!(a.body["status"]["replicas"], 5);
    assert_eq!(a.body["metadata"]["generation"], 1);
    // Spec change: generation bumps.
    let a = http(
        "PATCH",
        &url,
        Some("application/merge-patch+json"),
        r#"{"spec":{"replicas":3}}"#,
    )
    .await;
    assert_eq!(a.body["metadata"]["generation"], 2);
    // Status subresource: status changes, spec changes are ignored, generation stays.
    let a = http(
        "PATCH",
        &format!("{url}/status"),
        Some("application/merge-patch+json"),
        r#"{"spec":{"replicas":7},"status":{"observedGeneration":2,"replicas":3}}"#,
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["status"]["replicas"], 3);
    assert_eq!(a.body["spec"]["replicas"], 3);
    assert_eq!(a.body["metadata"]["generation"], 2);
    // GET /status returns the whole object.
    let a = http("GET", &format!("{url}/status"), None, "").await;
    assert_eq!(a.body["status"]["replicas"], 3);
    // PUT /status with the current resourceVersion.
    let mut obj = a.body.clone();
    obj["status"]["replicas"] = json!(4);
    let a = http(
        "PUT",
        &format!("{url}/status"),
        Some("application/json"),
        &obj.to_string(),
    )
    .await;
    assert_eq!(a.body["status"]["replicas"], 4);
    // Kinds without a status subresource: /status is 404.
    post(
        base,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "c"}}),
    )
    .await;
    let a = http(
        "GET",
        &format!("{base}/api/v1/namespaces/default/configmaps/c/status"),
        None,
        "",
    )
    .await;
    assert_eq!(a.code, 404);
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let c = start("dry").await;
    let base = c.url();
    let a = http(
        "POST",
        &format!("{base}/api/v1/namespaces/default/secrets?dryRun=All"),
        Some("application/json"),
        &json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}}).to_string(),
    )
    .await;
    assert_eq!(a.code, 201);
    let g = http(
        "GET",
        &format!("{base}/api/v1/namespaces/default/secrets/s"),
        None,
        "",
    )
    .await;
    assert_eq!(g.code, 404);
}

#[tokio::test]
async fn kube_client_typed_round_trip() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, PostParams};
    let c = start("typed").await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("typed".into());
    cm.data = Some([("a".to_string(), "1".to_string())].into());
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.metadata.resource_version.is_some());
    let err = api.create(&PostParams::default(), &cm).await.unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("unexpected {other:?}"),
    }
    let mut got = api.get("typed").await.unwrap();
    got.data = Some([("a".to_string(), "2".to_string())].into());
    api.replace("typed", &PostParams::default(), &got)
        .await
        .unwrap();
    let stale = api
        .replace("typed", &PostParams::default(), &got)
        .await
        .unwrap_err();
    assert!(matches!(stale, kube::Error::Api(s) if s.code == 409));
    api.delete("typed", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("typed").await.unwrap().is_none());
}

#[tokio::test]
async fn invalid_names_labels_and_deployments_are_422() {
    let c = start("invalid").await;
    let base = c.url();
    let cms = format!("{base}/api/v1/namespaces/default/configmaps");
    let a = http(
        "POST",
        &cms,
        Some("application/json"),
        r#"{"metadata":{"name":"Upper_Case"}}"#,
    )
    .await;
    assert_eq!((a.code, a.body["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(a.body["details"]["causes"][0]["field"], "metadata.name");
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("a lowercase RFC 1123 subdomain")
    );
    let a = http(
        "POST",
        &cms,
        Some("application/json"),
        r#"{"metadata":{"name":"ok","labels":{"model":"s3://bucket/x"}}}"#,
    )
    .await;
    assert_eq!(a.code, 422);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("a valid label must be an empty string")
    );
    let a = http(
        "POST",
        &format!("{base}/api/v1/namespaces"),
        Some("application/json"),
        r#"{"metadata":{"name":"has.dot"}}"#,
    )
    .await;
    assert_eq!(a.code, 422, "namespaces need DNS labels");

    let deps = format!("{base}/apis/apps/v1/namespaces/default/deployments");
    let mut d = deployment("web", 1, 0);
    d["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    let a = http("POST", &deps, Some("application/json"), &d.to_string()).await;
    assert_eq!(a.code, 422);
    assert_eq!(
        a.body["details"]["causes"][0]["field"],
        "spec.template.metadata.labels"
    );
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("`selector` does not match template `labels`")
    );
    let mut d = deployment("web", 1, 0);
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
    let a = http("POST", &deps, Some("application/json"), &d.to_string()).await;
    assert_eq!(
        a.body["details"]["causes"][0]["field"],
        "spec.template.spec.containers[0].image"
    );
    post(
        base,
        "/apis/apps/v1/namespaces/default/deployments",
        deployment("web", 1, 0),
    )
    .await;
    let a = http("PATCH", &format!("{deps}/web"), Some("application/merge-patch+json"),
        r#"{"spec":{"selector":{"matchLabels":{"app":"x"}},"template":{"metadata":{"labels":{"app":"x"}}}}}"#).await;
    assert_eq!(a.code, 422);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("field is immutable")
    );
}

#[tokio::test]
async fn delete_preconditions_and_builtin_defaults() {
    let c = start("pre").await;
    let base = c.url();
    let cm = post(
        base,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "p"}}),
    )
    .await;
    let url = format!("{base}/api/v1/namespaces/default/configmaps/p");
    let a = http(
        "DELETE",
        &url,
        Some("application/json"),
        r#"{"preconditions":{"resourceVersion":"1"}}"#,
    )
    .await;
    assert_eq!(a.code, 409);
    let a = http(
        "DELETE",
        &url,
        Some("application/json"),
        r#"{"preconditions":{"uid":"other"}}"#,
    )
    .await;
    assert_eq!(a.code, 409);
    let body = json!({"preconditions": {"uid": cm["metadata"]["uid"], "resourceVersion": cm["metadata"]["resourceVersion"]}});
    let a = http("DELETE", &url, Some("application/json"), &body.to_string()).await;
    assert_eq!(a.code, 200);
    assert_eq!(http("DELETE", &url, None, "").await.code, 404);

    let svc = post(
        base,
        "/api/v1/namespaces/default/services",
        json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    )
    .await;
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(
        svc["spec"]["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    let secret = post(
        base,
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"name": "s"}}),
    )
    .await;
    assert_eq!(secret["type"], "Opaque");
}

/// Writes are built outside the store's lock and stored only if the object is unchanged since it
/// was read: racing writes to one object must each land once, in order, and racing creates of one
/// name must leave exactly one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writes_to_one_object_lose_nothing() {
    const WRITERS: usize = 40;
    let c = start("race").await;
    let base = c.url().to_string();
    let path = "/api/v1/namespaces/default/configmaps";
    let created = post(
        &base,
        path,
        json!({"metadata": {"name": "shared"}, "data": {}}),
    )
    .await;
    let rv0: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (code, mut events) = watch_events(&format!(
        "{base}{path}?watch=true&resourceVersion={rv0}&fieldSelector=metadata.name%3Dshared"
    ))
    .await;
    assert_eq!(code, 200);

    let patches = (0..WRITERS).map(|i| {
        let url = format!("{base}{path}/shared");
        async move {
            http(
                "PATCH",
                &url,
                Some("application/merge-patch+json"),
                &json!({"data": {format!("k{i:02}"): "v"}}).to_string(),
            )
            .await
        }
    });
    let answers = futures::future::join_all(patches.map(tokio::spawn)).await;
    for answer in answers {
        assert_eq!(answer.expect("task").code, 200);
    }
    let stored = http("GET", &format!("{base}{path}/shared"), None, "").await;
    let data = stored.body["data"].as_object().expect("data").clone();
    assert_eq!(data.len(), WRITERS, "every patch is kept: {data:?}");
    assert_eq!(
        stored.body["metadata"]["resourceVersion"],
        (rv0 + WRITERS as u64).to_string(),
        "one resourceVersion per write"
    );
    // The watch shows each write once, each building on the one before.
    for n in 1..=WRITERS {
        let event = next_event(&mut events, 10).await.expect("event");
        assert_eq!(event["type"], "MODIFIED");
        assert_eq!(event["object"]["data"].as_object().unwrap().len(), n);
        assert_eq!(
            event["object"]["metadata"]["resourceVersion"],
            (rv0 + n as u64).to_string()
        );
    }

    let creates = (0..WRITERS).map(|_| {
        let url = format!("{base}{path}");
        async move {
            http(
                "POST",
                &url,
                Some("application/json"),
                &json!({"metadata": {"name": "once"}}).to_string(),
            )
            .await
            .code
        }
    });
    let mut codes: Vec<u16> = futures::future::join_all(creates.map(tokio::spawn))
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    codes.sort_unstable();
    assert_eq!(codes[0], 201);
    assert!(codes[1..].iter().all(|c| *c == 409), "{codes:?}");
}

/// Bodies the harness cannot read get the API server's kind of answer, and store nothing.
#[tokio::test]
async fn unreadable_bodies_are_clear_errors() {
    let c = start("hub").await;
    let url = format!("{}/api/v1/namespaces/default/configmaps", c.url());
    // Said to be protobuf but without the Kubernetes envelope.
    let a = http(
        "POST",
        &url,
        Some("application/vnd.kubernetes.protobuf"),
        "{\"metadata\":{\"name\":\"x\"}}",
    )
    .await;
    assert_eq!(a.code, 400, "{}", a.body);
    assert_eq!(a.body["kind"], "Status");
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("k8s\\0 prefix"),
        "{}",
        a.body
    );
    // The envelope, then bytes that are no protobuf message.
    let a = http(
        "POST",
        &url,
        Some("application/vnd.kubernetes.protobuf"),
        "k8s\u{0}\u{7f}\u{7f}\u{7f}",
    )
    .await;
    assert_eq!(a.code, 400, "{}", a.body);
    let a = http("POST", &url, Some("application/cbor"), "\u{a0}").await;
    assert_eq!(a.code, 415, "{}", a.body);
    assert_eq!(a.body["reason"], "UnsupportedMediaType", "{}", a.body);
    let listed = http("GET", &url, None, "").await;
    assert_eq!(listed.body["items"], json!([]), "{}", listed.body);
}

/// SelfSubjectAccessReview: answered (allowed, no authorization here), never stored, checked.
#[tokio::test]
async fn access_reviews_are_answered_not_stored() {
    let c = start("hub").await;
    let url = format!(
        "{}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        c.url()
    );
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "patch", "group": "apps", "resource": "deployments", "namespace": "shop"}}});
    let a = http("POST", &url, Some("application/json"), &review.to_string()).await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(a.body["status"]["allowed"], true, "{}", a.body);
    assert_eq!(a.body["spec"], review["spec"], "the question comes back");
    for spec in [
        json!({}),
        json!({"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}),
    ] {
        let body = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec});
        let a = http("POST", &url, Some("application/json"), &body.to_string()).await;
        assert_eq!(a.code, 422, "{spec}: {}", a.body);
    }
    assert_eq!(http("GET", &url, None, "").await.code, 405);
    let discovery = http(
        "GET",
        &format!("{}/apis/authorization.k8s.io/v1", c.url()),
        None,
        "",
    )
    .await;
    assert_eq!(
        discovery.body["resources"][0]["verbs"],
        json!(["create"]),
        "{}",
        discovery.body
    );
}

/// The request counter counts what clients send, by verb, and not the control endpoints.
#[tokio::test]
async fn requests_are_counted_by_verb() {
    let c = start("counted").await;
    let base = c.url();
    let before = c.requests();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
    post(base, "/api/v1/namespaces/default/configmaps", cm).await;
    for _ in 0..3 {
        http(
            "GET",
            &format!("{base}/api/v1/namespaces/default/configmaps/a"),
            None,
            "",
        )
        .await;
    }
    http(
        "GET",
        &format!("{base}/api/v1/namespaces/default/configmaps"),
        None,
        "",
    )
    .await;
    http("GET", &format!("{base}/harness/capacity"), None, "").await;
    let after = c.requests();
    let delta =
        |verb: &str| after.get(verb).copied().unwrap_or(0) - before.get(verb).copied().unwrap_or(0);
    assert_eq!(delta("create"), 1);
    assert_eq!(delta("get"), 3);
    assert_eq!(delta("list"), 1);
    assert_eq!(
        after.values().sum::<u64>() - before.values().sum::<u64>(),
        5,
        "{after:?}"
    );
}
