//! `serve-fixed`: the fastest possible "DynamoDB", to measure what this machine's HTTP stack can
//! do at all.
//!
//! Every request is read in full and answered with the same GetItem response, built by the
//! function that builds a ddbcache cache hit (`proxy::respond::json_response`: the stored body,
//! its precomputed `x-amz-crc32`, the content type and a fresh `x-amzn-RequestId`), on ddbcache's
//! own accept loop and connection builder (hyper-util's auto HTTP/1.1 + h2c, keep-alive,
//! TCP_NODELAY, one task per connection) and the runtime `--threads` selects (by default
//! multi-threaded with one worker per core, as ddbcache runs). So the difference between the two
//! is the hit path's own work: reading the request down to its cache key and the lookup. ddbcache's
//! hit throughput divided by this server's is the share of the HTTP stack's capacity it keeps.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use ddbcache::listener::Listener;
use ddbcache::proxy::headers::crc32_header;
use ddbcache::proxy::respond::json_response;
use ddbcache::proxy::Body;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::workload::fixed_get_item_response;

pub async fn serve(addr: SocketAddr, item_bytes: usize) -> anyhow::Result<()> {
    let listener = bind(addr, "serve-fixed").await?;
    let body = fixed_get_item_response(item_bytes);
    let crc32 = crc32_header(&body);
    eprintln!(
        "serve-fixed: listening on {} (GetItem response of {} bytes)",
        listener.local_addr(),
        body.len()
    );
    serve_connections(listener, move || {
        let (body, crc32) = (body.clone(), crc32.clone());
        service_fn(move |request| answer(request, body.clone(), crc32.clone()))
    })
    .await
}

/// Binds a baseline server's listener (ddbcache's own, so accepting costs what it costs there).
pub(crate) async fn bind(addr: SocketAddr, name: &'static str) -> anyhow::Result<Listener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    Ok(Listener::new(listener, name))
}

/// The baseline servers' accept loop, until the shutdown signal: every connection served by
/// ddbcache's connection builder (hyper-util's auto HTTP/1.1 + h2c) with a service from
/// `service`, on a task of its own.
pub(crate) async fn serve_connections<S, B>(
    listener: Listener,
    service: impl Fn() -> S,
) -> anyhow::Result<()>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let shutdown = ddbcache::server::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            stream = listener.accept() => stream,
            _ = &mut shutdown => return Ok(()),
        };
        let conn = builder
            .serve_connection(TokioIo::new(stream), service())
            .into_owned();
        // Errors here are clients going away mid-request; nothing to do about them.
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    body: Bytes,
    crc32: HeaderValue,
) -> Result<Response<Body>, Infallible> {
    // Read the request like a real server must; a broken body still gets the answer.
    let _ = request.into_body().collect().await;
    Ok(json_response(StatusCode::OK, body, crc32))
}
