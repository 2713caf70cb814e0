//! The admin port: `/metrics`, `/healthz`, `/readyz`, `/cache`, `POST /cache/flush`, and the
//! table aliases (`GET`, `PUT` and `DELETE /aliases`). Separate from the data port so probes and
//! scrapes never queue behind application traffic. It reads a small state of its own
//! ([`AdminState`]): the metrics, the readiness, the cache handle, the aliases and the fleet (an
//! alias is stored for the fleet before it is put in force), never the proxy or the server.
//!
//! Probes and metrics are open to whoever reaches the port (the kubelet, Prometheus). Mutating
//! endpoints are not: with `admin.token` or `admin.token_file` set they need
//! `Authorization: Bearer <token>`; without a token only loopback clients (the pod's own
//! containers) may use them, so an admin port opened to the cluster for probes does not let
//! anything in the cluster flush every sidecar.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tracing::warn;

use crate::aliases::{AliasKey, Aliases};
use crate::cache::{Cache, InvalidationCause, Kind};
use crate::config::is_table_name;
use crate::config::AdminConfig;
use crate::connection::{self, Port};
use crate::fleet::Fleet;
use crate::listener::Listener;
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// What the admin endpoints read and act on.
pub(crate) struct AdminState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    /// `None` when the cache is disabled.
    cache: Option<Arc<Cache>>,
    token: TokenSource,
    aliases: Arc<Aliases>,
    fleet: Fleet,
}

/// Where the token mutating requests must present comes from.
enum TokenSource {
    /// No token: loopback clients only.
    LoopbackOnly,
    Fixed(String),
    /// Read on every mutating request, so a rotated Secret applies without a restart.
    File(PathBuf),
}

impl AdminState {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        cache: Option<Arc<Cache>>,
        config: AdminConfig,
        aliases: Arc<Aliases>,
        fleet: Fleet,
    ) -> AdminState {
        let token = match (config.token, config.token_file) {
            (Some(token), _) => TokenSource::Fixed(token),
            (None, Some(path)) => TokenSource::File(path),
            (None, None) => TokenSource::LoopbackOnly,
        };
        AdminState {
            metrics,
            readiness,
            cache,
            token,
            aliases,
            fleet,
        }
    }

    /// Whether a mutating request may proceed.
    fn authorize(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<(), Refusal> {
        let expected = match &self.token {
            TokenSource::LoopbackOnly => {
                return match peer {
                    Some(p) if p.ip().is_loopback() => Ok(()),
                    _ => Err(Refusal::NotLoopback),
                };
            }
            TokenSource::Fixed(token) => token.clone(),
            TokenSource::File(path) => match std::fs::read_to_string(path) {
                Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
                Ok(_) => {
                    warn!(path = %path.display(), "admin.token_file is empty; refusing");
                    return Err(Refusal::NoToken);
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot read admin.token_file; refusing");
                    return Err(Refusal::NoToken);
                }
            },
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(p) if constant_time_eq(p.as_bytes(), expected.as_bytes()) => Ok(()),
            _ => Err(Refusal::BadToken),
        }
    }
}

/// Why a mutating admin request was refused.
enum Refusal {
    /// No token is configured and the client is not on loopback.
    NotLoopback,
    /// A token file is configured but cannot be read: refuse rather than open up.
    NoToken,
    /// Missing or wrong `Authorization: Bearer`.
    BadToken,
}

impl Refusal {
    fn reply(self) -> Response<Full<Bytes>> {
        match self {
            Refusal::NotLoopback => reply(
                StatusCode::FORBIDDEN,
                "text/plain",
                "forbidden: set admin.token or admin.token_file to use this endpoint from another host\n".into(),
            ),
            Refusal::NoToken => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "the admin token cannot be read\n".into(),
            ),
            Refusal::BadToken => {
                let mut r = reply(
                    StatusCode::UNAUTHORIZED,
                    "text/plain",
                    "unauthorized: send Authorization: Bearer <admin token>\n".into(),
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                r
            }
        }
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the admin port until the task is aborted.
pub(crate) async fn serve(listener: Listener, state: Arc<AdminState>, port: Port) {
    loop {
        let (stream, peer, slot) = listener.accept_counted().await.into_parts();
        let state = state.clone();
        // The peer is the connection's: the flush trusts loopback clients.
        let handler = move |req| {
            let state = state.clone();
            async move { route(&state, req, peer).await }
        };
        tokio::spawn(connection::serve(stream, peer, slot, port.clone(), handler));
    }
}

async fn route(
    state: &AdminState,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
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
            if let Err(refused) = state.authorize(req.headers(), Some(peer)) {
                return refused.reply();
            }
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
                    cache.flush(InvalidationCause::Flush);
                    reply(
                        StatusCode::OK,
                        "application/json",
                        r#"{"flushed":"all"}"#.into(),
                    )
                }
            }
        }
        (&Method::GET, "/aliases") => {
            let body = serde_json::json!({ "aliases": state.aliases.list() });
            reply(StatusCode::OK, "application/json", body.to_string())
        }
        (&Method::PUT | &Method::DELETE, "/aliases") => {
            if let Err(refused) = state.authorize(req.headers(), Some(peer)) {
                return refused.reply();
            }
            set_alias(state, req.method() == Method::PUT, req.uri().query()).await
        }
        (_, "/metrics" | "/healthz" | "/readyz" | "/cache" | "/cache/flush" | "/aliases") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz, /cache, POST /cache/flush, /aliases\n"
                .into(),
        ),
    }
}

/// `PUT /aliases?alias=NAME&table=TABLE[&region=REGION]` (`put`) or `DELETE /aliases?alias=NAME
/// [&region=REGION]`: the alias is stored for the fleet first (a fleet whose Redis cannot take it
/// keeps the old one, everywhere), then put in force here, then announced to the peers.
async fn set_alias(state: &AdminState, put: bool, query: Option<&str>) -> Response<Full<Bytes>> {
    let refuse = |status, message: String| {
        let body = serde_json::json!({ "error": message });
        reply(status, "application/json", body.to_string())
    };
    let Some(alias) = query_param(query, "alias") else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "name the alias: ?alias=NAME".into(),
        );
    };
    let key = match query_param(query, "region") {
        Some(region) => format!("{region}/{alias}"),
        None => alias,
    };
    let key = match AliasKey::parse(&key) {
        Ok(key) => key,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let table = match (put, query_param(query, "table")) {
        (false, _) => None,
        (true, Some(table)) if is_table_name(&table) => Some(table),
        (true, _) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "name the table that serves the alias: &table=NAME".into(),
            )
        }
    };
    if let Err(e) = state.fleet.store_alias(&key, table.as_deref()).await {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the fleet's Redis did not take the alias, which is unchanged: {e}"),
        );
    }
    let switched = state.aliases.set(key.clone(), table.clone());
    state.fleet.aliases_changed().await;
    let switched: Vec<_> = switched
        .iter()
        .map(|s| serde_json::json!({ "from": s.from, "to": s.to }))
        .collect();
    let body = serde_json::json!({
        "alias": key.alias,
        "region": key.region.as_deref().unwrap_or("*"),
        "table": table,
        "switched": switched,
    });
    reply(StatusCode::OK, "application/json", body.to_string())
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

    #[test]
    fn without_a_token_only_loopback_clients_may_flush() {
        let metrics = Arc::new(Metrics::new());
        let readiness = Arc::new(Readiness::new(metrics.ready.clone()));
        let aliases = Arc::new(Aliases::new(&Default::default(), None));
        let state = AdminState::new(
            metrics,
            readiness,
            None,
            AdminConfig::default(),
            aliases,
            Fleet::default(),
        );
        let headers = HeaderMap::new();
        let from = |addr: &str| Some(addr.parse().unwrap());
        assert!(state.authorize(&headers, from("127.0.0.1:5000")).is_ok());
        assert!(state.authorize(&headers, from("[::1]:5000")).is_ok());
        assert!(matches!(
            state.authorize(&headers, from("10.1.2.3:5000")),
            Err(Refusal::NotLoopback)
        ));
        assert!(state.authorize(&headers, None).is_err());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
