//! Verified incremental sync of one model between two S3-compatible stores.
//!
//! Order of work, chosen so that a reader never sees a partial model and an interrupted sync can
//! resume cheaply:
//! 1. residency check (pure, before any connection);
//! 2. list both sides, read the source manifest (if any), the destination's sync state and
//!    manifest; abort multipart uploads left under the destination prefix by an interrupted run;
//! 3. plan: skip what is verified, re-verify what is plausibly there, copy the rest;
//! 4. if anything will change, delete the destination manifest first (readers fail closed);
//! 5. copy (streaming GET -> PUT / multipart PUT, bounded memory), verify, checkpoint state;
//! 6. delete destination objects absent from the source (after the new objects are in place);
//! 7. write the sync state, then the manifest **last**.
//!
//! **Verification after upload.** Each request carries `Content-MD5`, so the store rejects a body
//! corrupted in transit; the ETag it returns for our upload must then equal the MD5 (single PUT)
//! or MD5-of-part-MD5s (multipart) computed over the very bytes we hashed with SHA-256. That is
//! a checksum computed by the store over what it stored, and costs no second transfer, which
//! matters across clouds. When the ETag is not an MD5 (SSE-KMS, some gateways) or
//! [`VerifyMode::Reread`] is chosen, the object is read back and hashed instead. ETags are only
//! ever compared with the same store's ETags.
//!
//! **Skipping.** The destination keeps `.skybridge/sync-state.json`: per path the SHA-256, size,
//! the destination ETag at verification time and the source ETag it was copied from. Anyone who
//! can write the destination can write that file too, so it is **signed**: an HMAC-SHA256 with
//! the syncer's [`StateKey`] over the records, the source and the destination bucket and
//! prefix. A state whose signature does not check (forged, edited, written with another key,
//! for another destination, or larger than [`SyncOptions::max_state_bytes`]) is ignored
//! entirely. Only a signed record lets an object be skipped without any read: its current
//! destination ETag must still equal the recorded one (ETags change on every rewrite, and new
//! content cannot keep an MD5-based ETag) and its SHA-256 must equal the source's (from the
//! source manifest, or from the record when the source ETag is unchanged). Without a trusted
//! record, an object present with the right size and a digest known from the **source
//! manifest** is re-verified by reading it back and hashing it; without a source manifest it is
//! copied. What the destination says about itself (its state, manifest, `x-amz-meta-sha256`)
//! never makes an object count as verified; `x-amz-meta-sha256` is only a cheap filter before a
//! read-back. It is set on every object whose SHA-256 is known when its upload starts: all
//! single-PUT objects, and multipart objects when the source manifest or the state supplies it
//! (a multipart upload's metadata is fixed at its creation, before the content has been
//! hashed); the state and the manifest always have it.

use super::digest::Digest;
use super::error::ArtifactError;
use super::identity::StoreIdentity;
use super::manifest::{MANIFEST_PATH, Manifest, ManifestEntry, validate_path};
use super::residency;
use super::retry::RetryPolicy;
use super::store::{
    DEFAULT_MAX_MANIFEST_BYTES, DEFAULT_MAX_OBJECTS, ListedObject, Store, StoreLocation,
    expected_etag, md5_of,
};
use super::transfer::{BufferPool, MemoryBudget, ResumableReader, Task, stream_object};
use crate::api::common::{Cloud, DataClass};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Relative path of the destination's sync state (store-local; not part of the model).
pub const STATE_PATH: &str = ".skybridge/sync-state.json";
/// S3's smallest allowed part (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;
/// Objects from this size on are read into pooled buffers (see `BufferPool`).
const POOLED_MIN: u64 = 1024 * 1024;
/// Default limit on the sync state's size (records are ~2x a manifest entry).
pub const DEFAULT_MAX_STATE_BYTES: u64 = 32 * 1024 * 1024;

/// The secret that signs the destination's sync state, so that a state edited by someone who can
/// write the destination is recognised and ignored. Any syncer holding the key may trust states
/// signed with it; without the key a sync re-verifies by reading instead of skipping.
#[derive(Clone, PartialEq, Eq)]
pub struct StateKey([u8; 32]);

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey(***)")
    }
}

impl StateKey {
    /// A key derived from secret bytes (e.g. a key file's content); at least 16 bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Self, ArtifactError> {
        if secret.len() < 16 {
            return Err(ArtifactError::InvalidRequest(format!(
                "a sync state key needs at least 16 bytes of secret, got {}",
                secret.len()
            )));
        }
        let mut h = super::digest::Hasher::new();
        h.update(b"skybridge sync-state key v1\0");
        h.update(secret);
        Ok(StateKey(*h.finish().as_bytes()))
    }

    /// 32 fresh random bytes from the operating system.
    pub fn random() -> Result<Self, std::io::Error> {
        use std::io::Read;
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(StateKey(bytes))
    }

    /// A random key for the life of this process (what [`SyncOptions::default`] uses): re-syncs
    /// from the same process (the operator) skip verified objects; another process re-verifies.
    pub fn per_process() -> Option<Self> {
        static KEY: std::sync::OnceLock<Option<StateKey>> = std::sync::OnceLock::new();
        KEY.get_or_init(|| {
            StateKey::random()
                .inspect_err(|e| tracing::warn!(error = %e, "no random sync state key; re-syncs will re-verify by reading"))
                .ok()
        })
        .clone()
    }

    /// HMAC-SHA256 (RFC 2104) of `data`.
    fn mac(&self, data: &[u8]) -> Digest {
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.0);
        let pad = |byte: u8| block.map(|b| b ^ byte);
        let mut inner = super::digest::Hasher::new();
        inner.update(&pad(0x36));
        inner.update(data);
        let inner = inner.finish();
        let mut outer = super::digest::Hasher::new();
        outer.update(&pad(0x5c));
        outer.update(inner.as_bytes());
        outer.finish()
    }
}

/// How an upload is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Compare the store-returned ETag with the MD5s of the bytes sent; read back on mismatch.
    #[default]
    Etag,
    /// Always read every uploaded object back and compare its SHA-256.
    Reread,
}

/// Progress notifications, e.g. for a progress bar.
#[derive(Clone, Debug)]
pub enum SyncEvent {
    /// Planning done: `copy` objects (`copy_bytes`) to transfer, `check` to re-verify,
    /// `delete` to remove, out of `objects` in the model.
    Planned {
        objects: usize,
        copy: usize,
        copy_bytes: u64,
        check: usize,
        delete: usize,
    },
    /// `n` more bytes uploaded.
    Bytes(u64),
    /// One object is done.
    Object { path: String, outcome: Outcome },
}

/// What happened to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Copied and verified.
    Copied,
    /// Already verified at the destination; nothing read or written.
    Skipped,
    /// Present at the destination; verified by reading it back, not copied.
    Reverified,
    Deleted,
}

/// Callback receiving [`SyncEvent`]s; called from transfer tasks, so keep it cheap.
pub type ProgressFn = Arc<dyn Fn(&SyncEvent) + Send + Sync>;

/// Tuning knobs. `Default` suits most stores.
#[derive(Clone)]
pub struct SyncOptions {
    /// Objects in flight, and parts in flight per object. Default 16.
    pub parallel: usize,
    /// Multipart part size; objects larger than this are uploaded in parts. Default 16 MiB,
    /// at least 5 MiB (S3's minimum). Raised automatically to keep within 10,000 parts.
    pub part_size: u64,
    /// Upper bound on bytes held in transfer buffers at once. Default 96 MiB.
    pub memory_budget: u64,
    pub verify: VerifyMode,
    pub retry: RetryPolicy,
    /// Minimum time between writes of the sync state during a sync (for resumption). Default 2 s.
    pub checkpoint_interval: Duration,
    pub progress: Option<ProgressFn>,
    /// Signs the sync state; `None`: the state is never trusted (every present object is
    /// re-verified by reading). Default: [`StateKey::per_process`].
    pub state_key: Option<StateKey>,
    /// Manifests (source and destination) larger than this are refused (source) or ignored
    /// (destination). Default 16 MiB (~100,000 files).
    pub max_manifest_bytes: u64,
    /// A sync state larger than this is ignored without being read. Default 32 MiB.
    pub max_state_bytes: u64,
    /// Listings of more objects than this are refused. Default 200,000.
    pub max_objects: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            parallel: 16,
            part_size: 16 * 1024 * 1024,
            memory_budget: 96 * 1024 * 1024,
            verify: VerifyMode::Etag,
            retry: RetryPolicy::default(),
            checkpoint_interval: Duration::from_secs(2),
            progress: None,
            state_key: StateKey::per_process(),
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            max_objects: DEFAULT_MAX_OBJECTS,
        }
    }
}

impl fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncOptions")
            .field("parallel", &self.parallel)
            .field("part_size", &self.part_size)
            .field("memory_budget", &self.memory_budget)
            .field("verify", &self.verify)
            .field("retry", &self.retry)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("state_key", &self.state_key)
            .field("max_manifest_bytes", &self.max_manifest_bytes)
            .field("max_state_bytes", &self.max_state_bytes)
            .field("max_objects", &self.max_objects)
            .finish_non_exhaustive()
    }
}

impl SyncOptions {
    fn validate(&self) -> Result<(), ArtifactError> {
        let bad = |m: String| Err(ArtifactError::InvalidRequest(m));
        if self.parallel == 0 || self.parallel > 1024 {
            return bad(format!("parallel must be 1..=1024, got {}", self.parallel));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return bad(format!(
                "part size must be 5 MiB..=5 GiB, got {}",
                self.part_size
            ));
        }
        if self.max_manifest_bytes == 0 || self.max_state_bytes == 0 || self.max_objects == 0 {
            return bad("manifest, state and object limits must be positive".into());
        }
        if self.memory_budget < self.part_size {
            return bad(format!(
                "memory budget {} is smaller than the part size {}",
                self.memory_budget, self.part_size
            ));
        }
        Ok(())
    }
}

/// Copy the model at `source` to `destination`.
#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub source: StoreLocation,
    pub destination: StoreLocation,
    /// Data class of the model; with `destination_cloud`, decides residency.
    pub data_class: DataClass,
    /// Which cloud the destination store is in.
    pub destination_cloud: Cloud,
    pub options: SyncOptions,
}

/// What a successful sync did. On success the destination holds a verified copy whose manifest
/// digest is `digest`.
#[derive(Clone, Debug, Serialize)]
pub struct SyncReport {
    pub source: String,
    pub destination: String,
    /// The model digest (of the manifest now at the destination).
    pub digest: Digest,
    /// Objects and bytes in the model.
    pub objects: usize,
    pub bytes: u64,
    pub copied: Vec<String>,
    pub bytes_copied: u64,
    /// Verified earlier and unchanged since (no read).
    pub skipped: Vec<String>,
    /// Found present and verified by reading them back.
    pub reverified: Vec<String>,
    pub deleted: Vec<String>,
    /// Objects of the model verified at the destination (all of them, on success).
    pub verified: usize,
    /// Multipart uploads of earlier interrupted runs that were aborted.
    pub aborted_uploads: usize,
    /// Whether the manifest was (re)written; false when it was already current.
    pub manifest_written: bool,
    pub elapsed_seconds: f64,
}

/// Per-object record of the destination sync state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StateEntry {
    size: u64,
    digest: Digest,
    dest_etag: String,
    source_etag: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SyncState {
    /// Identity of the source the `source_etag`s belong to.
    source: String,
    objects: BTreeMap<String, StateEntry>,
}

/// The state as stored: the records, the destination they describe, and their signature.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedState {
    destination: String,
    state: SyncState,
    /// HMAC-SHA256 of [`signed_bytes`] under the syncer's [`StateKey`].
    mac: Digest,
}

fn signed_bytes(destination: &str, state: &SyncState) -> Vec<u8> {
    serde_json::to_vec(&(destination, state)).expect("state serializes")
}

#[derive(Debug, PartialEq, Eq)]
enum Action {
    Skip(StateEntry),
    /// Plausibly present with this digest; verify by reading, copy if wrong.
    Check(Digest),
    /// Copy; the digest when already known (source manifest or state).
    Copy(Option<Digest>),
}

struct Ctx {
    src: Store,
    dst: Store,
    budget: MemoryBudget,
    pool: Arc<BufferPool>,
    part_size: u64,
    parallel: usize,
    verify: VerifyMode,
    progress: Option<ProgressFn>,
}

impl Ctx {
    fn emit(&self, e: SyncEvent) {
        if let Some(p) = &self.progress {
            p(&e);
        }
    }
}

/// Makes `request.destination` hold a verified copy of the model at `request.source`, writing the
/// manifest last. Refuses with [`ArtifactError::Residency`] before any connection when the data
/// class may not reside in the destination cloud. Safe to re-run after any interruption.
pub async fn sync_model(request: &SyncRequest) -> Result<SyncReport, ArtifactError> {
    let started = Instant::now();
    residency::check(request.data_class, request.destination_cloud)?;
    let opts = &request.options;
    opts.validate()?;
    // A sync deletes what the source lacks: both ends must be provably different stores or
    // disjoint prefixes, however the endpoints are spelled.
    let (src_id, dst_id) = futures::join!(
        StoreIdentity::resolve(&request.source),
        StoreIdentity::resolve(&request.destination)
    );
    let src_id = src_id.map_err(ArtifactError::InvalidRequest)?;
    let dst_id = dst_id.map_err(ArtifactError::InvalidRequest)?;
    if src_id.overlaps(&dst_id) || request.source.overlaps(&request.destination) {
        return Err(ArtifactError::InvalidRequest(format!(
            "source {} and destination {} may be the same objects (store {} and {}); a sync \
             deletes what the source lacks, so the two must not overlap",
            request.source.uri(),
            request.destination.uri(),
            src_id,
            dst_id
        )));
    }
    let src = Store::connect(&request.source, opts.retry.clone())
        .await?
        .with_limits(opts.max_manifest_bytes, opts.max_objects);
    let dst = Store::connect(&request.destination, opts.retry.clone())
        .await?
        .with_limits(opts.max_manifest_bytes, opts.max_objects);
    // What the signed state is bound to: the bucket and prefix, not the endpoint (one store may
    // be reached through proxies, regional or internal names; the records' ETags are the
    // store's own either way).
    let dst_name = format!("{}|{}", dst_id.bucket, dst_id.prefix);

    let (src_manifest, src_listing, dst_list, old_state, dst_manifest, uploads) = futures::try_join!(
        src.read_manifest(),
        src.list_all(),
        dst.list(),
        read_state(&dst, opts, &dst_name),
        dst.read_manifest_lenient(),
        dst.list_multipart_uploads(),
    )?;
    let src_list = src_listing.objects;
    check_source_keys(&request.source, &src_list, &src_listing.reserved)?;
    if src_list.is_empty() {
        // Almost always a mistyped prefix; with sync semantics it would wipe the destination.
        return Err(ArtifactError::InvalidRequest(format!(
            "source {} holds no objects: an empty model is refused",
            request.source.uri()
        )));
    }
    if let Some(m) = &src_manifest {
        if m.is_empty() {
            return Err(ArtifactError::InvalidModel(format!(
                "the manifest of source {} lists no files: an empty model is refused",
                request.source.uri()
            )));
        }
        check_source_against_manifest(&src_list, m)?;
    }

    // Uploads left by an interrupted run would otherwise linger (and be billed) forever.
    let aborted_uploads = uploads.len();
    stream::iter(uploads.iter())
        .map(|(key, id)| dst.abort_multipart(key, id))
        .buffer_unordered(opts.parallel)
        .try_collect::<Vec<()>>()
        .await?;

    let Plan {
        work,
        mut state,
        copy_n,
        copy_bytes,
        check_n,
        to_delete,
    } = plan(
        &src_list,
        src_manifest.as_ref(),
        &dst_list,
        &old_state,
        src_id.to_string(),
    );

    let ctx = Arc::new(Ctx {
        src,
        dst,
        budget: MemoryBudget::new(opts.memory_budget),
        pool: BufferPool::new(
            opts.part_size as usize,
            (opts.memory_budget / opts.part_size) as usize + 1,
        ),
        part_size: opts.part_size,
        parallel: opts.parallel,
        verify: opts.verify,
        progress: opts.progress.clone(),
    });
    ctx.emit(SyncEvent::Planned {
        objects: src_list.len(),
        copy: copy_n,
        copy_bytes,
        check: check_n,
        delete: to_delete.len(),
    });

    // Readers must not see the old manifest over objects that are about to change.
    let changes = copy_n + check_n + to_delete.len() > 0;
    if changes && dst_manifest.is_some() {
        ctx.dst.delete(MANIFEST_PATH).await?;
    }

    let mut report = SyncReport {
        source: request.source.uri(),
        destination: request.destination.uri(),
        digest: Digest::from_bytes([0; 32]),
        objects: src_list.len(),
        bytes: src_list.iter().map(|o| o.size).sum(),
        copied: vec![],
        bytes_copied: 0,
        skipped: vec![],
        reverified: vec![],
        deleted: vec![],
        verified: 0,
        aborted_uploads,
        manifest_written: false,
        elapsed_seconds: 0.0,
    };

    let mut tasks = Vec::new();
    for (obj, action) in work {
        match action {
            Action::Skip(_) => {
                ctx.emit(SyncEvent::Object {
                    path: obj.path.clone(),
                    outcome: Outcome::Skipped,
                });
                report.skipped.push(obj.path);
            }
            Action::Check(d) => tasks.push((obj, Some(d), true)),
            Action::Copy(d) => tasks.push((obj, d, false)),
        }
    }
    let mut results = stream::iter(tasks)
        .map(|(obj, known, check)| {
            let ctx = ctx.clone();
            Task::spawn(async move {
                let res = transfer_one(&ctx, &obj, known, check).await;
                (obj, res)
            })
            .join()
        })
        .buffer_unordered(opts.parallel);
    let mut last_checkpoint = Instant::now();
    let mut failure = None;
    while let Some((obj, res)) = results.next().await {
        match res {
            Ok((entry, outcome)) => {
                match outcome {
                    Outcome::Copied => {
                        report.bytes_copied += obj.size;
                        report.copied.push(obj.path.clone());
                    }
                    _ => report.reverified.push(obj.path.clone()),
                }
                ctx.emit(SyncEvent::Object {
                    path: obj.path.clone(),
                    outcome,
                });
                state.objects.insert(obj.path, entry);
                if last_checkpoint.elapsed() >= opts.checkpoint_interval {
                    write_state(&ctx.dst, opts, &dst_name, &state).await?;
                    last_checkpoint = Instant::now();
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(results);
    if let Some(e) = failure {
        // Keep what was verified so the next run skips it; the original error matters more.
        if let Err(se) = write_state(&ctx.dst, opts, &dst_name, &state).await {
            tracing::warn!(error = %se, "could not checkpoint sync state after failure");
        }
        return Err(e);
    }

    // Deletes after the new objects are in place and before the manifest: the manifest then
    // describes exactly what is under the prefix.
    stream::iter(to_delete.iter())
        .map(|path| ctx.dst.delete(path))
        .buffer_unordered(opts.parallel)
        .try_collect::<Vec<()>>()
        .await?;
    for path in &to_delete {
        ctx.emit(SyncEvent::Object {
            path: path.clone(),
            outcome: Outcome::Deleted,
        });
    }
    report.deleted = to_delete;

    let manifest = Manifest::new(
        state
            .objects
            .iter()
            .map(|(path, e)| ManifestEntry {
                path: path.clone(),
                size: e.size,
                digest: e.digest,
            })
            .collect(),
    )
    .map_err(|source| ArtifactError::Manifest {
        bucket: request.source.bucket.clone(),
        key: request.source.key(MANIFEST_PATH),
        source,
    })?;
    if manifest.len() != src_list.len() {
        return Err(ArtifactError::SourceChanged(
            "not every source object was verified at the destination".into(),
        ));
    }
    if let Some(m) = &src_manifest
        && m != &manifest
    {
        return Err(ArtifactError::SourceChanged(
            "copied content disagrees with the source manifest".into(),
        ));
    }
    write_state(&ctx.dst, opts, &dst_name, &state).await?;
    if changes || dst_manifest.as_ref() != Some(&manifest) {
        ctx.dst.write_manifest(&manifest).await?;
        report.manifest_written = true;
    }
    report.digest = manifest.digest();
    report.verified = manifest.len();
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What a sync will do, decided from listings and records alone (no I/O).
#[derive(Debug)]
struct Plan {
    work: Vec<(ListedObject, Action)>,
    /// The new state, holding the skipped objects; transfers add theirs.
    state: SyncState,
    copy_n: usize,
    copy_bytes: u64,
    check_n: usize,
    to_delete: Vec<String>,
}

/// Decides per source object: skip (recorded as verified, destination ETag unchanged, digest
/// equal to the source's), check (present with the right size and a known digest, but no
/// matching record), or copy; and which destination objects to delete. The source digest comes
/// from the source manifest, else from the record when the source ETag is unchanged (only for
/// the same source: ETags are never compared across stores). An empty ETag proves nothing.
fn plan(
    src_list: &[ListedObject],
    src_manifest: Option<&Manifest>,
    dst_list: &[ListedObject],
    old_state: &SyncState,
    source: String,
) -> Plan {
    let same_source = old_state.source == source;
    let dst_by_path: BTreeMap<&str, &ListedObject> =
        dst_list.iter().map(|o| (o.path.as_str(), o)).collect();
    let mut plan = Plan {
        work: Vec::with_capacity(src_list.len()),
        state: SyncState {
            source,
            objects: BTreeMap::new(),
        },
        copy_n: 0,
        copy_bytes: 0,
        check_n: 0,
        to_delete: Vec::new(),
    };
    for obj in src_list {
        let recorded = old_state.objects.get(&obj.path);
        let known = match src_manifest {
            Some(m) => m.get(&obj.path).map(|e| e.digest),
            None => recorded
                .filter(|r| {
                    same_source
                        && !obj.etag.is_empty()
                        && r.source_etag == obj.etag
                        && r.size == obj.size
                })
                .map(|r| r.digest),
        };
        let at_dst = dst_by_path
            .get(obj.path.as_str())
            .filter(|d| d.size == obj.size);
        let action = match (known, at_dst, recorded) {
            (Some(d), Some(at), Some(r))
                if r.digest == d
                    && !at.etag.is_empty()
                    && r.dest_etag == at.etag
                    && r.size == obj.size =>
            {
                Action::Skip(StateEntry {
                    source_etag: obj.etag.clone(),
                    ..r.clone()
                })
            }
            (Some(d), Some(_), _) => Action::Check(d),
            (known, _, _) => Action::Copy(known),
        };
        match &action {
            Action::Skip(entry) => {
                plan.state.objects.insert(obj.path.clone(), entry.clone());
            }
            Action::Check(_) => plan.check_n += 1,
            Action::Copy(_) => {
                plan.copy_n += 1;
                plan.copy_bytes += obj.size;
            }
        }
        plan.work.push((obj.clone(), action));
    }
    let src_paths: BTreeSet<&str> = src_list.iter().map(|o| o.path.as_str()).collect();
    plan.to_delete = dst_list
        .iter()
        .filter(|d| !src_paths.contains(d.path.as_str()))
        .map(|d| d.path.clone())
        .collect();
    plan
}

/// Every object the source manifest lists must be listed with its size, and nothing else.
fn check_source_against_manifest(
    list: &[ListedObject],
    manifest: &Manifest,
) -> Result<(), ArtifactError> {
    if list.len() != manifest.len() {
        return Err(ArtifactError::SourceChanged(format!(
            "source lists {} objects but its manifest {}",
            list.len(),
            manifest.len()
        )));
    }
    for obj in list {
        match manifest.get(&obj.path) {
            Some(e) if e.size == obj.size => {}
            Some(e) => {
                return Err(ArtifactError::SourceChanged(format!(
                    "{:?} is {} bytes but the source manifest says {} bytes",
                    obj.path, obj.size, e.size
                )));
            }
            None => {
                return Err(ArtifactError::SourceChanged(format!(
                    "{:?} is not in the source manifest",
                    obj.path
                )));
            }
        }
    }
    Ok(())
}

/// Every source key must be usable as a model path, and the reserved directory may hold only
/// Skybridge's own objects (a source that is itself a sync destination has both).
fn check_source_keys(
    source: &StoreLocation,
    listed: &[ListedObject],
    reserved: &[String],
) -> Result<(), ArtifactError> {
    if let Some(path) = reserved
        .iter()
        .find(|p| p.as_str() != MANIFEST_PATH && p.as_str() != STATE_PATH)
    {
        return Err(ArtifactError::InvalidModel(format!(
            "source key s3://{}/{} is reserved: .skybridge and .skybridge/ hold Skybridge's own \
             objects, never model files; rename it",
            source.bucket,
            super::error::shorten(&source.key(path), 120)
        )));
    }
    for obj in listed {
        if let Err(e) = validate_path(&obj.path) {
            return Err(ArtifactError::InvalidModel(format!(
                "source key s3://{}/{} cannot be a model file: {e}",
                source.bucket,
                super::error::shorten(&source.key(&obj.path), 120)
            )));
        }
    }
    Ok(())
}

/// The destination's sync state if it is signed with our key for this destination, else an
/// empty state: the state only saves work, so a bad one costs re-verification, not an error
/// (only failing to ask the store is one).
async fn read_state(
    dst: &Store,
    opts: &SyncOptions,
    destination: &str,
) -> Result<SyncState, ArtifactError> {
    let ignore = |why: &dyn fmt::Display| {
        tracing::warn!(reason = %why, "ignoring the destination's sync state; present objects are re-verified by reading");
        Ok(SyncState::default())
    };
    let bytes = match dst.get_optional(STATE_PATH, opts.max_state_bytes).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(SyncState::default()),
        Err(e @ ArtifactError::TooLarge { .. }) => return ignore(&e),
        Err(e) => return Err(e),
    };
    match verify_state(&bytes, opts.state_key.as_ref(), destination) {
        Ok(state) => Ok(state),
        Err(why) => ignore(&why),
    }
}

/// The records of a stored state, if it is signed with `key` for `destination`; else why not.
fn verify_state(
    bytes: &[u8],
    key: Option<&StateKey>,
    destination: &str,
) -> Result<SyncState, String> {
    let key = key.ok_or("no state key to check its signature with")?;
    let signed: SignedState = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if signed.destination != destination {
        return Err(format!(
            "it describes {}, not this destination",
            super::error::printable(&super::error::shorten(&signed.destination, 120))
        ));
    }
    if key.mac(&signed_bytes(destination, &signed.state)) != signed.mac {
        return Err("its signature does not match (edited, or written with another key)".into());
    }
    Ok(signed.state)
}

fn sign_state(key: &StateKey, destination: &str, state: &SyncState) -> Vec<u8> {
    let signed = SignedState {
        destination: destination.to_string(),
        state: state.clone(),
        mac: key.mac(&signed_bytes(destination, state)),
    };
    serde_json::to_vec(&signed).expect("state serializes")
}

async fn write_state(
    dst: &Store,
    opts: &SyncOptions,
    destination: &str,
    state: &SyncState,
) -> Result<(), ArtifactError> {
    let Some(key) = &opts.state_key else {
        // Unsigned records would never be trusted: do not write any.
        return Ok(());
    };
    let bytes = Bytes::from(sign_state(key, destination, state));
    let md5 = md5_of(&bytes);
    dst.put(STATE_PATH, bytes, &md5, None).await.map(|_| ())
}

/// Checks (when `check`) or copies one object; returns its verified state entry.
async fn transfer_one(
    ctx: &Ctx,
    obj: &ListedObject,
    known: Option<Digest>,
    check: bool,
) -> Result<(StateEntry, Outcome), ArtifactError> {
    if check
        && let Some(d) = known
        && let Some(entry) = reverify(ctx, obj, d).await?
    {
        return Ok((entry, Outcome::Reverified));
    }
    let entry = copy_object(ctx, obj, known).await?;
    Ok((entry, Outcome::Copied))
}

/// Is the destination object `obj.path` verifiably `digest`? Metadata filters, reading proves.
async fn reverify(
    ctx: &Ctx,
    obj: &ListedObject,
    digest: Digest,
) -> Result<Option<StateEntry>, ArtifactError> {
    let Some(info) = ctx.dst.head(&obj.path).await? else {
        return Ok(None);
    };
    if info.size != obj.size || info.sha256_metadata.is_some_and(|m| m != digest) {
        return Ok(None);
    }
    match stream_object(&ctx.dst, &obj.path, info.size, Some(&info.etag), |_| Ok(())).await {
        Ok(actual) if actual == digest => Ok(Some(StateEntry {
            size: obj.size,
            digest,
            dest_etag: info.etag,
            source_etag: obj.etag.clone(),
        })),
        Ok(_) | Err(ArtifactError::ContentMismatch { .. } | ArtifactError::SourceChanged(_)) => {
            Ok(None)
        }
        Err(ArtifactError::S3(e)) if e.status == Some(412) || e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn effective_part_size(configured: u64, size: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS).next_multiple_of(1024 * 1024);
    configured.max(needed)
}

/// Copies one object (single PUT or multipart), verifying it. The source is pinned by its ETag
/// (`If-Match`, same store) so a concurrent overwrite at the source cannot produce a mix.
async fn copy_object(
    ctx: &Ctx,
    obj: &ListedObject,
    known: Option<Digest>,
) -> Result<StateEntry, ArtifactError> {
    let path = obj.path.as_str();
    let (digest, dest_etag, md5s, multipart) = if obj.size <= ctx.part_size {
        let permit = ctx.budget.reserve(obj.size).await;
        let data = if obj.size >= POOLED_MIN {
            let mut reader = ResumableReader::new(&ctx.src, path, obj.size, Some(&obj.etag));
            let data = reader.read_exact(obj.size as usize, &ctx.pool).await?;
            if reader.next_chunk().await?.is_some() {
                return Err(ArtifactError::SourceChanged(format!(
                    "{path} grew while being copied"
                )));
            }
            data
        } else {
            ctx.src
                .get_bytes(path, None, Some(&obj.etag), Some(obj.size))
                .await?
        };
        let digest = Digest::of(&data);
        check_known(&ctx.src, obj, known, digest)?;
        let md5 = md5_of(&data);
        let etag = ctx.dst.put(path, data, &md5, Some(digest)).await?;
        drop(permit);
        ctx.emit(SyncEvent::Bytes(obj.size));
        (digest, etag, vec![md5], false)
    } else {
        let upload_id = ctx.dst.create_multipart(path, known).await?;
        match copy_parts(ctx, obj, known, &upload_id).await {
            Ok((digest, md5s, parts)) => {
                let etag = match ctx.dst.complete_multipart(path, &upload_id, &parts).await {
                    Ok(etag) => etag,
                    // A retried Complete whose first attempt succeeded but lost its response
                    // finds the upload gone: the object as we assembled it is the proof.
                    Err(ArtifactError::S3(e)) if e.is_not_found() => {
                        match ctx.dst.head(path).await? {
                            Some(info) if info.etag == expected_etag(&md5s, true) => info.etag,
                            _ => return Err(ArtifactError::S3(e)),
                        }
                    }
                    Err(e) => return Err(e),
                };
                (digest, etag, md5s, true)
            }
            Err(e) => {
                let key = ctx.dst.location().key(path);
                if let Err(ae) = ctx.dst.abort_multipart(&key, &upload_id).await {
                    tracing::warn!(%key, error = %ae, "could not abort multipart upload; the next sync will");
                }
                return Err(e);
            }
        }
    };
    let etag_ok = ctx.verify == VerifyMode::Etag && dest_etag == expected_etag(&md5s, multipart);
    if !etag_ok {
        let actual = stream_object(&ctx.dst, path, obj.size, Some(&dest_etag), |_| Ok(())).await?;
        if actual != digest {
            let l = ctx.dst.location();
            return Err(ArtifactError::ContentMismatch {
                what: format!("verifying s3://{}/{}", l.bucket, l.key(path)),
                expected: format!("{} bytes {digest}", obj.size),
                actual: format!("{} bytes {actual}", obj.size),
            });
        }
    }
    Ok(StateEntry {
        size: obj.size,
        digest,
        dest_etag,
        source_etag: obj.etag.clone(),
    })
}

/// The source's content must be what its manifest says (else [`ArtifactError::SourceChanged`]).
fn check_known(
    src: &Store,
    obj: &ListedObject,
    known: Option<Digest>,
    actual: Digest,
) -> Result<(), ArtifactError> {
    match known {
        Some(k) if k != actual => {
            let l = src.location();
            Err(ArtifactError::SourceChanged(format!(
                "s3://{}/{}: content does not match the source manifest: expected {} bytes {k}, \
                 got {} bytes {actual}",
                l.bucket,
                l.key(&obj.path),
                obj.size,
                obj.size
            )))
        }
        _ => Ok(()),
    }
}

type PartsOutcome = (Digest, Vec<[u8; 16]>, Vec<(i32, String)>);

/// Copies `obj` in parts: one sequential (resumable) GET of the source feeds part buffers,
/// hashed with SHA-256 in order as they are read; each full buffer is uploaded by its own task
/// (MD5 + UploadPart), up to `parallel` per object. A buffer is reserved in the memory budget
/// before it is filled and released when its upload finishes, so memory stays bounded however
/// many objects and parts are in flight; waiting for a reservation pauses the GET (TCP
/// backpressure), it never deadlocks because every reserved buffer is already being uploaded.
async fn copy_parts(
    ctx: &Ctx,
    obj: &ListedObject,
    known: Option<Digest>,
    upload_id: &str,
) -> Result<PartsOutcome, ArtifactError> {
    let part = effective_part_size(ctx.part_size, obj.size);
    let count = obj.size.div_ceil(part);
    let mut reader = ResumableReader::new(&ctx.src, &obj.path, obj.size, Some(&obj.etag));
    let mut hasher = super::digest::Hasher::new();
    let mut uploads = futures::stream::FuturesUnordered::new();
    let mut done: Vec<Option<([u8; 16], String)>> = vec![None; count as usize];
    let mut record =
        |res: Result<(u64, [u8; 16], String), ArtifactError>| -> Result<(), ArtifactError> {
            let (i, md5, etag) = res?;
            done[i as usize] = Some((md5, etag));
            Ok(())
        };
    for i in 0..count {
        let len = part.min(obj.size - i * part);
        while uploads.len() >= ctx.parallel {
            record(uploads.next().await.expect("non-empty"))?;
        }
        let permit = ctx.budget.reserve(len).await;
        let data = reader.read_exact(len as usize, &ctx.pool).await?;
        hasher.update(&data);
        let (dst, path, upload_id) = (ctx.dst.clone(), obj.path.clone(), upload_id.to_string());
        let progress = ctx.progress.clone();
        uploads.push(
            Task::spawn(async move {
                let md5 = md5_of(&data);
                let etag = dst
                    .upload_part(&path, &upload_id, (i + 1) as i32, data, &md5)
                    .await?;
                drop(permit);
                if let Some(p) = progress {
                    p(&SyncEvent::Bytes(len));
                }
                Ok::<_, ArtifactError>((i, md5, etag))
            })
            .join(),
        );
    }
    while let Some(res) = uploads.next().await {
        record(res)?;
    }
    if reader.next_chunk().await?.is_some() {
        return Err(ArtifactError::SourceChanged(format!(
            "{} grew while being copied",
            obj.path
        )));
    }
    let digest = hasher.finish();
    check_known(&ctx.src, obj, known, digest)?;
    let (md5s, completed) = done
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let (md5, etag) = d.expect("every part uploaded");
            (md5, ((i + 1) as i32, etag))
        })
        .unzip();
    Ok((digest, md5s, completed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_to_stay_within_10000_parts() {
        assert_eq!(effective_part_size(MIN_PART_SIZE, 1024), MIN_PART_SIZE);
        let huge = 100 * 1024 * 1024 * 1024u64;
        let p = effective_part_size(MIN_PART_SIZE, huge);
        assert!(huge.div_ceil(p) <= MAX_PARTS);
    }

    fn listed(path: &str, size: u64, etag: &str) -> ListedObject {
        ListedObject {
            path: path.into(),
            size,
            etag: etag.into(),
        }
    }

    fn entry(size: u64, digest: Digest, dest_etag: &str, source_etag: &str) -> StateEntry {
        StateEntry {
            size,
            digest,
            dest_etag: dest_etag.into(),
            source_etag: source_etag.into(),
        }
    }

    #[test]
    fn plan_skips_verified_checks_plausible_copies_rest_and_deletes_extras() {
        let (d1, d2, d3) = (Digest::of(b"1"), Digest::of(b"2"), Digest::of(b"3"));
        let src = vec![
            listed("same", 1, "s1"),
            listed("rewritten-at-dst", 1, "s2"),
            listed("changed-at-src", 1, "s3-new"),
            listed("new", 1, "s4"),
        ];
        let dst = vec![
            listed("same", 1, "d1"),
            listed("rewritten-at-dst", 1, "d2-other"),
            listed("changed-at-src", 1, "d3"),
            listed("extra", 5, "dx"),
        ];
        let state = SyncState {
            source: "src".into(),
            objects: [
                ("same".to_string(), entry(1, d1, "d1", "s1")),
                ("rewritten-at-dst".to_string(), entry(1, d2, "d2", "s2")),
                ("changed-at-src".to_string(), entry(1, d3, "d3", "s3")),
            ]
            .into(),
        };
        let p = plan(&src, None, &dst, &state, "src".into());
        let actions: Vec<_> = p.work.iter().map(|(o, a)| (o.path.as_str(), a)).collect();
        assert_eq!(
            actions,
            [
                ("same", &Action::Skip(entry(1, d1, "d1", "s1"))),
                ("rewritten-at-dst", &Action::Check(d2)),
                ("changed-at-src", &Action::Copy(None)),
                ("new", &Action::Copy(None)),
            ]
        );
        assert_eq!(p.to_delete, ["extra"]);
        assert_eq!((p.copy_n, p.copy_bytes, p.check_n), (2, 2, 1));
        assert_eq!(p.state.objects.len(), 1);

        // Another source: its ETags mean nothing here, so without a manifest nothing is known.
        let p = plan(&src, None, &dst, &state, "other".into());
        assert!(p.work.iter().all(|(_, a)| matches!(a, Action::Copy(None))));

        // A source manifest supplies digests: the changed object is known, present, so checked.
        let manifest = Manifest::new(vec![
            ManifestEntry {
                path: "same".into(),
                size: 1,
                digest: d1,
            },
            ManifestEntry {
                path: "rewritten-at-dst".into(),
                size: 1,
                digest: d2,
            },
            ManifestEntry {
                path: "changed-at-src".into(),
                size: 1,
                digest: d1,
            },
            ManifestEntry {
                path: "new".into(),
                size: 1,
                digest: d3,
            },
        ])
        .unwrap();
        let p = plan(&src, Some(&manifest), &dst, &state, "other".into());
        let actions: Vec<_> = p.work.iter().map(|(_, a)| a).collect();
        assert_eq!(actions[0], &Action::Skip(entry(1, d1, "d1", "s1")));
        assert_eq!(actions[2], &Action::Check(d1));
        assert_eq!(actions[3], &Action::Copy(Some(d3)));
    }

    #[test]
    fn plan_never_trusts_empty_etags() {
        let d = Digest::of(b"1");
        let state = SyncState {
            source: "src".into(),
            objects: [("a".to_string(), entry(1, d, "", ""))].into(),
        };
        // Listings without ETags: equal empty strings must not count as "unchanged".
        let p = plan(
            &[listed("a", 1, "")],
            None,
            &[listed("a", 1, "")],
            &state,
            "src".into(),
        );
        assert_eq!(p.work[0].1, Action::Copy(None));
        let manifest = Manifest::new(vec![ManifestEntry {
            path: "a".into(),
            size: 1,
            digest: d,
        }])
        .unwrap();
        let p = plan(
            &[listed("a", 1, "")],
            Some(&manifest),
            &[listed("a", 1, "")],
            &state,
            "src".into(),
        );
        assert_eq!(p.work[0].1, Action::Check(d));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2 (key "Jefe", padded with zeros to our 32-byte key: same HMAC).
        let mut jefe = [0u8; 32];
        jefe[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            StateKey(jefe).mac(b"what do ya want for nothing?").to_hex(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn sample_state() -> SyncState {
        SyncState {
            source: "local-host:9000|src|m".into(),
            objects: [
                (
                    "a.bin".to_string(),
                    entry(3, Digest::of(b"abc"), "d1", "s1"),
                ),
                (
                    "b/c.json".to_string(),
                    entry(2, Digest::of(b"{}"), "d2", "s2"),
                ),
            ]
            .into(),
        }
    }

    #[test]
    fn signed_state_round_trips_only_with_its_key_and_destination() {
        let key = StateKey::from_secret(b"0123456789abcdef").unwrap();
        let bytes = sign_state(&key, "bkt|m", &sample_state());
        assert_eq!(
            verify_state(&bytes, Some(&key), "bkt|m").unwrap(),
            sample_state()
        );
        let other = StateKey::from_secret(b"0123456789abcdeF").unwrap();
        assert!(verify_state(&bytes, Some(&other), "bkt|m").is_err());
        assert!(verify_state(&bytes, None, "bkt|m").is_err());
        assert!(verify_state(&bytes, Some(&key), "bkt|m2").is_err());
        // The old, unsigned format is not a state.
        let unsigned = serde_json::to_vec(&sample_state()).unwrap();
        assert!(verify_state(&unsigned, Some(&key), "bkt|m").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any edit of a signed state's records (the attack: point a record at new content) is
        /// detected.
        #[test]
        fn any_edit_of_a_signed_state_is_detected(
            which in 0usize..2,
            field in 0usize..5,
            text in "[a-f0-9]{1,32}",
            size in proptest::prelude::any::<u64>(),
        ) {
            let key = StateKey::from_secret(b"0123456789abcdef").unwrap();
            let state = sample_state();
            let bytes = sign_state(&key, "bkt|m", &state);
            let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let path = if which == 0 { "a.bin" } else { "b/c.json" };
            let record = &mut value["state"]["objects"][path];
            let before = record.clone();
            match field {
                0 => record["dest_etag"] = text.clone().into(),
                1 => record["source_etag"] = text.clone().into(),
                2 => record["size"] = size.into(),
                3 => record["digest"] = Digest::of(text.as_bytes()).to_string().into(),
                _ => value["state"]["source"] = text.clone().into(),
            }
            let edited = serde_json::to_vec(&value).unwrap();
            let changed = value["state"]["objects"][path] != before
                || value["state"]["source"] != state.source.as_str();
            proptest::prop_assume!(changed);
            proptest::prop_assert!(verify_state(&edited, Some(&key), "bkt|m").is_err());
        }
    }

    #[test]
    fn options_are_validated() {
        assert!(SyncOptions::default().validate().is_ok());
        let o = SyncOptions {
            part_size: 1024,
            ..SyncOptions::default()
        };
        assert!(o.validate().is_err());
        let o = SyncOptions {
            parallel: 0,
            ..SyncOptions::default()
        };
        assert!(o.validate().is_err());
        let o = SyncOptions {
            memory_budget: MIN_PART_SIZE,
            part_size: 2 * MIN_PART_SIZE,
            ..SyncOptions::default()
        };
        assert!(o.validate().is_err());
    }

    #[tokio::test]
    async fn residency_refused_before_any_connection() {
        // Endpoints that do not exist: a refusal must come first, without touching the network.
        let mut source = StoreLocation::parse_uri("s3://src-bkt/m").unwrap();
        source.endpoint = Some("http://127.0.0.1:9".into());
        let mut destination = StoreLocation::parse_uri("s3://dst-bkt/m").unwrap();
        destination.endpoint = Some("http://127.0.0.1:9".into());
        let req = SyncRequest {
            source,
            destination,
            data_class: DataClass::Sensitive,
            destination_cloud: Cloud::Public,
            options: SyncOptions::default(),
        };
        assert!(matches!(
            sync_model(&req).await,
            Err(ArtifactError::Residency(_))
        ));
    }
}
