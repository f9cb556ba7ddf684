//! Sync between two real S3-compatible stores (two moto servers on loopback).

#[path = "support/s3.rs"]
mod s3;

use s3::{
    create_bucket, data, get, keys, location, model_files, put, put_with_sha_metadata, seed_model,
    stores, unique_bucket,
};
use skybridge::api::common::{Cloud, DataClass};
use skybridge::artifacts::manifest::MANIFEST_PATH;
use skybridge::artifacts::{
    ArtifactError, Digest, Manifest, ManifestEntry, SyncOptions, SyncReport, SyncRequest,
    read_manifest, sync_model,
};

const MIB: usize = 1024 * 1024;

fn options() -> SyncOptions {
    SyncOptions {
        parallel: 4,
        part_size: 5 * MIB as u64,
        memory_budget: 32 * MIB as u64,
        ..SyncOptions::default()
    }
}

fn request(src_bucket: &str, dst_bucket: &str) -> SyncRequest {
    let s = stores();
    SyncRequest {
        source: location(&s.a.endpoint, src_bucket, "models/m1"),
        destination: location(&s.b.endpoint, dst_bucket, "mirror/m1"),
        data_class: DataClass::Internal,
        destination_cloud: Cloud::Public,
        options: options(),
    }
}

fn expected_manifest(files: &[(String, Vec<u8>)]) -> Manifest {
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

/// Source and destination buckets with a model: 3 small files and two 7 MiB shards (multipart
/// with 5 MiB parts).
async fn setup(tag: &str) -> (String, String, Vec<(String, Vec<u8>)>) {
    let s = stores();
    let (src, dst) = (
        unique_bucket(&format!("{tag}-src")),
        unique_bucket(&format!("{tag}-dst")),
    );
    let files = model_files(2, 7 * MIB);
    seed_model(&s.a.endpoint, &src, "models/m1", &files).await;
    create_bucket(&s.b.endpoint, &dst).await;
    (src, dst, files)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn assert_destination_holds(dst: &str, files: &[(String, Vec<u8>)], report: &SyncReport) {
    let s = stores();
    let manifest = read_manifest(&location(&s.b.endpoint, dst, "mirror/m1"))
        .await
        .unwrap();
    assert_eq!(manifest, expected_manifest(files));
    assert_eq!(report.digest, manifest.digest());
    assert_eq!(report.verified, files.len());
    for (path, content) in files {
        let got = get(&s.b.endpoint, dst, &format!("mirror/m1/{path}"))
            .await
            .expect("object copied");
        assert!(got == *content, "{path} differs at the destination");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_copies_every_object_and_writes_the_manifest() {
    let (src, dst, files) = setup("full").await;
    let report = sync_model(&request(&src, &dst)).await.unwrap();
    assert_eq!(
        sorted(report.copied.clone()),
        sorted(files.iter().map(|f| f.0.clone()).collect())
    );
    assert!(report.skipped.is_empty() && report.deleted.is_empty());
    assert_eq!(
        report.bytes_copied,
        files.iter().map(|f| f.1.len() as u64).sum::<u64>()
    );
    assert!(report.manifest_written);
    assert_destination_holds(&dst, &files, &report).await;
    // Nothing but the model and Skybridge's own objects under the prefix.
    let s = stores();
    let mut want: Vec<String> = files.iter().map(|f| format!("mirror/m1/{}", f.0)).collect();
    want.push(format!("mirror/m1/{MANIFEST_PATH}"));
    want.push("mirror/m1/.skybridge/sync-state.json".into());
    assert_eq!(keys(&s.b.endpoint, &dst).await, sorted(want));
    assert_eq!(s3::open_uploads(&s.b.endpoint, &dst).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sync_copies_nothing() {
    let (src, dst, files) = setup("again").await;
    let first = sync_model(&request(&src, &dst)).await.unwrap();
    let second = sync_model(&request(&src, &dst)).await.unwrap();
    assert!(
        second.copied.is_empty(),
        "copied again: {:?}",
        second.copied
    );
    assert!(second.reverified.is_empty());
    assert_eq!(second.skipped.len(), files.len());
    assert_eq!(second.bytes_copied, 0);
    assert!(!second.manifest_written);
    assert_eq!(second.digest, first.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_source_object_is_the_only_one_copied_and_the_digest_changes() {
    let (src, dst, mut files) = setup("changed").await;
    let first = sync_model(&request(&src, &dst)).await.unwrap();
    // Same size, different content: only content hashes can tell.
    let s = stores();
    let new_content = data(999, 10_000);
    put(
        &s.a.endpoint,
        &src,
        "models/m1/tokenizer/vocab.txt",
        new_content.clone(),
    )
    .await;
    files
        .iter_mut()
        .find(|f| f.0 == "tokenizer/vocab.txt")
        .unwrap()
        .1 = new_content;
    let second = sync_model(&request(&src, &dst)).await.unwrap();
    assert_eq!(second.copied, vec!["tokenizer/vocab.txt".to_string()]);
    assert_eq!(second.skipped.len(), files.len() - 1);
    assert_ne!(second.digest, first.digest);
    assert!(second.manifest_written);
    assert_destination_holds(&dst, &files, &second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_destination_object_is_detected_and_repaired() {
    let (src, dst, files) = setup("corrupt").await;
    let first = sync_model(&request(&src, &dst)).await.unwrap();
    // Adversarial corruption: same size, and the metadata still claims the right SHA-256.
    let s = stores();
    let (path, content) = &files[3];
    let mut bad = content.clone();
    bad[12345] ^= 0xff;
    put_with_sha_metadata(
        &s.b.endpoint,
        &dst,
        &format!("mirror/m1/{path}"),
        bad,
        &Digest::of(content).to_hex(),
    )
    .await;
    let second = sync_model(&request(&src, &dst)).await.unwrap();
    assert_eq!(
        second.copied,
        vec![path.clone()],
        "the corrupted object must be re-copied"
    );
    assert_eq!(second.digest, first.digest);
    assert_destination_holds(&dst, &files, &second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_removed_at_the_source_are_deleted_at_the_destination() {
    let (src, dst, files) = setup("delete").await;
    sync_model(&request(&src, &dst)).await.unwrap();
    let s = stores();
    s3::delete(&s.a.endpoint, &src, "models/m1/config.json").await;
    // A stray object at the destination goes too.
    put(
        &s.b.endpoint,
        &dst,
        "mirror/m1/stray.bin",
        b"stray".to_vec(),
    )
    .await;
    let report = sync_model(&request(&src, &dst)).await.unwrap();
    assert_eq!(sorted(report.deleted.clone()), ["config.json", "stray.bin"]);
    assert!(report.copied.is_empty());
    let remaining: Vec<_> = files.into_iter().filter(|f| f.0 != "config.json").collect();
    assert_destination_holds(&dst, &remaining, &report).await;
    assert!(
        get(&s.b.endpoint, &dst, "mirror/m1/stray.bin")
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_sync_state_costs_a_read_back_not_a_copy() {
    let (src, dst, files) = setup("lost-state").await;
    let s = stores();
    // A source with its own manifest: its digests are known without reading the source.
    let manifest = expected_manifest(&files);
    put(
        &s.a.endpoint,
        &src,
        &format!("models/m1/{MANIFEST_PATH}"),
        manifest.to_canonical_bytes(),
    )
    .await;
    let first = sync_model(&request(&src, &dst)).await.unwrap();
    assert_eq!(
        first.digest,
        manifest.digest(),
        "the destination digest equals the source manifest's"
    );
    s3::delete(&s.b.endpoint, &dst, "mirror/m1/.skybridge/sync-state.json").await;
    let second = sync_model(&request(&src, &dst)).await.unwrap();
    assert!(second.copied.is_empty(), "copied: {:?}", second.copied);
    assert_eq!(second.reverified.len(), files.len());
    assert_eq!(second.digest, first.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_model_is_refused_for_a_public_store_and_nothing_is_written() {
    let (src, dst, _files) = setup("residency").await;
    let mut req = request(&src, &dst);
    req.data_class = DataClass::Sensitive;
    req.destination_cloud = Cloud::Public;
    match sync_model(&req).await {
        Err(ArtifactError::Residency(e)) => {
            assert_eq!(
                (e.data_class, e.cloud),
                (DataClass::Sensitive, Cloud::Public)
            );
        }
        other => panic!("expected a residency refusal, got {other:?}"),
    }
    assert!(
        keys(&stores().b.endpoint, &dst).await.is_empty(),
        "no object may be written"
    );
    // The same model may go to a private store.
    req.destination_cloud = Cloud::Private;
    sync_model(&req).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_disagreeing_with_its_manifest_is_refused() {
    let (src, dst, files) = setup("badsrc").await;
    let s = stores();
    let mut stale = files.clone();
    stale[0].1 = b"{\"arch\":\"old!\"}".to_vec(); // same length, other content
    put(
        &s.a.endpoint,
        &src,
        &format!("models/m1/{MANIFEST_PATH}"),
        expected_manifest(&stale).to_canonical_bytes(),
    )
    .await;
    match sync_model(&request(&src, &dst)).await {
        Err(ArtifactError::SourceChanged(_)) => {}
        other => panic!("expected SourceChanged, got {other:?}"),
    }
    assert!(
        get(&s.b.endpoint, &dst, &format!("mirror/m1/{MANIFEST_PATH}"))
            .await
            .is_none(),
        "no manifest for a bad copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_source_is_refused_instead_of_wiping_the_destination() {
    let (src, dst, files) = setup("empty").await;
    sync_model(&request(&src, &dst)).await.unwrap();
    let mut req = request(&src, &dst);
    req.source = location(&stores().a.endpoint, &src, "models/typo");
    assert!(matches!(
        sync_model(&req).await,
        Err(ArtifactError::InvalidRequest(_))
    ));
    assert_eq!(
        read_manifest(&req.destination).await.unwrap().len(),
        files.len()
    );
}
