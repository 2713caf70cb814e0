//! Never stale after an acknowledged write, and the same answer as direct, where it is hardest:
//! key schemas that change behind ddbcache's back, members of a write the engine ignores, writes
//! whose outcome ddbcache cannot know, replicas that lag, clients that hang up, consumed capacity,
//! and tables named by ARN.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{KeysAndAttributes, ReturnConsumedCapacity, ScalarAttributeType};
use aws_sdk_dynamodb::Client;
use bytes::Bytes;
use common::differential::Pair;
use common::replica::LaggingReplica;
use common::*;
use serde_json::json;

const SCHEMA_FETCHES: &str = r#"ddbcache_schema_fetches_total{outcome="known"}"#;
const ITEM_HITS: &str = r#"ddbcache_cache_hits_total{cache="item"}"#;

/// Creates a table keyed by the string attribute `pk` alone.
async fn create_hash_table(client: &Client, name: &str) {
    create_single_key_table(client, name, "pk", ScalarAttributeType::S).await;
}

async fn put_item(client: &Client, table: &str, item: serde_json::Value) {
    let item = serde_json::from_value::<std::collections::HashMap<String, serde_json::Value>>(item)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, attr(&v)))
        .collect();
    client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .expect("PutItem");
}

/// `{"S": "x"}` as an SDK attribute value (strings only).
fn attr(v: &serde_json::Value) -> aws_sdk_dynamodb::types::AttributeValue {
    s(v["S"].as_str().expect("a string attribute"))
}

async fn get_hash_v(client: &Client, table: &str, pk: &str) -> Option<String> {
    client
        .get_item()
        .table_name(table)
        .key("pk", s(pk))
        .send()
        .await
        .expect("GetItem")
        .item()
        .map(|i| i["v"].as_s().unwrap().clone())
}

// ---------------------------------------------------------------------------------------------
// Key schemas are facts.

#[tokio::test]
async fn a_table_recreated_with_another_key_elsewhere_is_relearned_and_writes_stay_exact() {
    let engine = Engine::dynalite().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    let client = sdk_client(&proxy.endpoint).await;
    let direct = sdk_client(&engine.endpoint()).await;
    let table = unique_table("rekeyed");
    create_hash_table(&client, &table).await;
    put_item(&client, &table, json!({"pk": {"S": "a"}, "v": {"S": "1"}})).await;
    assert_eq!(get_hash_v(&client, &table, "a").await.as_deref(), Some("1"));

    // Behind ddbcache's back, the table is recreated keyed by pk and sk.
    recreate_table(&direct, &table).await;

    // Reads of the new key contradict the schema ddbcache knew: it is fetched again, and from
    // then on writes name the items they change.
    put_v(&client, &table, "a", "x", "2").await;
    for _ in 0..3 {
        assert_eq!(get_v(&client, &table, "a", "x").await.as_deref(), Some("2"));
    }
    put_v(&client, &table, "a", "x", "3").await;
    assert_eq!(get_v(&client, &table, "a", "x").await.as_deref(), Some("3"));
    assert!(
        proxy.metric(ITEM_HITS).await >= 1.0,
        "the new key is cached"
    );
    assert_eq!(
        proxy
            .metric(r#"ddbcache_cache_bypasses_total{cache="item",reason="key_mismatch"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_describe_table_answer_older_than_a_control_call_is_dropped() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy(&relay.endpoint).await;
    let client = sdk_client(&proxy.endpoint).await;
    let table = unique_table("late-schema");
    create_hash_table(&client, &table).await;

    // ddbcache's own DescribeTable (sent alongside the first read) is held back...
    let held = relay
        .hold_next(|target, _| target.ends_with(".DescribeTable"))
        .await;
    let read = {
        let client = client.clone();
        let table = table.clone();
        tokio::spawn(async move { get_hash_v(&client, &table, "a").await })
    };
    held.reached.await.unwrap();
    // ...while the table is deleted and created again with another key, through ddbcache.
    recreate_table(&client, &table).await;
    held.release.send(()).unwrap();
    let _ = read.await;

    // The late answer (key: pk) must not have become the schema: a read of the new key (pk, sk)
    // is then no contradiction, and is cached.
    put_v(&client, &table, "a", "1", "v").await;
    for _ in 0..2 {
        assert_eq!(get_v(&client, &table, "a", "1").await.as_deref(), Some("v"));
    }
    assert_eq!(
        proxy
            .metric(r#"ddbcache_cache_bypasses_total{cache="item",reason="key_mismatch"}"#)
            .await,
        0.0,
        "the late DescribeTable answer overwrote the newer schema"
    );
    assert_eq!(proxy.metric(ITEM_HITS).await, 1.0);
}

#[tokio::test]
async fn the_schema_costs_one_describe_table_per_table() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy(&relay.endpoint).await;
    let client = sdk_client(&proxy.endpoint).await;
    let table = unique_table("one-describe");
    create_table(&client, &table).await;
    for i in 0..20 {
        let sk = (i % 5).to_string();
        put_v(&client, &table, "a", &sk, &i.to_string()).await;
        assert_eq!(get_v(&client, &table, "a", &sk).await, Some(i.to_string()));
    }
    let own_describes = relay.seen(".DescribeTable", "").await;
    // create_table's own waits poll DescribeTable through the proxy too: count ddbcache's.
    assert_eq!(proxy.metric(SCHEMA_FETCHES).await, 1.0);
    assert!(own_describes >= 1);
}

// ---------------------------------------------------------------------------------------------
// What a write changes is what the engine changes.

#[tokio::test]
async fn members_the_engine_ignores_never_choose_what_is_invalidated() {
    let p = Pair::dynalite().await;
    let t = unique_table("stray");
    for c in [&p.proxied, &p.direct] {
        create_hash_table(c, &t).await;
        put_item(c, &t, json!({"pk": {"S": "a"}, "v": {"S": "old"}})).await;
    }
    assert_eq!(
        get_hash_v(&p.proxied, &t, "a").await.as_deref(),
        Some("old")
    );
    // A PutItem with a stray Key naming another item: the engine writes the Item's key.
    let body = json!({
        "TableName": t,
        "Key": {"pk": {"S": "b"}},
        "Item": {"pk": {"S": "a"}, "v": {"S": "new"}},
    })
    .to_string();
    for endpoint in [p.proxy.endpoint.clone(), p.engines.1.endpoint()] {
        let (status, _, answer) = dynamodb_post(
            &endpoint,
            Some("DynamoDB_20120810.PutItem"),
            &[],
            body.clone(),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }
    same!(
        p,
        |c| c.get_item().table_name(&t).key("pk", s("a")).send(),
        |o| o.item().map(canon_item)
    );
    assert_eq!(
        get_hash_v(&p.proxied, &t, "a").await.as_deref(),
        Some("new")
    );

    // A DeleteTable with a stray TargetTableName: the table it names in TableName goes.
    let body = json!({"TableName": t, "TargetTableName": "unrelated"}).to_string();
    for endpoint in [p.proxy.endpoint.clone(), p.engines.1.endpoint()] {
        let (status, _, _) = dynamodb_post(
            &endpoint,
            Some("DynamoDB_20120810.DeleteTable"),
            &[],
            body.clone(),
        )
        .await;
        assert_eq!(status, 200);
    }
    wait_deleted(&p.proxied, &t).await;
    wait_deleted(&p.direct, &t).await;
    let gone = same_error!(
        p,
        |c| c.get_item().table_name(&t).key("pk", s("a")).send(),
        |o| o.item().map(canon_item)
    );
    assert!(gone.starts_with("ResourceNotFoundException"), "{gone}");
}

// ---------------------------------------------------------------------------------------------
// Writes whose outcome ddbcache cannot know.

#[tokio::test]
async fn a_write_its_client_gave_up_on_is_sent_once_and_in_doubt_once_ddbcache_stops_waiting() {
    for in_doubt_window in [Duration::from_secs(600), Duration::ZERO] {
        let engine = Engine::dynalite().await;
        let relay = Relay::start(&engine.endpoint()).await;
        // No upstream.timeout: the client's own governs. The backstop is short, so that ddbcache
        // stops waiting for the write its client gave up on within the test.
        let proxy = start_proxy_with(&relay.endpoint, |c| {
            c.upstream.backstop = Duration::from_millis(300);
            c.cache.in_doubt_window = Some(in_doubt_window);
        })
        .await;
        let client = sdk_client(&proxy.endpoint).await;
        let impatient =
            sdk_client_giving_up_after(&proxy.endpoint, Duration::from_millis(200)).await;
        let table = unique_table("in-doubt");
        create_table(&client, &table).await;
        // Written straight to the engine: the relay counts only the write under test.
        put_v_direct(&engine, &table, "a", "1", "old").await;
        assert_eq!(
            get_v(&client, &table, "a", "1").await.as_deref(),
            Some("old")
        );

        // The write reaches the upstream but is not executed before its client gives up.
        let held = relay
            .hold_request_next(|target, body| {
                target.ends_with(".PutItem") && String::from_utf8_lossy(body).contains("new")
            })
            .await;
        let mut item = key("a", "1");
        item.insert("v".into(), s("new"));
        let err = impatient
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .unwrap_err();
        assert!(
            matches!(err, aws_sdk_dynamodb::error::SdkError::TimeoutError(_)),
            "the client's own timeout: {err:?}"
        );
        held.reached.await.unwrap();
        // ddbcache waits one backstop more for the answer nobody waits for, then stops: what the
        // write touched is in doubt.
        proxy
            .wait_metric(
                r#"ddbcache_upstream_errors_total{kind="backstop"}"#,
                Duration::from_secs(10),
                |v| v == 1.0,
            )
            .await;
        // A miss now reads the old value: it may be answered, but not stored.
        assert_eq!(
            get_v(&client, &table, "a", "1").await.as_deref(),
            Some("old")
        );
        // The write lands after all, sent once.
        held.release.send(()).unwrap();
        held.landed.await.unwrap();
        assert_eq!(
            relay.sent("PutItem").await,
            1,
            "ddbcache sent the write again"
        );
        let after = get_v(&client, &table, "a", "1").await;
        if in_doubt_window.is_zero() {
            // Without the in-doubt window the old value was stored and is served stale: the
            // guard is what this test proves.
            assert_eq!(after.as_deref(), Some("old"));
        } else {
            assert_eq!(after.as_deref(), Some("new"));
            assert!(
                proxy
                    .metric(r#"ddbcache_cache_unstored_total{cache="item",reason="in_doubt"}"#)
                    .await
                    >= 1.0
            );
        }
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_write_does_not_leave_the_item_stale() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy(&relay.endpoint).await;
    let client = sdk_client(&proxy.endpoint).await;
    let table = unique_table("hang-up");
    create_table(&client, &table).await;
    put_v(&client, &table, "a", "1", "old").await;

    let held = relay
        .hold_request_next(|target, body| {
            target.ends_with(".PutItem") && String::from_utf8_lossy(body).contains("new")
        })
        .await;
    let writer = {
        let (client, table) = (client.clone(), table.clone());
        tokio::spawn(async move { put_v(&client, &table, "a", "1", "new").await })
    };
    held.reached.await.unwrap();
    // The client gives up (an SDK timeout, a cancelled context): its connection closes.
    writer.abort();
    let _ = writer.await;
    // A read meanwhile fills the value from before the write.
    assert_eq!(
        get_v(&client, &table, "a", "1").await.as_deref(),
        Some("old")
    );
    held.release.send(()).unwrap();
    held.landed.await.unwrap();
    // Once the write has landed, ddbcache (which saw it through) must stop serving "old".
    let fresh = async {
        while get_v(&client, &table, "a", "1").await.as_deref() != Some("new") {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fresh)
        .await
        .expect("the pre-write value is still served after the write landed");
}

// ---------------------------------------------------------------------------------------------
// Replicas that lag.

#[tokio::test]
async fn a_lagging_replica_never_fills_the_cache_with_what_it_lacks() {
    for window in [Duration::from_secs(600), Duration::ZERO] {
        let engine = LaggingReplica::start().await;
        let proxy = start_proxy_with(&engine.endpoint, |c| {
            c.cache.consistency_window = window;
        })
        .await;
        let client = sdk_client(&proxy.endpoint).await;
        let table = unique_table("replica");
        create_table(&client, &table).await;
        put_v(&client, &table, "a", "1", "old").await;
        engine.catch_up().await;
        assert_eq!(
            get_v(&client, &table, "a", "1").await.as_deref(),
            Some("old")
        );
        assert_eq!(query_vs(&client, &table, "a").await, ["old"]);

        // Acknowledged by the primary; the replica has not applied it yet.
        put_v(&client, &table, "a", "1", "new").await;
        let read = get_v(&client, &table, "a", "1").await;
        let queried = query_vs(&client, &table, "a").await;
        engine.catch_up().await;
        let later = get_v(&client, &table, "a", "1").await;
        let later_query = query_vs(&client, &table, "a").await;
        if window.is_zero() {
            // Without the consistency window the replica's old answer is stored and served
            // after it caught up: the lag this test engine imitates is real.
            assert_eq!(read.as_deref(), Some("old"));
            assert_eq!(later.as_deref(), Some("old"));
            assert_eq!(later_query, ["old"]);
        } else {
            assert_eq!(read.as_deref(), Some("new"));
            assert_eq!(queried, ["new"]);
            assert_eq!(later.as_deref(), Some("new"));
            assert_eq!(later_query, ["new"]);
            assert!(
                proxy
                    .metric(r#"ddbcache_cache_consistent_reads_total{cache="item"}"#)
                    .await
                    >= 1.0
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ReturnConsumedCapacity.

#[tokio::test]
async fn hits_report_consumed_capacity_in_the_shape_asked_and_misses_store_none() {
    // The reads follow the writes at once: without a consistency window, so that misses asking
    // for capacity (which a consistent read would double) are stored.
    let p = Pair::with_config(Engine::dynalite().await, Engine::dynalite().await, |c| {
        c.cache.consistency_window = Duration::ZERO
    })
    .await;
    let t = unique_table("capacity");
    for c in [&p.proxied, &p.direct] {
        create_table(c, &t).await;
        put_v(c, &t, "a", "1", "x").await;
    }
    let get = |c: &Client, rcc: Option<ReturnConsumedCapacity>| {
        c.get_item()
            .table_name(&t)
            .set_key(Some(key("a", "1")))
            .set_return_consumed_capacity(rcc)
    };
    // The shape of ConsumedCapacity: which table, and which parts are there (the units of a hit
    // are zero, a hit consumes none).
    let shape = |cc: Option<&aws_sdk_dynamodb::types::ConsumedCapacity>| {
        cc.map(|cc| {
            (
                cc.table_name().map(str::to_string),
                cc.capacity_units().is_some(),
                cc.table().is_some(),
            )
        })
    };
    // A miss that asks for capacity, then a hit that asks: both report it.
    for _ in 0..2 {
        same!(
            p,
            |c| get(c, Some(ReturnConsumedCapacity::Total)).send(),
            |o| (o.item().map(canon_item), shape(o.consumed_capacity()))
        );
    }
    same!(
        p,
        |c| get(c, Some(ReturnConsumedCapacity::Indexes)).send(),
        |o| (o.item().map(canon_item), shape(o.consumed_capacity()))
    );
    // A hit that does not ask: the stored answer carries no capacity.
    same!(p, |c| get(c, None).send(), |o| (
        o.item().map(canon_item),
        shape(o.consumed_capacity())
    ));
    let hits = p.proxy.metric(ITEM_HITS).await;
    let metrics = http_get(&format!("{}/metrics", p.proxy.admin)).await.2;
    assert!(
        hits >= 3.0,
        "{hits}: {}",
        String::from_utf8_lossy(&metrics)
            .lines()
            .filter(|l| l.contains("bypass") || l.contains("unstored"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let batch = |c: &Client| {
        c.batch_get_item()
            .request_items(
                &t,
                KeysAndAttributes::builder()
                    .keys(key("a", "1"))
                    .keys(key("a", "2"))
                    .build()
                    .unwrap(),
            )
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
    };
    for _ in 0..2 {
        same!(p, |c| batch(c).send(), |o| {
            let caps: Vec<_> = o
                .consumed_capacity()
                .iter()
                .map(|c| shape(Some(c)))
                .collect();
            (o.responses().unwrap()[&t].len(), caps)
        });
    }
    let query = |c: &Client| {
        c.query()
            .table_name(&t)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s("a"))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
    };
    for _ in 0..2 {
        same!(p, |c| query(c).send(), |o| (
            o.items().len(),
            shape(o.consumed_capacity())
        ));
    }
    assert!(
        p.proxy
            .metric(r#"ddbcache_cache_hits_total{cache="query"}"#)
            .await
            >= 1.0
    );
}

// ---------------------------------------------------------------------------------------------
// Tables named by ARN.

/// DynamoDB takes a table's ARN wherever it takes its name; the local engines do not. The relay
/// resolves the ARNs of its account's tables to their names, and those of any other account to a
/// table that does not exist, as DynamoDB would answer a table it cannot see.
fn resolve_arns() -> Rewrite {
    Arc::new(|body: Bytes| {
        let text = String::from_utf8_lossy(&body)
            .replace("arn:aws:dynamodb:us-east-1:000000000000:table/", "")
            .replace(
                "arn:aws:dynamodb:us-east-1:111111111111:table/",
                "not-visible-",
            );
        Bytes::from(text)
    })
}

#[tokio::test]
async fn a_table_arn_shares_invalidation_with_its_name_and_a_foreign_arn_never_hits() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start_rewriting(&engine.endpoint(), resolve_arns()).await;
    let proxy = start_proxy(&relay.endpoint).await;
    let client = sdk_client(&proxy.endpoint).await;
    let table = unique_table("arn");
    let arn = format!("arn:aws:dynamodb:us-east-1:000000000000:table/{table}");
    create_table(&client, &table).await;
    put_v(&client, &table, "a", "1", "old").await;
    assert_eq!(
        get_v(&client, &table, "a", "1").await.as_deref(),
        Some("old")
    );

    // The ARN of the same table reads the same entry...
    let hits = proxy.metric(ITEM_HITS).await;
    assert_eq!(get_v(&client, &arn, "a", "1").await.as_deref(), Some("old"));
    assert_eq!(proxy.metric(ITEM_HITS).await - hits, 1.0);
    // ...and a write through the ARN invalidates what the name cached.
    put_v(&client, &arn, "a", "1", "new").await;
    assert_eq!(
        get_v(&client, &table, "a", "1").await.as_deref(),
        Some("new")
    );
    assert_eq!(get_v(&client, &arn, "a", "1").await.as_deref(), Some("new"));

    // Another account's table of the same name is another table, and a malformed ARN no table:
    // never this one's entries.
    let hits = proxy.metric(ITEM_HITS).await;
    for foreign in [
        format!("arn:aws:dynamodb:us-east-1:111111111111:table/{table}"),
        format!("arn:aws:dynamodb:us-east-1:000000000000:table/{table}/index/x"),
    ] {
        let err = client
            .get_item()
            .table_name(&foreign)
            .set_key(Some(key("a", "1")))
            .send()
            .await
            .expect_err(&foreign);
        assert!(
            matches!(
                err.code(),
                Some("ResourceNotFoundException") | Some("ValidationException")
            ),
            "{foreign}: {err:?}"
        );
    }
    assert_eq!(proxy.metric(ITEM_HITS).await, hits);
    assert_eq!(
        proxy
            .metric(r#"ddbcache_cache_bypasses_total{cache="item",reason="foreign_table"}"#)
            .await,
        1.0
    );
}
