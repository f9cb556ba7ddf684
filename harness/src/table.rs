//! `meta.k8s.io/v1` Table responses (kubectl's default `get` output asks for them): the Name
//! column, a CRD's `additionalPrinterColumns` (simple JSONPath: fields, `[n]`, `[?(@.k=="v")]`),
//! or a few columns for built-in kinds, and Age.

use serde_json::{Value, json};

use crate::resources::ResourceType;

fn age(ts: &str) -> String {
    let Ok(t) = ts.parse::<k8s_openapi::jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let s = (k8s_openapi::jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 2 * 365 * 86400 => format!("{}d", s / 86400),
        s => format!("{}y", s / (365 * 86400)),
    }
}

/// Evaluate the JSONPath subset used by printer columns.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let mut rest = path.trim().trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("[?(@.") {
            let end = r.find(")]")?;
            let (field, want) = r[..end].split_once("==")?;
            let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
            cur = cur
                .as_array()?
                .iter()
                .find(|i| i.get(field.trim()).and_then(Value::as_str) == Some(want))?;
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            cur = cur.get(r[..end].parse::<usize>().ok()?)?;
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(cur)
}

fn cell(v: Option<&Value>, ty: &str) -> Value {
    match (v, ty) {
        (None | Some(Value::Null), _) => json!("<none>"),
        (Some(Value::String(s)), "date") => json!(age(s)),
        (Some(v), _) => v.clone(),
    }
}

fn columns(rt: &ResourceType) -> Vec<(String, String, String)> {
    if !rt.printer_columns.is_empty() {
        return rt
            .printer_columns
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["type"].as_str().unwrap_or("string").to_string(),
                    c["jsonPath"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
    }
    let col = |n: &str, t: &str, p: &str| (n.to_string(), t.to_string(), p.to_string());
    let mut cols = match (rt.group.as_str(), rt.plural.as_str()) {
        ("apps", "deployments") => vec![
            col("Ready", "string", "READY"),
            col("Up-to-date", "integer", ".status.updatedReplicas"),
            col("Available", "integer", ".status.availableReplicas"),
        ],
        ("", "pods") => vec![
            col("Status", "string", ".status.phase"),
            col("Node", "string", ".spec.nodeName"),
        ],
        ("", "nodes") => vec![col(
            "Status",
            "string",
            ".status.conditions[?(@.type==\"Ready\")].status",
        )],
        ("", "namespaces") => vec![col("Status", "string", ".status.phase")],
        _ => vec![],
    };
    cols.push(col("Age", "date", ".metadata.creationTimestamp"));
    cols
}

/// The Table for these objects; `include` is the `includeObject` parameter.
pub fn table(rt: &ResourceType, items: &[Value], rv: &str, include: &str) -> Value {
    let cols = columns(rt);
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}),
    ];
    for (name, ty, _) in &cols {
        defs.push(
            json!({"name": name, "type": ty, "format": "", "description": name, "priority": 0}),
        );
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            for (_, ty, path) in &cols {
                if path == "READY" {
                    let ready = o["status"]["readyReplicas"].as_i64().unwrap_or(0);
                    let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
                    cells.push(json!(format!("{ready}/{want}")));
                } else {
                    cells.push(cell(json_path(o, path), ty));
                }
            }
            let mut row = json!({"cells": cells});
            match include {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => row["object"] = crate::watch::partial(o),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_subset() {
        let o = json!({"status": {"conditions": [{"type": "A", "status": "x"}, {"type": "Ready", "status": "True"}]},
            "spec": {"list": [1, 2]}});
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(json_path(&o, ".spec.list[1]"), Some(&json!(2)));
        assert_eq!(json_path(&o, ".spec.missing"), None);
    }
}
