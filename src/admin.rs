//! The admin port: `/metrics`, `/healthz`, `/readyz`, `/cache` and `POST /cache/flush`.
//! Separate from the data port so probes and scrapes never queue behind application traffic. It
//! reads a small state of its own ([`AdminState`]): the metrics, the readiness and the cache
//! handle, never the proxy or the server.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use crate::cache::{Cache, Kind};
use crate::listener::Listener;
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// What the admin endpoints read and act on.
pub(crate) struct AdminState {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) readiness: Arc<Readiness>,
    /// `None` when the cache is disabled.
    pub(crate) cache: Option<Arc<Cache>>,
}

/// Serves the admin port until the task is aborted.
pub(crate) async fn serve(listener: Listener, state: Arc<AdminState>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = listener.accept().await;
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(route(&state, req)) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(conn);
    }
}

fn route(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/metrics") => {
            if let Some(cache) = &state.cache {
                cache.refresh_gauges();
            }
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                state.metrics.render(),
            )
        }
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/readyz") => {
            if state.readiness.is_ready() {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready\n".into(),
                )
            }
        }
        (&Method::GET, "/cache") => {
            let body = match &state.cache {
                Some(cache) => serde_json::json!({
                    "enabled": true,
                    "item": cache.stats(Kind::Item),
                    "query": cache.stats(Kind::Query),
                }),
                None => serde_json::json!({ "enabled": false }),
            };
            reply(StatusCode::OK, "application/json", body.to_string())
        }
        (&Method::POST, "/cache/flush") => {
            let Some(cache) = &state.cache else {
                return reply(
                    StatusCode::CONFLICT,
                    "application/json",
                    r#"{"error":"the cache is disabled"}"#.into(),
                );
            };
            let query = req.uri().query();
            match query_param(query, "table") {
                Some(table) => {
                    let region = query_param(query, "region");
                    let tables = cache.flush_table(&table, region.as_deref());
                    let body = serde_json::json!({ "flushed": table, "tables": tables });
                    reply(StatusCode::OK, "application/json", body.to_string())
                }
                None => {
                    cache.flush();
                    reply(
                        StatusCode::OK,
                        "application/json",
                        r#"{"flushed":"all"}"#.into(),
                    )
                }
            }
        }
        (_, "/metrics" | "/healthz" | "/readyz" | "/cache" | "/cache/flush") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz, /cache, POST /cache/flush\n".into(),
        ),
    }
}

/// `name=VALUE` from a query string, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_param_is_decoded() {
        assert_eq!(
            query_param(Some("table=My%20Table"), "table"),
            Some("My Table".into())
        );
        assert_eq!(query_param(Some("x=1&table=t"), "table"), Some("t".into()));
        assert_eq!(query_param(Some("table="), "table"), None);
        assert_eq!(query_param(None, "table"), None);
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
