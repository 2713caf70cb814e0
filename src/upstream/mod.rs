//! The upstream client: endpoint resolution (a configured URL, or AWS's own endpoints as the SDKs
//! choose them: [`endpoints`]), pooled keep-alive connections (HTTP or HTTPS with rustls), SigV4
//! re-signing, and a circuit breaker per endpoint ([`breaker`]). It forwards bytes; cache policy
//! lives elsewhere, and so does how long a client's request is waited for and where it goes when
//! its region's breaker is open (`proxy::forward`). ddbcache's own calls made here (stream reads,
//! the readiness probe) have no client waiting: they are bounded here.

pub mod amz_date;
pub(crate) mod breaker;
pub mod endpoints;
mod pool;
pub mod signing;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use smallvec::SmallVec;

use crate::config::{AccountEndpoints, UpstreamConfig, REGION_PLACEHOLDER};
use crate::protocol::region::Region;
use crate::protocol::{Operation, ProtocolError};
use crate::wait::within;
use endpoints::{EndpointError, Service};
use pool::{Failure, Pool};
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
    #[error("no upstream endpoint")]
    Endpoint(#[from] EndpointError),
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
            UpstreamError::Endpoint(_) => "endpoint",
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
            UpstreamError::Signing(_) | UpstreamError::Endpoint(_) => {
                ProtocolError::Internal(error_chain(self))
            }
            _ => ProtocolError::UpstreamUnavailable(self.to_string()),
        }
    }
}

impl From<UpstreamError> for ProtocolError {
    fn from(e: UpstreamError) -> ProtocolError {
        e.to_protocol()
    }
}

/// Whether a header is not forwarded, either way: hop-by-hop headers, and what a message gets
/// anew (host, length). A match on the name's text: a few comparisons of lengths and bytes, where
/// looking a name up in a list compares it with each.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "expect"
    )
}

/// Whether a header is the client's signature, which ddbcache replaces with its own when it
/// signs.
fn is_signature(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization" | "x-amz-date" | "x-amz-security-token" | "x-amz-content-sha256"
    )
}

/// Target prefix and content type of Kinesis Data Streams' JSON protocol.
const KINESIS_PREFIX: &str = "Kinesis_20131202.";
const KINESIS_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// The upstream: DynamoDB's endpoint, its DynamoDB Streams endpoint and the Kinesis Data Streams
/// endpoint, for each region.
pub struct Upstream {
    pool: Pool,
    endpoint: Route,
    streams_endpoint: Route,
    /// Kinesis Data Streams, for the Kinesis change source.
    kinesis_endpoint: Route,
    signer: Option<Signer>,
    /// `upstream.backstop`: how long a call no client waits for is waited for.
    backstop: Duration,
    /// `upstream.region`: the readiness probe's.
    region: String,
    /// Whether AWS's DynamoDB endpoints are the account's (`upstream.account_endpoints`, or as
    /// the SDKs decide).
    account_endpoints: AccountEndpoints,
    /// `upstream.account_id`: the account when the credentials name none.
    account_id: Option<String>,
}

/// Where a service's requests go: one URL, one per region (`{region}` in the URL), or AWS's.
enum Route {
    Fixed(Box<Endpoint>),
    PerRegion {
        template: String,
    },
    /// AWS's endpoint of the service in the request's region ([`endpoints`]).
    Aws(Service),
}

impl Route {
    /// `default_region` fills the template once, to check it makes URLs; no template: AWS's.
    fn parse(
        template: Option<String>,
        service: Service,
        default_region: &str,
    ) -> anyhow::Result<Route> {
        match template {
            None => Ok(Route::Aws(service)),
            Some(t) if t.contains(REGION_PLACEHOLDER) => {
                Endpoint::parse(&t.replace(REGION_PLACEHOLDER, default_region))?;
                Ok(Route::PerRegion { template: t })
            }
            Some(t) => Ok(Route::Fixed(Box::new(Endpoint::parse(&t)?))),
        }
    }

    /// The URL of `region`'s endpoint, which a circuit breaker is kept per: for AWS's endpoints,
    /// the regional one (the account-based endpoint of one account is one per region too).
    fn url(&self, region: &str) -> Cow<'_, str> {
        match self {
            Route::Fixed(e) => Cow::Borrowed(&e.url),
            Route::PerRegion { template } => {
                Cow::Owned(template.replace(REGION_PLACEHOLDER, region))
            }
            Route::Aws(service) => Cow::Owned(
                endpoints::resolve(*service, region, None, AccountEndpoints::Disabled)
                    .unwrap_or_else(|_| format!("{} in {region}", self.describe())),
            ),
        }
    }

    /// The endpoint of `region` (for AWS's DynamoDB endpoints, of `account` when that is
    /// known). Region names are letters, digits and hyphens (`Region`), so filling one in cannot
    /// change the URL's shape.
    fn endpoint(
        &self,
        region: &str,
        account: Option<&str>,
        mode: AccountEndpoints,
    ) -> Result<Cow<'_, Endpoint>, UpstreamError> {
        let url = match self {
            Route::Fixed(e) => return Ok(Cow::Borrowed(e.as_ref())),
            Route::PerRegion { template } => template.replace(REGION_PLACEHOLDER, region),
            Route::Aws(service) => endpoints::resolve(*service, region, account, mode)?,
        };
        Endpoint::parse(&url)
            .map(Cow::Owned)
            .map_err(|e| UpstreamError::Connect {
                endpoint: url,
                detail: e.to_string(),
            })
    }

    fn describe(&self) -> &str {
        match self {
            Route::Fixed(e) => &e.url,
            Route::PerRegion { template } => template,
            Route::Aws(Service::DynamoDb) => "AWS's DynamoDB endpoints",
            Route::Aws(Service::Streams) => "AWS's DynamoDB Streams endpoints",
            Route::Aws(Service::Kinesis) => "AWS's Kinesis endpoints",
        }
    }
}

#[derive(Clone)]
struct Endpoint {
    url: String,
    base: Uri,
    /// The URI of `/` (what every DynamoDB call posts to), built once.
    root: Uri,
    host: HeaderValue,
}

impl Endpoint {
    fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let base: Uri = url.parse()?;
        let authority = base
            .authority()
            .ok_or_else(|| anyhow::anyhow!("endpoint `{url}` has no host"))?;
        let mut endpoint = Endpoint {
            url: url.to_string(),
            host: HeaderValue::from_str(authority.as_str())?,
            root: base.clone(),
            base,
        };
        endpoint.root = endpoint.build_uri("/");
        Ok(endpoint)
    }

    fn uri(&self, path_and_query: &str) -> Uri {
        if path_and_query == "/" {
            return self.root.clone();
        }
        self.build_uri(path_and_query)
    }

    fn build_uri(&self, path_and_query: &str) -> Uri {
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
        let (signer, sdk_account_endpoints) = if config.sign {
            let (signer, mode) = Signer::from_default_chain(config.region.clone()).await?;
            (Some(signer), mode)
        } else {
            (None, None)
        };
        let mut upstream = Self::with_signer(config, signer)?;
        // As the SDKs decide it (`AWS_ACCOUNT_ID_ENDPOINT_MODE`, the profile), unless configured.
        if config.account_endpoints.is_none() {
            upstream.account_endpoints = sdk_account_endpoints.unwrap_or_default();
        }
        Ok(upstream)
    }

    /// The client for `config`, signing with `signer` when given; `upstream.account_endpoints`
    /// unset means `preferred` here.
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
        Ok(Upstream {
            pool: Pool::new(https, config.max_idle_per_host),
            endpoint: Route::parse(
                config.endpoint_template(),
                Service::DynamoDb,
                &config.region,
            )?,
            streams_endpoint: Route::parse(
                config.streams_endpoint_template(),
                Service::Streams,
                &config.region,
            )?,
            kinesis_endpoint: Route::parse(
                config.kinesis_endpoint_template(),
                Service::Kinesis,
                &config.region,
            )?,
            signer,
            backstop: config.backstop,
            region: config.region.clone(),
            account_endpoints: config.account_endpoints.unwrap_or_default(),
            account_id: config.account_id.clone(),
        })
    }

    /// The endpoint a request of `op` for `region` goes to now.
    async fn endpoint_for(
        &self,
        op: Operation,
        region: &str,
    ) -> Result<Cow<'_, Endpoint>, UpstreamError> {
        let route = self.route(op);
        let account = match route {
            Route::Aws(Service::DynamoDb)
                if self.account_endpoints != AccountEndpoints::Disabled =>
            {
                self.account().await?
            }
            _ => None,
        };
        route.endpoint(region, account.as_deref(), self.account_endpoints)
    }

    /// The account of account-based endpoints: the credentials' (when they name one), else
    /// `upstream.account_id`.
    async fn account(&self) -> Result<Option<String>, SigningError> {
        if let Some(signer) = &self.signer {
            if let Some(account) = signer.credentials().await?.account_id() {
                return Ok(Some(account.as_str().to_string()));
            }
        }
        Ok(self.account_id.clone())
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
        self.bounded(exchange).await
    }

    /// Waits for one of ddbcache's own calls `upstream.backstop` at most.
    async fn bounded(
        &self,
        call: impl std::future::Future<Output = Result<UpstreamResponse, UpstreamError>>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        within(self.backstop, call)
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
        let endpoint = self.endpoint_for(op, region).await?;
        let mut headers = HeaderMap::with_capacity(inbound.len());
        for (name, value) in inbound {
            if is_hop_by_hop(name)
                || (self.signer.is_some() && is_signature(name))
                || (identity_encoding && name == header::ACCEPT_ENCODING)
            {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
        self.request(&endpoint, "dynamodb", region, path_and_query, headers, body)
            .await
    }

    /// One Kinesis Data Streams call of ddbcache's own (the Kinesis change source): `action`
    /// (`ListShards`, `GetRecords`, ...) to the Kinesis endpoint of `region`, signed for Kinesis.
    pub(crate) async fn send_kinesis(
        &self,
        action: &str,
        region: &str,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let endpoint = self
            .kinesis_endpoint
            .endpoint(region, None, self.account_endpoints)?;
        let target = format!("{KINESIS_PREFIX}{action}");
        let headers = self.headers_of_own(&target, KINESIS_CONTENT_TYPE, "kinesis");
        self.bounded(self.request(&endpoint, "kinesis", region, "/", headers, body))
            .await
    }

    /// Sends a request with `headers` to `endpoint`, signed (when ddbcache signs) as a call of
    /// the service `signing_name` in `region`, and returns the whole answer, waiting for it as
    /// long as the caller does.
    async fn request(
        &self,
        endpoint: &Endpoint,
        signing_name: &str,
        region: &str,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let mut request = Request::post(endpoint.uri(path_and_query))
            .body(body)
            .expect("a POST with a valid URI is a valid request");
        *request.headers_mut() = headers;
        request
            .headers_mut()
            .insert(header::HOST, endpoint.host.clone());
        if let Some(signer) = &self.signer {
            signer.sign_as(&mut request, region, signing_name).await?;
        }
        let request = request.map(Full::new);
        let started = Instant::now();
        let (parts, body) = self
            .pool
            .exchange(&endpoint.url, &endpoint.base, request)
            .await
            .map_err(|failure| match failure {
                Failure::Connect(detail) => UpstreamError::Connect {
                    endpoint: endpoint.url.clone(),
                    detail,
                },
                Failure::Io(detail) => UpstreamError::Io {
                    endpoint: endpoint.url.clone(),
                    detail,
                },
            })?;
        let mut headers = parts.headers;
        // Found first, then removed: an answer carries two or three of these (its length,
        // `connection`) among a few headers, and each removal hashes its name.
        let found: SmallVec<[HeaderName; 4]> = headers
            .keys()
            .filter(|h| is_hop_by_hop(h))
            .cloned()
            .collect();
        for h in found {
            headers.remove(h);
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
        let target = format!("{prefix}{}", op.name());
        self.headers_of_own(&target, crate::protocol::CONTENT_TYPE, "dynamodb")
    }

    /// The headers of a call of ddbcache's own to `service` (its signing name).
    fn headers_of_own(&self, target: &str, content_type: &'static str, service: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(target) = HeaderValue::from_str(target) {
            headers.insert(HeaderName::from_static("x-amz-target"), target);
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if self.signer.is_none() {
            let auth = format!(
                "AWS4-HMAC-SHA256 Credential=ddbcache/20200101/{}/{service}/aws4_request, \
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
        let mode = AccountEndpoints::Preferred;
        let per_region = Route::parse(
            Some("https://dynamodb.{region}.amazonaws.com".into()),
            Service::DynamoDb,
            "us-east-1",
        )
        .unwrap();
        let e = per_region.endpoint("eu-west-3", None, mode).unwrap();
        assert_eq!(
            e.uri("/").to_string(),
            "https://dynamodb.eu-west-3.amazonaws.com/"
        );
        assert_eq!(e.host, "dynamodb.eu-west-3.amazonaws.com");
        let fixed = Route::parse(
            Some("http://127.0.0.1:4567".into()),
            Service::DynamoDb,
            "x-1",
        )
        .unwrap();
        let e = fixed
            .endpoint("eu-west-3", Some("111122223333"), mode)
            .unwrap();
        assert_eq!(e.host, "127.0.0.1:4567");
        assert!(Route::parse(Some("not a url {region}".into()), Service::DynamoDb, "x-1").is_err());
    }

    /// An upstream on AWS's endpoints, signing with credentials that name `account`.
    fn aws_upstream(account: Option<&str>, config: impl FnOnce(&mut UpstreamConfig)) -> Upstream {
        let mut c = UpstreamConfig::default();
        config(&mut c);
        let mut creds = aws_credential_types::Credentials::builder()
            .access_key_id("AKID")
            .secret_access_key("secret")
            .provider_name("test");
        if let Some(a) = account {
            creds = creds.account_id(a);
        }
        let provider =
            aws_credential_types::provider::SharedCredentialsProvider::new(creds.build());
        Upstream::with_signer(&c, Some(Signer::with_provider(provider, c.region.clone()))).unwrap()
    }

    async fn host(upstream: &Upstream, op: Operation, region: &str) -> Result<String, String> {
        match upstream.endpoint_for(op, region).await {
            Ok(e) => Ok(e.host.to_str().unwrap().to_string()),
            Err(e) => Err(error_chain(&e)),
        }
    }

    #[tokio::test]
    async fn dynamodb_requests_go_to_the_account_the_credentials_name() {
        let up = aws_upstream(Some("111122223333"), |_| {});
        assert_eq!(
            host(&up, Operation::GetItem, "eu-west-1").await.unwrap(),
            "111122223333.ddb.eu-west-1.amazonaws.com"
        );
        // DynamoDB Streams has no account-based endpoints.
        assert_eq!(
            host(&up, Operation::GetRecords, "eu-west-1").await.unwrap(),
            "streams.dynamodb.eu-west-1.amazonaws.com"
        );
        // The credentials' account wins over the configured one, which serves when they name none.
        let configured = |c: &mut UpstreamConfig| c.account_id = Some("444455556666".into());
        let up = aws_upstream(Some("111122223333"), configured);
        assert!(host(&up, Operation::Query, "us-east-1")
            .await
            .unwrap()
            .starts_with("111122223333."));
        let up = aws_upstream(None, configured);
        assert_eq!(
            host(&up, Operation::Query, "cn-north-1").await.unwrap(),
            "444455556666.ddb.cn-north-1.amazonaws.com.cn"
        );
        let up = aws_upstream(None, |_| {});
        assert_eq!(
            host(&up, Operation::Query, "us-east-1").await.unwrap(),
            "dynamodb.us-east-1.amazonaws.com"
        );
    }

    #[tokio::test]
    async fn the_mode_the_sdks_read_applies_unless_one_is_configured() {
        // The standard chain, from the environment: no other test of this binary reads these
        // variables.
        for (var, value) in [
            ("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled"),
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_ACCOUNT_ID", "111122223333"),
        ] {
            std::env::set_var(var, value);
        }
        let up = Upstream::new(&UpstreamConfig::default()).await.unwrap();
        assert_eq!(
            host(&up, Operation::GetItem, "us-east-1").await.unwrap(),
            "dynamodb.us-east-1.amazonaws.com"
        );
        let configured = UpstreamConfig {
            account_endpoints: Some(AccountEndpoints::Preferred),
            ..UpstreamConfig::default()
        };
        let up = Upstream::new(&configured).await.unwrap();
        assert_eq!(
            host(&up, Operation::GetItem, "us-east-1").await.unwrap(),
            "111122223333.ddb.us-east-1.amazonaws.com"
        );
    }

    #[tokio::test]
    async fn disabled_required_and_a_configured_endpoint() {
        let up = aws_upstream(Some("111122223333"), |c| {
            c.account_endpoints = Some(AccountEndpoints::Disabled)
        });
        assert_eq!(
            host(&up, Operation::PutItem, "us-east-1").await.unwrap(),
            "dynamodb.us-east-1.amazonaws.com"
        );
        let up = aws_upstream(None, |c| {
            c.account_endpoints = Some(AccountEndpoints::Required)
        });
        let refused = host(&up, Operation::PutItem, "us-east-1")
            .await
            .unwrap_err();
        assert!(refused.contains("no AWS account is known"), "{refused}");
        let err = up
            .endpoint_for(Operation::PutItem, "us-east-1")
            .await
            .err()
            .unwrap();
        assert_eq!((err.kind(), err.to_protocol().status()), ("endpoint", 500));
        // A configured endpoint is used as it is, as the SDKs use an endpoint override.
        let up = aws_upstream(Some("111122223333"), |c| {
            c.endpoint = Some("https://dynamodb.{region}.example.com".into());
            c.account_endpoints = Some(AccountEndpoints::Required);
        });
        assert_eq!(
            host(&up, Operation::PutItem, "us-east-2").await.unwrap(),
            "dynamodb.us-east-2.example.com"
        );
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
