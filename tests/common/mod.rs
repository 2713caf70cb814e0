//! Shared test harness: real upstream engines ([`engines`]), ddbcache started in-process on free
//! ports, the AWS SDK pointed at it, raw HTTP, `/metrics` readings, and a [`Relay`] that sits
//! between ddbcache and the engine to capture requests or hold a response back on cue.
#![allow(dead_code)]

pub mod differential;
pub mod engines;
pub mod fleet;
pub mod raw;
pub mod redis;
pub mod replica;
pub mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{oneshot, Mutex};

use ddbcache::config::Config;
use ddbcache::readiness::Readiness;
use ddbcache::server::Server;
use ddbcache::upstream::{Signer, Upstream};

pub use engines::Engine;
#[allow(unused_imports)]
pub use redis::RedisServer;

/// Static credentials the tests sign with.
pub const ACCESS_KEY: &str = "AKIDDDBCACHETEST";
pub const SECRET_KEY: &str = "ddbcache-test-secret";

/// ddbcache running in-process; shuts down when dropped.
pub struct TestProxy {
    pub endpoint: String,
    pub admin: String,
    pub readiness: Arc<Readiness>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestProxy {
    /// Sends the shutdown signal without waiting for the drain to finish.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits for `run` to return.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        self.task.take().expect("not yet shut down").await?
    }

    /// Waits until the proxy reports ready (the readiness probe reached the upstream).
    pub async fn wait_ready(&self) {
        self.wait_readiness(true).await;
    }

    /// Waits until readiness is `ready`, as `/readyz` reports it.
    pub async fn wait_readiness(&self, ready: bool) {
        let mut watch = self.readiness.watch();
        tokio::time::timeout(Duration::from_secs(30), watch.wait_for(|r| *r == ready))
            .await
            .unwrap_or_else(|_| panic!("readiness never became {ready}"))
            .expect("proxy state alive");
    }

    /// A counter or gauge from `/metrics`, e.g. `ddbcache_cache_hits_total{cache="item"}`;
    /// 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, _, body) = http_get(&format!("{}/metrics", self.admin)).await;
        let text = String::from_utf8(body.to_vec()).unwrap();
        text.lines()
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == series).then(|| value.parse().unwrap())
            })
            .unwrap_or(0.0)
    }
}

impl TestProxy {
    /// Waits (at most `limit`) until `series` satisfies `ok`; panics naming the last value.
    pub async fn wait_metric(&self, series: &str, limit: Duration, ok: impl Fn(f64) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let value = self.metric(series).await;
            if ok(value) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} is still {value} after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// The config tests start from: free loopback ports, the given upstream, no signing.
pub fn test_config(upstream: &str) -> Config {
    let mut config = Config::default();
    config.listen.addr = "127.0.0.1:0".parse().unwrap();
    config.listen.admin_addr = "127.0.0.1:0".parse().unwrap();
    config.upstream.endpoint = Some(upstream.to_string());
    config.upstream.sign = false;
    config.server.shutdown_grace = Duration::from_secs(10);
    config
}

pub async fn start_proxy(upstream: &str) -> TestProxy {
    start_proxy_with(upstream, |_| {}).await
}

/// Starts ddbcache with the test config, edited. With `upstream.sign = true` it signs with the
/// test's static credentials.
pub async fn start_proxy_with(upstream: &str, edit: impl FnOnce(&mut Config)) -> TestProxy {
    start_proxy_timed(upstream, ddbcache::cache::MonotonicClock::new(), edit).await
}

/// [`start_proxy_with`], the cache keeping its time by `clock` (a `ManualClock` the test moves
/// through TTLs).
pub async fn start_proxy_timed(
    upstream: &str,
    clock: Arc<dyn ddbcache::cache::Clock>,
    edit: impl FnOnce(&mut Config),
) -> TestProxy {
    let mut config = test_config(upstream);
    edit(&mut config);
    config.validate().expect("test config is valid");
    let signer = config.upstream.sign.then(|| {
        let creds =
            aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
        Signer::with_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(creds),
            config.upstream.region.clone(),
        )
    });
    let upstream = Arc::new(Upstream::with_signer(&config.upstream, signer).unwrap());
    let server = Server::bind_with_clock(config, upstream, clock)
        .await
        .unwrap();
    let endpoint = format!("http://{}", server.local_addr());
    let admin = format!("http://{}", server.admin_addr());
    let readiness = server.readiness();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    TestProxy {
        endpoint,
        admin,
        readiness,
        stop: Some(stop),
        task: Some(task),
    }
}

/// The Rust SDK pointed at `endpoint`, with static test credentials.
pub async fn sdk_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    sdk_client_with_attempts(endpoint, 3).await
}

pub async fn sdk_client_with_attempts(endpoint: &str, attempts: u32) -> aws_sdk_dynamodb::Client {
    sdk_client_with(endpoint, attempts, "us-east-1").await
}

/// The Rust SDK pointed at `endpoint`, signing for `region`.
pub async fn sdk_client_in(endpoint: &str, region: &str) -> aws_sdk_dynamodb::Client {
    sdk_client_with(endpoint, 3, region).await
}

async fn sdk_client_with(endpoint: &str, attempts: u32, region: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config(endpoint, attempts, region).await)
}

/// The Rust SDK pointed at `endpoint`, making one attempt and giving up on it after `timeout`
/// (as an application's deadline or cancelled context does): it then hangs up.
pub async fn sdk_client_giving_up_after(
    endpoint: &str,
    timeout: Duration,
) -> aws_sdk_dynamodb::Client {
    let conf = sdk_config(endpoint, 1, "us-east-1").await;
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(timeout)
        .build();
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&conf)
            .timeout_config(timeouts)
            .build(),
    )
}

/// Static test credentials, `attempts` attempts a call, and the SDK's own timeouts otherwise.
async fn sdk_config(endpoint: &str, attempts: u32, region: &str) -> aws_config::SdkConfig {
    let creds =
        aws_sdk_dynamodb::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(attempts)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .load()
        .await
}

/// A table name no other test uses.
pub fn unique_table(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a table with a string hash key `pk` and string range key `sk`, and waits until ACTIVE.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    create_table_request(client, name)
        .send()
        .await
        .expect("CreateTable");
    wait_active(client, name).await;
}

/// The CreateTable request of [`create_table`], to send (or extend) as it is.
pub fn create_table_request(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
) -> aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder {
    use aws_sdk_dynamodb::types::*;
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key_element("pk", KeyType::Hash))
        .key_schema(key_element("sk", KeyType::Range))
        .attribute_definitions(string_attribute("pk"))
        .attribute_definitions(string_attribute("sk"))
}

/// A key schema element: `name` as the HASH or RANGE key.
pub fn key_element(
    name: &str,
    kind: aws_sdk_dynamodb::types::KeyType,
) -> aws_sdk_dynamodb::types::KeySchemaElement {
    aws_sdk_dynamodb::types::KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .unwrap()
}

/// An attribute definition: `name` is a string.
pub fn string_attribute(name: &str) -> aws_sdk_dynamodb::types::AttributeDefinition {
    aws_sdk_dynamodb::types::AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
        .build()
        .unwrap()
}

/// Creates a table keyed by one attribute of the given type (`S`, `N`, `B`), and waits until ACTIVE.
pub async fn create_single_key_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    attribute: &str,
    kind: aws_sdk_dynamodb::types::ScalarAttributeType,
) {
    use aws_sdk_dynamodb::types::*;
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(attribute)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attribute)
                .attribute_type(kind)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("CreateTable");
    wait_active(client, name).await;
}

/// Polls DescribeTable until the table is ACTIVE (engines create tables asynchronously).
pub async fn wait_active(client: &aws_sdk_dynamodb::Client, name: &str) {
    for _ in 0..200 {
        let d = client.describe_table().table_name(name).send().await;
        if let Ok(d) = d {
            if d.table().and_then(|t| t.table_status())
                == Some(&aws_sdk_dynamodb::types::TableStatus::Active)
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("table {name} never became ACTIVE");
}

/// Deletes the table and creates it again, empty, with [`create_table`]'s key (pk, sk), once
/// DescribeTable says the name is free (deletion is asynchronous even in dynalite).
pub async fn recreate_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    client.delete_table().table_name(name).send().await.unwrap();
    wait_deleted(client, name).await;
    create_table(client, name).await;
}

/// Polls DescribeTable until the table is gone.
pub async fn wait_deleted(client: &aws_sdk_dynamodb::Client, name: &str) {
    for _ in 0..200 {
        match client.describe_table().table_name(name).send().await {
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return
            }
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    panic!("table {name} was never deleted");
}

pub fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

pub fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// An attribute value written out with map keys in order, so equal values give equal strings.
pub fn canon(v: &AttributeValue) -> String {
    match v {
        AttributeValue::M(m) => format!("M{:?}", canon_item(m)),
        AttributeValue::L(l) => format!("L{:?}", l.iter().map(canon).collect::<Vec<_>>()),
        other => format!("{other:?}"),
    }
}

/// An item in a form that compares equal exactly when DynamoDB would call the items equal
/// (attribute order ignored; set order kept, as the engines keep it).
pub fn canon_item(
    item: &HashMap<String, AttributeValue>,
) -> std::collections::BTreeMap<String, String> {
    item.iter().map(|(k, v)| (k.clone(), canon(v))).collect()
}

pub fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

/// Recomputes the SigV4 signature of a request as the upstream received it, from the signed
/// headers it names, with the test credentials for `region`, and returns the `Authorization`
/// value it should carry.
pub fn expected_authorization(captured: &Captured, upstream: &str, region: &str) -> String {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;

    let auth = captured.headers["authorization"].to_str().unwrap();
    let signed_names = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("SignedHeaders");
    let headers: Vec<(&str, &str)> = signed_names
        .split(';')
        .map(|name| (name, captured.headers[name].to_str().unwrap()))
        .collect();
    let date = captured.headers["x-amz-date"].to_str().unwrap();
    let time = ddbcache::upstream::amz_date::parse(date).expect("x-amz-date is a SigV4 timestamp");
    let identity =
        aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "t").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("dynamodb")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        format!("{upstream}{}", captured.path),
        headers.into_iter(),
        SignableBody::Bytes(&captured.body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let authorization = instructions
        .headers()
        .find(|(name, _)| *name == "authorization")
        .map(|(_, value)| value.to_string())
        .unwrap();
    authorization
}

// ---------------------------------------------------------------------------------------------
// Items with a `v` attribute, on the pk/sk tables of `create_table`

/// GetItem of (pk, sk): the item's `v`, or `None` when there is no such item.
pub async fn get_v(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    sk: &str,
) -> Option<String> {
    let out = client
        .get_item()
        .table_name(table)
        .set_key(Some(key(pk, sk)))
        .send()
        .await
        .expect("GetItem");
    out.item().map(|i| {
        i.get("v")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    })
}

/// PutItem of (pk, sk) with `v`.
pub async fn put_v(client: &aws_sdk_dynamodb::Client, table: &str, pk: &str, sk: &str, v: &str) {
    let mut item = key(pk, sk);
    item.insert("v".into(), s(v));
    client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .expect("PutItem");
}

/// [`put_v`] straight to the engine, around ddbcache (which then knows nothing of the write).
pub async fn put_v_direct(engine: &Engine, table: &str, pk: &str, sk: &str, v: &str) {
    put_v(&sdk_client(&engine.endpoint()).await, table, pk, sk, v).await;
}

/// Query of partition `pk`: the items' `v`s.
pub async fn query_vs(client: &aws_sdk_dynamodb::Client, table: &str, pk: &str) -> Vec<String> {
    let out = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :p")
        .expression_attribute_values(":p", s(pk))
        .send()
        .await
        .expect("Query");
    out.items()
        .iter()
        .map(|i| i["v"].as_s().unwrap().clone())
        .collect()
}

/// Scan of the table: the items' `v`s.
pub async fn scan_vs(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> std::collections::BTreeSet<String> {
    let out = client.scan().table_name(table).send().await.expect("Scan");
    out.items()
        .iter()
        .filter_map(|i| i.get("v")?.as_s().ok().cloned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn http_get(url: &str) -> (StatusCode, HeaderMap, Bytes) {
    let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    collect(client().request(req).await.expect("GET")).await
}

pub async fn http_post(url: &str) -> (StatusCode, HeaderMap, Bytes) {
    let req = Request::post(url).body(Full::new(Bytes::new())).unwrap();
    collect(client().request(req).await.expect("POST")).await
}

/// What a GetItem of (`pk`, "s") was answered: its status, `x-ddbcache` (empty when none),
/// `Age`, the item's `v` (0: none) and the body.
pub struct GotItem {
    pub status: u16,
    pub cache: String,
    pub age: Option<u64>,
    pub version: u64,
    pub body: Bytes,
}

/// A GetItem of (`pk`, "s") of `table` through `endpoint`, with `ConsistentRead` when given.
pub async fn get_item(endpoint: &str, table: &str, pk: &str, consistent: Option<bool>) -> GotItem {
    let consistent = consistent.map_or(String::new(), |c| format!(r#","ConsistentRead":{c}"#));
    let body = format!(
        r#"{{"TableName":"{table}","Key":{{"pk":{{"S":"{pk}"}},"sk":{{"S":"s"}}}}{consistent}}}"#
    );
    let (status, headers, body) =
        dynamodb_post(endpoint, Some("DynamoDB_20120810.GetItem"), &[], body).await;
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let version = json["Item"]["v"]["N"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    GotItem {
        status: status.as_u16(),
        cache: header("x-ddbcache").unwrap_or_default(),
        age: header("age").map(|a| a.parse().unwrap()),
        version,
        body,
    }
}

/// A DynamoDB-protocol POST with an optional target, as an SDK would send it (with a
/// placeholder signature); `headers` add to or replace the defaults.
pub async fn dynamodb_post(
    endpoint: &str,
    target: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::post(endpoint)
        .body(Full::new(body.into()))
        .unwrap();
    let defaults = [
        ("content-type", "application/x-amz-json-1.0"),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKID/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=0",
        ),
        ("x-amz-date", "20200101T000000Z"),
    ];
    let target = target.map(|t| ("x-amz-target", t));
    for (name, value) in defaults.iter().chain(&target).chain(headers) {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    collect(client().request(req).await.expect("POST")).await
}

async fn collect(resp: Response<Incoming>) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// Relay

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Path and query string.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Picks a request by its target and body.
type RequestMatcher = Box<dyn Fn(&str, &[u8]) -> bool + Send>;

/// Picks a request by anything of it (its signature, the path it was sent to).
type FaultMatcher = Box<dyn Fn(&Captured) -> bool + Send>;

impl Captured {
    /// The `X-Amz-Target` it carries, or "".
    pub fn target(&self) -> &str {
        self.headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Whether it is signed for `region` (its SigV4 credential scope names it).
    pub fn signed_for(&self, region: &str) -> bool {
        self.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|auth| auth.contains(&format!("/{region}/dynamodb/aws4_request")))
    }
}

struct Hold {
    matches: RequestMatcher,
    /// Hold the request before it reaches the engine (else: the answer after it).
    request: bool,
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
    landed: Option<oneshot::Sender<()>>,
    abandoned: Option<oneshot::Sender<()>>,
}

/// What the relay does to the requests a fault matches, until the faults are cleared.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Never answer, keeping the connection open (a blackholed upstream).
    Blackhole,
    /// Answer 200 with this body and its correct checksum, without asking the engine (an
    /// upstream, or something posing as one, answering garbage).
    Answer(&'static str),
    /// The engine's answer with one byte of its body changed and its checksum kept (damage in
    /// transit).
    CorruptBody,
    /// Close the connection without answering.
    Reset,
    /// Answer with this status and body, without asking the engine (a 5xx, a throttling error).
    Status(u16, &'static str),
}

type Faults = Arc<Mutex<Vec<(FaultMatcher, Fault)>>>;

/// An HTTP relay in front of an engine: records every request, can hold back the response to
/// one chosen request until the test releases it, and can answer matching requests with a
/// [`Fault`]. With it a test can make an upstream answer "arrive late" at exactly the moment it
/// wants, or arrive broken. A request sent to `/r/<region>/…` (an endpoint `{relay}/r/{region}`
/// tells the relay which region's endpoint each request went to) reaches the engine as `/…`:
/// moto answers at `/` only.
pub struct Relay {
    pub endpoint: String,
    captured: Arc<Mutex<Vec<Captured>>>,
    hold: Arc<Mutex<Option<Hold>>>,
    faults: Faults,
    task: tokio::task::JoinHandle<()>,
}

/// Rewrites a request body on its way to the engine (to imitate what the engine does not do).
pub type Rewrite = Arc<dyn Fn(Bytes) -> Bytes + Send + Sync>;

/// Handles to a held response: `reached` fires once the upstream has answered (and the answer is
/// being held); sending on `release` lets it go on to ddbcache; `abandoned` fires if ddbcache
/// closes the connection before the answer went out (it stopped waiting for it).
pub struct Held {
    pub reached: oneshot::Receiver<()>,
    pub release: oneshot::Sender<()>,
    pub abandoned: oneshot::Receiver<()>,
}

/// Handles to a held request: `reached` fires once it arrived (it has not reached the engine);
/// sending on `release` forwards it — even if ddbcache has given up on it and closed the
/// connection meanwhile, as a request already on the wire to DynamoDB would still be executed —
/// and `landed` fires once the engine has answered it.
pub struct HeldRequest {
    pub reached: oneshot::Receiver<()>,
    pub release: oneshot::Sender<()>,
    pub landed: oneshot::Receiver<()>,
}

impl Relay {
    pub async fn start(target: &str) -> Relay {
        Relay::start_rewriting(target, Arc::new(|body| body)).await
    }

    /// A relay that rewrites every request body with `rewrite` before the engine sees it.
    pub async fn start_rewriting(target: &str, rewrite: Rewrite) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let captured = Arc::new(Mutex::new(Vec::new()));
        let hold: Arc<Mutex<Option<Hold>>> = Arc::new(Mutex::new(None));
        let faults: Faults = Arc::new(Mutex::new(Vec::new()));
        let target = target.to_string();
        let (c, h, f) = (captured.clone(), hold.clone(), faults.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (c, h, f) = (c.clone(), h.clone(), f.clone());
                let (target, rw) = (target.clone(), rewrite.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (c, h, f) = (c.clone(), h.clone(), f.clone());
                    let (target, rw) = (target.clone(), rw.clone());
                    async move { relay(req, &target, c, h, f, rw).await }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Relay {
            endpoint,
            captured,
            hold,
            faults,
            task,
        }
    }

    /// Answers every request whose target and body satisfy `matches` with `fault`, until
    /// [`Relay::clear_faults`].
    pub async fn fault(
        &self,
        matches: impl Fn(&str, &[u8]) -> bool + Send + 'static,
        fault: Fault,
    ) {
        self.fault_where(move |c| matches(c.target(), &c.body), fault)
            .await;
    }

    /// Answers every request that satisfies `matches` with `fault`, until
    /// [`Relay::clear_faults`].
    pub async fn fault_where(
        &self,
        matches: impl Fn(&Captured) -> bool + Send + 'static,
        fault: Fault,
    ) {
        self.faults.lock().await.push((Box::new(matches), fault));
    }

    pub async fn clear_faults(&self) {
        self.faults.lock().await.clear();
    }

    pub async fn captured(&self) -> Vec<Captured> {
        self.captured.lock().await.clone()
    }

    /// How many requests of DynamoDB's `op` (`PutItem`) reached the relay.
    pub async fn sent(&self, op: &str) -> usize {
        let target = format!("DynamoDB_20120810.{op}");
        self.captured
            .lock()
            .await
            .iter()
            .filter(|c| c.target() == target)
            .count()
    }

    /// How many requests have come whose target ends with `op` and whose body holds `holds`.
    pub async fn seen(&self, op: &str, holds: &str) -> usize {
        self.captured
            .lock()
            .await
            .iter()
            .filter(|c| {
                c.headers
                    .get("x-amz-target")
                    .is_some_and(|t| t.as_bytes().ends_with(op.as_bytes()))
                    && String::from_utf8_lossy(&c.body).contains(holds)
            })
            .count()
    }

    /// Holds the response to the next request whose target and body satisfy `matches`.
    pub async fn hold_next(&self, matches: impl Fn(&str, &[u8]) -> bool + Send + 'static) -> Held {
        let (reached_tx, reached) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        let (abandoned_tx, abandoned) = oneshot::channel();
        *self.hold.lock().await = Some(Hold {
            matches: Box::new(matches),
            request: false,
            reached: reached_tx,
            release: release_rx,
            landed: None,
            abandoned: Some(abandoned_tx),
        });
        Held {
            reached,
            release,
            abandoned,
        }
    }

    /// Holds the next request whose target and body satisfy `matches` before it reaches the
    /// engine: the write it carries lands only when the test says so.
    pub async fn hold_request_next(
        &self,
        matches: impl Fn(&str, &[u8]) -> bool + Send + 'static,
    ) -> HeldRequest {
        let (reached_tx, reached) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        let (landed_tx, landed) = oneshot::channel();
        *self.hold.lock().await = Some(Hold {
            matches: Box::new(matches),
            request: true,
            reached: reached_tx,
            release: release_rx,
            landed: Some(landed_tx),
            abandoned: None,
        });
        HeldRequest {
            reached,
            release,
            landed,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends on its channel when dropped, unless emptied first.
struct OnDrop(Option<oneshot::Sender<()>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(fired) = self.0.take() {
            let _ = fired.send(());
        }
    }
}

/// A relay's own answer, with its correct checksum, as DynamoDB would send it.
fn answer(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let crc = crc32fast::hash(body.as_bytes()).to_string();
    response
        .headers_mut()
        .insert("x-amz-crc32", crc.parse().unwrap());
    response.headers_mut().insert(
        "content-type",
        "application/x-amz-json-1.0".parse().unwrap(),
    );
    response
}

/// The path a request sent to the relay at `path` takes to the engine: without a leading
/// `/r/<region>`.
fn engine_path(path: &str) -> &str {
    match path.strip_prefix("/r/") {
        Some(rest) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => path,
    }
}

async fn relay(
    req: Request<Incoming>,
    target: &str,
    captured: Arc<Mutex<Vec<Captured>>>,
    hold: Arc<Mutex<Option<Hold>>>,
    faults: Faults,
    rewrite: Rewrite,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let request = Captured {
        path: path.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    let op = request.target().to_string();
    let fault = faults
        .lock()
        .await
        .iter()
        .find(|(matches, _)| matches(&request))
        .map(|(_, fault)| fault.clone());
    captured.lock().await.push(request);
    match fault {
        Some(Fault::Blackhole) => std::future::pending::<()>().await,
        Some(Fault::Reset) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "fault: reset",
            ))
        }
        Some(Fault::Answer(body)) => return Ok(answer(StatusCode::OK, body)),
        Some(Fault::Status(status, body)) => {
            return Ok(answer(StatusCode::from_u16(status).unwrap(), body))
        }
        Some(Fault::CorruptBody) | None => {}
    }
    let mut held = {
        let mut slot = hold.lock().await;
        if slot.as_ref().is_some_and(|h| (h.matches)(&op, &body)) {
            slot.take()
        } else {
            None
        }
    };
    // Fires if this exchange is dropped before it answers: hyper drops it when ddbcache closes the
    // connection.
    let mut abandoned = OnDrop(held.as_mut().and_then(|h| h.abandoned.take()));
    let mut out = Request::post(format!("{target}{}", engine_path(&path)));
    for (k, v) in parts.headers.iter() {
        // The body may be rewritten: its length is the client's to set.
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    let request = out.body(Full::new(rewrite(body))).unwrap();
    // The exchange with the engine runs on its own: a request that reached the relay is executed
    // even if ddbcache hangs up meanwhile.
    let exchange = tokio::spawn(async move {
        let mut held = held;
        if let Some(h) = held.as_mut().filter(|h| h.request) {
            let _ = std::mem::replace(&mut h.reached, oneshot::channel().0).send(());
            let _ = (&mut h.release).await;
        }
        let resp = client()
            .request(request)
            .await
            .expect("engine answers the relay");
        let answer = collect(resp).await;
        if let Some(h) = held {
            if h.request {
                if let Some(landed) = h.landed {
                    let _ = landed.send(());
                }
            } else {
                let _ = h.reached.send(());
                let _ = h.release.await;
            }
        }
        answer
    });
    let (status, headers, mut body) = exchange.await.expect("the relay's exchange");
    abandoned.0 = None;
    if matches!(fault, Some(Fault::CorruptBody)) {
        let mut damaged = body.to_vec();
        let middle = damaged.len() / 2;
        damaged[middle] = if damaged[middle] == b'x' { b'y' } else { b'x' };
        body = Bytes::from(damaged);
    }
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    for (k, v) in headers.iter() {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            response.headers_mut().insert(k, v.clone());
        }
    }
    Ok(response)
}
