//! The caches against a real engine, driven with the AWS SDK for Rust: hits that outlive the
//! upstream, read-your-writes after every kind of write, canonical keys, bypasses, TTLs, bounded
//! memory, BatchGetItem merging, the miss/write race, and a concurrency stress test.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, PutRequest, ReturnValue, ScalarAttributeType, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use common::*;

const ITEM_HITS: &str = r#"ddbcache_cache_hits_total{cache="item"}"#;
const ITEM_MISSES: &str = r#"ddbcache_cache_misses_total{cache="item"}"#;
const QUERY_HITS: &str = r#"ddbcache_cache_hits_total{cache="query"}"#;
const ITEM_BYPASSES: &str =
    r#"ddbcache_cache_bypasses_total{cache="item",reason="consistent_read"}"#;
const NEGATIVE_HITS: &str = r#"ddbcache_cache_negative_hits_total{cache="item"}"#;

/// dynalite, ddbcache in front of it, a client through ddbcache and a table with one item.
async fn setup() -> (Engine, TestProxy, Client, String) {
    let engine = Engine::dynalite().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    let client = sdk_client(&proxy.endpoint).await;
    let table = unique_table("cache");
    create_table(&client, &table).await;
    (engine, proxy, client, table)
}

#[tokio::test]
async fn reads_are_answered_from_cache_after_the_upstream_stops() {
    let (mut engine, proxy, client, table) = setup().await;
    put_v(&client, &table, "a", "1", "one").await;
    put_v(&client, &table, "a", "2", "two").await;
    let get = get_v(&client, &table, "a", "1").await;
    let query = query_vs(&client, &table, "a").await;
    let scan = scan_vs(&client, &table).await;
    let batch = |c: Client| {
        let t = table.clone();
        async move { batch_vs(&c, &t, &[("a", "1"), ("a", "2")]).await }
    };
    let batched = batch(client.clone()).await;

    engine.stop().await;
    let before = proxy.metric(ITEM_HITS).await + proxy.metric(QUERY_HITS).await;
    assert_eq!(get_v(&client, &table, "a", "1").await, get);
    assert_eq!(query_vs(&client, &table, "a").await, query);
    assert_eq!(scan_vs(&client, &table).await, scan);
    assert_eq!(batch(client.clone()).await, batched);
    let after = proxy.metric(ITEM_HITS).await + proxy.metric(QUERY_HITS).await;
    assert_eq!(
        after - before,
        5.0,
        "every read was a hit (the batch counts one per key)"
    );
    assert_eq!(get.as_deref(), Some("one"));
    assert_eq!(batched, BTreeSet::from(["one".into(), "two".into()]));
}

/// BatchGetItem of (pk, sk) pairs of one table: the items' `v`s.
async fn batch_vs(client: &Client, table: &str, keys: &[(&str, &str)]) -> BTreeSet<String> {
    let mut wanted = KeysAndAttributes::builder();
    for (pk, sk) in keys {
        wanted = wanted.keys(key(pk, sk));
    }
    let out = client
        .batch_get_item()
        .request_items(table, wanted.build().unwrap())
        .send()
        .await
        .expect("BatchGetItem");
    out.responses().unwrap()[table]
        .iter()
        .map(|i| i["v"].as_s().unwrap().clone())
        .collect()
}

/// Primes the item, query and scan caches, writes, and checks the next reads see the write.
async fn assert_reads_follow(
    client: &Client,
    table: &str,
    write: impl std::future::Future<Output = ()>,
    expect_get: Option<&str>,
    expect_query: &[&str],
) {
    // Prime all three caches.
    get_v(client, table, "a", "1").await;
    query_vs(client, table, "a").await;
    scan_vs(client, table).await;
    write.await;
    assert_eq!(get_v(client, table, "a", "1").await.as_deref(), expect_get);
    assert_eq!(query_vs(client, table, "a").await, expect_query);
    let scanned = scan_vs(client, table).await;
    let expected: BTreeSet<String> = expect_query.iter().map(|s| s.to_string()).collect();
    assert_eq!(scanned, expected);
}

#[tokio::test]
async fn reads_see_put_update_delete_and_batch_write() {
    let (_engine, _proxy, client, table) = setup().await;
    put_v(&client, &table, "a", "1", "v1").await;

    assert_reads_follow(
        &client,
        &table,
        put_v(&client, &table, "a", "1", "v2"),
        Some("v2"),
        &["v2"],
    )
    .await;

    let update = async {
        client
            .update_item()
            .table_name(&table)
            .set_key(Some(key("a", "1")))
            .update_expression("SET v = :v")
            .expression_attribute_values(":v", s("v3"))
            .send()
            .await
            .expect("UpdateItem");
    };
    assert_reads_follow(&client, &table, update, Some("v3"), &["v3"]).await;

    let batch_write = async {
        let mut item = key("a", "1");
        item.insert("v".into(), s("v4"));
        let mut other = key("a", "2");
        other.insert("v".into(), s("w"));
        client
            .batch_write_item()
            .request_items(
                &table,
                vec![
                    WriteRequest::builder()
                        .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                        .build(),
                    WriteRequest::builder()
                        .put_request(PutRequest::builder().set_item(Some(other)).build().unwrap())
                        .build(),
                ],
            )
            .send()
            .await
            .expect("BatchWriteItem");
    };
    assert_reads_follow(&client, &table, batch_write, Some("v4"), &["v4", "w"]).await;

    let delete = async {
        client
            .delete_item()
            .table_name(&table)
            .set_key(Some(key("a", "1")))
            .send()
            .await
            .expect("DeleteItem");
    };
    assert_reads_follow(&client, &table, delete, None, &["w"]).await;
}

#[tokio::test]
async fn reads_see_transactions_and_partiql_updates() {
    let engine = Engine::moto().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    let client = sdk_client(&proxy.endpoint).await;
    let table = unique_table("txn");
    create_table(&client, &table).await;
    put_v(&client, &table, "a", "1", "v1").await;

    let transact = async {
        use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
        client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(&table)
                            .set_key(Some(key("a", "1")))
                            .update_expression("SET v = :v")
                            .expression_attribute_values(":v", s("t2"))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("TransactWriteItems");
    };
    assert_reads_follow(&client, &table, transact, Some("t2"), &["t2"]).await;

    let partiql = async {
        client
            .execute_statement()
            .statement(format!(
                r#"UPDATE "{table}" SET v = ? WHERE pk = ? AND sk = ?"#
            ))
            .parameters(s("p3"))
            .parameters(s("a"))
            .parameters(s("1"))
            .send()
            .await
            .expect("ExecuteStatement UPDATE");
    };
    assert_reads_follow(&client, &table, partiql, Some("p3"), &["p3"]).await;
}

/// A table keyed by a number, to test number spellings.
async fn create_numeric_table(client: &Client, name: &str) {
    create_single_key_table(client, name, "id", ScalarAttributeType::N).await;
}

#[tokio::test]
async fn number_spellings_share_one_entry_and_invalidate_each_other() {
    let engine = Engine::dynalite().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    let client = sdk_client(&proxy.endpoint).await;
    let table = unique_table("num");
    create_numeric_table(&client, &table).await;
    let put = |spelling: &'static str, v: &'static str| {
        client
            .put_item()
            .table_name(&table)
            .item("id", n(spelling))
            .item("v", s(v))
            .send()
    };
    let get = |spelling: &'static str| {
        client
            .get_item()
            .table_name(&table)
            .key("id", n(spelling))
            .send()
    };
    put("1", "first").await.unwrap();

    assert_eq!(get("1").await.unwrap().item().unwrap()["v"], s("first"));
    let hits = proxy.metric(ITEM_HITS).await;
    for spelling in ["1.0", "1E0", "10E-1"] {
        assert_eq!(
            get(spelling).await.unwrap().item().unwrap()["v"],
            s("first")
        );
    }
    assert_eq!(
        proxy.metric(ITEM_HITS).await - hits,
        3.0,
        "one entry for all spellings"
    );

    // A Put spelled differently invalidates the entry cached under "1".
    put("1.00", "second").await.unwrap();
    assert_eq!(get("1").await.unwrap().item().unwrap()["v"], s("second"));
    // And a different number is a different item.
    assert!(get("2").await.unwrap().item().is_none());
}

#[tokio::test]
async fn projections_and_attribute_names_key_entries_as_dynamodb_answers() {
    let (_engine, proxy, client, table) = setup().await;
    let mut item = key("a", "1");
    item.insert("v".into(), s("value"));
    item.insert("w".into(), s("other"));
    client
        .put_item()
        .table_name(&table)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();

    let project = |expr: &'static str, names: Option<(&'static str, &'static str)>| {
        let mut req = client
            .get_item()
            .table_name(&table)
            .set_key(Some(key("a", "1")))
            .projection_expression(expr);
        if let Some((k, v)) = names {
            req = req.expression_attribute_names(k, v);
        }
        req.send()
    };
    let only_v = project("v", None).await.unwrap();
    assert_eq!(only_v.item().unwrap().len(), 1);
    assert_eq!(only_v.item().unwrap()["v"], s("value"));

    let hits = proxy.metric(ITEM_HITS).await;
    let named = project("#x", Some(("#x", "v"))).await.unwrap();
    assert_eq!(named.item(), only_v.item());
    assert_eq!(
        proxy.metric(ITEM_HITS).await - hits,
        1.0,
        "#x resolved to v: same entry"
    );

    let only_w = project("w", None).await.unwrap();
    assert_eq!(only_w.item().unwrap()["w"], s("other"));
    assert!(!only_w.item().unwrap().contains_key("v"));
    let both = project("w, v", None).await.unwrap();
    assert_eq!(both.item().unwrap().len(), 2);

    // A write ends every projection of the item.
    client
        .update_item()
        .table_name(&table)
        .set_key(Some(key("a", "1")))
        .update_expression("SET v = :n")
        .expression_attribute_values(":n", s("changed"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        project("#x", Some(("#x", "v")))
            .await
            .unwrap()
            .item()
            .unwrap()["v"],
        s("changed")
    );
    assert_eq!(
        project("w, v", None).await.unwrap().item().unwrap()["v"],
        s("changed")
    );
}

#[tokio::test]
async fn consistent_read_bypasses_and_does_not_fill() {
    let (_engine, proxy, client, table) = setup().await;
    put_v(&client, &table, "a", "1", "x").await;
    for _ in 0..2 {
        let out = client
            .get_item()
            .table_name(&table)
            .set_key(Some(key("a", "1")))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        assert_eq!(out.item().unwrap()["v"], s("x"));
    }
    assert_eq!(proxy.metric(ITEM_BYPASSES).await, 2.0);
    assert_eq!(proxy.metric(ITEM_HITS).await, 0.0);
    // Nothing was filled: the first plain read misses.
    get_v(&client, &table, "a", "1").await;
    assert_eq!(proxy.metric(ITEM_MISSES).await, 1.0);
    assert_eq!(proxy.metric(ITEM_HITS).await, 0.0);
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let engine = Engine::dynalite().await;
    // Long enough that the reads below reach the entries before they expire on a loaded machine.
    let ttl = Duration::from_millis(2000);
    let proxy = start_proxy_with(&engine.endpoint(), |c| {
        c.cache.item.ttl = ttl;
        c.cache.query.ttl = ttl;
    })
    .await;
    let client = sdk_client(&proxy.endpoint).await;
    let direct = sdk_client(&engine.endpoint()).await;
    let table = unique_table("ttl");
    create_table(&client, &table).await;
    put_v(&client, &table, "a", "1", "old").await;
    assert_eq!(
        get_v(&client, &table, "a", "1").await.as_deref(),
        Some("old")
    );
    assert_eq!(query_vs(&client, &table, "a").await, ["old"]);

    // A write that bypasses the proxy: only the TTL bounds how long the old value is served.
    put_v(&direct, &table, "a", "1", "new").await;
    assert_eq!(
        get_v(&client, &table, "a", "1").await.as_deref(),
        Some("old"),
        "cached"
    );
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert_eq!(
        get_v(&client, &table, "a", "1").await.as_deref(),
        Some("new")
    );
    assert_eq!(query_vs(&client, &table, "a").await, ["new"]);
}

#[tokio::test]
async fn per_table_ttl_zero_turns_the_cache_off_for_that_table() {
    let engine = Engine::dynalite().await;
    let table = unique_table("off");
    let t = table.clone();
    let proxy = start_proxy_with(&engine.endpoint(), move |c| {
        c.tables.insert(
            t,
            ddbcache::config::TableOverrides {
                query_ttl: Some(Duration::ZERO),
                ..Default::default()
            },
        );
    })
    .await;
    let client = sdk_client(&proxy.endpoint).await;
    create_table(&client, &table).await;
    put_v(&client, &table, "a", "1", "x").await;
    query_vs(&client, &table, "a").await;
    query_vs(&client, &table, "a").await;
    assert_eq!(proxy.metric(QUERY_HITS).await, 0.0);
    assert_eq!(
        proxy
            .metric(r#"ddbcache_cache_bypasses_total{cache="query",reason="cache_off"}"#)
            .await,
        2.0
    );
    // The item cache is still on for the table.
    get_v(&client, &table, "a", "1").await;
    get_v(&client, &table, "a", "1").await;
    assert_eq!(proxy.metric(ITEM_HITS).await, 1.0);
}

#[tokio::test]
async fn a_write_to_one_partition_keeps_the_query_entries_of_the_others() {
    let (_engine, proxy, client, table) = setup().await;
    for pk in ["a", "b"] {
        put_v(&client, &table, pk, "1", &format!("{pk}1")).await;
    }
    // The key schema is learned with the first read; read each partition twice so that both
    // entries are filled under it.
    for _ in 0..2 {
        assert_eq!(query_vs(&client, &table, "a").await, ["a1"]);
        assert_eq!(query_vs(&client, &table, "b").await, ["b1"]);
    }
    assert_eq!(scan_vs(&client, &table).await.len(), 2);
    put_v(&client, &table, "a", "2", "a2").await;
    let hits = proxy.metric(QUERY_HITS).await;
    assert_eq!(query_vs(&client, &table, "b").await, ["b1"]);
    assert_eq!(
        proxy.metric(QUERY_HITS).await - hits,
        1.0,
        "partition b is untouched"
    );
    assert_eq!(query_vs(&client, &table, "a").await, ["a1", "a2"]);
    assert_eq!(scan_vs(&client, &table).await.len(), 3);
    assert_eq!(
        proxy.metric(QUERY_HITS).await - hits,
        1.0,
        "partition a and the scan were invalidated"
    );
}

#[tokio::test]
async fn negative_entry_is_cached_then_invalidated_by_a_put() {
    let (_engine, proxy, client, table) = setup().await;
    assert_eq!(get_v(&client, &table, "nobody", "1").await, None);
    assert_eq!(get_v(&client, &table, "nobody", "1").await, None);
    assert_eq!(proxy.metric(NEGATIVE_HITS).await, 1.0);
    put_v(&client, &table, "nobody", "1", "now").await;
    assert_eq!(
        get_v(&client, &table, "nobody", "1").await.as_deref(),
        Some("now")
    );
}

#[tokio::test]
async fn eviction_keeps_bytes_under_capacity() {
    let engine = Engine::dynalite().await;
    let capacity: u64 = 32 * 1024;
    let proxy = start_proxy_with(&engine.endpoint(), |c| c.cache.item.capacity = capacity).await;
    let client = sdk_client(&proxy.endpoint).await;
    let table = unique_table("evict");
    create_table(&client, &table).await;
    let filler = "x".repeat(900);
    for i in 0..120 {
        put_v(&client, &table, "p", &i.to_string(), &filler).await;
    }
    for i in 0..120 {
        assert_eq!(
            get_v(&client, &table, "p", &i.to_string()).await.as_deref(),
            Some(&filler[..])
        );
    }
    let (_, _, body) = http_get(&format!("{}/cache", proxy.admin)).await;
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let bytes = stats["item"]["bytes"].as_u64().unwrap();
    let entries = stats["item"]["entries"].as_u64().unwrap();
    println!(
        "item cache after 120 fills of ~1 KiB: {entries} entries, {bytes} bytes of {capacity}"
    );
    assert!(bytes <= capacity, "{bytes} > {capacity}");
    assert!(entries > 0 && entries < 120, "{entries}");
    assert!(
        proxy
            .metric(r#"ddbcache_cache_evictions_total{cache="item"}"#)
            .await
            > 0.0
    );
}

#[tokio::test]
async fn batch_get_with_partial_hits_answers_like_dynamodb() {
    let (engine, proxy, client, table) = setup().await;
    let direct = sdk_client(&engine.endpoint()).await;
    for i in 0..6 {
        put_v(&client, &table, "b", &i.to_string(), &format!("v{i}")).await;
    }
    // Prime keys 0..3 (one of them a miss that becomes a negative entry).
    for i in [0, 1, 2, 9] {
        get_v(&client, &table, "b", &i.to_string()).await;
    }
    let request = || {
        let mut ka = KeysAndAttributes::builder();
        for i in [0, 1, 3, 4, 9, 10] {
            ka = ka.keys(key("b", &i.to_string()));
        }
        ka.build().unwrap()
    };
    let hits = proxy.metric(ITEM_HITS).await;
    let via_proxy = client
        .batch_get_item()
        .request_items(&table, request())
        .send()
        .await
        .unwrap();
    let via_engine = direct
        .batch_get_item()
        .request_items(&table, request())
        .send()
        .await
        .unwrap();
    assert_eq!(
        proxy.metric(ITEM_HITS).await - hits,
        3.0,
        "keys 0, 1 and 9 hit"
    );
    let items = |o: &aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput| {
        let mut v: Vec<_> = o.responses().unwrap()[&table]
            .iter()
            .map(canon_item)
            .collect();
        v.sort();
        v
    };
    assert_eq!(items(&via_proxy), items(&via_engine));
    assert_eq!(items(&via_proxy).len(), 4);
    assert!(via_proxy.unprocessed_keys().is_none_or(|u| u.is_empty()));

    // The misses were filled: now every key hits, and the answer is unchanged.
    let hits = proxy.metric(ITEM_HITS).await;
    let again = client
        .batch_get_item()
        .request_items(&table, request())
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.metric(ITEM_HITS).await - hits, 6.0);
    assert_eq!(items(&again), items(&via_engine));
}

#[tokio::test]
async fn a_read_that_misses_before_a_write_does_not_store_the_old_value() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy(&relay.endpoint).await;
    let client = sdk_client(&proxy.endpoint).await;
    let table = unique_table("race");
    create_table(&client, &table).await;
    put_v(&client, &table, "a", "1", "old").await;

    for op in ["GetItem", "Query"] {
        put_v(&client, &table, "a", "1", "old").await;
        // 1. A read misses and reaches the engine, which answers "old"; the answer is held.
        let held = relay.hold_next(move |target, _| target.ends_with(op)).await;
        let mut reader = {
            let (client, table) = (client.clone(), table.clone());
            tokio::spawn(async move {
                if op == "GetItem" {
                    vec![get_v(&client, &table, "a", "1").await.unwrap()]
                } else {
                    query_vs(&client, &table, "a").await
                }
            })
        };
        tokio::select! {
            reached = held.reached => reached.unwrap(),
            answer = &mut reader => panic!("{op} was answered without reaching the engine: {answer:?}"),
        }
        // 2. A write lands and is acknowledged while the old answer is in flight.
        put_v(&client, &table, "a", "1", "new").await;
        // 3. The old answer arrives. The reader started before the write, so "old" is fine for
        //    it — but it must not be stored.
        held.release.send(()).unwrap();
        assert_eq!(reader.await.unwrap(), ["old"], "{op}");
        // 4. Every read that starts after the write's acknowledgement sees it.
        assert_eq!(
            get_v(&client, &table, "a", "1").await.as_deref(),
            Some("new"),
            "{op}"
        );
        assert_eq!(query_vs(&client, &table, "a").await, ["new"], "{op}");
    }
}

#[tokio::test]
async fn control_plane_and_flush_drop_a_tables_entries() {
    let (_engine, proxy, client, table) = setup().await;
    put_v(&client, &table, "a", "1", "x").await;
    get_v(&client, &table, "a", "1").await;
    query_vs(&client, &table, "a").await;

    // Flush of one table: both caches miss afterwards.
    let (status, _, body) = http_post(&format!("{}/cache/flush?table={table}", proxy.admin)).await;
    assert_eq!(status, 200, "{body:?}");
    let misses = proxy.metric(ITEM_MISSES).await;
    get_v(&client, &table, "a", "1").await;
    assert_eq!(proxy.metric(ITEM_MISSES).await - misses, 1.0);

    // DeleteTable + CreateTable through the proxy: the old item is never served again.
    get_v(&client, &table, "a", "1").await;
    recreate_table(&client, &table).await;
    assert_eq!(get_v(&client, &table, "a", "1").await, None);
    assert!(query_vs(&client, &table, "a").await.is_empty());

    let (status, _, _) = http_post(&format!("{}/cache/flush", proxy.admin)).await;
    assert_eq!(status, 200);
    let (_, _, body) = http_get(&format!("{}/cache", proxy.admin)).await;
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(stats["item"]["entries"], 0);
    assert_eq!(stats["query"]["entries"], 0);
}

/// Many tasks read, put, update and delete a few hot items through ddbcache: two items in each of
/// three partitions, read by GetItem (one item) and by Query (a whole partition, whose entry
/// depends on its partition's generation, not the table's). Writes to one item are serialized by
/// the test (so "the latest acknowledged write" is well defined) and each carries a higher
/// version. A read notes the latest acknowledged version of every item it returns before it
/// starts; it must return that version or a newer one, for every item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_no_read_returns_a_version_older_than_an_acknowledged_write() {
    const PARTITIONS: usize = 3;
    const SORT_KEYS: [&str; 2] = ["s", "t"];
    const TASKS: usize = 12;
    const OPS_PER_TASK: usize = 150;

    let (_engine, proxy, client, table) = setup().await;
    #[derive(Default)]
    struct ItemState {
        write_lock: tokio::sync::Mutex<u64>,
        /// (version, present) of the latest acknowledged write.
        acked: parking_lot::Mutex<(u64, bool)>,
        /// Highest version of a delete that has started.
        delete_started: AtomicU64,
    }
    impl ItemState {
        /// Whether `found` is older than what was acknowledged when the read started (`floor`).
        fn is_stale(&self, found: Option<u64>, (floor, floor_present): (u64, bool)) -> bool {
            match found {
                Some(v) => v < floor,
                // Absent is right if the latest acknowledged write was a delete, or a newer
                // delete has started since.
                None => floor_present && self.delete_started.load(Ordering::SeqCst) < floor,
            }
        }
    }
    // Item (p, k) is at index p * SORT_KEYS.len() + k.
    let items: Arc<Vec<ItemState>> = Arc::new(
        (0..PARTITIONS * SORT_KEYS.len())
            .map(|_| ItemState::default())
            .collect(),
    );
    let stale = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let version_of = |item: &std::collections::HashMap<String, AttributeValue>| -> u64 {
        item["version"].as_n().unwrap().parse().unwrap()
    };

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (client, table, items) = (client.clone(), table.clone(), items.clone());
        let (stale, reads, writes) = (stale.clone(), reads.clone(), writes.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..OPS_PER_TASK {
                let p = (t * 7 + i * 13) % PARTITIONS;
                let k = (t + i * 5) % SORT_KEYS.len();
                let pk = format!("hot{p}");
                let sk = SORT_KEYS[k];
                let state = &items[p * SORT_KEYS.len() + k];
                match (t + i) % 10 {
                    // Writes: 30%.
                    kind @ 0..=2 => {
                        let mut version = state.write_lock.lock().await;
                        *version += 1;
                        let v = *version;
                        let present = match kind {
                            0 => {
                                let mut item = key(&pk, sk);
                                item.insert("version".into(), n(&v.to_string()));
                                client.put_item().table_name(&table).set_item(Some(item)).send().await.unwrap();
                                true
                            }
                            1 => {
                                client
                                    .update_item()
                                    .table_name(&table)
                                    .set_key(Some(key(&pk, sk)))
                                    .update_expression("SET version = :v")
                                    .expression_attribute_values(":v", n(&v.to_string()))
                                    .return_values(ReturnValue::UpdatedNew)
                                    .send()
                                    .await
                                    .unwrap();
                                true
                            }
                            _ => {
                                state.delete_started.fetch_max(v, Ordering::SeqCst);
                                client.delete_item().table_name(&table).set_key(Some(key(&pk, sk))).send().await.unwrap();
                                false
                            }
                        };
                        *state.acked.lock() = (v, present);
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                    // Reads: 70%, split between GetItem of one item and Query of its partition.
                    r if r % 2 == 0 => {
                        let floor = *state.acked.lock();
                        let out = client.get_item().table_name(&table).set_key(Some(key(&pk, sk))).send().await.unwrap();
                        let found = out.item().map(version_of);
                        if state.is_stale(found, floor) {
                            stale.fetch_add(1, Ordering::Relaxed);
                            eprintln!("stale GetItem of {pk}/{sk}: found {found:?}, acknowledged {floor:?}");
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        let partition = &items[p * SORT_KEYS.len()..(p + 1) * SORT_KEYS.len()];
                        let floors: Vec<(u64, bool)> = partition.iter().map(|s| *s.acked.lock()).collect();
                        let out = client
                            .query()
                            .table_name(&table)
                            .key_condition_expression("pk = :p")
                            .expression_attribute_values(":p", s(&pk))
                            .send()
                            .await
                            .unwrap();
                        for (k, (item, floor)) in partition.iter().zip(floors).enumerate() {
                            let found = out
                                .items()
                                .iter()
                                .find(|i| i["sk"].as_s().unwrap() == SORT_KEYS[k])
                                .map(version_of);
                            if item.is_stale(found, floor) {
                                stale.fetch_add(1, Ordering::Relaxed);
                                eprintln!("stale Query of {pk} for {}: found {found:?}, acknowledged {floor:?}", SORT_KEYS[k]);
                            }
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (item_hits, query_hits) = (
        proxy.metric(ITEM_HITS).await,
        proxy.metric(QUERY_HITS).await,
    );
    let reads = reads.load(Ordering::Relaxed);
    println!(
        "stress: {reads} reads ({item_hits} item hits, {query_hits} query hits), {} writes, {} stale reads",
        writes.load(Ordering::Relaxed),
        stale.load(Ordering::Relaxed)
    );
    assert_eq!(stale.load(Ordering::Relaxed), 0);
    assert!(item_hits > 0.0, "the item cache served some reads");
    assert!(query_hits > 0.0, "the query cache served some reads");
}

/// With `cache.compression = "lz4"` entries take less memory, and every hit still answers the
/// engine's own bytes and checksum: GetItem and Query, and BatchGetItem built from them.
#[tokio::test]
async fn compressed_entries_answer_the_engines_bytes_in_less_memory() {
    let engine = Engine::dynalite().await;
    let plain = start_proxy(&engine.endpoint()).await;
    let packed = start_proxy_with(&engine.endpoint(), |c| {
        c.cache.compression = ddbcache::config::Compression::Lz4
    })
    .await;
    let direct = sdk_client(&engine.endpoint()).await;
    let table = unique_table("lz4");
    create_table(&direct, &table).await;
    let v = "a value that repeats itself, ".repeat(12);
    put_v(&direct, &table, "a", "1", &v).await;
    put_v(&direct, &table, "a", "2", "short").await;

    let get = format!(r#"{{"TableName":"{table}","Key":{{"pk":{{"S":"a"}},"sk":{{"S":"1"}}}}}}"#);
    let query = format!(
        r#"{{"TableName":"{table}","KeyConditionExpression":"pk = :p","ExpressionAttributeValues":{{":p":{{"S":"a"}}}}}}"#
    );
    for (target, body) in [
        ("DynamoDB_20120810.GetItem", get),
        ("DynamoDB_20120810.Query", query),
    ] {
        let (status, headers, expected) =
            dynamodb_post(&engine.endpoint(), Some(target), &[], body.clone()).await;
        assert_eq!(status, 200, "{target}");
        for proxy in [&plain, &packed] {
            for outcome in ["miss", "hit"] {
                let (s, h, answer) =
                    dynamodb_post(&proxy.endpoint, Some(target), &[], body.clone()).await;
                assert_eq!((s, &h["x-ddbcache"]), (status, &outcome.parse().unwrap()));
                assert_eq!(answer, expected, "{target} {outcome}");
                assert_eq!(
                    h["x-amz-crc32"], headers["x-amz-crc32"],
                    "{target} {outcome}"
                );
            }
        }
    }
    let bytes = r#"ddbcache_cache_bytes{cache="item"}"#;
    let queried = r#"ddbcache_cache_bytes{cache="query"}"#;
    assert!(packed.metric(bytes).await < plain.metric(bytes).await);
    assert!(packed.metric(queried).await < plain.metric(queried).await);

    // A BatchGetItem answered from a compressed entry (a/1) and a miss (a/2).
    let client = sdk_client(&packed.endpoint).await;
    let hits = packed.metric(ITEM_HITS).await;
    let vs = batch_vs(&client, &table, &[("a", "1"), ("a", "2")]).await;
    assert_eq!(packed.metric(ITEM_HITS).await - hits, 1.0);
    assert_eq!(vs, BTreeSet::from([v, "short".to_string()]));
}
