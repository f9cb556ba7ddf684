//! Where a model lives ([`StoreLocation`]) and a retrying S3 client bound to it ([`Store`]).
//!
//! Every request goes through [`RetryPolicy::run`]; the SDK's own retries are disabled so there
//! is one policy, applied to response bodies too. SDK checksums are limited to operations that
//! require them: Skybridge computes SHA-256 and MD5 itself and sends `Content-MD5`, which every
//! S3-compatible store (AWS, MinIO, Ceph, moto) checks, whereas CRC trailers are not universal.

use super::digest::Digest;
use super::error::{ArtifactError, S3Error};
use super::identity::StoreIdentity;
use super::manifest::{MANIFEST_PATH, Manifest, RESERVED_DIR, RESERVED_NAME};
use super::retry::RetryPolicy;
use crate::api::ArtifactStore;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::{Bytes, BytesMut};
use std::fmt;
use std::time::Duration;

/// Object metadata key (sent as `x-amz-meta-sha256`) holding the content SHA-256 in hex.
pub const SHA256_METADATA: &str = "sha256";
/// Default limit on a manifest's size: about 100,000 files. Raise with `--max-manifest-mib`.
pub const DEFAULT_MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;
/// Default limit on the objects one listing may return. Raise with `--max-objects`.
pub const DEFAULT_MAX_OBJECTS: usize = 200_000;

/// How to authenticate to a store.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Explicit keys, e.g. read by the operator from a pool's `credentialsSecretRef`.
    Static {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
    /// A named profile from `~/.aws/config` / `~/.aws/credentials`.
    Profile(String),
    /// The default AWS chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, web
    /// identity, ECS/EC2 metadata.
    #[default]
    DefaultChain,
    /// Unsigned requests, for public buckets.
    Anonymous,
}

impl fmt::Debug for Credentials {
    // Never print secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Static { access_key_id, .. } => write!(f, "Static({access_key_id}, ***)"),
            Credentials::Profile(p) => write!(f, "Profile({p})"),
            Credentials::DefaultChain => f.write_str("DefaultChain"),
            Credentials::Anonymous => f.write_str("Anonymous"),
        }
    }
}

/// A model's location: a store (endpoint, region, addressing, credentials) plus bucket and prefix.
/// The model is every object under `prefix/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreLocation {
    /// Endpoint URL for non-AWS stores (MinIO, Ceph, moto); `None`: AWS.
    pub endpoint: Option<String>,
    /// Region; `None`: from the environment/profile, else `us-east-1` (what MinIO, Ceph and
    /// moto accept).
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`).
    pub path_style: bool,
    pub credentials: Credentials,
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; empty: the whole bucket.
    pub prefix: String,
}

impl StoreLocation {
    /// Parses `s3://BUCKET[/PREFIX]`; other fields default (AWS endpoint, default credentials).
    pub fn parse_uri(uri: &str) -> Result<Self, ArtifactError> {
        let bad = |why: &str| {
            ArtifactError::InvalidRequest(format!(
                "{uri:?} is not an s3://BUCKET/PREFIX URI: {why}"
            ))
        };
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| bad("must start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        validate_bucket(bucket).map_err(|why| bad(&why))?;
        let prefix = normalize_prefix(prefix).map_err(|why| bad(&why))?;
        Ok(StoreLocation {
            endpoint: None,
            region: None,
            path_style: false,
            credentials: Credentials::DefaultChain,
            bucket: bucket.to_string(),
            prefix,
        })
    }

    /// The location of model `model_path` (e.g. `llama-3-8b/v2`) inside a pool's artifact store:
    /// `store.prefix/model_path`.
    pub fn from_artifact_store(
        store: &ArtifactStore,
        model_path: &str,
        credentials: Credentials,
    ) -> Result<Self, ArtifactError> {
        let bad = |why: String| ArtifactError::InvalidRequest(format!("artifact store: {why}"));
        validate_bucket(&store.bucket).map_err(bad)?;
        let joined = match store.prefix.as_deref().map(|p| p.trim_matches('/')) {
            Some(p) if !p.is_empty() => format!("{p}/{}", model_path.trim_matches('/')),
            _ => model_path.to_string(),
        };
        let prefix = normalize_prefix(&joined).map_err(bad)?;
        if let Some(e) = &store.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(ArtifactError::InvalidRequest(format!(
                "endpoint {e:?} must be an http:// or https:// URL"
            )));
        }
        Ok(StoreLocation {
            endpoint: store.endpoint.clone(),
            region: store.region.clone(),
            path_style: store.path_style,
            credentials,
            bucket: store.bucket.clone(),
            prefix,
        })
    }

    /// The object key of `path` (relative to the prefix).
    pub fn key(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.prefix)
        }
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// Whether the two locations may share objects (possibly the same store, same bucket, one
    /// prefix inside the other); syncing between them would delete what it copies. Compares
    /// canonical identities without DNS ([`StoreIdentity::of`]); `sync_model` also resolves
    /// host names. An endpoint that does not parse compares as spelled.
    pub fn overlaps(&self, other: &StoreLocation) -> bool {
        match (StoreIdentity::of(self), StoreIdentity::of(other)) {
            (Ok(a), Ok(b)) => a.overlaps(&b),
            _ => {
                let inside =
                    |a: &str, b: &str| a.is_empty() || b == a || b.starts_with(&format!("{a}/"));
                self.endpoint == other.endpoint
                    && self.bucket == other.bucket
                    && (inside(&self.prefix, &other.prefix) || inside(&other.prefix, &self.prefix))
            }
        }
    }
}

fn validate_bucket(bucket: &str) -> Result<(), String> {
    let ok_chars = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
    if bucket.len() < 3 || bucket.len() > 63 || !ok_chars {
        return Err(format!(
            "bucket {bucket:?} must be 3-63 characters of a-z, 0-9, '.', '-', '_'"
        ));
    }
    Ok(())
}

fn normalize_prefix(prefix: &str) -> Result<String, String> {
    let p = prefix.trim_matches('/');
    if p.chars().any(char::is_control) {
        return Err(format!("prefix {prefix:?} contains a control character"));
    }
    if p.split('/').any(|s| s == "." || s == "..")
        || (!p.is_empty() && p.split('/').any(str::is_empty))
    {
        return Err(format!(
            "prefix {prefix:?} has an empty, '.' or '..' segment"
        ));
    }
    Ok(p.to_string())
}

/// An object found by listing, with its path relative to the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    pub path: String,
    pub size: u64,
    /// The store's ETag without quotes. Only ever compared with ETags of the *same* store.
    pub etag: String,
}

/// A listing of a model's prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The model's objects, sorted by path.
    pub objects: Vec<ListedObject>,
    /// Paths of objects in the reserved `.skybridge/` directory, or named `.skybridge`.
    pub reserved: Vec<String>,
}

/// What `HEAD` says about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: String,
    /// `x-amz-meta-sha256`, if present and well-formed. A claim, not a proof: verify before trusting.
    pub sha256_metadata: Option<Digest>,
}

/// A retrying S3 client bound to one [`StoreLocation`].
#[derive(Clone, Debug)]
pub struct Store {
    client: aws_sdk_s3::Client,
    location: StoreLocation,
    retry: RetryPolicy,
    /// Send upload bodies with `UNSIGNED-PAYLOAD` instead of hashing them once more for the
    /// signature. Only over TLS (as AWS SDKs and MinIO clients do): integrity then rests on TLS
    /// plus our `Content-MD5`, which the store checks.
    unsigned_payload: bool,
    /// Manifests larger than this are refused without being read whole.
    max_manifest_bytes: u64,
    /// Listings with more objects than this are refused.
    max_objects: usize,
}

impl Store {
    /// The same store with other limits on manifest size and listing length.
    pub fn with_limits(mut self, max_manifest_bytes: u64, max_objects: usize) -> Self {
        self.max_manifest_bytes = max_manifest_bytes;
        self.max_objects = max_objects;
        self
    }

    /// The key prefix every object of the model starts with (`prefix/`, or empty).
    fn list_prefix(&self) -> String {
        if self.location.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.location.prefix)
        }
    }

    /// Builds a client for `location`. No request is sent.
    pub async fn connect(
        location: &StoreLocation,
        retry: RetryPolicy,
    ) -> Result<Self, ArtifactError> {
        // rustls with ring: kube already pulls ring in, and aws-lc would need cmake and a C build.
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            // Generous: a store may take long to assemble a large multipart upload.
            .read_timeout(Duration::from_secs(300))
            // Every attempt ends: a store that accepts a request and then stalls (or trickles)
            // cannot hold a sync forever. Long enough for the largest part on a slow link.
            .operation_attempt_timeout(Duration::from_secs(900))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http_client)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(region) = &location.region {
            loader = loader.region(Region::new(region.clone()));
        } else if location.endpoint.is_some() {
            // A custom endpoint (MinIO, Ceph) rarely cares about the region, but signing needs one;
            // do not let the default chain probe EC2 instance metadata for it.
            let env = std::env::var("AWS_REGION").or_else(|_| std::env::var("AWS_DEFAULT_REGION"));
            loader = loader.region(Region::new(env.unwrap_or_else(|_| "us-east-1".to_string())));
        }
        loader = match &location.credentials {
            Credentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => loader.credentials_provider(aws_credential_types::Credentials::new(
                access_key_id,
                secret_access_key,
                session_token.clone(),
                None,
                "skybridge-static",
            )),
            Credentials::Profile(name) => loader.profile_name(name),
            Credentials::DefaultChain => loader,
            Credentials::Anonymous => loader.no_credentials(),
        };
        let sdk = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(location.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if sdk.region().is_none() {
            config = config.region(Region::new("us-east-1"));
        }
        if let Some(endpoint) = &location.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Ok(Store {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            location: location.clone(),
            retry,
            unsigned_payload: location
                .endpoint
                .as_deref()
                .is_none_or(|e| e.starts_with("https://")),
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            max_objects: DEFAULT_MAX_OBJECTS,
        })
    }

    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    fn err<E>(
        &self,
        operation: &'static str,
        path: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> ArtifactError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        tracing::debug!(operation, key = %self.location.key(path), error = %DisplayErrorContext(&err), "S3 request failed");
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        let transient = match &err {
            SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
            // Connection failures, resets and timeouts are worth retrying; a missing or broken
            // credentials configuration (also reported as a dispatch failure) is not.
            SdkError::DispatchFailure(d) => {
                d.is_io()
                    || d.is_timeout()
                    || d.as_other() == Some(aws_smithy_types::retry::ErrorKind::TransientError)
            }
            SdkError::ServiceError(_) => {
                // 501 Not Implemented is an answer, not a hiccup.
                matches!(status, Some(s) if (s >= 500 && s != 501) || s == 429)
                    || matches!(
                        code.as_deref(),
                        Some(
                            "SlowDown"
                                | "Throttling"
                                | "ThrottlingException"
                                | "RequestTimeout"
                                | "InternalError"
                                | "ServiceUnavailable"
                        )
                    )
            }
            _ => false,
        };
        ArtifactError::S3(S3Error {
            operation,
            bucket: self.location.bucket.clone(),
            key: self.location.key(path),
            status,
            code,
            message: brief(&err),
            transient,
        })
    }

    fn stream_err(&self, path: &str, e: impl fmt::Display) -> ArtifactError {
        ArtifactError::Stream {
            bucket: self.location.bucket.clone(),
            key: self.location.key(path),
            message: e.to_string(),
        }
    }

    /// Lists the model's objects, excluding the reserved `.skybridge/` directory and zero-byte
    /// "directory marker" keys ending in `/`.
    pub async fn list(&self) -> Result<Vec<ListedObject>, ArtifactError> {
        Ok(self.list_all().await?.objects)
    }

    /// Lists the model's objects and, separately, the keys in the reserved directory. Refuses
    /// (without listing further) a prefix holding more than the store's object limit.
    pub async fn list_all(&self) -> Result<Listing, ArtifactError> {
        let list_prefix = self.list_prefix();
        let mut out = Vec::new();
        let mut reserved = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry
                .run("ListObjectsV2", || async {
                    self.client
                        .list_objects_v2()
                        .bucket(&self.location.bucket)
                        .prefix(&list_prefix)
                        .set_continuation_token(token.clone())
                        .send()
                        .await
                        .map_err(|e| self.err("ListObjectsV2", "", e))
                })
                .await?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                let Some(path) = key.strip_prefix(&list_prefix) else {
                    continue;
                };
                if path.starts_with(RESERVED_DIR) || path == RESERVED_NAME {
                    reserved.push(path.to_string());
                    continue;
                }
                if path.is_empty() || path.ends_with('/') {
                    continue;
                }
                if out.len() >= self.max_objects {
                    return Err(ArtifactError::TooLarge {
                        what: format!("the listing of {}", self.location.uri()),
                        limit: self.max_objects as u64,
                        unit: "objects",
                        hint: Some("raise it with --max-objects".into()),
                    });
                }
                out.push(ListedObject {
                    path: path.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    etag: unquote(obj.e_tag().unwrap_or_default()),
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        // Some S3-compatible servers (s3s-fs, for one) list without ETags; skipping unchanged
        // objects needs them, so ask HEAD for those (AWS, MinIO, Ceph and moto never need this).
        let missing: Vec<usize> = (0..out.len()).filter(|&i| out[i].etag.is_empty()).collect();
        if !missing.is_empty() {
            use futures::{StreamExt, TryStreamExt};
            let etags: Vec<(usize, Option<String>)> =
                futures::stream::iter(missing)
                    .map(|i| {
                        let path = out[i].path.clone();
                        async move {
                            Ok::<_, ArtifactError>((i, self.head(&path).await?.map(|h| h.etag)))
                        }
                    })
                    .buffer_unordered(32)
                    .try_collect()
                    .await?;
            for (i, etag) in etags {
                out[i].etag = etag.unwrap_or_default();
            }
        }
        reserved.sort();
        Ok(Listing {
            objects: out,
            reserved,
        })
    }

    /// `HEAD` of `path`; `None` when absent.
    pub async fn head(&self, path: &str) -> Result<Option<ObjectInfo>, ArtifactError> {
        let key = self.location.key(path);
        let res = self
            .retry
            .run("HeadObject", || async {
                self.client
                    .head_object()
                    .bucket(&self.location.bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| self.err("HeadObject", path, e))
            })
            .await;
        match res {
            Ok(h) => Ok(Some(ObjectInfo {
                size: h.content_length().unwrap_or(0).max(0) as u64,
                etag: unquote(h.e_tag().unwrap_or_default()),
                sha256_metadata: h
                    .metadata()
                    .and_then(|m| m.get(SHA256_METADATA))
                    .and_then(|v| Digest::from_hex(v).ok()),
            })),
            Err(ArtifactError::S3(e)) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a whole small object (manifest, state) of at most `limit` bytes; `None` when
    /// absent. A larger object is refused with [`ArtifactError::TooLarge`] as soon as its length
    /// is known (the declared length, or the bytes received), never read whole.
    pub async fn get_optional(
        &self,
        path: &str,
        limit: u64,
    ) -> Result<Option<Bytes>, ArtifactError> {
        let key = self.location.key(path);
        let too_large = || ArtifactError::TooLarge {
            what: format!("s3://{}/{key}", self.location.bucket),
            limit: limit.div_ceil(1024 * 1024),
            unit: "MiB",
            hint: None,
        };
        let res = self
            .retry
            .run("GetObject", || async {
                let resp = self
                    .client
                    .get_object()
                    .bucket(&self.location.bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| self.err("GetObject", path, e))?;
                let declared = resp.content_length().unwrap_or(0).max(0) as u64;
                if declared > limit {
                    return Err(too_large());
                }
                let mut body = resp.body;
                let mut buf = BytesMut::with_capacity(declared as usize);
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| self.stream_err(path, e))?;
                    if (buf.len() + chunk.len()) as u64 > limit {
                        return Err(too_large());
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(buf.freeze())
            })
            .await;
        match res {
            Ok(b) => Ok(Some(b)),
            Err(ArtifactError::S3(e)) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads `path` (or the inclusive byte `range`) into memory, retrying the request *and* the
    /// body. `if_match` pins the object version by ETag (same store), so a concurrent overwrite
    /// fails with 412 instead of mixing two versions. `expected_len` pre-sizes the buffer and is
    /// checked.
    pub async fn get_bytes(
        &self,
        path: &str,
        range: Option<(u64, u64)>,
        if_match: Option<&str>,
        expected_len: Option<u64>,
    ) -> Result<Bytes, ArtifactError> {
        let key = self.location.key(path);
        self.retry
            .run("GetObject", || async {
                let resp = self
                    .client
                    .get_object()
                    .bucket(&self.location.bucket)
                    .key(&key)
                    .set_range(range.map(|(a, b)| format!("bytes={a}-{b}")))
                    .set_if_match(if_match.map(|e| format!("\"{e}\"")))
                    .send()
                    .await
                    .map_err(|e| self.err("GetObject", path, e))?;
                let mut body = resp.body;
                let mut buf = BytesMut::with_capacity(expected_len.unwrap_or(0) as usize);
                while let Some(chunk) = body.next().await {
                    buf.extend_from_slice(&chunk.map_err(|e| self.stream_err(path, e))?);
                }
                if let Some(n) = expected_len
                    && buf.len() as u64 != n
                {
                    // A short body is a broken transfer (or a changed object): retry.
                    return Err(
                        self.stream_err(path, format!("expected {n} bytes, got {}", buf.len()))
                    );
                }
                Ok(buf.freeze())
            })
            .await
    }

    /// Opens `path` from byte `start` for streaming; returns the body and the length the store
    /// declared for it. Only opening is retried; a body that breaks off is the caller's to resume
    /// (with a new `open` at the offset reached).
    pub async fn open(
        &self,
        path: &str,
        start: u64,
        if_match: Option<&str>,
    ) -> Result<(ByteStream, Option<u64>), ArtifactError> {
        let key = self.location.key(path);
        self.retry
            .run("GetObject", || async {
                let resp = self
                    .client
                    .get_object()
                    .bucket(&self.location.bucket)
                    .key(&key)
                    .set_range((start > 0).then(|| format!("bytes={start}-")))
                    .set_if_match(if_match.map(|e| format!("\"{e}\"")))
                    .send()
                    .await
                    .map_err(|e| self.err("GetObject", path, e))?;
                let len = resp.content_length().map(|n| n.max(0) as u64);
                Ok((resp.body, len))
            })
            .await
    }

    /// Reads the next chunk of a stream opened by [`Store::open`], mapping errors.
    pub async fn next_chunk(
        &self,
        path: &str,
        body: &mut ByteStream,
    ) -> Result<Option<Bytes>, ArtifactError> {
        body.next()
            .await
            .transpose()
            .map_err(|e| self.stream_err(path, e))
    }

    /// Single-request upload with `Content-MD5` (the store rejects corrupted bodies) and the
    /// SHA-256 in metadata. Returns the ETag.
    pub async fn put(
        &self,
        path: &str,
        body: Bytes,
        md5: &[u8; 16],
        sha256: Option<Digest>,
    ) -> Result<String, ArtifactError> {
        let key = self.location.key(path);
        let md5 = aws_smithy_types::base64::encode(md5);
        self.retry
            .run("PutObject", || async {
                let req = self
                    .client
                    .put_object()
                    .bucket(&self.location.bucket)
                    .key(&key)
                    .content_length(body.len() as i64)
                    .content_md5(&md5)
                    .set_metadata(
                        sha256.map(|d| [(SHA256_METADATA.to_string(), d.to_hex())].into()),
                    )
                    .body(ByteStream::from(body.clone()));
                let out = if self.unsigned_payload {
                    req.customize().disable_payload_signing().send().await
                } else {
                    req.send().await
                }
                .map_err(|e| self.err("PutObject", path, e))?;
                Ok(unquote(out.e_tag().unwrap_or_default()))
            })
            .await
    }

    pub async fn create_multipart(
        &self,
        path: &str,
        sha256: Option<Digest>,
    ) -> Result<String, ArtifactError> {
        let key = self.location.key(path);
        self.retry
            .run("CreateMultipartUpload", || async {
                let out = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.location.bucket)
                    .key(&key)
                    .set_metadata(
                        sha256.map(|d| [(SHA256_METADATA.to_string(), d.to_hex())].into()),
                    )
                    .send()
                    .await
                    .map_err(|e| self.err("CreateMultipartUpload", path, e))?;
                out.upload_id().map(str::to_string).ok_or_else(|| {
                    self.stream_err(path, "CreateMultipartUpload returned no upload id")
                })
            })
            .await
    }

    /// Uploads one part with `Content-MD5`; returns its ETag.
    pub async fn upload_part(
        &self,
        path: &str,
        upload_id: &str,
        part: i32,
        body: Bytes,
        md5: &[u8; 16],
    ) -> Result<String, ArtifactError> {
        let key = self.location.key(path);
        let md5 = aws_smithy_types::base64::encode(md5);
        self.retry
            .run("UploadPart", || async {
                let req = self
                    .client
                    .upload_part()
                    .bucket(&self.location.bucket)
                    .key(&key)
                    .upload_id(upload_id)
                    .part_number(part)
                    .content_length(body.len() as i64)
                    .content_md5(&md5)
                    .body(ByteStream::from(body.clone()));
                let out = if self.unsigned_payload {
                    req.customize().disable_payload_signing().send().await
                } else {
                    req.send().await
                }
                .map_err(|e| self.err("UploadPart", path, e))?;
                Ok(unquote(out.e_tag().unwrap_or_default()))
            })
            .await
    }

    /// Completes a multipart upload; returns the object's ETag. `parts` are `(number, etag)`.
    pub async fn complete_multipart(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<String, ArtifactError> {
        let key = self.location.key(path);
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|(n, etag)| {
                        CompletedPart::builder()
                            .part_number(*n)
                            .e_tag(format!("\"{etag}\""))
                            .build()
                    })
                    .collect(),
            ))
            .build();
        self.retry
            .run("CompleteMultipartUpload", || async {
                let out = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.location.bucket)
                    .key(&key)
                    .upload_id(upload_id)
                    .multipart_upload(completed.clone())
                    .send()
                    .await;
                match out {
                    Ok(out) => Ok(unquote(out.e_tag().unwrap_or_default())),
                    // Some S3 implementations (moto among them) name the result element
                    // `CompleteMultipartUploadResponse`, which the SDK refuses to parse although
                    // the upload completed. A 200 with an ETag in the body is a success.
                    Err(SdkError::ServiceError(se))
                        if se.raw().status().as_u16() == 200
                            && let Some(etag) = se.raw().body().bytes().and_then(etag_in_xml) =>
                    {
                        Ok(etag)
                    }
                    Err(e) => Err(self.err("CompleteMultipartUpload", path, e)),
                }
            })
            .await
    }

    /// Aborts a multipart upload; an upload already gone counts as aborted.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), ArtifactError> {
        let res = self
            .retry
            .run("AbortMultipartUpload", || async {
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.location.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await
                    .map_err(|e| self.err("AbortMultipartUpload", key, e))
            })
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(ArtifactError::S3(e)) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Multipart uploads in progress under the prefix, as `(key, upload_id)`.
    /// Stores that do not implement the listing (some S3-compatible servers answer 501) yield an
    /// empty list with a warning: leftover uploads there cannot be found, only expire.
    pub async fn list_multipart_uploads(&self) -> Result<Vec<(String, String)>, ArtifactError> {
        match self.list_multipart_uploads_strict().await {
            Err(ArtifactError::S3(e))
                if e.status == Some(501) || e.code.as_deref() == Some("NotImplemented") =>
            {
                tracing::warn!(bucket = %self.location.bucket, "store cannot list multipart uploads; leftovers are not aborted");
                Ok(Vec::new())
            }
            other => other,
        }
    }

    async fn list_multipart_uploads_strict(&self) -> Result<Vec<(String, String)>, ArtifactError> {
        let list_prefix = self.list_prefix();
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .retry
                .run("ListMultipartUploads", || async {
                    self.client
                        .list_multipart_uploads()
                        .bucket(&self.location.bucket)
                        .prefix(&list_prefix)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .send()
                        .await
                        .map_err(|e| self.err("ListMultipartUploads", "", e))
                })
                .await?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    out.push((k.to_string(), id.to_string()));
                }
            }
            if page.is_truncated() == Some(true) && page.next_key_marker().is_some() {
                key_marker = page.next_key_marker().map(str::to_string);
                id_marker = page.next_upload_id_marker().map(str::to_string);
            } else {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes `path`; absent counts as deleted.
    pub async fn delete(&self, path: &str) -> Result<(), ArtifactError> {
        let key = self.location.key(path);
        let res = self
            .retry
            .run("DeleteObject", || async {
                self.client
                    .delete_object()
                    .bucket(&self.location.bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| self.err("DeleteObject", path, e))
            })
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(ArtifactError::S3(e)) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads and validates the model's manifest; `Ok(None)` when there is none.
    /// Refuses a manifest over the store's manifest limit ([`Store::with_limits`]).
    pub async fn read_manifest(&self) -> Result<Option<Manifest>, ArtifactError> {
        let bytes = match self
            .get_optional(MANIFEST_PATH, self.max_manifest_bytes)
            .await
        {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(ArtifactError::TooLarge {
                what, limit, unit, ..
            }) => {
                return Err(ArtifactError::TooLarge {
                    what: format!("manifest {what}"),
                    limit,
                    unit,
                    hint: Some("raise it with --max-manifest-mib".into()),
                });
            }
            Err(e) => return Err(e),
        };
        Manifest::from_canonical_bytes(&bytes)
            .map(Some)
            .map_err(|source| ArtifactError::Manifest {
                bucket: self.location.bucket.clone(),
                key: self.location.key(MANIFEST_PATH),
                source,
            })
    }

    /// Like [`Store::read_manifest`], but a malformed or oversized manifest counts as absent
    /// (sync replaces it).
    pub async fn read_manifest_lenient(&self) -> Result<Option<Manifest>, ArtifactError> {
        match self.read_manifest().await {
            Err(e @ (ArtifactError::Manifest { .. } | ArtifactError::TooLarge { .. })) => {
                tracing::warn!(error = %e, "ignoring the destination's manifest; it will be rewritten");
                Ok(None)
            }
            other => other,
        }
    }

    /// Writes the manifest (canonical bytes) at the well-known key.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<(), ArtifactError> {
        let bytes = Bytes::from(manifest.to_canonical_bytes());
        let md5 = md5_of(&bytes);
        self.put(MANIFEST_PATH, bytes.clone(), &md5, Some(Digest::of(&bytes)))
            .await
            .map(|_| ())
    }
}

/// One line saying what went wrong, for [`S3Error::message`]: the store's code and message, or
/// the failure's cause chain (the SDK's own rendering runs to kilobytes of debug output).
fn brief<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = match err {
        SdkError::ServiceError(_) => match (err.code(), err.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.to_string(),
            (None, Some(msg)) => msg.to_string(),
            (None, None) => "the store answered with an error and no code".to_string(),
        },
        SdkError::TimeoutError(_) => "timed out".to_string(),
        SdkError::DispatchFailure(_)
        | SdkError::ResponseError(_)
        | SdkError::ConstructionFailure(_) => {
            let what = match err {
                SdkError::DispatchFailure(_) => "request failed",
                SdkError::ResponseError(_) => "unreadable response",
                _ => "cannot build request",
            };
            let mut causes = Vec::new();
            let mut source = std::error::Error::source(err);
            while let Some(s) = source {
                let t = s.to_string();
                if !t.is_empty() && !causes.contains(&t) {
                    causes.push(t);
                }
                source = s.source();
            }
            if causes.is_empty() {
                what.to_string()
            } else {
                format!("{what}: {}", causes.join(": "))
            }
        }
        _ => err.to_string(),
    };
    let line: String = text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if line.chars().count() > 240 {
        format!("{}...", line.chars().take(237).collect::<String>())
    } else {
        line
    }
}

/// MD5 of `data` (for `Content-MD5` and single-part ETags).
pub fn md5_of(data: &[u8]) -> [u8; 16] {
    use md5::Digest as _;
    md5::Md5::digest(data).into()
}

/// The ETag an S3-compatible store computes for an unencrypted object uploaded by us: the MD5
/// hex for a single PUT, else `hex(md5(concat(part md5s)))-N`. Compared only with the ETag the
/// *same* store returns for the upload we just made.
pub fn expected_etag(part_md5s: &[[u8; 16]], multipart: bool) -> String {
    if !multipart && part_md5s.len() == 1 {
        return hex::encode(part_md5s[0]);
    }
    let mut concat = Vec::with_capacity(16 * part_md5s.len());
    for m in part_md5s {
        concat.extend_from_slice(m);
    }
    format!("{}-{}", hex::encode(md5_of(&concat)), part_md5s.len())
}

/// The `<ETag>` of an XML response body, unquoted.
fn etag_in_xml(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<ETag>")? + "<ETag>".len();
    let end = start + text[start..].find("</ETag>")?;
    Some(unquote(
        &text[start..end]
            .replace("&quot;", "\"")
            .replace("&#34;", "\""),
    ))
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris() {
        let l = StoreLocation::parse_uri("s3://models/llama/v1/").unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("models", "llama/v1")
        );
        assert_eq!(l.key("a/b.bin"), "llama/v1/a/b.bin");
        assert_eq!(
            StoreLocation::parse_uri("s3://models").unwrap().key("x"),
            "x"
        );
        for bad in [
            "models/x",
            "s3://",
            "s3://AB/x",
            "http://b/x",
            "s3://bkt/a//b",
            "s3://bkt/../x",
        ] {
            assert!(
                matches!(
                    StoreLocation::parse_uri(bad),
                    Err(ArtifactError::InvalidRequest(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn from_artifact_store_joins_prefix() {
        let store = ArtifactStore {
            endpoint: Some("http://minio:9000".into()),
            bucket: "models".into(),
            region: None,
            prefix: Some("/team-a/".into()),
            path_style: true,
            credentials_secret_ref: None,
        };
        let l =
            StoreLocation::from_artifact_store(&store, "llama/v1", Credentials::Anonymous).unwrap();
        assert_eq!(l.prefix, "team-a/llama/v1");
        assert!(l.path_style);
        assert_eq!(l.endpoint.as_deref(), Some("http://minio:9000"));
    }

    #[test]
    fn overlap_detection() {
        let a = StoreLocation::parse_uri("s3://bkt/models/a").unwrap();
        assert!(a.overlaps(&StoreLocation::parse_uri("s3://bkt/models").unwrap()));
        assert!(a.overlaps(&a));
        assert!(!a.overlaps(&StoreLocation::parse_uri("s3://bkt/models/ab").unwrap()));
        let mut other_store = a.clone();
        other_store.endpoint = Some("http://127.0.0.1:1".into());
        assert!(!a.overlaps(&other_store));
    }

    #[test]
    fn etags_follow_s3_rules() {
        assert_eq!(
            expected_etag(&[md5_of(b"")], false),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        let parts = [md5_of(b"a"), md5_of(b"b")];
        let e = expected_etag(&parts, true);
        assert!(e.ends_with("-2") && e.len() == 34);
    }

    #[test]
    fn etag_from_xml_body() {
        let body = br#"<?xml version="1.0"?><CompleteMultipartUploadResponse><ETag>"abc-2"</ETag></CompleteMultipartUploadResponse>"#;
        assert_eq!(etag_in_xml(body).as_deref(), Some("abc-2"));
        assert_eq!(etag_in_xml(b"<x/>"), None);
    }

    #[test]
    fn credentials_debug_hides_secret() {
        let c = Credentials::Static {
            access_key_id: "AKIA".into(),
            secret_access_key: "hunter2".into(),
            session_token: None,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
