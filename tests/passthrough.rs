//! ddbcache as a transparent proxy: every operation answers through it exactly as the engine
//! answers directly; oversize and wrongly typed bodies get DynamoDB's error shape (the rest of
//! the HTTP surface is tests/http_surface.rs); a missing upstream gives retryable errors and the proxy
//! recovers; requests are re-signed for the upstream; metrics, readiness and draining behave.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::*;
use aws_sdk_dynamodb::Client;
use bytes::Bytes;
use common::differential::Pair;
use common::*;
use ddbcache::upstream::amz_date;
use http::StatusCode;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Every operation: the same call through ddbcache and directly, on two engines in the same state.

fn items(
    list: &[HashMap<String, AttributeValue>],
) -> Vec<std::collections::BTreeMap<String, String>> {
    list.iter().map(canon_item).collect()
}

fn table_view(t: Option<&TableDescription>) -> (Option<String>, String, String) {
    let t = t.expect("a table description");
    (
        t.table_name().map(str::to_string),
        format!("{:?}", t.key_schema()),
        format!("{:?}", t.attribute_definitions()),
    )
}

fn get(c: &Client, table: &str, pk: &str, sk: &str) -> GetItemFluentBuilder {
    c.get_item().table_name(table).set_key(Some(key(pk, sk)))
}

/// An item with every kind of attribute value.
fn rich_item(pk: &str, sk: &str, num: &str) -> HashMap<String, AttributeValue> {
    let mut item = key(pk, sk);
    item.extend([
        ("n".to_string(), AttributeValue::N(num.to_string())),
        ("s".to_string(), s("text ✓ with unicode")),
        (
            "b".to_string(),
            AttributeValue::B(Blob::new(vec![0u8, 1, 2, 255])),
        ),
        ("bool".to_string(), AttributeValue::Bool(true)),
        ("null".to_string(), AttributeValue::Null(true)),
        (
            "ss".to_string(),
            AttributeValue::Ss(vec!["x".into(), "y".into()]),
        ),
        (
            "ns".to_string(),
            AttributeValue::Ns(vec!["1".into(), "2.5".into()]),
        ),
        (
            "m".to_string(),
            AttributeValue::M(HashMap::from([
                ("nested".to_string(), n("7")),
                ("deep".to_string(), AttributeValue::L(vec![s("a"), n("1")])),
            ])),
        ),
        ("l".to_string(), AttributeValue::L(vec![s("one"), n("2")])),
    ]);
    item
}

#[tokio::test]
async fn item_and_table_operations_answer_as_the_engine_does() {
    let p = Pair::dynalite().await;
    let t = "passthrough";

    same!(p, |c| create_table_request(c, t).send(), |o| table_view(
        o.table_description()
    ));
    wait_active(&p.proxied, t).await;
    wait_active(&p.direct, t).await;
    same!(p, |c| c.describe_table().table_name(t).send(), |o| {
        let d = o.table().unwrap();
        (
            table_view(Some(d)),
            d.table_status().cloned(),
            d.item_count(),
        )
    });
    same!(p, |c| c.list_tables().send(), |o| o.table_names().to_vec());

    // Writes, with their ReturnValues, and a failed condition.
    same!(
        p,
        |c| c
            .put_item()
            .table_name(t)
            .set_item(Some(rich_item("a", "1", "1.50")))
            .return_values(ReturnValue::AllOld)
            .send(),
        |o| o.attributes().map(canon_item)
    );
    same!(
        p,
        |c| c
            .put_item()
            .table_name(t)
            .set_item(Some(rich_item("a", "1", "2")))
            .return_values(ReturnValue::AllOld)
            .send(),
        |o| o.attributes().map(canon_item)
    );
    let refused = same_error!(
        p,
        |c| c
            .put_item()
            .table_name(t)
            .set_item(Some(rich_item("a", "1", "3")))
            .condition_expression("attribute_not_exists(pk)")
            .send(),
        |o| o.attributes().map(canon_item)
    );
    assert!(
        refused.starts_with("ConditionalCheckFailedException:"),
        "{refused}"
    );
    for i in 2..5 {
        same!(
            p,
            |c| c
                .put_item()
                .table_name(t)
                .set_item(Some(rich_item("a", &i.to_string(), "9")))
                .send(),
            |o| o.attributes().map(canon_item)
        );
    }

    // Reads: the second GetItem is a cache hit through the proxy and must not differ.
    for _ in 0..2 {
        let got = same!(p, |c| get(c, t, "a", "1").send(), |o| o
            .item()
            .map(canon_item));
        assert!(got.is_some());
    }
    same!(
        p,
        |c| get(c, t, "a", "1")
            .projection_expression("#n, #m.nested, #l[1]")
            .expression_attribute_names("#n", "n")
            .expression_attribute_names("#m", "m")
            .expression_attribute_names("#l", "l")
            .send(),
        |o| o.item().map(canon_item)
    );
    same!(p, |c| get(c, t, "a", "none").send(), |o| o
        .item()
        .map(canon_item));
    same!(
        p,
        |c| get(c, t, "a", "1")
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send(),
        |o| o.item().map(canon_item)
    );
    same!(
        p,
        |c| c
            .update_item()
            .table_name(t)
            .set_key(Some(key("a", "1")))
            .update_expression("SET n = n + :one, #new = :v REMOVE ss")
            .expression_attribute_names("#new", "added")
            .expression_attribute_values(":one", n("1"))
            .expression_attribute_values(":v", s("fresh"))
            .return_values(ReturnValue::AllNew)
            .send(),
        |o| o.attributes().map(canon_item)
    );
    let query = |c: &Client| {
        c.query()
            .table_name(t)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s("a"))
    };
    same!(p, |c| query(c).send(), |o| (
        items(o.items()),
        o.count(),
        o.last_evaluated_key().map(canon_item)
    ));
    same!(
        p,
        |c| query(c).limit(2).scan_index_forward(false).send(),
        |o| { (items(o.items()), o.last_evaluated_key().map(canon_item)) }
    );
    same!(p, |c| c.scan().table_name(t).send(), |o| (
        items(o.items()),
        o.count(),
        o.scanned_count()
    ));
    same!(
        p,
        |c| c
            .scan()
            .table_name(t)
            .filter_expression("n > :x")
            .expression_attribute_values(":x", n("5"))
            .send(),
        |o| (items(o.items()), o.count(), o.scanned_count())
    );

    // Batches.
    let batch = |c: &Client| {
        c.batch_write_item().request_items(
            t,
            vec![
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(rich_item("b", "1", "1")))
                            .build()
                            .unwrap(),
                    )
                    .build(),
                WriteRequest::builder()
                    .delete_request(
                        DeleteRequest::builder()
                            .set_key(Some(key("a", "4")))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            ],
        )
    };
    same!(p, |c| batch(c).send(), |o| o
        .unprocessed_items()
        .map_or(0, |u| u.len()));
    let batch_get = |c: &Client| {
        let keys = KeysAndAttributes::builder()
            .keys(key("a", "1"))
            .keys(key("b", "1"))
            .keys(key("a", "4"))
            .keys(key("z", "0"))
            .build()
            .unwrap();
        c.batch_get_item().request_items(t, keys)
    };
    for _ in 0..2 {
        let got = same!(p, |c| batch_get(c).send(), |o| {
            let mut v = items(&o.responses().unwrap()[t]);
            v.sort();
            (v, o.unprocessed_keys().map_or(0, |u| u.len()))
        });
        assert_eq!(got.0.len(), 2);
    }

    same!(
        p,
        |c| c
            .delete_item()
            .table_name(t)
            .set_key(Some(key("a", "1")))
            .return_values(ReturnValue::AllOld)
            .send(),
        |o| o.attributes().map(canon_item)
    );
    same!(p, |c| get(c, t, "a", "1").send(), |o| o
        .item()
        .map(canon_item));
    same!(p, |c| query(c).send(), |o| items(o.items()));

    same!(p, |c| c.delete_table().table_name(t).send(), |o| {
        o.table_description()
            .and_then(|d| d.table_name().map(str::to_string))
    });
    wait_deleted(&p.proxied, t).await;
    wait_deleted(&p.direct, t).await;
    let gone = same_error!(p, |c| get(c, t, "a", "2").send(), |o| o
        .item()
        .map(canon_item));
    assert!(gone.starts_with("ResourceNotFoundException:"), "{gone}");
    drop(p.proxy);
}

#[tokio::test]
async fn transactions_partiql_and_ttl_answer_as_the_engine_does() {
    let p = Pair::moto().await;
    let t = "passthrough-moto";
    same!(p, |c| create_table_request(c, t).send(), |o| table_view(
        o.table_description()
    ));
    wait_active(&p.proxied, t).await;
    wait_active(&p.direct, t).await;

    let transact_write = |c: &Client, v: &str, expect_absent: bool| {
        let mut put = Put::builder()
            .table_name(t)
            .set_item(Some(rich_item("t", "1", v)));
        if expect_absent {
            put = put.condition_expression("attribute_not_exists(pk)");
        }
        c.transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .put(put.build().unwrap())
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(t)
                            .set_key(Some(key("t", "2")))
                            .update_expression("SET v = :v")
                            .expression_attribute_values(":v", s(v))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
    };
    same!(p, |c| transact_write(c, "1", true).send(), |_o| ());
    let cancelled = same_error!(p, |c| transact_write(c, "2", true).send(), |_o| ());
    assert!(
        cancelled.starts_with("TransactionCanceledException:"),
        "{cancelled}"
    );
    same!(p, |c| transact_write(c, "3", false).send(), |_o| ());

    let transact_get = |c: &Client| {
        let get = |sk: &str| {
            TransactGetItem::builder()
                .get(
                    Get::builder()
                        .table_name(t)
                        .set_key(Some(key("t", sk)))
                        .build()
                        .unwrap(),
                )
                .build()
        };
        c.transact_get_items()
            .transact_items(get("1"))
            .transact_items(get("2"))
            .transact_items(get("3"))
    };
    let got = same!(p, |c| transact_get(c).send(), |o| {
        o.responses()
            .iter()
            .map(|r| r.item().map(canon_item))
            .collect::<Vec<_>>()
    });
    assert_eq!(got.iter().filter(|i| i.is_some()).count(), 2);

    // PartiQL with parameters: insert, update, select.
    let statement = |c: &Client, sql: &str, params: Vec<AttributeValue>| {
        c.execute_statement()
            .statement(sql)
            .set_parameters((!params.is_empty()).then_some(params))
    };
    let insert = format!(r#"INSERT INTO "{t}" VALUE {{'pk': 'q', 'sk': '1', 'v': 'one'}}"#);
    let update = format!(r#"UPDATE "{t}" SET v = ? WHERE pk = ? AND sk = ?"#);
    let select = format!(r#"SELECT * FROM "{t}" WHERE pk = ?"#);
    same!(p, |c| statement(c, &insert, vec![]).send(), |o| items(
        o.items()
    ));
    same!(
        p,
        |c| statement(c, &select, vec![s("q")]).send(),
        |o| items(o.items())
    );
    same!(
        p,
        |c| statement(c, &update, vec![s("uno"), s("q"), s("1")]).send(),
        |o| items(o.items())
    );
    let selected = same!(
        p,
        |c| statement(c, &select, vec![s("q")]).send(),
        |o| items(o.items())
    );
    assert_eq!(selected[0]["v"], canon(&s("uno")));
    // The item cache saw the PartiQL write: GetItem through the proxy agrees.
    same!(p, |c| get(c, t, "q", "1").send(), |o| o
        .item()
        .map(canon_item));

    // Item TTL settings.
    let spec = TimeToLiveSpecification::builder()
        .attribute_name("expires")
        .enabled(true)
        .build()
        .unwrap();
    same!(
        p,
        |c| c
            .update_time_to_live()
            .table_name(t)
            .time_to_live_specification(spec.clone())
            .send(),
        |o| format!("{:?}", o.time_to_live_specification())
    );
    same!(p, |c| c.describe_time_to_live().table_name(t).send(), |o| {
        format!("{:?}", o.time_to_live_description())
    });
}

#[tokio::test]
async fn streams_calls_reach_the_streams_api() {
    let p = Pair::moto().await;
    let t = "passthrough-streams";
    same!(
        p,
        |c| create_table_request(c, t)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .unwrap()
            )
            .send(),
        |o| table_view(o.table_description())
    );
    let list_streams = |endpoint: String| async move {
        let body = json!({ "TableName": t }).to_string();
        let (status, _, body) = dynamodb_post(
            &endpoint,
            Some("DynamoDBStreams_20120810.ListStreams"),
            &[],
            body,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<Value>(&body).unwrap()
    };
    let via_proxy = list_streams(p.proxy.endpoint.clone()).await;
    let direct = list_streams(p.engines.1.endpoint()).await;
    let tables = |v: &Value| {
        v["Streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["TableName"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(tables(&via_proxy), tables(&direct));
    assert_eq!(tables(&via_proxy), [json!(t)]);

    let arn = via_proxy["Streams"][0]["StreamArn"].as_str().unwrap();
    let (status, _, body) = dynamodb_post(
        &p.proxy.endpoint,
        Some("DynamoDBStreams_20120810.DescribeStream"),
        &[],
        json!({ "StreamArn": arn }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let described: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(described["StreamDescription"]["TableName"], json!(t));
}

// ---------------------------------------------------------------------------------------------
// The protocol boundary, in raw HTTP.

fn error_type(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v["__type"]
        .as_str()
        .and_then(|t| t.strip_prefix("com.amazonaws.dynamodb.v20120810#"))
        .unwrap_or_else(|| panic!("__type is not DynamoDB's: {v}"))
        .to_string()
}

#[tokio::test]
async fn oversize_and_malformed_bodies_get_dynamodb_errors() {
    let engine = Engine::dynalite().await;
    let proxy = start_proxy_with(&engine.endpoint(), |c| c.server.max_body_bytes = 1024).await;
    let client = sdk_client(&proxy.endpoint).await;
    create_table(&client, "bodies").await;

    let big = json!({"TableName": "bodies", "Item": {"pk": {"S": "a"}, "sk": {"S": "1"}, "pad": {"S": "x".repeat(4096)}}});
    let (status, _, body) = dynamodb_post(
        &proxy.endpoint,
        Some("DynamoDB_20120810.PutItem"),
        &[],
        big.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_type(&body), "ValidationException");
    // The SDK sees it as a client error, not as something to retry.
    let err = client
        .put_item()
        .table_name("bodies")
        .set_item(Some(rich_item("a", "1", "1")))
        .item("pad", s(&"x".repeat(4096)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"));
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 413);

    // A JSON object with fields of the wrong type is the engine's to answer, in its own words.
    for (target, body) in [
        ("GetItem", r#"{"TableName": 5, "Key": {}}"#),
        (
            "BatchGetItem",
            r#"{"RequestItems": {"bodies": {"Keys": "a"}}}"#,
        ),
    ] {
        let target = format!("DynamoDB_20120810.{target}");
        let via_proxy = dynamodb_post(&proxy.endpoint, Some(&target), &[], body).await;
        let direct = dynamodb_post(&engine.endpoint(), Some(&target), &[], body).await;
        assert_eq!(via_proxy.0, direct.0, "{target} {body}");
        assert_eq!(via_proxy.2, direct.2, "{target} {body}");
    }
    // The proxy keeps serving after bad input.
    client.list_tables().send().await.unwrap();
}

#[tokio::test]
async fn responses_and_gzip_request_bodies_pass_through_unchanged() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy(&relay.endpoint).await;
    let client = sdk_client(&proxy.endpoint).await;
    create_table(&client, "gzip").await;

    // A gzip-compressed body reaches the upstream byte for byte, encoding header included, and
    // the upstream's answer comes back as the engine gives it for the same request directly.
    let put =
        json!({"TableName": "gzip", "Item": {"pk": {"S": "g"}, "sk": {"S": "1"}}}).to_string();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(put.as_bytes()).unwrap();
    let gzipped = Bytes::from(encoder.finish().unwrap());
    let gzip = [("content-encoding", "gzip")];
    let target = Some("DynamoDB_20120810.PutItem");
    let (status, headers, body) =
        dynamodb_post(&proxy.endpoint, target, &gzip, gzipped.clone()).await;
    let (direct_status, direct_headers, direct_body) =
        dynamodb_post(&engine.endpoint(), target, &gzip, gzipped.clone()).await;
    assert_eq!((status, &body), (direct_status, &direct_body));
    assert_eq!(headers["content-type"], direct_headers["content-type"]);
    let upstream_saw = relay.captured().await.pop().unwrap();
    assert_eq!(upstream_saw.body, gzipped);
    assert_eq!(upstream_saw.headers["content-encoding"], "gzip");

    // A plain write: body, status, request id and checksum are the upstream's own.
    let (status, headers, body) = dynamodb_post(&proxy.endpoint, target, &[], put.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let crc: u32 = headers["x-amz-crc32"].to_str().unwrap().parse().unwrap();
    assert_eq!(crc, crc32fast::hash(&body));
    assert!(!headers["x-amzn-requestid"].is_empty());

    // An upstream error is passed through as it is, status and shape.
    let (status, _, body) = dynamodb_post(
        &proxy.endpoint,
        Some("DynamoDB_20120810.DescribeTable"),
        &[],
        r#"{"TableName":"no-such-table"}"#,
    )
    .await;
    let (direct_status, _, direct_body) = dynamodb_post(
        &engine.endpoint(),
        Some("DynamoDB_20120810.DescribeTable"),
        &[],
        r#"{"TableName":"no-such-table"}"#,
    )
    .await;
    assert_eq!((status, body), (direct_status, direct_body));
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

// ---------------------------------------------------------------------------------------------
// Upstream failure.

#[tokio::test]
async fn a_stopped_upstream_gives_retryable_errors_and_the_proxy_recovers() {
    let mut engine = Engine::dynalite().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    let client = sdk_client_with_attempts(&proxy.endpoint, 1).await;
    create_table(&client, "outage").await;
    engine.stop().await;

    let errors = "ddbcache_upstream_errors_total{kind=\"connect\"}";
    let before = proxy.metric(errors).await;
    let err = client.list_tables().send().await.unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
    assert_eq!(err.code(), Some("ServiceUnavailable"));
    let err = client
        .put_item()
        .table_name("outage")
        .set_item(Some(key("a", "1")))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
    let (status, _, body) = dynamodb_post(
        &proxy.endpoint,
        Some("DynamoDB_20120810.ListTables"),
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_type(&body), "ServiceUnavailable");
    // Each failed call is counted (and so is the DescribeTable ddbcache itself sends to learn the
    // key schema of the table the PutItem wrote).
    assert!(proxy.metric(errors).await - before >= 3.0);

    // The engine comes back (empty, on the same port): the same proxy serves again.
    engine.start_again().await;
    create_table(&client, "outage").await;
    client
        .put_item()
        .table_name("outage")
        .set_item(Some(key("a", "1")))
        .send()
        .await
        .unwrap();
    let got = client
        .get_item()
        .table_name("outage")
        .set_key(Some(key("a", "1")))
        .send()
        .await
        .unwrap();
    assert!(got.item().is_some());
}

#[tokio::test]
async fn a_write_cut_short_is_answered_retryably_seen_through_and_sent_once() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    // The shorter limit, opted into.
    let proxy = start_proxy_with(&relay.endpoint, |c| {
        c.upstream.timeout = Some(Duration::from_millis(300))
    })
    .await;
    let client = sdk_client_with_attempts(&proxy.endpoint, 1).await;
    create_table(&client, "slow").await;
    let put = || {
        client
            .put_item()
            .table_name("slow")
            .set_item(Some(key("a", "1")))
            .send()
    };

    // No answer within upstream.timeout: the client is answered, the write goes on.
    let held = relay
        .hold_next(|target, _| target.ends_with("PutItem"))
        .await;
    let err = put().await.unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
    assert_eq!(
        proxy
            .metric("ddbcache_upstream_errors_total{kind=\"timeout\"}")
            .await,
        1.0
    );
    held.release.send(()).unwrap();
    // ddbcache still waited for the answer, to invalidate when it came.
    proxy
        .wait_metric(
            r#"ddbcache_upstream_request_duration_seconds_count{operation="PutItem"}"#,
            Duration::from_secs(10),
            |v| v == 1.0,
        )
        .await;

    // The connection lost under a write: answered retryably too.
    relay
        .fault(|target, _| target.ends_with("PutItem"), Fault::Reset)
        .await;
    let err = put().await.unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
    assert_eq!(
        relay.sent("PutItem").await,
        2,
        "the proxy must not retry a write on its own"
    );
}

// ---------------------------------------------------------------------------------------------
// Signing.

const BOGUS_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDCLIENT/20200101/eu-north-1/dynamodb/aws4_request, SignedHeaders=host, Signature=deadbeef";

#[tokio::test]
async fn requests_are_re_signed_for_the_upstream_host() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy_with(&relay.endpoint, |c| c.upstream.sign = true).await;
    proxy.wait_ready().await;

    let (status, _, _) = dynamodb_post(
        &proxy.endpoint,
        Some("DynamoDB_20120810.ListTables"),
        &[
            ("authorization", BOGUS_AUTH),
            ("x-amz-security-token", "client-token"),
        ],
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = relay.captured().await.pop().unwrap();
    let auth = seen.headers["authorization"].to_str().unwrap();
    let today = &amz_date::format(SystemTime::now())[..8];
    assert!(
        auth.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{today}/us-east-1/dynamodb/aws4_request, "
        )),
        "{auth}"
    );
    assert!(
        auth.contains("SignedHeaders=") && auth.contains(";host;"),
        "{auth}"
    );
    let authority = relay.endpoint.trim_start_matches("http://");
    assert_eq!(seen.headers["host"], authority);
    assert!(
        !seen.headers.contains_key("x-amz-security-token"),
        "the client's session token must not reach the upstream"
    );
    assert_eq!(
        auth,
        expected_authorization(&seen, &relay.endpoint, "us-east-1")
    );

    // The SDK's own signed requests work the same way.
    let client = sdk_client(&proxy.endpoint).await;
    create_table(&client, "signed").await;
    let seen = relay.captured().await.pop().unwrap();
    assert_eq!(
        seen.headers["authorization"].to_str().unwrap(),
        expected_authorization(&seen, &relay.endpoint, "us-east-1")
    );
}

#[tokio::test]
async fn without_signing_the_inbound_authorization_is_forwarded_as_is() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy(&relay.endpoint).await;
    let (status, _, _) = dynamodb_post(
        &proxy.endpoint,
        Some("DynamoDB_20120810.ListTables"),
        &[("authorization", BOGUS_AUTH)],
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = relay.captured().await.pop().unwrap();
    assert_eq!(seen.headers["authorization"], BOGUS_AUTH);
}

// ---------------------------------------------------------------------------------------------
// Listener, metrics, readiness and draining.

#[tokio::test]
async fn metrics_count_requests_by_operation_and_status() {
    let engine = Engine::dynalite().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    let client = sdk_client(&proxy.endpoint).await;
    create_table(&client, "counted").await;

    let list = "ddbcache_requests_total{operation=\"ListTables\",status=\"200\"}";
    let upstream = "ddbcache_upstream_request_duration_seconds_count{operation=\"ListTables\"}";
    let missing = "ddbcache_requests_total{operation=\"GetItem\",status=\"400\"}";
    let (list0, upstream0, missing0) = (
        proxy.metric(list).await,
        proxy.metric(upstream).await,
        proxy.metric(missing).await,
    );
    for _ in 0..7 {
        client.list_tables().send().await.unwrap();
    }
    for _ in 0..3 {
        let err = client
            .get_item()
            .table_name("no-such-table")
            .set_key(Some(key("a", "1")))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("ResourceNotFoundException"));
    }
    assert_eq!(proxy.metric(list).await - list0, 7.0);
    assert_eq!(proxy.metric(upstream).await - upstream0, 7.0);
    assert_eq!(proxy.metric(missing).await - missing0, 3.0);
    assert_eq!(proxy.metric("ddbcache_requests_in_flight").await, 0.0);

    let (status, headers, body) = http_get(&format!("{}/metrics", proxy.admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    for family in [
        "ddbcache_request_duration_seconds_bucket",
        "ddbcache_upstream_request_duration_seconds_bucket",
        "ddbcache_ready",
    ] {
        assert!(text.contains(family), "{family} missing from /metrics");
    }
}

#[tokio::test]
async fn readiness_flips_while_draining_and_in_flight_requests_finish() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy(&relay.endpoint).await;
    let client = sdk_client_with_attempts(&proxy.endpoint, 1).await;
    create_table(&client, "drain").await;
    proxy.wait_ready().await;
    assert_eq!(
        http_get(&format!("{}/readyz", proxy.admin)).await.0,
        StatusCode::OK
    );
    assert_eq!(proxy.metric("ddbcache_ready").await, 1.0);

    // A request is in flight (its upstream answer held back) when shutdown begins.
    let held = relay
        .hold_next(|target, _| target.ends_with("GetItem"))
        .await;
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .get_item()
                .table_name("drain")
                .set_key(Some(key("a", "1")))
                .send()
                .await
        })
    };
    held.reached.await.unwrap();
    let mut proxy = proxy;
    proxy.begin_shutdown();
    proxy.wait_readiness(false).await;
    let (status, _, _) = http_get(&format!("{}/readyz", proxy.admin)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        http_get(&format!("{}/healthz", proxy.admin)).await.0,
        StatusCode::OK
    );

    held.release.send(()).unwrap();
    let answer = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert!(answer.item().is_none());
    proxy.shutdown().await.unwrap();
}

#[tokio::test]
async fn readiness_waits_for_the_upstream() {
    let mut engine = Engine::dynalite().await;
    engine.stop().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    assert_eq!(
        http_get(&format!("{}/readyz", proxy.admin)).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    engine.start_again().await;
    proxy.wait_ready().await;
    assert_eq!(
        http_get(&format!("{}/readyz", proxy.admin)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn h2c_clients_are_served() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client as HyperClient;
    use hyper_util::rt::TokioExecutor;

    let engine = Engine::dynalite().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    let h2: HyperClient<_, Full<Bytes>> = HyperClient::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for _ in 0..3 {
        let request = http::Request::post(&proxy.endpoint)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", "DynamoDB_20120810.ListTables")
            .header("authorization", BOGUS_AUTH)
            .header("x-amz-date", "20200101T000000Z")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let response = h2.request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["TableNames"].is_array());
    }
}

// ---------------------------------------------------------------------------------------------
// The binary's configuration handling.

fn ddbcache(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ddbcache"));
    command.args(args).env_remove("DDBCACHE_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

/// The standard output of a `ddbcache` run that must succeed.
fn ddbcache_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = ddbcache(args, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn check_config_prints_the_effective_config_and_names_bad_keys() {
    let dir = std::env::temp_dir().join(format!("ddbcache-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[upstream]\nendpoint = \"http://127.0.0.1:4567\"\nsign = false\n",
    )
    .unwrap();

    let out = ddbcache_ok(
        &["--config", good.to_str().unwrap(), "check-config"],
        &[
            ("DDBCACHE_ITEM_TTL", "7s"),
            ("DDBCACHE_LISTEN_ADDR", "0.0.0.0:8123"),
        ],
    );
    let effective: toml::Value = toml::from_str(&out).unwrap();
    assert_eq!(
        effective["upstream"]["endpoint"].as_str(),
        Some("http://127.0.0.1:4567")
    );
    assert_eq!(effective["upstream"]["sign"].as_bool(), Some(false));
    assert_eq!(effective["cache"]["item"]["ttl"].as_str(), Some("7s"));
    assert_eq!(effective["listen"]["addr"].as_str(), Some("0.0.0.0:8123"));

    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "[cache.item]\nttl = \"1m\"\ncapacty = \"1GiB\"\n").unwrap();
    let bad_type = dir.join("bad-type.toml");
    std::fs::write(&bad_type, "[cache.query]\nttl = \"soon\"\n").unwrap();
    for (file, env, names) in [
        (&unknown, None, "capacty"),
        (&bad_type, None, "ttl"),
        (
            &good,
            Some(("DDBCACHE_UPSTREAM_SIGN", "maybe")),
            "DDBCACHE_UPSTREAM_SIGN",
        ),
    ] {
        let env: Vec<_> = env.into_iter().collect();
        let out = ddbcache(&["--config", file.to_str().unwrap(), "check-config"], &env);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(names),
            "error does not name {names}: {stderr}"
        );
    }
    let out = ddbcache(
        &["--config", "/nonexistent/ddbcache.toml", "check-config"],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ddbcache.toml"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_config_json_has_bytes_seconds_and_the_container_memory() {
    let capacities = [
        ("DDBCACHE_ITEM_CAPACITY", "64MiB"),
        ("DDBCACHE_QUERY_CAPACITY", "64MiB"),
    ];
    let out = ddbcache_ok(
        &["--config", "/dev/null", "check-config", "--json"],
        &[
            capacities[0],
            capacities[1],
            ("DDBCACHE_SHUTDOWN_GRACE", "10s"),
            // The old spelling, in milliseconds, printed under the new name.
            ("DDBCACHE_UPSTREAM_TIMEOUT_MS", "250"),
        ],
    );
    let effective: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(effective["cache"]["item"]["capacity"], 64 << 20);
    assert_eq!(effective["server"]["shutdown_grace"], 10.0);
    assert_eq!(effective["upstream"]["timeout"], 0.25);
    assert_eq!(effective["upstream"].get("timeout_ms"), None);
    // 128MiB × 1.25 + 64MiB of bodies + 2 × 1024 connections × 32KiB + 30MiB.
    assert_eq!(effective["derived"]["container_memory_bytes"], 318 << 20);

    let text = ddbcache_ok(&["--config", "/dev/null", "check-config"], &capacities);
    assert!(text.contains("333447168 bytes (318Mi)"), "{text}");
}

#[test]
fn check_config_advises_on_the_fleet_redis_while_the_shared_tier_is_on() {
    let bus = ("DDBCACHE_FLEET_REDIS_URL", "redis://bus:6379");
    let off = ddbcache_ok(&["--config", "/dev/null", "check-config"], &[bus]);
    assert!(!off.contains("maxmemory"), "{off}");
    let on = ddbcache_ok(
        &["--config", "/dev/null", "check-config"],
        &[bus, ("DDBCACHE_FLEET_SHARED", "true")],
    );
    assert!(on.contains("maxmemory-policy allkeys-lru"), "{on}");
    // Still a config file: the advice is comments.
    let effective: toml::Value = toml::from_str(&on).unwrap();
    assert_eq!(
        effective["fleet"]["shared"]["enabled"].as_bool(),
        Some(true)
    );
}
