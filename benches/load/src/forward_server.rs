//! `serve-forward`: the plainest forwarding proxy hyper makes, to measure what one more hop costs
//! on this machine before a proxy does anything of its own.
//!
//! Every request is read in full and sent on as it came (its method, path, headers less the
//! hop-by-hop ones, its body) to `--upstream` over hyper-util's pooled keep-alive client, the way
//! a hyper proxy is usually written; the whole answer is relayed back. Same accept loop,
//! connection builder and runtime as `serve-fixed`. A miss through ddbcache less a request
//! through this is what ddbcache's own work adds to a forwarded request (the front door, policy,
//! the breaker, metrics), as a hit less `serve-fixed` is for a hit.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::fixed_server::{bind, serve_connections};

type Upstream = Client<HttpConnector, Full<Bytes>>;

/// Headers that belong to one hop, or that the forwarded message gets anew.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONTENT_LENGTH,
];

pub async fn serve(addr: SocketAddr, upstream: Uri) -> anyhow::Result<()> {
    let listener = bind(addr, "serve-forward").await?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new()).build(connector);
    eprintln!(
        "serve-forward: listening on {}, forwarding to {upstream}",
        listener.local_addr()
    );
    serve_connections(listener, move || {
        let (client, upstream) = (client.clone(), upstream.clone());
        service_fn(move |request| forward(request, client.clone(), upstream.clone()))
    })
    .await
}

async fn forward(
    request: Request<Incoming>,
    client: Upstream,
    upstream: Uri,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut uri = upstream.into_parts();
    uri.path_and_query = parts.uri.path_and_query().cloned();
    parts.uri = Uri::from_parts(uri).expect("the upstream's URL with the request's path");
    for name in &HOP_BY_HOP {
        parts.headers.remove(name);
    }
    let answer = match client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(answer) => answer,
        Err(e) => {
            let mut failed = Response::new(Full::new(Bytes::from(e.to_string())));
            *failed.status_mut() = StatusCode::BAD_GATEWAY;
            return Ok(failed);
        }
    };
    let (mut parts, body) = answer.into_parts();
    let body = body.collect().await?.to_bytes();
    for name in &HOP_BY_HOP {
        parts.headers.remove(name);
    }
    Ok(Response::from_parts(parts, Full::new(body)))
}
