//! The content manifest of a model: every object under the model's prefix with its relative path,
//! size and SHA-256. Pure code, no I/O.
//!
//! **Canonical serialization** (what the model digest is computed over): compact JSON, no
//! whitespace, exactly `{"schema":"skybridge.io/model-manifest/v1","files":[...]}` where `files`
//! is sorted by path in byte order, paths are unique, and each file is
//! `{"path":"…","size":N,"digest":"sha256:…"}` in that field order, strings escaped as serde_json
//! does. The manifest object stored at `<prefix>/.skybridge/manifest.json` holds exactly these
//! bytes, so a reader can hash what it downloaded; [`Manifest::from_canonical_bytes`] rejects any
//! other spelling, so two different byte strings never describe the same model.

use super::digest::Digest;
use super::error::shorten;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Schema tag inside every manifest; bump when the canonical form changes.
pub const MANIFEST_SCHEMA: &str = "skybridge.io/model-manifest/v1";
/// Directory (relative to the model prefix) reserved for Skybridge's own objects. Never part of
/// the model, never listed, copied or deleted as model content.
pub const RESERVED_DIR: &str = ".skybridge/";
/// The reserved directory's own name: no model file may be called this either (it would take
/// the place of the directory in a fetched copy).
pub const RESERVED_NAME: &str = ".skybridge";
/// Longest path accepted, in bytes (S3's key limit).
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest path segment accepted, in bytes (the usual file-name limit, `NAME_MAX`).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Relative path of the manifest object under the model prefix.
pub const MANIFEST_PATH: &str = ".skybridge/manifest.json";

/// One file of a model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// Path relative to the model prefix, `/`-separated (see [`validate_path`]).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub digest: Digest,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    schema: String,
    files: Vec<ManifestEntry>,
}

/// A validated manifest: paths valid and unique, entries sorted by path.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Manifest {
    files: Vec<ManifestEntry>,
}

/// Why a manifest (or a path in it) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("invalid path {:?} in manifest: {reason}", shorten(path, 120))]
    InvalidPath { path: String, reason: &'static str },
    #[error("path {:?} appears twice in manifest", shorten(.0, 120))]
    DuplicatePath(String),
    #[error("manifest is not valid JSON of schema {MANIFEST_SCHEMA}: {0}")]
    Parse(String),
    #[error("manifest bytes are not in canonical form")]
    NotCanonical,
}

/// Checks that `path` is safe as an object suffix *and* as a relative file path: non-empty, at
/// most 1024 bytes with segments of at most 255, `/`-separated, no empty, `.` or `..` segments,
/// no leading `/`, no backslash, NUL or other control character, and neither the reserved
/// `.skybridge/` directory nor anything inside it. `fetch-model` relies on this to never write
/// outside its destination directory.
pub fn validate_path(path: &str) -> Result<(), ManifestError> {
    let bad = |reason| {
        Err(ManifestError::InvalidPath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH_BYTES {
        return bad("longer than 1024 bytes");
    }
    if path.contains('\\') || path.contains('\0') {
        return bad("contains a backslash or NUL");
    }
    if path.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if path.starts_with(RESERVED_DIR) || path == RESERVED_NAME {
        return bad("the reserved .skybridge/ directory is Skybridge's, not the model's");
    }
    for segment in path.split('/') {
        match segment {
            "" => return bad("empty segment (leading, trailing or double slash)"),
            "." | ".." => return bad("'.' or '..' segment"),
            s if s.len() > MAX_SEGMENT_BYTES => return bad("a segment is longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

impl Manifest {
    /// Builds a manifest from entries in any order, validating paths and uniqueness.
    pub fn new(mut files: Vec<ManifestEntry>) -> Result<Self, ManifestError> {
        for f in &files {
            validate_path(&f.path)?;
        }
        files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        if let Some(w) = files.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(ManifestError::DuplicatePath(w[0].path.clone()));
        }
        Ok(Manifest { files })
    }

    /// Entries sorted by path.
    pub fn entries(&self) -> &[ManifestEntry] {
        &self.files
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Sum of all file sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The entry for `path`, if any (binary search: entries are sorted).
    pub fn get(&self, path: &str) -> Option<&ManifestEntry> {
        self.files
            .binary_search_by(|f| f.path.as_bytes().cmp(path.as_bytes()))
            .ok()
            .map(|i| &self.files[i])
    }

    /// The canonical serialization (see the module docs).
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct WireRef<'a> {
            schema: &'a str,
            files: &'a [ManifestEntry],
        }
        serde_json::to_vec(&WireRef {
            schema: MANIFEST_SCHEMA,
            files: &self.files,
        })
        .expect("serializing plain structs to JSON cannot fail")
    }

    /// The model digest: SHA-256 of the canonical serialization.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_canonical_bytes())
    }

    /// Parses a stored manifest and requires it to be canonical, so that the digest of the bytes
    /// read equals [`Manifest::digest`].
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))?;
        if wire.schema != MANIFEST_SCHEMA {
            return Err(ManifestError::Parse(format!(
                "unknown schema {:?}",
                wire.schema
            )));
        }
        let manifest = Manifest::new(wire.files)?;
        if manifest.to_canonical_bytes() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }
}

/// What turning `dest` into `source` takes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ManifestDiff {
    /// In the source and missing or different (size or digest) at the destination.
    pub copy: Vec<ManifestEntry>,
    /// At the destination only.
    pub delete: Vec<ManifestEntry>,
    /// Identical on both sides.
    pub unchanged: Vec<ManifestEntry>,
}

/// Compares two manifests by path, size and SHA-256 only (never by ETag: ETags differ between
/// stores for identical content). Each list is sorted by path.
pub fn diff(source: &Manifest, dest: &Manifest) -> ManifestDiff {
    let dest_by_path: BTreeMap<&str, &ManifestEntry> =
        dest.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut out = ManifestDiff::default();
    for s in &source.files {
        match dest_by_path.get(s.path.as_str()) {
            Some(d) if d.size == s.size && d.digest == s.digest => out.unchanged.push(s.clone()),
            _ => out.copy.push(s.clone()),
        }
    }
    out.delete = dest
        .files
        .iter()
        .filter(|d| source.get(&d.path).is_none())
        .cloned()
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, content: &[u8]) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            size: content.len() as u64,
            digest: Digest::of(content),
        }
    }

    #[test]
    fn canonical_form_is_sorted_compact_and_order_independent() {
        let a = Manifest::new(vec![entry("b/x.bin", b"1"), entry("a.json", b"{}")]).unwrap();
        let b = Manifest::new(vec![entry("a.json", b"{}"), entry("b/x.bin", b"1")]).unwrap();
        assert_eq!(a.to_canonical_bytes(), b.to_canonical_bytes());
        assert_eq!(a.digest(), b.digest());
        let text = String::from_utf8(a.to_canonical_bytes()).unwrap();
        assert!(text.starts_with(r#"{"schema":"skybridge.io/model-manifest/v1","files":[{"path":"a.json","size":2,"digest":"sha256:"#), "{text}");
        assert!(!text.contains(' ') && !text.contains('\n'));
        assert_eq!(Digest::of(text.as_bytes()), a.digest());
    }

    #[test]
    fn round_trips_and_rejects_non_canonical() {
        let m = Manifest::new(vec![
            entry("w/0.safetensors", b"abc"),
            entry("config.json", b"{}"),
        ])
        .unwrap();
        let bytes = m.to_canonical_bytes();
        assert_eq!(Manifest::from_canonical_bytes(&bytes).unwrap(), m);
        let pretty = serde_json::to_vec_pretty(
            &serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
        )
        .unwrap();
        assert_eq!(
            Manifest::from_canonical_bytes(&pretty),
            Err(ManifestError::NotCanonical)
        );
        assert!(matches!(
            Manifest::from_canonical_bytes(b"{}"),
            Err(ManifestError::Parse(_))
        ));
        let other_schema = String::from_utf8(bytes).unwrap().replace("/v1", "/v9");
        assert!(matches!(
            Manifest::from_canonical_bytes(other_schema.as_bytes()),
            Err(ManifestError::Parse(_))
        ));
    }

    #[test]
    fn digest_changes_with_any_field() {
        let base = Manifest::new(vec![entry("a", b"x")]).unwrap().digest();
        assert_ne!(
            Manifest::new(vec![entry("b", b"x")]).unwrap().digest(),
            base
        );
        assert_ne!(
            Manifest::new(vec![entry("a", b"y")]).unwrap().digest(),
            base
        );
        let mut sized = entry("a", b"x");
        sized.size = 2;
        assert_ne!(Manifest::new(vec![sized]).unwrap().digest(), base);
    }

    #[test]
    fn rejects_unsafe_paths_and_duplicates() {
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/",
            "../up",
            "a/../b",
            "./a",
            "a\\b",
            ".skybridge/manifest.json",
            ".skybridge",
            "nul\0",
            "line\nbreak",
            "esc\u{1b}[2J",
            &"a".repeat(256),
            &format!("{}/x", "a/".repeat(512)),
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
            assert!(Manifest::new(vec![entry(bad, b"")]).is_err());
        }
        for good in [
            "a",
            "a/b/c.bin",
            ".hidden",
            "..a",
            "x.skybridge/y",
            ".skybridgex",
            "ünïcode/名前.bin",
            &"a".repeat(255),
        ] {
            assert!(validate_path(good).is_ok(), "{good:?}");
        }
        assert_eq!(
            Manifest::new(vec![entry("a", b"1"), entry("a", b"2")]),
            Err(ManifestError::DuplicatePath("a".into()))
        );
    }

    #[test]
    fn diff_splits_copy_delete_unchanged() {
        let src = Manifest::new(vec![
            entry("same", b"1"),
            entry("changed", b"new"),
            entry("new", b"n"),
        ])
        .unwrap();
        let dst = Manifest::new(vec![
            entry("same", b"1"),
            entry("changed", b"old"),
            entry("gone", b"g"),
        ])
        .unwrap();
        let d = diff(&src, &dst);
        let paths = |v: &[ManifestEntry]| v.iter().map(|e| e.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(&d.copy), ["changed", "new"]);
        assert_eq!(paths(&d.delete), ["gone"]);
        assert_eq!(paths(&d.unchanged), ["same"]);
        let none = diff(&src, &src);
        assert!(none.copy.is_empty() && none.delete.is_empty());
        assert_eq!(none.unchanged.len(), 3);
    }

    #[test]
    fn get_and_totals() {
        let m = Manifest::new(vec![entry("b", b"22"), entry("a", b"1")]).unwrap();
        assert_eq!(m.get("b").unwrap().size, 2);
        assert!(m.get("c").is_none());
        assert_eq!(m.total_size(), 3);
        assert_eq!(m.len(), 2);
    }
}
