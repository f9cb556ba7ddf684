//! Turning YAML text into typed objects, with errors that name the document, object and field.
// Parse errors are rare and carry the context a person needs; their size is not on a hot path.
#![allow(clippy::result_large_err)]

use crate::api::{BurstPolicy, ComputePool, GROUP, ModelDeployment, VERSION, quantity};
use kube::{CustomResourceExt, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

/// Deepest YAML nesting (block indentation levels, sequence dashes and flow brackets together)
/// accepted by default. Skybridge objects nest about eight levels; the cap is checked by a linear
/// scan before the YAML parser runs, whose cost grows faster than linearly with depth.
pub const DEFAULT_MAX_YAML_DEPTH: usize = 32;

/// `text` with every control character (C0, DEL, C1) and bidirectional-override character
/// escaped as `\u{..}`, so that a file name, path, object name or value read from input cannot
/// drive the terminal a message is printed to. Printable text comes back unchanged (borrowed), so
/// escaping twice is harmless. Every message the command line prints goes through this.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

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
        let (kind, name) = (printable(&self.kind), printable(&self.name));
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {}/{name}", printable(ns)),
            None => write!(f, "{kind} {name}"),
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

/// Parses every YAML document of `text`, nesting at most `DEFAULT_MAX_YAML_DEPTH` levels.
pub fn parse_documents(text: &str) -> Vec<Result<Object, DocumentError>> {
    parse_documents_nested_at_most(text, DEFAULT_MAX_YAML_DEPTH)
}

/// Parses every YAML document of `text`. Empty documents are skipped; each document either gives
/// an object or an error, so one bad document does not hide the others. A document nesting
/// deeper than `max_depth` is rejected before it is parsed.
pub fn parse_documents_nested_at_most(
    text: &str,
    max_depth: usize,
) -> Vec<Result<Object, DocumentError>> {
    split_documents(text)
        .into_iter()
        .filter_map(|(first_line, chunk)| parse_one(first_line, &chunk, max_depth))
        .collect()
}

/// Splits a YAML stream on `---` lines, keeping each document's first line number. Content after
/// `--- ` on the marker line belongs to the new document (`--- [a, b]` is a list document, not
/// nothing).
/// Whether `text` holds any YAML document at all (comments and `---` alone hold none). A file of
/// other API groups' objects only (a directory's Namespaces) holds documents, and is fine.
pub(super) fn holds_documents(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim();
        !(line.is_empty() || line.starts_with('#') || line == "---" || line == "...")
    })
}

fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut first_line = 1;
    for (i, line) in text.lines().enumerate() {
        let rest = if line.trim_end() == "---" {
            Some("")
        } else {
            line.strip_prefix("--- ")
        };
        if let Some(rest) = rest {
            documents.push((first_line, std::mem::take(&mut current)));
            first_line = i + 1;
            if rest.trim().is_empty() || rest.trim_start().starts_with('#') {
                first_line = i + 2;
            } else {
                current.push_str(rest);
                current.push('\n');
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    documents.push((first_line, current));
    documents
}

/// The deepest nesting of a YAML document and the 1-based line (within `chunk`) where it first
/// exceeds `max`, if it does. A linear scan that over-counts rather than under-counts: block
/// indentation levels, `- ` sequence entries and open flow brackets (`[`, `{`) outside quotes and
/// comments all count; the content of block scalars (`|`, `>`) does not.
fn too_deep(chunk: &str, max: usize) -> Option<(usize, usize)> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Block depth where the open flow collection started: brackets nest below it.
    let mut flow_base = 0usize;
    // Indentation of the line that opened a block scalar: deeper lines are its text.
    let mut scalar_owner: Option<usize> = None;
    for (i, line) in chunk.lines().enumerate() {
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        if body.trim().is_empty() {
            continue;
        }
        if let Some(owner) = scalar_owner {
            if indent > owner {
                continue;
            }
            scalar_owner = None;
        }
        if flow == 0 && body.starts_with('#') {
            continue;
        }
        let mut depth = flow_base + flow;
        // Levels are kept as twice their column; a sequence opened by `- ` at column c is
        // 2c + 1, between the mapping at column c (a compact `key:` / `- item` pair shares the
        // column) and the entry's content further right.
        if flow == 0 {
            while indents.last().is_some_and(|&top| top > 2 * indent) {
                indents.pop();
            }
            if indents.last() != Some(&(2 * indent)) {
                indents.push(2 * indent);
            }
            depth = indents.len();
        }
        let mut rest = body;
        while let Some(after) = rest.strip_prefix("- ").or(rest.strip_prefix("-\t")) {
            let dash_column = line.len() - rest.len();
            rest = after.trim_start();
            if flow == 0 {
                // The sequence, then the entry's content at its own column: lines indented to
                // it continue that level, deeper ones nest below it.
                if indents.last() != Some(&(2 * dash_column + 1)) {
                    indents.push(2 * dash_column + 1);
                }
                indents.push(2 * (line.len() - rest.len()));
                depth = indents.len();
            } else {
                depth += 1;
            }
        }
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        let mut escaped = false;
        for c in rest.chars() {
            match quote {
                // `\"` inside double quotes is a quote character, not the end of the string.
                Some('"') if escaped => escaped = false,
                Some('"') if c == '\\' => escaped = true,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '\'' | '"' => quote = Some(c),
                    '#' if previous == ' ' || previous == '\t' => break,
                    '[' | '{' => {
                        if flow == 0 {
                            // Indentation and `- ` entries of this line come before the bracket.
                            flow_base = depth;
                        }
                        flow += 1;
                        depth = depth.max(flow_base + flow);
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            previous = c;
        }
        if depth > max {
            return Some((i + 1, depth));
        }
        let uncommented = rest.split(" #").next().unwrap_or(rest).trim_end();
        let opens_scalar = uncommented.rsplit(' ').next().is_some_and(|last| {
            (last.starts_with('|') || last.starts_with('>'))
                && last[1..]
                    .chars()
                    .all(|c| matches!(c, '+' | '-' | '1'..='9'))
        });
        if opens_scalar && flow == 0 {
            // Its text is indented past the key that owns it (after any `- `).
            scalar_owner = Some(line.len() - rest.len());
        }
    }
    None
}

/// The dotted path of the first number in `value` that is not finite (`.nan`, `.inf`, or one too
/// large for a double, like `1e400`): JSON cannot carry those, and converting would silently
/// turn them into nulls, so a price of `.nan` would become no price at all.
fn first_non_finite(value: &serde_yaml_ng::Value, path: &mut String) -> bool {
    use serde_yaml_ng::Value;
    match value {
        Value::Number(n) => n.as_f64().is_some_and(|f| !f.is_finite()),
        Value::Sequence(items) => items.iter().enumerate().any(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = first_non_finite(item, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        Value::Mapping(map) => map.iter().any(|(key, item)| {
            let len = path.len();
            let key = match key {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&key);
            let found = first_non_finite(item, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        Value::Tagged(tagged) => first_non_finite(&tagged.value, path),
        _ => false,
    }
}

/// The 1-based line of `chunk` holding the first scalar YAML reads as a non-finite number.
fn line_of_non_finite(chunk: &str) -> Option<usize> {
    chunk
        .lines()
        .position(|line| {
            let code = line.split(" #").next().unwrap_or(line);
            code.split(|c: char| {
                c.is_whitespace() || matches!(c, ':' | ',' | '[' | ']' | '{' | '}')
            })
            .filter(|token| !token.is_empty() && token.len() < 400)
            // Only `.nan`, `.inf` and overflowing exponents read as non-finite: skip the parser
            // for every other token.
            .filter(|token| {
                let lower = token.to_ascii_lowercase();
                lower.contains("nan") || lower.contains("inf") || lower.contains('e')
            })
            .any(|token| {
                serde_yaml_ng::from_str::<serde_yaml_ng::Value>(token)
                    .ok()
                    .and_then(|v| v.as_f64())
                    .is_some_and(|f| !f.is_finite())
            })
        })
        .map(|i| i + 1)
}

fn parse_one(
    first_line: usize,
    chunk: &str,
    max_depth: usize,
) -> Option<Result<Object, DocumentError>> {
    if let Some((line, depth)) = too_deep(chunk, max_depth) {
        return Some(Err(at(
            first_line + line - 1,
            None,
            None,
            format!(
                "YAML nests {depth} levels deep here, more than the limit of {max_depth} \
                 (raise it with --max-yaml-depth)"
            ),
        )));
    }
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
    if !value.is_mapping() {
        let what = match &value {
            serde_yaml_ng::Value::Sequence(_) => "a list",
            _ => "a scalar",
        };
        return Some(Err(at(
            first_line,
            None,
            None,
            format!(
                "the document is {what}; it must be a mapping with apiVersion, kind and metadata"
            ),
        )));
    }
    let mut field = String::new();
    if first_non_finite(&value, &mut field) {
        let line = line_of_non_finite(chunk).map_or(first_line, |l| first_line + l - 1);
        let object = ObjectRef {
            kind: value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("<no kind>")
                .to_string(),
            namespace: value
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(|n| n.as_str())
                .map(str::to_string),
            name: value
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_string(),
        };
        return Some(Err(at(
            line,
            Some(object),
            Some(field),
            "not a finite number (NaN, infinity, or too large for a double)".into(),
        )));
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
    if let Err(problem) = dns_subdomain(&name) {
        return Err(fail(
            Some("metadata.name"),
            format!(
                "{:?} is not a valid object name: {problem}",
                printable(&name)
            ),
        ));
    }
    if json
        .pointer("/metadata/namespace")
        .is_some_and(|n| !n.is_string())
    {
        return Err(fail(
            Some("metadata.namespace"),
            "metadata.namespace must be a string".into(),
        ));
    }
    if let Some(namespace) = &object.namespace
        && let Err(problem) = dns_label(namespace)
    {
        return Err(fail(
            Some("metadata.namespace"),
            format!(
                "{:?} is not a valid namespace: {problem}",
                printable(namespace)
            ),
        ));
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

/// Kubernetes object names (DNS-1123 subdomain): at most 253 characters of lowercase letters,
/// digits, `-` and `.`, starting and ending with a letter or digit. The API server rejects any
/// other name at `kubectl apply`; the command line rejects it too instead of planning for an
/// object that cannot exist.
pub fn dns_subdomain(name: &str) -> Result<(), &'static str> {
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        dns_label_chars(label)?;
    }
    Ok(())
}

/// Namespace names (DNS-1123 label): at most 63 lowercase letters, digits and `-`, starting and
/// ending with a letter or digit.
pub fn dns_label(name: &str) -> Result<(), &'static str> {
    if name.len() > 63 {
        return Err("longer than 63 characters");
    }
    dns_label_chars(name)
}

fn dns_label_chars(label: &str) -> Result<(), &'static str> {
    let bytes = label.as_bytes();
    if bytes.is_empty() {
        return Err("empty, or an empty part between dots");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        return Err("only lowercase letters, digits, '-' and '.' are allowed");
    }
    if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
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
        return Err((field, schema_message(&err)));
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

/// A schema violation in words: a quantity that does not match the quantity grammar says so, as
/// the parser would, instead of quoting the regular expression.
fn schema_message(err: &jsonschema::ValidationError) -> String {
    if let jsonschema::error::ValidationErrorKind::Pattern { pattern } = err.kind()
        && pattern == quantity::PATTERN
    {
        let text = err.instance().as_str().unwrap_or_default().to_string();
        return quantity::QuantityError::Invalid(text).to_string();
    }
    err.to_string()
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
    fn content_after_a_document_marker_is_a_document() {
        let docs = split_documents("a: 1\n--- [1, 2]\nb: 2\n--- # note\nc: 3\n");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1], (2, "[1, 2]\nb: 2\n".to_string()));
        assert_eq!(docs[2], (5, "c: 3\n".to_string()));
    }

    #[test]
    fn nesting_counts_indentation_dashes_and_brackets() {
        assert_eq!(too_deep("a:\n  b:\n    c: 1\n", 3), None);
        assert_eq!(too_deep("a:\n  b:\n    c: 1\n", 2), Some((3, 3)));
        // Each `- ` opens a sequence and an entry (over-counting is safe; under-counting is not).
        assert_eq!(too_deep("- - - x\n", 6), Some((1, 7)));
        assert_eq!(too_deep("- - - x\n", 7), None);
        assert_eq!(too_deep("a: [[[1]]]\n", 3), Some((1, 4)));
        // Brackets spanning lines keep counting.
        assert_eq!(too_deep("a: [\n [\n  [1]]]\n", 3), Some((3, 4)));
        // Quoted text, comments and block scalars are not nesting.
        assert_eq!(too_deep("a: '[[[[' # {{{{\nb: \"{{{{\"\n", 1), None);
        let scalar = "a: |\n      x\n        y\n          z\nb: 1\n";
        assert_eq!(too_deep(scalar, 1), None);
        // Siblings at one level are not deeper.
        let wide: String = (0..1000).map(|i| format!("k{i}: 1\n")).collect();
        assert_eq!(too_deep(&wide, 1), None);
    }

    #[test]
    fn printable_escapes_controls_and_bidi_and_is_idempotent() {
        assert!(matches!(printable("plain/path.yaml"), Cow::Borrowed(_)));
        let escaped = printable("a\u{1b}[2J\u{7}\u{202e}\u{9b}b\n");
        assert_eq!(escaped, "a\\u{1b}[2J\\u{7}\\u{202e}\\u{9b}b\\u{a}");
        assert_eq!(printable(&escaped), escaped);
        assert_eq!(printable("naïve ünïcode ✓"), "naïve ünïcode ✓");
    }

    #[test]
    fn names_are_dns_subdomains_and_namespaces_dns_labels() {
        for good in ["a", "web", "web.v2", "a-b-1", &"a".repeat(63)] {
            assert_eq!(dns_subdomain(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "A",
            "a_b",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a b",
            "é",
            &"a".repeat(254),
        ] {
            assert!(dns_subdomain(bad).is_err(), "{bad}");
        }
        assert!(dns_label("a.b").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert_eq!(dns_label("shop-1"), Ok(()));
    }

    #[test]
    fn non_finite_numbers_name_their_field_and_line() {
        let text = "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {name: p}\nspec:\n  cost:\n    gpuHour: 1\n    cpuHour: .nan\n";
        let errors = parse_documents(text);
        let err = errors[0].as_ref().unwrap_err();
        assert_eq!(err.field.as_deref(), Some("spec.cost.cpuHour"));
        assert_eq!(err.line, Some(7));
        assert_eq!(err.object.as_ref().unwrap().to_string(), "ComputePool p");
        let list = parse_documents("a: [1, 2, .inf]\n");
        assert_eq!(list[0].as_ref().unwrap_err().field.as_deref(), Some("a[2]"));
    }

    /// Nesting of a parsed value: a scalar is 0, a collection one more than its deepest child.
    fn actual_depth(value: &serde_yaml_ng::Value) -> usize {
        use serde_yaml_ng::Value;
        match value {
            Value::Sequence(items) => 1 + items.iter().map(actual_depth).max().unwrap_or(0),
            Value::Mapping(map) => 1 + map.values().map(actual_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn yaml_tree() -> impl proptest::strategy::Strategy<Value = serde_yaml_ng::Value> {
        use proptest::prelude::*;
        use serde_yaml_ng::Value;
        let leaf = prop_oneof![
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            any::<bool>().prop_map(Value::Bool),
            // Text with the characters the scan looks at: brackets, quotes, comments, dashes,
            // colons, newlines (block scalars) and indentation.
            "[ \\[\\]{}'\"#:|>\\- \\na-z]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(12, 64, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
                prop::collection::vec(("[a-z]{1,6}", inner), 0..4).prop_map(|entries| {
                    Value::Mapping(
                        entries
                            .into_iter()
                            .map(|(k, v)| (Value::String(k), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// The cap is safe only if the scan never sees less nesting than the parser builds: for
        /// any tree, written in block style (YAML) or flow style (JSON, which is YAML too), a cap
        /// below its real depth rejects it, and the parser reads back what was written.
        #[test]
        fn the_scan_never_under_counts_nesting(tree in yaml_tree()) {
            let depth = actual_depth(&tree);
            let block = serde_yaml_ng::to_string(&tree).unwrap();
            let flow = serde_json::to_string(&tree).unwrap();
            for text in [&block, &flow] {
                let reread: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap();
                proptest::prop_assert_eq!(actual_depth(&reread), depth);
                if depth > 0 {
                    proptest::prop_assert!(
                        too_deep(text, depth - 1).is_some(),
                        "depth {} not seen in {:?}", depth, text
                    );
                }
            }
        }

        /// Escaped text has no control or bidi character left, keeps every other character in
        /// order, and escaping it again changes nothing.
        #[test]
        fn printable_leaves_nothing_to_escape(
            text in "[^\\\\]{0,16}|[\\x00-\\x1f\\x7f-\\u{9f}\\u{200e}\\u{202a}-\\u{202e}\\u{2066}a-z]{0,16}"
        ) {
            let is_unsafe = |c: char| {
                c.is_control()
                    || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            };
            let escaped = printable(&text).into_owned();
            let left = escaped.chars().any(is_unsafe);
            proptest::prop_assert!(!left, "{:?}", escaped);
            proptest::prop_assert_eq!(printable(&escaped), escaped.as_str());
            // Without the escapes, what remains is the input without its unsafe characters.
            let mut rest = escaped.as_str();
            let mut stripped = String::new();
            while let Some(at) = rest.find("\\u{") {
                stripped.push_str(&rest[..at]);
                let close = rest[at..].find('}').unwrap();
                rest = &rest[at + close + 1..];
            }
            stripped.push_str(rest);
            let safe: String = text.chars().filter(|c| !is_unsafe(*c)).collect();
            proptest::prop_assert_eq!(stripped, safe);
        }
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
