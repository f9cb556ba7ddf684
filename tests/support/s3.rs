//! S3 test support: two independent moto servers on loopback (two stores), admin helpers and
//! deterministic test data.
//!
//! Servers: if `SKYBRIDGE_TEST_S3_A` and `SKYBRIDGE_TEST_S3_B` hold endpoint URLs (started by
//! `scripts/test` or by hand), they are used; otherwise each test binary starts two
//! `python3 -m moto.server` processes on free ports, shared by its tests (every test uses its own
//! buckets). The children watch their stdin, which this process holds open: they exit when the
//! test binary exits, however it exits, so nothing is left running. A missing moto is a loud
//! failure, never a skip.
#![allow(dead_code)]

use aws_sdk_s3::config::{Credentials as AwsCredentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use skybridge::artifacts::{Credentials, StoreLocation};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One running moto server (or an external endpoint).
pub struct MotoServer {
    pub endpoint: String,
    child: Option<Child>,
    _stdin: Option<ChildStdin>,
    /// The last lines moto printed (none for an external endpoint).
    log: LogTail,
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a moto server on a free port and waits (polling, with a deadline) until it answers.
pub fn start_moto() -> MotoServer {
    let probe = Command::new("python3")
        .args(["-c", "import moto.server"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "moto is not installed (python3 -c 'import moto.server' failed: {}); run `pip install 'moto[server]'` or ./scripts/test",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("python3 not found ({e}); the S3 tests need python3 with moto[server]"),
    }
    let port = free_port();
    // The wrapper exits when its stdin closes, i.e. when this test process is gone.
    let script = format!(
        "import os, sys, threading\n\
         threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()\n\
         from moto.server import main\n\
         main(['-H', '127.0.0.1', '-p', '{port}'])\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3 moto server");
    let stdin = child.stdin.take();
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut s) = child.stderr.take() {
                let _ = s.read_to_string(&mut err);
            }
            panic!("moto server on port {port} exited with {status}: {err}");
        }
        if http_ok(port) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "moto server on port {port} did not answer within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Moto logs every request to stderr; drain it so the pipe never fills and blocks the server,
    // keeping the last lines: a 500 from moto is a Python exception, whose traceback says why.
    let log = LogTail::default();
    if let Some(s) = child.stderr.take() {
        let tail = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == LOG_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
    }
    MotoServer {
        endpoint,
        child: Some(child),
        _stdin: stdin,
        log,
    }
}

/// How many of a moto server's last stderr lines a failing helper prints.
const LOG_TAIL_LINES: usize = 60;

type LogTail = Arc<Mutex<VecDeque<String>>>;

/// Fails a test-setup call with the error and what moto printed last (a full disk, say, shows
/// up only there: moto answers a bare 500).
#[track_caller]
fn setup_failed(endpoint: &str, what: &str, err: impl std::fmt::Debug) -> ! {
    let s = stores();
    let server = [&s.a, &s.b].into_iter().find(|m| m.endpoint == endpoint);
    let tail = server.map(|m| m.log.lock().unwrap_or_else(|e| e.into_inner()).clone());
    let tail = tail.unwrap_or_default();
    let log = if tail.is_empty() {
        "(nothing captured)".to_string()
    } else {
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    };
    panic!("{what} on {endpoint}: {err:?}\n--- last lines of that S3 server's log ---\n{log}")
}

fn http_ok(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && buf.starts_with(b"HTTP/1."))
}

/// The two stores every test uses: A (the "private" source side) and B (the destination side).
pub struct Stores {
    pub a: MotoServer,
    pub b: MotoServer,
}

/// The shared pair of stores of this test binary.
pub fn stores() -> &'static Stores {
    static STORES: OnceLock<Stores> = OnceLock::new();
    STORES.get_or_init(|| {
        let external = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        match (
            external("SKYBRIDGE_TEST_S3_A"),
            external("SKYBRIDGE_TEST_S3_B"),
        ) {
            (Some(a), Some(b)) => Stores {
                a: MotoServer {
                    endpoint: a,
                    child: None,
                    _stdin: None,
                    log: LogTail::default(),
                },
                b: MotoServer {
                    endpoint: b,
                    child: None,
                    _stdin: None,
                    log: LogTail::default(),
                },
            },
            _ => {
                // Start both at once: moto takes a second or two to come up.
                let a = std::thread::spawn(start_moto);
                let b = start_moto();
                Stores {
                    a: a.join().expect("start moto A"),
                    b,
                }
            }
        }
    })
}

/// A bucket name unique within this process and across parallel test binaries.
pub fn unique_bucket(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("{tag}-{}-{n}", std::process::id())
        .to_lowercase()
        .replace('_', "-")
}

pub fn location(endpoint: &str, bucket: &str, prefix: &str) -> StoreLocation {
    let mut loc =
        StoreLocation::parse_uri(&format!("s3://{bucket}/{prefix}")).expect("valid test uri");
    loc.endpoint = Some(endpoint.to_string());
    loc.region = Some("us-east-1".into());
    loc.path_style = true;
    loc.credentials = Credentials::Static {
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        session_token: None,
    };
    loc
}

/// A plain SDK client for test setup and inspection (creating buckets, corrupting objects).
pub fn admin(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(AwsCredentials::new("test", "test", None, None, "test"))
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub async fn create_bucket(endpoint: &str, bucket: &str) {
    admin(endpoint)
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| setup_failed(endpoint, "create bucket", e));
}

pub async fn put(endpoint: &str, bucket: &str, key: &str, data: Vec<u8>) {
    admin(endpoint)
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(data))
        .send()
        .await
        .unwrap_or_else(|e| setup_failed(endpoint, "put object", e));
}

pub async fn put_with_sha_metadata(
    endpoint: &str,
    bucket: &str,
    key: &str,
    data: Vec<u8>,
    sha_hex: &str,
) {
    admin(endpoint)
        .put_object()
        .bucket(bucket)
        .key(key)
        .metadata("sha256", sha_hex)
        .body(ByteStream::from(data))
        .send()
        .await
        .unwrap_or_else(|e| setup_failed(endpoint, "put object", e));
}

pub async fn get(endpoint: &str, bucket: &str, key: &str) -> Option<Vec<u8>> {
    match admin(endpoint)
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
    {
        Ok(out) => Some(
            out.body
                .collect()
                .await
                .expect("read body")
                .into_bytes()
                .to_vec(),
        ),
        Err(_) => None,
    }
}

pub async fn delete(endpoint: &str, bucket: &str, key: &str) {
    admin(endpoint)
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| setup_failed(endpoint, "delete object", e));
}

/// All keys in the bucket, sorted.
pub async fn keys(endpoint: &str, bucket: &str) -> Vec<String> {
    let out = admin(endpoint)
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| setup_failed(endpoint, "list", e));
    let mut keys: Vec<String> = out
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    keys.sort();
    keys
}

/// Multipart uploads in progress in the bucket.
pub async fn open_uploads(endpoint: &str, bucket: &str) -> usize {
    let out = admin(endpoint)
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| setup_failed(endpoint, "list uploads", e));
    out.uploads().len()
}

/// Deterministic incompressible bytes (xorshift), different per `seed`.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A small model: a few JSON/tokenizer files and `shards` shards of `shard_len` bytes.
pub fn model_files(shards: usize, shard_len: usize) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        ("config.json".to_string(), br#"{"arch":"test"}"#.to_vec()),
        ("tokenizer/vocab.txt".to_string(), data(1, 10_000)),
        ("empty.txt".to_string(), Vec::new()),
    ];
    for i in 0..shards {
        files.push((
            format!("weights/shard-{i:03}.bin"),
            data(100 + i as u64, shard_len),
        ));
    }
    files
}

/// Creates `bucket` on `endpoint` and uploads `files` under `prefix` (plain PUTs, no metadata:
/// a source written by someone else's tool).
pub async fn seed_model(endpoint: &str, bucket: &str, prefix: &str, files: &[(String, Vec<u8>)]) {
    create_bucket(endpoint, bucket).await;
    for (path, content) in files {
        put(
            endpoint,
            bucket,
            &format!("{prefix}/{path}"),
            content.clone(),
        )
        .await;
    }
}

/// Serialises tests that must not overlap with heavy transfers (memory measurements).
pub fn heavy_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Uploads a `size`-byte object of generated content by multipart (64 MiB parts), so the test
/// process never holds it whole.
pub async fn put_large(endpoint: &str, bucket: &str, key: &str, size: u64, seed: u64) {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    const PART: u64 = 64 * 1024 * 1024;
    let client = admin(endpoint);
    let id = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| setup_failed(endpoint, "create upload", e));
    let id = id.upload_id().unwrap().to_string();
    let mut parts = Vec::new();
    for (i, start) in (0..size).step_by(PART as usize).enumerate() {
        let len = PART.min(size - start) as usize;
        let out = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(i as i32 + 1)
            .body(ByteStream::from(data(seed * 100_000 + i as u64, len)))
            .send()
            .await
            .unwrap_or_else(|e| setup_failed(endpoint, "upload part", e));
        parts.push(
            CompletedPart::builder()
                .part_number(i as i32 + 1)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build(),
        );
    }
    // moto's CompleteMultipartUpload answer does not parse with this SDK (see store.rs); the
    // upload completes regardless, which the HEAD below checks.
    let _ = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    let head = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("large object exists");
    assert_eq!(head.content_length(), Some(size as i64));
}

/// Runs the `skybridge` binary with test credentials, sampling its peak RSS (`VmHWM`, which
/// only grows) from /proc until it exits. Returns (exit code, stdout, stderr, peak RSS bytes).
pub fn run_measured(bin: &str, args: &[&str]) -> (i32, String, String, u64) {
    let mut child = Command::new(bin)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        // The default sync state key file goes to a scratch directory, not the user's home.
        .env(
            "XDG_STATE_HOME",
            std::env::temp_dir().join("skybridge-test-state"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skybridge");
    let status_path = format!("/proc/{}/status", child.id());
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kib: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        out_thread.join().unwrap(),
        err_thread.join().unwrap(),
        peak_kib * 1024,
    )
}
