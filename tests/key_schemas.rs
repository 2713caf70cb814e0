//! Key schemas of 2025: global secondary indexes keyed by up to four HASH and four RANGE
//! attributes (multi-attribute keys, November 2025). The local engines cannot make such an index,
//! so a relay in front of dynalite answers ddbcache's DescribeTable with the shape DynamoDB gives
//! (`"KeySchema":[{"AttributeName":"tournamentId","KeyType":"HASH"},{"AttributeName":"region",
//! "KeyType":"HASH"},...]`), while the items, the writes and the Queries are dynalite's own (on an
//! index dynalite keys by one of those attributes: what ddbcache must get right does not depend
//! on how the engine evaluates the key).
//!
//! What is shown: such an answer is read (writes then invalidate exactly the item they write),
//! a write kills every cached Query on the index, and an answer ddbcache cannot read exactly
//! leaves the schema unknown, so writes invalidate the whole table rather than what a misread
//! key would name.

mod common;

use aws_sdk_dynamodb::types::*;
use aws_sdk_dynamodb::Client;
use common::raw::{Answer, Raw};
use common::*;

const FETCHED: &str = r#"ddbcache_schema_fetches_total{outcome="known"}"#;
const FAILED: &str = r#"ddbcache_schema_fetches_total{outcome="failed"}"#;
const INDEX: &str = "TournamentRegionIndex";

/// A table keyed by `matchId`, with a global index dynalite keys by `tournamentId` and `round`.
async fn create_matches_table(client: &Client, name: &str) {
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key_element("matchId", KeyType::Hash))
        .attribute_definitions(string_attribute("matchId"))
        .attribute_definitions(string_attribute("tournamentId"))
        .attribute_definitions(string_attribute("round"))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(INDEX)
                .key_schema(key_element("tournamentId", KeyType::Hash))
                .key_schema(key_element("round", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("CreateTable");
    wait_active(client, name).await;
}

/// DynamoDB's DescribeTable answer for the table, its index keyed by `global_key`.
fn describe_answer(table: &str, global_key: &str) -> &'static str {
    let body = format!(
        r#"{{"Table":{{"TableName":"{table}","TableArn":"arn:aws:dynamodb:us-east-1:000000000000:table/{table}","TableStatus":"ACTIVE","AttributeDefinitions":[{{"AttributeName":"matchId","AttributeType":"S"}},{{"AttributeName":"tournamentId","AttributeType":"S"}},{{"AttributeName":"region","AttributeType":"S"}},{{"AttributeName":"round","AttributeType":"S"}},{{"AttributeName":"bracket","AttributeType":"S"}}],"KeySchema":[{{"AttributeName":"matchId","KeyType":"HASH"}}],"GlobalSecondaryIndexes":[{{"IndexName":"{INDEX}","KeySchema":{global_key},"Projection":{{"ProjectionType":"ALL"}},"IndexStatus":"ACTIVE","IndexArn":"arn:aws:dynamodb:us-east-1:000000000000:table/{table}/index/{INDEX}"}}],"BillingModeSummary":{{"BillingMode":"PAY_PER_REQUEST"}}}}}}"#
    );
    Box::leak(body.into_boxed_str())
}

/// Two HASH and two RANGE attributes, as DynamoDB's multi-attribute keys guide defines the index.
const MULTI_ATTRIBUTE_KEY: &str = r#"[{"AttributeName":"tournamentId","KeyType":"HASH"},{"AttributeName":"region","KeyType":"HASH"},{"AttributeName":"round","KeyType":"RANGE"},{"AttributeName":"bracket","KeyType":"RANGE"}]"#;

/// dynalite behind a relay that answers DescribeTable of `table` with `global_key`'s shape, and
/// ddbcache in front of the relay.
struct Setup {
    _engine: Engine,
    _relay: Relay,
    proxy: TestProxy,
    table: String,
}

async fn setup(global_key: &'static str) -> Setup {
    let engine = Engine::dynalite().await;
    let direct = sdk_client(&engine.endpoint()).await;
    let table = unique_table("matches");
    create_matches_table(&direct, &table).await;
    for (id, round) in [("m1", "R1"), ("m2", "R2")] {
        put_match(&direct, &table, id, round, "1").await;
    }
    let relay = Relay::start(&engine.endpoint()).await;
    let answer = describe_answer(&table, global_key);
    let name = format!("\"{table}\"");
    relay
        .fault(
            move |target, body| {
                target.ends_with(".DescribeTable") && String::from_utf8_lossy(body).contains(&name)
            },
            Fault::Answer(answer),
        )
        .await;
    let proxy = start_proxy(&relay.endpoint).await;
    Setup {
        _engine: engine,
        _relay: relay,
        proxy,
        table,
    }
}

async fn put_match(client: &Client, table: &str, id: &str, round: &str, v: &str) {
    client
        .put_item()
        .table_name(table)
        .item("matchId", s(id))
        .item("tournamentId", s("WINTER2024"))
        .item("region", s("NA-EAST"))
        .item("round", s(round))
        .item("bracket", s("UPPER"))
        .item("v", s(v))
        .send()
        .await
        .expect("PutItem");
}

impl Setup {
    async fn send(&self, op: &str, body: serde_json::Value) -> Answer {
        let target = format!("DynamoDB_20120810.{op}");
        let answer = Raw::op(&target, &body.to_string())
            .send(&self.proxy.endpoint)
            .await;
        assert_eq!(answer.status, 200, "{op}: {:?}", answer.body);
        answer
    }

    async fn get(&self, id: &str) -> Answer {
        let key = serde_json::json!({ "matchId": { "S": id } });
        self.send(
            "GetItem",
            serde_json::json!({ "TableName": self.table, "Key": key }),
        )
        .await
    }

    /// A Query of the global index, by tournament.
    async fn query_index(&self) -> Answer {
        self.send(
            "Query",
            serde_json::json!({
                "TableName": self.table,
                "IndexName": INDEX,
                "KeyConditionExpression": "tournamentId = :t",
                "ExpressionAttributeValues": { ":t": { "S": "WINTER2024" } },
            }),
        )
        .await
    }

    /// A Query of the table's partition `id`.
    async fn query_partition(&self, id: &str) -> Answer {
        self.send(
            "Query",
            serde_json::json!({
                "TableName": self.table,
                "KeyConditionExpression": "matchId = :m",
                "ExpressionAttributeValues": { ":m": { "S": id } },
            }),
        )
        .await
    }

    /// A PutItem through ddbcache.
    async fn put(&self, id: &str, round: &str) {
        let item = serde_json::json!({
            "matchId": { "S": id }, "tournamentId": { "S": "WINTER2024" },
            "region": { "S": "NA-EAST" }, "round": { "S": round },
            "bracket": { "S": "UPPER" }, "v": { "S": "2" },
        });
        self.send(
            "PutItem",
            serde_json::json!({ "TableName": self.table, "Item": item }),
        )
        .await;
    }
}

fn outcome(a: &Answer) -> &str {
    a.header("x-ddbcache").unwrap_or("none")
}

fn count(a: &Answer) -> u64 {
    serde_json::from_slice::<serde_json::Value>(&a.body).unwrap()["Count"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn multi_attribute_index_keys_are_read_and_writes_kill_the_index_queries() {
    let t = setup(MULTI_ATTRIBUTE_KEY).await;
    // The first GetItem sends ddbcache's DescribeTable; once the answer is read, GetItems are
    // stored.
    t.get("m1").await;
    t.proxy
        .wait_metric(FETCHED, std::time::Duration::from_secs(10), |v| v == 1.0)
        .await;
    assert_eq!(t.proxy.metric(FAILED).await, 0.0);
    for id in ["m1", "m2"] {
        t.get(id).await;
        assert_eq!(outcome(&t.get(id).await), "hit", "GetItem {id}");
    }
    assert_eq!(outcome(&t.query_index().await), "miss");
    let cached = t.query_index().await;
    assert_eq!((outcome(&cached), count(&cached)), ("hit", 2));

    // A new match of the tournament, written through ddbcache.
    t.put("m3", "R3").await;
    let after = t.query_index().await;
    assert_eq!(
        (outcome(&after), count(&after)),
        ("miss", 3),
        "the write reaches the index's Query"
    );
    // Read exactly: the write invalidated its own item, not every item of the table.
    assert_eq!(outcome(&t.get("m2").await), "hit");
    assert_eq!(outcome(&t.get("m1").await), "hit");
}

#[tokio::test]
async fn an_unreadable_key_schema_invalidates_the_whole_table() {
    // Five HASH attributes: more than DynamoDB documents, so not read as anything.
    const FIVE: &str = r#"[{"AttributeName":"a","KeyType":"HASH"},{"AttributeName":"b","KeyType":"HASH"},{"AttributeName":"c","KeyType":"HASH"},{"AttributeName":"d","KeyType":"HASH"},{"AttributeName":"e","KeyType":"HASH"}]"#;
    let t = setup(FIVE).await;
    t.get("m1").await;
    t.proxy
        .wait_metric(FAILED, std::time::Duration::from_secs(10), |v| v >= 1.0)
        .await;
    assert_eq!(t.proxy.metric(FETCHED).await, 0.0);
    assert_eq!(outcome(&t.query_partition("m2").await), "miss");
    assert_eq!(outcome(&t.query_partition("m2").await), "hit");
    // A write to another partition: with the schema unknown, ddbcache cannot tell which
    // partition it wrote, so every entry of the table goes.
    t.put("m3", "R3").await;
    assert_eq!(outcome(&t.query_partition("m2").await), "miss");
    t.get("m2").await;
    assert_ne!(
        outcome(&t.get("m2").await),
        "hit",
        "no GetItem is stored while the key is unknown"
    );
}
