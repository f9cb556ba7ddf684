//! PATCH bodies other than server-side apply: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902) and the subset of strategic merge patch the operator and kubectl use.
//!
//! Strategic merge patch subset: maps merge recursively and `null` deletes; lists whose field is
//! known to be keyed in the built-in types (`containers`, `initContainers`, `volumes`, `env`,
//! `imagePullSecrets` by `name`; container `ports` by `containerPort`; service `ports` by `port`;
//! `volumeMounts` by `mountPath`; `conditions` by `type`; `ownerReferences` by `uid`) merge item
//! by item, honouring `$patch: delete`/`replace` in items; `finalizers` merge as a set and
//! `$deleteFromPrimitiveList/<field>` removes values; `$setElementOrder/...` and `$retainKeys`
//! are accepted and ignored; every other list is replaced, as in a merge patch.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::resources::ResourceType;

/// How a list merges, in both strategic merge patch and server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    /// Replaced as a whole; owned as one field.
    Atomic,
    /// Scalars merged as a set.
    Set,
    /// Objects merged by these key fields.
    Map(Vec<String>),
}

/// The list type of the field at `path` (field names from the object root).
pub fn list_type(rt: &ResourceType, path: &[String]) -> ListType {
    if let Some(schema) = &rt.schema {
        // CRDs: follow the structural schema; lists are atomic unless marked.
        let mut node = &schema.raw;
        for seg in path {
            if node["type"] == "array" {
                node = &node["items"];
            }
            let next = &node["properties"][seg.as_str()];
            node = if next.is_null() {
                &node["additionalProperties"]
            } else {
                next
            };
        }
        return match node["x-kubernetes-list-type"].as_str() {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(
                node["x-kubernetes-list-map-keys"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ if path == ["metadata", "finalizers"] => ListType::Set,
            _ => ListType::Atomic,
        };
    }
    let last = path.last().map(String::as_str).unwrap_or_default();
    let keys = |k: &[&str]| ListType::Map(k.iter().map(|s| s.to_string()).collect());
    match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => keys(&["name"]),
        "ports" if path.iter().any(|p| p.ends_with("ontainers")) => keys(&["containerPort"]),
        "ports" => keys(&["port"]),
        "volumeMounts" => keys(&["mountPath"]),
        "conditions" => keys(&["type"]),
        "ownerReferences" => keys(&["uid"]),
        "finalizers" => ListType::Set,
        _ => ListType::Atomic,
    }
}

/// JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// JSON patch; a failing `test` or a bad path is 422 Invalid as the API server answers.
///
/// Like the API server (evanphx/json-patch), a `test` of a missing path against `null` passes:
/// kube-runtime's finalizer helper relies on it when an object has no finalizers yet.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<()> {
    let mut ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| Error::bad_request(format!("invalid JSON patch: {e}")))?;
    ops.0.retain(|op| match op {
        json_patch::PatchOperation::Test(test) => {
            !(test.value.is_null() && target.pointer(test.path.as_str()).is_none())
        }
        _ => true,
    });
    json_patch::patch(target, &ops).map_err(|e| Error::api(422, "Invalid", e.to_string()))
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn same_key(a: &Value, b: &Value, keys: &[String]) -> bool {
    keys.iter().all(|k| a.get(k) == b.get(k))
}

/// Strategic merge patch for built-in kinds (see the module docs for the subset).
pub fn strategic_merge(rt: &ResourceType, target: &mut Value, patch: &Value) -> Result<()> {
    if rt.custom {
        return Err(Error::unsupported_media(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    smp(rt, target, patch, &mut Vec::new());
    Ok(())
}

fn smp(rt: &ResourceType, orig: &mut Value, patch: &Value, path: &mut Vec<String>) {
    let Some(pm) = patch.as_object() else {
        *orig = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        *orig = strip_directives(patch);
        return;
    }
    if !orig.is_object() {
        *orig = Value::Object(Map::new());
    }
    for (k, pv) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) = (
                orig.get_mut(field).and_then(Value::as_array_mut),
                pv.as_array(),
            ) {
                list.retain(|v| !del.contains(v));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let om = orig.as_object_mut().expect("made an object above");
        if pv.is_null() {
            om.remove(k);
            continue;
        }
        path.push(k.clone());
        match om.get_mut(k) {
            None => {
                if pv.get("$patch").and_then(Value::as_str) != Some("delete") {
                    om.insert(k.clone(), strip_directives(pv));
                }
            }
            Some(ov) => {
                let lt = list_type(rt, path);
                match (&lt, ov.is_array(), pv.as_array()) {
                    (ListType::Map(keys), true, Some(pitems)) => {
                        let items = ov.as_array_mut().expect("checked");
                        if pitems
                            .iter()
                            .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
                        {
                            *items = pitems
                                .iter()
                                .filter(|p| p.get("$patch").is_none())
                                .map(strip_directives)
                                .collect();
                        } else {
                            for p in pitems {
                                let pos = items.iter().position(|o| same_key(o, p, keys));
                                let delete =
                                    p.get("$patch").and_then(Value::as_str) == Some("delete");
                                match (pos, delete) {
                                    (Some(i), true) => {
                                        items.remove(i);
                                    }
                                    (None, true) => {}
                                    (Some(i), false) => smp(rt, &mut items[i], p, path),
                                    (None, false) => items.push(strip_directives(p)),
                                }
                            }
                        }
                    }
                    (ListType::Set, true, Some(pitems)) => {
                        let items = ov.as_array_mut().expect("checked");
                        for p in pitems {
                            if !items.contains(p) {
                                items.push(p.clone());
                            }
                        }
                    }
                    _ if pv.is_object() && ov.is_object() => {
                        if pv.get("$patch").and_then(Value::as_str) == Some("delete") {
                            om.remove(k);
                        } else {
                            smp(rt, ov, pv, path);
                        }
                    }
                    _ => *ov = strip_directives(pv),
                }
            }
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployments() -> ResourceType {
        crate::resources::builtins()
            .into_iter()
            .find(|r| r.plural == "deployments")
            .unwrap()
    }

    #[test]
    fn test_of_a_missing_path_against_null_passes() {
        let mut object = serde_json::json!({"metadata": {"name": "x"}});
        let patch = serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}
        ]);
        json_patch(&mut object, &patch).unwrap();
        assert_eq!(object["metadata"]["finalizers"][0], "f");
        let stale =
            serde_json::json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]);
        assert!(
            json_patch(&mut object, &stale).is_err(),
            "present and not null: the test fails"
        );
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut obj = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [
            {"name": "a", "env": [{"name": "Y", "value": "2"}]},
            {"name": "b", "$patch": "delete"}
        ]}}}});
        strategic_merge(&deployments(), &mut obj, &patch).unwrap();
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}])
        );
    }

    #[test]
    fn strategic_directives() {
        let rt = deployments();
        let mut obj = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"template": {"spec": {
            "volumes": [{"name": "v1"}, {"name": "v2"}]}}}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]},
            "spec": {"template": {"spec": {"volumes": [{"name": "v3"}, {"$patch": "replace"}]}}}});
        strategic_merge(&rt, &mut obj, &patch).unwrap();
        assert_eq!(obj["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(
            obj["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "v3"}])
        );
        let mut cr = rt.clone();
        cr.custom = true;
        assert!(strategic_merge(&cr, &mut obj, &json!({})).is_err());
    }
}
