//! The one error type of the artifacts library. Variants are typed so the operator can map them
//! to conditions (e.g. [`ArtifactError::Residency`] -> `Forbidden`) and the CLI to exit codes.

use super::digest::Digest;
use super::manifest::ManifestError;
use super::residency::ResidencyError;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// `text` with every control character (newline, escape, NUL, ...) written as an escape, so a
/// hostile object key or path cannot forge lines or terminal sequences in a message.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` cut to its first `max` characters (marked, with the full length) so a hostile name
/// cannot flood a message, a status condition or an Event.
pub fn shorten(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}...({} bytes)", &text[..cut], text.len())),
    }
}

fn printable_path(path: &Path) -> String {
    printable(&path.display().to_string()).into_owned()
}

/// A failed S3 request, after retries when it was transient.
#[derive(Debug, Clone, thiserror::Error)]
#[error("S3 {operation} s3://{}/{}: {}{}", printable(bucket), printable(key), printable(message), status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct S3Error {
    /// SDK operation name, e.g. `GetObject`.
    pub operation: &'static str,
    pub bucket: String,
    pub key: String,
    /// HTTP status when the store answered.
    pub status: Option<u16>,
    /// S3 error code when the store sent one (e.g. `SlowDown`, `NoSuchKey`).
    pub code: Option<String>,
    /// One line: the store's error code and message, or what failed in the connection.
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
    #[error("invalid request: {}", printable(.0))]
    InvalidRequest(String),
    /// The model named cannot be published or fetched as it is (no files, a key in the reserved
    /// `.skybridge/` directory, a key that is not a safe relative path). Exit code 2.
    #[error("invalid model: {}", printable(.0))]
    InvalidModel(String),
    /// A manifest, sync state or listing is larger than its configured limit. Exit code 2 (raise
    /// the limit if the model really is that large).
    #[error("{} is larger than the limit of {limit} {unit}{}", printable(what), hint.as_deref().map(|h| format!(" ({})", printable(h))).unwrap_or_default())]
    TooLarge {
        what: String,
        limit: u64,
        unit: &'static str,
        /// How to raise the limit.
        hint: Option<String>,
    },
    /// The residency rule forbids the copy; nothing was read or written.
    #[error(transparent)]
    Residency(#[from] ResidencyError),
    /// Building an S3 client failed (credentials, profile, endpoint).
    #[error("cannot configure S3 client: {}", printable(.0))]
    Client(String),
    #[error(transparent)]
    S3(#[from] S3Error),
    /// A response body broke off mid-stream (connection reset, timeout).
    #[error(
        "reading s3://{}/{}: {}",
        printable(bucket),
        printable(key),
        printable(message)
    )]
    Stream {
        bucket: String,
        key: String,
        message: String,
    },
    #[error("{}: {source}", printable_path(path))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The model has no manifest (never synced, or a sync is in progress).
    #[error(
        "no manifest at s3://{}/{}: the model is absent or a sync has not finished",
        printable(bucket),
        printable(key)
    )]
    ManifestMissing { bucket: String, key: String },
    #[error("manifest at s3://{}/{}: {source}", printable(bucket), printable(key))]
    Manifest {
        bucket: String,
        key: String,
        source: ManifestError,
    },
    /// The manifest's digest is not the one asked for.
    #[error("model digest mismatch: expected {expected}, store has {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// Content does not match its recorded size or SHA-256. `what` names the object or file;
    /// `expected` and `actual` are e.g. `N bytes sha256:...`.
    #[error(
        "{}: content does not match: expected {}, got {}",
        printable(what),
        printable(expected),
        printable(actual)
    )]
    ContentMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// The source changed while it was being copied, or disagrees with its own manifest.
    #[error("source changed or inconsistent: {}", printable(.0))]
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
            ArtifactError::InvalidRequest(_)
                | ArtifactError::InvalidModel(_)
                | ArtifactError::TooLarge { .. }
                | ArtifactError::Residency(_)
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ArtifactError::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_in_every_message() {
        let hostile = "m/evil\n\u{1b}[31mFAKE\r\0.bin";
        let errors = [
            ArtifactError::InvalidRequest(hostile.into()),
            ArtifactError::InvalidModel(hostile.into()),
            ArtifactError::TooLarge {
                what: hostile.into(),
                limit: 1,
                unit: "MiB",
                hint: Some(hostile.into()),
            },
            ArtifactError::Client(hostile.into()),
            ArtifactError::S3(S3Error {
                operation: "GetObject",
                bucket: "bkt".into(),
                key: hostile.into(),
                status: Some(500),
                code: None,
                message: hostile.into(),
                transient: false,
            }),
            ArtifactError::Stream {
                bucket: "bkt".into(),
                key: hostile.into(),
                message: hostile.into(),
            },
            ArtifactError::io(hostile, std::io::Error::other("x")),
            ArtifactError::ManifestMissing {
                bucket: "bkt".into(),
                key: hostile.into(),
            },
            ArtifactError::Manifest {
                bucket: "bkt".into(),
                key: hostile.into(),
                source: ManifestError::DuplicatePath(hostile.into()),
            },
            ArtifactError::ContentMismatch {
                what: hostile.into(),
                expected: hostile.into(),
                actual: hostile.into(),
            },
            ArtifactError::SourceChanged(hostile.into()),
        ];
        for e in errors {
            let text = e.to_string();
            assert!(!text.chars().any(char::is_control), "{text:?}");
            assert!(text.contains("evil\\n"), "{text}");
        }
        assert!(matches!(printable("plain ünïcode"), Cow::Borrowed(_)));
    }

    #[test]
    fn long_names_are_shortened_with_their_length() {
        assert_eq!(shorten("short", 10), "short");
        let long = "ä".repeat(300);
        let cut = shorten(&long, 10);
        assert_eq!(cut, format!("{}...(600 bytes)", "ä".repeat(10)));
    }
}
