//! A test engine that lags like DynamoDB's replicas: real DynamoDB answers an eventually
//! consistent read from any of a partition's replicas, and one may not have applied a write that
//! was acknowledged a moment ago. The local engines are strongly consistent, so this imitates it
//! with two dynalite engines behind one endpoint: a primary and a replica.
//!
//! - Item writes go to the primary at once, and to the replica only when the test calls
//!   [`LaggingReplica::catch_up`] (in order), so the lag lasts exactly as long as the test wants.
//! - Eventually consistent reads are answered by the replica; reads with `ConsistentRead: true`
//!   (anywhere in the body: BatchGetItem sets it per table) by the primary.
//! - Table calls (CreateTable, DeleteTable, UpdateTable) go to both at once; everything else to
//!   the primary.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;

use super::{client, collect, Engine};

/// A write the replica has not applied yet.
struct Pending {
    headers: HeaderMap,
    body: Bytes,
}

pub struct LaggingReplica {
    pub endpoint: String,
    primary: String,
    replica: String,
    backlog: Arc<Mutex<Vec<Pending>>>,
    task: tokio::task::JoinHandle<()>,
    _engines: (Engine, Engine),
}

const WRITES: &[&str] = &[
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];
const READS: &[&str] = &[
    "GetItem",
    "BatchGetItem",
    "Query",
    "Scan",
    "TransactGetItems",
];
const TABLE_CALLS: &[&str] = &["CreateTable", "DeleteTable", "UpdateTable"];

impl LaggingReplica {
    pub async fn start() -> LaggingReplica {
        let (primary, replica) = (Engine::dynalite().await, Engine::dynalite().await);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let backlog = Arc::new(Mutex::new(Vec::new()));
        let (p, r, b) = (primary.endpoint(), replica.endpoint(), backlog.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (p, r, b) = (p.clone(), r.clone(), b.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (p, r, b) = (p.clone(), r.clone(), b.clone());
                    async move { Ok::<_, std::convert::Infallible>(route(req, &p, &r, &b).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        LaggingReplica {
            endpoint,
            primary: primary.endpoint(),
            replica: replica.endpoint(),
            backlog,
            task,
            _engines: (primary, replica),
        }
    }

    /// The replica applies every write it has not seen yet, in order.
    pub async fn catch_up(&self) {
        let pending: Vec<Pending> = std::mem::take(&mut *self.backlog.lock().await);
        for p in pending {
            send(&self.replica, &p.headers, p.body).await;
        }
    }

    /// The primary's endpoint (what a strongly consistent reader sees).
    pub fn primary(&self) -> &str {
        &self.primary
    }
}

impl Drop for LaggingReplica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn route(
    req: Request<Incoming>,
    primary: &str,
    replica: &str,
    backlog: &Mutex<Vec<Pending>>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_string();
    let consistent = serde_json::from_slice::<serde_json::Value>(&body)
        .map(|v| asks_consistent_read(&v))
        .unwrap_or(false);
    let answer = if READS.contains(&op.as_str()) && !consistent {
        send(replica, &parts.headers, body).await
    } else if WRITES.contains(&op.as_str()) {
        let answer = send(primary, &parts.headers, body.clone()).await;
        if answer.0.is_success() {
            backlog.lock().await.push(Pending {
                headers: parts.headers.clone(),
                body,
            });
        }
        answer
    } else if TABLE_CALLS.contains(&op.as_str()) {
        send(replica, &parts.headers, body.clone()).await;
        send(primary, &parts.headers, body).await
    } else {
        send(primary, &parts.headers, body).await
    };
    let (status, headers, body) = answer;
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    for (k, v) in headers.iter() {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            response.headers_mut().insert(k, v.clone());
        }
    }
    response
}

fn asks_consistent_read(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| {
            (k == "ConsistentRead" && v == &serde_json::Value::Bool(true))
                || asks_consistent_read(v)
        }),
        serde_json::Value::Array(a) => a.iter().any(asks_consistent_read),
        _ => false,
    }
}

async fn send(
    engine: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> (http::StatusCode, HeaderMap, Bytes) {
    let mut out = Request::post(engine);
    for (k, v) in headers.iter() {
        if k != "host" {
            out = out.header(k, v);
        }
    }
    let resp = client()
        .request(out.body(Full::new(body)).unwrap())
        .await
        .expect("engine answers");
    collect(resp).await
}
