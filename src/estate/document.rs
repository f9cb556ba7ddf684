//! Turning YAML text into typed objects, with errors that name the document, object and field.
// Parse errors are rare and carry the context a person needs; their size is not on a hot path.
#![allow(clippy::result_large_err)]

use crate::api::{BurstPolicy, ComputePool, GROUP, ModelDeployment, VERSION};
use kube::{CustomResourceExt, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::OnceLock;

/// A Skybridge object, typed.
#[derive(Clone, Debug)]
pub enum Object {
    Pool(Box<ComputePool>),
    Policy(Box<BurstPolicy>),
    Deployment(Box<ModelDeployment>),
}

/// Names an object in messages: `ModelDeployment shop/ranker`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

impl ObjectRef {
    pub fn of<K: Resource<DynamicType = ()>>(object: &K) -> Self {
        Self {
            kind: K::kind(&()).into_owned(),
            namespace: object.meta().namespace.clone(),
            name: object.meta().name.clone().unwrap_or_default(),
        }
    }
}

/// What is wrong with one document.
#[derive(Clone, Debug, PartialEq)]
pub struct DocumentError {
    /// 1-based line in the file where the problem is, when known.
    pub line: Option<usize>,
    pub object: Option<ObjectRef>,
    /// Dotted path of the field, when known.
    pub field: Option<String>,
    pub message: String,
}

/// Parses every YAML document of `text`. Empty documents are skipped; each document either gives
/// an object or an error, so one bad document does not hide the others.
pub fn parse_documents(text: &str) -> Vec<Result<Object, DocumentError>> {
    split_documents(text)
        .into_iter()
        .filter_map(|(first_line, chunk)| parse_one(first_line, &chunk))
        .collect()
}

/// Splits a YAML stream on `---` lines, keeping each document's first line number.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut first_line = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            documents.push((first_line, std::mem::take(&mut current)));
            first_line = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    documents.push((first_line, current));
    documents
}

fn parse_one(first_line: usize, chunk: &str) -> Option<Result<Object, DocumentError>> {
    let value: serde_yaml_ng::Value = match serde_yaml_ng::from_str(chunk) {
        Ok(v) => v,
        Err(err) => {
            return Some(Err(DocumentError {
                line: Some(
                    err.location()
                        .map_or(first_line, |l| first_line + l.line() - 1),
                ),
                object: None,
                field: None,
                message: format!("YAML syntax: {err}"),
            }));
        }
    };
    if value.is_null() {
        return None;
    }
    let json: serde_json::Value = match serde_json::to_value(&value) {
        Ok(v) => v,
        Err(err) => {
            return Some(Err(at(
                first_line,
                None,
                None,
                format!("not representable as JSON: {err}"),
            )));
        }
    };
    if is_other_kubernetes_object(&json) {
        return None;
    }
    Some(parse_object(first_line, json))
}

/// An object of another API group than Skybridge's (e.g. the Namespaces that a directory needs
/// for `kubectl apply -f DIR`): not part of the estate, so skipped rather than refused. A
/// Skybridge kind with a wrong apiVersion, or an unknown kind in Skybridge's group, is still an
/// error.
fn is_other_kubernetes_object(json: &serde_json::Value) -> bool {
    let text = |key: &str| json.get(key).and_then(|v| v.as_str()).unwrap_or_default();
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    !api_version.is_empty()
        && !kind.is_empty()
        && !api_version.starts_with(&format!("{GROUP}/"))
        && !matches!(kind, "ComputePool" | "BurstPolicy" | "ModelDeployment")
}

fn at(
    line: usize,
    object: Option<ObjectRef>,
    field: Option<String>,
    message: String,
) -> DocumentError {
    DocumentError {
        line: Some(line),
        object,
        field,
        message,
    }
}

fn parse_object(line: usize, json: serde_json::Value) -> Result<Object, DocumentError> {
    let text = |key: &str| {
        json.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let kind = text("kind");
    let api_version = text("apiVersion");
    let name = json
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let namespace = json
        .pointer("/metadata/namespace")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let object = ObjectRef {
        kind: if kind.is_empty() {
            "<no kind>".into()
        } else {
            kind.clone()
        },
        namespace,
        name: name.clone(),
    };
    let fail = |field: Option<&str>, message: String| {
        at(
            line,
            Some(object.clone()),
            field.map(str::to_string),
            message,
        )
    };

    let expected_api = format!("{GROUP}/{VERSION}");
    if !json.is_object() {
        return Err(fail(
            None,
            "a document must be a mapping with apiVersion, kind and metadata".into(),
        ));
    }
    if kind.is_empty() {
        return Err(fail(Some("kind"), "missing kind".into()));
    }
    if !matches!(
        kind.as_str(),
        "ComputePool" | "BurstPolicy" | "ModelDeployment"
    ) {
        return Err(fail(
            Some("kind"),
            format!("unknown kind {kind:?} (expected ComputePool, BurstPolicy or ModelDeployment)"),
        ));
    }
    if api_version != expected_api {
        return Err(fail(
            Some("apiVersion"),
            format!("apiVersion is {api_version:?}, expected {expected_api:?}"),
        ));
    }
    if name.is_empty() {
        return Err(fail(Some("metadata.name"), "missing metadata.name".into()));
    }
    let parsed = match kind.as_str() {
        "ComputePool" => typed::<ComputePool>(&json, schema_of::<ComputePool>(&POOL_SCHEMA))
            .map(|o| Object::Pool(Box::new(o))),
        "BurstPolicy" => typed::<BurstPolicy>(&json, schema_of::<BurstPolicy>(&POLICY_SCHEMA))
            .map(|o| Object::Policy(Box::new(o))),
        _ => typed::<ModelDeployment>(&json, schema_of::<ModelDeployment>(&DEPLOYMENT_SCHEMA)).map(
            |mut o| {
                if o.namespace().is_none() {
                    o.metadata.namespace = Some("default".into());
                }
                Object::Deployment(Box::new(o))
            },
        ),
    };
    parsed.map_err(|(field, message)| fail(field.as_deref(), message))
}

static POOL_SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
static POLICY_SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
static DEPLOYMENT_SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();

/// The CRD's OpenAPI schema as a JSON-Schema validator: the same bounds, patterns and required
/// fields the API server enforces at `kubectl apply`.
fn schema_of<K: CustomResourceExt>(
    cell: &'static OnceLock<jsonschema::Validator>,
) -> &'static jsonschema::Validator {
    cell.get_or_init(|| {
        let crd = K::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("derived CRDs carry a schema");
        let mut schema = serde_json::to_value(schema).expect("schema serialises");
        strip_nullable(&mut schema);
        jsonschema::options()
            .should_validate_formats(false)
            .build(&schema)
            .expect("derived CRD schemas are valid JSON Schema")
    })
}

/// OpenAPI's `nullable: true` has no JSON-Schema meaning; the derived schemas mark every
/// `Option` so, and nulls are removed from objects before the check, as the API server prunes them.
fn strip_nullable(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(map) => {
            map.remove("nullable");
            map.values_mut().for_each(strip_nullable);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nullable),
        _ => {}
    }
}

fn remove_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(remove_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(remove_nulls),
        _ => {}
    }
}

/// Schema check, then typed deserialisation that rejects unknown fields, then the CEL rules.
fn typed<K>(
    json: &serde_json::Value,
    schema: &jsonschema::Validator,
) -> Result<K, (Option<String>, String)>
where
    K: DeserializeOwned + CelValidated,
{
    let mut json = json.clone();
    remove_nulls(&mut json);
    if let Some(err) = schema.iter_errors(&json).next() {
        let field = pointer_to_path(&err.instance_path().to_string());
        return Err((field, err.to_string()));
    }
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(&json, &mut track);
    let parsed: Result<K, _> = serde_ignored::deserialize(deserializer, |path| {
        // serde_ignored writes `a.0.b`; messages use `a[0].b` like the schema errors.
        let pointer = format!("/{}", path.to_string().replace('.', "/"));
        unknown.push(pointer_to_path(&pointer).unwrap_or_default())
    });
    let object = parsed.map_err(|err| {
        let path = track.path().to_string();
        (Some(path).filter(|p| p != "."), err.to_string())
    })?;
    // `apiVersion` and `kind` were checked above; metadata belongs to the API server.
    let ours = |f: &String| !(f == "apiVersion" || f == "kind" || f.starts_with("metadata."));
    if let Some(field) = unknown.into_iter().find(ours) {
        return Err((Some(field.clone()), format!("unknown field {field:?}")));
    }
    object.check_cel().map_err(|message| (None, message))?;
    Ok(object)
}

/// The CEL rules of a kind, evaluated client-side as the API server would.
pub trait CelValidated {
    fn check_cel(&self) -> Result<(), String>;
}

macro_rules! cel_validated {
    ($($kind:ty),*) => {$(
        impl CelValidated for $kind {
            fn check_cel(&self) -> Result<(), String> {
                self.validate_cel().map_err(|errors| format!("CEL rule failed: {errors}"))
            }
        }
    )*};
}
cel_validated!(ComputePool, BurstPolicy, ModelDeployment);

/// `/spec/components/1/name` -> `spec.components[1].name`.
fn pointer_to_path(pointer: &str) -> Option<String> {
    let mut path = String::new();
    for part in pointer.split('/').skip(1) {
        if !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()) {
            path.push_str(&format!("[{part}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&part.replace("~1", "/").replace("~0", "~"));
        }
    }
    (!path.is_empty()).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_line_numbers() {
        let docs = split_documents("a: 1\n---\nb: 2\nc: 3\n---\n");
        assert_eq!(docs[0].0, 1);
        assert_eq!(docs[1].0, 3);
        assert_eq!(docs[1].1, "b: 2\nc: 3\n");
    }

    #[test]
    fn other_kubernetes_objects_are_skipped_but_skybridge_mistakes_are_not() {
        let parsed = parse_documents(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: recsys}\n---\n\
             apiVersion: skybridge.io/v1alpha1\nkind: GpuPool\nmetadata: {name: x}\n---\n\
             apiVersion: v1\nkind: ComputePool\nmetadata: {name: y}\n---\n\
             kind: Namespace\nmetadata: {name: no-api-version}\n",
        );
        let errors: Vec<String> = parsed
            .into_iter()
            .map(|r| match r {
                Err(e) => e.message,
                Ok(_) => panic!("no estate object here"),
            })
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("unknown kind \"GpuPool\""), "{errors:?}");
        assert!(errors[1].contains("apiVersion is \"v1\""), "{errors:?}");
        assert!(
            errors[2].contains("unknown kind \"Namespace\""),
            "{errors:?}"
        );
    }

    #[test]
    fn pointers_become_dotted_paths() {
        assert_eq!(
            pointer_to_path("/spec/components/1/name").as_deref(),
            Some("spec.components[1].name")
        );
        assert_eq!(pointer_to_path(""), None);
    }
}
