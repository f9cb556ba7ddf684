//! The loopback listener of one cluster. Reachability is real TCP behaviour: "unreachable"
//! closes the listening socket (new connections are refused) and drops every open connection,
//! including watch streams; "reachable" binds the same port again.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use crate::api;
use crate::cluster::Inner;

/// Bind `127.0.0.1:port` (0: any free port) with SO_REUSEADDR so the port can be rebound.
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    let sock = TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    sock.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    sock.listen(1024)
}

/// Accept connections until aborted; each connection ends when `kill` changes.
pub fn spawn_accept(
    inner: Weak<Inner>,
    listener: TcpListener,
    kill: tokio::sync::watch::Receiver<u64>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Some(inner) = inner.upgrade() else { return };
            let mut kill = kill.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let inner: Arc<Inner> = inner.clone();
                    async move { Ok::<_, Infallible>(api::handle(inner, req).await) }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = kill.changed() => {}
                }
            });
        }
    })
}
