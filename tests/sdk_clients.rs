//! Unchanged AWS SDK clients against ddbcache, pointed at it by the endpoint override alone.
//!
//! Each test starts a local engine and a proxy in front of it, then runs one client through a
//! CRUD / Query / Scan / batch sequence that checks every answer, read-your-writes, and that
//! repeated reads are cache hits. boto3 (tests/sdk/python) and the JavaScript SDK v3
//! (tests/sdk/js) run as subprocesses; the Rust SDK runs in-process. Against moto, the Python
//! and JavaScript suites also cover transactions and PartiQL, which dynalite lacks.
//!
//! Needs `scripts/setup.sh` (dynalite, moto, boto3, pytest and the JavaScript SDK).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, PutRequest, WriteRequest};
use common::{create_table, key, n, s, sdk_client, start_proxy, unique_table, Engine, TestProxy};
use tokio::process::Command;

/// A whole client suite (tens of requests plus interpreter start-up) fits well within this.
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test]
async fn python_boto3_suite_through_proxy() {
    let engine = Engine::dynalite().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    run_suite(python_suite(), &proxy, false).await;
}

#[tokio::test]
async fn python_boto3_transactions_and_partiql_through_proxy() {
    let engine = Engine::moto().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    run_suite(python_suite(), &proxy, true).await;
}

#[tokio::test]
async fn js_sdk_v3_suite_through_proxy() {
    let engine = Engine::dynalite().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    run_suite(js_suite(), &proxy, false).await;
}

#[tokio::test]
async fn js_sdk_v3_transactions_and_partiql_through_proxy() {
    let engine = Engine::moto().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    run_suite(js_suite(), &proxy, true).await;
}

fn repo_path(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn require_installed(relative: &str) {
    let path = repo_path(relative);
    assert!(
        path.exists(),
        "{} not found: run scripts/setup.sh first",
        path.display()
    );
}

fn python_suite() -> Command {
    require_installed(".venv/bin/python");
    let mut command = Command::new(repo_path(".venv/bin/python"));
    // No .pytest_cache or __pycache__ in the work tree.
    command.args([
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/sdk/python",
    ]);
    command.env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

fn js_suite() -> Command {
    require_installed("scripts/upstream/node_modules/@aws-sdk/lib-dynamodb");
    let mut command = Command::new("node");
    command.args(["--test", "tests/sdk/js/"]);
    command
}

/// Runs a suite against `proxy` with test credentials and nothing from the machine's AWS setup,
/// and fails with the suite's output unless it exits 0.
async fn run_suite(mut command: Command, proxy: &TestProxy, transactions: bool) {
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("AWS_ENDPOINT_URL_DYNAMODB", &proxy.endpoint)
        .env("DDBCACHE_ADMIN", &proxy.admin)
        .env(
            "DDBCACHE_SDK_TRANSACTIONS",
            if transactions { "1" } else { "0" },
        )
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let described = format!("{:?}", command.as_std());
    let output = tokio::time::timeout(SUITE_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{described} did not finish within {SUITE_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {described} ({e}): run scripts/setup.sh first"));
    assert!(
        output.status.success(),
        "{described} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

// ---------------------------------------------------------------------------------------------
// Rust SDK

#[tokio::test]
async fn rust_sdk_sequence_through_proxy() {
    let engine = Engine::dynalite().await;
    let proxy = start_proxy(&engine.endpoint()).await;
    let client = sdk_client(&proxy.endpoint).await;
    let table = unique_table("sdk-rust");
    create_table(&client, &table).await;

    // PutItem, then GetItem twice: the second is an item-cache hit.
    client
        .put_item()
        .table_name(&table)
        .set_item(Some(item("user#1", "profile", &[("name", s("Ada"))])))
        .send()
        .await
        .expect("PutItem");
    let get = || {
        client
            .get_item()
            .table_name(&table)
            .set_key(Some(key("user#1", "profile")))
            .send()
    };
    let first = get().await.expect("GetItem");
    assert_eq!(first.item().and_then(|i| i.get("name")), Some(&s("Ada")));
    let hits = cache_hits(&proxy, "item").await;
    let second = get().await.expect("GetItem again");
    assert_eq!(second.item(), first.item());
    assert_eq!(
        cache_hits(&proxy, "item").await,
        hits + 1.0,
        "repeated GetItem is a hit"
    );

    // UpdateItem: the next GetItem sees it.
    client
        .update_item()
        .table_name(&table)
        .set_key(Some(key("user#1", "profile")))
        .update_expression("SET #n = :n")
        .expression_attribute_names("#n", "name")
        .expression_attribute_values(":n", s("Grace"))
        .send()
        .await
        .expect("UpdateItem");
    let updated = get().await.expect("GetItem after UpdateItem");
    assert_eq!(
        updated.item().and_then(|i| i.get("name")),
        Some(&s("Grace"))
    );

    // BatchWriteItem, then BatchGetItem twice: the second is served from the item cache.
    let orders = ["order#1", "order#2", "order#3"];
    let puts = orders
        .iter()
        .map(|sk| {
            let put = PutRequest::builder()
                .set_item(Some(item("cust#1", sk, &[("amount", n(&sk[6..]))])))
                .build()
                .expect("PutRequest");
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    let written = client
        .batch_write_item()
        .request_items(&table, puts)
        .send()
        .await
        .expect("BatchWriteItem");
    assert!(written.unprocessed_items().is_none_or(|u| u.is_empty()));
    let keys = KeysAndAttributes::builder()
        .set_keys(Some(orders.iter().map(|sk| key("cust#1", sk)).collect()))
        .build()
        .expect("KeysAndAttributes");
    let batch_get = || {
        client
            .batch_get_item()
            .request_items(&table, keys.clone())
            .send()
    };
    let batch_amounts =
        |answer: aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput| {
            let mut amounts: Vec<String> = answer
                .responses()
                .and_then(|r| r.get(&table))
                .expect("responses")
                .iter()
                .map(|item| item["amount"].as_n().expect("amount is a number").clone())
                .collect();
            amounts.sort();
            amounts
        };
    assert_eq!(
        batch_amounts(batch_get().await.expect("BatchGetItem")),
        ["1", "2", "3"]
    );
    let hits = cache_hits(&proxy, "item").await;
    assert_eq!(
        batch_amounts(batch_get().await.expect("BatchGetItem again")),
        ["1", "2", "3"]
    );
    assert_eq!(
        cache_hits(&proxy, "item").await,
        hits + 3.0,
        "repeated BatchGetItem is all hits"
    );

    // Query twice (the second is a query-cache hit), then a PutItem shows in the next Query.
    let query = || {
        client
            .query()
            .table_name(&table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s("cust#1"))
            .expression_attribute_values(":prefix", s("order#"))
            .send()
    };
    let sort_keys = |items: &[HashMap<String, AttributeValue>]| {
        items
            .iter()
            .map(|i| i["sk"].as_s().expect("sk is a string").clone())
            .collect::<Vec<_>>()
    };
    let first = query().await.expect("Query");
    assert_eq!(sort_keys(first.items()), orders);
    let hits = cache_hits(&proxy, "query").await;
    let second = query().await.expect("Query again");
    assert_eq!(second.items(), first.items());
    assert_eq!(
        cache_hits(&proxy, "query").await,
        hits + 1.0,
        "repeated Query is a hit"
    );
    client
        .put_item()
        .table_name(&table)
        .set_item(Some(item("cust#1", "order#4", &[("amount", n("4"))])))
        .send()
        .await
        .expect("PutItem order#4");
    let third = query().await.expect("Query after PutItem");
    assert_eq!(
        sort_keys(third.items()),
        ["order#1", "order#2", "order#3", "order#4"]
    );

    // Scan with a filter, twice; DeleteItem shows in the next Scan and GetItem.
    let scan = || {
        client
            .scan()
            .table_name(&table)
            .filter_expression("pk = :pk AND amount >= :min")
            .expression_attribute_values(":pk", s("cust#1"))
            .expression_attribute_values(":min", n("3"))
            .send()
    };
    let mut scanned = sort_keys(scan().await.expect("Scan").items());
    scanned.sort();
    assert_eq!(scanned, ["order#3", "order#4"]);
    let hits = cache_hits(&proxy, "query").await;
    scan().await.expect("Scan again");
    assert_eq!(
        cache_hits(&proxy, "query").await,
        hits + 1.0,
        "repeated Scan is a hit"
    );
    client
        .delete_item()
        .table_name(&table)
        .set_key(Some(key("cust#1", "order#4")))
        .send()
        .await
        .expect("DeleteItem");
    assert_eq!(
        sort_keys(scan().await.expect("Scan after DeleteItem").items()),
        ["order#3"]
    );
    let gone = client
        .get_item()
        .table_name(&table)
        .set_key(Some(key("cust#1", "order#4")))
        .send()
        .await
        .expect("GetItem of a deleted item");
    assert!(gone.item().is_none());

    client
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .expect("DeleteTable");
}

fn item(
    pk: &str,
    sk: &str,
    attributes: &[(&str, AttributeValue)],
) -> HashMap<String, AttributeValue> {
    let mut item = key(pk, sk);
    item.extend(
        attributes
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone())),
    );
    item
}

/// `ddbcache_cache_hits_total{cache="<cache>"}` from the proxy's `/metrics`.
async fn cache_hits(proxy: &TestProxy, cache: &str) -> f64 {
    proxy
        .metric(&format!("ddbcache_cache_hits_total{{cache=\"{cache}\"}}"))
        .await
}
