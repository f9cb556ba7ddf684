//! Model artifacts: content manifests, verified incremental sync between S3-compatible stores,
//! and a verified, fail-closed fetch to local disk.
//!
//! The operator calls:
//! - [`residency::check`] before scheduling any copy (pure);
//! - [`StoreLocation::from_artifact_store`] to address a model in a pool's store;
//! - [`sync_model`] to make a destination hold a verified copy of a source model;
//! - [`read_manifest`] to learn a model's digest;
//! - [`fetch_model`] (what `skybridge fetch-model` runs in init containers).

pub mod digest;
pub mod error;
pub mod manifest;
pub mod residency;
pub mod retry;
pub mod store;

pub use digest::Digest;
pub use error::{ArtifactError, S3Error};
pub use manifest::{Manifest, ManifestEntry};
pub use residency::ResidencyError;
pub use retry::RetryPolicy;
pub use store::{Credentials, Store, StoreLocation};
