//! HTTP handling of the Kubernetes API paths: routing, query parameters, verbs and their
//! status codes. Control requests under `/harness/` go to `control`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use serde_json::{Value, json};

use crate::apply::{self, Scope};
use crate::cluster::Inner;
use crate::error::{Error, Result};
use crate::faults::injected_error;
use crate::patch;
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector, labels_of};
use crate::store::{DeleteOpts, WriteOpts, now};
use crate::watch::{self, WatchParams};
use crate::{control, discovery, openapi};

/// Response body: whole documents or watch streams.
pub type Body = BoxBody<Bytes, Infallible>;

/// A JSON response.
pub fn json_response(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .expect("valid response")
}

/// A `Status` error response (429 also gets `Retry-After`).
pub fn error_response(e: &Error) -> Response<Body> {
    let mut r = json_response(e.code(), &e.status());
    if e.code() == 429 {
        r.headers_mut()
            .insert("Retry-After", hyper::header::HeaderValue::from_static("1"));
    }
    r
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters, decoded.
pub fn query(req_query: Option<&str>) -> HashMap<String, String> {
    req_query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| v == "true" || v == "1" || v.is_empty())
}

/// A parsed resource path.
struct Target {
    rt: Arc<ResourceType>,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

/// `(group, version, rest)` of an API path, or None for non-resource paths.
fn split_api_path(path: &str) -> Option<(String, String, Vec<String>)> {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    match segs.first().map(String::as_str) {
        Some("api") if segs.len() >= 3 => {
            Some((String::new(), segs[1].clone(), segs[2..].to_vec()))
        }
        Some("apis") if segs.len() >= 4 => {
            Some((segs[1].clone(), segs[2].clone(), segs[3..].to_vec()))
        }
        _ => None,
    }
}

fn resolve(inner: &Inner, group: &str, version: &str, rest: &[String]) -> Result<Target> {
    let (ns, rest) = if rest.len() >= 3
        && rest[0] == "namespaces"
        && !matches!(rest[2].as_str(), "status" | "finalize")
    {
        (Some(rest[1].clone()), &rest[2..])
    } else {
        (None, rest)
    };
    let rt = inner
        .store
        .resource(group, version, &rest[0])
        .ok_or_else(Error::no_route)?;
    if ns.is_some() && !rt.namespaced {
        return Err(Error::no_route());
    }
    let sub = rest.get(2).cloned();
    if rest.len() > 3
        || sub
            .as_deref()
            .is_some_and(|s| s != "status" || !rt.status_subresource)
    {
        return Err(Error::no_route());
    }
    Ok(Target {
        rt,
        ns,
        name: rest.get(1).cloned(),
        sub,
    })
}

/// The Kubernetes verb of a request (used by fault rules too).
pub fn verb_of(method: &Method, path: &str, q: &HashMap<String, String>) -> &'static str {
    let named = split_api_path(path).is_some_and(|(_, _, rest)| {
        let rest = if rest.len() >= 3 && rest[0] == "namespaces" {
            &rest[2..]
        } else {
            &rest[..]
        };
        rest.len() >= 2
    });
    match *method {
        Method::GET if truthy(q, "watch") => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

/// Entry point for every request of one cluster.
pub async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let q = query(req.uri().query());
    if path.starts_with("/harness/") {
        return control::handle(inner, req, &path, &q).await;
    }
    let verb = verb_of(req.method(), &path, &q);
    *inner
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(verb)
        .or_default() += 1;
    let decision = inner
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .decide(verb, &path);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    if let Some(status) = decision.status {
        return error_response(&injected_error(status));
    }
    match route(&inner, req, &path, &q).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

/// The request body as JSON: JSON or YAML as sent, or a Kubernetes protobuf object decoded
/// (client-go's typed clients send built-in kinds as protobuf). CBOR is refused, as by an API
/// server without the CBOR feature.
async fn read_body(req: Request<Incoming>) -> Result<Value> {
    let content_type = req
        .headers()
        .get("Content-Type")
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if content_type.contains("cbor") {
        return Err(Error::unsupported_media(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, {} (got {content_type})",
            crate::proto::MEDIA_TYPE
        )));
    }
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| Error::bad_request(format!("reading body: {e}")))?
        .to_bytes();
    if content_type.starts_with(crate::proto::MEDIA_TYPE) && !bytes.is_empty() {
        return crate::proto::decode(&bytes);
    }
    parse_body(&bytes)
}

fn parse_body(bytes: &[u8]) -> Result<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).or_else(|_| {
        serde_yaml_ng::from_slice(bytes)
            .map_err(|e| Error::bad_request(format!("invalid body: {e}")))
    })
}

async fn route(
    inner: &Arc<Inner>,
    req: Request<Incoming>,
    path: &str,
    q: &HashMap<String, String>,
) -> Result<Response<Body>> {
    let types = inner.store.resource_types();
    let trimmed = path.trim_end_matches('/');
    match trimmed {
        "/version" => return Ok(json_response(200, &discovery::version())),
        "/healthz" | "/readyz" | "/livez" => {
            return Ok(Response::builder()
                .status(200)
                .header("Content-Type", "text/plain")
                .body(Full::new(Bytes::from_static(b"ok")).boxed())
                .expect("valid response"));
        }
        "/api" => {
            return Ok(json_response(
                200,
                &discovery::core_versions(&format!("127.0.0.1:{}", inner.port)),
            ));
        }
        "/apis" => return Ok(json_response(200, &discovery::groups(&types))),
        "/openapi/v3" => {
            return Ok(json_response(
                200,
                &openapi::root(&types, inner.store.current_rv()),
            ));
        }
        _ => {}
    }
    if let Some(key) = trimmed.strip_prefix("/openapi/v3/") {
        return openapi::group_version(&types, key)
            .map(|d| json_response(200, &d))
            .ok_or_else(Error::no_route);
    }
    let segs: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", v] => {
            return discovery::resources(&types, "", v)
                .map(|d| json_response(200, &d))
                .ok_or_else(Error::no_route);
        }
        ["apis", g] => {
            return discovery::group(&types, g)
                .map(|d| json_response(200, &d))
                .ok_or_else(Error::no_route);
        }
        ["apis", g, v] => {
            return discovery::resources(&types, g, v)
                .map(|d| json_response(200, &d))
                .ok_or_else(Error::no_route);
        }
        _ => {}
    }
    let (group, version, rest) = split_api_path(trimmed).ok_or_else(Error::no_route)?;
    let t = resolve(inner, &group, &version, &rest)?;
    let manager = q
        .get("fieldManager")
        .cloned()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            req.headers()
                .get("User-Agent")
                .and_then(|u| u.to_str().ok())
                .and_then(|u| u.split('/').next())
                .filter(|u| !u.is_empty())
                .unwrap_or("unknown")
                .to_string()
        });
    let dry_run = q.get("dryRun").is_some_and(|v| v == "All");
    let opts = WriteOpts {
        manager,
        dry_run,
        internal: false,
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
    };
    let scope = if t.sub.is_some() {
        Scope::Status
    } else {
        Scope::Main
    };
    let rt = t.rt.clone();
    let ns = t.ns.clone().unwrap_or_default();
    if rt.namespaced && t.ns.is_none() && !(req.method() == Method::GET && t.name.is_none()) {
        return Err(Error::no_route());
    }
    if rt.is_review() {
        return match *req.method() {
            Method::POST => review(read_body(req).await?),
            ref m => Err(Error::method_not_allowed(format!(
                "the server does not allow this method on the requested resource: {m}"
            ))),
        };
    }
    let accept = req
        .headers()
        .get("Accept")
        .and_then(|a| a.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // Metadata-only reads (kube's `Api<PartialObjectMeta<K>>`, client-go metadata informers).
    let partial = accept.contains("as=PartialObjectMetadata");
    // kubectl's human-readable `get` asks for Tables (not for watches: those stay objects).
    let as_table = accept.contains("as=Table") && !truthy(q, "watch");
    let include = q.get("includeObject").cloned().unwrap_or_default();
    let method = req.method().clone();
    match (method, t.name.clone()) {
        (Method::GET, None) if truthy(q, "watch") => watch_response(inner, &t, q, partial),
        (Method::GET, None) if as_table => {
            let listed = list(inner, &t, q, false)?;
            let body = listed
                .into_body()
                .collect()
                .await
                .map_err(|_| Error::internal("list body"))?
                .to_bytes();
            let v: Value =
                serde_json::from_slice(&body).map_err(|e| Error::internal(e.to_string()))?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let rv = v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            let mut tbl = crate::table::table(&rt, &items, rv, &include);
            if let Some(c) = v["metadata"].get("continue") {
                tbl["metadata"]["continue"] = c.clone();
            }
            Ok(json_response(200, &tbl))
        }
        (Method::GET, None) => list(inner, &t, q, partial),
        (Method::GET, Some(name)) if as_table && t.sub.is_none() => {
            let obj = inner.store.get(&rt, &ns, &name)?;
            let rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            Ok(json_response(
                200,
                &crate::table::table(&rt, &[obj], &rv, &include),
            ))
        }
        (Method::GET, Some(name)) => {
            let obj = inner.store.get(&rt, &ns, &name)?;
            Ok(json_response(
                200,
                &if partial { watch::partial(&obj) } else { obj },
            ))
        }
        (Method::POST, None) => {
            let body = read_body(req).await?;
            let obj = inner.store.create(&rt, &ns, body, &opts)?;
            Ok(json_response(201, &obj))
        }
        (Method::PUT, Some(name)) => {
            let body = read_body(req).await?;
            let obj = inner.store.update(&rt, &ns, &name, body, scope, &opts)?;
            Ok(json_response(200, &obj))
        }
        (Method::PATCH, Some(name)) => {
            let content_type = req
                .headers()
                .get("Content-Type")
                .and_then(|c| c.to_str().ok())
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            let body = read_body(req).await?;
            patch_object(
                inner,
                &rt,
                &ns,
                &name,
                scope,
                &opts,
                &content_type,
                body,
                truthy(q, "force"),
            )
        }
        (Method::DELETE, Some(name)) => {
            let body = read_body(req).await?;
            let dopts = delete_opts(q, &body, dry_run);
            let obj = inner.store.delete(&rt, &ns, &name, &dopts)?;
            // Like the API server: 200 with the object, 202 only if the deletion is pending and
            // the client explicitly asked for `orphanDependents: false`.
            let pending = !dry_run && inner.store.get(&rt, &ns, &name).is_ok();
            let accepted = pending && body["orphanDependents"] == Value::Bool(false);
            Ok(json_response(if accepted { 202 } else { 200 }, &obj))
        }
        (Method::DELETE, None) => {
            let body = read_body(req).await?;
            let dopts = delete_opts(q, &body, dry_run);
            let labels = LabelSelector::parse(
                q.get("labelSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
            )?;
            let fields = FieldSelector::parse(
                q.get("fieldSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
                !rt.custom,
            )?;
            let (items, _) = inner.store.list(&rt, t.ns.as_deref());
            let mut deleted = Vec::new();
            for item in items
                .iter()
                .filter(|o| labels.matches(&labels_of(o)) && fields.matches(o))
            {
                let name = item["metadata"]["name"].as_str().unwrap_or_default();
                let ins = item["metadata"]["namespace"].as_str().unwrap_or_default();
                if let Ok(o) = inner.store.delete(&rt, ins, name, &dopts) {
                    deleted.push(o);
                }
            }
            Ok(json_response(
                200,
                &json!({
                "kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": inner.store.current_rv().to_string()}, "items": deleted}),
            ))
        }
        (m, _) => Err(Error::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {m}"
        ))),
    }
}

/// The answer to a `SelfSubjectAccessReview`: allowed, since the harness has no authorization
/// (every request is served), so that `kubectl auth can-i` says what the server does.
fn review(body: Value) -> Result<Response<Body>> {
    let spec = &body["spec"];
    if spec["resourceAttributes"].is_object() == spec["nonResourceAttributes"].is_object() {
        return Err(Error::invalid(
            "SelfSubjectAccessReview",
            "authorization.k8s.io",
            "",
            vec![(
                "spec.resourceAttributes".into(),
                "FieldValueInvalid".into(),
                "spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
            )],
        ));
    }
    let mut answer = body;
    answer["apiVersion"] = json!("authorization.k8s.io/v1");
    answer["kind"] = json!("SelfSubjectAccessReview");
    answer["metadata"] = json!({"creationTimestamp": null});
    answer["status"] = json!({
        "allowed": true,
        "reason": "the kube-harness has no authorization: every request is allowed",
    });
    Ok(json_response(201, &answer))
}

fn delete_opts(q: &HashMap<String, String>, body: &Value, dry_run: bool) -> DeleteOpts {
    DeleteOpts {
        propagation: q
            .get("propagationPolicy")
            .cloned()
            .or_else(|| body["propagationPolicy"].as_str().map(str::to_string))
            .or_else(|| match body["orphanDependents"].as_bool() {
                Some(true) => Some("Orphan".into()),
                _ => None,
            }),
        dry_run: dry_run
            || body["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x == "All")),
        precondition_rv: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
        precondition_uid: body["preconditions"]["uid"].as_str().map(str::to_string),
    }
}

#[allow(clippy::too_many_arguments)]
fn patch_object(
    inner: &Arc<Inner>,
    rt: &Arc<ResourceType>,
    ns: &str,
    name: &str,
    scope: Scope,
    opts: &WriteOpts,
    content_type: &str,
    body: Value,
    force: bool,
) -> Result<Response<Body>> {
    let not_found = || Error::not_found(&rt.group, &rt.plural, name);
    let (obj, created) = match content_type {
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            if opts.manager.is_empty() || opts.manager == "unknown" {
                return Err(Error::invalid(
                    "PatchOptions",
                    "meta.k8s.io",
                    "",
                    vec![(
                        "fieldManager".into(),
                        "FieldValueRequired".into(),
                        "fieldManager: Required value: is required for apply patch".into(),
                    )],
                ));
            }
            if !body.is_object() {
                return Err(Error::bad_request("apply configuration must be an object"));
            }
            let body_name = body["metadata"]["name"].as_str().unwrap_or_default();
            if !body_name.is_empty() && body_name != name {
                return Err(Error::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            let mut cfg = body;
            cfg["metadata"]["name"] = json!(name);
            if rt.namespaced {
                cfg["metadata"]["namespace"] = json!(ns);
            }
            let precondition = cfg["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string);
            let manager = opts.manager.clone();
            inner
                .store
                .modify(rt, ns, name, scope, opts, false, |live| {
                    if let (Some(rv), Some(live)) = (&precondition, live)
                        && live["metadata"]["resourceVersion"].as_str() != Some(rv.as_str())
                    {
                        return Err(Error::conflict(&rt.group, &rt.plural, name));
                    }
                    if live.is_none() && scope == Scope::Status {
                        return Err(not_found());
                    }
                    apply::apply(rt, live, &cfg, &manager, force, scope, name, &now())
                })?
        }
        "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json" => {
            inner
                .store
                .modify(rt, ns, name, scope, opts, true, |live| {
                    let mut obj = live.cloned().ok_or_else(not_found)?;
                    match content_type {
                        "application/merge-patch+json" => patch::merge_patch(&mut obj, &body),
                        "application/json-patch+json" => patch::json_patch(&mut obj, &body)?,
                        _ => patch::strategic_merge(rt, &mut obj, &body)?,
                    }
                    Ok(obj)
                })?
        }
        other => {
            return Err(Error::unsupported_media(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
            )));
        }
    };
    Ok(json_response(if created { 201 } else { 200 }, &obj))
}

fn encode_continue(rv: u64, key: &str) -> String {
    let raw = format!("{rv}/{key}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(u64, String)> {
    let bad =
        || Error::bad_request("continue key is not valid: incorrect encoded start resourceVersion");
    let bytes: Vec<u8> = (0..token.len() / 2)
        .map(|i| u8::from_str_radix(token.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad())?;
    let raw = String::from_utf8(bytes).map_err(|_| bad())?;
    let (rv, key) = raw.split_once('/').ok_or_else(bad)?;
    Ok((rv.parse().map_err(|_| bad())?, key.to_string()))
}

fn item_key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or_default(),
        o["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn list(
    inner: &Arc<Inner>,
    t: &Target,
    q: &HashMap<String, String>,
    partial: bool,
) -> Result<Response<Body>> {
    let rt = &t.rt;
    let labels = LabelSelector::parse(
        q.get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )?;
    let fields = FieldSelector::parse(
        q.get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
        !rt.custom,
    )?;
    let mut list_rv = None;
    let mut after = None;
    if let Some(token) = q.get("continue").filter(|c| !c.is_empty()) {
        // Continuation reads current data after the last key; the token only expires when its
        // resourceVersion left the retained history (the real server keeps a snapshot).
        let (token_rv, last) = decode_continue(token)?;
        if token_rv < inner.store.compacted_rv() {
            return Err(Error::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ));
        }
        list_rv = Some(token_rv);
        // Compare as (namespace, name) like the store orders items, not as one string ("a-b/x"
        // sorts before "a/b" as text but after it as a pair).
        after = Some(
            last.split_once('/')
                .map(|(ns, name)| (ns.to_string(), name.to_string()))
                .unwrap_or_default(),
        );
    }
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (items, rv, remaining) =
        inner
            .store
            .list_page(rt, t.ns.as_deref(), after.as_ref(), limit, |o| {
                labels.matches(&labels_of(o)) && fields.matches(o)
            });
    let list_rv = list_rv.unwrap_or(rv);
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if remaining > 0
        && let Some(last) = items.last()
    {
        meta["continue"] = json!(encode_continue(list_rv, &item_key(last)));
        meta["remainingItemCount"] = json!(remaining);
    }
    if partial {
        let items: Vec<Value> = items.iter().map(watch::partial).collect();
        return Ok(json_response(
            200,
            &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
        ));
    }
    // Built by moving the items in: a large list is not copied once more.
    let mut list = serde_json::Map::new();
    list.insert("kind".into(), json!(format!("{}List", rt.kind)));
    list.insert("apiVersion".into(), json!(rt.api_version()));
    list.insert("metadata".into(), meta);
    list.insert("items".into(), Value::Array(items));
    Ok(json_response(200, &Value::Object(list)))
}

fn watch_response(
    inner: &Arc<Inner>,
    t: &Target,
    q: &HashMap<String, String>,
    partial: bool,
) -> Result<Response<Body>> {
    let params = WatchParams {
        namespace: t.ns.clone(),
        labels: LabelSelector::parse(
            q.get("labelSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        fields: FieldSelector::parse(
            q.get("fieldSelector")
                .map(String::as_str)
                .unwrap_or_default(),
            !t.rt.custom,
        )?,
        resource_version: q.get("resourceVersion").cloned(),
        bookmarks: truthy(q, "allowWatchBookmarks"),
        send_initial_events: q.get("sendInitialEvents").map(|v| v == "true"),
        timeout: q
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs),
        partial,
    };
    let rx = watch::start(
        inner.store.clone(),
        t.rt.clone(),
        params,
        inner.bookmark_interval,
        inner.watch_kill.subscribe(),
    );
    let stream = rx.map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Ok(Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("valid response"))
}
