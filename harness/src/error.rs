//! The crate's one error type. API failures carry everything needed to render a
//! `metav1.Status` body, so handlers can use `?` and still answer like the real server.

use serde_json::{Value, json};

/// Every failure of the harness: API errors (rendered as `metav1.Status`) and setup errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API error; rendered as a `Status` object with this code and reason.
    #[error("{code} {reason}: {message}")]
    Api {
        /// HTTP status code, also `Status.code`.
        code: u16,
        /// `Status.reason`, e.g. `NotFound`, `Conflict`, `Invalid`.
        reason: String,
        /// `Status.message`.
        message: String,
        /// `Status.details`, if any.
        details: Option<Value>,
    },
    /// Socket or file errors while starting a cluster or writing a kubeconfig.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A configuration string (node, fault, cluster spec) could not be parsed.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Building a `kube::Client` failed.
    #[error("kube client: {0}")]
    Kube(#[from] kube::Error),
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `group/resource` as the API server writes it in messages: `deployments.apps`, `pods`.
pub fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

impl Error {
    /// Any API error.
    pub fn api(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Error::Api {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    fn with_details(self, details: Value) -> Self {
        match self {
            Error::Api {
                code,
                reason,
                message,
                ..
            } => Error::Api {
                code,
                reason,
                message,
                details: Some(details),
            },
            other => other,
        }
    }

    /// 404 for a named object, worded like the API server.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::api(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 404 for an unknown path or resource type.
    pub fn no_route() -> Self {
        Self::api(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 409 AlreadyExists on create.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::api(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        Self::api(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(group, plural)
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 409 Conflict with a custom message and causes (server-side apply conflicts).
    pub fn conflict_with(
        group: &str,
        plural: &str,
        name: &str,
        message: String,
        causes: Vec<Value>,
    ) -> Self {
        Self::api(409, "Conflict", message)
            .with_details(json!({"name": name, "group": group, "kind": plural, "causes": causes}))
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::api(400, "BadRequest", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::api(405, "MethodNotAllowed", message)
    }

    /// 410 Expired (too old resourceVersion or continue token).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::api(410, "Expired", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::api(415, "UnsupportedMediaType", message)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::api(500, "InternalError", message)
    }

    /// 422 Invalid with field causes `(field, reason, message)`; the top-level message joins them
    /// as the API server does: `Kind.group "name" is invalid: [a: ..., b: ...]`.
    pub fn invalid(
        kind: &str,
        group: &str,
        name: &str,
        causes: Vec<(String, String, String)>,
    ) -> Self {
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let texts: Vec<String> = causes.iter().map(|(_, _, m)| m.clone()).collect();
        let joined = if texts.len() == 1 {
            texts[0].clone()
        } else {
            format!("[{}]", texts.join(", "))
        };
        // A cause's message omits the field, which has its own property (kubectl prints both).
        let causes_json: Vec<Value> = causes
            .iter()
            .map(|(field, reason, message)| {
                let body = message
                    .strip_prefix(&format!("{field}: "))
                    .unwrap_or(message);
                json!({"reason": reason, "message": body, "field": field})
            })
            .collect();
        Self::api(
            422,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {joined}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes_json}))
    }

    /// HTTP status code to answer with.
    pub fn code(&self) -> u16 {
        match self {
            Error::Api { code, .. } => *code,
            Error::Config(_) => 400,
            _ => 500,
        }
    }

    /// The `metav1.Status` body for this error.
    pub fn status(&self) -> Value {
        let (code, reason, message, details) = match self {
            Error::Api {
                code,
                reason,
                message,
                details,
            } => (*code, reason.clone(), message.clone(), details.clone()),
            other => (
                other.code(),
                "InternalError".to_string(),
                other.to_string(),
                None,
            ),
        };
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        });
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}
