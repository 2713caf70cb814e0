//! When DynamoDB is down: the circuit breaker per upstream endpoint, and read failover to a
//! replica region while the breaker of a table's own region is open.
//!
//! The relay in front of the engine plays the outage (connections reset, 5xx answers, requests
//! never answered), and tells which requests got through it: a call the breaker refused never
//! reaches it. For failover, one moto engine stands for two regions (moto keeps tables per region,
//! chosen by the region a request is signed for): the same table in both, with different items,
//! and the relay failing only what is signed for the home region.

mod common;

use std::time::Duration;

use common::raw::*;
use common::*;
use ddbcache::config::TableOverrides;
use http::StatusCode;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(3600);

/// ddbcache in front of `relay`, with a breaker that opens after `failures` failures in a row and
/// stays open for `open`, counting a client's hang-up after `hang_up`.
async fn breaker_proxy(
    relay: &Relay,
    failures: u32,
    open: Duration,
    hang_up: Duration,
) -> TestProxy {
    let proxy = start_proxy_with(&relay.endpoint, |c| {
        c.upstream.breaker_failures = failures;
        c.upstream.breaker_open = open;
        c.upstream.breaker_hang_up = hang_up;
    })
    .await;
    proxy.wait_ready().await;
    proxy
}

fn op(name: &str, body: Value) -> Raw {
    Raw::op(&format!("DynamoDB_20120810.{name}"), &body.to_string())
}

fn key(pk: &str) -> Value {
    json!({"pk": {"S": pk}, "sk": {"S": "s"}})
}

fn get(table: &str, pk: &str) -> Raw {
    op("GetItem", json!({"TableName": table, "Key": key(pk)}))
}

fn put(table: &str, pk: &str, v: &str) -> Raw {
    let mut item = key(pk);
    item["v"] = json!({"S": v});
    op("PutItem", json!({"TableName": table, "Item": item}))
}

fn is(target: &'static str) -> impl Fn(&str, &[u8]) -> bool + Send + 'static {
    move |t: &str, _: &[u8]| t.ends_with(&format!(".{target}"))
}

/// `ddbcache_upstream_breaker_state` of `endpoint`: 0 closed, 1 open, 2 half-open.
fn state(endpoint: &str) -> String {
    format!("ddbcache_upstream_breaker_state{{endpoint=\"{endpoint}\"}}")
}

fn transitions(endpoint: &str, to: &str) -> String {
    format!("ddbcache_upstream_breaker_transitions_total{{endpoint=\"{endpoint}\",to=\"{to}\"}}")
}

/// Asserts `answer` is DynamoDB's retryable 503, given by the breaker without a call.
fn assert_refused_at_once(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        body["__type"],
        "com.amazonaws.dynamodb.v20120810#ServiceUnavailable"
    );
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("circuit breaker"), "{message}");
}

/// Sends `req` until one of them reaches the relay as an `op` (the breaker let a probe
/// through), and returns that one's answer.
async fn until_let_through(proxy: &TestProxy, relay: &Relay, req: &Raw, op: &str) -> Answer {
    let before = relay.sent(op).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = req.send(&proxy.endpoint).await;
        if relay.sent(op).await > before {
            return answer;
        }
        assert_refused_at_once(&answer);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the breaker let no call through"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An engine behind a relay behind ddbcache with a breaker ([`breaker_proxy`]'s arguments), and
/// a table with one item, read once through ddbcache: its answer cached, the table's key schema
/// known (no DescribeTable of ddbcache's own joins the calls a test counts).
struct Outage {
    engine: Engine,
    relay: Relay,
    proxy: TestProxy,
    table: String,
}

impl Outage {
    async fn start(failures: u32, open: Duration, hang_up: Duration) -> Outage {
        let engine = Engine::dynalite().await;
        let relay = Relay::start(&engine.endpoint()).await;
        let proxy = breaker_proxy(&relay, failures, open, hang_up).await;
        let client = sdk_client(&proxy.endpoint).await;
        let table = unique_table("breaker");
        create_table(&client, &table).await;
        put_v(&client, &table, "cached", "s", "1").await;
        let read = get(&table, "cached").send(&proxy.endpoint).await;
        assert_eq!(read.header("x-ddbcache"), Some("miss"));
        Outage {
            engine,
            relay,
            proxy,
            table,
        }
    }
}

#[tokio::test]
async fn the_breaker_opens_after_failures_in_a_row_and_then_answers_at_once_writes_included() {
    let Outage {
        engine,
        relay,
        proxy,
        table,
    } = Outage::start(3, LONG, LONG).await;
    let query = op(
        "Query",
        json!({"TableName": table, "KeyConditionExpression": "pk = :p",
               "ExpressionAttributeValues": {":p": {"S": "cached"}}}),
    );
    assert_eq!(
        query.send(&proxy.endpoint).await.header("x-ddbcache"),
        Some("miss")
    );

    relay.fault(is("GetItem"), Fault::Reset).await;
    let sent = relay.sent("GetItem").await;
    for i in 0..3 {
        let failed = get(&table, &format!("k{i}")).send(&proxy.endpoint).await;
        assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(relay.sent("GetItem").await, sent + 3);
    assert_eq!(proxy.metric(&state(&relay.endpoint)).await, 1.0);
    assert_eq!(
        proxy.metric(&transitions(&relay.endpoint, "open")).await,
        1.0
    );

    // Open: answered at once, nothing sent — reads and writes alike.
    for i in 3..8 {
        assert_refused_at_once(&get(&table, &format!("k{i}")).send(&proxy.endpoint).await);
    }
    assert_eq!(relay.sent("GetItem").await, sent + 3, "no call while open");
    let puts = relay.sent("PutItem").await;
    assert_refused_at_once(&put(&table, "w", "2").send(&proxy.endpoint).await);
    assert_eq!(
        relay.sent("PutItem").await,
        puts,
        "the write was never sent"
    );
    let direct = sdk_client(&engine.endpoint()).await;
    assert_eq!(get_v(&direct, &table, "w", "s").await, None);
    assert_eq!(
        proxy
            .metric("ddbcache_upstream_errors_total{kind=\"breaker_open\"}")
            .await,
        6.0
    );

    // Hits need no upstream; and the refused write, never sent, invalidated nothing (a write to
    // the table would have dropped its Query pages).
    for read in [get(&table, "cached"), query] {
        let hit = read.send(&proxy.endpoint).await;
        assert_eq!(hit.status, StatusCode::OK);
        assert_eq!(hit.header("x-ddbcache"), Some("hit"));
    }
}

#[tokio::test]
async fn answers_5xx_are_failures_and_throttling_is_not() {
    let Outage {
        engine: _engine,
        relay,
        proxy,
        table,
    } = Outage::start(2, LONG, LONG).await;

    relay
        .fault(
            is("GetItem"),
            Fault::Status(
                400,
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}"#,
            ),
        )
        .await;
    for i in 0..4 {
        let throttled = get(&table, &format!("t{i}")).send(&proxy.endpoint).await;
        assert_eq!(throttled.status, StatusCode::BAD_REQUEST, "passed on");
    }
    assert_eq!(
        proxy.metric(&transitions(&relay.endpoint, "open")).await,
        0.0,
        "throttling is the endpoint answering"
    );

    relay.clear_faults().await;
    relay
        .fault(
            is("GetItem"),
            Fault::Status(
                500,
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}"#,
            ),
        )
        .await;
    for i in 0..2 {
        let failed = get(&table, &format!("f{i}")).send(&proxy.endpoint).await;
        assert_eq!(
            failed.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "passed on"
        );
    }
    assert_eq!(proxy.metric(&state(&relay.endpoint)).await, 1.0);
    let sent = relay.sent("GetItem").await;
    assert_refused_at_once(&get(&table, "f2").send(&proxy.endpoint).await);
    assert_eq!(relay.sent("GetItem").await, sent);
}

#[tokio::test]
async fn a_half_open_probe_opens_it_again_while_the_upstream_fails_and_closes_it_once_back() {
    let Outage {
        engine: _engine,
        relay,
        proxy,
        table,
    } = Outage::start(2, Duration::from_millis(200), LONG).await;
    let endpoint = relay.endpoint.clone();

    relay.fault(is("GetItem"), Fault::Reset).await;
    for i in 0..2 {
        get(&table, &format!("k{i}")).send(&proxy.endpoint).await;
    }
    assert_eq!(proxy.metric(&transitions(&endpoint, "open")).await, 1.0);

    // Once `breaker_open` has passed, one call goes through; it fails: open again.
    let sent = relay.sent("GetItem").await;
    let probe = until_let_through(&proxy, &relay, &get(&table, "p1"), "GetItem").await;
    assert_eq!(probe.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(relay.sent("GetItem").await, sent + 1, "one probe");
    assert_eq!(
        proxy.metric(&transitions(&endpoint, "half_open")).await,
        1.0
    );
    assert_eq!(proxy.metric(&transitions(&endpoint, "open")).await, 2.0);
    assert_eq!(proxy.metric(&state(&endpoint)).await, 1.0);

    // The upstream is back. While the next probe is out, every other call is still refused.
    relay.clear_faults().await;
    let held = relay.hold_next(is("GetItem")).await;
    let probe = tokio::spawn({
        let proxy_endpoint = proxy.endpoint.clone();
        let req = get(&table, "probe");
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let answer = req.send(&proxy_endpoint).await;
                if answer.status == StatusCode::OK {
                    return answer;
                }
                assert!(tokio::time::Instant::now() < deadline, "no probe went");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    held.reached.await.unwrap();
    assert_eq!(proxy.metric(&state(&endpoint)).await, 2.0, "half-open");
    let sent = relay.sent("GetItem").await;
    assert_refused_at_once(&get(&table, "p2").send(&proxy.endpoint).await);
    assert_eq!(relay.sent("GetItem").await, sent);
    held.release.send(()).unwrap();
    let answered = probe.await.unwrap();
    assert_eq!(answered.header("x-ddbcache"), Some("miss"));
    assert_eq!(proxy.metric(&state(&endpoint)).await, 0.0);
    assert_eq!(proxy.metric(&transitions(&endpoint, "closed")).await, 1.0);
    let after = get(&table, "p3").send(&proxy.endpoint).await;
    assert_eq!(after.status, StatusCode::OK);
}

#[tokio::test]
async fn clients_that_hang_up_on_a_hung_upstream_open_the_breaker() {
    let Outage {
        engine: _engine,
        relay,
        proxy,
        table,
    } = Outage::start(2, LONG, Duration::ZERO).await;

    relay.fault(is("GetItem"), Fault::Blackhole).await;
    let impatient = sdk_client_giving_up_after(&proxy.endpoint, Duration::from_millis(300)).await;
    for pk in ["h1", "h2"] {
        let gave_up = impatient
            .get_item()
            .table_name(&table)
            .set_key(Some(common::key(pk, "s")))
            .send()
            .await;
        assert!(gave_up.is_err());
    }
    // No call failed by itself: the breaker counts the hang-ups, as ddbcache notices them.
    proxy
        .wait_metric(&state(&relay.endpoint), Duration::from_secs(10), |s| {
            s == 1.0
        })
        .await;
    let sent = relay.sent("GetItem").await;
    assert_refused_at_once(&get(&table, "h3").send(&proxy.endpoint).await);
    assert_eq!(relay.sent("GetItem").await, sent);
}

// ---------------------------------------------------------------------------------------------
// Read failover

const HOME: &str = "us-east-1";
const REPLICA: &str = "us-west-2";
/// Fails over, answers not stored.
const ORDERS: &str = "orders";
/// Fails over, answers stored.
const PRICES: &str = "prices";
/// Does not fail over.
const LEDGER: &str = "ledger";
/// Fails over to the replicas its DescribeTable lists.
const LEARNED: &str = "learned";

/// ddbcache's own DescribeTable of `learned` in the home region, as DynamoDB answers it for a
/// global table with an active replica in us-west-2 (moto keeps no replicas).
const LEARNED_DESCRIPTION: &str = r#"{"Table":{"TableName":"learned","TableStatus":"ACTIVE","KeySchema":[{"AttributeName":"pk","KeyType":"HASH"},{"AttributeName":"sk","KeyType":"RANGE"}],"AttributeDefinitions":[{"AttributeName":"pk","AttributeType":"S"},{"AttributeName":"sk","AttributeType":"S"}],"Replicas":[{"RegionName":"eu-west-1","ReplicaStatus":"CREATING"},{"RegionName":"us-west-2","ReplicaStatus":"ACTIVE"}]}}"#;

fn failover_table(replicas: &[&str], store: bool) -> TableOverrides {
    TableOverrides {
        failover: true,
        replicas: replicas.iter().map(|r| r.to_string()).collect(),
        store_failover: store,
        ..TableOverrides::default()
    }
}

fn item_v(answer: &Answer) -> Option<String> {
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    body["Item"]["v"]["S"].as_str().map(str::to_string)
}

/// Requests the relay saw signed for `region`.
async fn signed_for(relay: &Relay, region: &str) -> Vec<Captured> {
    let all = relay.captured().await;
    all.into_iter().filter(|c| c.signed_for(region)).collect()
}

/// One moto engine standing for two regions, behind a relay: `tables` in both, each with items
/// `a` and `b` whose `v` names the region that holds them.
async fn two_regions(tables: &[&str]) -> (Engine, Relay) {
    let engine = Engine::moto().await;
    let relay = Relay::start(&engine.endpoint()).await;
    for region in [HOME, REPLICA] {
        let direct = sdk_client_in(&engine.endpoint(), region).await;
        for table in tables {
            create_table(&direct, table).await;
            put_v(&direct, table, "a", "s", region).await;
            put_v(&direct, table, "b", "s", region).await;
        }
    }
    (engine, relay)
}

/// ddbcache sending each request to its region's endpoint (`{relay}/r/{region}`), signed for
/// it, with a breaker that opens at the first failure, and `tables`' settings.
async fn failover_proxy(relay: &Relay, tables: Vec<(&str, TableOverrides)>) -> TestProxy {
    let proxy = start_proxy_with(&relay.endpoint, |c| {
        c.upstream.sign = true;
        c.upstream.endpoint = Some(format!("{}/r/{{region}}", relay.endpoint));
        c.upstream.breaker_failures = 1;
        c.upstream.breaker_open = LONG;
        for (name, settings) in tables {
            c.tables.insert(name.to_string(), settings);
        }
    })
    .await;
    proxy.wait_ready().await;
    proxy
}

#[tokio::test]
async fn eventually_consistent_reads_fail_over_to_a_replica_region_signed_for_it() {
    let (_engine, relay) = two_regions(&[ORDERS, PRICES, LEDGER, LEARNED]).await;
    relay
        .fault_where(
            |c| {
                c.signed_for(HOME)
                    && c.target().ends_with(".DescribeTable")
                    && c.body.windows(9).any(|w| w == b"\"learned\"")
            },
            Fault::Answer(LEARNED_DESCRIPTION),
        )
        .await;
    let proxy = failover_proxy(
        &relay,
        vec![
            (ORDERS, failover_table(&[REPLICA], false)),
            (PRICES, failover_table(&["eu-west-1", REPLICA], true)),
            (LEDGER, TableOverrides::default()),
            (LEARNED, failover_table(&[], false)),
        ],
    )
    .await;
    // ddbcache learns the tables' key schemas (and `learned`'s replicas) while the home region
    // answers.
    for table in [ORDERS, PRICES, LEDGER, LEARNED] {
        let warm = get(table, "warm-up").send(&proxy.endpoint).await;
        assert_eq!(warm.status, StatusCode::OK, "{:?}", warm.body);
    }
    // eu-west-1's endpoint fails too: `prices` prefers it, and must skip it once its breaker is
    // open.
    relay
        .fault_where(
            |c| c.signed_for(HOME) || c.signed_for("eu-west-1"),
            Fault::Reset,
        )
        .await;
    let down = get(LEDGER, "a").send(&proxy.endpoint).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    let home_endpoint = format!("{}/r/{HOME}", relay.endpoint);
    assert_eq!(proxy.metric(&state(&home_endpoint)).await, 1.0);

    // A GetItem: answered by the replica region, signed for it, marked, not stored.
    let before = signed_for(&relay, REPLICA).await.len();
    for _ in 0..2 {
        let answer = get(ORDERS, "a").send(&proxy.endpoint).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        assert_eq!(item_v(&answer).as_deref(), Some(REPLICA));
        assert_eq!(answer.header("x-ddbcache-failover"), Some(REPLICA));
        assert_eq!(answer.header("x-ddbcache"), Some("miss"), "never stored");
    }
    let sent = signed_for(&relay, REPLICA).await;
    assert_eq!(sent.len(), before + 2);
    let last = sent.last().unwrap();
    assert_eq!(
        last.path,
        format!("/r/{REPLICA}/"),
        "the replica's endpoint"
    );
    assert_eq!(
        last.headers["authorization"].to_str().unwrap(),
        expected_authorization(last, &relay.endpoint, REPLICA),
        "signed for the replica region"
    );
    assert_eq!(
        proxy
            .metric("ddbcache_cache_unstored_total{cache=\"item\",reason=\"failover\"}")
            .await,
        2.0
    );

    // Query, Scan and BatchGetItem too.
    let query = op(
        "Query",
        json!({"TableName": ORDERS, "KeyConditionExpression": "pk = :p",
               "ExpressionAttributeValues": {":p": {"S": "a"}}}),
    );
    let scan = op("Scan", json!({"TableName": ORDERS}));
    let batch = op(
        "BatchGetItem",
        json!({"RequestItems": {ORDERS: {"Keys": [key("a"), key("b")]}}}),
    );
    for (req, items) in [(&query, "Items"), (&scan, "Items")] {
        let answer = req.send(&proxy.endpoint).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        assert_eq!(answer.header("x-ddbcache-failover"), Some(REPLICA));
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        let vs: Vec<&str> = body[items]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["v"]["S"].as_str().unwrap())
            .collect();
        assert!(!vs.is_empty() && vs.iter().all(|v| *v == REPLICA), "{vs:?}");
    }
    let answer = batch.send(&proxy.endpoint).await;
    assert_eq!(answer.header("x-ddbcache-failover"), Some(REPLICA));
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body["Responses"][ORDERS].as_array().unwrap().len(), 2);
    let again = get(ORDERS, "b").send(&proxy.endpoint).await;
    assert_eq!(
        again.header("x-ddbcache"),
        Some("miss"),
        "the batch stored nothing"
    );
    assert_eq!(again.header("x-ddbcache-failover"), Some(REPLICA));

    // A table that stores failover answers. Its first choice, eu-west-1, fails too: that read
    // gets the 503 (one replica is tried per read), and eu-west-1's breaker opens; the next read
    // goes to us-west-2, and fills; the one after hits.
    let first = get(PRICES, "a").send(&proxy.endpoint).await;
    assert_refused_at_once(&first);
    let eu_failed =
        "ddbcache_upstream_failover_reads_total{outcome=\"failed\",region=\"eu-west-1\"}";
    assert_eq!(proxy.metric(eu_failed).await, 1.0);
    let first = get(PRICES, "a").send(&proxy.endpoint).await;
    assert_eq!(item_v(&first).as_deref(), Some(REPLICA));
    assert_eq!(first.header("x-ddbcache-failover"), Some(REPLICA));
    let second = get(PRICES, "a").send(&proxy.endpoint).await;
    assert_eq!(second.header("x-ddbcache"), Some("hit"));
    assert_eq!(item_v(&second).as_deref(), Some(REPLICA));
    // A BatchGetItem answered partly from the cache keeps the mark of the part read elsewhere.
    let mixed = op(
        "BatchGetItem",
        json!({"RequestItems": {PRICES: {"Keys": [key("a"), key("b")]}}}),
    );
    let answer = mixed.send(&proxy.endpoint).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-ddbcache-failover"), Some(REPLICA));

    // Replica regions learned from DescribeTable.
    let learned = get(LEARNED, "a").send(&proxy.endpoint).await;
    assert_eq!(item_v(&learned).as_deref(), Some(REPLICA));
    assert_eq!(learned.header("x-ddbcache-failover"), Some(REPLICA));

    assert!(
        proxy
            .metric(&format!(
                "ddbcache_upstream_failover_reads_total{{outcome=\"answered\",region=\"{REPLICA}\"}}"
            ))
            .await
            >= 9.0
    );
}

#[tokio::test]
async fn consistent_reads_writes_and_tables_without_failover_never_go_to_a_replica() {
    let (engine, relay) = two_regions(&[ORDERS, LEDGER]).await;
    let proxy = failover_proxy(&relay, vec![(ORDERS, failover_table(&[REPLICA], true))]).await;
    relay
        .fault_where(|c| c.signed_for(HOME), Fault::Reset)
        .await;
    let down = get(ORDERS, "x").send(&proxy.endpoint).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);

    let consistent = op(
        "GetItem",
        json!({"TableName": ORDERS, "Key": key("a"), "ConsistentRead": true}),
    );
    let consistent_batch = op(
        "BatchGetItem",
        json!({"RequestItems": {ORDERS: {"Keys": [key("a")], "ConsistentRead": true}}}),
    );
    let update = op(
        "UpdateItem",
        json!({"TableName": ORDERS, "Key": key("a"), "UpdateExpression": "SET v = :v",
               "ExpressionAttributeValues": {":v": {"S": "changed"}}}),
    );
    for req in [
        consistent,
        consistent_batch,
        put(ORDERS, "a", "changed"),
        update,
        get(LEDGER, "a"),
    ] {
        let answer = req.send(&proxy.endpoint).await;
        assert_refused_at_once(&answer);
        assert_eq!(answer.header("x-ddbcache-failover"), None);
    }
    assert!(
        signed_for(&relay, REPLICA).await.is_empty(),
        "nothing went to the replica region"
    );
    let direct = sdk_client_in(&engine.endpoint(), REPLICA).await;
    assert_eq!(
        get_v(&direct, ORDERS, "a", "s").await.as_deref(),
        Some(REPLICA)
    );
    // The eventually consistent read of the same item does.
    let answer = get(ORDERS, "a").send(&proxy.endpoint).await;
    assert_eq!(answer.header("x-ddbcache-failover"), Some(REPLICA));
}
