//! A slow answer is still DynamoDB's answer: by default ddbcache sets no limit of its own on what
//! a client waits for. The relay holds an upstream answer back for longer than the config's
//! `upstream.backstop` (scaled down here, as the limit that applies to what no client waits for),
//! and the request whose client is still waiting gets the engine's answer, as it would direct.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use common::*;
use http::StatusCode;

/// The backstop the tests run with: far shorter than the default, so that holding an answer for
/// longer than it takes a moment.
const BACKSTOP: Duration = Duration::from_millis(200);

/// A Query page as compared: its items, `Count`, `ScannedCount` and `LastEvaluatedKey`.
type Page = (
    Vec<std::collections::BTreeMap<String, String>>,
    i32,
    i32,
    Option<std::collections::BTreeMap<String, String>>,
);

async fn query_page(client: &Client, table: &str) -> Page {
    let out = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :p")
        .expression_attribute_values(":p", s("big"))
        .send()
        .await
        .expect("Query");
    (
        out.items().iter().map(canon_item).collect(),
        out.count(),
        out.scanned_count(),
        out.last_evaluated_key().map(canon_item),
    )
}

/// moto's `test_dynamodb_max_1mb_limit`, scaled down: a Query whose page the engine cuts at 1 MB,
/// answered after longer than any limit of ddbcache's own would allow (with the 3 s default of
/// old, moto's own test got a 503 through ddbcache where it passed direct).
#[tokio::test]
async fn a_query_page_the_engine_answers_slowly_is_its_answer_through_ddbcache() {
    let (behind, direct_engine) = (Engine::moto().await, Engine::moto().await);
    let relay = Relay::start(&behind.endpoint()).await;
    let proxy = start_proxy_with(&relay.endpoint, |c| c.upstream.backstop = BACKSTOP).await;
    // The SDK with its own default timeouts (none on a call).
    let (proxied, direct) = (
        sdk_client(&proxy.endpoint).await,
        sdk_client(&direct_engine.endpoint()).await,
    );
    let table = unique_table("max-1mb");
    let big = "x".repeat(300 * 1024);
    for client in [&proxied, &direct] {
        create_table(client, &table).await;
        for i in 0..5 {
            let item = HashMap::from([
                ("pk".to_string(), s("big")),
                ("sk".to_string(), s(&format!("{i:02}"))),
                ("v".to_string(), AttributeValue::S(big.clone())),
            ]);
            client
                .put_item()
                .table_name(&table)
                .set_item(Some(item))
                .send()
                .await
                .unwrap();
        }
    }

    let held = relay
        .hold_next(|target, _| target.ends_with(".Query"))
        .await;
    let through = {
        let (client, table) = (proxied.clone(), table.clone());
        tokio::spawn(async move { query_page(&client, &table).await })
    };
    held.reached.await.unwrap();
    // The time under test: longer than ddbcache waits for anything no client waits for.
    tokio::time::sleep(3 * BACKSTOP).await;
    held.release.send(()).unwrap();
    let through = through.await.unwrap();

    let page = query_page(&direct, &table).await;
    assert!(page.3.is_some(), "the engine cuts the page at 1 MB");
    assert_eq!(through, page, "the same page as direct");
    assert_eq!(
        relay.sent("Query").await,
        1,
        "answered at the first attempt: the SDK had no 503 to retry"
    );
    for kind in ["timeout", "backstop"] {
        let series = format!("ddbcache_upstream_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(proxy.metric(&series).await, 0.0, "{series}");
    }
}

/// A miss that waits for another request's answer to the same key is not cut short either: when
/// the request it waited for is dropped (its client hung up, which ends that read's upstream
/// call), it sends its own, however long it has waited.
#[tokio::test]
async fn a_miss_waiting_on_a_read_whose_client_hung_up_sends_its_own() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy_with(&relay.endpoint, |c| c.upstream.backstop = BACKSTOP).await;
    let client = sdk_client(&proxy.endpoint).await;
    let table = unique_table("waiter");
    create_table(&client, &table).await;
    put_v_direct(&engine, &table, "a", "1", "v1").await;
    // The table's key schema learned, so that the read below is one GetItem upstream.
    assert_eq!(
        get_v(&client, &table, "a", "2").await,
        None,
        "another key of the table"
    );

    let held = relay
        .hold_next(|target, _| target.ends_with(".GetItem"))
        .await;
    let get = || {
        let endpoint = proxy.endpoint.clone();
        let body =
            format!(r#"{{"TableName":"{table}","Key":{{"pk":{{"S":"a"}},"sk":{{"S":"1"}}}}}}"#);
        tokio::spawn(async move {
            dynamodb_post(&endpoint, Some("DynamoDB_20120810.GetItem"), &[], body).await
        })
    };
    let first = get();
    held.reached.await.unwrap();
    let waiter = get();
    proxy
        .wait_metric(
            "ddbcache_requests_in_flight",
            Duration::from_secs(10),
            |v| v == 2.0,
        )
        .await;
    // The time under test: both wait longer than ddbcache waits for anything no client waits
    // for...
    tokio::time::sleep(3 * BACKSTOP).await;
    // ...then the first one's client hangs up.
    assert!(
        !first.is_finished(),
        "the first read was answered while its client waited"
    );
    first.abort();
    tokio::time::timeout(Duration::from_secs(10), held.abandoned)
        .await
        .expect("the read's upstream call outlived its client")
        .unwrap();
    let (status, _, body) = waiter.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains(r#"{"S":"v1"}"#));
    assert_eq!(
        relay.sent("GetItem").await,
        3,
        "the schema's read, the first read, and the waiter's own"
    );
}

/// `/readyz` follows the same rule: the readiness probe's attempt on a connection that never
/// answers is given up, and the next attempt (which waits longer) makes ddbcache ready.
#[tokio::test]
async fn a_readiness_probe_that_gets_no_answer_is_tried_again() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let held = relay
        .hold_next(|target, _| target.ends_with(".ListTables"))
        .await;
    let proxy = start_proxy(&relay.endpoint).await;
    held.reached.await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), held.abandoned)
        .await
        .expect("the probe waited on for good")
        .unwrap();
    proxy.wait_ready().await;
    assert_eq!(relay.sent("ListTables").await, 2);
}
