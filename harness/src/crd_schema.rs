//! What the API server does to a custom resource against its CRD's structural schema, in its
//! order: prune unknown fields (and `null`s of non-nullable fields), apply defaults, validate the
//! OpenAPI constraints, evaluate `x-kubernetes-validations` CEL rules. Failures are one 422
//! Invalid listing every cause.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::resources::{CrdSchema, ResourceType};
use std::collections::BTreeSet;

/// Prune, default and validate `obj`; `old` is the stored object for transition rules. With
/// `strict` (`fieldValidation=Strict`, kubectl's default) unknown fields are a 400 BadRequest
/// instead of being dropped silently.
pub fn admit(
    rt: &ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
    name: &str,
    strict: bool,
) -> Result<()> {
    let Some(schema) = &rt.schema else {
        return Ok(());
    };
    // Ratcheting (KEP-4008, GA since 1.33), for the OpenAPI schema as for CEL: a top-level
    // field an update leaves as stored is not pruned or validated again. It was when it was
    // stored, and the server would drop errors in an unchanged field anyway.
    let unchanged: Vec<String> = match (old, obj.as_object()) {
        (Some(old), Some(fields)) => fields
            .iter()
            .filter(|(k, v)| old.get(k.as_str()) == Some(*v))
            .map(|(k, _)| k.clone())
            .collect(),
        _ => Vec::new(),
    };
    let skip = |k: &str| {
        matches!(k, "apiVersion" | "kind" | "metadata") || unchanged.iter().any(|u| u == k)
    };
    let mut unknown = Vec::new();
    prune(&schema.raw, obj, Some(&skip), "", &mut unknown);
    if strict && !unknown.is_empty() {
        let list: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        return Err(Error::bad_request(format!(
            "strict decoding error: {}",
            list.join(", ")
        )));
    }
    apply_defaults(&schema.raw, obj, 0);
    let mut causes = Vec::new();
    validate(&schema.raw, obj, "", &mut causes, Some(&skip));
    if causes.is_empty() {
        for e in cel_errors(schema, obj, old) {
            let field = e.field_path.trim_start_matches('.').to_string();
            let kind = type_name(lookup(obj, &field).unwrap_or(&Value::Null));
            let shown = if field.is_empty() {
                "<nil>".to_string()
            } else {
                field.clone()
            };
            causes.push((
                field,
                "FieldValueInvalid".to_string(),
                format!("{shown}: Invalid value: \"{kind}\": {}", e.message),
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(&rt.kind, &rt.group, name, causes))
    }
}

/// The CEL rules' errors, with validation ratcheting as the API server does it: on an update,
/// a top-level field whose value did not change is not validated again (a status write does not
/// re-run the spec's rules). Rules on the root itself always see the whole object.
fn cel_errors(
    schema: &CrdSchema,
    obj: &Value,
    old: Option<&Value>,
) -> Vec<kube_cel::ValidationError> {
    let into_vec = |r: std::result::Result<(), kube_cel::ValidationErrors>| {
        r.err().map(|e| e.into_vec()).unwrap_or_default()
    };
    let compiled = &schema.compiled;
    let (Some(ruled), Some(fields)) = (&schema.ruled_fields, obj.as_object()) else {
        return VALIDATOR.with(|v| into_vec(v.validate_compiled(compiled, obj, old)));
    };
    // Field by field, and only fields with rules: the validator copies what it validates, and
    // metadata (with its managedFields) has no rules.
    let mut errors = Vec::new();
    for field in ruled {
        let (Some(child), Some(value)) = (compiled.properties.get(field), fields.get(field)) else {
            continue;
        };
        let before = old.and_then(|old| old.get(field));
        if before == Some(value) {
            continue;
        }
        let found = VALIDATOR.with(|v| into_vec(v.validate_compiled(child, value, before)));
        for mut e in found {
            // Paths below the field are relative to it.
            e.field_path = match e.field_path.as_str() {
                "" => field.clone(),
                p if p.starts_with(['.', '[']) => format!("{field}{p}"),
                p => format!("{field}.{p}"),
            };
            errors.push(e);
        }
    }
    errors
}

thread_local! {
    /// A validator registers every CEL function when built: once per thread, not per write.
    static VALIDATOR: kube_cel::Validator = kube_cel::Validator::new();
}

/// The top-level properties with CEL rules at or below them; `None` when rules on the root
/// itself (or its logical junctors, or a map of values) must see the whole object.
pub(crate) fn ruled_fields(compiled: &kube_cel::CompiledSchema) -> Option<BTreeSet<String>> {
    let root_rules = !compiled.validations.is_empty()
        || compiled.additional_properties.is_some()
        || !(compiled.all_of.is_empty()
            && compiled.one_of.is_empty()
            && compiled.any_of.is_empty());
    (!root_rules).then(|| {
        compiled
            .properties
            .iter()
            .filter(|(_, child)| has_rules(child))
            .map(|(field, _)| field.clone())
            .collect()
    })
}

/// Nesting depth below which defaults are applied, as in `kube_cel` (its validators fail closed
/// at the same depth).
const MAX_DEFAULTING_DEPTH: usize = 64;

/// Schema `default`s, in place, with `kube_cel::apply_defaults`'s rules (which copies the
/// object at every level): a missing declared property gets its default; existing children are
/// defaulted by their property schema, or else by `additionalProperties` (not with
/// `x-kubernetes-preserve-unknown-fields`); array items by `items`. Defaults themselves are not
/// defaulted further.
fn apply_defaults(schema: &Value, v: &mut Value, depth: usize) {
    if depth > MAX_DEFAULTING_DEPTH {
        return;
    }
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = if preserves(schema) {
                None
            } else {
                schema.get("additionalProperties").filter(|a| a.is_object())
            };
            if props.is_none_or(|p| p.is_empty()) && additional.is_none() {
                return;
            }
            for (key, child) in map.iter_mut() {
                if let Some(child_schema) = props.and_then(|p| p.get(key)).or(additional) {
                    apply_defaults(child_schema, child, depth + 1);
                }
            }
            for (key, prop) in props.into_iter().flatten() {
                if !map.contains_key(key)
                    && let Some(default) = prop.get("default")
                {
                    map.insert(key.clone(), default.clone());
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item_schema, item, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// Whether any CEL rule sits at or below this schema node.
fn has_rules(schema: &kube_cel::CompiledSchema) -> bool {
    !schema.validations.is_empty()
        || schema.properties.values().any(has_rules)
        || schema.items.as_deref().is_some_and(has_rules)
        || schema
            .additional_properties
            .as_deref()
            .is_some_and(has_rules)
        || [&schema.all_of, &schema.one_of, &schema.any_of]
            .into_iter()
            .flatten()
            .any(has_rules)
}

fn lookup<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in dotted.split('.').filter(|s| !s.is_empty()) {
        let (field, index) = match seg.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        cur = cur.get(field)?;
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn preserves(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == true
}

/// At the root, `skip` names the fields left alone.
type SkipAtRoot<'a> = Option<&'a dyn Fn(&str) -> bool>;

fn prune(
    schema: &Value,
    v: &mut Value,
    skip: SkipAtRoot<'_>,
    path: &str,
    unknown: &mut Vec<String>,
) {
    match v {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if skip.is_some_and(|skip| skip(&k)) {
                    continue;
                }
                let sub = props
                    .and_then(|p| p.get(&k))
                    .or(additional.is_object().then_some(additional));
                match sub {
                    Some(sub) => {
                        let child = map.get_mut(&k).expect("key listed above");
                        if child.is_null() && sub["nullable"] != true {
                            map.remove(&k);
                        } else {
                            prune(sub, child, None, &join(path, &k), unknown);
                        }
                    }
                    None if preserves(schema) || additional == &Value::Bool(true) => {}
                    None => {
                        unknown.push(join(path, &k));
                        map.remove(&k);
                    }
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                prune(
                    &schema["items"],
                    item,
                    None,
                    &format!("{path}[{i}]"),
                    unknown,
                );
            }
        }
        _ => {}
    }
}

fn num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn validate(
    schema: &Value,
    v: &Value,
    path: &str,
    causes: &mut Vec<(String, String, String)>,
    skip: SkipAtRoot<'_>,
) {
    let mut push =
        |reason: &str, msg: String| causes.push((path.to_string(), reason.to_string(), msg));
    if v.is_null() {
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    if let Some(t) = schema["type"].as_str() {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string() || (int_or_string && (v.is_i64() || v.is_u64())),
            "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => true,
        };
        if !ok {
            let actual = type_name(v);
            push(
                "FieldValueTypeInvalid",
                format!(
                    "{path}: Invalid value: \"{actual}\": {path} in body must be of type {t}: \"{actual}\""
                ),
            );
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        push(
            "FieldValueNotSupported",
            format!(
                "{path}: Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
        );
    }
    if let Some(x) = v.as_f64() {
        if let Some(min) = schema["minimum"].as_f64() {
            let exclusive = schema["exclusiveMinimum"] == true;
            if x < min || (exclusive && x == min) {
                let rel = if exclusive {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                push(
                    "FieldValueInvalid",
                    format!(
                        "{path}: Invalid value: {v}: {path} in body should be {rel} {}",
                        num(min)
                    ),
                );
            }
        }
        if let Some(max) = schema["maximum"].as_f64() {
            let exclusive = schema["exclusiveMaximum"] == true;
            if x > max || (exclusive && x == max) {
                let rel = if exclusive {
                    "less than"
                } else {
                    "less than or equal to"
                };
                push(
                    "FieldValueInvalid",
                    format!(
                        "{path}: Invalid value: {v}: {path} in body should be {rel} {}",
                        num(max)
                    ),
                );
            }
        }
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema["minLength"].as_u64()
            && len < min
        {
            push(
                "FieldValueInvalid",
                format!(
                    "{path}: Invalid value: {v}: {path} in body should be at least {min} chars long"
                ),
            );
        }
        if let Some(max) = schema["maxLength"].as_u64()
            && len > max
        {
            push(
                "FieldValueTooLong",
                format!("{path}: Too long: may not be more than {max} bytes"),
            );
        }
        if let Some(pattern) = schema["pattern"].as_str()
            && crate::validation::matches(pattern, s) == Some(false)
        {
            push(
                "FieldValueInvalid",
                format!("{path}: Invalid value: {v}: {path} in body should match '{pattern}'"),
            );
        }
    }
    match v {
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = schema["minItems"].as_u64()
                && n < min
            {
                push(
                    "FieldValueInvalid",
                    format!(
                        "{path}: Invalid value: {n}: {path} in body should have at least {min} items"
                    ),
                );
            }
            if let Some(max) = schema["maxItems"].as_u64()
                && n > max
            {
                push(
                    "FieldValueTooMany",
                    format!("{path}: Too many: {n}: must have at most {max} items"),
                );
            }
            for (i, item) in items.iter().enumerate() {
                validate(
                    &schema["items"],
                    item,
                    &format!("{path}[{i}]"),
                    causes,
                    None,
                );
            }
        }
        Value::Object(map) => {
            for req in schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if map.get(req).is_none_or(Value::is_null) {
                    let p = join(path, req);
                    causes.push((
                        p.clone(),
                        "FieldValueRequired".into(),
                        format!("{p}: Required value"),
                    ));
                }
            }
            for (k, child) in map {
                if skip.is_some_and(|skip| skip(k)) {
                    continue;
                }
                let sub = &schema["properties"][k.as_str()];
                let sub = if sub.is_null() {
                    &schema["additionalProperties"]
                } else {
                    sub
                };
                if sub.is_object() {
                    validate(sub, child, &join(path, k), causes, None);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The in-place pass gives what `kube_cel::apply_defaults` gives, on every shape it handles.
    #[test]
    fn defaults_in_place_match_kube_cel() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "replicas": {"type": "integer", "default": 1},
                        "mode": {"type": "string", "default": "auto"},
                        "nested": {
                            "type": "object",
                            "default": {},
                            "properties": {"inner": {"type": "string", "default": "x"}},
                        },
                        "items": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"weight": {"type": "integer", "default": 5}},
                            },
                        },
                        "byName": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "properties": {"on": {"type": "boolean", "default": true}},
                            },
                        },
                        "free": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "additionalProperties": {
                                "type": "object",
                                "properties": {"on": {"type": "boolean", "default": true}},
                            },
                        },
                    },
                },
            },
        });
        let objects = [
            json!({}),
            json!({"spec": {}}),
            json!({"spec": {"replicas": 3, "nested": {}}}),
            json!({"spec": {"nested": {"inner": "y"}, "items": [{}, {"weight": 2}]}}),
            json!({"spec": {"byName": {"a": {}, "b": {"on": false}}, "free": {"a": {}}}}),
            json!({"spec": {"items": "not an array", "byName": []}, "other": {"k": 1}}),
        ];
        for object in objects {
            let mut in_place = object.clone();
            apply_defaults(&schema, &mut in_place, 0);
            assert_eq!(
                in_place,
                kube_cel::apply_defaults(&schema, &object),
                "{object}"
            );
        }
    }

    #[test]
    fn only_fields_with_rules_below_them_have_rules() {
        let compiled = kube_cel::compile_schema(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "list": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "x-kubernetes-validations": [{"rule": "self.a > 0"}],
                                "properties": {"a": {"type": "integer"}},
                            },
                        },
                    },
                },
                "status": {"type": "object", "properties": {"n": {"type": "integer"}}},
            },
        }));
        assert!(has_rules(&compiled));
        assert!(has_rules(&compiled.properties["spec"]));
        assert!(!has_rules(&compiled.properties["status"]));
        assert_eq!(
            ruled_fields(&compiled),
            Some(BTreeSet::from(["spec".to_string()]))
        );
    }
}
