//! Fleet coherence, end to end: several ddbcache servers (each its own cache) sharing one Redis
//! bus in front of one engine. Writes go through a random sidecar and reads through any; a read
//! that starts after a write was acknowledged must never return an older value. Also: Redis
//! killed and restarted mid-run, and (with moto, which implements DynamoDB Streams) writes made
//! directly to the engine invalidated through the table's stream, including across a hand-over of
//! the stream lease.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fleet::*;
use common::*;
use ddbcache::config::StreamTables;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_one_sidecar_are_never_read_stale_through_another() {
    let engine = Engine::dynalite().await;
    let redis = RedisServer::start().await;
    // A debug build with every test sharing two cores: give publishes time to complete.
    let proxies = start_fleet(&engine.endpoint(), &redis, SIDECARS, |c| {
        c.fleet.publish_timeout = Duration::from_secs(2);
    })
    .await;
    let table = create_fleet_table(&proxies, "fleet-stress").await;
    let clients = clients(&proxies).await;
    let work = Workload::new(&table);
    let started = Instant::now();
    let writers: Vec<_> = (0..3)
        .map(|w| tokio::spawn(work.clone().writer(clients.clone(), w, 3, 40)))
        .collect();
    let readers: Vec<_> = (0..6)
        .map(|r| tokio::spawn(work.clone().reader(clients.clone(), r)))
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    work.stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let hits = total(&proxies, "ddbcache_cache_hits_total{cache=\"item\"}").await;
    let applied = total(
        &proxies,
        "ddbcache_fleet_received_total{outcome=\"applied\"}",
    )
    .await;
    let mut publish_failures = 0.0;
    for kind in ["timeout", "error", "no_connection"] {
        let series = format!("ddbcache_fleet_publish_failures_total{{kind=\"{kind}\"}}");
        publish_failures += total(&proxies, &series).await;
    }
    eprintln!(
        "fleet stress: {} sidecars, {:?}: {} writes, {} reads ({} hits), {} stale, {} old within the bus lag (at most {} µs after the acknowledgement); {} peer invalidations applied, {} publishes failed",
        SIDECARS,
        started.elapsed(),
        work.writes.load(Ordering::Relaxed),
        work.reads.load(Ordering::Relaxed),
        hits,
        work.stale.load(Ordering::Relaxed),
        work.within_lag.load(Ordering::Relaxed),
        work.within_lag_longest_us.load(Ordering::Relaxed),
        applied,
        publish_failures,
    );
    eprintln!(
        "{}",
        histogram_summary(&proxies, "ddbcache_fleet_invalidation_lag_seconds").await
    );
    eprintln!(
        "{}",
        histogram_summary(&proxies, "ddbcache_fleet_publish_duration_seconds").await
    );
    assert_eq!(
        work.writes.load(Ordering::Relaxed),
        3 * 40 * KEYS as u64 / 3
    );
    assert!(
        hits > 100.0,
        "the reads must exercise the caches: {hits} hits"
    );
    assert!(applied > 0.0);
    // A publish that fails or times out is retried after the write was answered: peers may serve
    // the old value until then. That is the documented limit (the bus lag), not what this test
    // is about, so the timeout is generous here and no publish may have failed.
    assert_eq!(publish_failures, 0.0, "publishes failed");
    assert_eq!(work.stale.load(Ordering::Relaxed), 0, "stale reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_passes_through_then_hits_resume_without_stale_reads() {
    let engine = Engine::dynalite().await;
    let mut redis = RedisServer::start().await;
    let proxies = start_fleet(&engine.endpoint(), &redis, SIDECARS, |_| {}).await;
    let table = create_fleet_table(&proxies, "fleet-outage").await;
    let clients = clients(&proxies).await;
    let work = Workload::new(&table);
    let writers: Vec<_> = (0..3)
        .map(|w| tokio::spawn(work.clone().writer(clients.clone(), w, 3, u64::MAX)))
        .collect();
    let readers: Vec<_> = (0..6)
        .map(|r| tokio::spawn(work.clone().reader(clients.clone(), r)))
        .collect();
    let hits = "ddbcache_cache_hits_total{cache=\"item\"}";
    let link_down = "ddbcache_cache_bypasses_total{cache=\"item\",reason=\"fleet_link_down\"}";
    for p in &proxies {
        p.wait_metric(hits, WAIT, |v| v >= 20.0).await;
    }

    redis.stop().await;
    let mut before_restart = Vec::new();
    for p in &proxies {
        p.wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 0.0)
            .await;
        // The pass-through period is visible in the counters.
        p.wait_metric(link_down, WAIT, |v| v >= 10.0).await;
        // The application must not be restarted for it.
        assert_eq!(
            http_get(&format!("{}/readyz", p.admin)).await.0,
            200,
            "ready while the fleet link is down"
        );
        before_restart.push(p.metric(hits).await);
    }

    redis.start_again().await;
    for (p, before) in proxies.iter().zip(before_restart) {
        p.wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 1.0)
            .await;
        p.wait_metric(hits, WAIT, |v| v >= before + 20.0).await;
        p.wait_metric("ddbcache_fleet_publish_queue", WAIT, |v| v == 0.0)
            .await;
    }
    work.stop.store(true, Ordering::Relaxed);
    for t in writers.into_iter().chain(readers) {
        t.await.unwrap();
    }
    let mut counters = Vec::new();
    for p in &proxies {
        counters.push(format!(
            "link losses {}, resyncs {}, bypassed (link down) {}, bypassed (backlog) {}, publish failures {}",
            p.metric("ddbcache_fleet_link_losses_total").await,
            p.metric("ddbcache_cache_invalidations_total{cause=\"fleet_resync\"}").await,
            p.metric(link_down).await,
            p.metric("ddbcache_cache_bypasses_total{cache=\"item\",reason=\"fleet_backlog\"}").await,
            p.metric("ddbcache_fleet_publish_failures_total{kind=\"error\"}").await
                + p.metric("ddbcache_fleet_publish_failures_total{kind=\"timeout\"}").await
                + p.metric("ddbcache_fleet_publish_failures_total{kind=\"no_connection\"}").await,
        ));
    }
    eprintln!(
        "redis outage: {} writes, {} reads, {} stale, {} old within the bus lag; per sidecar: {counters:#?}",
        work.writes.load(Ordering::Relaxed),
        work.reads.load(Ordering::Relaxed),
        work.stale.load(Ordering::Relaxed),
        work.within_lag.load(Ordering::Relaxed),
    );
    for p in &proxies {
        assert_eq!(p.metric("ddbcache_fleet_link_losses_total").await, 1.0);
        // Once at the first subscription, once after the outage.
        assert_eq!(
            p.metric("ddbcache_cache_invalidations_total{cause=\"fleet_resync\"}")
                .await,
            2.0
        );
    }
    assert_eq!(work.stale.load(Ordering::Relaxed), 0, "stale reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_writes_nothing_subscribes_again_after_redis_restarts() {
    let engine = Engine::dynalite().await;
    let mut redis = RedisServer::start().await;
    let proxies = start_fleet(&engine.endpoint(), &redis, 1, |_| {}).await;
    let sidecar = &proxies[0];
    sidecar
        .wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 1.0)
        .await;
    redis.stop().await;
    sidecar
        .wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 0.0)
        .await;
    redis.start_again().await;
    // Nothing was published, so nothing found the command connection made before the restart
    // dead by publishing on it: subscribing again must not depend on a write.
    sidecar
        .wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_missed_while_unsubscribed_are_covered_by_dropping_the_cache() {
    let engine = Engine::dynalite().await;
    let redis = RedisServer::start().await;
    let proxies = start_fleet(&engine.endpoint(), &redis, 2, |_| {}).await;
    let table = create_fleet_table(&proxies, "fleet-missed").await;
    let (writer, reader) = (
        sdk_client(&proxies[0].endpoint).await,
        sdk_client(&proxies[1].endpoint).await,
    );
    let put = |v: &str| {
        writer
            .put_item()
            .table_name(&table)
            .item("pk", s("k"))
            .item("sk", s("s"))
            .item("v", n(v))
            .send()
    };
    let read = || async {
        let got = reader
            .get_item()
            .table_name(&table)
            .key("pk", s("k"))
            .key("sk", s("s"))
            .send()
            .await
            .unwrap();
        version_of(got.item())
    };
    put("1").await.unwrap();
    let hits = "ddbcache_cache_hits_total{cache=\"item\"}";
    assert_eq!(read().await, 1);
    assert_eq!(read().await, 1);
    assert_eq!(
        proxies[1].metric(hits).await,
        1.0,
        "the reader's sidecar holds k"
    );

    // Subscriptions break and cannot come back (new connections must now authenticate), while
    // the publishers' connections, already open, still work: what is published now reaches no one.
    let replies = redis
        .commands(&[
            &["CONFIG", "SET", "requirepass", "fleet-test"],
            &["CLIENT", "KILL", "TYPE", "pubsub"],
        ])
        .await;
    assert_eq!(replies[0], "+OK");
    for p in &proxies {
        p.wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 0.0)
            .await;
    }
    put("2").await.unwrap();
    assert_eq!(
        proxies[0].metric("ddbcache_fleet_publish_queue").await,
        0.0,
        "the message went out (to nobody)"
    );
    // Meanwhile reads pass through.
    assert_eq!(read().await, 2);
    let bypassed = "ddbcache_cache_bypasses_total{cache=\"item\",reason=\"fleet_link_down\"}";
    assert_eq!(proxies[1].metric(bypassed).await, 1.0);

    redis
        .commands(&[
            &["AUTH", "fleet-test"],
            &["CONFIG", "SET", "requirepass", ""],
        ])
        .await;
    for p in &proxies {
        p.wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 1.0)
            .await;
    }
    // The entry filled before the link broke must not come back.
    assert_eq!(read().await, 2, "stale after resubscription");
    assert_eq!(read().await, 2);
    assert_eq!(proxies[1].metric(hits).await, 2.0, "hits resume");
}

// -------------------------------------------------------------------------------------------------
// DynamoDB Streams (moto)

/// Creates a table with a KEYS_ONLY stream, directly on the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_made_directly_to_the_engine_are_invalidated_through_the_stream() {
    let engine = Engine::moto().await;
    let redis = RedisServer::start().await;
    let direct = sdk_client(&engine.endpoint()).await;
    let table = create_streamed_table(&direct, "fleet-stream").await;
    let proxies = start_fleet(&engine.endpoint(), &redis, SIDECARS, streams_config(&table)).await;
    let all: Vec<&TestProxy> = proxies.iter().collect();
    lease_holder(&all, &table).await;
    until_stream_read(&direct, &all, &table).await;

    let mut lags = Vec::new();
    for i in 0..20 {
        let pk = format!("k{i}");
        // Every sidecar holds "no such item" for the key; then it is written around them all.
        cache_everywhere(&all, &table, &pk, 0).await;
        let written = Instant::now();
        put_direct(&direct, &table, &pk, 1).await;
        lags.push(until_everywhere(&all, &table, &pk, 1, written).await);
    }
    lags.sort();
    eprintln!(
        "stream invalidation (write directly to moto -> last of {SIDECARS} sidecars serving the new value), {} writes: p50 {:?}, p99 {:?}, max {:?}",
        lags.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().unwrap(),
    );
    eprintln!(
        "{}",
        histogram_summary(&proxies, "ddbcache_stream_lag_seconds").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_lease_holder_is_replaced_and_no_record_is_skipped() {
    let engine = Engine::moto().await;
    let redis = RedisServer::start().await;
    let direct = sdk_client(&engine.endpoint()).await;
    let table = create_streamed_table(&direct, "fleet-lease").await;
    let mut proxies =
        start_fleet(&engine.endpoint(), &redis, SIDECARS, streams_config(&table)).await;
    let holder = {
        let all: Vec<&TestProxy> = proxies.iter().collect();
        let holder = lease_holder(&all, &table).await;
        until_stream_read(&direct, &all, &table).await;
        holder
    };
    let dead = proxies.remove(holder);
    let survivors: Vec<&TestProxy> = proxies.iter().collect();
    // The survivors hold "no such item" for every key.
    let keys: Vec<String> = (0..20).map(|i| format!("h{i}")).collect();
    for pk in &keys {
        cache_everywhere(&survivors, &table, pk, 0).await;
    }

    // The holder dies; every key is written while nobody holds the lease.
    dead.shutdown().await.unwrap();
    let died = Instant::now();
    for pk in &keys {
        put_direct(&direct, &table, pk, 1).await;
    }
    let new_holder = lease_holder(&survivors, &table).await;
    let took_over = died.elapsed();
    for pk in &keys {
        until_everywhere(&survivors, &table, pk, 1, died).await;
    }
    eprintln!(
        "lease hand-over: sidecar {new_holder} of the survivors took over {took_over:?} after the holder died; all {} keys written meanwhile invalidated within {:?}",
        keys.len(),
        died.elapsed()
    );
}

/// The connection for commands (leases, checkpoints, publishes) dies on its own — killed by an
/// operator, or by a proxy in front of Redis — while the subscription lives on. A sidecar that
/// reads the stream and writes nothing learns of it only when its lease commands fail; it must
/// open another and keep reading, or writes made directly to the engine are never invalidated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_reader_whose_command_connection_dies_reads_on() {
    let engine = Engine::moto().await;
    let redis = RedisServer::start().await;
    let direct = sdk_client(&engine.endpoint()).await;
    let table = create_streamed_table(&direct, "fleet-killed").await;
    let proxies = start_fleet(&engine.endpoint(), &redis, 1, streams_config(&table)).await;
    let all: Vec<&TestProxy> = proxies.iter().collect();
    lease_holder(&all, &table).await;
    until_stream_read(&direct, &all, &table).await;

    // Every connection but subscriptions (and this one).
    let killed = redis
        .commands(&[&["CLIENT", "KILL", "TYPE", "normal"]])
        .await;
    assert_ne!(killed[0], ":0", "the command connection was killed");
    // Nothing is written, so nothing is published: only the failed lease commands can tell the
    // sidecar that its connection died.
    let deadline = Instant::now() + WAIT;
    while other_normal_connections(&redis).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the sidecar never connected again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..5 {
        let pk = format!("k{i}");
        cache_everywhere(&all, &table, &pk, 0).await;
        let written = Instant::now();
        put_direct(&direct, &table, &pk, 1).await;
        until_everywhere(&all, &table, &pk, 1, written).await;
    }
}

/// Connections to `redis` that are neither subscriptions nor the one asking.
async fn other_normal_connections(redis: &RedisServer) -> usize {
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = ::redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut conn)
        .await
        .unwrap();
    list.lines()
        .filter(|l| !l.contains("cmd=client|list"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_fleet_one_sidecar_reads_the_stream_and_a_table_without_one_is_reported() {
    let engine = Engine::moto().await;
    let direct = sdk_client(&engine.endpoint()).await;
    let streamed = create_streamed_table(&direct, "solo-stream").await;
    let plain = unique_table("solo-plain");
    create_table(&direct, &plain).await;
    let proxy = start_proxy_with(&engine.endpoint(), |c| {
        c.streams.tables = StreamTables::Named(vec![streamed.clone(), plain.clone()]);
    })
    .await;
    proxy.wait_ready().await;
    let only = [&proxy];

    // No stream on `plain`: a metric (and a warning), not a failure; its entries live by the TTL.
    proxy
        .wait_metric(
            "ddbcache_stream_errors_total{kind=\"not_enabled\"}",
            WAIT,
            |v| v >= 1.0,
        )
        .await;
    let readable = |t: &str| format!("ddbcache_stream_readable{{table=\"{t}\"}}");
    assert_eq!(proxy.metric(&readable(&plain)).await, 0.0);
    cache_everywhere(&only, &plain, "k", 0).await;

    // `streamed` is read by this sidecar alone, without a lease.
    until_stream_read(&direct, &only, &streamed).await;
    assert_eq!(proxy.metric(&readable(&streamed)).await, 1.0);
    assert_eq!(
        proxy
            .metric(&format!(
                "ddbcache_stream_lease_held{{table=\"{streamed}\"}}"
            ))
            .await,
        0.0
    );
    cache_everywhere(&only, &streamed, "k", 0).await;
    let written = Instant::now();
    put_direct(&direct, &streamed, "k", 1).await;
    let took = until_everywhere(&only, &streamed, "k", 1, written).await;
    eprintln!("stream invalidation without a fleet: {took:?}");
}
