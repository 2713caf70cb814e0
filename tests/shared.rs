//! The shared tier, end to end: several ddbcache servers sharing one Redis (real redis-server on
//! a free port) in front of one engine. What one sidecar read is a hit through another, and none
//! ever returns an older version than a write acknowledged anywhere: each coherence rule of
//! `fleet::shared` has a test here that fails without it.

mod common;

use std::time::{Duration, Instant};

use common::fleet::put_direct;
use common::replica::LaggingReplica;
use common::*;
use ddbcache::config::Config;

const WAIT: Duration = Duration::from_secs(20);

/// Starts `n` sidecars on one Redis with the shared tier on, in front of `upstreams[i % len]`,
/// and waits until each is subscribed and connected to the tier.
async fn start_tier(
    upstreams: &[&str],
    redis_url: &str,
    n: usize,
    edit: impl Fn(&mut Config),
) -> Vec<TestProxy> {
    let mut proxies = Vec::new();
    for i in 0..n {
        proxies.push(start_sidecar(upstreams[i % upstreams.len()], redis_url, &edit).await);
    }
    proxies
}

async fn start_sidecar(upstream: &str, redis_url: &str, edit: impl Fn(&mut Config)) -> TestProxy {
    let proxy = start_proxy_with(upstream, |c| {
        c.fleet.redis_url = Some(redis_url.to_string());
        // A debug build on a loaded 2-core machine: the link's and the tier's budgets are the
        // machine's, not production's (a link that flaps drops every shared entry, rightly).
        c.fleet.ping_interval = Duration::from_millis(200);
        c.fleet.ping_timeout = Duration::from_secs(3);
        c.fleet.publish_timeout = Duration::from_secs(2);
        c.fleet.shared.enabled = true;
        c.fleet.shared.timeout = Duration::from_secs(2);
        edit(c);
    })
    .await;
    proxy.wait_ready().await;
    proxy
        .wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 1.0)
        .await;
    proxy
        .wait_metric("ddbcache_shared_up", WAIT, |v| v == 1.0)
        .await;
    proxy
}

/// GetItem of (`pk`, "s") through a sidecar: the item's `v` (0: none) and the `x-ddbcache`
/// header.
async fn get(proxy: &TestProxy, table: &str, pk: &str) -> (u64, String) {
    let got = get_item(&proxy.endpoint, table, pk, None).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    (got.version, got.cache)
}

/// PutItem of (`pk`, "s", v) through a sidecar; its HTTP status.
async fn put(proxy: &TestProxy, table: &str, pk: &str, version: u64) -> u16 {
    let body = format!(
        r#"{{"TableName":"{table}","Item":{{"pk":{{"S":"{pk}"}},"sk":{{"S":"s"}},"v":{{"N":"{version}"}}}}}}"#
    );
    let (status, _, _) = dynamodb_post(
        &proxy.endpoint,
        Some("DynamoDB_20120810.PutItem"),
        &[],
        body,
    )
    .await;
    status.as_u16()
}

/// Creates a table through `proxy`.
async fn table_through(proxy: &TestProxy, prefix: &str) -> String {
    let table = unique_table(prefix);
    create_table(&sdk_client(&proxy.endpoint).await, &table).await;
    table
}

/// Reads `pk` through `proxy` until its answer is stored in the shared tier (the fill is not
/// waited for by the read that made it).
async fn until_shared(proxy: &TestProxy, table: &str, pk: &str) {
    let before = proxy
        .metric("ddbcache_shared_fills_total{outcome=\"stored\"}")
        .await;
    let deadline = Instant::now() + WAIT;
    loop {
        get(proxy, table, pk).await;
        let stored = proxy
            .metric("ddbcache_shared_fills_total{outcome=\"stored\"}")
            .await;
        if stored > before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pk} never stored in the shared tier"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn is_get_item(target: &str, _: &[u8]) -> bool {
    target.ends_with(".GetItem")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_one_sidecar_read_is_a_hit_through_every_other() {
    let engine = Engine::dynalite().await;
    let redis = RedisServer::start().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxies = start_tier(&[&relay.endpoint], &redis.url(), 3, |_| {}).await;
    let table = table_through(&proxies[0], "shared-basic").await;
    assert_eq!(put(&proxies[0], &table, "a", 1).await, 200);
    until_shared(&proxies[0], &table, "a").await;
    let reads_before = relay
        .captured()
        .await
        .iter()
        .filter(|c| is_get_item(&target_of(c), &c.body))
        .count();
    for p in &proxies[1..] {
        assert_eq!(get(p, &table, "a").await, (1, "hit-shared".to_string()));
        // Kept there too: the next read is that sidecar's own hit.
        assert_eq!(get(p, &table, "a").await, (1, "hit".to_string()));
        assert_eq!(
            p.metric("ddbcache_cache_shared_hits_total{cache=\"item\"}")
                .await,
            1.0
        );
    }
    let reads_after = relay
        .captured()
        .await
        .iter()
        .filter(|c| is_get_item(&target_of(c), &c.body))
        .count();
    assert_eq!(
        reads_after, reads_before,
        "no sidecar read the item upstream again"
    );
}

/// The `X-Amz-Target` of a captured request.
fn target_of(c: &Captured) -> String {
    c.headers
        .get("x-amz-target")
        .map(|t| t.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_ends_the_shared_entry_before_it_is_answered() {
    let engine = Engine::dynalite().await;
    let redis = RedisServer::start().await;
    let proxies = start_tier(&[&engine.endpoint()], &redis.url(), 2, |_| {}).await;
    let (writer, reader) = (&proxies[0], &proxies[1]);
    let table = table_through(writer, "shared-write").await;
    assert_eq!(put(writer, &table, "a", 1).await, 200);
    until_shared(reader, &table, "a").await;
    for version in 2..=4 {
        assert_eq!(put(writer, &table, "a", version).await, 200);
        // A sidecar that starts now has nothing of its own: only the shared tier could answer
        // it the older version, and the write's new versions reached Redis before its answer.
        let fresh = start_sidecar(&engine.endpoint(), &redis.url(), |_| {}).await;
        let (got, outcome) = get(&fresh, &table, "a").await;
        assert_eq!(
            got, version,
            "read {outcome} v{got} after v{version} was acknowledged"
        );
        // What it read fills the tier for the next round.
        fresh
            .wait_metric(
                "ddbcache_shared_fills_total{outcome=\"stored\"}",
                WAIT,
                |v| v == 1.0,
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fill_whose_read_began_before_a_write_is_refused_however_late_it_comes() {
    let engine = Engine::dynalite().await;
    let redis = RedisServer::start().await;
    let relay = Relay::start(&engine.endpoint()).await;
    // The slow sidecar reads through the relay, which holds its answer; the writer goes direct.
    let slow = start_sidecar(&relay.endpoint, &redis.url(), |_| {}).await;
    let writer = start_sidecar(&engine.endpoint(), &redis.url(), |_| {}).await;
    let table = table_through(&writer, "shared-late").await;
    assert_eq!(put(&writer, &table, "a", 1).await, 200);
    // The slow sidecar learns the key schema first, so its read's answer is one it would store.
    get(&slow, &table, "b").await;
    let stored = "ddbcache_shared_fills_total{outcome=\"stored\"}";
    slow.wait_metric(stored, WAIT, |v| v == 1.0).await;
    let held = relay.hold_next(is_get_item).await;
    let slow_read = {
        let (endpoint, table) = (slow.endpoint.clone(), table.clone());
        tokio::spawn(async move {
            let body =
                format!(r#"{{"TableName":"{table}","Key":{{"pk":{{"S":"a"}},"sk":{{"S":"s"}}}}}}"#);
            dynamodb_post(&endpoint, Some("DynamoDB_20120810.GetItem"), &[], body).await
        })
    };
    // The slow read has its stamp and its answer (v1); a write lands and is acknowledged.
    held.reached.await.unwrap();
    assert_eq!(put(&writer, &table, "a", 2).await, 200);
    held.release.send(()).unwrap();
    let (status, _, _) = slow_read.await.unwrap();
    assert_eq!(status, 200);
    slow.wait_metric(
        "ddbcache_shared_fills_total{outcome=\"raced\"}",
        WAIT,
        |v| v == 1.0,
    )
    .await;
    assert_eq!(
        slow.metric(stored).await,
        1.0,
        "only the warm-up read was stored"
    );
    let fresh = start_sidecar(&engine.endpoint(), &redis.url(), |_| {}).await;
    assert_eq!(get(&fresh, &table, "a").await.0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_key_missed_by_every_sidecar_at_once_is_read_upstream_once() {
    const SIDECARS: usize = 4;
    let engine = Engine::dynalite().await;
    let redis = RedisServer::start().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxies = start_tier(&[&relay.endpoint], &redis.url(), SIDECARS, |c| {
        c.fleet.shared.lease_wait = Duration::from_secs(15);
    })
    .await;
    let table = table_through(&proxies[0], "shared-herd").await;
    assert_eq!(put(&proxies[0], &table, "hot", 1).await, 200);
    // Every sidecar knows the key schema, so each would store what it reads.
    for (i, p) in proxies.iter().enumerate() {
        // A key no other sidecar read: a miss here, which waits for the schema (a shared hit
        // would only start fetching it).
        get(p, &table, &format!("warm-{i}")).await;
    }
    let gets = || async {
        relay
            .captured()
            .await
            .iter()
            .filter(|c| is_get_item(&target_of(c), &c.body))
            .count()
    };
    let before = gets().await;
    // The warm-up fills reach the tier after their answers, so a warm-up read may already have
    // waited on a lease: count from here.
    let mut misses_before = Vec::new();
    let mut filled_before = 0.0;
    for p in &proxies {
        misses_before.push(p.metric(SHARED_MISSES).await);
        filled_before += p.metric(LEASE_FILLED).await;
    }
    let held = relay
        .hold_next(|target, body| {
            is_get_item(target, body) && String::from_utf8_lossy(body).contains("\"hot\"")
        })
        .await;
    let readers: Vec<_> = proxies
        .iter()
        .map(|p| {
            let (endpoint, table) = (p.endpoint.clone(), table.clone());
            tokio::spawn(async move {
                let body = format!(
                    r#"{{"TableName":"{table}","Key":{{"pk":{{"S":"hot"}},"sk":{{"S":"s"}}}}}}"#
                );
                dynamodb_post(&endpoint, Some("DynamoDB_20120810.GetItem"), &[], body).await
            })
        })
        .collect();
    // One read is upstream (held); the other sidecars find its lease and wait: each asks the
    // tier again while it waits.
    held.reached.await.unwrap();
    let mut waiting = 0;
    let deadline = Instant::now() + WAIT;
    while waiting < SIDECARS - 1 {
        waiting = 0;
        for (p, before) in proxies.iter().zip(&misses_before) {
            if p.metric(SHARED_MISSES).await - before >= 3.0 {
                waiting += 1;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} sidecars wait for the lease"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    held.release.send(()).unwrap();
    for r in readers {
        let (status, _, body) = r.await.unwrap();
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains("\"N\":\"1\""));
    }
    assert_eq!(
        gets().await - before,
        1,
        "the engine was read once for the hot key"
    );
    let mut filled = -filled_before;
    for p in &proxies {
        filled += p.metric(LEASE_FILLED).await;
    }
    assert_eq!(filled, (SIDECARS - 1) as f64);
}

const SHARED_MISSES: &str = "ddbcache_shared_lookups_total{outcome=\"miss\"}";
const LEASE_FILLED: &str = "ddbcache_shared_lease_waits_total{outcome=\"filled\"}";

/// A Query of partition `pk` through a sidecar: the `v` of its items and the `x-ddbcache` header.
async fn query(proxy: &TestProxy, table: &str, pk: &str) -> (Vec<u64>, String) {
    let body = format!(
        r#"{{"TableName":"{table}","KeyConditionExpression":"pk = :p","ExpressionAttributeValues":{{":p":{{"S":"{pk}"}}}}}}"#
    );
    read(proxy, "Query", body).await
}

async fn scan(proxy: &TestProxy, table: &str) -> (Vec<u64>, String) {
    read(proxy, "Scan", format!(r#"{{"TableName":"{table}"}}"#)).await
}

async fn read(proxy: &TestProxy, op: &str, body: String) -> (Vec<u64>, String) {
    let target = format!("DynamoDB_20120810.{op}");
    let (status, headers, body) = dynamodb_post(&proxy.endpoint, Some(&target), &[], body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut versions: Vec<u64> = json["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["v"]["N"].as_str().unwrap().parse().unwrap())
        .collect();
    versions.sort_unstable();
    let outcome = headers
        .get("x-ddbcache")
        .map(|h| h.to_str().unwrap().to_string())
        .unwrap_or_default();
    (versions, outcome)
}

async fn put_item(proxy: &TestProxy, table: &str, pk: &str, sk: &str, version: u64) {
    let body = format!(
        r#"{{"TableName":"{table}","Item":{{"pk":{{"S":"{pk}"}},"sk":{{"S":"{sk}"}},"v":{{"N":"{version}"}}}}}}"#
    );
    let (status, _, _) = dynamodb_post(
        &proxy.endpoint,
        Some("DynamoDB_20120810.PutItem"),
        &[],
        body,
    )
    .await;
    assert_eq!(status, 200);
}

/// The number of answers a sidecar stored in the shared tier.
async fn stored(proxy: &TestProxy) -> f64 {
    proxy
        .metric("ddbcache_shared_fills_total{outcome=\"stored\"}")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_query_pages_end_with_writes_to_their_partition_or_table_and_no_other() {
    let engine = Engine::dynalite().await;
    let redis = RedisServer::start().await;
    let proxies = start_tier(&[&engine.endpoint()], &redis.url(), 2, |_| {}).await;
    let (writer, reader) = (&proxies[0], &proxies[1]);
    let table = table_through(writer, "shared-query").await;
    put_item(writer, &table, "p", "1", 1).await;
    put_item(writer, &table, "q", "1", 1).await;
    // The reader learns the key schema (a GetItem waits for it), so that its Query entries
    // depend on their partition, then fills the tier with a page per partition and a Scan.
    get(reader, &table, "warm").await;
    for (page, expected) in [("p", 1.0), ("q", 2.0), ("scan", 3.0)] {
        if page == "scan" {
            scan(reader, &table).await;
        } else {
            query(reader, &table, page).await;
        }
        reader
            .wait_metric(
                "ddbcache_shared_fills_total{outcome=\"stored\"}",
                WAIT,
                |v| v >= expected + 1.0,
            )
            .await;
    }
    put_item(writer, &table, "p", "2", 2).await;
    let fresh = start_sidecar(&engine.endpoint(), &redis.url(), |_| {}).await;
    // A key the reader did not read: a miss, which waits for the schema, so that the Query
    // below depends on its partition as the reader's did (a shared hit of "warm" would only
    // start fetching the schema, and a Query sent meanwhile depends on the whole table).
    get(&fresh, &table, "fresh").await;
    assert_eq!(
        query(&fresh, &table, "p").await.0,
        vec![1, 2],
        "partition p was written"
    );
    assert_eq!(
        query(&fresh, &table, "q").await,
        (vec![1], "hit-shared".to_string()),
        "partition q was not"
    );
    assert_eq!(
        scan(&fresh, &table).await.0,
        vec![1, 1, 2],
        "the table was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_control_plane_call_ends_its_tables_shared_entries() {
    let engine = Engine::dynalite().await;
    let redis = RedisServer::start().await;
    let proxies = start_tier(&[&engine.endpoint()], &redis.url(), 2, |_| {}).await;
    let (admin, reader) = (&proxies[0], &proxies[1]);
    let table = table_through(admin, "shared-control").await;
    put_item(admin, &table, "a", "s", 1).await;
    until_shared(reader, &table, "a").await;
    // The table is dropped and made again: its old items are gone.
    let client = sdk_client(&admin.endpoint).await;
    recreate_table(&client, &table).await;
    let fresh = start_sidecar(&engine.endpoint(), &redis.url(), |_| {}).await;
    assert_eq!(
        get(&fresh, &table, "a").await.0,
        0,
        "an item of the dropped table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_in_doubt_lets_nothing_fill_the_shared_tier_until_its_window_ends() {
    let engine = Engine::dynalite().await;
    let redis = RedisServer::start().await;
    let relay = Relay::start(&engine.endpoint()).await;
    // The writer stops waiting for its write quickly (no client waits for it past its own
    // timeout, and the backstop is short); what it touched is then in doubt for a long while.
    let writer = start_sidecar(&relay.endpoint, &redis.url(), |c| {
        c.upstream.timeout = Some(Duration::from_millis(300));
        c.upstream.backstop = Duration::from_millis(300);
        c.cache.in_doubt_window = Some(Duration::from_secs(60));
    })
    .await;
    let table = table_through(&writer, "shared-doubt").await;
    // Published so far: the table's creation and this write.
    put_item(&writer, &table, "a", "s", 1).await;
    let held = relay
        .hold_request_next(|target, _| target.ends_with(".PutItem"))
        .await;
    assert_eq!(
        put(&writer, &table, "a", 2).await,
        503,
        "the write timed out"
    );
    held.reached.await.unwrap();
    // The writer gives up on it (its backstop) and publishes it in doubt.
    writer
        .wait_metric(
            "ddbcache_upstream_errors_total{kind=\"backstop\"}",
            WAIT,
            |v| v == 1.0,
        )
        .await;
    writer
        .wait_metric("ddbcache_fleet_published_total", WAIT, |v| v >= 3.0)
        .await;
    // A sidecar that starts now knows nothing of the write but what Redis says: it reads the
    // old value (the write has not landed), and must not keep it for the fleet.
    let first = start_sidecar(&engine.endpoint(), &redis.url(), |_| {}).await;
    assert_eq!(get(&first, &table, "a").await.0, 1);
    assert_eq!(stored(&first).await, 0.0);
    // The write lands late.
    held.release.send(()).unwrap();
    held.landed.await.unwrap();
    let second = start_sidecar(&engine.endpoint(), &redis.url(), |_| {}).await;
    assert_eq!(get(&second, &table, "a").await.0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recent_write_makes_misses_read_consistently_or_fill_nothing() {
    let engine = LaggingReplica::start().await;
    let redis = RedisServer::start().await;
    let writer = start_sidecar(&engine.endpoint, &redis.url(), |c| {
        c.cache.consistency_window = Duration::from_secs(60);
    })
    .await;
    let table = table_through(&writer, "shared-recent").await;
    put_item(&writer, &table, "a", "s", 1).await;
    engine.catch_up().await;
    put_item(&writer, &table, "a", "s", 2).await;
    // The replica has not applied v2. A sidecar that starts now has no marks of its own: the
    // tier's say that "a" was written a moment ago, so its miss reads consistently (v2).
    let first = start_sidecar(&engine.endpoint, &redis.url(), |_| {}).await;
    assert_eq!(get(&first, &table, "a").await.0, 2);
    first
        .wait_metric(
            "ddbcache_shared_fills_total{outcome=\"stored\"}",
            WAIT,
            |v| v == 1.0,
        )
        .await;
    let second = start_sidecar(&engine.endpoint, &redis.url(), |_| {}).await;
    assert_eq!(
        get(&second, &table, "a").await,
        (2, "hit-shared".to_string())
    );
}

/// Reads `a` through the slow sidecar, whose relay holds the answer (v1) until released; the
/// read has its stamp once `reached` fires.
async fn held_read(
    slow: &TestProxy,
    relay: &Relay,
    table: &str,
) -> (
    Held,
    tokio::task::JoinHandle<(http::StatusCode, http::HeaderMap, bytes::Bytes)>,
) {
    let held = relay
        .hold_next(|t, body| {
            is_get_item(t, body) && String::from_utf8_lossy(body).contains("\"a\"")
        })
        .await;
    let (endpoint, table) = (slow.endpoint.clone(), table.to_string());
    let read = tokio::spawn(async move {
        let body =
            format!(r#"{{"TableName":"{table}","Key":{{"pk":{{"S":"a"}},"sk":{{"S":"s"}}}}}}"#);
        dynamodb_post(&endpoint, Some("DynamoDB_20120810.GetItem"), &[], body).await
    });
    (held, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_redis_lost_and_made_again_never_match_an_old_fill() {
    let engine = Engine::dynalite().await;
    let redis = RedisServer::start().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let slow = start_sidecar(&relay.endpoint, &redis.url(), |_| {}).await;
    let writer = start_sidecar(&engine.endpoint(), &redis.url(), |_| {}).await;
    let table = table_through(&writer, "shared-evicted").await;
    // Written around the fleet: no version of the item's cells exists until a lookup makes one.
    let direct = sdk_client(&engine.endpoint()).await;
    put_direct(&direct, &table, "a", 1).await;
    // Both know the key schema (a miss fetches it): the write below names its item, not the
    // whole table.
    get(&slow, &table, "warm").await;
    get(&writer, &table, "warm-too").await;
    let (held, slow_read) = held_read(&slow, &relay, &table).await;
    held.reached.await.unwrap();
    // A write, then Redis loses the versions it changed (evicted, as `allkeys-lru` may); the
    // writer's next lookup makes them again and fills the tier with v2.
    put_item(&writer, &table, "a", "s", 2).await;
    let mut lost = redis.keys("{ddbcache}:s:*").await;
    lost.extend(redis.keys("{ddbcache}:w:*").await);
    assert!(!lost.is_empty());
    for key in &lost {
        redis.commands(&[&["DEL", key]]).await;
    }
    let before = stored(&writer).await;
    assert_eq!(get(&writer, &table, "a").await.0, 2);
    writer
        .wait_metric(
            "ddbcache_shared_fills_total{outcome=\"stored\"}",
            WAIT,
            |v| v > before,
        )
        .await;
    // The slow read's v1 comes back, stamped before all that: versions made again are not the
    // ones it was stamped with.
    held.release.send(()).unwrap();
    slow_read.await.unwrap();
    slow.wait_metric(
        "ddbcache_shared_fills_total{outcome=\"raced\"}",
        WAIT,
        |v| v == 1.0,
    )
    .await;
    let fresh = start_sidecar(&engine.endpoint(), &redis.url(), |_| {}).await;
    assert_eq!(get(&fresh, &table, "a").await.0, 2);
    // And when Redis loses everything, a fill from before is refused too.
    put_item(&writer, &table, "a", "s", 3).await;
    let (held, slow_read) = held_read(&slow, &relay, &table).await;
    held.reached.await.unwrap();
    put_item(&writer, &table, "a", "s", 4).await;
    assert_eq!(redis.commands(&[&["FLUSHALL"]]).await, vec!["+OK"]);
    assert_eq!(get(&writer, &table, "a").await.0, 4);
    held.release.send(()).unwrap();
    slow_read.await.unwrap();
    slow.wait_metric(
        "ddbcache_shared_fills_total{outcome=\"raced\"}",
        WAIT,
        |v| v == 2.0,
    )
    .await;
    let fresh = start_sidecar(&engine.endpoint(), &redis.url(), |_| {}).await;
    assert_eq!(get(&fresh, &table, "a").await.0, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_back_from_an_old_snapshot_serves_nothing_stamped_before_it() {
    let engine = Engine::dynalite().await;
    let mut redis = RedisServer::start_persistent().await;
    let table;
    {
        let proxies = start_tier(&[&engine.endpoint()], &redis.url(), 2, |_| {}).await;
        table = table_through(&proxies[0], "shared-snapshot").await;
        put_item(&proxies[0], &table, "a", "s", 1).await;
        until_shared(&proxies[1], &table, "a").await;
        redis.save().await;
        // A write after the snapshot: its new versions are lost with the crash below, as they
        // would be by a failover to a replica that had not received them.
        put_item(&proxies[0], &table, "a", "s", 2).await;
        for p in proxies {
            p.shutdown().await.unwrap();
        }
    }
    redis.crash_to_snapshot().await;
    // The snapshot has v1's entry and the versions it was stamped with.
    let fresh = start_sidecar(&engine.endpoint(), &redis.url(), |_| {}).await;
    assert_eq!(get(&fresh, &table, "a").await.0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sidecar_whose_link_was_down_ends_the_shared_tier_before_it_serves_again() {
    let engine = Engine::dynalite().await;
    let redis = RedisServer::start().await;
    let proxies = start_tier(&[&engine.endpoint()], &redis.url(), 2, |c| {
        c.fleet.publish_timeout = Duration::from_millis(300);
        c.fleet.ping_timeout = Duration::from_millis(500);
    })
    .await;
    let mut proxies = proxies.into_iter();
    let (writer, reader) = (proxies.next().unwrap(), proxies.next().unwrap());
    let table = table_through(&writer, "shared-hang").await;
    put_item(&writer, &table, "a", "s", 1).await;
    until_shared(&writer, &table, "a").await;
    // Redis hangs, long enough for the writer to give up its connections. A write is then
    // answered though its invalidation could not be sent, and its sidecar goes away before it
    // could try again. (A command sent to a hung Redis would still be carried out when it
    // wakes: only one never sent is lost.)
    redis.pause();
    writer
        .wait_metric("ddbcache_shared_up", WAIT, |v| v == 0.0)
        .await;
    put_item(&writer, &table, "a", "s", 2).await;
    assert_eq!(
        writer.metric("ddbcache_fleet_publish_queue").await,
        1.0,
        "the invalidation waits to be sent"
    );
    writer.shutdown().await.unwrap();
    reader
        .wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 0.0)
        .await;
    redis.resume();
    reader
        .wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 1.0)
        .await;
    assert_eq!(get(&reader, &table, "a").await.0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_consistency_confirms_every_hit_against_redis() {
    let engine = Engine::dynalite().await;
    let redis = RedisServer::start().await;
    let strict = start_sidecar(&engine.endpoint(), &redis.url(), |c| {
        c.fleet.shared.consistency = ddbcache::config::Consistency::Strict;
    })
    .await;
    let table = table_through(&strict, "shared-strict").await;
    put_item(&strict, &table, "a", "s", 1).await;
    until_shared(&strict, &table, "a").await;
    assert_eq!(get(&strict, &table, "a").await, (1, "hit".to_string()));
    // What a peer's write does to Redis, before its message could reach this sidecar: the
    // versions change. A strict hit is confirmed against them.
    let global = format!("{{{}}}:g", "ddbcache");
    redis
        .commands(&[&["HSET", &global, "v", "a-peer-wrote"]])
        .await;
    let (_, outcome) = get(&strict, &table, "a").await;
    assert_eq!(outcome, "miss");
    assert!(
        strict
            .metric("ddbcache_shared_confirms_total{outcome=\"stale\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sealed_entries_name_nothing_and_an_altered_one_is_refused() {
    let engine = Engine::dynalite().await;
    let redis = RedisServer::start().await;
    let key_file = std::env::temp_dir().join(format!("ddbcache-shared-key-{}", std::process::id()));
    std::fs::write(&key_file, "9f".repeat(32)).unwrap();
    let sealed = |c: &mut Config| c.fleet.shared.key_file = Some(key_file.clone());
    let writer = start_sidecar(&engine.endpoint(), &redis.url(), sealed).await;
    let table = table_through(&writer, "shared-sealed").await;
    put_item(&writer, &table, "customer-42", "s", 1).await;
    until_shared(&writer, &table, "customer-42").await;
    let keys = redis.keys("*").await;
    let entries: Vec<&String> = keys.iter().filter(|k| k.contains(":d:")).collect();
    assert_eq!(entries.len(), 1, "{keys:?}");
    for k in &keys {
        assert!(!k.contains(&table) && !k.contains("customer"), "{k}");
    }
    let value = redis.get(entries[0]).await.unwrap();
    assert!(!String::from_utf8_lossy(&value).contains("customer-42"));
    // One bit changed in the sealed part: the entry does not open.
    let mut altered = value.clone();
    *altered.last_mut().unwrap() ^= 1;
    redis.set(entries[0], &altered).await;
    let reader = start_sidecar(&engine.endpoint(), &redis.url(), sealed).await;
    assert_eq!(
        get(&reader, &table, "customer-42").await,
        (1, "miss".to_string())
    );
    assert_eq!(
        reader
            .metric("ddbcache_shared_lookups_total{outcome=\"refused\"}")
            .await,
        1.0
    );
    // A sidecar with another key cannot read the fleet's entries either.
    std::fs::write(&key_file, "01".repeat(32)).unwrap();
    let stranger = start_sidecar(&engine.endpoint(), &redis.url(), sealed).await;
    assert_eq!(get(&stranger, &table, "customer-42").await.1, "miss");
    let _ = std::fs::remove_file(&key_file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tier_works_over_tls_as_an_acl_user() {
    let engine = Engine::dynalite().await;
    let ca = tls::Ca::new("redis test CA");
    let redis = RedisServer::start_tls(&ca, "fleet", "fleet-password").await;
    let ca_file = redis.ca_file();
    let proxies = start_tier(&[&engine.endpoint()], &redis.url(), 2, |c| {
        c.fleet.redis_ca_file = ca_file.clone();
    })
    .await;
    let table = table_through(&proxies[0], "shared-tls").await;
    put_item(&proxies[0], &table, "a", "s", 1).await;
    until_shared(&proxies[0], &table, "a").await;
    assert_eq!(
        get(&proxies[1], &table, "a").await,
        (1, "hit-shared".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_with_the_shared_tier_reads_nothing_stale_through_writes_streams_restarts_and_forgeries(
) {
    use common::fleet::{create_streamed_table, lease_holder, streams_config, total, Workload};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    const SIDECARS: usize = 3;
    /// Writes made around every sidecar are read back through the table's stream: older answers
    /// are allowed for this long after them (the stream's lag on a loaded machine).
    const STREAM_BOUND: Duration = Duration::from_secs(10);
    let engine = Engine::moto().await;
    let mut redis = RedisServer::start().await;
    let key_file = std::env::temp_dir().join(format!("ddbcache-stress-key-{}", std::process::id()));
    std::fs::write(&key_file, "42".repeat(32)).unwrap();
    let direct = sdk_client(&engine.endpoint()).await;
    let table = create_streamed_table(&direct, "shared-stress").await;
    let streams = streams_config(&table);
    let proxies = start_tier(&[&engine.endpoint()], &redis.url(), SIDECARS, |c| {
        c.fleet.shared.key_file = Some(key_file.clone());
        streams(c);
    })
    .await;
    lease_holder(&proxies.iter().collect::<Vec<_>>(), &table).await;
    let mut clients = Vec::new();
    for p in &proxies {
        clients.push(sdk_client(&p.endpoint).await);
    }
    let clients = Arc::new(clients);
    let through = Workload::new(&table);
    let around = Workload::with(&table, "d", STREAM_BOUND);
    let writers: Vec<_> = (0..3)
        .map(|w| tokio::spawn(through.clone().writer(clients.clone(), w, 3, u64::MAX)))
        .chain(std::iter::once(tokio::spawn(around.clone().writer(
            Arc::new(vec![direct.clone()]),
            0,
            1,
            u64::MAX,
        ))))
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|r| tokio::spawn(through.clone().reader(clients.clone(), r)))
        .chain((4..6).map(|r| tokio::spawn(around.clone().reader(clients.clone(), r))))
        .collect();
    let shared_hits = "ddbcache_cache_shared_hits_total{cache=\"item\"}";
    for p in &proxies {
        p.wait_metric(shared_hits, WAIT, |v| v >= 5.0).await;
    }
    // Forgeries: every shared entry is altered, or replaced by one not sealed at all.
    let refused = "ddbcache_shared_lookups_total{outcome=\"refused\"}";
    let before = total(&proxies, refused).await;
    for (i, key) in redis.keys("{ddbcache}:d:*").await.iter().enumerate() {
        let Some(mut value) = redis.get(key).await else {
            continue;
        };
        if i % 2 == 0 {
            *value.last_mut().unwrap() ^= 0x40;
        } else {
            value.truncate(16);
            value.extend_from_slice(&[1, 0]);
            value.extend_from_slice(&[0; 44]);
            value.extend_from_slice(br#"{"Item":{"v":{"N":"0"}}}"#);
        }
        redis.set(key, &value).await;
    }
    // Each sidecar drops its own entries, so that its reads ask the tier for them.
    for p in &proxies {
        let (status, _, _) = http_post(&format!("{}/cache/flush", p.admin)).await;
        assert_eq!(status, 200);
    }
    let deadline = Instant::now() + WAIT;
    while total(&proxies, refused).await == before {
        assert!(Instant::now() < deadline, "no forged entry was looked up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Redis restarted empty mid-run.
    redis.stop().await;
    for p in &proxies {
        p.wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 0.0)
            .await;
    }
    redis.start_again().await;
    for p in &proxies {
        p.wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 1.0)
            .await;
        p.wait_metric("ddbcache_shared_up", WAIT, |v| v == 1.0)
            .await;
        let hits = p.metric(shared_hits).await;
        p.wait_metric(shared_hits, WAIT, |v| v >= hits + 5.0).await;
    }
    through.stop.store(true, Ordering::Relaxed);
    around.stop.store(true, Ordering::Relaxed);
    for t in writers.into_iter().chain(readers) {
        t.await.unwrap();
    }
    let after = total(&proxies, refused).await;
    eprintln!(
        "shared stress: {} writes through sidecars, {} around them; {} + {} reads; {} stale, {} + {} old within the lag; {} forged entries refused",
        through.writes.load(Ordering::Relaxed),
        around.writes.load(Ordering::Relaxed),
        through.reads.load(Ordering::Relaxed),
        around.reads.load(Ordering::Relaxed),
        through.stale.load(Ordering::Relaxed) + around.stale.load(Ordering::Relaxed),
        through.within_lag.load(Ordering::Relaxed),
        around.within_lag.load(Ordering::Relaxed),
        after - before,
    );
    let _ = std::fs::remove_file(&key_file);
    assert_eq!(
        through.stale.load(Ordering::Relaxed),
        0,
        "stale reads (writes through sidecars)"
    );
    assert_eq!(
        around.stale.load(Ordering::Relaxed),
        0,
        "stale reads (writes around them)"
    );
}
