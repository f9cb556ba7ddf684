//! The one error type of the artifacts library. Variants are typed so the operator can map them
//! to conditions (e.g. [`ArtifactError::Residency`] -> `Forbidden`) and the CLI to exit codes.

use super::digest::Digest;
use super::manifest::ManifestError;
use super::residency::ResidencyError;
use std::path::PathBuf;

/// A failed S3 request, after retries when it was transient.
#[derive(Debug, Clone, thiserror::Error)]
#[error("S3 {operation} s3://{bucket}/{key}: {message}{}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct S3Error {
    /// SDK operation name, e.g. `GetObject`.
    pub operation: &'static str,
    pub bucket: String,
    pub key: String,
    /// HTTP status when the store answered.
    pub status: Option<u16>,
    /// S3 error code when the store sent one (e.g. `SlowDown`, `NoSuchKey`).
    pub code: Option<String>,
    pub message: String,
    /// Worth retrying: 5xx, throttling, timeouts, connection failures and resets.
    pub transient: bool,
}

impl S3Error {
    /// The store answered 404 (or `NoSuchKey`/`NoSuchUpload`).
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
            || matches!(
                self.code.as_deref(),
                Some("NoSuchKey" | "NoSuchUpload" | "NotFound")
            )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The request itself is unusable (bad URI, bad option, overlapping locations). Exit code 2.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The residency rule forbids the copy; nothing was read or written.
    #[error(transparent)]
    Residency(#[from] ResidencyError),
    /// Building an S3 client failed (credentials, profile, endpoint).
    #[error("cannot configure S3 client: {0}")]
    Client(String),
    #[error(transparent)]
    S3(#[from] S3Error),
    /// A response body broke off mid-stream (connection reset, timeout).
    #[error("reading s3://{bucket}/{key}: {message}")]
    Stream {
        bucket: String,
        key: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The model has no manifest (never synced, or a sync is in progress).
    #[error("no manifest at s3://{bucket}/{key}: the model is absent or a sync has not finished")]
    ManifestMissing { bucket: String, key: String },
    #[error("manifest at s3://{bucket}/{key}: {source}")]
    Manifest {
        bucket: String,
        key: String,
        source: ManifestError,
    },
    /// The manifest's digest is not the one asked for.
    #[error("model digest mismatch: expected {expected}, store has {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// Content does not match its recorded size or SHA-256.
    #[error("{what}: content mismatch: expected {expected}, got {actual}")]
    ContentMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// The source changed while it was being copied, or disagrees with its own manifest.
    #[error("source changed or inconsistent: {0}")]
    SourceChanged(String),
}

impl ArtifactError {
    /// Whether a retry of the same request could succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ArtifactError::S3(e) => e.transient,
            ArtifactError::Stream { .. } => true,
            _ => false,
        }
    }

    /// Whether the caller's input is at fault (CLI exit code 2) rather than the environment.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ArtifactError::InvalidRequest(_) | ArtifactError::Residency(_)
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ArtifactError::Io {
            path: path.into(),
            source,
        }
    }
}
