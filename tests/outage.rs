//! When DynamoDB is not there: stale-if-error answers a failed read (or one the open breaker
//! refused) with an expired entry that nothing invalidated — no write through this sidecar or a
//! peer, no stream record — marked with its age; refresh-ahead keeps a hot key's entry fresh so it
//! never takes the miss. The cache keeps its time by a clock the tests move, so TTLs pass without
//! waiting; the upstream fails on cue (a relay's faults).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fleet::{create_streamed_table, put_direct, streams_config, until_stream_read};
use common::redis::RedisServer;
use common::*;
use ddbcache::cache::ManualClock;
use ddbcache::config::Config;

const WAIT: Duration = Duration::from_secs(20);
const THROTTLED: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Throughput exceeds the current capacity of your table or index."}"#;
const INTERNAL: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal Server Error"}"#;

struct Outage {
    relay: Relay,
    clock: Arc<ManualClock>,
    proxy: TestProxy,
    table: String,
    _engine: Engine,
}

/// dynalite behind a relay, ddbcache in front of the relay keeping time by a manual clock, and a
/// table with an item `a` at v1.
async fn outage(edit: impl FnOnce(&mut Config)) -> Outage {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let clock = ManualClock::new();
    let proxy = start_proxy_timed(&relay.endpoint, clock.clone(), |c| {
        c.cache.item.ttl = Duration::from_secs(10);
        c.cache.query.ttl = Duration::from_secs(10);
        edit(c);
    })
    .await;
    proxy.wait_ready().await;
    let table = unique_table("outage");
    create_table(&sdk_client(&proxy.endpoint).await, &table).await;
    put(&proxy, &table, "a", 1).await;
    Outage {
        relay,
        clock,
        proxy,
        table,
        _engine: engine,
    }
}

async fn put(proxy: &TestProxy, table: &str, pk: &str, version: u64) -> u16 {
    let body = format!(
        r#"{{"TableName":"{table}","Item":{{"pk":{{"S":"{pk}"}},"sk":{{"S":"s"}},"v":{{"N":"{version}"}}}}}}"#
    );
    dynamodb_post(
        &proxy.endpoint,
        Some("DynamoDB_20120810.PutItem"),
        &[],
        body,
    )
    .await
    .0
    .as_u16()
}

/// A GetItem: its status, `x-ddbcache`, `Age` (if any) and the item's `v`.
async fn get(proxy: &TestProxy, table: &str, consistent: bool) -> (u16, String, Option<u64>, u64) {
    let got = get_item(&proxy.endpoint, table, "a", Some(consistent)).await;
    (got.status, got.cache, got.age, got.version)
}

fn all(_: &str, _: &[u8]) -> bool {
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entries_answer_while_dynamodb_fails_marked_with_their_age() {
    let o = outage(|c| c.cache.stale_if_error = Duration::from_secs(60)).await;
    assert_eq!(get(&o.proxy, &o.table, false).await.1, "miss");
    assert_eq!(get(&o.proxy, &o.table, false).await.1, "hit");
    o.clock.advance(Duration::from_secs(15));
    // No answer at all: connections reset.
    o.relay.fault(all, Fault::Reset).await;
    assert_eq!(
        get(&o.proxy, &o.table, false).await,
        (200, "stale".to_string(), Some(15), 1)
    );
    // A 5xx, then throttling: the same.
    o.relay.clear_faults().await;
    o.relay.fault(all, Fault::Status(500, INTERNAL)).await;
    assert_eq!(get(&o.proxy, &o.table, false).await.1, "stale");
    o.relay.clear_faults().await;
    o.relay.fault(all, Fault::Status(400, THROTTLED)).await;
    o.clock.advance(Duration::from_secs(20));
    assert_eq!(
        get(&o.proxy, &o.table, false).await,
        (200, "stale".to_string(), Some(35), 1)
    );
    for (reason, count) in [
        ("unavailable", 1.0),
        ("server_error", 1.0),
        ("throttled", 1.0),
    ] {
        let series =
            format!("ddbcache_cache_stale_answers_total{{cache=\"item\",reason=\"{reason}\"}}");
        assert_eq!(o.proxy.metric(&series).await, count, "{reason}");
    }
    // Past the window (65s after the TTL ended), DynamoDB's own answer (throttling) passes.
    o.clock.advance(Duration::from_secs(40));
    assert_eq!(get(&o.proxy, &o.table, false).await.0, 400);
    // And once DynamoDB answers again, so does its answer.
    o.relay.clear_faults().await;
    assert_eq!(get(&o.proxy, &o.table, false).await.1, "miss");
}

/// Stale-if-error on, a breaker that opens after two failures in a row and stays open, and the
/// entry of `a` read and then expired.
async fn expired_behind_a_breaker() -> Outage {
    let o = outage(|c| {
        c.cache.stale_if_error = Duration::from_secs(60);
        c.upstream.breaker_failures = 2;
        c.upstream.breaker_open = Duration::from_secs(3600);
    })
    .await;
    get(&o.proxy, &o.table, false).await;
    o.clock.advance(Duration::from_secs(15));
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_breaker_open_expired_entries_answer_at_once_without_asking_dynamodb() {
    let o = expired_behind_a_breaker().await;
    o.relay.fault(all, Fault::Status(500, INTERNAL)).await;
    // Two failures in a row open the breaker, each answered stale.
    for _ in 0..2 {
        assert_eq!(get(&o.proxy, &o.table, false).await.1, "stale");
    }
    let sent = o.relay.sent("GetItem").await;
    // Now refused at once, never sent, and still answered with the entry.
    for _ in 0..3 {
        assert_eq!(
            get(&o.proxy, &o.table, false).await,
            (200, "stale".to_string(), Some(15), 1)
        );
    }
    assert_eq!(o.relay.sent("GetItem").await, sent);
    for (reason, count) in [("server_error", 2.0), ("breaker", 3.0)] {
        let series =
            format!("ddbcache_cache_stale_answers_total{{cache=\"item\",reason=\"{reason}\"}}");
        assert_eq!(o.proxy.metric(&series).await, count, "{reason}");
    }
    // A read with no entry to answer gets the breaker's retryable refusal.
    let other = format!(
        r#"{{"TableName":"{}","Key":{{"pk":{{"S":"b"}},"sk":{{"S":"s"}}}}}}"#,
        o.table
    );
    let (status, _, body) = dynamodb_post(
        &o.proxy.endpoint,
        Some("DynamoDB_20120810.GetItem"),
        &[],
        other,
    )
    .await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_waiting_on_a_hung_upstream_are_answered_stale_once_the_breaker_opens() {
    let o = expired_behind_a_breaker().await;
    // The expired entry's refill hangs; a second read of the key waits for that fill.
    let held = o
        .relay
        .hold_next(|target, body| {
            target.ends_with(".GetItem") && String::from_utf8_lossy(body).contains("\"a\"")
        })
        .await;
    let read = || {
        let (proxy, table) = (o.proxy.endpoint.clone(), o.table.clone());
        tokio::spawn(async move {
            let got = get_item(&proxy, &table, "a", None).await;
            (got.status, got.cache)
        })
    };
    let leader = read();
    held.reached.await.unwrap();
    let waiter = read();
    // Two reads of another key fail: the breaker opens.
    o.relay
        .fault(
            |_, body| String::from_utf8_lossy(body).contains("\"b\""),
            Fault::Status(500, INTERNAL),
        )
        .await;
    let other = format!(
        r#"{{"TableName":"{}","Key":{{"pk":{{"S":"b"}},"sk":{{"S":"s"}}}}}}"#,
        o.table
    );
    for _ in 0..2 {
        let (status, _, _) = dynamodb_post(
            &o.proxy.endpoint,
            Some("DynamoDB_20120810.GetItem"),
            &[],
            other.clone(),
        )
        .await;
        assert_eq!(status, 500);
    }
    // The hung read is given up and both are answered with the entry, while the held exchange
    // has still not been answered.
    for r in [leader, waiter] {
        let answered = tokio::time::timeout(WAIT, r)
            .await
            .expect("a read still waits on an upstream its breaker refuses")
            .unwrap();
        assert_eq!(answered, (200, "stale".to_string()));
    }
    tokio::time::timeout(WAIT, held.abandoned)
        .await
        .expect("the hung exchange is abandoned")
        .unwrap();
    drop(held.release);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stale_if_error_a_failed_read_fails_as_dynamodb_does() {
    let o = outage(|_| {}).await;
    get(&o.proxy, &o.table, false).await;
    o.clock.advance(Duration::from_secs(15));
    o.relay.fault(all, Fault::Status(500, INTERNAL)).await;
    assert_eq!(get(&o.proxy, &o.table, false).await.0, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_entry_is_never_answered_stale_even_when_its_write_failed() {
    let o = outage(|c| c.cache.stale_if_error = Duration::from_secs(60)).await;
    get(&o.proxy, &o.table, false).await;
    o.clock.advance(Duration::from_secs(15));
    o.relay.fault(all, Fault::Reset).await;
    // A write while DynamoDB is down: it may have landed, so the entry is dead.
    assert_eq!(put(&o.proxy, &o.table, "a", 2).await, 503);
    assert_eq!(get(&o.proxy, &o.table, false).await.0, 503);
    assert_eq!(
        o.proxy
            .metric("ddbcache_cache_stale_answers_total{cache=\"item\",reason=\"unavailable\"}")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_a_peer_s_write_invalidated_is_never_answered_stale() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let redis = RedisServer::start().await;
    let clock = ManualClock::new();
    let on_bus = |c: &mut Config| {
        c.fleet.redis_url = Some(redis.url());
        c.cache.item.ttl = Duration::from_secs(10);
        c.cache.stale_if_error = Duration::from_secs(60);
    };
    let reader = start_proxy_timed(&relay.endpoint, clock.clone(), on_bus).await;
    let writer = start_proxy_with(&relay.endpoint, on_bus).await;
    for p in [&reader, &writer] {
        p.wait_ready().await;
        p.wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 1.0)
            .await;
    }
    let table = unique_table("outage");
    create_table(&sdk_client(&writer.endpoint).await, &table).await;
    put(&writer, &table, "a", 1).await;
    // The write's message (and the table's) may reach the reader after a read started, and end
    // what that read keeps: read until an entry is kept.
    let kept = async { while get(&reader, &table, false).await.1 != "hit" {} };
    tokio::time::timeout(WAIT, kept)
        .await
        .expect("the reader keeps the item");
    let applied = "ddbcache_fleet_received_total{outcome=\"applied\"}";
    let received = reader.metric(applied).await;
    assert_eq!(put(&writer, &table, "a", 2).await, 200);
    reader.wait_metric(applied, WAIT, |v| v > received).await;
    clock.advance(Duration::from_secs(15));
    relay.fault(all, Fault::Reset).await;
    assert_eq!(get(&reader, &table, false).await.0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_a_stream_record_invalidated_is_never_answered_stale() {
    let engine = Engine::moto().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let direct = sdk_client(&engine.endpoint()).await;
    let table = create_streamed_table(&direct, "outage-stream").await;
    let clock = ManualClock::new();
    let proxy = start_proxy_timed(&relay.endpoint, clock.clone(), |c| {
        streams_config(&table)(c);
        c.cache.item.ttl = Duration::from_secs(10);
        c.cache.stale_if_error = Duration::from_secs(60);
    })
    .await;
    proxy.wait_ready().await;
    until_stream_read(&direct, &[&proxy], &table).await;
    put_direct(&direct, &table, "a", 1).await;
    let records = format!("ddbcache_stream_records_total{{table=\"{table}\"}}");
    let read = proxy.metric(&records).await;
    // `a` at v1 is held; until the stream's record of its write is read, and then it is not.
    while get(&proxy, &table, false).await.3 != 1 {}
    proxy.wait_metric(&records, WAIT, |v| v > read).await;
    get(&proxy, &table, false).await;
    assert_eq!(get(&proxy, &table, false).await.1, "hit");
    let read = proxy.metric(&records).await;
    put_direct(&direct, &table, "a", 2).await;
    proxy.wait_metric(&records, WAIT, |v| v > read).await;
    clock.advance(Duration::from_secs(15));
    relay.fault(all, Fault::Reset).await;
    assert_eq!(get(&proxy, &table, false).await.0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_read_is_never_answered_stale() {
    let o = outage(|c| c.cache.stale_if_error = Duration::from_secs(60)).await;
    get(&o.proxy, &o.table, false).await;
    o.clock.advance(Duration::from_secs(15));
    o.relay.fault(all, Fault::Reset).await;
    assert_eq!(get(&o.proxy, &o.table, true).await.0, 503);
    assert_eq!(get(&o.proxy, &o.table, false).await.1, "stale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_keeps_a_hot_key_a_hit_across_ttls_with_one_read_a_ttl() {
    let o = outage(|c| c.cache.refresh_ahead = 0.5).await;
    let gets = || async {
        o.relay
            .captured()
            .await
            .iter()
            .filter(|c| {
                c.headers
                    .get("x-amz-target")
                    .is_some_and(|t| t.to_str().unwrap().ends_with(".GetItem"))
            })
            .count()
    };
    assert_eq!(get(&o.proxy, &o.table, false).await.1, "miss");
    let refreshed = "ddbcache_cache_refreshes_total{cache=\"item\",outcome=\"stored\"}";
    // Six TTLs, a read every 0.6 of one: each read finds the entry in the last half of its TTL,
    // and refreshes it for the next.
    for round in 1..=10 {
        o.clock.advance(Duration::from_secs(6));
        assert_eq!(
            get(&o.proxy, &o.table, false).await.1,
            "hit",
            "round {round}"
        );
        o.proxy
            .wait_metric(refreshed, WAIT, |v| v == round as f64)
            .await;
    }
    assert_eq!(
        gets().await,
        11,
        "the first miss, then one refresh per read late in its TTL"
    );
    assert_eq!(
        o.proxy
            .metric("ddbcache_cache_hits_total{cache=\"item\"}")
            .await,
        10.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_are_bounded_by_their_budget_and_one_per_key() {
    let o = outage(|c| {
        c.cache.refresh_ahead = 0.5;
        c.cache.refresh_budget = 1;
    })
    .await;
    put(&o.proxy, &o.table, "b", 1).await;
    get(&o.proxy, &o.table, false).await;
    let body = format!(
        r#"{{"TableName":"{}","Key":{{"pk":{{"S":"b"}},"sk":{{"S":"s"}}}}}}"#,
        o.table
    );
    let get_b = || {
        dynamodb_post(
            &o.proxy.endpoint,
            Some("DynamoDB_20120810.GetItem"),
            &[],
            body.clone(),
        )
    };
    get_b().await;
    o.clock.advance(Duration::from_secs(6));
    // Both late in their TTL within one second: the budget allows one refresh.
    get(&o.proxy, &o.table, false).await;
    o.proxy
        .wait_metric(
            "ddbcache_cache_refreshes_total{cache=\"item\",outcome=\"stored\"}",
            WAIT,
            |v| v == 1.0,
        )
        .await;
    get_b().await;
    assert_eq!(
        o.proxy
            .metric("ddbcache_cache_refreshes_total{cache=\"item\",outcome=\"budget\"}")
            .await,
        1.0
    );
}
