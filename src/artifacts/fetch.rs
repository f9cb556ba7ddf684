//! Verified, fail-closed download of a model to a local directory (the init container of every
//! serving pod runs this through `skybridge fetch-model`).
//!
//! Files are downloaded into `<parent>/.<name>.partial`, each hashed while it streams and checked
//! against the manifest; the manifest itself is checked against the expected digest *before*
//! any download. Only when everything matches is the directory renamed to DEST (one atomic
//! rename). Any mismatch leaves no DEST at all: a stale DEST is removed before downloading, and
//! the partial directory is removed on failure. DEST holds a copy of the manifest at
//! `.skybridge/manifest.json`, which makes a re-run that finds the model intact a no-op.
//!
//! Refused outright: a DEST that is a symlink or holds one (a link to another valid copy would
//! pass every hash check while the files served are elsewhere), a model whose manifest lists no
//! files, and a manifest larger than [`FetchRequest::max_manifest_bytes`].

use super::digest::Digest;
use super::error::ArtifactError;
use super::manifest::{MANIFEST_PATH, Manifest};
use super::retry::RetryPolicy;
use super::store::{DEFAULT_MAX_MANIFEST_BYTES, DEFAULT_MAX_OBJECTS, Store, StoreLocation};
use super::transfer::{Task, stream_object};
use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Download the model at `source` into `dest`.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    pub source: StoreLocation,
    /// Directory the model ends up in; its parent must exist or be creatable.
    pub dest: PathBuf,
    /// Refuse unless the store's manifest has this digest (pin the exact model version).
    pub expected_digest: Option<Digest>,
    /// Files downloaded at once.
    pub parallel: usize,
    pub retry: RetryPolicy,
    /// A manifest (in the store or in DEST) larger than this is refused without being read
    /// whole. Default 16 MiB (~100,000 files).
    pub max_manifest_bytes: u64,
}

impl FetchRequest {
    pub fn new(source: StoreLocation, dest: impl Into<PathBuf>) -> Self {
        FetchRequest {
            source,
            dest: dest.into(),
            expected_digest: None,
            parallel: 8,
            retry: RetryPolicy::default(),
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FetchReport {
    pub source: String,
    pub dest: PathBuf,
    pub digest: Digest,
    pub files: usize,
    pub bytes: u64,
    /// DEST already held this verified model; nothing was downloaded.
    pub already_present: bool,
    pub elapsed_seconds: f64,
}

/// Downloads and verifies the model; see the module docs for the guarantees.
pub async fn fetch_model(request: &FetchRequest) -> Result<FetchReport, ArtifactError> {
    let started = Instant::now();
    if request.parallel == 0 {
        return Err(ArtifactError::InvalidRequest(
            "parallel must be at least 1".into(),
        ));
    }
    if request.max_manifest_bytes == 0 {
        return Err(ArtifactError::InvalidRequest(
            "the manifest size limit must be positive".into(),
        ));
    }
    let dest = request.dest.clone();
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            ArtifactError::InvalidRequest(format!(
                "destination {} has no usable directory name",
                dest.display()
            ))
        })?
        .to_string();
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let report = |digest: Digest, m: &Manifest, already_present: bool| FetchReport {
        source: request.source.uri(),
        dest: dest.clone(),
        digest,
        files: m.len(),
        bytes: m.total_size(),
        already_present,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    };

    reject_symlinks(&dest)?;
    let refuse_empty = |m: &Manifest| {
        if m.is_empty() {
            Err(ArtifactError::InvalidModel(format!(
                "the manifest of {} lists no files: an empty model is refused",
                request.source.uri()
            )))
        } else {
            Ok(())
        }
    };

    // Pinned digest and an intact local copy: no need to ask the store anything.
    let local = read_local_manifest(&dest, request.max_manifest_bytes).filter(|m| !m.is_empty());
    if let (Some(expected), Some(m)) = (request.expected_digest, &local)
        && m.digest() == expected
        && verify_local(&dest, m).await.is_ok()
    {
        return Ok(report(expected, m, true));
    }

    let target = async {
        let store = Store::connect(&request.source, request.retry.clone())
            .await?
            .with_limits(request.max_manifest_bytes, DEFAULT_MAX_OBJECTS);
        let manifest =
            store
                .read_manifest()
                .await?
                .ok_or_else(|| ArtifactError::ManifestMissing {
                    bucket: request.source.bucket.clone(),
                    key: request.source.key(MANIFEST_PATH),
                })?;
        let digest = manifest.digest();
        if request.expected_digest.is_none_or(|e| e == digest) {
            refuse_empty(&manifest)?;
        }
        match request.expected_digest {
            Some(expected) if expected != digest => Err(ArtifactError::DigestMismatch {
                expected,
                actual: digest,
            }),
            _ => Ok((store, manifest, digest)),
        }
    }
    .await;
    if let (Ok((_, manifest, digest)), Some(m)) = (&target, &local)
        && m == manifest
        && verify_local(&dest, m).await.is_ok()
    {
        return Ok(report(*digest, m, true));
    }

    // DEST is not the verified target (stale, broken, or the target is unavailable): remove it
    // now, so that no failure leaves anything that looks complete. Only ever remove a directory
    // that is ours or empty.
    remove_stale_dest(&dest)?;
    let (store, manifest, digest) = target?;

    let partial = parent.join(format!(".{name}.partial"));
    let result = download_into(&store, &manifest, &partial, request.parallel)
        .await
        .and_then(|()| {
            std::fs::rename(&partial, &dest).map_err(|e| ArtifactError::io(&dest, e))?;
            if let Ok(dir) = std::fs::File::open(&parent) {
                let _ = dir.sync_all(); // make the rename durable where the platform allows
            }
            Ok(())
        });
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    Ok(report(digest, &manifest, false))
}

fn read_local_manifest(dest: &Path, limit: u64) -> Option<Manifest> {
    let path = dest.join(MANIFEST_PATH);
    if std::fs::symlink_metadata(&path).ok()?.len() > limit {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    Manifest::from_canonical_bytes(&bytes).ok()
}

/// Refuses a DEST that is a symlink or holds one anywhere below it.
fn reject_symlinks(dest: &Path) -> Result<(), ArtifactError> {
    let refuse = |link: &Path| {
        Err(ArtifactError::InvalidRequest(format!(
            "{} is a symbolic link; a model directory must hold its own files (remove the link)",
            link.display()
        )))
    };
    let meta = match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ArtifactError::io(dest, e)),
        Ok(m) => m,
    };
    if meta.file_type().is_symlink() {
        return refuse(dest);
    }
    if !meta.is_dir() {
        return Ok(()); // refused later as "not a directory"
    }
    let mut pending = vec![dest.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| ArtifactError::io(&dir, e))? {
            let entry = entry.map_err(|e| ArtifactError::io(&dir, e))?;
            let kind = entry
                .file_type()
                .map_err(|e| ArtifactError::io(entry.path(), e))?;
            if kind.is_symlink() {
                return refuse(&entry.path());
            }
            if kind.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(())
}

fn remove_stale_dest(dest: &Path) -> Result<(), ArtifactError> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ArtifactError::io(dest, e)),
        Ok(meta) if !meta.is_dir() => Err(ArtifactError::InvalidRequest(format!(
            "destination {} exists and is not a directory",
            dest.display()
        ))),
        Ok(_) => {
            let ours = dest.join(MANIFEST_PATH).exists();
            let empty = std::fs::read_dir(dest)
                .map_err(|e| ArtifactError::io(dest, e))?
                .next()
                .is_none();
            if !(ours || empty) {
                return Err(ArtifactError::InvalidRequest(format!(
                    "destination {} is not empty and holds no Skybridge model; refusing to replace it",
                    dest.display()
                )));
            }
            std::fs::remove_dir_all(dest).map_err(|e| ArtifactError::io(dest, e))
        }
    }
}

/// Re-hashes every file the manifest lists under `dir`.
async fn verify_local(dir: &Path, manifest: &Manifest) -> Result<(), ArtifactError> {
    let dir = dir.to_path_buf();
    let manifest = manifest.clone();
    tokio::task::spawn_blocking(move || {
        for e in manifest.entries() {
            let path = dir.join(&e.path);
            let mismatch = |actual: String| ArtifactError::ContentMismatch {
                what: path.display().to_string(),
                expected: format!("{} bytes {}", e.size, e.digest),
                actual,
            };
            // Checked before opening (reject_symlinks ran earlier, this closes the gap for
            // anything planted since): only a regular file counts.
            let kind = std::fs::symlink_metadata(&path)
                .map_err(|err| ArtifactError::io(&path, err))?
                .file_type();
            if !kind.is_file() {
                return Err(mismatch("not a regular file".into()));
            }
            let mut f = std::fs::File::open(&path).map_err(|err| ArtifactError::io(&path, err))?;
            let len = f
                .metadata()
                .map_err(|err| ArtifactError::io(&path, err))?
                .len();
            if len != e.size {
                return Err(mismatch(format!("{len} bytes")));
            }
            let mut hasher = super::digest::Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f
                    .read(&mut buf)
                    .map_err(|err| ArtifactError::io(&path, err))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            let actual = hasher.finish();
            if actual != e.digest {
                return Err(mismatch(format!("{len} bytes {actual}")));
            }
        }
        Ok(())
    })
    .await
    .expect("verification task does not panic")
}

async fn download_into(
    store: &Store,
    manifest: &Manifest,
    partial: &Path,
    parallel: usize,
) -> Result<(), ArtifactError> {
    if partial.exists() {
        std::fs::remove_dir_all(partial).map_err(|e| ArtifactError::io(partial, e))?;
    }
    std::fs::create_dir_all(partial).map_err(|e| ArtifactError::io(partial, e))?;
    let store = Arc::new(store.clone());
    stream::iter(manifest.entries().iter().cloned())
        .map(|entry| {
            let store = store.clone();
            let target = partial.join(&entry.path);
            Task::spawn(async move {
                if let Some(dir) = target.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| ArtifactError::io(dir, e))?;
                }
                let mut file =
                    std::fs::File::create(&target).map_err(|e| ArtifactError::io(&target, e))?;
                let mut written = 0u64;
                let actual = stream_object(&store, &entry.path, entry.size, None, |chunk| {
                    written += chunk.len() as u64;
                    file.write_all(chunk)
                        .map_err(|e| ArtifactError::io(&target, e))
                })
                .await;
                let l = store.location();
                let what = format!("s3://{}/{}", l.bucket, l.key(&entry.path));
                let expected = format!("{} bytes {}", entry.size, entry.digest);
                let actual = match actual {
                    Ok(d) => d,
                    Err(ArtifactError::ContentMismatch { actual, .. }) => {
                        return Err(ArtifactError::ContentMismatch {
                            what,
                            expected,
                            actual,
                        });
                    }
                    Err(e) => return Err(e),
                };
                if actual != entry.digest {
                    return Err(ArtifactError::ContentMismatch {
                        what,
                        expected,
                        actual: format!("{written} bytes {actual}"),
                    });
                }
                file.sync_all().map_err(|e| ArtifactError::io(&target, e))?;
                debug_assert_eq!(written, entry.size);
                Ok(())
            })
            .join()
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<()>>()
        .await?;
    let manifest_file = partial.join(MANIFEST_PATH);
    std::fs::create_dir_all(manifest_file.parent().expect("has a parent"))
        .map_err(|e| ArtifactError::io(partial, e))?;
    std::fs::write(&manifest_file, manifest.to_canonical_bytes())
        .map_err(|e| ArtifactError::io(&manifest_file, e))?;
    Ok(())
}
