//! A catalogue of hostile inputs to `sync` and `fetch-model`, against two real S3 servers (moto
//! on loopback): an attacker who can write the destination bucket (objects, manifest, sync
//! state), a source holding keys no model may have, manifests that lie, endpoints spelled to slip
//! past the overlap check, and inputs sized to exhaust memory. Each case states what must hold.
//!
//! Assertions look at messages and `is_bad_input()` (the CLI's exit status 2) rather than only at
//! error variants: what a user sees is the contract.

#[path = "support/s3.rs"]
mod s3;

use s3::{
    create_bucket, data, get, keys, location, model_files, put, put_large, put_with_sha_metadata,
    run_measured, seed_model, stores, unique_bucket,
};
use skybridge::api::common::{Cloud, DataClass};
use skybridge::artifacts::manifest::{MANIFEST_PATH, MANIFEST_SCHEMA};
use skybridge::artifacts::{
    ArtifactError, Digest, FetchRequest, Manifest, ManifestEntry, StateKey, SyncEvent, SyncOptions,
    SyncReport, SyncRequest, fetch_model, sync_model,
};
use std::path::Path;
use std::sync::Arc;

const MIB: usize = 1024 * 1024;
const STATE: &str = ".skybridge/sync-state.json";

fn options() -> SyncOptions {
    SyncOptions {
        parallel: 4,
        part_size: 5 * MIB as u64,
        memory_budget: 32 * MIB as u64,
        ..SyncOptions::default()
    }
}

fn manifest_of(files: &[(String, Vec<u8>)]) -> Manifest {
    Manifest::new(
        files
            .iter()
            .map(|(p, c)| ManifestEntry {
                path: p.clone(),
                size: c.len() as u64,
                digest: Digest::of(c),
            })
            .collect(),
    )
    .unwrap()
}

/// A model at store A `s3://<src>/m` (with its manifest when `with_manifest`) and an empty
/// destination bucket at store B.
async fn setup(tag: &str, with_manifest: bool) -> (String, String, Vec<(String, Vec<u8>)>) {
    let s = stores();
    let (src, dst) = (
        unique_bucket(&format!("{tag}-src")),
        unique_bucket(&format!("{tag}-dst")),
    );
    let files = model_files(1, 6 * MIB);
    seed_model(&s.a.endpoint, &src, "m", &files).await;
    if with_manifest {
        put(
            &s.a.endpoint,
            &src,
            &format!("m/{MANIFEST_PATH}"),
            manifest_of(&files).to_canonical_bytes(),
        )
        .await;
    }
    create_bucket(&s.b.endpoint, &dst).await;
    (src, dst, files)
}

fn request(src: &str, dst: &str) -> SyncRequest {
    let s = stores();
    SyncRequest {
        source: location(&s.a.endpoint, src, "m"),
        destination: location(&s.b.endpoint, dst, "m"),
        data_class: DataClass::Internal,
        destination_cloud: Cloud::Private,
        options: options(),
    }
}

async fn sync(src: &str, dst: &str) -> Result<SyncReport, ArtifactError> {
    sync_model(&request(src, dst)).await
}

/// One line, no control characters, at most 400 characters: what an operator can read.
#[track_caller]
fn assert_readable(message: &str) {
    assert!(
        !message.chars().any(char::is_control),
        "control characters in {message:?}"
    );
    assert!(message.len() <= 400, "{} bytes: {message}", message.len());
}

/// Nothing that looks like a model at or next to `dest`.
fn assert_nothing_left(dest: &Path) {
    assert!(!dest.exists(), "{} must not exist", dest.display());
    let leftovers: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

// ---------------------------------------------------------------------------------------------
// Overlap: a sync deletes what its source lacks, so it must never run onto its own source.
// ---------------------------------------------------------------------------------------------

/// Spellings of store A's loopback endpoint that name the same server.
fn spellings(endpoint: &str) -> Vec<String> {
    let port = endpoint.rsplit(':').next().unwrap();
    vec![
        format!("http://localhost:{port}"),
        format!("http://LOCALHOST:{port}/"),
        format!("http://localhost.:{port}"),
        format!("http://[::1]:{port}"),
        format!("http://127.0.0.2:{port}"),
        format!("https://127.0.0.1:{port}"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_is_refused_however_the_endpoint_is_spelled_in_both_directions() {
    let s = stores();
    let bucket = unique_bucket("overlap");
    let files = model_files(0, 0);
    seed_model(&s.a.endpoint, &bucket, "team/m", &files).await;
    let before = keys(&s.a.endpoint, &bucket).await;
    // Destination around the source (the whole bucket, or a parent prefix), inside it, or equal.
    for (src_prefix, dst_prefix) in [
        ("team/m", ""),
        ("team/m", "team"),
        ("team", "team/m/copy"),
        ("team/m", "team/m"),
    ] {
        for spelling in spellings(&s.a.endpoint) {
            let mut req = request(&bucket, &bucket);
            req.source = location(&s.a.endpoint, &bucket, src_prefix);
            req.destination = location(&spelling, &bucket, dst_prefix);
            let err = sync_model(&req)
                .await
                .expect_err(&format!("{src_prefix} -> {spelling}/{dst_prefix} overlaps"));
            assert!(err.is_bad_input(), "{err}");
            let text = err.to_string();
            assert!(text.contains("overlap"), "{text}");
            assert_readable(&text);
        }
    }
    assert_eq!(keys(&s.a.endpoint, &bucket).await, before, "source touched");

    // The CLI exits 2 and leaves the source intact.
    let from = format!("s3://{bucket}/team/m");
    let to = format!("s3://{bucket}");
    let localhost = &spellings(&s.a.endpoint)[0];
    let (code, _, err, _) = run_measured(
        env!("CARGO_BIN_EXE_skybridge"),
        &[
            "sync",
            "--from",
            &from,
            "--to",
            &to,
            "--from-endpoint",
            &s.a.endpoint,
            "--to-endpoint",
            localhost,
            "--from-path-style",
            "--to-path-style",
            "--data-class",
            "public",
            "--to-cloud",
            "public",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("overlap"), "{err}");
    assert_eq!(keys(&s.a.endpoint, &bucket).await, before, "source touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disjoint_prefixes_of_one_bucket_sync_and_the_source_survives() {
    let s = stores();
    let bucket = unique_bucket("disjoint");
    let files = model_files(0, 0);
    seed_model(&s.a.endpoint, &bucket, "team/m", &files).await;
    let mut req = request(&bucket, &bucket);
    req.source = location(&s.a.endpoint, &bucket, "team/m");
    // Another spelling of the same server, a prefix that only shares a string prefix.
    req.destination = location(&spellings(&s.a.endpoint)[0], &bucket, "team/m2");
    let report = sync_model(&req).await.unwrap();
    assert_eq!(report.copied.len(), files.len());
    for (path, content) in &files {
        assert_eq!(
            get(&s.a.endpoint, &bucket, &format!("team/m/{path}")).await,
            Some(content.clone())
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The destination's own records: an attacker who writes the destination writes those too.
// ---------------------------------------------------------------------------------------------

/// The per-object records inside a stored sync state, wherever the format keeps them.
fn objects_of(
    value: &mut serde_json::Value,
) -> Option<&mut serde_json::Map<String, serde_json::Value>> {
    let obj = value.as_object_mut()?;
    if obj.contains_key("objects") {
        return obj.get_mut("objects")?.as_object_mut();
    }
    obj.values_mut().find_map(objects_of)
}

async fn head_etag(endpoint: &str, bucket: &str, key: &str) -> String {
    let head = s3::admin(endpoint)
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    head.e_tag().unwrap().trim_matches('"').to_string()
}

/// The attack of issue #18: overwrite an object, then edit the sync state so its record matches
/// the new ETag. The next sync must not take the state's word for it.
async fn forge(dst: &str, path: &str, content: &[u8]) {
    let s = stores();
    let key = format!("m/{path}");
    let mut bad = content.to_vec();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x55;
    // Same size, and the metadata still claims the right SHA-256.
    put_with_sha_metadata(&s.b.endpoint, dst, &key, bad, &Digest::of(content).to_hex()).await;
    let etag = head_etag(&s.b.endpoint, dst, &key).await;
    let raw = get(&s.b.endpoint, dst, &format!("m/{STATE}"))
        .await
        .expect("a sync state");
    let mut state: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let record = objects_of(&mut state)
        .and_then(|o| o.get_mut(path))
        .expect("a record for the object");
    record["dest_etag"] = serde_json::Value::String(etag);
    put(
        &s.b.endpoint,
        dst,
        &format!("m/{STATE}"),
        serde_json::to_vec(&state).unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_sync_state_does_not_hide_a_corrupted_object() {
    for with_manifest in [true, false] {
        let (src, dst, files) = setup("forged", with_manifest).await;
        let first = sync(&src, &dst).await.unwrap();
        let (path, content) = &files[1]; // tokenizer/vocab.txt, a single-PUT object
        forge(&dst, path, content).await;
        let second = sync(&src, &dst).await.unwrap();
        assert!(
            second.copied.contains(path),
            "the forged object was not repaired (source manifest: {with_manifest}): {second:?}"
        );
        assert!(!second.skipped.contains(path));
        assert_eq!(second.digest, first.digest);
        let s = stores();
        assert!(
            get(&s.b.endpoint, &dst, &format!("m/{path}"))
                .await
                .as_deref()
                == Some(content.as_slice()),
            "corruption left in place"
        );
        // And a fetch of the result verifies.
        let tmp = tempfile::tempdir().unwrap();
        let mut fetch = FetchRequest::new(location(&s.b.endpoint, &dst, "m"), tmp.path().join("x"));
        fetch.expected_digest = Some(first.digest);
        fetch_model(&fetch).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_signed_with_another_key_is_not_trusted() {
    let (src, dst, files) = setup("otherkey", true).await;
    let key = |seed| StateKey::from_secret(&data(seed, 32)).unwrap();
    let with_key = |k: StateKey| {
        let mut r = request(&src, &dst);
        r.options.state_key = Some(k);
        r
    };
    sync_model(&with_key(key(1))).await.unwrap();
    let other = sync_model(&with_key(key(2))).await.unwrap();
    assert!(other.skipped.is_empty(), "{other:?}");
    assert_eq!(other.reverified.len(), files.len(), "read back, not copied");
    // The second run signed the state with its key: a third run with it skips everything.
    let again = sync_model(&with_key(key(2))).await.unwrap();
    assert_eq!(again.skipped.len(), files.len());
    // No key at all: nothing is trusted, nothing is written as if it were.
    let mut unsigned = request(&src, &dst);
    unsigned.options.state_key = None;
    let r = sync_model(&unsigned).await.unwrap();
    assert!(r.skipped.is_empty() && r.copied.is_empty());
    assert_eq!(r.reverified.len(), files.len());
    assert!(StateKey::from_secret(b"short").is_err());
}

#[test]
fn huge_sync_state_is_ignored_without_being_read_whole() {
    let _serial = s3::heavy_lock();
    let s = stores();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (src, dst, files) = rt.block_on(async {
        let (src, dst, files) = setup("hugestate", true).await;
        sync(&src, &dst).await.unwrap();
        // 128 MiB of state, four times the 32 MiB default limit: reading it needs >= 128 MiB.
        put_large(
            &s.b.endpoint,
            &dst,
            &format!("m/{STATE}"),
            128 * MIB as u64,
            5,
        )
        .await;
        (src, dst, files)
    });
    let (code, out, err, peak) = run_measured(
        env!("CARGO_BIN_EXE_skybridge"),
        &[
            "sync",
            "--from",
            &format!("s3://{src}/m"),
            "--to",
            &format!("s3://{dst}/m"),
            "--from-endpoint",
            &s.a.endpoint,
            "--to-endpoint",
            &s.b.endpoint,
            "--from-path-style",
            "--to-path-style",
            "--data-class",
            "internal",
            "--to-cloud",
            "private",
            "--part-size-mib",
            "5",
            "--memory-mib",
            "10",
            "--parallel",
            "2",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["reverified"].as_array().unwrap().len(),
        files.len(),
        "an ignored state costs a read-back: {out}"
    );
    eprintln!(
        "sync with a 128 MiB state: peak RSS {} MiB",
        peak / MIB as u64
    );
    assert!(
        peak < 96 * MIB as u64,
        "peak RSS {} MiB: the state was read",
        peak / MIB as u64
    );
    // The ignored state was replaced by a small, signed one.
    let state = rt
        .block_on(get(&s.b.endpoint, &dst, &format!("m/{STATE}")))
        .unwrap();
    assert!(state.len() < 64 * 1024);
}

// ---------------------------------------------------------------------------------------------
// Residency defaults.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_treats_an_unlabelled_destination_as_public() {
    let (src, dst, _) = setup("unlabelled", false).await;
    let s = stores();
    let (from, to) = (format!("s3://{src}/m"), format!("s3://{dst}/m"));
    let base = [
        "sync",
        "--from",
        &from,
        "--to",
        &to,
        "--from-endpoint",
        &s.a.endpoint,
        "--to-endpoint",
        &s.b.endpoint,
        "--from-path-style",
        "--to-path-style",
    ];
    // Sensitive (explicitly, and by default) without a label: refused before any connection.
    for extra in [&["--data-class", "sensitive"][..], &[][..]] {
        let (code, _, err, _) = run_measured(
            env!("CARGO_BIN_EXE_skybridge"),
            &[&base[..], extra].concat(),
        );
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("residency") && err.contains("--to-cloud private"),
            "{err}"
        );
        assert!(keys(&s.b.endpoint, &dst).await.is_empty(), "written: {err}");
    }
    // A label of private on an AWS endpoint does not make it private.
    let (code, _, err, _) = run_measured(
        env!("CARGO_BIN_EXE_skybridge"),
        &[
            "sync",
            "--from",
            &from,
            "--to",
            &to,
            "--from-endpoint",
            &s.a.endpoint,
            "--to-endpoint",
            "https://s3.eu-west-1.amazonaws.com",
            "--to-cloud",
            "private",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("public cloud's store"), "{err}");
    // Declared private: allowed.
    let (code, _, err, _) = run_measured(
        env!("CARGO_BIN_EXE_skybridge"),
        &[&base[..], &["--to-cloud", "private"]].concat(),
    );
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_keeps_a_private_default_key_so_a_rerun_skips() {
    use std::os::unix::fs::PermissionsExt;
    let (src, dst, files) = setup("clikey", false).await;
    let s = stores();
    let state_home = tempfile::tempdir().unwrap();
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_skybridge"))
            .args(["sync", "--from", &format!("s3://{src}/m"), "--to"])
            .args([&format!("s3://{dst}/m"), "--from-endpoint", &s.a.endpoint])
            .args([
                "--to-endpoint",
                &s.b.endpoint,
                "--from-path-style",
                "--to-path-style",
            ])
            .args(["--to-cloud", "private", "-o", "json"])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("XDG_STATE_HOME", state_home.path())
            .env_remove("SKYBRIDGE_SYNC_STATE_KEY_FILE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = run();
    assert_eq!(first["copied"].as_array().unwrap().len(), files.len());
    let key = state_home.path().join("skybridge/sync-state.key");
    let meta = std::fs::metadata(&key).expect("the default key file is created");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
    let second = run();
    assert_eq!(
        second["skipped"].as_array().unwrap().len(),
        files.len(),
        "{second}"
    );
    // A bad explicit key file is bad input.
    let short = state_home.path().join("short.key");
    std::fs::write(&short, b"tiny").unwrap();
    let (code, _, err, _) = run_measured(
        env!("CARGO_BIN_EXE_skybridge"),
        &[
            "sync",
            "--from",
            &format!("s3://{src}/m"),
            "--to",
            &format!("s3://{dst}/m"),
            "--to-cloud",
            "private",
            "--state-key-file",
            short.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 16 bytes"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Bad values in the source.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_source_keys_are_refused_by_name() {
    for key in [".skybridge", ".skybridge/weights.bin", ".skybridge/x/y"] {
        let (src, dst, _) = setup("reserved", false).await;
        let s = stores();
        put(
            &s.a.endpoint,
            &src,
            &format!("m/{key}"),
            b"payload".to_vec(),
        )
        .await;
        let err = sync(&src, &dst).await.expect_err(key);
        assert!(err.is_bad_input(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("reserved") && text.contains(&format!("m/{key}")),
            "{text}"
        );
        assert_readable(&text);
        assert!(keys(&s.b.endpoint, &dst).await.is_empty(), "{key}: written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_keys_that_are_no_safe_path_are_refused_with_escaped_names() {
    let long = format!("{}.bin", "a".repeat(300));
    for (key, why) in [
        ("evil\tname.bin", "control character"),
        ("a//b.bin", "empty segment"),
        (long.as_str(), "255 bytes"),
    ] {
        let (src, dst, _) = setup("unsafe", false).await;
        let s = stores();
        put(&s.a.endpoint, &src, &format!("m/{key}"), b"x".to_vec()).await;
        let err = sync(&src, &dst).await.expect_err(key);
        assert!(err.is_bad_input(), "{err}");
        let text = err.to_string();
        assert!(text.contains(why), "{text}");
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(keys(&s.b.endpoint, &dst).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_manifest_lying_about_sizes_or_listing_is_refused() {
    let (src, dst, files) = setup("liar", false).await;
    let s = stores();
    let mut lying = files.clone();
    lying[0].1.push(b'!'); // one byte more than the object
    put(
        &s.a.endpoint,
        &src,
        &format!("m/{MANIFEST_PATH}"),
        manifest_of(&lying).to_canonical_bytes(),
    )
    .await;
    let err = sync(&src, &dst).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ArtifactError::SourceChanged(_)) && text.contains("bytes"),
        "{text}"
    );
    assert!(text.contains(&files[0].0), "{text}");
    // A manifest listing a file the source lacks.
    let mut extra = files.clone();
    extra.push(("ghost.bin".into(), b"boo".to_vec()));
    put(
        &s.a.endpoint,
        &src,
        &format!("m/{MANIFEST_PATH}"),
        manifest_of(&extra).to_canonical_bytes(),
    )
    .await;
    assert!(matches!(
        sync(&src, &dst).await,
        Err(ArtifactError::SourceChanged(_))
    ));
    assert!(
        get(&s.b.endpoint, &dst, &format!("m/{MANIFEST_PATH}"))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_manifest_over_the_limit_is_refused() {
    let (src, dst, _) = setup("bigmanifest", false).await;
    let s = stores();
    put(
        &s.a.endpoint,
        &src,
        &format!("m/{MANIFEST_PATH}"),
        vec![b' '; 3 * MIB],
    )
    .await;
    let mut req = request(&src, &dst);
    req.options.max_manifest_bytes = 2 * MIB as u64;
    let err = sync_model(&req).await.unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    let text = err.to_string();
    assert!(text.contains("larger than the limit of 2 MiB"), "{text}");
    assert!(text.contains("--max-manifest-mib"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_over_the_object_limit_are_refused() {
    let (src, dst, files) = setup("manyobjects", false).await;
    let mut req = request(&src, &dst);
    req.options.max_objects = files.len() - 1;
    let err = sync_model(&req).await.unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("limit of {} objects", files.len() - 1))
            && text.contains("--max-objects"),
        "{text}"
    );
    req.options.max_objects = files.len();
    sync_model(&req).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_replaced_between_listing_and_copy_fails_and_publishes_nothing() {
    let (src, dst, files) = setup("race", false).await;
    let s = stores();
    let endpoint = s.a.endpoint.clone();
    let (bucket, key) = (src.clone(), format!("m/{}", files[3].0));
    let mut req = request(&src, &dst);
    // Right after planning, before any transfer: another writer replaces the biggest object.
    req.options.progress = Some(Arc::new(move |e: &SyncEvent| {
        if let SyncEvent::Planned { .. } = e {
            let (endpoint, bucket, key) = (endpoint.clone(), bucket.clone(), key.clone());
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(put(&endpoint, &bucket, &key, data(4242, 6 * MIB)))
            })
            .join()
            .unwrap();
        }
    }));
    let err = sync_model(&req).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ArtifactError::SourceChanged(_)) && text.contains("replaced"),
        "{text}"
    );
    assert!(text.contains(&files[3].0), "{text}");
    assert_readable(&text);
    assert!(
        get(&s.b.endpoint, &dst, &format!("m/{MANIFEST_PATH}"))
            .await
            .is_none(),
        "a manifest over a mixed copy"
    );
}

// ---------------------------------------------------------------------------------------------
// fetch-model against a hostile destination store.
// ---------------------------------------------------------------------------------------------

/// A synced model at store B `s3://<dst>/m`; returns the bucket, files and digest.
async fn served(tag: &str) -> (String, Vec<(String, Vec<u8>)>, Digest) {
    let (src, dst, files) = setup(tag, false).await;
    let report = sync(&src, &dst).await.unwrap();
    (dst, files, report.digest)
}

fn fetch_request(bucket: &str, dest: &Path) -> FetchRequest {
    FetchRequest::new(location(&stores().b.endpoint, bucket, "m"), dest)
}

/// Writes `text` as the manifest at store B, bypassing canonical serialization (hostile bytes).
async fn put_manifest(bucket: &str, text: &str) {
    put(
        &stores().b.endpoint,
        bucket,
        &format!("m/{MANIFEST_PATH}"),
        text.as_bytes().to_vec(),
    )
    .await;
}

fn one_file_manifest(path_json: &str) -> String {
    format!(
        r#"{{"schema":"{MANIFEST_SCHEMA}","files":[{{"path":{path_json},"size":1,"digest":"{}"}}]}}"#,
        Digest::of(b"x")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_model_is_refused_by_fetch_even_without_a_digest() {
    let s = stores();
    let bucket = unique_bucket("fetch-empty");
    create_bucket(&s.b.endpoint, &bucket).await;
    let empty = Manifest::new(vec![]).unwrap();
    put_manifest(
        &bucket,
        std::str::from_utf8(&empty.to_canonical_bytes()).unwrap(),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("model");
    for pinned in [None, Some(empty.digest())] {
        let mut req = fetch_request(&bucket, &dest);
        req.expected_digest = pinned;
        let err = fetch_model(&req).await.unwrap_err();
        assert!(err.is_bad_input(), "{err}");
        assert!(err.to_string().contains("lists no files"), "{err}");
        assert_nothing_left(&dest);
    }
    // An empty source refuses to sync too (it would publish an empty model).
    let src = unique_bucket("sync-empty");
    create_bucket(&s.a.endpoint, &src).await;
    put(&s.a.endpoint, &src, "m/dir/", Vec::new()).await; // a directory marker only
    let err = sync(&src, &bucket).await.unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("empty"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_with_unsafe_or_duplicate_paths_are_refused_and_nothing_is_written() {
    let (bucket, _, _) = served("fetch-paths").await;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("model");
    let long = format!("\"{}\"", "d/".repeat(600) + "x");
    let dup = format!(
        r#"{{"schema":"{MANIFEST_SCHEMA}","files":[{{"path":"a","size":1,"digest":"{d}"}},{{"path":"a","size":1,"digest":"{d}"}}]}}"#,
        d = Digest::of(b"x")
    );
    let cases = [
        (one_file_manifest("\"../escape\""), "'.' or '..'"),
        (one_file_manifest("\"a/../../escape\""), "'.' or '..'"),
        (one_file_manifest("\"/etc/passwd\""), "empty segment"),
        (one_file_manifest("\"nul\\u0000byte\""), "NUL"),
        (one_file_manifest("\"tab\\tname\""), "control character"),
        (one_file_manifest("\".skybridge\""), "reserved"),
        (one_file_manifest(&long), "longer than 1024 bytes"),
        (dup, "appears twice"),
    ];
    for (manifest, why) in cases {
        put_manifest(&bucket, &manifest).await;
        let err = fetch_model(&fetch_request(&bucket, &dest))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(why), "{why}: {text}");
        assert_readable(&text);
        assert_nothing_left(&dest);
        assert!(!tmp.path().parent().unwrap().join("escape").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_and_long_objects_name_the_mismatch_in_one_line() {
    let (bucket, files, digest) = served("fetch-length").await;
    let s = stores();
    let (path, content) = &files[1];
    for wrong in [
        content[..content.len() / 2].to_vec(),
        [content.as_slice(), b"tail"].concat(),
    ] {
        put(&s.b.endpoint, &bucket, &format!("m/{path}"), wrong.clone()).await;
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("model");
        let mut req = fetch_request(&bucket, &dest);
        req.expected_digest = Some(digest);
        let err = fetch_model(&req).await.unwrap_err();
        let text = err.to_string();
        let want = format!(
            "s3://{bucket}/m/{path}: content does not match: expected {} bytes {}, got {} bytes",
            content.len(),
            Digest::of(content),
            wrong.len()
        );
        assert!(text.starts_with(&want), "{text}\nwanted: {want}");
        assert_readable(&text);
        assert_nothing_left(&dest);
    }
    // A missing object: the store's answer in one line, naming the object.
    s3::delete(&s.b.endpoint, &bucket, &format!("m/{path}")).await;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("model");
    let err = fetch_model(&fetch_request(&bucket, &dest))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("s3://{bucket}/m/{path}")) && text.contains("NoSuchKey"),
        "{text}"
    );
    assert_readable(&text);
    assert_nothing_left(&dest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinked_destinations_are_refused() {
    let (bucket, files, digest) = served("fetch-link").await;
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    let mut req = fetch_request(&bucket, &real);
    req.expected_digest = Some(digest);
    fetch_model(&req).await.unwrap();

    // DEST itself a link to another valid copy.
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let mut req = fetch_request(&bucket, &link);
    req.expected_digest = Some(digest);
    let err = fetch_model(&req).await.unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(
        real.join(&files[0].0).exists(),
        "the link's target was touched"
    );

    // A file inside DEST replaced by a link to an identical file elsewhere.
    let elsewhere = tmp.path().join("elsewhere.txt");
    std::fs::copy(real.join(&files[0].0), &elsewhere).unwrap();
    std::fs::remove_file(real.join(&files[0].0)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, real.join(&files[0].0)).unwrap();
    let mut req = fetch_request(&bucket, &real);
    req.expected_digest = Some(digest);
    let err = fetch_model(&req).await.unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert!(err.to_string().contains(&files[0].0), "{err}");
}

#[test]
fn huge_manifest_is_refused_with_bounded_memory() {
    let _serial = s3::heavy_lock();
    let s = stores();
    let bucket = unique_bucket("fetch-huge");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        create_bucket(&s.b.endpoint, &bucket).await;
        // 128 MiB, eight times the default limit: reading it would need >= 128 MiB.
        put_large(
            &s.b.endpoint,
            &bucket,
            &format!("m/{MANIFEST_PATH}"),
            128 * MIB as u64,
            6,
        )
        .await;
    });
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("model");
    let from = format!("s3://{bucket}/m");
    let args = [
        "fetch-model",
        "--from",
        &from,
        "--endpoint",
        &s.b.endpoint,
        "--path-style",
        "--dest",
        dest.to_str().unwrap(),
    ];
    let (code, _, err, peak) = run_measured(env!("CARGO_BIN_EXE_skybridge"), &args);
    eprintln!(
        "fetch-model of a 128 MiB manifest: peak RSS {} MiB",
        peak / MIB as u64
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("larger than the limit of 16 MiB"), "{err}");
    assert!(err.lines().count() == 1, "{err}");
    assert!(
        peak < 96 * MIB as u64,
        "peak RSS {} MiB: the manifest was read",
        peak / MIB as u64
    );
    assert!(!dest.exists());
    // Raising the limit reads it (and finds it is no manifest).
    let (code, _, err, _) = run_measured(
        env!("CARGO_BIN_EXE_skybridge"),
        &[&args[..], &["--max-manifest-mib", "129"]].concat(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not valid JSON"), "{err}");
}
