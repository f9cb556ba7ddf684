//! Validation of built-in object metadata and the Deployment fields the operator writes, with the
//! API server's messages: bad names, labels or selectors are 422 Invalid, as on a real cluster,
//! so an operator bug shows up in tests instead of in production.

use regex::Regex;
use serde_json::Value;

use crate::resources::ResourceType;

type Causes = Vec<(String, String, String)>;

const DNS1123_LABEL: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const LABEL_VALUE: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const QUALIFIED_NAME: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

fn full(re: &str, s: &str) -> bool {
    matches(&format!("^(?:{re})$"), s).unwrap_or(false)
}

/// Whether `s` matches `pattern`, with every pattern compiled once per process: validation runs
/// on every write, and compiling a regex costs far more than matching it. An invalid pattern
/// gives `None`.
pub fn matches(pattern: &str, s: &str) -> Option<bool> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static COMPILED: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let mut compiled = COMPILED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let re = compiled
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).ok());
    re.as_ref().map(|re| re.is_match(s))
}

fn invalid(causes: &mut Causes, field: &str, value: &str, detail: String) {
    causes.push((
        field.to_string(),
        "FieldValueInvalid".to_string(),
        format!("{field}: Invalid value: \"{value}\": {detail}"),
    ));
}

fn check_name(rt: &ResourceType, name: &str, causes: &mut Causes) {
    // Namespaces and Services need DNS labels; everything else (custom resources too) DNS
    // subdomains. Nodes also accept subdomains.
    let label_only = rt.group.is_empty() && matches!(rt.plural.as_str(), "namespaces" | "services");
    if label_only {
        if name.len() > 63 || !full(DNS1123_LABEL, name) {
            invalid(
                causes,
                "metadata.name",
                name,
                format!(
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{DNS1123_LABEL}')"
                ),
            );
        }
    } else if name.len() > 253 || !full(DNS1123_SUBDOMAIN, name) {
        invalid(
            causes,
            "metadata.name",
            name,
            format!(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{DNS1123_SUBDOMAIN}')"
            ),
        );
    }
}

fn check_label_key(field: &str, key: &str, causes: &mut Causes) {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.len() > 253 || !full(DNS1123_SUBDOMAIN, p))
    {
        invalid(causes, field, key, "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into());
    }
    if name.is_empty() || name.len() > 63 || !full(QUALIFIED_NAME, name) {
        invalid(
            causes,
            field,
            key,
            format!(
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_NAME}')"
            ),
        );
    }
}

fn check_labels(field: &str, labels: &Value, causes: &mut Causes) {
    for (k, v) in labels.as_object().into_iter().flatten() {
        check_label_key(field, k, causes);
        let v = v.as_str().unwrap_or_default();
        if v.len() > 63 || !full(LABEL_VALUE, v) {
            invalid(
                causes,
                field,
                v,
                format!(
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '{LABEL_VALUE}')"
                ),
            );
        }
    }
}

fn check_deployment(obj: &Value, old: Option<&Value>, causes: &mut Causes) {
    let spec = &obj["spec"];
    let selector = &spec["selector"];
    let match_labels = selector["matchLabels"].as_object();
    if match_labels.is_none_or(|m| m.is_empty())
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(Vec::is_empty)
    {
        causes.push((
            "spec.selector".into(),
            "FieldValueRequired".into(),
            "spec.selector: Required value".into(),
        ));
    } else if let Some(m) = match_labels {
        let template_labels = &spec["template"]["metadata"]["labels"];
        if m.iter().any(|(k, v)| template_labels.get(k) != Some(v)) {
            let shown = template_labels
                .as_object()
                .map(|l| {
                    l.iter()
                        .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            invalid(
                causes,
                "spec.template.metadata.labels",
                &format!("map[{shown}]"),
                "`selector` does not match template `labels`".into(),
            );
        }
    }
    if let Some(old) = old
        && old["spec"]["selector"] != *selector
    {
        invalid(
            causes,
            "spec.selector",
            &selector.to_string(),
            "field is immutable".into(),
        );
    }
    if let Some(r) = spec["replicas"].as_i64()
        && r < 0
    {
        invalid(
            causes,
            "spec.replicas",
            &r.to_string(),
            "must be greater than or equal to 0".into(),
        );
    }
    check_labels(
        "spec.template.metadata.labels",
        &spec["template"]["metadata"]["labels"],
        causes,
    );
    let containers = spec["template"]["spec"]["containers"].as_array();
    if containers.is_none_or(Vec::is_empty) {
        causes.push((
            "spec.template.spec.containers".into(),
            "FieldValueRequired".into(),
            "spec.template.spec.containers: Required value".into(),
        ));
    }
    for (i, c) in containers.into_iter().flatten().enumerate() {
        for field in ["name", "image"] {
            if c[field].as_str().is_none_or(str::is_empty) {
                let f = format!("spec.template.spec.containers[{i}].{field}");
                causes.push((
                    f.clone(),
                    "FieldValueRequired".into(),
                    format!("{f}: Required value"),
                ));
            }
        }
    }
}

/// Causes of a 422 for this write of a built-in or custom object (empty: valid).
pub fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>, name: &str) -> Causes {
    let mut causes = Vec::new();
    if old.is_none() {
        check_name(rt, name, &mut causes);
    }
    check_labels("metadata.labels", &obj["metadata"]["labels"], &mut causes);
    if rt.group == "apps" && rt.plural == "deployments" {
        check_deployment(obj, old, &mut causes);
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        let rt = crate::resources::builtins()
            .into_iter()
            .find(|r| r.plural == "configmaps")
            .unwrap();
        let ns = crate::resources::builtins()
            .into_iter()
            .find(|r| r.plural == "namespaces")
            .unwrap();
        let obj = |labels: Value| serde_json::json!({"metadata": {"labels": labels}});
        assert!(
            validate(
                &rt,
                &obj(serde_json::json!({"app.kubernetes.io/name": "x_1.y"})),
                None,
                "a.b-c"
            )
            .is_empty()
        );
        assert_eq!(validate(&rt, &obj(Value::Null), None, "Upper").len(), 1);
        assert_eq!(validate(&ns, &obj(Value::Null), None, "a.b").len(), 1);
        assert_eq!(
            validate(&rt, &obj(serde_json::json!({"k": "s3://x"})), None, "ok").len(),
            1
        );
        assert_eq!(
            validate(&rt, &obj(serde_json::json!({"bad key": "v"})), None, "ok").len(),
            1
        );
    }
}
