//! A minimal OpenAPI v3 document set, only as much as kubectl needs: its default
//! `--validate=strict` looks up, per group-version, whether the PATCH operation of a kind accepts
//! the `fieldValidation` query parameter, and fails with "failed to download openapi" if it cannot
//! find out. We declare the operations (so kubectl leaves validation to the server) but no
//! schemas (so client-side apply falls back to merge patches for CRs).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::resources::ResourceType;

fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per served group-version.
pub fn root(types: &[Arc<ResourceType>], rv: u64) -> Value {
    let mut paths = serde_json::Map::new();
    for t in types {
        let key = gv_key(&t.group, &t.version);
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={rv:016X}")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<api/v1 | apis/g/v>`: the operations of every resource there.
pub fn group_version(types: &[Arc<ResourceType>], key: &str) -> Option<Value> {
    let mut paths = BTreeMap::new();
    for t in types.iter().filter(|t| gv_key(&t.group, &t.version) == key) {
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", t.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        let base = if t.namespaced {
            format!("/{key}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("/{key}/{}", t.plural)
        };
        paths.insert(base.clone(), json!({"post": op("post"), "get": op("list")}));
        paths.insert(format!("{base}/{{name}}"), json!({"put": op("put"), "patch": op("patch"), "get": op("get"), "delete": op("delete")}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0-kube-harness"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
