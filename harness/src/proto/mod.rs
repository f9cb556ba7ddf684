//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), which client-go's typed
//! clients send for built-in kinds (`kubectl create namespace|secret|configmap|deployment`,
//! `kubectl expose`, `kubectl auth can-i`). The bytes are decoded with k8s-pb's prost messages
//! and turned into the JSON the rest of the harness works on.
//!
//! Go's protobuf encoding writes every non-pointer field, zero or not, and a pointer field only
//! when set; JSON omits zero values with `omitempty`. So empty strings, zero numbers and `false`
//! are left out, except for the pointer fields whose zero means something (`replicas: 0`,
//! `gracePeriodSeconds: 0`, `automountServiceAccountToken: false`, ...), listed below.

mod generated;

use std::collections::BTreeMap;

use base64::Engine;
use prost::Message;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes before every Kubernetes protobuf envelope (`runtime.Unknown`).
const MAGIC: &[u8] = b"k8s\x00";

/// Integer pointer fields of the accepted kinds whose 0 is a value, not "unset".
const ZERO_IS_A_VALUE: &[&str] = &[
    "replicas",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "gracePeriodSeconds",
    "leaseDurationSeconds",
    "leaseTransitions",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "defaultMode",
    "mode",
    "expirationSeconds",
    "timeoutSeconds",
];

/// Boolean pointer fields of the accepted kinds whose `false` is a value, not "unset".
const FALSE_IS_A_VALUE: &[&str] = &[
    "automountServiceAccountToken",
    "enableServiceLinks",
    "hostUsers",
    "immutable",
    "optional",
    "orphanDependents",
    "allowPrivilegeEscalation",
    "privileged",
    "readOnlyRootFilesystem",
    "runAsNonRoot",
    "allocateLoadBalancerNodePorts",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "ignoreDryRun",
];

/// The JSON form of one decoded message.
trait ToJson {
    /// `Value::Null` means "leave the field out" (a zero time).
    fn to_json(&self) -> Value;
}

/// The JSON object of a Kubernetes protobuf body: envelope checked, message decoded, `apiVersion`
/// and `kind` set. Kinds outside the accepted set are refused with 415, as the API server refuses
/// what it cannot decode, naming the media types that work.
pub fn decode(body: &[u8]) -> Result<Value> {
    let bad = |why: String| Error::bad_request(format!("invalid protobuf body: {why}"));
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s\\0 prefix of a Kubernetes protobuf object".into()))?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(envelope)
        .map_err(|e| bad(e.to_string()))?;
    if unknown
        .content_encoding
        .as_deref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(bad(format!(
            "content encoding {:?} is not supported",
            unknown.content_encoding.unwrap_or_default()
        )));
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let mut obj = generated::decode_object(&api_version, &kind, &raw)
        .ok_or_else(|| {
            Error::unsupported_media(format!(
                "the harness decodes protobuf bodies only for built-in kinds it serves, not {api_version} {kind}; send application/json or application/yaml"
            ))
        })?
        .map_err(|e| bad(format!("{api_version} {kind}: {e}")))?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

fn put(m: &mut Map<String, Value>, name: &str, v: Value) {
    if !v.is_null() {
        m.insert(name.to_string(), v);
    }
}

fn put_str(m: &mut Map<String, Value>, name: &str, v: &Option<String>) {
    if let Some(s) = v.as_ref().filter(|s| !s.is_empty()) {
        put(m, name, json!(s));
    }
}

fn put_bool(m: &mut Map<String, Value>, name: &str, v: &Option<bool>) {
    match v {
        Some(true) => put(m, name, json!(true)),
        Some(false) if FALSE_IS_A_VALUE.contains(&name) => put(m, name, json!(false)),
        _ => {}
    }
}

fn put_i32(m: &mut Map<String, Value>, name: &str, v: &Option<i32>) {
    put_i64(m, name, &v.map(i64::from));
}

fn put_i64(m: &mut Map<String, Value>, name: &str, v: &Option<i64>) {
    match v {
        Some(0) if !ZERO_IS_A_VALUE.contains(&name) => {}
        Some(n) => put(m, name, json!(n)),
        None => {}
    }
}

fn base64(b: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(b))
}

fn put_msg<T: ToJson>(m: &mut Map<String, Value>, name: &str, v: &Option<T>) {
    if let Some(v) = v {
        put(m, name, v.to_json());
    }
}

fn vec_str(m: &mut Map<String, Value>, name: &str, v: &[String]) {
    if !v.is_empty() {
        put(m, name, json!(v));
    }
}

fn vec_i32(m: &mut Map<String, Value>, name: &str, v: &[i32]) {
    if !v.is_empty() {
        put(m, name, json!(v));
    }
}

fn vec_i64(m: &mut Map<String, Value>, name: &str, v: &[i64]) {
    if !v.is_empty() {
        put(m, name, json!(v));
    }
}

fn vec_msg<T: ToJson>(m: &mut Map<String, Value>, name: &str, v: &[T]) {
    if !v.is_empty() {
        put(
            m,
            name,
            Value::Array(v.iter().map(ToJson::to_json).collect()),
        );
    }
}

fn map_str(m: &mut Map<String, Value>, name: &str, v: &BTreeMap<String, String>) {
    if !v.is_empty() {
        put(m, name, json!(v));
    }
}

fn map_bytes(m: &mut Map<String, Value>, name: &str, v: &BTreeMap<String, Vec<u8>>) {
    if !v.is_empty() {
        let o = v.iter().map(|(k, b)| (k.clone(), base64(b))).collect();
        put(m, name, Value::Object(o));
    }
}

fn map_msg<T: ToJson>(m: &mut Map<String, Value>, name: &str, v: &BTreeMap<String, T>) {
    if !v.is_empty() {
        let o = v.iter().map(|(k, x)| (k.clone(), x.to_json())).collect();
        put(m, name, Value::Object(o));
    }
}

fn timestamp(seconds: Option<i64>, nanos: Option<i32>, format: &str) -> Value {
    let (seconds, nanos) = (seconds.unwrap_or(0), nanos.unwrap_or(0));
    if seconds == 0 && nanos == 0 {
        // Go's zero time, which JSON writes as null.
        return Value::Null;
    }
    match k8s_openapi::jiff::Timestamp::new(seconds, nanos) {
        Ok(t) => json!(t.strftime(format).to_string()),
        Err(_) => Value::Null,
    }
}

impl ToJson for k8s_pb::apimachinery::pkg::apis::meta::v1::Time {
    fn to_json(&self) -> Value {
        timestamp(self.seconds, self.nanos, "%Y-%m-%dT%H:%M:%SZ")
    }
}

impl ToJson for k8s_pb::apimachinery::pkg::apis::meta::v1::MicroTime {
    fn to_json(&self) -> Value {
        timestamp(self.seconds, self.nanos, "%Y-%m-%dT%H:%M:%S.%6fZ")
    }
}

impl ToJson for k8s_pb::apimachinery::pkg::apis::meta::v1::Duration {
    fn to_json(&self) -> Value {
        // Go's time.Duration string ("1h2m3.5s"), from nanoseconds.
        let nanos = self.duration.unwrap_or(0);
        let sign = if nanos < 0 { "-" } else { "" };
        let nanos = nanos.unsigned_abs();
        let (h, rest) = (nanos / 3_600_000_000_000, nanos % 3_600_000_000_000);
        let (min, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
        let secs = rest as f64 / 1e9;
        let text = match (h, min) {
            (0, 0) => format!("{secs}s"),
            (0, m) => format!("{m}m{secs}s"),
            (h, m) => format!("{h}h{m}m{secs}s"),
        };
        json!(format!("{sign}{text}"))
    }
}

impl ToJson for k8s_pb::apimachinery::pkg::apis::meta::v1::FieldsV1 {
    fn to_json(&self) -> Value {
        self.raw
            .as_deref()
            .and_then(|r| serde_json::from_slice(r).ok())
            .unwrap_or_else(|| json!({}))
    }
}

impl ToJson for k8s_pb::apimachinery::pkg::runtime::RawExtension {
    fn to_json(&self) -> Value {
        self.raw
            .as_deref()
            .and_then(|r| serde_json::from_slice(r).ok())
            .unwrap_or(Value::Null)
    }
}

impl ToJson for k8s_pb::apimachinery::pkg::api::resource::Quantity {
    fn to_json(&self) -> Value {
        json!(self.string.clone().unwrap_or_default())
    }
}

impl ToJson for k8s_pb::apimachinery::pkg::util::intstr::IntOrString {
    fn to_json(&self) -> Value {
        // type 0 is Int, 1 is String.
        match self.r#type.unwrap_or(0) {
            1 => json!(self.str_val.clone().unwrap_or_default()),
            _ => json!(self.int_val.unwrap_or(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [MAGIC, &unknown.encode_to_vec()].concat()
    }

    fn meta(name: &str) -> Option<meta::ObjectMeta> {
        Some(meta::ObjectMeta {
            name: Some(name.into()),
            // As Go writes them: every non-pointer field, even empty.
            generate_name: Some(String::new()),
            generation: Some(0),
            creation_timestamp: Some(meta::Time {
                seconds: Some(0),
                nanos: Some(0),
            }),
            ..Default::default()
        })
    }

    #[test]
    fn secret_bytes_become_base64_and_go_zero_values_are_left_out() {
        let secret = core::Secret {
            metadata: meta("creds"),
            data: [("key".to_string(), vec![0u8, 1, 2, 255])].into(),
            r#type: Some("Opaque".into()),
            immutable: None,
            ..Default::default()
        };
        let obj = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                "data": {"key": "AAEC/w=="}, "type": "Opaque"})
        );
    }

    #[test]
    fn deployment_keeps_pointer_zeros_and_int_or_string() {
        use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
        let d = apps::Deployment {
            metadata: meta("web"),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(0),
                min_ready_seconds: Some(0),
                paused: Some(false),
                strategy: Some(apps::DeploymentStrategy {
                    r#type: Some("RollingUpdate".into()),
                    rolling_update: Some(apps::RollingUpdateDeployment {
                        max_unavailable: Some(IntOrString {
                            r#type: Some(1),
                            int_val: Some(0),
                            str_val: Some("25%".into()),
                        }),
                        max_surge: Some(IntOrString {
                            r#type: Some(0),
                            int_val: Some(2),
                            str_val: Some(String::new()),
                        }),
                    }),
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: meta(""),
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: Some("web".into()),
                            image: Some("nginx".into()),
                            stdin: Some(false),
                            ports: vec![core::ContainerPort {
                                container_port: Some(80),
                                host_port: Some(0),
                                ..Default::default()
                            }],
                            resources: Some(core::ResourceRequirements {
                                limits: [(
                                    "cpu".to_string(),
                                    k8s_pb::apimachinery::pkg::api::resource::Quantity {
                                        string: Some("500m".into()),
                                    },
                                )]
                                .into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: Some(Default::default()),
        };
        let obj = decode(&envelope("apps/v1", "Deployment", d.encode_to_vec())).unwrap();
        assert_eq!(obj["spec"]["replicas"], 0, "{obj}");
        assert!(obj["spec"].get("minReadySeconds").is_none(), "{obj}");
        assert!(obj["spec"].get("paused").is_none(), "{obj}");
        let ru = &obj["spec"]["strategy"]["rollingUpdate"];
        assert_eq!(ru, &json!({"maxUnavailable": "25%", "maxSurge": 2}));
        let c = &obj["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c,
            &json!({"name": "web", "image": "nginx", "ports": [{"containerPort": 80}],
                "resources": {"limits": {"cpu": "500m"}}})
        );
        assert_eq!(obj["status"], json!({}));
    }

    #[test]
    fn acronym_field_names_follow_the_json_api() {
        let svc = core::Service {
            metadata: meta("web"),
            spec: Some(core::ServiceSpec {
                cluster_ip: Some("None".into()),
                cluster_ips: vec!["None".into()],
                external_ips: vec!["10.0.0.1".into()],
                ..Default::default()
            }),
            status: None,
        };
        let obj = decode(&envelope("v1", "Service", svc.encode_to_vec())).unwrap();
        assert_eq!(
            obj["spec"],
            json!({"clusterIP": "None", "clusterIPs": ["None"], "externalIPs": ["10.0.0.1"]})
        );
    }

    #[test]
    fn times_are_rfc3339() {
        let ev = k8s_pb::api::events::v1::Event {
            metadata: meta("e"),
            event_time: Some(meta::MicroTime {
                seconds: Some(1_767_225_600),
                nanos: Some(123_456_000),
            }),
            deprecated_first_timestamp: Some(meta::Time {
                seconds: Some(1_767_225_600),
                nanos: Some(0),
            }),
            ..Default::default()
        };
        let obj = decode(&envelope("events.k8s.io/v1", "Event", ev.encode_to_vec())).unwrap();
        assert_eq!(obj["eventTime"], "2026-01-01T00:00:00.123456Z");
        assert_eq!(obj["deprecatedFirstTimestamp"], "2026-01-01T00:00:00Z");
    }

    #[test]
    fn bad_bodies_are_clear_errors() {
        let e = decode(b"{\"kind\": \"Secret\"}").unwrap_err();
        assert_eq!(e.code(), 400);
        assert!(e.to_string().contains("k8s\\0 prefix"), "{e}");
        let e = decode(&[MAGIC, &[0xff, 0xff, 0xff]].concat()).unwrap_err();
        assert_eq!(e.code(), 400, "{e}");
        let e = decode(&envelope("batch/v1", "Job", Vec::new())).unwrap_err();
        assert_eq!(e.code(), 415);
        assert!(e.to_string().contains("batch/v1 Job"), "{e}");
        // A truncated message inside a valid envelope.
        let secret = core::Secret {
            metadata: meta("creds"),
            ..Default::default()
        }
        .encode_to_vec();
        let e = decode(&envelope(
            "v1",
            "Secret",
            secret[..secret.len() - 1].to_vec(),
        ))
        .unwrap_err();
        assert_eq!(e.code(), 400, "{e}");
    }
}
