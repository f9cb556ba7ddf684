//! Sync under failure: injected 5xx/throttling/resets, a store that goes away mid-sync, and a
//! cancelled sync, each followed by verification of what the destination holds.

#[path = "support/s3.rs"]
mod s3;
#[path = "support/s3_proxy.rs"]
mod s3_proxy;

use s3::{
    create_bucket, data, get, location, model_files, open_uploads, seed_model, stores,
    unique_bucket,
};
use s3_proxy::FaultConfig;
use skybridge::api::common::{Cloud, DataClass};
use skybridge::artifacts::{
    FetchRequest, Outcome, RetryPolicy, SyncEvent, SyncOptions, SyncRequest, fetch_model,
    read_manifest, sync_model,
};
use std::sync::Arc;
use std::time::Duration;

const MIB: usize = 1024 * 1024;

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(100),
    }
}

fn request(src_endpoint: &str, src: &str, dst_endpoint: &str, dst: &str) -> SyncRequest {
    SyncRequest {
        source: location(src_endpoint, src, "m"),
        destination: location(dst_endpoint, dst, "m"),
        data_class: DataClass::Internal,
        destination_cloud: Cloud::Private,
        options: SyncOptions {
            parallel: 4,
            part_size: 5 * MIB as u64,
            memory_budget: 40 * MIB as u64,
            retry: fast_retry(12),
            checkpoint_interval: Duration::ZERO,
            ..SyncOptions::default()
        },
    }
}

/// A model of `shards` multipart shards plus `small` small files.
async fn setup(
    tag: &str,
    shards: usize,
    shard_len: usize,
    small: usize,
) -> (String, String, Vec<(String, Vec<u8>)>) {
    let s = stores();
    let (src, dst) = (
        unique_bucket(&format!("{tag}-src")),
        unique_bucket(&format!("{tag}-dst")),
    );
    let mut files = model_files(shards, shard_len);
    for i in 0..small {
        files.push((
            format!("extra/file-{i:03}.txt"),
            data(5000 + i as u64, 1000 + i),
        ));
    }
    seed_model(&s.a.endpoint, &src, "m", &files).await;
    create_bucket(&s.b.endpoint, &dst).await;
    (src, dst, files)
}

async fn assert_verified_copy(dst: &str, files: &[(String, Vec<u8>)]) {
    let s = stores();
    let manifest = read_manifest(&location(&s.b.endpoint, dst, "m"))
        .await
        .expect("manifest written");
    assert_eq!(manifest.len(), files.len());
    for (path, content) in files {
        let got = get(&s.b.endpoint, dst, &format!("m/{path}"))
            .await
            .expect("object present");
        assert!(got == *content, "{path} differs");
        assert_eq!(
            manifest.get(path).unwrap().digest,
            skybridge::artifacts::Digest::of(content)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_succeeds_and_verifies_through_injected_5xx_throttling_and_resets() {
    let (src, dst, files) = setup("faults", 2, 11 * MIB, 30).await;
    let s = stores();
    let cfg = FaultConfig {
        seed: 42,
        error_rate: 0.15,
        reset_rate: 0.05,
        after_rate: 0.3,
        fail_after: None,
        truncate_rate: 0.3,
    };
    let src_proxy = s3_proxy::start(
        &s.a.endpoint,
        FaultConfig {
            seed: 7,
            ..cfg.clone()
        },
    )
    .await;
    let dst_proxy = s3_proxy::start(&s.b.endpoint, cfg).await;
    let report = sync_model(&request(
        &src_proxy.endpoint,
        &src,
        &dst_proxy.endpoint,
        &dst,
    ))
    .await
    .expect("sync through faults");
    assert_eq!(report.verified, files.len());
    let injected = src_proxy.stats.injected() + dst_proxy.stats.injected();
    assert!(
        injected >= 5,
        "too few faults injected to mean anything: {injected}"
    );
    assert!(
        dst_proxy
            .stats
            .slow_downs
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
    assert!(
        src_proxy
            .stats
            .truncations
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0,
        "no download was cut off mid-body"
    );
    assert_verified_copy(&dst, &files).await;
    // Uploads orphaned by lost CreateMultipartUpload responses are cleaned by the next sync.
    // (Same source endpoint: recorded source ETags are only trusted for the same source.)
    let again = sync_model(&request(&src_proxy.endpoint, &src, &s.b.endpoint, &dst))
        .await
        .unwrap();
    assert!(again.copied.is_empty(), "copied again: {:?}", again.copied);
    assert_eq!(open_uploads(&s.b.endpoint, &dst).await, 0);

    // fetch-model through the same faults (cut-off downloads included) still verifies.
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("model");
    let mut fetch = FetchRequest::new(location(&dst_proxy.endpoint, &dst, "m"), &dest);
    fetch.retry = fast_retry(12);
    fetch.expected_digest = Some(report.digest);
    let before = dst_proxy.stats.injected();
    fetch_model(&fetch).await.expect("fetch through faults");
    assert!(
        dst_proxy.stats.injected() > before,
        "no fault hit the fetch"
    );
    for (path, content) in &files {
        assert!(
            std::fs::read(dest.join(path)).unwrap() == *content,
            "{path} differs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_interrupted_by_a_vanishing_store_resumes_without_recopying() {
    let (src, dst, files) = setup("vanish", 2, 7 * MIB, 20).await;
    let s = stores();
    // The destination answers 25 requests, then every connection is reset.
    let proxy = s3_proxy::start(
        &s.b.endpoint,
        FaultConfig {
            fail_after: Some(25),
            ..FaultConfig::default()
        },
    )
    .await;
    let mut req = request(&s.a.endpoint, &src, &proxy.endpoint, &dst);
    req.options.retry = fast_retry(3);
    let err = sync_model(&req)
        .await
        .expect_err("the destination went away");
    assert!(
        err.is_transient(),
        "a vanished store is a transient failure: {err}"
    );
    assert!(
        get(&s.b.endpoint, &dst, "m/.skybridge/manifest.json")
            .await
            .is_none(),
        "no manifest after a partial sync"
    );

    let resumed = sync_model(&request(&s.a.endpoint, &src, &s.b.endpoint, &dst))
        .await
        .expect("resume");
    assert!(
        resumed.copied.len() < files.len(),
        "resume re-copied everything: {} of {}",
        resumed.copied.len(),
        files.len()
    );
    assert_eq!(
        resumed.copied.len() + resumed.skipped.len() + resumed.reverified.len(),
        files.len()
    );
    assert_eq!(open_uploads(&s.b.endpoint, &dst).await, 0);
    assert_verified_copy(&dst, &files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_sync_resumes_and_aborts_leftover_multipart_uploads() {
    let (src, dst, files) = setup("cancel", 4, 12 * MIB, 5).await;
    let s = stores();
    let mut req = request(&s.a.endpoint, &src, &s.b.endpoint, &dst);
    req.options.parallel = 3;
    let first_done = Arc::new(tokio::sync::Notify::new());
    let notify = first_done.clone();
    req.options.progress = Some(Arc::new(move |e: &SyncEvent| {
        if let SyncEvent::Object {
            outcome: Outcome::Copied,
            path,
        } = e
            && path.starts_with("weights/")
        {
            notify.notify_one();
        }
    }));
    tokio::select! {
        r = sync_model(&req) => panic!("sync finished before it could be cancelled: {r:?}"),
        _ = first_done.notified() => {}
    }
    // The cancelled future is gone; its transfer tasks are aborted. Resume.
    let resumed = sync_model(&request(&s.a.endpoint, &src, &s.b.endpoint, &dst))
        .await
        .expect("resume");
    assert!(
        resumed.copied.len() < files.len(),
        "resume re-copied everything"
    );
    assert!(
        !resumed.copied.is_empty(),
        "cancelled before the end, so something is left to copy"
    );
    eprintln!(
        "aborted {} leftover multipart uploads",
        resumed.aborted_uploads
    );
    assert_eq!(
        open_uploads(&s.b.endpoint, &dst).await,
        0,
        "no multipart upload may be left behind"
    );
    assert_verified_copy(&dst, &files).await;
}
