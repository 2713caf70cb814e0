//! The upstream client: endpoint resolution, pooled keep-alive connections (HTTP or HTTPS with
//! rustls), SigV4 re-signing, and a circuit breaker per endpoint ([`breaker`]). It forwards
//! bytes; cache policy lives elsewhere, and so does how long a client's request is waited for and
//! where it goes when its region's breaker is open (`proxy::forward`). ddbcache's own calls made
//! here (stream reads, the readiness probe) have no client waiting: they are bounded here.

pub mod amz_date;
pub(crate) mod breaker;
pub mod signing;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{UpstreamConfig, REGION_PLACEHOLDER};
use crate::protocol::region::Region;
use crate::protocol::{Operation, ProtocolError};
use crate::wait::within;
pub use signing::{Signer, SigningError};

/// An upstream answer, whole.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub elapsed: Duration,
    /// Set when a replica region answered instead of the request's own (read failover).
    pub from_replica: Option<FromReplica>,
}

/// An answer a replica region gave while the breaker of the request's own region was open.
#[derive(Debug, Clone)]
pub(crate) struct FromReplica {
    pub region: Region,
    /// Whether the cache may store it, as decided when the read was sent there
    /// (`proxy::policy::failover_storable`).
    pub storable: bool,
}

/// Why an upstream call produced no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("cannot connect to upstream {endpoint}: {detail}")]
    Connect { endpoint: String, detail: String },
    #[error("upstream {endpoint} did not answer within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error(
        "upstream {endpoint} did not answer within upstream.backstop ({backstop:?}) with no client \
         waiting"
    )]
    Backstop {
        endpoint: String,
        backstop: Duration,
    },
    #[error("upstream {endpoint} failed mid-request: {detail}")]
    Io { endpoint: String, detail: String },
    #[error("cannot sign the upstream request")]
    Signing(#[from] SigningError),
    /// Not sent: the endpoint's circuit breaker is open ([`breaker`]).
    #[error(
        "upstream {endpoint} is failing: its circuit breaker is open, and calls to it are answered \
         at once"
    )]
    BreakerOpen { endpoint: String },
}

/// Why the readiness probe did not pass.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error(transparent)]
    Credentials(#[from] SigningError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("upstream answered the readiness probe with {status}: {body}")]
    Refused { status: StatusCode, body: String },
}

impl UpstreamError {
    /// The `kind` label of `ddbcache_upstream_errors_total`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Backstop { .. } => "backstop",
            UpstreamError::Io { .. } => "io",
            UpstreamError::Signing(_) => "signing",
            UpstreamError::BreakerOpen { .. } => "breaker_open",
        }
    }

    /// Whether the call was refused at once by the endpoint's circuit breaker, never sent (where
    /// every other error is a call that was sent, or tried to be, and failed).
    pub(crate) fn refused_at_once(&self) -> bool {
        matches!(self, UpstreamError::BreakerOpen { .. })
    }

    /// What the client sees: a status every SDK retries.
    pub(crate) fn to_protocol(&self) -> ProtocolError {
        match self {
            UpstreamError::Signing(_) => ProtocolError::Internal(error_chain(self)),
            _ => ProtocolError::UpstreamUnavailable(self.to_string()),
        }
    }
}

impl From<UpstreamError> for ProtocolError {
    fn from(e: UpstreamError) -> ProtocolError {
        e.to_protocol()
    }
}

/// Inbound headers that are not forwarded: hop-by-hop headers, and what the upstream request
/// gets anew (host, length, and — when signing — the signature).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
];
const SIGNATURE_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The upstream: DynamoDB's endpoint and its DynamoDB Streams endpoint, for each region.
pub struct Upstream {
    client: HttpsClient,
    endpoint: Route,
    streams_endpoint: Route,
    signer: Option<Signer>,
    /// `upstream.backstop`: how long a call no client waits for is waited for.
    backstop: Duration,
    /// `upstream.region`: the readiness probe's.
    region: String,
}

/// Where a service's requests go: one URL, or one per region (`{region}` in the URL).
enum Route {
    Fixed(Endpoint),
    PerRegion { template: String },
}

impl Route {
    /// `default_region` fills the template once, to check it makes URLs.
    fn parse(template: &str, default_region: &str) -> anyhow::Result<Route> {
        if template.contains(REGION_PLACEHOLDER) {
            Endpoint::parse(&template.replace(REGION_PLACEHOLDER, default_region))?;
            Ok(Route::PerRegion {
                template: template.to_string(),
            })
        } else {
            Ok(Route::Fixed(Endpoint::parse(template)?))
        }
    }

    /// The URL of `region`'s endpoint. Region names are letters, digits and hyphens (`Region`),
    /// so filling one in cannot change the URL's shape.
    fn url(&self, region: &str) -> Cow<'_, str> {
        match self {
            Route::Fixed(e) => Cow::Borrowed(&e.url),
            Route::PerRegion { template } => {
                Cow::Owned(template.replace(REGION_PLACEHOLDER, region))
            }
        }
    }

    /// The endpoint of `region`.
    fn endpoint(&self, region: &str) -> Result<Cow<'_, Endpoint>, UpstreamError> {
        match self {
            Route::Fixed(e) => Ok(Cow::Borrowed(e)),
            Route::PerRegion { .. } => {
                let url = self.url(region);
                Endpoint::parse(&url)
                    .map(Cow::Owned)
                    .map_err(|e| UpstreamError::Connect {
                        endpoint: url.into_owned(),
                        detail: e.to_string(),
                    })
            }
        }
    }

    fn describe(&self) -> &str {
        match self {
            Route::Fixed(e) => &e.url,
            Route::PerRegion { template } => template,
        }
    }
}

#[derive(Clone)]
struct Endpoint {
    url: String,
    base: Uri,
    host: HeaderValue,
}

impl Endpoint {
    fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let base: Uri = url.parse()?;
        let authority = base
            .authority()
            .ok_or_else(|| anyhow::anyhow!("endpoint `{url}` has no host"))?;
        Ok(Endpoint {
            url: url.to_string(),
            host: HeaderValue::from_str(authority.as_str())?,
            base,
        })
    }

    fn uri(&self, path_and_query: &str) -> Uri {
        let base_path = self.base.path().trim_end_matches('/');
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = format!("{base_path}{path_and_query}").parse().ok();
        Uri::from_parts(parts).unwrap_or_else(|_| self.base.clone())
    }
}

impl Upstream {
    /// Builds the client; with `sign`, loads the credential chain (credentials themselves are
    /// fetched on first use and by the readiness probe).
    pub async fn new(config: &UpstreamConfig) -> anyhow::Result<Upstream> {
        let signer = if config.sign {
            Some(Signer::from_default_chain(config.region.clone()).await?)
        } else {
            None
        };
        Self::with_signer(config, signer)
    }

    pub fn with_signer(
        config: &UpstreamConfig,
        signer: Option<Signer>,
    ) -> anyhow::Result<Upstream> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(30)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_per_host)
            // Below the idle timeouts of DynamoDB's and common engines' servers, so a pooled
            // connection is not closed under a request.
            .pool_idle_timeout(Duration::from_secs(4))
            .build(https);
        Ok(Upstream {
            client,
            endpoint: Route::parse(&config.endpoint_template(), &config.region)?,
            streams_endpoint: Route::parse(&config.streams_endpoint_template(), &config.region)?,
            signer,
            backstop: config.backstop,
            region: config.region.clone(),
        })
    }

    /// The endpoint as configured (a URL, or a URL with `{region}`), for logs.
    pub(crate) fn endpoint(&self) -> &str {
        self.endpoint.describe()
    }

    /// The URL `op`'s requests of `region` go to: what a circuit breaker is kept per.
    pub(crate) fn endpoint_url(&self, op: Operation, region: &str) -> Cow<'_, str> {
        self.route(op).url(region)
    }

    fn route(&self, op: Operation) -> &Route {
        if op.is_streams() {
            &self.streams_endpoint
        } else {
            &self.endpoint
        }
    }

    pub(crate) fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    /// One call of ddbcache's own (a stream read): no client waits for it, so it is waited for
    /// `upstream.backstop` at most. Arguments as [`Upstream::exchange`]'s.
    pub(crate) async fn send(
        &self,
        op: Operation,
        region: &str,
        path_and_query: &str,
        inbound: &HeaderMap,
        body: Bytes,
        identity_encoding: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let exchange = self.exchange(op, region, path_and_query, inbound, body, identity_encoding);
        within(self.backstop, exchange)
            .await
            .map_err(|_| UpstreamError::Backstop {
                endpoint: self.endpoint().to_string(),
                backstop: self.backstop,
            })?
    }

    /// Forwards one request to `region`'s endpoint, signed for `region`, and waits for the whole
    /// answer for as long as the caller does. `inbound` are the client's headers;
    /// `identity_encoding` asks the upstream for an uncompressed answer (what the caches store).
    pub(crate) async fn exchange(
        &self,
        op: Operation,
        region: &str,
        path_and_query: &str,
        inbound: &HeaderMap,
        body: Bytes,
        identity_encoding: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let endpoint = self.route(op).endpoint(region)?;
        let mut request = Request::post(endpoint.uri(path_and_query))
            .body(body)
            .expect("a POST with a valid URI is a valid request");
        let headers = request.headers_mut();
        for (name, value) in inbound {
            let n = name.as_str();
            if HOP_BY_HOP.contains(&n)
                || (self.signer.is_some() && SIGNATURE_HEADERS.contains(&n))
                || (identity_encoding && name == header::ACCEPT_ENCODING)
            {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
        headers.insert(header::HOST, endpoint.host.clone());
        if let Some(signer) = &self.signer {
            signer.sign_for(&mut request, region).await?;
        }
        let request = request.map(Full::new);
        let started = Instant::now();
        let url = || endpoint.url.clone();
        let response = self.client.request(request).await.map_err(|e| {
            if e.is_connect() {
                UpstreamError::Connect {
                    endpoint: url(),
                    detail: error_chain(&e),
                }
            } else {
                UpstreamError::Io {
                    endpoint: url(),
                    detail: error_chain(&e),
                }
            }
        })?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| UpstreamError::Io {
                endpoint: url(),
                detail: error_chain(&e),
            })?
            .to_bytes();
        let mut headers = parts.headers;
        for h in HOP_BY_HOP {
            headers.remove(*h);
        }
        Ok(UpstreamResponse {
            status: parts.status,
            headers,
            body,
            elapsed: started.elapsed(),
            from_replica: None,
        })
    }

    /// The headers of a call ddbcache makes of its own (the readiness probe, stream reads): the
    /// operation's target and content type, and for an engine that is not signed for, a
    /// well-formed but unchecked signature, which such engines still want to see.
    pub(crate) fn own_headers(&self, op: Operation) -> HeaderMap {
        let prefix = if op.is_streams() {
            crate::protocol::operation::STREAMS_PREFIX
        } else {
            crate::protocol::operation::DYNAMODB_PREFIX
        };
        let mut headers = HeaderMap::new();
        if let Ok(target) = HeaderValue::from_str(&format!("{prefix}{}", op.name())) {
            headers.insert(HeaderName::from_static("x-amz-target"), target);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::protocol::CONTENT_TYPE),
        );
        if self.signer.is_none() {
            let auth = format!(
                "AWS4-HMAC-SHA256 Credential=ddbcache/20200101/{}/dynamodb/aws4_request, \
                 SignedHeaders=host;x-amz-date;x-amz-target, Signature=0",
                self.region
            );
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&auth).expect("a region name is a valid header value"),
            );
            headers.insert(
                HeaderName::from_static("x-amz-date"),
                HeaderValue::from_static("20200101T000000Z"),
            );
        }
        headers
    }

    /// Readiness: credentials load (when signing) and the upstream answers a cheap call with 2xx,
    /// within `limit`.
    pub(crate) async fn probe(&self, limit: Duration) -> Result<(), ProbeError> {
        if let Some(signer) = &self.signer {
            signer.credentials().await?;
        }
        let headers = self.own_headers(Operation::ListTables);
        let exchange = self.exchange(
            Operation::ListTables,
            &self.region,
            "/",
            &headers,
            Bytes::from_static(br#"{"Limit":1}"#),
            true,
        );
        let r = within(limit, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout {
                endpoint: self.endpoint().to_string(),
                timeout: limit,
            })??;
        if r.status.is_success() {
            Ok(())
        } else {
            Err(ProbeError::Refused {
                status: r.status,
                body: String::from_utf8_lossy(&r.body[..r.body.len().min(300)]).into_owned(),
            })
        }
    }
}

/// An error and its sources, `: `-separated, for logs and error messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fill_in_the_region() {
        let per_region =
            Route::parse("https://dynamodb.{region}.amazonaws.com", "us-east-1").unwrap();
        let e = per_region.endpoint("eu-west-3").unwrap();
        assert_eq!(
            e.uri("/").to_string(),
            "https://dynamodb.eu-west-3.amazonaws.com/"
        );
        assert_eq!(e.host, "dynamodb.eu-west-3.amazonaws.com");
        let fixed = Route::parse("http://127.0.0.1:4567", "us-east-1").unwrap();
        assert_eq!(fixed.endpoint("eu-west-3").unwrap().host, "127.0.0.1:4567");
        assert!(Route::parse("not a url {region}", "us-east-1").is_err());
    }

    #[test]
    fn endpoint_paths_join() {
        let e = Endpoint::parse("http://127.0.0.1:4567").unwrap();
        assert_eq!(e.uri("/").to_string(), "http://127.0.0.1:4567/");
        assert_eq!(e.host, "127.0.0.1:4567");
        let e = Endpoint::parse("https://example.com/prefix/").unwrap();
        assert_eq!(e.uri("/").to_string(), "https://example.com/prefix/");
    }
}
