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

fn row_object(o: &Value, include: &str) -> Option<Value> {
    match include {
        "None" => None,
        "Object" => Some(o.clone()),
        _ => Some(crate::watch::partial(o)),
    }
}

/// The API server's Event table (either group): Last Seen, Type, Reason, Object, Message, with
/// Name among the `-o wide` columns. Fields are read under both groups' names.
/// One row of a Table: its cells, and the object itself as `includeObject` asks.
fn row(cells: Vec<Value>, o: &Value, include: &str) -> Value {
    let mut row = json!({"cells": cells});
    if let Some(obj) = row_object(o, include) {
        row["object"] = obj;
    }
    row
}

/// A `meta.k8s.io/v1` Table of these columns and rows.
fn table_of(defs: Vec<Value>, rows: Vec<Value>, rv: &str) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn events_table(items: &[Value], rv: &str, include: &str) -> Value {
    let def = |name: &str, priority: u8| {
        json!({"name": name, "type": "string", "format": if name == "Name" { "name" } else { "" },
            "description": name, "priority": priority})
    };
    let defs = vec![
        def("Last Seen", 0),
        def("Type", 0),
        def("Reason", 0),
        def("Object", 0),
        def("Source", 1),
        def("Message", 0),
        def("Count", 1),
        def("Name", 1),
    ];
    let either = |o: &Value, core: &str, events: &str| -> Value {
        [core, events]
            .iter()
            .map(|f| json_path(o, f))
            .find_map(|v| v.filter(|v| !v.is_null()).cloned())
            .unwrap_or(json!(""))
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let last_seen = [
                ".series.lastObservedTime",
                ".lastTimestamp",
                ".deprecatedLastTimestamp",
                ".eventTime",
                ".metadata.creationTimestamp",
            ]
            .iter()
            .find_map(|p| json_path(o, p).and_then(Value::as_str))
            .map(age)
            .unwrap_or_else(|| "<unknown>".into());
            let target = either(o, ".involvedObject", ".regarding");
            let object = format!(
                "{}/{}",
                target["kind"].as_str().unwrap_or_default().to_lowercase(),
                target["name"].as_str().unwrap_or_default()
            );
            let count = either(o, ".count", ".deprecatedCount");
            let count = json_path(o, ".series.count").cloned().unwrap_or(count);
            let cells = vec![
                json!(last_seen),
                o["type"].clone(),
                o["reason"].clone(),
                json!(object),
                either(o, ".source.component", ".reportingController"),
                either(o, ".message", ".note"),
                count,
                o["metadata"]["name"].clone(),
            ];
            row(cells, o, include)
        })
        .collect();
    table_of(defs, rows, rv)
}

/// The Table for these objects; `include` is the `includeObject` parameter.
pub fn table(rt: &ResourceType, items: &[Value], rv: &str, include: &str) -> Value {
    if rt.plural == "events" && matches!(rt.group.as_str(), "" | "events.k8s.io") {
        return events_table(items, rv, include);
    }
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
            row(cells, o, include)
        })
        .collect();
    table_of(defs, rows, rv)
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
