//! The HTTP surface a DynamoDB endpoint has besides its operations — `GET`, CORS, wrong methods
//! and content types, bodies that are not JSON objects, unknown targets, malformed signatures,
//! signatures in the query string, bodies over the limit — answered through ddbcache exactly as
//! the engine answers directly: the same raw request to both, status, body and the headers that
//! matter compared.

mod common;

use std::time::Duration;

use common::raw::*;
use common::*;
use http::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const QUERY_AUTH: &str = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20200101%2Fus-east-1%2Fdynamodb%2Faws4_request&X-Amz-Date=20200101T000000Z&X-Amz-SignedHeaders=host&X-Amz-Signature=0";

/// A new table holding the item (`a`, `1`), made through `endpoint`, and a GetItem of it.
async fn table_with_item(endpoint: &str, prefix: &str) -> (String, Raw) {
    let client = sdk_client(endpoint).await;
    let table = unique_table(prefix);
    create_table(&client, &table).await;
    client
        .put_item()
        .table_name(&table)
        .set_item(Some(key("a", "1")))
        .send()
        .await
        .unwrap();
    let body = json!({"TableName": table, "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}}});
    (
        table,
        Raw::op("DynamoDB_20120810.GetItem", &body.to_string()),
    )
}

#[tokio::test]
async fn get_options_and_other_methods_answer_as_the_engine_does() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy(&relay.endpoint).await;
    proxy.wait_ready().await;
    let (p, e) = (proxy.endpoint.as_str(), engine.endpoint());
    let health = same(p, &e, &Raw::new(Method::GET)).await;
    assert_eq!(health.body, "healthy: dynamodb.us-east-1.amazonaws.com ");
    same(p, &e, &Raw::new(Method::GET).path("/anything?x=1")).await;
    let cors = same(
        p,
        &e,
        &Raw::new(Method::GET).header("origin", "https://app"),
    )
    .await;
    assert_eq!(cors.header("access-control-allow-origin"), Some("*"));

    // A CORS preflight, with and without what the browser asks for.
    let preflight = Raw::new(Method::OPTIONS).header("origin", "https://app");
    same(p, &e, &preflight).await;
    let asked = preflight
        .header(
            "access-control-request-headers",
            "content-type, x-amz-target",
        )
        .header("access-control-request-method", "POST");
    let allowed = same(p, &e, &asked).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(allowed.header("access-control-max-age"), Some("172800"));

    // Not a preflight without Origin; other methods; bodies in other content types.
    for req in [
        Raw::new(Method::OPTIONS),
        Raw::new(Method::PUT),
        Raw::new(Method::DELETE),
        Raw::new(Method::PATCH).header("origin", "https://app"),
        Raw::new(Method::POST).body("hi"),
        Raw::new(Method::POST)
            .header("content-type", "whatever")
            .body("{}"),
        Raw::op("DynamoDB_20120810.ListTables", "{}").header("content-type", "text/plain"),
    ] {
        let a = same(p, &e, &req).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{req:?}");
    }
    assert!(
        relay
            .captured()
            .await
            .iter()
            .all(|c| c.headers["x-amz-target"] == "DynamoDB_20120810.ListTables"),
        "none of these may reach the upstream (the readiness probe does)"
    );
}

#[tokio::test]
async fn malformed_json_targets_and_signatures_answer_as_the_engine_does() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    // Re-signing must not hide a malformed signature: the same answers from a signing proxy.
    let unsigned = start_proxy(&relay.endpoint).await;
    let signing = start_proxy_with(&relay.endpoint, |c| c.upstream.sign = true).await;
    unsigned.wait_ready().await;
    signing.wait_ready().await;
    let e = engine.endpoint();
    let list = Raw::op("DynamoDB_20120810.ListTables", "{}");
    let cases = [
        // Not JSON: refused before the target is even looked at.
        list.clone().body("hi"),
        list.clone().body("{"),
        list.clone().body(" "),
        list.clone()
            .header("content-type", "application/json")
            .body("{"),
        Raw::op("Nonsense", "{"),
        // No, foreign or malformed targets.
        list.clone().without("x-amz-target"),
        list.clone().without("x-amz-target").header("origin", "x"),
        list.clone().header("x-amz-target", "whatever"),
        list.clone().header("x-amz-target", "DynamoDB_20120810."),
        list.clone()
            .header("x-amz-target", "DynamoDB_20120810.List.Tables"),
        list.clone().header("x-amz-target", "AmazonSQS.SendMessage"),
        list.clone()
            .header("x-amz-target", "DynamoDB_20120810.listTables"),
        // Signatures missing or malformed, in the header or in the query string.
        list.clone().without("authorization"),
        list.clone().header("authorization", "AWS4"),
        list.clone().header("authorization", "Bearer x"),
        list.clone().header("authorization", "AWS4-"),
        list.clone()
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=host",
            )
            .without("x-amz-date"),
        list.clone().path(&format!("/?{QUERY_AUTH}")),
        list.clone()
            .without("authorization")
            .path("/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=x"),
        // A known operation with no body at all.
        list.clone().body(""),
        list.clone().body("").header("origin", "https://app"),
    ];
    for p in [&unsigned.endpoint, &signing.endpoint] {
        for req in &cases {
            let a = same(p, &e, req).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{req:?}");
        }
    }
    assert!(
        relay
            .captured()
            .await
            .iter()
            .all(|c| c.body.as_ref() == br#"{"Limit":1}"#),
        "none of these may reach the upstream (the readiness probe does)"
    );

    // The same checks pass what they should: a signature in the query string, a Date header.
    let query_signed = list
        .clone()
        .without("authorization")
        .path(&format!("/?{QUERY_AUTH}"));
    let dated = list
        .clone()
        .without("x-amz-date")
        .header("date", "Wed, 01 Jan 2020 00:00:00 GMT");
    for p in [&unsigned.endpoint, &signing.endpoint] {
        assert_eq!(same(p, &e, &query_signed).await.status, StatusCode::OK);
        assert_eq!(same(p, &e, &dated).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_get_dynamodbs_serialization_error() {
    // dynalite dies on a `null` body and answers arrays and scalars with a validation error of
    // its own, so these are not compared with it but with what DynamoDB answers.
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy(&relay.endpoint).await;
    proxy.wait_ready().await;
    // A GetItem's body is proven when it is read: on every path, the cache's or not.
    let uncached = start_proxy_with(&relay.endpoint, |c| c.cache.enabled = false).await;
    uncached.wait_ready().await;
    let bare = json!({"__type": "com.amazon.coral.service#SerializationException"});
    let list = json!({
        "__type": "com.amazon.coral.service#SerializationException",
        "Message": "Start of list found where not expected",
    });
    for (body, expected) in [
        ("null", &bare),
        (" null ", &bare),
        ("1", &bare),
        ("\"x\"", &bare),
        ("true", &bare),
        ("[]", &list),
        ("[{\"TableName\":\"t\"}]", &list),
        // Not JSON at all.
        ("{", &bare),
        ("{\"TableName\":\"t\",}", &bare),
        (
            "{\"TableName\":\"t\",\"Key\":{\"pk\":{\"S\":\"a\"}}} x",
            &bare,
        ),
    ] {
        for (target, endpoint) in [
            ("DynamoDB_20120810.GetItem", &proxy.endpoint),
            ("DynamoDB_20120810.PutItem", &proxy.endpoint),
            ("DynamoDB_20120810.GetItem", &uncached.endpoint),
        ] {
            let a = Raw::op(target, body).send(endpoint).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
            let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            assert_eq!(&v, expected, "{body}");
            assert_eq!(a.header("content-type"), Some("application/x-amz-json-1.0"));
            assert_eq!(
                a.header("x-amz-crc32"),
                Some(crc32fast::hash(&a.body).to_string().as_str())
            );
        }
    }
    assert_eq!(relay.captured().await.len(), 2, "only the readiness probes");
    // And the engine is still there to answer.
    let client = sdk_client(&proxy.endpoint).await;
    client.list_tables().send().await.unwrap();
}

#[tokio::test]
async fn unknown_operations_are_forwarded_and_invalidate_everything() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy(&relay.endpoint).await;
    let (_, get) = table_with_item(&proxy.endpoint, "unknown-op").await;
    let outcome = |a: &Answer| a.header("x-ddbcache").map(str::to_string);
    assert_eq!(
        outcome(&get.send(&proxy.endpoint).await).as_deref(),
        Some("miss")
    );
    assert_eq!(
        outcome(&get.send(&proxy.endpoint).await).as_deref(),
        Some("hit")
    );

    // An operation DynamoDB has and ddbcache does not know (dynalite does not either) is
    // forwarded, and the engine's answer comes back.
    let (p, e) = (proxy.endpoint.as_str(), engine.endpoint());
    for target in [
        "DynamoDB_20120810.FlyToTheMoon",
        "DynamoDB_20111205.GetItem",
        "DynamoDB_20120810.GetRecords",
        "DynamoDBStreams_20120810.PutItem",
        "DynamoDBStreams_20120810.FlyToTheMoon",
    ] {
        let before = relay.captured().await.len();
        same(p, &e, &Raw::op(target, "{}")).await;
        let forwarded = relay.captured().await;
        assert_eq!(forwarded.len(), before + 1, "{target} reached the upstream");
        assert_eq!(forwarded[before].headers["x-amz-target"], target);
        // It may have written anything: nothing cached before it is served after it.
        assert_eq!(
            outcome(&get.send(p).await).as_deref(),
            Some("miss"),
            "after {target}"
        );
        assert_eq!(outcome(&get.send(p).await).as_deref(), Some("hit"));
    }
}

#[tokio::test]
async fn composed_answers_carry_cors_and_the_clients_content_type() {
    let engine = Engine::dynalite().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    let (table, get) = table_with_item(&proxy.endpoint, "cors").await;
    let (p, e) = (proxy.endpoint.as_str(), engine.endpoint());
    get.send(p).await;
    for req in [
        get.clone().header("origin", "https://app"),
        get.clone().header("content-type", "application/json"),
        get.clone()
            .header("content-type", "application/json; charset=utf-8")
            .header("origin", "https://app"),
    ] {
        let hit = same(p, &e, &req).await;
        assert_eq!(hit.header("x-ddbcache"), Some("hit"), "{req:?}");
    }
    // A merged BatchGetItem (one key cached, one fetched) and an error of ddbcache's own.
    let batch = json!({"RequestItems": {(table.clone()): {"Keys": [
        {"pk": {"S": "a"}, "sk": {"S": "1"}}, {"pk": {"S": "b"}, "sk": {"S": "1"}}
    ]}}})
    .to_string();
    let merged = Raw::op("DynamoDB_20120810.BatchGetItem", &batch)
        .header("origin", "https://app")
        .header("content-type", "application/json")
        .send(p)
        .await;
    assert_eq!(merged.status, StatusCode::OK);
    assert_eq!(merged.header("access-control-allow-origin"), Some("*"));
    assert_eq!(merged.header("content-type"), Some("application/json"));
    let without_origin = Raw::op("DynamoDB_20120810.BatchGetItem", &batch)
        .send(p)
        .await;
    assert_eq!(without_origin.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_a_413_the_client_can_read() {
    let engine = Engine::dynalite().await;
    let limit = 64 * 1024;
    let proxy = start_proxy_with(&engine.endpoint(), |c| c.server.max_body_bytes = limit).await;
    let addr = proxy.endpoint.trim_start_matches("http://").to_string();
    let big = 4 << 20;
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // The whole body goes out before the answer is read, as a simple client does: a server that
    // answered and closed midway would reset the connection under the writes.
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-amz-json-1.0\r\n\
         x-amz-target: DynamoDB_20120810.PutItem\r\nauthorization: {AUTH}\r\n\
         x-amz-date: {DATE}\r\ncontent-length: {big}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..big / chunk.len() {
        conn.write_all(&chunk)
            .await
            .expect("the body can be sent whole");
    }
    let answer = read_response(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("ValidationException"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // The body was read to its end (and thrown away) before the connection closed.
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest)
        .await
        .expect("closed, not reset");
    assert!(rest.is_empty());

    // A client that waits for `100 Continue` is answered at once, and the connection closed.
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = head.replace("\r\n\r\n", "\r\nexpect: 100-continue\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let answer = read_response(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}

/// Reads one HTTP/1.1 response with a content length, head and body, as text.
async fn read_response(conn: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout_at(deadline, conn.read(&mut byte))
            .await
            .expect("an answer within 30 s")
            .expect("the answer can be read");
        assert!(n > 0, "connection closed before a whole answer: {text}");
        buf.extend_from_slice(&byte[..n]);
    }
}

#[tokio::test]
async fn a_signature_in_the_query_string_is_replaced_by_ddbcaches_own() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let signing = start_proxy_with(&relay.endpoint, |c| c.upstream.sign = true).await;
    signing.wait_ready().await;
    let presigned = Raw::op("DynamoDB_20120810.ListTables", "{}")
        .without("authorization")
        .path(&format!(
            "/?keep=1&{QUERY_AUTH}&X-Amz-Expires=300&X-Amz-Security-Token=client-token"
        ));
    let a = presigned.send(&signing.endpoint).await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = relay.captured().await.pop().unwrap();
    assert_eq!(seen.path, "/?keep=1", "only the signature's parameters go");
    assert_eq!(
        seen.headers["authorization"].to_str().unwrap(),
        expected_authorization(&seen, &relay.endpoint, "us-east-1")
    );

    // Without signing, the request goes on as the client signed it.
    let unsigned = start_proxy(&relay.endpoint).await;
    let a = presigned.send(&unsigned.endpoint).await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = relay.captured().await.pop().unwrap();
    assert_eq!(seen.path, presigned.path);
    assert!(!seen.headers.contains_key("authorization"));
}
