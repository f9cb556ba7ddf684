//! Field ownership (`metadata.managedFields`, `FieldsV1`) and server-side apply.
//!
//! A field set is the set of leaf paths a manager owns, plus the list items of keyed lists it
//! owns (the `k:{...}` nodes, which the API server marks with `"."`). Non-apply writes give the
//! writing manager the fields they change (operation `Update`) and take them from everyone else;
//! apply (operation `Apply`) owns exactly the fields of the applied configuration, conflicts with
//! other managers owning a field it sets to a different value, and removes fields it stopped
//! applying unless someone else still owns them.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::patch::{ListType, list_type};
use crate::resources::ResourceType;

/// One step of a field path, in the `FieldsV1` encoding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// `f:<name>`: a map field.
    Field(String),
    /// `k:{...}`: an item of a keyed list, by its key fields (canonical JSON).
    Key(String),
    /// `v:<json>`: an item of a set list.
    Value(String),
    /// `i:<n>`: a positional item (only read, never produced).
    Index(usize),
}

/// A path from the object root.
pub type FieldPath = Vec<Step>;
/// The fields a manager owns.
pub type FieldSet = BTreeSet<FieldPath>;

/// Which part of the object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource (everything but `.status` when there is a status subresource).
    Main,
    /// The `/status` subresource.
    Status,
}

impl Scope {
    fn subresource(self) -> &'static str {
        match self {
            Scope::Main => "",
            Scope::Status => "status",
        }
    }
}

impl Step {
    fn encode(&self) -> String {
        match self {
            Step::Field(n) => format!("f:{n}"),
            Step::Key(k) => format!("k:{k}"),
            Step::Value(v) => format!("v:{v}"),
            Step::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<Step> {
        let (tag, rest) = s.split_at_checked(2)?;
        Some(match tag {
            "f:" => Step::Field(rest.to_string()),
            "k:" => Step::Key(canonical(&serde_json::from_str(rest).ok()?)),
            "v:" => Step::Value(canonical(&serde_json::from_str(rest).ok()?)),
            "i:" => Step::Index(rest.parse().ok()?),
            _ => return None,
        })
    }

    fn display(&self) -> String {
        match self {
            Step::Field(n) => format!(".{n}"),
            Step::Key(k) => {
                let v: Value = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!("[{}]", parts.join(","))
            }
            Step::Value(v) => format!("[={v}]"),
            Step::Index(i) => format!("[{i}]"),
        }
    }
}

/// `.spec.containers[name="a"].image`, as conflict messages show paths.
pub fn display_path(path: &FieldPath) -> String {
    path.iter().map(Step::display).collect()
}

/// JSON with sorted keys (serde_json maps are sorted), so equal keys encode equally.
fn canonical(v: &Value) -> String {
    v.to_string()
}

fn names(path: &FieldPath) -> Vec<String> {
    path.iter()
        .filter_map(|s| match s {
            Step::Field(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn key_of(item: &Value, keys: &[String]) -> Option<String> {
    let obj = item.as_object()?;
    let mut m = Map::new();
    for k in keys {
        m.insert(k.clone(), obj.get(k)?.clone());
    }
    Some(canonical(&Value::Object(m)))
}

/// The field set an object (or apply configuration) sets in the given scope.
pub fn field_set(rt: &ResourceType, obj: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        let path = vec![Step::Field(k.clone())];
        match (scope, k.as_str()) {
            (Scope::Status, "status") => walk(rt, v, path, &mut out),
            (Scope::Status, _) => {}
            (Scope::Main, "apiVersion" | "kind") => {}
            (Scope::Main, "status") if rt.status_subresource => {}
            (Scope::Main, "metadata") => {
                for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(fv) = v.get(field) {
                        let mut p = path.clone();
                        p.push(Step::Field(field.into()));
                        walk(rt, fv, p, &mut out);
                    }
                }
            }
            _ => walk(rt, v, path, &mut out),
        }
    }
    out
}

fn walk(rt: &ResourceType, v: &Value, path: FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                let mut p = path.clone();
                p.push(Step::Field(k.clone()));
                walk(rt, c, p, out);
            }
        }
        Value::Array(a) if !a.is_empty() => match list_type(rt, &names(&path)) {
            ListType::Map(keys) if a.iter().all(|i| key_of(i, &keys).is_some()) => {
                for item in a {
                    let mut p = path.clone();
                    p.push(Step::Key(key_of(item, &keys).expect("checked above")));
                    out.insert(p.clone());
                    walk(rt, item, p, out);
                }
            }
            ListType::Set => {
                for item in a {
                    let mut p = path.clone();
                    p.push(Step::Value(canonical(item)));
                    out.insert(p);
                }
            }
            _ => {
                out.insert(path);
            }
        },
        _ => {
            out.insert(path);
        }
    }
}

fn find_item(list: &[Value], step: &Step) -> Option<usize> {
    match step {
        Step::Key(k) => {
            let key: Value = serde_json::from_str(k).ok()?;
            let key = key.as_object()?;
            list.iter()
                .position(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))
        }
        Step::Value(v) => list.iter().position(|item| canonical(item) == *v),
        Step::Index(i) => (*i < list.len()).then_some(*i),
        Step::Field(_) => None,
    }
}

/// The value at a path, if present.
pub fn value_at<'a>(obj: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    let mut cur = obj;
    for step in path {
        cur = match step {
            Step::Field(n) => cur.get(n)?,
            other => {
                let list = cur.as_array()?;
                &list[find_item(list, other)?]
            }
        };
    }
    Some(cur)
}

fn remove_at(obj: &mut Value, path: &FieldPath) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for step in parent_path {
        let next = match step {
            Step::Field(n) => cur.get_mut(n),
            other => match cur.as_array_mut() {
                Some(list) => match find_item(list, other) {
                    Some(i) => list.get_mut(i),
                    None => None,
                },
                None => None,
            },
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Step::Field(n) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(n);
            }
        }
        other => {
            if let Some(list) = cur.as_array_mut()
                && let Some(i) = find_item(list, other)
            {
                list.remove(i);
            }
        }
    }
}

/// Encode a field set as `FieldsV1`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for step in path {
            node = node
                .entry(step.encode())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
        if matches!(path.last(), Some(Step::Key(_))) {
            node.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

/// Decode `FieldsV1`.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn rec(node: &Value, path: &FieldPath, out: &mut FieldSet) {
        for (k, child) in node.as_object().into_iter().flatten() {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            let Some(step) = Step::decode(k) else {
                continue;
            };
            let mut p = path.clone();
            p.push(step);
            if child.as_object().is_none_or(Map::is_empty) {
                out.insert(p);
            } else {
                rec(child, &p, out);
            }
        }
    }
    let mut out = FieldSet::new();
    rec(v, &Vec::new(), &mut out);
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    time: String,
    fields: FieldSet,
    /// The entry as stored, while nothing about it changed: written back as is, without
    /// serializing its fields again (most writes change one manager's entry, not all).
    stored: Option<Value>,
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(Entry {
                manager: e["manager"].as_str()?.to_string(),
                operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                subresource: e["subresource"].as_str().unwrap_or_default().to_string(),
                api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                time: e["time"].as_str().unwrap_or_default().to_string(),
                fields: from_fields_v1(&e["fieldsV1"]),
                stored: Some(e.clone()),
            })
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            if let Some(stored) = e.stored {
                return stored;
            }
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn entry_mut<'a>(
    entries: &'a mut Vec<Entry>,
    manager: &str,
    operation: &str,
    scope: Scope,
    api_version: &str,
) -> &'a mut Entry {
    let pos = entries.iter().position(|e| {
        e.manager == manager && e.operation == operation && e.subresource == scope.subresource()
    });
    let i = match pos {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.into(),
                operation: operation.into(),
                subresource: scope.subresource().into(),
                api_version: api_version.into(),
                time: String::new(),
                fields: FieldSet::new(),
                stored: None,
            });
            entries.len() - 1
        }
    };
    // Every caller changes the entry it asked for.
    entries[i].stored = None;
    &mut entries[i]
}

/// Record a non-apply write (create, update, patch) by `manager`: it gains the fields it changed,
/// everyone loses the fields changed or removed. A write that edits `managedFields` itself
/// replaces the entries (an empty list entry `[{}]` resets them), as on the real server.
pub fn track_update(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    scope: Scope,
    now: &str,
) {
    let old_mf = old.map_or(&Value::Null, |o| &o["metadata"]["managedFields"]);
    let new_mf = &new["metadata"]["managedFields"];
    let mut entries = if !new_mf.is_null() && new_mf != old_mf {
        read_entries(new)
    } else {
        old.map(read_entries).unwrap_or_default()
    };
    let new_set = field_set(rt, new, scope);
    let old_set = old.map(|o| field_set(rt, o, scope)).unwrap_or_default();
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| match p.last() {
            Some(Step::Key(_)) => old.and_then(|o| value_at(o, p)).is_none(),
            _ => old.and_then(|o| value_at(o, p)) != value_at(new, p),
        })
        .cloned()
        .collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    for e in entries.iter_mut() {
        let before = e.fields.len();
        e.fields
            .retain(|p| !changed.contains(p) && !removed.contains(p));
        if e.fields.len() != before {
            e.stored = None;
        }
    }
    if !changed.is_empty() {
        let api_version = rt.api_version();
        let e = entry_mut(&mut entries, manager, "Update", scope, &api_version);
        e.fields.extend(changed);
        e.time = now.to_string();
        e.api_version = api_version;
    }
    write_entries(new, entries);
}

fn merge_apply(rt: &ResourceType, live: &mut Value, cfg: &Value, path: &mut Vec<String>) {
    let (Some(lm), Some(cm)) = (live.as_object_mut(), cfg.as_object()) else {
        *live = cfg.clone();
        return;
    };
    for (k, cv) in cm {
        if cv.is_null() {
            lm.remove(k);
            continue;
        }
        path.push(k.clone());
        match lm.get_mut(k) {
            None => {
                lm.insert(k.clone(), cv.clone());
            }
            Some(lv) => {
                let lt = list_type(rt, path);
                match (&lt, lv.is_array(), cv.as_array()) {
                    (ListType::Map(keys), true, Some(citems)) => {
                        let items = lv.as_array_mut().expect("checked");
                        for ci in citems {
                            let key = key_of(ci, keys);
                            match items
                                .iter()
                                .position(|li| key.is_some() && key_of(li, keys) == key)
                            {
                                Some(i) => merge_apply(rt, &mut items[i], ci, path),
                                None => items.push(ci.clone()),
                            }
                        }
                    }
                    (ListType::Set, true, Some(citems)) => {
                        let items = lv.as_array_mut().expect("checked");
                        for ci in citems {
                            if !items.contains(ci) {
                                items.push(ci.clone());
                            }
                        }
                    }
                    _ if lv.is_object() && cv.is_object() => merge_apply(rt, lv, cv, path),
                    _ => *lv = cv.clone(),
                }
            }
        }
        path.pop();
    }
}

/// The part of an apply configuration that a scope may change.
fn scoped_config(rt: &ResourceType, cfg: &Value, scope: Scope) -> Value {
    let mut out = Map::new();
    for (k, v) in cfg.as_object().into_iter().flatten() {
        let keep = match (scope, k.as_str()) {
            (Scope::Status, "status") => true,
            (Scope::Status, _) => false,
            (Scope::Main, "status") => !rt.status_subresource,
            (Scope::Main, "metadata") => {
                let mut m = Map::new();
                for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(fv) = v.get(f) {
                        m.insert(f.into(), fv.clone());
                    }
                }
                out.insert(k.clone(), Value::Object(m));
                false
            }
            _ => true,
        };
        if keep {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// Server-side apply of `cfg` by `manager` onto `live` (or a new object).
#[allow(clippy::too_many_arguments)]
pub fn apply(
    rt: &ResourceType,
    live: Option<&Value>,
    cfg: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    name: &str,
    now: &str,
) -> Result<Value> {
    let api_version = rt.api_version();
    let mut obj = match live {
        Some(l) => l.clone(),
        None => json!({"apiVersion": api_version, "kind": rt.kind, "metadata": {
            "name": cfg["metadata"]["name"], "namespace": cfg["metadata"]["namespace"]}}),
    };
    let cfg = scoped_config(rt, cfg, scope);
    let cfg_set = field_set(rt, &cfg, scope);
    let mut entries = live.map(read_entries).unwrap_or_default();
    let is_me = |e: &Entry| {
        e.manager == manager && e.operation == "Apply" && e.subresource == scope.subresource()
    };

    // Conflicts: another manager owns a field this configuration sets to a different value.
    let mut conflicts: Vec<(usize, FieldPath)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if is_me(e) {
            continue;
        }
        for p in cfg_set.intersection(&e.fields) {
            if matches!(p.last(), Some(Step::Key(_))) {
                continue;
            }
            if value_at(&obj, p) != value_at(&cfg, p) {
                conflicts.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflict_error(rt, name, &entries, &conflicts));
        }
        for (i, p) in &conflicts {
            entries[*i].fields.remove(p);
            entries[*i].stored = None;
        }
    }

    // Fields this manager applied before but no longer does, and nobody else owns, go away.
    let previous = entries
        .iter()
        .find(|e| is_me(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !is_me(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut to_remove: Vec<&FieldPath> = previous
        .iter()
        .filter(|p| !cfg_set.contains(*p) && !others.contains(*p))
        .collect();
    to_remove.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in to_remove {
        remove_at(&mut obj, p);
        // A struct whose last owned field went away goes too, as on the real server; one that
        // another manager or this config still names stays.
        for depth in (1..p.len()).rev() {
            let parent: FieldPath = p[..depth].to_vec();
            let empty =
                value_at(&obj, &parent).is_some_and(|v| v.as_object().is_some_and(Map::is_empty));
            if !empty || cfg_set.contains(&parent) || others.contains(&parent) {
                break;
            }
            remove_at(&mut obj, &parent);
        }
    }

    merge_apply(rt, &mut obj, &cfg, &mut Vec::new());
    let e = entry_mut(&mut entries, manager, "Apply", scope, &api_version);
    e.fields = cfg_set;
    e.time = now.to_string();
    e.api_version = api_version;
    write_entries(&mut obj, entries);
    Ok(obj)
}

fn conflict_error(
    rt: &ResourceType,
    name: &str,
    entries: &[Entry],
    conflicts: &[(usize, FieldPath)],
) -> Error {
    let n = conflicts.len();
    let mut by_manager: Vec<(usize, Vec<String>)> = Vec::new();
    for (i, p) in conflicts {
        match by_manager.iter_mut().find(|(m, _)| m == i) {
            Some((_, ps)) => ps.push(display_path(p)),
            None => by_manager.push((*i, vec![display_path(p)])),
        }
    }
    let mut message = format!(
        "Apply failed with {n} conflict{}: ",
        if n == 1 { "" } else { "s" }
    );
    let mut causes = Vec::new();
    let parts: Vec<String> = by_manager
        .iter()
        .map(|(i, paths)| {
            let e = &entries[*i];
            let who = format!("conflict with \"{}\" using {}", e.manager, e.api_version);
            for p in paths {
                causes.push(json!({"reason": "FieldManagerConflict", "message": who, "field": p}));
            }
            if paths.len() == 1 && n == 1 {
                format!("{who}: {}", paths[0])
            } else {
                format!(
                    "{}s with \"{}\" using {}:\n- {}",
                    "conflict",
                    e.manager,
                    e.api_version,
                    paths.join("\n- ")
                )
            }
        })
        .collect();
    message.push_str(&parts.join("\n"));
    Error::conflict_with(&rt.group, &rt.plural, name, message, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployments() -> ResourceType {
        crate::resources::builtins()
            .into_iter()
            .find(|r| r.plural == "deployments")
            .unwrap()
    }

    #[test]
    fn fields_v1_round_trip_with_keyed_lists() {
        let rt = deployments();
        let obj = json!({"metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"replicas": 2,
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let set = field_set(&rt, &obj, Scope::Main);
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                    ".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }
}
