//! The object store of one cluster: every object as JSON, one resourceVersion counter, a bounded
//! event history for watches, and the server-side write rules (metadata, generation, status
//! subresource, CRD admission, managedFields, finalizers, owner-reference garbage collection).
//!
//! State lives under one mutex, which makes resourceVersions, history and broadcasts trivially
//! consistent. A write holds it only to read the object and to store the result: building and
//! admitting the new object happens outside it, with optimistic concurrency (as the API server's
//! guaranteed update over etcd), so requests are served in parallel.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::apply::{self, Scope};
use crate::crd_schema;
use crate::error::{Error, Result};
use crate::faults::Rng;
use crate::resources::{self, ResourceType};

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created (or started matching).
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in history and broadcast to watchers.
#[derive(Debug)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Type of change.
    pub kind: EventType,
    /// Storage key `(group, plural)`.
    pub key: (String, String),
    /// The object after the change (for deletes: the last state, with the delete's RV).
    pub object: Value,
    /// The object before the change, for selector transitions.
    pub old: Option<Value>,
    /// `object` as JSON, serialized once for every watcher that shows it as stored.
    pub json: std::sync::OnceLock<bytes::Bytes>,
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// Field manager recorded in managedFields.
    pub manager: String,
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// Internal writes (harness nodes) may set status on create.
    pub internal: bool,
    /// `fieldValidation=Strict`: unknown fields of custom resources are an error.
    pub strict: bool,
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// `Background` (default), `Foreground` or `Orphan`.
    pub propagation: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `preconditions.resourceVersion`.
    pub precondition_rv: Option<String>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
}

type ObjKey = (String, String);
/// Storage key `(group, plural)` and object key `(namespace, name)`.
type Loc = ((String, String), ObjKey);

/// Retained events after the start point, a receiver for later ones, the current version.
pub type WatchStart = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>, u64);

struct State {
    rv: u64,
    types: BTreeMap<(String, String, String), Arc<ResourceType>>,
    objects: HashMap<(String, String), BTreeMap<ObjKey, Value>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    compacted_rv: u64,
    rng: Rng,
    /// resourceVersion at which each uid was created: exact creation order for the kubelet, and
    /// the set of live uids.
    created: HashMap<String, u64>,
    /// Owner uid → the objects whose ownerReferences name it: the garbage collector's graph, so
    /// that a write costs the collector only the objects it touches.
    dependents: HashMap<String, BTreeSet<Loc>>,
    /// Objects the collector must look at: written naming an owner that does not exist, or
    /// whose owner went.
    gc_pending: BTreeSet<Loc>,
    /// Objects deleting in the foreground, waiting for their dependents to go.
    foreground: BTreeSet<Loc>,
}

/// One cluster's storage.
pub struct Store {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Event>>,
}

/// Current time as the API server writes timestamps.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o["uid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Map equality over the keys `keep` accepts, in place.
fn same_keys(
    a: &serde_json::Map<String, Value>,
    b: &serde_json::Map<String, Value>,
    keep: impl Fn(&str) -> bool,
) -> bool {
    let kept = |m: &serde_json::Map<String, Value>| m.keys().filter(|k| keep(k)).count();
    kept(a) == kept(b)
        && a.iter()
            .filter(|(k, _)| keep(k))
            .all(|(k, v)| b.get(k) == Some(v))
}

/// Whether the parts of an object whose change bumps `metadata.generation` differ: everything
/// but metadata (and status, where it is a subresource).
fn spec_changed(rt: &ResourceType, a: &Value, b: &Value) -> bool {
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => !same_keys(a, b, |k| {
            k != "metadata" && !(rt.status_subresource && k == "status")
        }),
        _ => a != b,
    }
}

/// Store equality ignoring server-maintained bookkeeping (resourceVersion, the times of
/// managedFields entries), to detect no-op writes. Compares in place: no copies.
fn same_content(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    if !same_keys(a, b, |k| k != "metadata") {
        return false;
    }
    let (Some(ma), Some(mb)) = (
        a.get("metadata").and_then(Value::as_object),
        b.get("metadata").and_then(Value::as_object),
    ) else {
        return a.get("metadata") == b.get("metadata");
    };
    if !same_keys(ma, mb, |k| k != "resourceVersion" && k != "managedFields") {
        return false;
    }
    // Ownership changes count, timestamps of managers do not (as on the real server).
    let (ea, eb) = (
        ma.get("managedFields").and_then(Value::as_array),
        mb.get("managedFields").and_then(Value::as_array),
    );
    let (ea, eb) = (
        ea.map_or(&[][..], Vec::as_slice),
        eb.map_or(&[][..], Vec::as_slice),
    );
    ea.len() == eb.len()
        && ea
            .iter()
            .zip(eb)
            .all(|(x, y)| match (x.as_object(), y.as_object()) {
                (Some(x), Some(y)) => same_keys(x, y, |k| k != "time"),
                _ => x == y,
            })
}

impl Store {
    /// An empty store with the built-in kinds and the given watch history length.
    pub fn new(history_limit: usize, seed: u64) -> Self {
        let mut types = BTreeMap::new();
        for rt in resources::builtins() {
            types.insert(
                (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
                Arc::new(rt),
            );
        }
        let (events, _) = broadcast::channel(8192);
        let store = Store {
            state: Mutex::new(State {
                rv: 0,
                types,
                objects: HashMap::new(),
                history: VecDeque::new(),
                history_limit: history_limit.max(1),
                compacted_rv: 0,
                rng: Rng::new(seed),
                created: HashMap::new(),
                dependents: HashMap::new(),
                gc_pending: BTreeSet::new(),
                foreground: BTreeSet::new(),
            }),
            events,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let rt = store.resource("", "v1", "namespaces").expect("built-in");
            store
                .create(
                    &rt,
                    "",
                    json!({"metadata": {"name": ns}}),
                    &WriteOpts {
                        manager: "kube-apiserver".into(),
                        ..Default::default()
                    },
                )
                .expect("fresh store");
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough test state; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The resource type served at group/version/plural.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.lock()
            .types
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// The resource type of an apiVersion and kind.
    pub fn resource_for_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.lock()
            .types
            .values()
            .find(|t| t.api_version() == api_version && t.kind == kind)
            .cloned()
    }

    /// Every served resource type.
    pub fn resource_types(&self) -> Vec<Arc<ResourceType>> {
        self.lock().types.values().cloned().collect()
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// The latest resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// The oldest resourceVersion a watch may start from.
    pub fn compacted_rv(&self) -> u64 {
        self.lock().compacted_rv
    }

    /// One object.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value> {
        let st = self.lock();
        st.get(rt, ns, name)
            .map(|o| with_version(rt, o.clone()))
            .ok_or_else(|| Error::not_found(&rt.group, &rt.plural, name))
    }

    /// All objects of a type (in one namespace if given), sorted by namespace and name, and the
    /// resourceVersion of the snapshot.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>) -> (Vec<Value>, u64) {
        let (items, rv, _) = self.list_page(rt, ns, None, None, |_| true);
        (items, rv)
    }

    /// One page of a selective list: the first `limit` objects `keep` accepts after the key
    /// `after` (namespace, name), the resourceVersion, and how many more match. Copies only the
    /// page, so paging through a large collection costs what it returns.
    pub fn list_page(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        after: Option<&(String, String)>,
        limit: Option<usize>,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, u64, usize) {
        use std::ops::Bound;
        let st = self.lock();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut matching = st
            .objects
            .get(&rt.storage_key())
            .into_iter()
            .flat_map(|m| m.range((start, Bound::Unbounded)))
            .filter(|((ons, _), _)| ns.is_none_or(|n| n == ons))
            .filter_map(|(_, o)| {
                // Selectors apply to the object as served (a core Event's `involvedObject`).
                if crate::events::is_core_view(rt) {
                    let view = with_version(rt, o.clone());
                    return keep(&view).then_some(view);
                }
                keep(o).then(|| with_version(rt, o.clone()))
            });
        let items: Vec<Value> = matching
            .by_ref()
            .take(limit.unwrap_or(usize::MAX))
            .collect();
        let remaining = matching.count();
        (items, st.rv, remaining)
    }

    /// Visit every object of a type under the lock, with the resourceVersion at which it was
    /// created, copying none: for readers that keep only a summary of a large collection.
    pub fn visit(&self, rt: &ResourceType, mut f: impl FnMut(&Value, Option<u64>)) {
        let st = self.lock();
        for o in st
            .objects
            .get(&rt.storage_key())
            .into_iter()
            .flat_map(|m| m.values())
        {
            f(o, st.created.get(meta_str(o, "uid")).copied());
        }
    }

    /// Create an object (POST).
    pub fn create(
        &self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        opts: &WriteOpts,
    ) -> Result<Value> {
        let mut name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            let prefix = meta_str(&obj, "generateName").to_string();
            if prefix.is_empty() {
                return Err(Error::invalid(
                    &rt.kind,
                    &rt.group,
                    "",
                    vec![(
                        "metadata.name".into(),
                        "FieldValueRequired".into(),
                        "metadata.name: Required value: name or generateName is required".into(),
                    )],
                ));
            }
            const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
            let mut st = self.lock();
            let suffix: String = (0..5)
                .map(|_| ALPHABET[(st.rng.next_u64() % ALPHABET.len() as u64) as usize] as char)
                .collect();
            name = format!("{prefix}{suffix}");
            obj["metadata"]["name"] = json!(name);
        }
        let mut body = Some(obj);
        let (obj, _) = self.modify(rt, ns, &name, Scope::Main, opts, true, |live| {
            if live.is_some() {
                return Err(Error::already_exists(&rt.group, &rt.plural, &name));
            }
            // A retry only follows a concurrent create, which the check above reports.
            body.take()
                .ok_or_else(|| Error::already_exists(&rt.group, &rt.plural, &name))
        })?;
        Ok(obj)
    }

    /// Replace an object (PUT); a resourceVersion in the body is a precondition (see `modify`).
    pub fn update(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        obj: Value,
        scope: Scope,
        opts: &WriteOpts,
    ) -> Result<Value> {
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(Error::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let rv = meta_str(&obj, "resourceVersion");
        if rv.is_empty() && rt.custom {
            return Err(Error::invalid(
                &rt.kind,
                &rt.group,
                name,
                vec![(
                    "metadata.resourceVersion".into(),
                    "FieldValueInvalid".into(),
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                        .into(),
                )],
            ));
        }
        let (obj, _) = self.modify(rt, ns, name, scope, opts, true, |live| match live {
            Some(_) => Ok(obj.clone()),
            None => Err(Error::not_found(&rt.group, &rt.plural, name)),
        })?;
        Ok(obj)
    }

    /// Read-modify-write, behind every write (PATCH, apply, create, update). `f` gets the
    /// current object (None if missing) and returns the new one; `track` says whether to record
    /// the write as an `Update` (apply records its own managedFields). Returns the object and
    /// whether it was created.
    ///
    /// As the API server's guaranteed update does it: read the current object, build and admit
    /// the new one outside the lock, then store it only if the object is still the one read
    /// (its resourceVersion unchanged), else start again from the fresh object. Writes to
    /// different objects, and the costly part of writes to one, run in parallel.
    #[allow(clippy::too_many_arguments)]
    pub fn modify(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        scope: Scope,
        opts: &WriteOpts,
        track: bool,
        mut f: impl FnMut(Option<&Value>) -> Result<Value>,
    ) -> Result<(Value, bool)> {
        loop {
            let old = {
                let st = self.lock();
                let old = st.get(rt, ns, name).cloned().map(|o| with_version(rt, o));
                if old.is_none() && rt.namespaced {
                    st.check_namespace_open(rt, ns, name)?;
                }
                old
            };
            let new = f(old.as_ref())?;
            // A resourceVersion in the new object is a precondition on the one it replaces.
            if let Some(old) = &old {
                let rv = meta_str(&new, "resourceVersion");
                if !rv.is_empty() && rv != meta_str(old, "resourceVersion") {
                    return Err(Error::conflict(&rt.group, &rt.plural, name));
                }
            }
            let obj = match prepare(rt, ns, name, old.as_ref(), new, scope, opts, track)? {
                Prepared::Unchanged => {
                    let old = old.expect("only an update can be a no-op");
                    return Ok((old, false));
                }
                Prepared::DryRun(mut obj) => {
                    if old.is_none() {
                        obj["metadata"]["uid"] = json!(self.lock().new_uid());
                    }
                    return Ok((obj, old.is_none()));
                }
                Prepared::Write(obj) => obj,
            };
            let mut st = self.lock();
            let current = st.get(rt, ns, name).map(|o| meta_str(o, "resourceVersion"));
            if current != old.as_ref().map(|o| meta_str(o, "resourceVersion")) {
                // Written by someone else since it was read: decide again on the new object.
                continue;
            }
            let created = old.is_none();
            return Ok((st.store(self, rt, ns, name, old, obj)?, created));
        }
    }
    /// Delete an object: with finalizers it only gets a deletionTimestamp; otherwise it is
    /// removed and its dependents are garbage-collected according to the propagation policy.
    pub fn delete(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Value> {
        let mut st = self.lock();
        let obj = st
            .get(rt, ns, name)
            .cloned()
            .ok_or_else(|| Error::not_found(&rt.group, &rt.plural, name))?;
        if let Some(rv) = &opts.precondition_rv
            && rv != meta_str(&obj, "resourceVersion")
        {
            return Err(Error::conflict(&rt.group, &rt.plural, name));
        }
        if let Some(uid) = &opts.precondition_uid
            && uid != meta_str(&obj, "uid")
        {
            return Err(Error::conflict(&rt.group, &rt.plural, name));
        }
        if opts.dry_run {
            return Ok(with_version(rt, obj));
        }
        let out = st.delete_obj(self, rt, ns, name, opts.propagation.as_deref())?;
        st.collect_garbage(self);
        Ok(with_version(rt, out))
    }

    /// Subscribe to changes after `from` (None: from now). Returns the retained events after
    /// `from`, a receiver for later ones, and the current resourceVersion; 410 Expired if `from`
    /// is older than the retained history.
    pub fn watch_from(&self, from: Option<u64>) -> Result<WatchStart> {
        let st = self.lock();
        let rx = self.events.subscribe();
        let replay = match from {
            Some(rv) if rv < st.compacted_rv => {
                return Err(Error::expired(format!(
                    "too old resource version: {rv} ({})",
                    st.compacted_rv
                )));
            }
            Some(rv) => st.history.iter().filter(|e| e.rv > rv).cloned().collect(),
            None => Vec::new(),
        };
        Ok((replay, rx, st.rv))
    }
}

/// A stored object as served at `rt`: its apiVersion, and the core view of an Event.
pub fn with_version(rt: &ResourceType, mut obj: Value) -> Value {
    if crate::events::is_core_view(rt) {
        return crate::events::to_core(obj);
    }
    obj["apiVersion"] = json!(rt.api_version());
    obj
}

/// An object as served at `rt` in the form it is stored in.
fn for_storage(rt: &ResourceType, obj: Value) -> Value {
    if crate::events::is_core_view(rt) {
        return crate::events::from_core(obj);
    }
    obj
}

/// A write checked and built, before it is stored.
enum Prepared {
    /// The stored object already has this content: nothing to store, nothing to emit.
    Unchanged,
    /// `dryRun=All`: the object as it would be stored.
    DryRun(Value),
    /// To be stored.
    Write(Value),
}

/// Apply the server's write rules to a write of `obj` over `old` (None: a create): metadata the
/// server owns, generation, the status subresource, admission and validation, managedFields and
/// defaults. Needs no lock: it sees only the object as read.
#[allow(clippy::too_many_arguments)]
fn prepare(
    rt: &ResourceType,
    ns: &str,
    name: &str,
    old: Option<&Value>,
    mut obj: Value,
    scope: Scope,
    opts: &WriteOpts,
    track: bool,
) -> Result<Prepared> {
    if !obj.is_object() {
        return Err(Error::bad_request("the body must be a JSON object"));
    }
    let body_ns = meta_str(&obj, "namespace");
    if rt.namespaced && !body_ns.is_empty() && body_ns != ns {
        return Err(Error::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let now = now();
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = obj["metadata"].as_object_mut().expect("set above");
    meta.insert("name".into(), json!(name));
    if rt.namespaced {
        meta.insert("namespace".into(), json!(ns));
    } else {
        meta.remove("namespace");
    }
    match old {
        None => {
            if rt.status_subresource && !opts.internal {
                obj.as_object_mut().expect("object").remove("status");
            }
            let meta = obj["metadata"].as_object_mut().expect("object");
            // The uid is given when the write is stored.
            meta.remove("uid");
            meta.insert("creationTimestamp".into(), json!(now));
            meta.insert("generation".into(), json!(1));
            meta.remove("deletionTimestamp");
            meta.remove("resourceVersion");
        }
        Some(old) => {
            match scope {
                Scope::Main if rt.status_subresource && !opts.internal => match old.get("status") {
                    Some(s) => obj["status"] = s.clone(),
                    None => {
                        obj.as_object_mut().expect("object").remove("status");
                    }
                },
                Scope::Status => {
                    let status = obj.get("status").cloned();
                    let managed = obj["metadata"].get("managedFields").cloned();
                    obj = old.clone();
                    match managed {
                        Some(m) => obj["metadata"]["managedFields"] = m,
                        None => {
                            obj["metadata"]
                                .as_object_mut()
                                .expect("object")
                                .remove("managedFields");
                        }
                    }
                    match status {
                        Some(s) => obj["status"] = s,
                        None => {
                            obj.as_object_mut().expect("object").remove("status");
                        }
                    }
                }
                Scope::Main => {}
            }
            let meta = obj["metadata"].as_object_mut().expect("object");
            for keep in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match old["metadata"].get(keep) {
                    Some(v) => meta.insert(keep.into(), v.clone()),
                    None => meta.remove(keep),
                };
            }
            let mut generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            // A status write carries the stored spec by construction.
            if scope != Scope::Status && spec_changed(rt, &obj, old) {
                generation += 1;
            }
            obj["metadata"]["generation"] = json!(generation);
        }
    }
    if rt.custom {
        crd_schema::admit(rt, &mut obj, old, name, opts.strict)?;
    }
    let causes = crate::validation::validate(rt, &obj, old, name);
    if !causes.is_empty() {
        return Err(Error::invalid(&rt.kind, &rt.group, name, causes));
    }
    server_managed(rt, &mut obj)?;
    if track {
        apply::track_update(rt, old, &mut obj, &opts.manager, scope, &now);
    }
    crate::defaults::apply(rt, &mut obj);
    if let Some(old) = old
        && same_content(old, &obj)
    {
        // No-op writes keep the resourceVersion and emit nothing, as on the real server.
        return Ok(Prepared::Unchanged);
    }
    if opts.dry_run {
        return Ok(Prepared::DryRun(with_version(rt, obj)));
    }
    Ok(Prepared::Write(obj))
}

/// Fields the server itself maintains and validations of built-in kinds.
fn server_managed(rt: &ResourceType, obj: &mut Value) -> Result<()> {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => {
            if obj["metadata"].get("deletionTimestamp").is_none() {
                obj["status"] = json!({"phase": "Active"});
            }
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
        }
        ("apiextensions.k8s.io", _) => {
            let spec = &obj["spec"];
            let group = spec["group"].as_str().unwrap_or_default();
            let plural = spec["names"]["plural"].as_str().unwrap_or_default();
            let name = meta_str(obj, "name");
            let mut causes = Vec::new();
            if name != format!("{plural}.{group}") {
                causes.push((
                    "metadata.name".to_string(),
                    "FieldValueInvalid".to_string(),
                    format!("metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
                ));
            }
            if spec["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
            {
                causes.push((
                    "spec.names.kind".into(),
                    "FieldValueRequired".into(),
                    "spec.names.kind: Required value".into(),
                ));
            }
            if spec["versions"].as_array().is_none_or(Vec::is_empty) {
                causes.push((
                    "spec.versions".into(),
                    "FieldValueRequired".into(),
                    "spec.versions: Required value".into(),
                ));
            }
            if !causes.is_empty() {
                return Err(Error::invalid(&rt.kind, &rt.group, name, causes));
            }
            let stored: Vec<Value> = spec["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["storage"] == true)
                .map(|v| v["name"].clone())
                .collect();
            let t = obj["metadata"]["creationTimestamp"].clone();
            let cond = |ty: &str, reason: &str, msg: &str| json!({"type": ty, "status": "True", "reason": reason, "message": msg, "lastTransitionTime": t});
            obj["status"] = json!({
                "acceptedNames": obj["spec"]["names"].clone(),
                "storedVersions": stored,
                "conditions": [
                    cond("NamesAccepted", "NoConflicts", "no conflicts found"),
                    cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                ],
            });
        }
        _ => {}
    }
    Ok(())
}

impl State {
    fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&rt.storage_key())?
            .get(&(ns.to_string(), name.to_string()))
    }

    fn get_at(&self, (skey, key): &Loc) -> Option<&Value> {
        self.objects.get(skey)?.get(key)
    }

    /// Store an object, keeping the collector's indexes current.
    fn put(&mut self, skey: (String, String), key: ObjKey, obj: Value) {
        let loc = (skey, key);
        if let Some(prev) = self.objects.get(&loc.0).and_then(|m| m.get(&loc.1)) {
            let prev_owners = owner_uids(prev);
            self.unindex(&loc, &prev_owners);
        }
        let owners = owner_uids(&obj);
        for owner in &owners {
            self.dependents
                .entry(owner.clone())
                .or_default()
                .insert(loc.clone());
        }
        if owners.iter().any(|u| !self.created.contains_key(u)) {
            self.gc_pending.insert(loc.clone());
        }
        if obj["metadata"].get("deletionTimestamp").is_some()
            && finalizers(&obj).iter().any(|f| f == "foregroundDeletion")
        {
            self.foreground.insert(loc.clone());
        }
        let (skey, key) = loc;
        self.objects.entry(skey).or_default().insert(key, obj);
    }

    /// Take an object out of storage; its dependents become the collector's to look at.
    fn take(&mut self, skey: &(String, String), key: &ObjKey) -> Option<Value> {
        let prev = self.objects.get_mut(skey)?.remove(key)?;
        let loc = (skey.clone(), key.clone());
        self.unindex(&loc, &owner_uids(&prev));
        self.gc_pending.remove(&loc);
        let uid = meta_str(&prev, "uid");
        self.created.remove(uid);
        if let Some(deps) = self.dependents.get(uid) {
            self.gc_pending.extend(deps.iter().cloned());
        }
        Some(prev)
    }

    fn unindex(&mut self, loc: &Loc, owners: &[String]) {
        for owner in owners {
            if let Some(deps) = self.dependents.get_mut(owner) {
                deps.remove(loc);
                if deps.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
        self.foreground.remove(loc);
    }

    fn type_of(&self, key: &(String, String)) -> Option<Arc<ResourceType>> {
        self.types
            .values()
            .find(|t| t.group == key.0 && t.plural == key.1)
            .cloned()
    }

    fn emit(
        &mut self,
        store: &Store,
        kind: EventType,
        key: (String, String),
        object: Value,
        old: Option<Value>,
    ) {
        let ev = Arc::new(Event {
            rv: self.rv,
            kind,
            key,
            object,
            old,
            json: std::sync::OnceLock::new(),
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted_rv = e.rv;
            }
        }
        let _ = store.events.send(ev);
    }

    fn new_uid(&mut self) -> String {
        let a = self.rng.next_u64();
        let b = self.rng.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48 & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// A create into `ns` must find the namespace, and not terminating.
    fn check_namespace_open(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<()> {
        let namespace = self
            .objects
            .get(&(String::new(), "namespaces".into()))
            .and_then(|m| m.get(&(String::new(), ns.to_string())));
        match namespace {
            None => Err(Error::not_found("", "namespaces", ns)),
            Some(n) if n["metadata"].get("deletionTimestamp").is_some() => Err(Error::api(
                403,
                "Forbidden",
                format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    crate::error::qualified(&rt.group, &rt.plural)
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Store a prepared write of the object last seen as `old`: the part of a write that must
    /// be serial (identity, resourceVersion, history, broadcast, garbage collection).
    fn store(
        &mut self,
        store: &Store,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        old: Option<Value>,
        obj: Value,
    ) -> Result<Value> {
        let mut obj = for_storage(rt, obj);
        // `old` is the object as served; watchers compare against it as stored (the caller
        // checked under this lock that it is still the stored one).
        let old = old.and_then(|_| self.get(rt, ns, name).cloned());
        if old.is_none() {
            if rt.namespaced {
                // The namespace may have started terminating since the write was prepared.
                self.check_namespace_open(rt, ns, name)?;
            }
            let uid = self.new_uid();
            obj["metadata"]["uid"] = json!(uid);
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if old.is_none() {
            self.created
                .insert(meta_str(&obj, "uid").to_string(), self.rv);
        }
        let key = (ns.to_string(), name.to_string());
        if obj["metadata"].get("deletionTimestamp").is_some() && finalizers(&obj).is_empty() {
            // The last finalizer is gone: the object is removed now.
            self.remove(store, rt, &key, Some(obj.clone()));
            self.collect_garbage(store);
            return Ok(with_version(rt, obj));
        }
        self.put(rt.storage_key(), key, obj.clone());
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(store, kind, rt.storage_key(), obj.clone(), old);
        if rt.group == "apiextensions.k8s.io" {
            self.register_crd(&obj);
        }
        // Cheap: the collector looks only at what its indexes point to.
        self.collect_garbage(store);
        Ok(with_version(rt, obj))
    }

    fn register_crd(&mut self, crd: &Value) {
        let group = crd["spec"]["group"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let plural = crd["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.types
            .retain(|(g, _, p), t| !(t.custom && *g == group && *p == plural));
        for rt in resources::from_crd(crd) {
            self.types.insert(
                (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
                Arc::new(rt),
            );
        }
    }

    /// Remove an object for good, emit DELETED; removing a CRD drops its objects and types,
    /// removing a namespace drops its contents.
    fn remove(&mut self, store: &Store, rt: &ResourceType, key: &ObjKey, last: Option<Value>) {
        let Some(prev) = self.take(&rt.storage_key(), key) else {
            return;
        };
        let mut obj = last.unwrap_or(prev.clone());
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(
            store,
            EventType::Deleted,
            rt.storage_key(),
            obj.clone(),
            Some(prev),
        );
        if rt.group == "apiextensions.k8s.io" {
            let group = obj["spec"]["group"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let plural = obj["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Some(crt) = self.type_of(&(group.clone(), plural.clone())) {
                let keys: Vec<ObjKey> = self
                    .objects
                    .get(&crt.storage_key())
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                for k in keys {
                    self.remove(store, &crt, &k, None);
                }
            }
            self.types
                .retain(|(g, _, p), t| !(t.custom && *g == group && *p == plural));
        }
        if rt.group.is_empty() && rt.plural == "namespaces" {
            let ns = key.1.clone();
            let types: Vec<Arc<ResourceType>> = self
                .types
                .values()
                .filter(|t| t.namespaced)
                .cloned()
                .collect();
            let mut seen = BTreeSet::new();
            for t in types {
                if !seen.insert(t.storage_key()) {
                    continue;
                }
                let keys: Vec<ObjKey> = self
                    .objects
                    .get(&t.storage_key())
                    .map(|m| m.keys().filter(|(n, _)| *n == ns).cloned().collect())
                    .unwrap_or_default();
                for k in keys {
                    self.remove(store, &t, &k, None);
                }
            }
        }
    }

    fn set_finalizers(
        &mut self,
        store: &Store,
        rt: &ResourceType,
        key: &ObjKey,
        f: impl FnOnce(&mut Vec<String>),
        mark_deleted: bool,
    ) -> Option<Value> {
        let old = self.get(rt, &key.0, &key.1)?.clone();
        let mut obj = old.clone();
        let mut fins = finalizers(&obj);
        f(&mut fins);
        obj["metadata"]["finalizers"] = json!(fins);
        if fins.is_empty() {
            obj["metadata"]
                .as_object_mut()
                .expect("object")
                .remove("finalizers");
        }
        if mark_deleted && obj["metadata"].get("deletionTimestamp").is_none() {
            obj["metadata"]["deletionTimestamp"] = json!(now());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        if obj == old {
            return Some(old);
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if obj["metadata"].get("deletionTimestamp").is_some() && fins.is_empty() {
            self.remove(store, rt, key, Some(obj.clone()));
            return Some(obj);
        }
        self.put(rt.storage_key(), key.clone(), obj.clone());
        self.emit(
            store,
            EventType::Modified,
            rt.storage_key(),
            obj.clone(),
            Some(old),
        );
        Some(obj)
    }

    fn delete_obj(
        &mut self,
        store: &Store,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        propagation: Option<&str>,
    ) -> Result<Value> {
        let key = (ns.to_string(), name.to_string());
        let obj = self
            .get(rt, ns, name)
            .cloned()
            .ok_or_else(|| Error::not_found(&rt.group, &rt.plural, name))?;
        if rt.group.is_empty() && rt.plural == "namespaces" {
            return Ok(self.terminate_namespace(store, rt, &key, obj));
        }
        let uid = meta_str(&obj, "uid").to_string();
        match propagation {
            Some("Orphan") => {
                for (drt, dkey) in self.dependents(&uid) {
                    if let Some(dep) = self.get(&drt, &dkey.0, &dkey.1).cloned() {
                        let mut new = dep.clone();
                        if let Some(refs) = new["metadata"]["ownerReferences"].as_array_mut() {
                            refs.retain(|r| r["uid"].as_str() != Some(uid.as_str()));
                        }
                        self.rv += 1;
                        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                        self.put(drt.storage_key(), dkey.clone(), new.clone());
                        self.emit(
                            store,
                            EventType::Modified,
                            drt.storage_key(),
                            new,
                            Some(dep),
                        );
                    }
                }
            }
            Some("Foreground") if !self.dependents(&uid).is_empty() => {
                let out = self
                    .set_finalizers(
                        store,
                        rt,
                        &key,
                        |f| {
                            if !f.iter().any(|x| x == "foregroundDeletion") {
                                f.push("foregroundDeletion".into());
                            }
                        },
                        true,
                    )
                    .unwrap_or(obj);
                return Ok(out);
            }
            _ => {}
        }
        if !finalizers(&obj).is_empty() {
            return Ok(self
                .set_finalizers(store, rt, &key, |_| {}, true)
                .unwrap_or(obj));
        }
        self.remove(store, rt, &key, None);
        let mut out = obj;
        out["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        Ok(out)
    }

    /// Namespace deletion as the namespace controller does it: the namespace turns
    /// `Terminating`, its contents are deleted (finalizers respected), and it goes once empty.
    fn terminate_namespace(
        &mut self,
        store: &Store,
        rt: &ResourceType,
        key: &ObjKey,
        obj: Value,
    ) -> Value {
        let mut current = obj.clone();
        if obj["metadata"].get("deletionTimestamp").is_none() {
            current["metadata"]["deletionTimestamp"] = json!(now());
            current["status"] = json!({"phase": "Terminating"});
            self.rv += 1;
            current["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.put(rt.storage_key(), key.clone(), current.clone());
            self.emit(
                store,
                EventType::Modified,
                rt.storage_key(),
                current.clone(),
                Some(obj),
            );
        }
        let ns = key.1.clone();
        let mut seen = BTreeSet::new();
        let types: Vec<Arc<ResourceType>> = self
            .types
            .values()
            .filter(|t| t.namespaced)
            .cloned()
            .collect();
        for t in types {
            if !seen.insert(t.storage_key()) {
                continue;
            }
            let keys: Vec<ObjKey> = self
                .objects
                .get(&t.storage_key())
                .map(|m| m.keys().filter(|(n, _)| *n == ns).cloned().collect())
                .unwrap_or_default();
            for k in keys {
                let deleting = self
                    .get(&t, &k.0, &k.1)
                    .is_some_and(|o| o["metadata"].get("deletionTimestamp").is_some());
                if !deleting {
                    let _ = self.delete_obj(store, &t, &k.0, &k.1, None);
                }
            }
        }
        self.finish_namespaces(store);
        current
    }

    /// Remove terminating namespaces that are empty (and have no finalizers of their own).
    fn finish_namespaces(&mut self, store: &Store) -> bool {
        let Some(ns_rt) = self.type_of(&(String::new(), "namespaces".into())) else {
            return false;
        };
        let terminating: Vec<ObjKey> = self
            .objects
            .get(&ns_rt.storage_key())
            .map(|m| {
                m.iter()
                    .filter(|(_, o)| {
                        o["metadata"].get("deletionTimestamp").is_some() && finalizers(o).is_empty()
                    })
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut removed = false;
        for key in terminating {
            let empty = self
                .objects
                .iter()
                .filter(|(skey, _)| self.type_of(skey).is_some_and(|t| t.namespaced))
                .all(|(_, m)| !m.keys().any(|(n, _)| *n == key.1));
            if empty {
                self.remove(store, &ns_rt, &key, None);
                removed = true;
            }
        }
        removed
    }

    fn dependents(&self, uid: &str) -> Vec<(Arc<ResourceType>, ObjKey)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|(skey, k)| Some((self.type_of(skey)?, k.clone())))
            .collect()
    }

    /// The garbage collector: dependents whose owners are all gone are deleted (background);
    /// owners waiting in foreground deletion lose their finalizer once no dependents remain.
    /// It looks only at objects the indexes point it to, never at the whole store.
    fn collect_garbage(&mut self, store: &Store) {
        for _ in 0..64 {
            let mut orphans = Vec::new();
            let mut dangling = Vec::new();
            for loc in std::mem::take(&mut self.gc_pending) {
                let (Some(rt), Some(o)) = (self.type_of(&loc.0), self.get_at(&loc)) else {
                    continue;
                };
                let owners = owner_uids(o);
                let gone = |u: &String| !self.created.contains_key(u);
                let deleting = o["metadata"].get("deletionTimestamp").is_some();
                if !owners.is_empty() && !deleting && owners.iter().all(gone) {
                    orphans.push((rt, loc.1));
                } else if owners.iter().any(gone) {
                    // Some owners remain: the collector only drops the dangling references.
                    dangling.push((rt, loc.1));
                }
            }
            let waiting: Vec<_> = self
                .foreground
                .iter()
                .filter_map(|loc| {
                    let uid = meta_str(self.get_at(loc)?, "uid").to_string();
                    Some((self.type_of(&loc.0)?, loc.1.clone(), uid))
                })
                .collect();
            let mut changed = false;
            for (rt, k, uid) in waiting {
                let deps = self.dependents(&uid);
                if deps.is_empty() {
                    self.set_finalizers(
                        store,
                        &rt,
                        &k,
                        |f| f.retain(|x| x != "foregroundDeletion"),
                        false,
                    );
                    changed = true;
                } else {
                    for (drt, dk) in deps {
                        let being_deleted = self
                            .get(&drt, &dk.0, &dk.1)
                            .is_some_and(|d| d["metadata"].get("deletionTimestamp").is_some());
                        if !being_deleted {
                            let _ = self.delete_obj(store, &drt, &dk.0, &dk.1, Some("Foreground"));
                            changed = true;
                        }
                    }
                }
            }
            for (rt, k) in orphans {
                let _ = self.delete_obj(store, &rt, &k.0, &k.1, None);
                changed = true;
            }
            for (rt, k) in dangling {
                let Some(old) = self.get(&rt, &k.0, &k.1).cloned() else {
                    continue;
                };
                let mut new = old.clone();
                if let Some(refs) = new["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| {
                        r["uid"]
                            .as_str()
                            .is_some_and(|u| self.created.contains_key(u))
                    });
                }
                self.rv += 1;
                new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                self.put(rt.storage_key(), k.clone(), new.clone());
                self.emit(store, EventType::Modified, rt.storage_key(), new, Some(old));
                changed = true;
            }
            changed |= self.finish_namespaces(store);
            if !changed {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(rv: &str, time: &str, label: &str, manager: &str, replicas: u32) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "resourceVersion": rv, "labels": {"app": label},
                "managedFields": [{"manager": manager, "operation": "Apply", "time": time,
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"replicas": replicas},
            "status": {"readyReplicas": 0},
        })
    }

    #[test]
    fn no_op_writes_are_told_apart_from_changes() {
        let stored = object("1", "t1", "a", "m", 1);
        assert!(
            same_content(&stored, &object("2", "t2", "a", "m", 1)),
            "bookkeeping only"
        );
        assert!(
            !same_content(&stored, &object("1", "t1", "b", "m", 1)),
            "a label"
        );
        assert!(
            !same_content(&stored, &object("1", "t1", "a", "other", 1)),
            "ownership"
        );
        assert!(
            !same_content(&stored, &object("1", "t1", "a", "m", 2)),
            "the spec"
        );
        let mut more = stored.clone();
        more["metadata"]["annotations"] = json!({"x": "y"});
        assert!(!same_content(&stored, &more), "a new metadata field");
    }

    #[test]
    fn generation_counts_spec_not_metadata_nor_a_status_subresource() {
        let deployments = resources::builtins()
            .into_iter()
            .find(|r| r.plural == "deployments")
            .unwrap();
        let stored = object("1", "t1", "a", "m", 1);
        assert!(!spec_changed(
            &deployments,
            &stored,
            &object("2", "t2", "b", "x", 1)
        ));
        assert!(spec_changed(
            &deployments,
            &stored,
            &object("1", "t1", "a", "m", 3)
        ));
        let mut status = stored.clone();
        status["status"]["readyReplicas"] = json!(1);
        assert!(!spec_changed(&deployments, &stored, &status));
        let mut extra = stored.clone();
        extra["data"] = json!({"k": "v"});
        assert!(
            spec_changed(&deployments, &stored, &extra),
            "a new top-level field"
        );
    }
}
