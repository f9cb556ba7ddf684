//! `/metrics`, `/readyz` and `/livez`.

use crate::operator::context::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What the probes look at.
pub struct Health {
    pub context: Arc<Context>,
    /// Set once every cache has synced: before that, decisions would see a partial estate.
    pub caches_synced: AtomicBool,
    /// How long the control loop may stay silent before the process counts as stuck.
    pub stall_after: Duration,
}

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/livez", get(livez))
        .with_state(health)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(
    State(health): State<Arc<Health>>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.context.metrics.encode(),
    )
}

async fn readyz(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.caches_synced.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n")
    }
}

async fn livez(State(health): State<Arc<Health>>) -> (StatusCode, String) {
    let silent = health.context.since_heartbeat();
    if silent <= health.stall_after {
        (StatusCode::OK, "alive\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("control loop silent for {}s\n", silent.as_secs()),
        )
    }
}
