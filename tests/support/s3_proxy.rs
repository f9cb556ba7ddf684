//! A fault-injecting HTTP proxy for S3 tests: sits in front of a store and, for a seeded
//! pseudo-random fraction of requests, answers `500 InternalError` or `503 SlowDown`, or drops
//! the connection without an answer (a reset). Some faults are injected *after* forwarding, so
//! the store applied the request but the client never learns it (lost responses). With
//! `fail_after`, every request after the first N is reset: a store that went away mid-sync.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    pub seed: u64,
    /// Fraction of requests answered 500 or 503 SlowDown (half each).
    pub error_rate: f64,
    /// Fraction of requests whose connection is dropped without an answer.
    pub reset_rate: f64,
    /// Of the injected faults, the fraction applied after the store processed the request.
    pub after_rate: f64,
    /// Reset every request after this many.
    pub fail_after: Option<u64>,
    /// Fraction of object downloads (GET answers over 1 KiB) cut off half-way through the body.
    pub truncate_rate: f64,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub internal_errors: AtomicU64,
    pub slow_downs: AtomicU64,
    pub resets: AtomicU64,
    pub truncations: AtomicU64,
}

impl Stats {
    pub fn injected(&self) -> u64 {
        self.internal_errors.load(Ordering::SeqCst)
            + self.slow_downs.load(Ordering::SeqCst)
            + self.resets.load(Ordering::SeqCst)
    }
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub endpoint: String,
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    cfg: FaultConfig,
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    stats: Arc<Stats>,
}

#[derive(Clone, Copy)]
enum Fault {
    Internal,
    SlowDown,
    Reset,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Starts a proxy on a free loopback port forwarding to `upstream` (`http://host:port`).
pub async fn start(upstream: &str, cfg: FaultConfig) -> FaultProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let stats = Arc::new(Stats::default());
    let shared = Arc::new(Shared {
        cfg,
        upstream: upstream.trim_end_matches('/').to_string(),
        client: Client::builder(TokioExecutor::new()).build_http(),
        stats: stats.clone(),
    });
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                // An Err from the service makes hyper close the connection without a response.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    FaultProxy {
        endpoint,
        stats,
        task,
    }
}

fn random(seed: u64, n: u64, salt: u64) -> f64 {
    let mut z =
        seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
    let cfg = &shared.cfg;
    let n = shared.stats.requests.fetch_add(1, Ordering::SeqCst);
    if cfg.fail_after.is_some_and(|limit| n >= limit) {
        shared.stats.resets.fetch_add(1, Ordering::SeqCst);
        return Err("injected: store gone".into());
    }
    let r = random(cfg.seed, n, 1);
    let fault = if r < cfg.error_rate / 2.0 {
        Some(Fault::Internal)
    } else if r < cfg.error_rate {
        Some(Fault::SlowDown)
    } else if r < cfg.error_rate + cfg.reset_rate {
        Some(Fault::Reset)
    } else {
        None
    };
    let after = fault.is_some() && random(cfg.seed, n, 2) < cfg.after_rate;
    if let (Some(f), false) = (fault, after) {
        return inject(&shared, f);
    }
    let is_get = req.method() == hyper::Method::GET;
    let response = forward(&shared, req).await?;
    if let Some(f) = fault {
        return inject(&shared, f);
    }
    let (parts, body) = response.into_parts();
    if is_get
        && parts.status.is_success()
        && body.len() > 1024
        && random(cfg.seed, n, 3) < cfg.truncate_rate
    {
        // Announce the full length, send half, then break the connection mid-body.
        shared.stats.truncations.fetch_add(1, Ordering::SeqCst);
        let half = body.slice(..body.len() / 2);
        let frames = futures::stream::iter(vec![
            Ok(Frame::data(half)),
            Err::<Frame<Bytes>, BoxError>("injected: connection reset mid-body".into()),
        ]);
        let mut parts = parts;
        parts.headers.insert("content-length", body.len().into());
        return Ok(Response::from_parts(parts, StreamBody::new(frames).boxed()));
    }
    Ok(Response::from_parts(parts, full(body)))
}

fn inject(shared: &Shared, fault: Fault) -> Result<Response<Body>, BoxError> {
    let (status, code) = match fault {
        Fault::Reset => {
            shared.stats.resets.fetch_add(1, Ordering::SeqCst);
            return Err("injected: connection reset".into());
        }
        Fault::Internal => {
            shared.stats.internal_errors.fetch_add(1, Ordering::SeqCst);
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
        }
        Fault::SlowDown => {
            shared.stats.slow_downs.fetch_add(1, Ordering::SeqCst);
            (StatusCode::SERVICE_UNAVAILABLE, "SlowDown")
        }
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(full(Bytes::from(body)))?)
}

async fn forward(shared: &Shared, req: Request<Incoming>) -> Result<Response<Bytes>, BoxError> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut up = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{}{path}", shared.upstream));
    for (name, value) in &parts.headers {
        // The body is re-framed from a complete buffer; hyper sets the length.
        if !matches!(
            name.as_str(),
            "connection" | "transfer-encoding" | "content-length"
        ) {
            up = up.header(name, value);
        }
    }
    let resp = shared.client.request(up.body(Full::new(body))?).await?;
    let is_head = parts.method == hyper::Method::HEAD;
    let (rparts, rbody) = resp.into_parts();
    let rbody = rbody.collect().await?.to_bytes();
    let mut out = Response::builder().status(rparts.status);
    for (name, value) in &rparts.headers {
        // HEAD answers carry the object's length with no body: keep it. Otherwise re-frame.
        let reframed = matches!(name.as_str(), "connection" | "transfer-encoding")
            || (!is_head && name == "content-length");
        if !reframed {
            out = out.header(name, value);
        }
    }
    Ok(out.body(rbody)?)
}
