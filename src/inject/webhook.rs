//! `ddbcache inject --serve`: the mutating admission webhook. The API server sends an
//! `AdmissionReview` (v1, kube-rs's types) for each pod created in a namespace that opted in; the
//! answer allows it with a JSON Patch that is the difference between the object and what
//! [`Injector::inject`] makes of it, the same call `ddbcache inject` makes on a file.
//!
//! A webhook must never be the reason a deployment fails, so every request gets an answer that
//! allows it: one that cannot be read (not an AdmissionReview, too large, cut off) or that is not
//! a workload is allowed unchanged, with a warning saying why, and the manifests in
//! `deploy/kubernetes/webhook/` also set `failurePolicy: Ignore` for when the webhook is down.
//!
//! HTTPS only, as the API server requires: the data port's TLS acceptor (`tls.rs`), whose
//! certificate files are reloaded when cert-manager or a rotated Secret renews them. Connections
//! are accepted and served by the data port's own listener and connection code.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube_core::{DynamicObject, Status};
use prometheus::{IntCounterVec, IntGauge, Opts};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Found, Injector};
use crate::config::TlsConfig;
use crate::connection::{self, CloseReason, Limits, Port};
use crate::listener::Listener;
use crate::tls::TlsAcceptor;

/// The path the MutatingWebhookConfiguration calls.
pub const PATH: &str = "/inject";
/// The largest review read by default: a pod is at most about 1.5MiB (etcd's limit on an object)
/// and the API server's requests at most 3MiB, so only something that is not the API server
/// sends more.
pub const MAX_REVIEW_BYTES: usize = 8 << 20;
/// How long a review's body may take to arrive (the API server's own timeout is shorter).
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
const LIMITS: Limits = Limits {
    header_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(90),
};
const MAX_CONNECTIONS: usize = 256;
/// How long answers in flight may take to finish after SIGTERM.
const GRACE: Duration = Duration::from_secs(5);
/// How much of an oversized body is kept to find the request's uid in.
const UID_PREFIX_BYTES: usize = 4096;

/// Where and how the webhook serves.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// How often the certificate files are checked for changes.
    pub reload_interval: Duration,
    /// A larger review is allowed unchanged without being read.
    pub max_review_bytes: usize,
}

/// A bound webhook: [`Webhook::bind`], then [`Webhook::run`] until shutdown.
pub struct Webhook {
    listener: Listener,
    tls: TlsAcceptor,
    injector: Arc<Injector>,
    max_review_bytes: usize,
}

/// Why a review is allowed without being looked at.
#[derive(Debug, thiserror::Error)]
enum Unread {
    #[error("the AdmissionReview is {length} bytes, over the {limit} this webhook reads")]
    Oversized { length: usize, limit: usize },
    #[error("the AdmissionReview could not be received: {0}")]
    Cut(String),
    #[error("not an AdmissionReview: {0}")]
    NotAReview(String),
    #[error("an AdmissionReview without a request")]
    NoRequest,
    #[error("the patch could not be written: {0}")]
    Patch(String),
}

/// A review's body as far as it was read.
enum Body {
    Whole(Vec<u8>),
    Unread { prefix: Vec<u8>, why: Unread },
}

impl Webhook {
    /// Loads the certificate and binds the address.
    pub async fn bind(injector: Injector, options: WebhookOptions) -> anyhow::Result<Webhook> {
        let tls = TlsAcceptor::load(&TlsConfig {
            cert_file: Some(options.cert_file),
            key_file: Some(options.key_file),
            client_ca_file: None,
            reload_interval: options.reload_interval,
        })
        .context("the webhook's --tls-cert and --tls-key")?;
        let listener = TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("cannot listen on --listen {}", options.listen))?;
        let open = IntGauge::new("webhook_connections_open", "not exported")?;
        Ok(Webhook {
            listener: Listener::with_cap(listener, "webhook", MAX_CONNECTIONS, open),
            tls,
            injector: Arc::new(injector),
            max_review_bytes: options.max_review_bytes,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then lets answers in flight finish (within a few
    /// seconds) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Webhook {
            listener,
            tls,
            injector,
            max_review_bytes,
        } = self;
        info!(listen = %listener.local_addr(), path = PATH, "ddbcache inject webhook serving");
        let reload = tokio::spawn(tls.clone().reload_forever());
        let (stop, stopping) = watch::channel(false);
        let closed = IntCounterVec::new(
            Opts::new("webhook_connections_closed_total", "not exported"),
            &["port", "reason"],
        )?;
        let port = Port {
            name: "webhook",
            limits: LIMITS,
            shutdown: stopping,
            closed,
        };
        let handler = move |req| {
            let injector = injector.clone();
            async move { route(&injector, max_review_bytes, req).await }
        };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept_counted() => {
                    let (stream, peer, slot) = accepted.into_parts();
                    let (tls, port, handler) = (tls.clone(), port.clone(), handler.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(LIMITS.header_timeout, tls.accept(stream)).await {
                            Ok(Ok(stream)) => connection::serve(stream, peer, slot, port, handler).await,
                            Ok(Err(e)) => debug!(peer = %peer, error = %e, "TLS handshake failed"),
                            Err(_) => port.count_close(CloseReason::TlsHandshake),
                        }
                    });
                }
                _ = &mut shutdown => break,
            }
        }
        let drained = listener.drained();
        drop(listener);
        let _ = stop.send(true);
        if tokio::time::timeout(GRACE, drained).await.is_err() {
            warn!("answers still in flight after the grace period; exiting anyway");
        }
        reload.abort();
        info!("ddbcache inject webhook stopped");
        Ok(())
    }
}

async fn route(injector: &Injector, limit: usize, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status, content_type, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    match (req.method(), req.uri().path()) {
        (&Method::POST, PATH) => {
            let response = match read(req.into_body(), limit).await {
                Body::Whole(body) => review(injector, &body),
                Body::Unread { prefix, why } => admitted_unchanged(uid_in(&prefix), why),
            };
            let body =
                serde_json::to_vec(&response.into_review()).expect("an AdmissionReview serializes");
            reply(StatusCode::OK, "application/json", body)
        }
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        (_, PATH | "/healthz") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"method not allowed\n".to_vec(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}

/// The body, read to its end even when it is over `limit` (so that the client reads the answer
/// rather than a reset connection), keeping at most `limit` bytes.
async fn read(mut body: Incoming, limit: usize) -> Body {
    let mut kept = Vec::new();
    let mut length = 0usize;
    let whole = tokio::time::timeout(BODY_TIMEOUT, async {
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() else {
                continue;
            };
            length = length.saturating_add(data.len());
            if length <= limit {
                kept.extend_from_slice(&data);
            } else if kept.len() < UID_PREFIX_BYTES {
                let room = UID_PREFIX_BYTES - kept.len();
                kept.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
        Ok::<(), String>(())
    })
    .await;
    let why = match whole {
        Ok(Ok(())) if length <= limit => return Body::Whole(kept),
        Ok(Ok(())) => Unread::Oversized { length, limit },
        Ok(Err(e)) => Unread::Cut(e),
        Err(_) => Unread::Cut(format!("not received within {BODY_TIMEOUT:?}")),
    };
    kept.truncate(UID_PREFIX_BYTES);
    Body::Unread { prefix: kept, why }
}

/// The answer to a review that was read whole.
fn review(injector: &Injector, body: &[u8]) -> AdmissionResponse {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) => return admitted_unchanged(uid_in(body), Unread::NotAReview(e.to_string())),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => return admitted_unchanged(String::new(), Unread::NoRequest),
    };
    let mut response = AdmissionResponse::from(&request);
    let object = match (&request.operation, &request.object) {
        (Operation::Create, Some(object)) => object,
        _ => return response,
    };
    let before = match serde_json::to_value(object) {
        Ok(before) => before,
        Err(e) => return admitted_unchanged(request.uid, Unread::NotAReview(e.to_string())),
    };
    let mut after = before.clone();
    let report = injector.inject(&mut after);
    let mut warnings: Vec<String> = report
        .warnings
        .iter()
        .map(|w| format!("ddbcache inject: {w}"))
        .collect();
    if let Found::NotAWorkload(kind) = &report.found {
        let message = format!(
            "ddbcache inject: {kind} is not a workload with a pod template; admitted unchanged"
        );
        response.result.message = message.clone();
        warnings.push(message);
    }
    info!(
        uid = %request.uid,
        namespace = request.namespace.as_deref().unwrap_or(""),
        kind = %request.kind.kind,
        changed = report.changed,
        warnings = warnings.len(),
        "admission review"
    );
    response.warnings = (!warnings.is_empty()).then_some(warnings);
    let patch = json_patch::diff(&before, &after);
    if patch.0.is_empty() {
        return response;
    }
    let uid = response.uid.clone();
    response
        .with_patch(patch)
        .unwrap_or_else(|e| admitted_unchanged(uid, Unread::Patch(e.to_string())))
}

/// Allows the request as it is, saying why in a warning (which `kubectl` shows) and the status.
fn admitted_unchanged(uid: String, why: Unread) -> AdmissionResponse {
    let message = format!("ddbcache inject: {why}; admitted unchanged");
    warn!(uid = %uid, "{message}");
    let mut response = AdmissionResponse::invalid(&message);
    response.uid = uid;
    response.allowed = true;
    response.result = Status {
        message: message.clone(),
        ..Status::success()
    };
    response.warnings = Some(vec![message]);
    response
}

/// The request's uid, from a body that is not read as a whole: the API server writes
/// `request.uid` before the object (whose own `metadata.uid` comes later), so the first `"uid"`
/// is the request's. Empty when there is none: the API server then treats the answer as a
/// failed call, which `failurePolicy: Ignore` admits unchanged too.
fn uid_in(prefix: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(prefix) {
        let uid = value.pointer("/request/uid").and_then(|u| u.as_str());
        return uid.unwrap_or_default().to_string();
    }
    let text = String::from_utf8_lossy(prefix);
    let after_key = text.find("\"uid\"").map(|at| &text[at + 5..]);
    let value = after_key
        .and_then(|rest| rest.trim_start().strip_prefix(':'))
        .map(str::trim_start);
    value
        .and_then(|v| {
            serde_json::Deserializer::from_str(v)
                .into_iter::<String>()
                .next()?
                .ok()
        })
        .unwrap_or_default()
}
