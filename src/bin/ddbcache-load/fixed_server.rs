//! `serve-fixed`: the fastest possible "DynamoDB", to measure what this machine's HTTP stack can
//! do at all.
//!
//! Every request is read in full and answered with the same GetItem response: an item of
//! `--item-bytes`, `application/x-amz-json-1.0`, a precomputed `x-amz-crc32`, and a fresh
//! `x-amzn-RequestId`, which is exactly what a ddbcache cache hit has to produce. The server
//! stack mirrors ddbcache's: hyper-util's auto (HTTP/1.1 + h2c) connection builder with
//! keep-alive, TCP_NODELAY, one task per connection, on the runtime `--threads` selects (by
//! default multi-threaded with one worker per core, as ddbcache runs). ddbcache's hit
//! throughput divided by this server's throughput is then the share of the HTTP stack's
//! capacity that ddbcache keeps.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::workload::fixed_get_item_response;

const X_AMZ_CRC32: HeaderName = HeaderName::from_static("x-amz-crc32");
const X_AMZN_REQUEST_ID: HeaderName = HeaderName::from_static("x-amzn-requestid");

/// The response parts shared by every answer.
#[derive(Clone)]
struct Fixed {
    body: Bytes,
    crc32: HeaderValue,
    length: HeaderValue,
}

pub async fn serve(addr: SocketAddr, item_bytes: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let body = fixed_get_item_response(item_bytes);
    let fixed = Fixed {
        crc32: HeaderValue::from(crc32fast::hash(&body)),
        length: HeaderValue::from(body.len()),
        body,
    };
    eprintln!(
        "serve-fixed: listening on {} (GetItem response of {} bytes)",
        listener.local_addr()?,
        fixed.body.len()
    );
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the open connections.
                    eprintln!("serve-fixed: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let fixed = fixed.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, fixed.clone()));
            // Errors here are clients going away mid-request; nothing to do about them.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    fixed: Fixed,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the request like a real server must; a broken body still gets the answer.
    let _ = request.into_body().collect().await;
    let request_id = uuid::Uuid::new_v4();
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = request_id.hyphenated().encode_upper(&mut id);
    let mut response = Response::new(Full::new(fixed.body));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    headers.insert(CONTENT_LENGTH, fixed.length);
    headers.insert(X_AMZ_CRC32, fixed.crc32);
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert(X_AMZN_REQUEST_ID, value);
    }
    Ok(response)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
