//! A cache hit never answers a request the engine would refuse. For every class of invalid read
//! whose cache key equals a valid read's (canonical keys erase number spellings, projection
//! order, name substitution, ARNs, ReturnConsumedCapacity, key order...), the valid read fills
//! the cache first; then the invalid one goes through ddbcache and to the engine directly, and
//! the answers must be the same — the engine's refusal, not the cached 200. Against dynalite and
//! moto.

mod common;

use common::raw::*;
use common::*;
use serde_json::{json, Value};

/// An engine with ddbcache in front of it, a table `pk`/`sk` holding items `a`/`1`..`3` (`$T` in
/// request bodies) and an empty one (`$U`), and the answers compared request by request.
struct Setup {
    proxy: TestProxy,
    direct: String,
    table: String,
    empty_table: String,
    _engine: Engine,
}

impl Setup {
    async fn new(engine: Engine) -> Setup {
        let proxy = start_proxy(&engine.endpoint()).await;
        let client = sdk_client(&proxy.endpoint).await;
        let table = unique_table("valid");
        create_table(&client, &table).await;
        let empty_table = unique_table("valid-empty");
        create_table(&client, &empty_table).await;
        for sk in ["1", "2", "3"] {
            client
                .put_item()
                .table_name(&table)
                .set_item(Some(key("a", sk)))
                .item("name", s("n"))
                .item("price", n("10"))
                .item("status", s("on"))
                .send()
                .await
                .unwrap();
        }
        Setup {
            direct: engine.endpoint(),
            proxy,
            table,
            empty_table,
            _engine: engine,
        }
    }

    fn request(&self, op: &str, body: &Value) -> Raw {
        let body = body
            .to_string()
            .replace("$T", &self.table)
            .replace("$U", &self.empty_table);
        Raw::op(&format!("DynamoDB_20120810.{op}"), &body)
    }

    /// Sends `valid` twice through ddbcache (the second must be a hit: it is a cacheable read),
    /// then each invalid variant through ddbcache and directly: the answers must be equal.
    async fn refused_like_the_engine(&self, op: &str, valid: Value, invalid: &[Value]) {
        let valid = self.request(op, &valid);
        let first = valid.send(&self.proxy.endpoint).await;
        assert_eq!(first.status, 200, "{:?}", first.body);
        let again = valid.send(&self.proxy.endpoint).await;
        assert_eq!(again.header("x-ddbcache"), Some("hit"), "{valid:?}");
        for body in invalid {
            let req = self.request(op, body);
            let a = same(&self.proxy.endpoint, &self.direct, &req).await;
            assert_ne!(a.header("x-ddbcache"), Some("hit"), "{req:?}");
        }
    }
}

fn key_a(sk: &str) -> Value {
    json!({"pk": {"S": "a"}, "sk": {"S": sk}})
}

async fn get_items_are_refused_like_the_engine(engine: Engine) {
    let setup = Setup::new(engine).await;
    let projected = json!({
        "TableName": "$T", "Key": key_a("1"),
        "ProjectionExpression": "#n, price", "ExpressionAttributeNames": {"#n": "name"},
    });
    let with = |extra: Value| {
        let mut v = projected.clone();
        for (k, x) in extra.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        v
    };
    setup
        .refused_like_the_engine(
            "GetItem",
            projected.clone(),
            &[
                // Names: unused, undefined, a reserved word used bare.
                with(json!({"ExpressionAttributeNames": {"#n": "name", "#u": "x"}})),
                with(json!({"ProjectionExpression": "#n, #m"})),
                with(json!({"ProjectionExpression": "name, price", "ExpressionAttributeNames": null})),
                with(json!({"ExpressionAttributeNames": {}})),
                // A projection both ways; overlapping paths.
                with(json!({"ProjectionExpression": "price", "ExpressionAttributeNames": null, "AttributesToGet": ["name"]})),
                with(json!({"ProjectionExpression": "#n, price, price"})),
                with(json!({"ProjectionExpression": "#n, price, price.x"})),
                // ReturnConsumedCapacity is not part of the key.
                with(json!({"ReturnConsumedCapacity": "ALL"})),
                with(json!({"ReturnConsumedCapacity": "total"})),
                // Key values with two types, or of a type no key has; a malformed table ARN.
                with(json!({"Key": {"pk": {"S": "a", "BOOL": true}, "sk": {"S": "1"}}})),
                with(json!({"Key": {"pk": {"S": "a", "N": "1"}, "sk": {"S": "1"}}})),
                with(json!({"Key": {"pk": {"S": ""}, "sk": {"S": "1"}}})),
                with(json!({"TableName": "arn:aws:dynamodb:us-east-1:1:table/$T"})),
                // Wrong JSON types: the engine's words, not ddbcache's.
                with(json!({"ConsistentRead": "no"})),
                with(json!({"TableName": 5})),
                with(json!({"Key": "a"})),
            ],
        )
        .await;
    // AttributesToGet: an empty list keys like no projection at all; duplicates.
    let whole = json!({"TableName": "$T", "Key": key_a("2")});
    let mut empty = whole.clone();
    empty["AttributesToGet"] = json!([]);
    let mut twice = whole.clone();
    twice["AttributesToGet"] = json!(["name", "name"]);
    setup
        .refused_like_the_engine("GetItem", whole, &[empty, twice])
        .await;
}

async fn batch_gets_are_refused_like_the_engine(engine: Engine) {
    let setup = Setup::new(engine).await;
    let keys = |n: usize| (0..n).map(|i| key_a(&i.to_string())).collect::<Vec<_>>();
    let batch = |keys: Vec<Value>| json!({"RequestItems": {"$T": {"Keys": keys}}});
    // Every key cached (most as "no such item"), so an invalid batch would be all hits.
    setup
        .refused_like_the_engine("BatchGetItem", batch(keys(100)), &[])
        .await;
    setup
        .refused_like_the_engine("BatchGetItem", batch(vec![key_a("100")]), &[])
        .await;
    let other = json!({"RequestItems": {"$U": {"Keys": keys(40)}}});
    setup
        .refused_like_the_engine("BatchGetItem", other, &[])
        .await;
    let over_two_tables =
        json!({"RequestItems": {"$T": {"Keys": keys(61)}, "$U": {"Keys": keys(40)}}});
    setup
        .refused_like_the_engine(
            "BatchGetItem",
            batch(keys(2)),
            &[
                batch(vec![key_a("1"), key_a("1")]),
                batch(vec![
                    key_a("1"),
                    json!({"sk": {"S": "1"}, "pk": {"S": "a"}}),
                ]),
                batch(keys(101)),
                over_two_tables,
                json!({"RequestItems": {"$T": {"Keys": [key_a("1")]}, "arn:aws:dynamodb:us-east-1:123456789012:table/$T": {"Keys": [key_a("0")]}}}),
                json!({"RequestItems": {"$T": {"Keys": [key_a("1")]}, "other-table": {"Keys": []}}}),
                json!({"RequestItems": {}}),
                json!({"RequestItems": {"$T": {"Keys": [key_a("1")]}}, "ReturnConsumedCapacity": "ALL"}),
                json!({"RequestItems": {"$T": {"Keys": [key_a("1")], "AttributesToGet": []}}}),
                json!({"RequestItems": {"$T": {"Keys": [{"pk": {"S": "a", "NULL": true}, "sk": {"S": "1"}}]}}}),
                json!({"RequestItems": {"$T": {"Keys": "a"}}}),
            ],
        )
        .await;
}

async fn queries_are_refused_like_the_engine(engine: Engine) {
    let setup = Setup::new(engine).await;
    let query = json!({
        "TableName": "$T", "KeyConditionExpression": "pk = :p", "FilterExpression": "price = :v",
        "ExpressionAttributeValues": {":p": {"S": "a"}, ":v": {"N": "10"}},
    });
    let with = |k: &str, x: Value| {
        let mut v = query.clone();
        v[k] = x;
        v
    };
    setup
        .refused_like_the_engine(
            "Query",
            query.clone(),
            &[
                with("ReturnConsumedCapacity", json!("ALL")),
                with(
                    "ExpressionAttributeValues",
                    json!({":p": {"S": "a"}, ":v": {"N": "+10"}}),
                ),
                with(
                    "ExpressionAttributeValues",
                    json!({":p": {"S": "a"}, ":v": {"N": "1e200"}}),
                ),
                with("TableName", json!("arn:aws:dynamodb:us-east-1:12:table/$T")),
                with("ConsistentRead", json!("yes")),
            ],
        )
        .await;
}

#[tokio::test]
async fn invalid_get_items_never_meet_a_valid_entry_dynalite() {
    get_items_are_refused_like_the_engine(Engine::dynalite().await).await;
}

#[tokio::test]
async fn invalid_get_items_never_meet_a_valid_entry_moto() {
    get_items_are_refused_like_the_engine(Engine::moto().await).await;
}

#[tokio::test]
async fn invalid_batch_gets_never_meet_valid_entries_dynalite() {
    batch_gets_are_refused_like_the_engine(Engine::dynalite().await).await;
}

#[tokio::test]
async fn invalid_batch_gets_never_meet_valid_entries_moto() {
    batch_gets_are_refused_like_the_engine(Engine::moto().await).await;
}

#[tokio::test]
async fn invalid_queries_never_meet_a_valid_entry_dynalite() {
    queries_are_refused_like_the_engine(Engine::dynalite().await).await;
}

#[tokio::test]
async fn invalid_queries_never_meet_a_valid_entry_moto() {
    queries_are_refused_like_the_engine(Engine::moto().await).await;
}
