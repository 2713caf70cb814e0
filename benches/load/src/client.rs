//! The HTTP side of the generator: one pooled keep-alive HTTP/1.1 client for the DynamoDB
//! endpoint, and the two ways of authorizing a request.
//!
//! Without `--sign` every request carries the same fake `Authorization` and `X-Amz-Date` headers,
//! built once: local engines (dynalite, DynamoDB Local, ddbcache with signing off upstream) only
//! check that they are present. With `--sign` each request is signed with SigV4 by ddbcache's own
//! signer (credentials from the standard AWS chain, refreshed before they expire), which is what
//! real DynamoDB needs.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use bytes::Bytes;
use ddbcache::protocol::{CONTENT_TYPE, HEADER_TARGET};
use ddbcache::proxy::HEADER_OUTCOME;
use ddbcache::upstream::{amz_date, error_chain, Signer};
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::workload::Op;

const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
const FAKE_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=load/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=0";

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A response, fully read.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
    /// The `x-ddbcache` header (hit, hit-shared, miss, bypass, stale) when the endpoint is
    /// ddbcache.
    pub cache: Option<CacheOutcome>,
}

impl Reply {
    /// The DynamoDB error name of an error response: `__type` after its `#`, e.g.
    /// `ResourceNotFoundException`.
    pub fn error_type(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        let t = v.get("__type")?.as_str()?;
        Some(t.rsplit('#').next().unwrap_or(t).to_owned())
    }

    /// The error message (DynamoDB spells it `message` or `Message`), else the start of the body.
    pub fn error_message(&self) -> String {
        let v: Option<serde_json::Value> = serde_json::from_slice(&self.body).ok();
        v.as_ref()
            .and_then(|v| v.get("message").or_else(|| v.get("Message")))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned()
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    /// Answered from the shared tier (`[fleet.shared]`): another sidecar's, or this one's, entry
    /// in Redis.
    HitShared,
    Miss,
    Bypass,
    /// An expired entry answering for a read DynamoDB failed (`cache.stale_if_error`).
    Stale,
}

/// Why no HTTP response came back.
#[derive(Debug)]
pub enum TransportError {
    Connect(String),
    Timeout,
    Closed(String),
    Other(String),
}

impl TransportError {
    /// A stable label for grouping in reports.
    pub fn kind(&self) -> &'static str {
        match self {
            TransportError::Connect(_) => "transport: connect",
            TransportError::Timeout => "transport: timeout",
            TransportError::Closed(_) => "transport: connection closed",
            TransportError::Other(_) => "transport: other",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            TransportError::Connect(m) | TransportError::Closed(m) | TransportError::Other(m) => {
                m.clone()
            }
            TransportError::Timeout => "no response within --timeout".to_owned(),
        }
    }
}

enum Auth {
    Fake {
        authorization: HeaderValue,
        date: HeaderValue,
    },
    SigV4 {
        signer: Signer,
        host: HeaderValue,
    },
}

/// A DynamoDB JSON-protocol client for one endpoint. Cheap to share behind an `Arc`.
pub struct DynamoClient {
    http: HttpClient,
    uri: Uri,
    auth: Auth,
    timeout: Duration,
}

pub struct ClientOptions {
    pub endpoint: String,
    pub region: String,
    pub sign: bool,
    pub timeout: Duration,
    /// Connections kept open; the pool grows to the number of requests in flight.
    pub max_connections: usize,
}

impl DynamoClient {
    pub async fn new(opts: ClientOptions) -> anyhow::Result<DynamoClient> {
        let uri: Uri = opts
            .endpoint
            .parse()
            .with_context(|| format!("--endpoint {:?} is not a URL", opts.endpoint))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => bail!("--endpoint must start with http:// or https://"),
        }
        if uri.host().is_none() {
            bail!("--endpoint {:?} has no host", opts.endpoint);
        }
        let auth = if opts.sign {
            let (signer, _) = Signer::from_default_chain(opts.region).await?;
            // Load them now, so a missing credential fails the run before it starts.
            signer
                .credentials()
                .await
                .context("loading AWS credentials for --sign")?;
            let host = uri
                .authority()
                .map(|a| HeaderValue::from_str(a.as_str()))
                .transpose()?
                .context("--endpoint has no host")?;
            Auth::SigV4 { signer, host }
        } else {
            Auth::Fake {
                authorization: HeaderValue::from_static(FAKE_AUTHORIZATION),
                date: HeaderValue::from_str(&amz_date::format(SystemTime::now()))?,
            }
        };
        Ok(DynamoClient {
            http: http_client(opts.max_connections),
            uri,
            auth,
            timeout: opts.timeout,
        })
    }

    /// Sends one request and reads the whole response.
    pub async fn call(&self, op: Op, body: Bytes) -> Result<Reply, TransportError> {
        self.call_target(op.target(), body).await
    }

    /// As [`call`](Self::call), for any `X-Amz-Target` (control-plane operations).
    pub async fn call_target(
        &self,
        target: &'static str,
        body: Bytes,
    ) -> Result<Reply, TransportError> {
        let request = self
            .build_request(target, body)
            .await
            .map_err(|e| TransportError::Other(format!("building the request: {e:#}")))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(classify)?;
            let status = response.status();
            let cache = response
                .headers()
                .get(HEADER_OUTCOME)
                .and_then(|v| match v.as_bytes() {
                    b"hit" => Some(CacheOutcome::Hit),
                    b"hit-shared" => Some(CacheOutcome::HitShared),
                    b"miss" => Some(CacheOutcome::Miss),
                    b"bypass" => Some(CacheOutcome::Bypass),
                    b"stale" => Some(CacheOutcome::Stale),
                    _ => None,
                });
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| TransportError::Closed(format!("reading the body: {e}")))?
                .to_bytes();
            Ok(Reply {
                status,
                body,
                cache,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout),
        }
    }

    async fn build_request(
        &self,
        target: &'static str,
        body: Bytes,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let builder = Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(HEADER_TARGET, HeaderValue::from_static(target));
        match &self.auth {
            Auth::Fake {
                authorization,
                date,
            } => Ok(builder
                .header(AUTHORIZATION, authorization.clone())
                .header(X_AMZ_DATE, date.clone())
                .body(Full::new(body))?),
            Auth::SigV4 { signer, host } => {
                let mut request = builder.header(HOST, host.clone()).body(body)?;
                signer.sign(&mut request).await?;
                Ok(request.map(Full::new))
            }
        }
    }
}

/// A plain request without a body, for ddbcache's admin port (`GET /metrics`, `POST
/// /cache/flush`).
pub async fn http_call(
    method: http::Method,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let client = http_client(1);
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    let request = Request::builder()
        .method(method.clone())
        .uri(uri)
        .body(Full::new(Bytes::new()))?;
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{method} {url} timed out"))?
        .with_context(|| format!("{method} {url}"))
}

fn http_client(max_connections: usize) -> HttpClient {
    let mut http = HttpConnector::new();
    // Small request/response pairs: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms.
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(3)));
    // The build links both rustls back-ends (aws-config brings aws-lc-rs), so name one.
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .expect("ring supports rustls' default protocol versions")
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_connections.max(1))
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

fn classify(e: hyper_util::client::legacy::Error) -> TransportError {
    let detail = error_chain(&e);
    if e.is_connect() {
        return TransportError::Connect(detail);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return TransportError::Closed(detail);
            }
        }
        source = err.source();
    }
    TransportError::Other(detail)
}
