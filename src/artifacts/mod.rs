//! Model artifacts: content manifests, verified incremental sync between S3-compatible stores,
//! and a verified, fail-closed fetch to local disk.
//!
//! The operator calls:
//! - [`residency::check`] before scheduling any copy (pure);
//! - [`StoreLocation::from_artifact_store`] to address a model in a pool's store;
//! - [`sync_model`] to make a destination hold a verified copy of a source model;
//! - [`read_manifest`] to learn a model's digest;
//! - [`fetch_model`] (what `skybridge fetch-model` runs in init containers).
//!
//! Layout of a model under `s3://bucket/prefix/`: the model files, plus the reserved
//! `.skybridge/` directory holding `manifest.json` (canonical manifest; its SHA-256 is the model
//! digest, `sha256:<hex>`; written last, present only while the files match it) and, at sync
//! destinations, `sync-state.json` (per-object verification records, signed by the syncer, that
//! make re-syncs cheap).
//! Errors are typed ([`ArtifactError`]): [`ArtifactError::Residency`] maps to a `Forbidden`
//! condition, [`ArtifactError::is_bad_input`] to CLI exit status 2, everything else to 1.

pub mod digest;
pub mod error;
pub mod fetch;
pub mod identity;
pub mod manifest;
pub mod residency;
pub mod retry;
pub mod store;
pub mod sync;
mod transfer;

pub use digest::Digest;
pub use error::{ArtifactError, S3Error};
pub use fetch::{FetchReport, FetchRequest, fetch_model};
pub use identity::StoreIdentity;
pub use manifest::{Manifest, ManifestEntry};
pub use residency::ResidencyError;
pub use retry::RetryPolicy;
pub use store::{
    Credentials, DEFAULT_MAX_MANIFEST_BYTES, DEFAULT_MAX_OBJECTS, Store, StoreLocation,
};
pub use sync::{
    Outcome, StateKey, SyncEvent, SyncOptions, SyncReport, SyncRequest, VerifyMode, sync_model,
};

/// Reads and validates the manifest of the model at `location` (at most
/// [`DEFAULT_MAX_MANIFEST_BYTES`]); its [`Manifest::digest`] is the model digest.
/// [`ArtifactError::ManifestMissing`] when there is none (never synced, or a sync is in progress).
pub async fn read_manifest(location: &StoreLocation) -> Result<Manifest, ArtifactError> {
    let store = Store::connect(location, RetryPolicy::default()).await?;
    store
        .read_manifest()
        .await?
        .ok_or_else(|| ArtifactError::ManifestMissing {
            bucket: location.bucket.clone(),
            key: location.key(manifest::MANIFEST_PATH),
        })
}
