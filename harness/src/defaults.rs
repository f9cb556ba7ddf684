//! Defaulting of built-in kinds, the subset of the API server's defaulters that the operator can
//! observe: an object read back carries these fields even if the writer left them out (so drift
//! detection that ignores defaults fails here as it would on a real cluster). Defaults are applied
//! after field ownership is recorded, so no manager owns them, as on the real server.

use serde_json::{Value, json};

use crate::resources::ResourceType;

fn set_if_absent(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut()
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), v);
    }
}

fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_if_absent(spec, "restartPolicy", json!("Always"));
    set_if_absent(spec, "terminationGracePeriodSeconds", json!(30));
    set_if_absent(spec, "dnsPolicy", json!("ClusterFirst"));
    set_if_absent(spec, "schedulerName", json!("default-scheduler"));
    set_if_absent(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            let image = c["image"].as_str().unwrap_or_default().to_string();
            let tag = image.rsplit('/').next().unwrap_or_default();
            let latest = !tag.contains(':') || tag.ends_with(":latest");
            set_if_absent(
                c,
                "imagePullPolicy",
                json!(if latest { "Always" } else { "IfNotPresent" }),
            );
            set_if_absent(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_if_absent(c, "terminationMessagePolicy", json!("File"));
            set_if_absent(c, "resources", json!({}));
            for p in c["ports"].as_array_mut().into_iter().flatten() {
                set_if_absent(p, "protocol", json!("TCP"));
            }
        }
    }
}

/// Fill in defaults of built-in kinds.
pub fn apply(rt: &ResourceType, obj: &mut Value) {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("apps", "deployments") => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                return;
            }
            set_if_absent(spec, "replicas", json!(1));
            set_if_absent(spec, "revisionHistoryLimit", json!(10));
            set_if_absent(spec, "progressDeadlineSeconds", json!(600));
            set_if_absent(spec, "strategy", json!({"type": "RollingUpdate"}));
            if spec["strategy"]["type"] == "RollingUpdate" {
                set_if_absent(&mut spec["strategy"], "rollingUpdate", json!({}));
                set_if_absent(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
                set_if_absent(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxSurge",
                    json!("25%"),
                );
            }
            pod_spec(&mut spec["template"]["spec"]);
        }
        ("", "pods") => pod_spec(&mut obj["spec"]),
        ("", "services") => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                return;
            }
            set_if_absent(spec, "type", json!("ClusterIP"));
            set_if_absent(spec, "sessionAffinity", json!("None"));
            for p in spec["ports"].as_array_mut().into_iter().flatten() {
                set_if_absent(p, "protocol", json!("TCP"));
                let port = p["port"].clone();
                set_if_absent(p, "targetPort", port);
            }
        }
        ("", "secrets") => {
            set_if_absent(obj, "type", json!("Opaque"));
            // `stringData` is write-only: the API server merges it into `data`, base64-encoded,
            // and never stores or returns it.
            if let Some(Value::Object(strings)) =
                obj.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                use base64::Engine as _;
                if !obj["data"].is_object() {
                    obj["data"] = json!({});
                }
                for (key, value) in strings {
                    let text = value.as_str().unwrap_or_default();
                    obj["data"][key] =
                        json!(base64::engine::general_purpose::STANDARD.encode(text));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_data_becomes_data() {
        let rt = crate::resources::builtins()
            .into_iter()
            .find(|r| r.plural == "secrets")
            .unwrap();
        let mut secret = json!({"metadata": {"name": "s"}, "stringData": {"kubeconfig": "apiVersion: v1"}, "data": {"a": "Yg=="}});
        apply(&rt, &mut secret);
        assert!(secret.get("stringData").is_none());
        assert_eq!(secret["data"]["kubeconfig"], "YXBpVmVyc2lvbjogdjE=");
        assert_eq!(secret["data"]["a"], "Yg==");
        assert_eq!(secret["type"], "Opaque");
    }
}
