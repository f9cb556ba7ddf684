//! Watch streams: newline-delimited `{"type", "object"}` events, as the API server sends them.
//!
//! Start points follow the API semantics: no `resourceVersion` (or `"0"`) first sends the current
//! objects as synthetic ADDED events; a specific version replays retained history after it, or
//! sends one ERROR event with a 410 Expired `Status` if it is older than the history kept.
//! Bookmarks carry the latest resourceVersion seen; label/field selector transitions turn into
//! ADDED/DELETED like on the real server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::error::Error;
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector, labels_of};
use crate::store::{Event, EventType, Store};

/// Parameters of one watch request.
#[derive(Debug, Clone)]
pub struct WatchParams {
    /// Namespace to watch, None: all.
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// Send `PartialObjectMetadata` (Accept `as=PartialObjectMetadata`).
    pub partial: bool,
}

/// An object as `meta.k8s.io/v1` `PartialObjectMetadata`.
pub fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

impl WatchParams {
    fn matches(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
            && self.labels.matches(&labels_of(obj))
            && self.fields.matches(obj)
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    line_of_json(
        kind,
        &serde_json::to_vec(object).expect("a JSON value serializes"),
    )
}

/// One watch event line around an object already serialized (`kind` is one of the fixed
/// event type words, which need no escaping).
fn line_of_json(kind: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}),
    )
}

/// The chunks of one watch response; the stream ends when the watch ends.
pub fn start(
    store: Arc<Store>,
    rt: Arc<ResourceType>,
    params: WatchParams,
    bookmark_interval: Duration,
    mut kill: tokio::sync::watch::Receiver<u64>,
) -> futures::channel::mpsc::Receiver<Bytes> {
    let (mut tx, rx) = futures::channel::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let rv_param = params.resource_version.clone().unwrap_or_default();
        let initial = match params.send_initial_events {
            Some(v) => v,
            None => rv_param.is_empty() || rv_param == "0",
        };
        let mut start_events: Vec<Bytes> = Vec::new();
        let from = if initial {
            let (items, rv) = store.list(&rt, params.namespace.as_deref());
            for item in items.iter().filter(|o| params.matches(o)) {
                let shown = if params.partial {
                    partial(item)
                } else {
                    item.clone()
                };
                start_events.push(line("ADDED", &shown));
            }
            if params.send_initial_events == Some(true) && params.bookmarks {
                start_events.push(bookmark(&rt, rv, true));
            }
            Some(rv)
        } else {
            match rv_param.parse::<u64>() {
                Ok(rv) => Some(rv),
                Err(_) => {
                    let e = Error::bad_request(format!("invalid resource version: {rv_param}"));
                    let _ = tx.send(line("ERROR", &e.status())).await;
                    return;
                }
            }
        };
        let (replay, mut rx, current) = match store.watch_from(from) {
            Ok(x) => x,
            Err(e) => {
                let _ = tx.send(line("ERROR", &e.status())).await;
                return;
            }
        };
        let mut last_rv = from.unwrap_or(current);
        for chunk in start_events {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        for ev in replay {
            last_rv = last_rv.max(ev.rv);
            if let Some(chunk) = render(&rt, &params, &ev)
                && tx.send(chunk).await.is_err()
            {
                return;
            }
        }
        let deadline = params.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut tick = tokio::time::interval(bookmark_interval.min(Duration::from_secs(1)));
        let mut last_bookmark = tokio::time::Instant::now();
        tick.tick().await;
        loop {
            let timeout = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last_rv {
                            continue;
                        }
                        last_rv = ev.rv;
                        if let Some(chunk) = render(&rt, &params, &ev)
                            && tx.send(chunk).await.is_err()
                        {
                            return;
                        }
                    }
                    // A watcher that falls behind is closed; clients re-watch, as with the real server.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    if tx.is_closed() {
                        return;
                    }
                    if params.bookmarks && last_bookmark.elapsed() >= bookmark_interval {
                        last_bookmark = tokio::time::Instant::now();
                        if tx.send(bookmark(&rt, last_rv, false)).await.is_err() {
                            return;
                        }
                    }
                }
                _ = kill.changed() => return,
                _ = timeout => return,
            }
        }
    });
    rx
}

fn render(rt: &ResourceType, params: &WatchParams, ev: &Event) -> Option<Bytes> {
    if ev.key != rt.storage_key() {
        return None;
    }
    if crate::events::is_core_view(rt) {
        // A view with other field names: selectors and output use the object as served.
        let object = crate::store::with_version(rt, ev.object.clone());
        let old = ev.old.clone().map(|o| crate::store::with_version(rt, o));
        let kind = transition(params, ev.kind, old.as_ref(), &object)?;
        let shown = if params.partial {
            partial(&object)
        } else {
            object
        };
        return Some(line(kind.as_str(), &shown));
    }
    let kind = transition(params, ev.kind, ev.old.as_ref(), &ev.object)?;
    let api_version = rt.api_version();
    if params.partial {
        return Some(line(kind.as_str(), &partial(&ev.object)));
    }
    if ev.object["apiVersion"] != api_version.as_str() {
        // Served at another version than stored: shown with the version asked for.
        let mut obj = ev.object.clone();
        obj["apiVersion"] = json!(api_version);
        return Some(line(kind.as_str(), &obj));
    }
    // As stored: serialized once, whoever watches.
    let json = ev.json.get_or_init(|| {
        Bytes::from(serde_json::to_vec(&ev.object).expect("a JSON value serializes"))
    });
    Some(line_of_json(kind.as_str(), json))
}

/// The event a watcher with these selectors sees for a change from `old` to `object`, if any.
fn transition(
    params: &WatchParams,
    kind: EventType,
    old: Option<&Value>,
    object: &Value,
) -> Option<EventType> {
    let now = params.matches(object);
    let before = old.is_some_and(|o| params.matches(o));
    let kind = match (kind, before, now) {
        (EventType::Added, _, true) => EventType::Added,
        (EventType::Deleted, _, true) => EventType::Deleted,
        (EventType::Modified, true, true) => EventType::Modified,
        (EventType::Modified, false, true) => EventType::Added,
        (EventType::Modified, true, false) => EventType::Deleted,
        _ => return None,
    };
    Some(kind)
}
