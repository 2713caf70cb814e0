//! The HTTP side of the generator: one pooled keep-alive HTTP/1.1 client for the DynamoDB
//! endpoint, and the two ways of authorizing a request.
//!
//! Without `--sign` every request carries the same fake `Authorization` and `X-Amz-Date` headers,
//! built once: local engines (dynalite, DynamoDB Local, ddbcache with signing off upstream) only
//! check that they are present. With `--sign` each request is signed with SigV4 using credentials
//! from the standard AWS chain, refreshed in the background, which is what real DynamoDB needs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::RwLock;

use crate::workload::Op;

const AMZ_JSON: HeaderValue = HeaderValue::from_static("application/x-amz-json-1.0");
const X_AMZ_TARGET: HeaderName = HeaderName::from_static("x-amz-target");
const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
const X_DDBCACHE: HeaderName = HeaderName::from_static("x-ddbcache");
const FAKE_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=load/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=0";

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A response, fully read.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
    /// The `x-ddbcache` header (hit, miss, bypass) when the endpoint is ddbcache.
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
    Miss,
    Bypass,
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
        region: String,
        credentials: Arc<RwLock<Credentials>>,
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
            let provider = credentials_provider().await?;
            let first = provider
                .provide_credentials()
                .await
                .context("loading AWS credentials for --sign")?;
            let credentials = Arc::new(RwLock::new(first));
            tokio::spawn(refresh_credentials(provider, Arc::clone(&credentials)));
            Auth::SigV4 {
                region: opts.region,
                credentials,
            }
        } else {
            Auth::Fake {
                authorization: HeaderValue::from_static(FAKE_AUTHORIZATION),
                date: HeaderValue::from_str(&amz_date(SystemTime::now()))?,
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
            .map_err(|e| TransportError::Other(format!("building the request: {e:#}")))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(classify)?;
            let status = response.status();
            let cache = response
                .headers()
                .get(X_DDBCACHE)
                .and_then(|v| match v.as_bytes() {
                    b"hit" => Some(CacheOutcome::Hit),
                    b"miss" => Some(CacheOutcome::Miss),
                    b"bypass" => Some(CacheOutcome::Bypass),
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

    fn build_request(
        &self,
        target: &'static str,
        body: Bytes,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut builder = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, AMZ_JSON)
            .header(X_AMZ_TARGET, HeaderValue::from_static(target));
        match &self.auth {
            Auth::Fake {
                authorization,
                date,
            } => {
                builder = builder
                    .header(AUTHORIZATION, authorization.clone())
                    .header(X_AMZ_DATE, date.clone());
                Ok(builder.body(Full::new(body))?)
            }
            Auth::SigV4 {
                region,
                credentials,
            } => {
                let mut request = builder.body(Full::new(body.clone()))?;
                let identity = credentials.read().clone().into();
                let params = v4::SigningParams::builder()
                    .identity(&identity)
                    .region(region)
                    .name("dynamodb")
                    .time(SystemTime::now())
                    .settings(SigningSettings::default())
                    .build()?
                    .into();
                let uri = self.uri.to_string();
                let headers = request
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
                let signable =
                    SignableRequest::new("POST", uri, headers, SignableBody::Bytes(&body))?;
                let (instructions, _signature) = sign(signable, &params)?.into_parts();
                instructions.apply_to_request_http1x(&mut request);
                Ok(request)
            }
        }
    }
}

/// A plain GET, used for the admin port's `/metrics`.
pub async fn http_get(url: &str, timeout: Duration) -> anyhow::Result<(StatusCode, Bytes)> {
    let client = http_client(1);
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    let request = Request::get(uri).body(Full::new(Bytes::new()))?;
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("GET {url} timed out"))?
        .with_context(|| format!("GET {url}"))
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}

async fn credentials_provider() -> anyhow::Result<SharedCredentialsProvider> {
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    config
        .credentials_provider()
        .context("the AWS default chain found no credentials provider (needed by --sign)")
}

/// Keeps the signing credentials fresh for long runs (temporary credentials expire).
async fn refresh_credentials(
    provider: SharedCredentialsProvider,
    credentials: Arc<RwLock<Credentials>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tick.tick().await;
        match provider.provide_credentials().await {
            Ok(fresh) => *credentials.write() = fresh,
            Err(e) => eprintln!("warning: refreshing AWS credentials failed: {e}"),
        }
    }
}

/// `X-Amz-Date` format: 20200101T000000Z.
fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_date_formats_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(amz_date(t), "20231114T221320Z");
        assert_eq!(amz_date(SystemTime::UNIX_EPOCH), "19700101T000000Z");
    }
}
