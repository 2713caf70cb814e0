//! Table aliases: a name applications use, served by another table.
//!
//! - The differential harness: through ddbcache the application names `orders` and the engine
//!   behind holds `orders-…-restored`; directly, the engine holds `orders`. Every answer is the
//!   same — names in consumed capacity, batch answers' keys, table descriptions, ARNs and error
//!   messages mapped back — on dynalite and on moto (transactions and PartiQL too).
//! - Switching an alias drops the entries of the table it named and of the one it names now.
//! - The README's walk-through, against moto: a backup restored (and a table imported from S3)
//!   into a new table, the alias pointed at it through the admin port with the admin token.
//! - In a fleet the switch reaches every sidecar together, and a sidecar that starts later reads
//!   it from Redis.
//! - What cannot be rewritten faithfully is refused in DynamoDB's error shape.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::*;
use aws_sdk_dynamodb::Client;
use common::differential::Pair;
use common::fleet::start_fleet;
use common::raw::{Answer, Raw};
use common::*;
use ddbcache::config::{Config, TableAliases};
use http::Method;
use serde_json::{json, Value};

const TOKEN: &str = "alias-test-token";
const WAIT: Duration = Duration::from_secs(20);

fn with_aliases(pairs: &[(&str, &str)]) -> impl Fn(&mut Config) {
    let aliases: BTreeMap<String, String> = pairs
        .iter()
        .map(|(a, t)| (a.to_string(), t.to_string()))
        .collect();
    move |c: &mut Config| {
        c.aliases = TableAliases(aliases.clone());
        c.admin.token = Some(TOKEN.into());
    }
}

fn table_view(t: Option<&TableDescription>) -> (Option<String>, Option<String>, String) {
    let t = t.expect("a table description");
    // The ARN's account and region are the engine's; its name must be the application's.
    let arn_name = t
        .table_arn()
        .and_then(|a| a.split_once(":table/"))
        .map(|(_, name)| name.to_string());
    (
        t.table_name().map(str::to_string),
        arn_name,
        format!("{:?}", t.key_schema()),
    )
}

fn capacity_tables(c: &[ConsumedCapacity]) -> Vec<Option<String>> {
    c.iter()
        .map(|c| c.table_name().map(str::to_string))
        .collect()
}

fn items(list: &[HashMap<String, AttributeValue>]) -> Vec<BTreeMap<String, String>> {
    let mut items: Vec<_> = list.iter().map(canon_item).collect();
    items.sort();
    items
}

fn item(pk: &str, sk: &str, v: &str) -> HashMap<String, AttributeValue> {
    let mut item = key(pk, sk);
    item.insert("v".into(), s(v));
    item
}

/// A pair whose proxy serves `aliases`, and stores what it reads right after a write (so that
/// reads asking for consumed capacity are hits too).
async fn aliased_pair(behind: Engine, direct: Engine, aliases: &[(&str, &str)]) -> Pair {
    let configure = with_aliases(aliases);
    Pair::with_config(behind, direct, |c| {
        configure(c);
        c.cache.consistency_window = Duration::ZERO;
    })
    .await
}

/// The same calls through ddbcache (`alias` → `real`) and directly (`alias` itself).
async fn answers_are_the_real_tables_under_the_applications_name(
    p: &Pair,
    alias: &str,
    real: &str,
) {
    let t = alias;
    let behind = sdk_client(&p.engines.0.endpoint()).await;

    // Created through the alias: the engine behind holds the real table only.
    same!(p, |c| create_table_request(c, t).send(), |o| table_view(
        o.table_description()
    ));
    wait_active(&p.proxied, t).await;
    wait_active(&p.direct, t).await;
    let behind_tables = behind.list_tables().send().await.unwrap();
    assert!(behind_tables.table_names().iter().any(|n| n == real));
    assert!(!behind_tables.table_names().iter().any(|n| n == alias));
    let arn = same!(p, |c| c.describe_table().table_name(t).send(), |o| {
        let d = o.table().unwrap();
        (table_view(Some(d)), d.table_arn().map(str::to_string))
    })
    .1
    .unwrap();

    for (sk, v) in [("1", "one"), ("2", "two")] {
        same!(
            p,
            |c| c
                .put_item()
                .table_name(t)
                .set_item(Some(item("a", sk, v)))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send(),
            |o| o
                .consumed_capacity()
                .and_then(|c| c.table_name().map(str::to_string))
        );
    }
    // A miss, then a hit: both under the application's name.
    for _ in 0..2 {
        same!(
            p,
            |c| c
                .get_item()
                .table_name(t)
                .set_key(Some(key("a", "1")))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send(),
            |o| (
                o.item().map(canon_item),
                o.consumed_capacity()
                    .and_then(|c| c.table_name().map(str::to_string))
            )
        );
    }
    // By ARN: the application's ARN of the table (which dynalite refuses, in the same words
    // either way).
    let _ = both!(
        p,
        |c| c
            .get_item()
            .table_name(&arn)
            .set_key(Some(key("a", "2")))
            .send(),
        |o| o.item().map(canon_item)
    );
    for _ in 0..2 {
        same!(
            p,
            |c| c
                .query()
                .table_name(t)
                .key_condition_expression("pk = :p")
                .expression_attribute_values(":p", s("a"))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send(),
            |o| (
                items(o.items()),
                o.consumed_capacity()
                    .and_then(|c| c.table_name().map(str::to_string))
            )
        );
    }
    same!(
        p,
        |c| c
            .batch_write_item()
            .request_items(
                t,
                vec![WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item("b", "1", "three")))
                            .build()
                            .unwrap()
                    )
                    .build()]
            )
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send(),
        |o| (
            o.unprocessed_items()
                .map(|u| u.keys().cloned().collect::<Vec<_>>()),
            capacity_tables(o.consumed_capacity())
        )
    );
    for _ in 0..2 {
        same!(
            p,
            |c| c
                .batch_get_item()
                .request_items(
                    t,
                    KeysAndAttributes::builder()
                        .keys(key("a", "1"))
                        .keys(key("b", "1"))
                        .keys(key("none", "1"))
                        .build()
                        .unwrap()
                )
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send(),
            |o| {
                let responses: BTreeMap<String, _> = o
                    .responses()
                    .unwrap()
                    .iter()
                    .map(|(table, list)| (table.clone(), items(list)))
                    .collect();
                (responses, capacity_tables(o.consumed_capacity()))
            }
        );
    }
    same!(p, |c| c.scan().table_name(t).send(), |o| items(o.items()));
    let refused = same_error!(
        p,
        |c| c
            .put_item()
            .table_name(t)
            .set_item(Some(item("a", "1", "x")))
            .condition_expression("attribute_not_exists(pk)")
            .send(),
        |o| o
    );
    assert!(
        refused.starts_with("ConditionalCheckFailedException"),
        "{refused}"
    );
    // An error that names the table names the application's.
    let missing = same_error!(p, |c| c.describe_table().table_name("ghost").send(), |o| o);
    assert!(missing.contains("ghost"), "{missing}");

    if p.engines.0.is_moto() {
        same!(
            p,
            |c| c
                .transact_write_items()
                .transact_items(
                    TransactWriteItem::builder()
                        .put(
                            Put::builder()
                                .table_name(t)
                                .set_item(Some(item("c", "1", "four")))
                                .build()
                                .unwrap()
                        )
                        .build()
                )
                .send(),
            |o| o.item_collection_metrics().map(|m| m.len())
        );
        same!(
            p,
            |c| c
                .transact_get_items()
                .transact_items(
                    TransactGetItem::builder()
                        .get(
                            Get::builder()
                                .table_name(t)
                                .set_key(Some(key("c", "1")))
                                .build()
                                .unwrap()
                        )
                        .build()
                )
                .send(),
            |o| o
                .responses()
                .iter()
                .map(|r| r.item().map(canon_item))
                .collect::<Vec<_>>()
        );
        same!(
            p,
            |c| c
                .execute_statement()
                .statement(format!(
                    r#"INSERT INTO "{t}" VALUE {{'pk': 'd', 'sk': '1', 'v': 'five'}}"#
                ))
                .send(),
            |o| items(o.items())
        );
        same!(
            p,
            |c| c
                .execute_statement()
                .statement(format!(r#"SELECT * FROM "{t}" WHERE pk = 'd'"#))
                .send(),
            |o| items(o.items())
        );
    }
    // Hits were answered under the application's names too.
    for cache in ["item", "query"] {
        let hits = format!("ddbcache_cache_hits_total{{cache=\"{cache}\"}}");
        assert!(p.proxy.metric(&hits).await >= 1.0, "{hits}");
    }
    same!(
        p,
        |c| c.delete_table().table_name(t).send(),
        |o| table_view(o.table_description())
    );
}

#[tokio::test]
async fn an_aliased_table_answers_as_the_real_one_under_the_applications_name_on_dynalite() {
    let alias = unique_table("orders");
    let real = format!("{alias}-restored");
    let aliases = [(alias.as_str(), real.as_str()), ("ghost", "ghost-restored")];
    let p = aliased_pair(Engine::dynalite().await, Engine::dynalite().await, &aliases).await;
    answers_are_the_real_tables_under_the_applications_name(&p, &alias, &real).await;
}

#[tokio::test]
async fn an_aliased_table_answers_as_the_real_one_under_the_applications_name_on_moto() {
    let alias = unique_table("orders");
    let real = format!("{alias}-restored");
    let aliases = [(alias.as_str(), real.as_str()), ("ghost", "ghost-restored")];
    let p = aliased_pair(Engine::moto().await, Engine::moto().await, &aliases).await;
    answers_are_the_real_tables_under_the_applications_name(&p, &alias, &real).await;
}

// ---------------------------------------------------------------------------------------------
// The admin port

/// `PUT /aliases?alias=…&table=…` (or `DELETE` without a table), with the admin token.
async fn admin_alias(
    proxy: &TestProxy,
    method: Method,
    query: &str,
    token: Option<&str>,
) -> Answer {
    let mut req = Raw::new(method).path(&format!("/aliases?{query}"));
    if let Some(token) = token {
        req = req.header("authorization", &format!("Bearer {token}"));
    }
    req.send(&proxy.admin).await
}

async fn point(proxy: &TestProxy, alias: &str, table: &str) {
    let answer = admin_alias(
        proxy,
        Method::PUT,
        &format!("alias={alias}&table={table}"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
}

async fn v_of(client: &Client, table: &str, pk: &str) -> Option<String> {
    get_v(client, table, pk, "1").await
}

#[tokio::test]
async fn switching_an_alias_drops_the_entries_of_both_tables() {
    let engine = Engine::dynalite().await;
    let direct = sdk_client(&engine.endpoint()).await;
    let (alias, one, two) = (
        unique_table("app"),
        unique_table("app-one"),
        unique_table("app-two"),
    );
    for t in [&one, &two] {
        create_table(&direct, t).await;
        put_v(&direct, t, "k", "1", &format!("{t} v1")).await;
    }
    let proxy = start_proxy_with(&engine.endpoint(), with_aliases(&[(&alias, &one)])).await;
    let client = sdk_client(&proxy.endpoint).await;
    // Both tables held in the cache: `two` by its own name, `one` through the alias.
    for t in [&alias, &two] {
        v_of(&client, t, "k").await;
    }
    assert_eq!(v_of(&client, &alias, "k").await, Some(format!("{one} v1")));
    assert_eq!(v_of(&client, &two, "k").await, Some(format!("{two} v1")));
    // Both written around ddbcache: its entries of them are now old.
    for t in [&one, &two] {
        put_v(&direct, t, "k", "1", &format!("{t} v2")).await;
    }
    assert_eq!(
        v_of(&client, &two, "k").await,
        Some(format!("{two} v1")),
        "held"
    );

    point(&proxy, &alias, &two).await;
    assert_eq!(v_of(&client, &alias, "k").await, Some(format!("{two} v2")));
    point(&proxy, &alias, &one).await;
    assert_eq!(v_of(&client, &alias, "k").await, Some(format!("{one} v2")));
}

#[tokio::test]
async fn recovering_with_a_restored_table() {
    let engine = Engine::moto().await;
    let proxy = start_proxy_with(&engine.endpoint(), with_aliases(&[])).await;
    let client = sdk_client(&proxy.endpoint).await;
    let orders = unique_table("orders");
    create_table(&client, &orders).await;
    put_v(&client, &orders, "o1", "1", "good").await;
    let backup = client
        .create_backup()
        .table_name(&orders)
        .backup_name("before-the-incident")
        .send()
        .await
        .expect("CreateBackup");
    let backup_arn = backup
        .backup_details()
        .map(|d| d.backup_arn().to_string())
        .unwrap();
    // The incident: a bad write, read (and cached) through ddbcache.
    put_v(&client, &orders, "o1", "1", "bad").await;
    assert_eq!(v_of(&client, &orders, "o1").await.as_deref(), Some("bad"));
    assert_eq!(v_of(&client, &orders, "o1").await.as_deref(), Some("bad"));

    // 1. Restore into a new table.
    let restored = format!("{orders}-restored");
    client
        .restore_table_from_backup()
        .target_table_name(&restored)
        .backup_arn(&backup_arn)
        .send()
        .await
        .expect("RestoreTableFromBackup");
    wait_active(&client, &restored).await;
    // 2. Point the alias at it, with the admin token (without it: refused).
    let query = format!("alias={orders}&table={restored}");
    let refused = admin_alias(&proxy, Method::PUT, &query, None).await;
    assert_eq!(refused.status, 401);
    let answer = admin_alias(&proxy, Method::PUT, &query, Some(TOKEN)).await;
    assert_eq!(answer.status, 200);
    let answer: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        answer["switched"],
        json!([{ "from": orders, "to": restored }])
    );
    // 3. Verify: the application's name serves the restored item, and writes land there.
    assert_eq!(v_of(&client, &orders, "o1").await.as_deref(), Some("good"));
    put_v(&client, &orders, "o2", "1", "after").await;
    let engine_client = sdk_client(&engine.endpoint()).await;
    assert_eq!(
        v_of(&engine_client, &restored, "o2").await.as_deref(),
        Some("after")
    );
    assert_eq!(v_of(&engine_client, &orders, "o2").await, None);
    let listed = Raw::new(Method::GET)
        .path("/aliases")
        .send(&proxy.admin)
        .await;
    let listed: Value = serde_json::from_slice(&listed.body).unwrap();
    assert_eq!(
        listed["aliases"],
        json!([{ "alias": orders, "region": "*", "table": restored, "source": "admin" }])
    );
    // 4. Clean up: once the config holds the alias, the admin one goes, and the old table too.
    let removed = admin_alias(
        &proxy,
        Method::DELETE,
        &format!("alias={orders}"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(removed.status, 200);
    assert_eq!(v_of(&client, &orders, "o1").await.as_deref(), Some("bad"));
}

/// S3 on moto: a bucket with one object (path-style, as the SDKs address a local endpoint).
async fn s3_put(engine: &Engine, path: &str, body: &str) {
    let answer = Raw::new(Method::PUT)
        .path(path)
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKID/20200101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=0",
        )
        .header("x-amz-date", "20200101T000000Z")
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .body(body.to_string())
        .send(&engine.endpoint())
        .await;
    assert_eq!(answer.status, 200, "PUT {path}: {:?}", answer.body);
}

#[tokio::test]
async fn an_imported_table_serves_the_alias() {
    let engine = Engine::moto().await;
    let orders = unique_table("orders");
    let proxy = start_proxy_with(&engine.endpoint(), with_aliases(&[])).await;
    let client = sdk_client(&proxy.endpoint).await;
    create_table(&client, &orders).await;
    put_v(&client, &orders, "o1", "1", "lost").await;
    assert_eq!(v_of(&client, &orders, "o1").await.as_deref(), Some("lost"));

    let bucket = orders.to_lowercase();
    s3_put(&engine, &format!("/{bucket}"), "").await;
    let export = r#"{"Item":{"pk":{"S":"o1"},"sk":{"S":"1"},"v":{"S":"imported"}}}"#;
    s3_put(&engine, &format!("/{bucket}/export/data.json"), export).await;
    let imported = format!("{orders}-imported");
    let started = client
        .import_table()
        .s3_bucket_source(
            S3BucketSource::builder()
                .s3_bucket(&bucket)
                .s3_key_prefix("export/")
                .build()
                .unwrap(),
        )
        .input_format(InputFormat::DynamodbJson)
        .table_creation_parameters(
            TableCreationParameters::builder()
                .table_name(&imported)
                .attribute_definitions(string_attribute("pk"))
                .attribute_definitions(string_attribute("sk"))
                .key_schema(key_element("pk", KeyType::Hash))
                .key_schema(key_element("sk", KeyType::Range))
                .billing_mode(BillingMode::PayPerRequest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("ImportTable");
    let import_arn = started
        .import_table_description()
        .and_then(|d| d.import_arn())
        .unwrap()
        .to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let described = client
            .describe_import()
            .import_arn(&import_arn)
            .send()
            .await
            .expect("DescribeImport");
        let status = described
            .import_table_description()
            .and_then(|d| d.import_status().cloned());
        if status == Some(ImportStatus::Completed) {
            break;
        }
        assert!(Instant::now() < deadline, "the import ended {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    point(&proxy, &orders, &imported).await;
    assert_eq!(
        v_of(&client, &orders, "o1").await.as_deref(),
        Some("imported")
    );
}

// ---------------------------------------------------------------------------------------------
// A fleet

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_fleet_every_sidecar_switches_and_a_new_one_reads_the_switch() {
    let engine = Engine::moto().await;
    let redis = RedisServer::start().await;
    let direct = sdk_client(&engine.endpoint()).await;
    let (alias, old, new) = (
        unique_table("fleet-app"),
        unique_table("fleet-old"),
        unique_table("fleet-new"),
    );
    for t in [&old, &new] {
        create_table(&direct, t).await;
        put_v(&direct, t, "k", "1", t).await;
    }
    let configure = with_aliases(&[(&alias, &old)]);
    let proxies = start_fleet(&engine.endpoint(), &redis, 2, &configure).await;
    let clients = [
        sdk_client(&proxies[0].endpoint).await,
        sdk_client(&proxies[1].endpoint).await,
    ];
    for c in &clients {
        v_of(c, &alias, "k").await;
        assert_eq!(v_of(c, &alias, "k").await.as_ref(), Some(&old));
    }

    point(&proxies[0], &alias, &new).await;
    // The peer switches within the bus lag, not the TTL.
    let switched = Instant::now();
    while v_of(&clients[1], &alias, "k").await.as_ref() != Some(&new) {
        assert!(switched.elapsed() < WAIT, "the peer never switched");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "alias switch reached the peer after {:?}",
        switched.elapsed()
    );
    assert_eq!(v_of(&clients[0], &alias, "k").await.as_ref(), Some(&new));
    // A sidecar that starts later has the config's alias, and the fleet's wins.
    let late = start_fleet(&engine.endpoint(), &redis, 1, &configure).await;
    let late_client = sdk_client(&late[0].endpoint).await;
    assert_eq!(v_of(&late_client, &alias, "k").await.as_ref(), Some(&new));
    let listed = Raw::new(Method::GET)
        .path("/aliases")
        .send(&late[0].admin)
        .await;
    let listed: Value = serde_json::from_slice(&listed.body).unwrap();
    assert_eq!(listed["aliases"][0]["source"], "admin");
}

// ---------------------------------------------------------------------------------------------
// What cannot be rewritten faithfully

#[tokio::test]
async fn a_request_naming_one_table_under_two_names_is_refused_and_escapes_are_read() {
    let engine = Engine::dynalite().await;
    let direct = sdk_client(&engine.endpoint()).await;
    let (alias, real) = (unique_table("twice"), unique_table("twice-real"));
    create_table(&direct, &real).await;
    put_v(&direct, &real, "k", "1", "v").await;
    let proxy = start_proxy_with(&engine.endpoint(), with_aliases(&[(&alias, &real)])).await;
    let keys = json!({ "Keys": [{ "pk": { "S": "k" }, "sk": { "S": "1" } }] });
    let body = json!({ "RequestItems": { alias.clone(): keys, real.clone(): keys } });
    let answer = Raw::op("DynamoDB_20120810.BatchGetItem", &body.to_string())
        .send(&proxy.endpoint)
        .await;
    assert_eq!(answer.status, 400);
    let error: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        error["__type"],
        "com.amazonaws.dynamodb.v20120810#ValidationException"
    );
    assert!(
        error["message"].as_str().unwrap().contains(&real),
        "{error}"
    );

    // A name spelled with JSON escapes is the same name.
    let escaped: String = alias
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let body =
        format!(r#"{{"TableName":"{escaped}","Key":{{"pk":{{"S":"k"}},"sk":{{"S":"1"}}}}}}"#);
    let answer = Raw::op("DynamoDB_20120810.GetItem", &body)
        .send(&proxy.endpoint)
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let got: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(got["Item"]["v"]["S"], "v");
}
