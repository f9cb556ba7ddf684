//! `fetch_model` and the `skybridge sync` / `skybridge fetch-model` commands against real S3
//! servers (moto on loopback).

#[path = "support/s3.rs"]
mod s3;

use s3::{
    create_bucket, location, model_files, put_with_sha_metadata, seed_model, stores, unique_bucket,
};
use skybridge::api::common::{Cloud, DataClass};
use skybridge::artifacts::{
    ArtifactError, Digest, FetchRequest, SyncOptions, SyncRequest, fetch_model, sync_model,
};
use std::path::Path;
use std::process::Command;

const MIB: usize = 1024 * 1024;

/// A synced model at store B, `s3://<bucket>/served/m`; returns bucket, files and digest.
async fn synced_model(tag: &str) -> (String, Vec<(String, Vec<u8>)>, Digest) {
    let s = stores();
    let (src, dst) = (
        unique_bucket(&format!("{tag}-src")),
        unique_bucket(&format!("{tag}-dst")),
    );
    let files = model_files(2, 6 * MIB);
    seed_model(&s.a.endpoint, &src, "m", &files).await;
    create_bucket(&s.b.endpoint, &dst).await;
    let report = sync_model(&SyncRequest {
        source: location(&s.a.endpoint, &src, "m"),
        destination: location(&s.b.endpoint, &dst, "served/m"),
        data_class: DataClass::Public,
        destination_cloud: Cloud::Public,
        options: SyncOptions {
            part_size: 5 * MIB as u64,
            ..SyncOptions::default()
        },
    })
    .await
    .unwrap();
    (dst, files, report.digest)
}

fn fetch_request(bucket: &str, dest: &Path) -> FetchRequest {
    FetchRequest::new(location(&stores().b.endpoint, bucket, "served/m"), dest)
}

fn assert_dir_holds(dest: &Path, files: &[(String, Vec<u8>)]) {
    for (path, content) in files {
        let got = std::fs::read(dest.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(got == *content, "{path} differs");
    }
}

/// Nothing that looks like a model: no DEST and no partial directory next to it.
fn assert_nothing_left(dest: &Path) {
    assert!(
        !dest.exists(),
        "{} must not exist after a refused fetch",
        dest.display()
    );
    let parent = dest.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_model_downloads_verifies_and_is_idempotent() {
    let (bucket, files, digest) = synced_model("fetch-ok").await;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("model");
    let mut req = fetch_request(&bucket, &dest);
    req.expected_digest = Some(digest);
    let report = fetch_model(&req).await.unwrap();
    assert!(!report.already_present);
    assert_eq!((report.digest, report.files), (digest, files.len()));
    assert_dir_holds(&dest, &files);
    let again = fetch_model(&req).await.unwrap();
    assert!(
        again.already_present,
        "a verified DEST is not downloaded again"
    );
    // Without a pinned digest the store's manifest decides; still a no-op.
    req.expected_digest = None;
    assert!(fetch_model(&req).await.unwrap().already_present);
    // A locally damaged copy is replaced.
    std::fs::write(dest.join("config.json"), b"{\"arch\":\"xxxx\"}").unwrap();
    let repaired = fetch_model(&req).await.unwrap();
    assert!(!repaired.already_present);
    assert_dir_holds(&dest, &files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_model_refuses_a_digest_mismatch_and_leaves_nothing_complete() {
    let (bucket, _files, digest) = synced_model("fetch-digest").await;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("model");
    // First a good copy, then a request for another version: the stale copy must go too.
    fetch_model(&fetch_request(&bucket, &dest)).await.unwrap();
    let mut req = fetch_request(&bucket, &dest);
    let wanted = Digest::of(b"another model version");
    req.expected_digest = Some(wanted);
    match fetch_model(&req).await {
        Err(ArtifactError::DigestMismatch { expected, actual }) => {
            assert_eq!((expected, actual), (wanted, digest))
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert_nothing_left(&dest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_model_refuses_a_missing_manifest() {
    let s = stores();
    let bucket = unique_bucket("fetch-nomanifest");
    seed_model(&s.b.endpoint, &bucket, "served/m", &model_files(1, 1000)).await;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("model");
    match fetch_model(&fetch_request(&bucket, &dest)).await {
        Err(ArtifactError::ManifestMissing { .. }) => {}
        other => panic!("expected ManifestMissing, got {other:?}"),
    }
    assert_nothing_left(&dest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_model_refuses_a_corrupted_object() {
    let (bucket, files, digest) = synced_model("fetch-corrupt").await;
    let s = stores();
    let (path, content) = &files[4];
    let mut bad = content.clone();
    bad[0] ^= 1;
    put_with_sha_metadata(
        &s.b.endpoint,
        &bucket,
        &format!("served/m/{path}"),
        bad,
        &Digest::of(content).to_hex(),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("model");
    let mut req = fetch_request(&bucket, &dest);
    req.expected_digest = Some(digest);
    match fetch_model(&req).await {
        Err(ArtifactError::ContentMismatch { what, .. }) => {
            assert!(what.contains(path.as_str()), "{what}")
        }
        other => panic!("expected a content mismatch, got {other:?}"),
    }
    assert_nothing_left(&dest);
}

fn skybridge(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        // The default sync state key file goes to a scratch directory, not the user's home.
        .env(
            "XDG_STATE_HOME",
            std::env::temp_dir().join("skybridge-test-state"),
        )
        .output()
        .expect("run skybridge");
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sync_and_fetch_model_exit_codes() {
    let s = stores();
    let (src, dst) = (unique_bucket("cli-src"), unique_bucket("cli-dst"));
    let files = model_files(1, 6 * MIB);
    seed_model(&s.a.endpoint, &src, "m", &files).await;
    create_bucket(&s.b.endpoint, &dst).await;
    let (from, to) = (format!("s3://{src}/m"), format!("s3://{dst}/m"));
    // Both runs sign the sync state with one key, so the second can trust what the first did.
    let keys_dir = tempfile::tempdir().unwrap();
    let key_file = keys_dir.path().join("sync.key");
    std::fs::write(&key_file, s3::data(77, 32)).unwrap();
    let key_file = key_file.to_str().unwrap();
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
        "--part-size-mib",
        "5",
        "--state-key-file",
        key_file,
    ];

    // Residency: the default data class is the strictest; a public destination is refused, and
    // so is one whose cloud nobody declared.
    let (code, _, err) = skybridge(&[&base[..], &["--to-cloud", "public"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("residency"), "{err}");
    let (code, _, err) = skybridge(&base);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("residency") && err.contains("not declared"),
        "{err}"
    );
    assert!(s3::keys(&s.b.endpoint, &dst).await.is_empty());

    let (code, out, err) = skybridge(
        &[
            &base[..],
            &[
                "--data-class",
                "internal",
                "--to-cloud",
                "public",
                "-o",
                "json",
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["copied"].as_array().unwrap().len(), files.len());
    let digest = report["digest"].as_str().unwrap().to_string();

    let (code, out, err) = skybridge(&[&base[..], &["--to-cloud", "private"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&digest)
            && out.contains("copied        0 objects")
            && out.contains(&format!("skipped       {} objects", files.len())),
        "{out}"
    );

    let (code, _, err) = skybridge(&["sync", "--from", "s3:/nope", "--to", &to]);
    assert_eq!(code, 2, "bad URI is bad input: {err}");
    let (code, _, err) = skybridge(&[
        "sync",
        "--from",
        &from,
        "--to",
        &to,
        "--from-endpoint",
        "ftp://x",
    ]);
    assert_eq!(code, 2, "bad endpoint is bad input: {err}");

    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("model");
    let dest_s = dest.to_str().unwrap();
    let fetch = [
        "fetch-model",
        "--from",
        &to,
        "--endpoint",
        &s.b.endpoint,
        "--path-style",
        "--dest",
        dest_s,
    ];
    let (code, out, err) = skybridge(&[&fetch[..], &["--digest", &digest]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&digest));
    assert_dir_holds(&dest, &files);
    let other = Digest::of(b"x").to_string();
    let (code, _, err) = skybridge(&[&fetch[..], &["--digest", &other]].concat());
    assert_eq!(code, 1, "digest mismatch is a runtime refusal: {err}");
    assert!(err.contains("digest mismatch"), "{err}");
    assert_nothing_left(&dest);
    let (code, _, _) = skybridge(&[&fetch[..], &["--digest", "sha256:zz"]].concat());
    assert_eq!(code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sync_reads_credentials_from_named_profiles() {
    let s = stores();
    let (src, dst) = (unique_bucket("prof-src"), unique_bucket("prof-dst"));
    seed_model(&s.a.endpoint, &src, "m", &model_files(0, 0)).await;
    create_bucket(&s.b.endpoint, &dst).await;
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("credentials");
    std::fs::write(
        &creds,
        "[src-store]\naws_access_key_id = a\naws_secret_access_key = b\n\n[dst-store]\naws_access_key_id = c\naws_secret_access_key = d\n",
    )
    .unwrap();
    let config = tmp.path().join("config");
    std::fs::write(&config, "").unwrap();
    let run = |from_profile: &str| {
        let (from, to) = (format!("s3://{src}/m"), format!("s3://{dst}/m"));
        let out = Command::new(env!("CARGO_BIN_EXE_skybridge"))
            .args([
                "sync",
                "--from",
                &from,
                "--to",
                &to,
                "--from-endpoint",
                &s.a.endpoint,
                "--to-endpoint",
            ])
            .args([
                &s.b.endpoint,
                "--from-path-style",
                "--to-path-style",
                "--from-profile",
                from_profile,
            ])
            .args([
                "--to-profile",
                "dst-store",
                "--from-region",
                "us-east-1",
                "--to-region",
                "us-east-1",
                "--to-cloud",
                "private",
            ])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE")
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("XDG_STATE_HOME", tmp.path())
            .output()
            .expect("run skybridge");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("src-store");
    assert_eq!(code, Some(0), "{err}");
    // A profile that does not exist yields no credentials: a clean failure, not a panic.
    let (code, err) = run("no-such-profile");
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
