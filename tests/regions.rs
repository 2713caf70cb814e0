//! Regions: a request goes to, and is signed for, the region its client signed for (unless the
//! region is pinned); the same table name in two regions is two tables, so a cache entry of one
//! region never answers a request of another.

mod common;

use common::raw::*;
use common::*;
use serde_json::json;

/// A ListTables whose `Authorization` names `credential`.
fn list_tables_signed_for(credential: &str) -> Raw {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={credential}, \
         SignedHeaders=host;x-amz-date;x-amz-target, Signature=0"
    );
    Raw::op("DynamoDB_20120810.ListTables", "{}").header("authorization", &auth)
}

/// ddbcache signing, in front of a relay whose URL carries the region in its path (dynalite
/// ignores paths), so the relay sees which region's endpoint each request was sent to.
async fn signing_proxy(relay: &Relay, pin: bool) -> TestProxy {
    let endpoint = format!("{}/r/{{region}}", relay.endpoint);
    let proxy = start_proxy_with(&relay.endpoint, |c| {
        c.upstream.sign = true;
        c.upstream.endpoint = Some(endpoint);
        c.upstream.pin_region = pin;
    })
    .await;
    proxy.wait_ready().await;
    proxy
}

/// Sends `req` through `proxy` and returns the region whose endpoint the upstream request went
/// to, after checking that it was signed, correctly, for that same region.
async fn region_sent_to(proxy: &TestProxy, relay: &Relay, req: &Raw) -> String {
    let a = req.send(&proxy.endpoint).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let seen = relay.captured().await.pop().unwrap();
    let region = seen
        .path
        .strip_prefix("/r/")
        .and_then(|p| p.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected path {}", seen.path))
        .to_string();
    let auth = seen.headers["authorization"].to_str().unwrap();
    assert!(
        auth.contains(&format!("/{region}/dynamodb/aws4_request")),
        "{auth}"
    );
    assert_eq!(
        auth,
        expected_authorization(&seen, &relay.endpoint, &region),
        "signature for {region}"
    );
    region
}

#[tokio::test]
async fn requests_go_to_and_are_signed_for_the_region_their_client_signed_for() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = signing_proxy(&relay, false).await;
    for (scope, expected) in [
        ("eu-west-1", "eu-west-1"),
        ("ap-south-2", "ap-south-2"),
        ("us-gov-west-1", "us-gov-west-1"),
        // No valid region in the scope: the configured one.
        ("evil.example.com", "us-east-1"),
        ("us-east-1@evil", "us-east-1"),
        ("EU-WEST-1", "us-east-1"),
    ] {
        let req = list_tables_signed_for(&format!("AKID/20200101/{scope}/dynamodb/aws4_request"));
        assert_eq!(
            region_sent_to(&proxy, &relay, &req).await,
            expected,
            "{scope}"
        );
    }
    let scope_too_short = list_tables_signed_for("AKID/eu-west-1/dynamodb/aws4_request");
    assert_eq!(
        region_sent_to(&proxy, &relay, &scope_too_short).await,
        "us-east-1"
    );
    // A signature in the query string names its region the same way.
    let presigned = Raw::op("DynamoDB_20120810.ListTables", "{}")
        .without("authorization")
        .path(
            "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20200101%2Fsa-east-1%2F\
             dynamodb%2Faws4_request&X-Amz-Date=20200101T000000Z&X-Amz-SignedHeaders=host&\
             X-Amz-Signature=0",
        );
    let a = presigned.send(&proxy.endpoint).await;
    assert_eq!(a.status, 200);
    let seen = relay.captured().await.pop().unwrap();
    assert_eq!(seen.path, "/r/sa-east-1/");
}

#[tokio::test]
async fn a_pinned_region_takes_every_request() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = signing_proxy(&relay, true).await;
    for scope in ["eu-west-1", "us-east-1", "nowhere"] {
        let credential = format!("AKID/20200101/{scope}/dynamodb/aws4_request");
        let req = list_tables_signed_for(&credential);
        assert_eq!(region_sent_to(&proxy, &relay, &req).await, "us-east-1");
    }
}

/// moto keeps one set of tables per region, chosen by the request's signature: the same table
/// name in two regions holds two different items here.
async fn two_regions(proxy: &TestProxy, table: &str) {
    for (region, value) in [("us-east-1", "east"), ("eu-west-1", "west")] {
        let client = sdk_client_in(&proxy.endpoint, region).await;
        create_table(&client, table).await;
        client
            .put_item()
            .table_name(table)
            .set_item(Some(key("a", "1")))
            .item("v", s(value))
            .send()
            .await
            .unwrap();
    }
}

fn get_in(region: &str, body: &serde_json::Value) -> Raw {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=AKID/20200101/{region}/dynamodb/aws4_request, \
         SignedHeaders=host;x-amz-date;x-amz-target, Signature=0"
    );
    Raw::op("DynamoDB_20120810.GetItem", &body.to_string()).header("authorization", &auth)
}

#[tokio::test]
async fn an_entry_of_one_region_never_answers_another() {
    let engine = Engine::moto().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    let table = unique_table("regions");
    two_regions(&proxy, &table).await;
    let body = json!({"TableName": table, "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}}});
    let direct = engine.endpoint();
    for (round, outcome) in [(0, "miss"), (1, "hit")] {
        for (region, value) in [("us-east-1", "east"), ("eu-west-1", "west")] {
            let a = same(&proxy.endpoint, &direct, &get_in(region, &body)).await;
            let item: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            assert_eq!(item["Item"]["v"]["S"], value, "round {round} in {region}");
            assert_eq!(
                a.header("x-ddbcache"),
                Some(outcome),
                "round {round} in {region}"
            );
        }
    }

    // A write in one region leaves the other region's entry alone, and its own entry goes.
    let west = sdk_client_in(&proxy.endpoint, "eu-west-1").await;
    west.put_item()
        .table_name(&table)
        .set_item(Some(key("a", "1")))
        .item("v", s("west-2"))
        .send()
        .await
        .unwrap();
    let a = same(&proxy.endpoint, &direct, &get_in("eu-west-1", &body)).await;
    assert_eq!(a.header("x-ddbcache"), Some("miss"));
    let a = same(&proxy.endpoint, &direct, &get_in("us-east-1", &body)).await;
    assert_eq!(a.header("x-ddbcache"), Some("hit"));
    let item: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(item["Item"]["v"]["S"], "east");
}
