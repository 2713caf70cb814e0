//! Kinesis Data Streams for DynamoDB as the change source (`[streams] source = "kinesis"`),
//! against moto, which serves DynamoDB and Kinesis on one port. moto does not stream a table's
//! changes to Kinesis itself, so each test writes an item directly to moto's DynamoDB and puts
//! the record DynamoDB would put for it into moto's Kinesis data stream: base64 `Data` holding
//! `{"awsRegion","eventID","eventName","userIdentity","recordFormat":"application/json",
//! "tableName","dynamodb":{"ApproximateCreationDateTime" (ms),"Keys","NewImage","SizeBytes"},
//! "eventSource":"aws:dynamodb"}` (developer guide, "Using Kinesis Data Streams to capture
//! changes to DynamoDB").
//!
//! Shown: records invalidate the keys they name, in any order and however often they come; a
//! table's data stream is found with DescribeKinesisStreamingDestination (answered by a relay:
//! moto does not implement it); a split is read parent first, then its children from their start
//! (scripted by a relay: moto's SplitShard keeps putting new records into the closed parent, which
//! Kinesis never does); and in a fleet one sidecar reads under the lease, and the one that takes
//! over from a dead holder resumes at the checkpoint, so records put meanwhile are not skipped.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};

use common::fleet::{get_through, lease_holder, put_direct, start_fleet};
use common::*;
use ddbcache::config::{Config, StreamSource, StreamTables};

const WAIT: Duration = Duration::from_secs(20);
const REGION: &str = "us-east-1";
/// The account moto runs as.
const ACCOUNT: &str = "123456789012";

/// One Kinesis call to moto, as the SDK sends it; the answer's JSON.
async fn kinesis(engine: &Engine, action: &str, body: Value) -> Value {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=AKID/20200101/{REGION}/kinesis/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=0"
    );
    let (status, _, answer) = dynamodb_post(
        &engine.endpoint(),
        Some(&format!("Kinesis_20131202.{action}")),
        &[
            ("content-type", "application/x-amz-json-1.1"),
            ("authorization", &auth),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(
        status,
        200,
        "{action}: {}",
        String::from_utf8_lossy(&answer)
    );
    serde_json::from_slice(&answer).unwrap_or(Value::Null)
}

async fn create_data_stream(engine: &Engine, name: &str) {
    kinesis(
        engine,
        "CreateStream",
        json!({ "StreamName": name, "ShardCount": 1 }),
    )
    .await;
}

fn stream_arn(name: &str) -> String {
    format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}")
}

/// What DynamoDB puts into the data stream for a write of `pk` at `version` (`REMOVE` for 0).
fn change(table: &str, pk: &str, version: u64) -> Value {
    let keys = json!({ "pk": { "S": pk }, "sk": { "S": "s" } });
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut dynamodb =
        json!({ "ApproximateCreationDateTime": now_ms, "Keys": keys, "SizeBytes": 40 });
    if version > 0 {
        let mut image = keys.clone();
        image["v"] = json!({ "N": version.to_string() });
        dynamodb["NewImage"] = image;
    }
    json!({
        "awsRegion": REGION,
        "eventID": uuid_like(pk, version),
        "eventName": if version == 0 { "REMOVE" } else { "MODIFY" },
        "userIdentity": null,
        "recordFormat": "application/json",
        "tableName": table,
        "dynamodb": dynamodb,
        "eventSource": "aws:dynamodb",
    })
}

fn uuid_like(pk: &str, version: u64) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", pk.len(), version)
}

/// Puts one change record into the data stream.
async fn put_record(engine: &Engine, stream: &str, change: &Value) {
    let data = base64::engine::general_purpose::STANDARD.encode(change.to_string());
    let partition = change["dynamodb"]["Keys"].to_string();
    kinesis(
        engine,
        "PutRecord",
        json!({ "StreamName": stream, "Data": data, "PartitionKey": partition }),
    )
    .await;
}

/// Holds `pk` at `version` in the sidecar's cache (a hit proves it).
async fn cached(proxy: &TestProxy, table: &str, pk: &str, version: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (v, hit) = get_through(proxy, table, pk).await;
        if hit && v == version {
            return;
        }
        assert!(Instant::now() < deadline, "{pk} never cached at v{version}");
    }
}

/// Waits until the sidecar answers `pk` at `version`.
async fn until_served(proxy: &TestProxy, table: &str, pk: &str, version: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (v, _) = get_through(proxy, table, pk).await;
        if v == version {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pk} still at v{v} through {}: its record did not invalidate it",
            proxy.endpoint
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn records_read(table: &str) -> String {
    format!("ddbcache_stream_records_total{{table=\"{table}\"}}")
}

/// Puts probe records until one of the sidecars has read one: the stream is then being read
/// (from LATEST, where a new reader starts) and has a checkpoint.
async fn until_reading(engine: &Engine, stream: &str, proxies: &[&TestProxy], table: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        put_record(engine, stream, &change(table, "probe", 1)).await;
        for _ in 0..20 {
            let mut read = 0.0;
            for p in proxies {
                read += p.metric(&records_read(table)).await;
            }
            if read > 0.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(Instant::now() < deadline, "no sidecar read the data stream");
    }
}

/// The config of a sidecar reading `table`'s changes from Kinesis on `engine`.
fn kinesis_config(engine: &str, table: &str, stream: Option<&str>) -> impl Fn(&mut Config) {
    let (engine, table, stream) = (
        engine.to_string(),
        table.to_string(),
        stream.map(str::to_string),
    );
    move |c: &mut Config| {
        c.streams.source = StreamSource::Kinesis;
        c.streams.tables = StreamTables::Named(vec![table.clone()]);
        c.streams.lease_ttl = Duration::from_secs(1);
        c.upstream.kinesis_endpoint = Some(engine.clone());
        if let Some(stream) = &stream {
            c.streams
                .kinesis_streams
                .insert(table.clone(), stream.clone());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_invalidate_their_keys_in_any_order_and_however_often_they_come() {
    let engine = Engine::moto().await;
    let direct = sdk_client(&engine.endpoint()).await;
    let table = unique_table("kds");
    create_table(&direct, &table).await;
    let stream = unique_table("kds-stream");
    create_data_stream(&engine, &stream).await;
    // The table's destination is asked for, as DynamoDB answers it (moto does not know the call).
    let relay = Relay::start(&engine.endpoint()).await;
    let destination = json!({
        "TableName": table,
        "KinesisDataStreamDestinations": [
            { "StreamArn": stream_arn("an-old-one"), "DestinationStatus": "DISABLED" },
            { "StreamArn": stream_arn(&stream), "DestinationStatus": "ACTIVE",
              "ApproximateCreationDateTimePrecision": "MILLISECOND" },
        ],
    });
    let answer: &'static str = Box::leak(destination.to_string().into_boxed_str());
    relay
        .fault(
            |target, _| target.ends_with(".DescribeKinesisStreamingDestination"),
            Fault::Answer(answer),
        )
        .await;
    let proxy = start_proxy_with(
        &relay.endpoint,
        kinesis_config(&engine.endpoint(), &table, None),
    )
    .await;
    proxy.wait_ready().await;
    until_reading(&engine, &stream, &[&proxy], &table).await;
    let readable = format!("ddbcache_stream_readable{{table=\"{table}\"}}");
    assert_eq!(proxy.metric(&readable).await, 1.0);

    // Each key written twice around ddbcache; the records come late, out of order, and twice.
    let keys: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    for pk in &keys {
        cached(&proxy, &table, pk, 0).await;
    }
    for pk in &keys {
        put_direct(&direct, &table, pk, 1).await;
        put_direct(&direct, &table, pk, 2).await;
    }
    for pk in keys.iter().rev() {
        put_record(&engine, &stream, &change(&table, pk, 2)).await;
        put_record(&engine, &stream, &change(&table, pk, 1)).await;
        put_record(&engine, &stream, &change(&table, pk, 2)).await;
    }
    // A record of a table this sidecar does not serve, and one that is not a change at all.
    put_record(&engine, &stream, &change("another-table", "k0", 1)).await;
    for pk in &keys {
        until_served(&proxy, &table, pk, 2).await;
        cached(&proxy, &table, pk, 2).await;
    }
    // Late duplicates of old records kill entries, never bring an old value back.
    let before = proxy.metric(&records_read(&table)).await;
    for pk in &keys {
        put_record(&engine, &stream, &change(&table, pk, 1)).await;
    }
    proxy
        .wait_metric(&records_read(&table), WAIT, |v| v >= before + 5.0)
        .await;
    for pk in &keys {
        assert_eq!(get_through(&proxy, &table, pk).await.0, 2, "{pk}");
    }
}

/// A record of the data stream, as GetRecords answers it.
fn record(change: &Value, sequence: u64) -> Value {
    json!({
        "SequenceNumber": sequence.to_string(),
        "ApproximateArrivalTimestamp": 1_700_000_000.0,
        "Data": base64::engine::general_purpose::STANDARD.encode(change.to_string()),
        "PartitionKey": change["dynamodb"]["Keys"].to_string(),
    })
}

/// Kinesis answers scripted by phase: each `(phases, action, token, answer)` answers the calls of
/// `action` whose body holds `token` while the script is at one of `phases` (the relay answers
/// them without asking moto, which cannot reshard as Kinesis does).
struct Script {
    phase: Arc<AtomicU8>,
}

type Scripted = (
    std::ops::RangeInclusive<u8>,
    &'static str,
    &'static str,
    Value,
);

impl Script {
    async fn on(relay: &Relay, answers: Vec<Scripted>) -> Script {
        let phase = Arc::new(AtomicU8::new(1));
        for (at, action, token, answer) in answers {
            let current = phase.clone();
            let target = format!("Kinesis_20131202.{action}");
            let token = format!("\"{token}\"");
            let answer: &'static str = Box::leak(answer.to_string().into_boxed_str());
            relay
                .fault(
                    move |t, body| {
                        at.contains(&current.load(Ordering::SeqCst))
                            && t == target
                            && String::from_utf8_lossy(body).contains(&token)
                    },
                    Fault::Answer(answer),
                )
                .await;
        }
        Script { phase }
    }

    fn to(&self, phase: u8) {
        self.phase.store(phase, Ordering::SeqCst);
    }
}

async fn until_seen(relay: &Relay, action: &str, token: &str, times: usize) {
    let deadline = Instant::now() + WAIT;
    while relay.seen(action, token).await < times {
        assert!(
            Instant::now() < deadline,
            "never {times} x {action} {token}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_is_read_parent_first_then_children() {
    let engine = Engine::moto().await;
    let direct = sdk_client(&engine.endpoint()).await;
    let table = unique_table("kds-split");
    create_table(&direct, &table).await;
    let relay = Relay::start(&engine.endpoint()).await;
    const PARENT: &str = "shardId-000000000000";
    let shard = |id: &str, parent: Option<&str>, ending: Option<&str>| {
        let mut s =
            json!({ "ShardId": id, "SequenceNumberRange": { "StartingSequenceNumber": "100" } });
        if let Some(p) = parent {
            s["ParentShardId"] = p.into();
        }
        if let Some(e) = ending {
            s["SequenceNumberRange"]["EndingSequenceNumber"] = e.into();
        }
        s
    };
    let open_parent = json!({ "Shards": [shard(PARENT, None, None)] });
    let split = json!({ "Shards": [
        shard(PARENT, None, Some("101")),
        shard("shardId-000000000001", Some(PARENT), None),
        shard("shardId-000000000002", Some(PARENT), None),
    ]});
    let idle =
        |it: &str| json!({ "Records": [], "NextShardIterator": it, "MillisBehindLatest": 0 });
    let script = Script::on(
        &relay,
        vec![
            // 1: one open shard, read from LATEST, nothing new.
            (1..=1, "ListShards", "scripted", open_parent),
            (
                1..=1,
                "GetShardIterator",
                PARENT,
                json!({ "ShardIterator": "it-p0" }),
            ),
            (1..=1, "GetRecords", "it-p0", idle("it-p0")),
            // 2: split. The parent has a last record, then pages to read before its end; the
            // children are there, each with a record.
            (2..=3, "ListShards", "scripted", split),
            (
                2..=2,
                "GetRecords",
                "it-p0",
                json!({
                "Records": [record(&change(&table, "before", 1), 101)],
                "NextShardIterator": "it-p1", "MillisBehindLatest": 0 }),
            ),
            (2..=2, "GetRecords", "it-p1", idle("it-p1")),
            (
                2..=3,
                "GetShardIterator",
                "shardId-000000000001",
                json!({ "ShardIterator": "it-a0" }),
            ),
            (
                2..=3,
                "GetShardIterator",
                "shardId-000000000002",
                json!({ "ShardIterator": "it-b0" }),
            ),
            (
                2..=3,
                "GetRecords",
                "it-a0",
                json!({
                "Records": [record(&change(&table, "after-1", 1), 201)],
                "NextShardIterator": "it-a1", "MillisBehindLatest": 0 }),
            ),
            (
                2..=3,
                "GetRecords",
                "it-b0",
                json!({
                "Records": [record(&change(&table, "after-2", 1), 301)],
                "NextShardIterator": "it-b1", "MillisBehindLatest": 0 }),
            ),
            (2..=3, "GetRecords", "it-a1", idle("it-a1")),
            (2..=3, "GetRecords", "it-b1", idle("it-b1")),
            // 3: the parent's end.
            (
                3..=3,
                "GetRecords",
                "it-p1",
                json!({ "Records": [], "MillisBehindLatest": 0,
                "ChildShards": [{ "ShardId": "shardId-000000000001", "ParentShards": [PARENT] },
                                { "ShardId": "shardId-000000000002", "ParentShards": [PARENT] }] }),
            ),
        ],
    )
    .await;
    let configure = kinesis_config(&relay.endpoint, &table, Some("scripted"));
    let proxy = start_proxy_with(&engine.endpoint(), |c| {
        configure(c);
        // Shards are listed again often: children are known while their parent is being read.
        c.streams.describe_interval = Duration::from_millis(50);
    })
    .await;
    proxy.wait_ready().await;
    until_seen(&relay, "GetRecords", "it-p0", 1).await;
    for pk in ["before", "after-1", "after-2"] {
        cached(&proxy, &table, pk, 0).await;
        put_direct(&direct, &table, pk, 1).await;
    }

    script.to(2);
    until_served(&proxy, &table, "before", 1).await;
    let listed = relay.seen("ListShards", "scripted").await;
    until_seen(&relay, "ListShards", "scripted", listed + 3).await;
    until_seen(&relay, "GetRecords", "it-p1", 3).await;
    for child in ["shardId-000000000001", "shardId-000000000002"] {
        assert_eq!(
            relay.seen("GetShardIterator", child).await,
            0,
            "{child} read before its parent's end"
        );
    }
    assert_eq!(get_through(&proxy, &table, "after-1").await, (0, true));

    script.to(3);
    for pk in ["after-1", "after-2"] {
        until_served(&proxy, &table, pk, 1).await;
    }
    // A child is read from its start, whatever the stream's present was.
    assert_eq!(relay.seen("GetShardIterator", "TRIM_HORIZON").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_sidecar_reads_under_the_lease_and_its_successor_resumes_at_the_checkpoint() {
    let engine = Engine::moto().await;
    let redis = RedisServer::start().await;
    let direct = sdk_client(&engine.endpoint()).await;
    let table = unique_table("kds-lease");
    create_table(&direct, &table).await;
    let stream = unique_table("kds-lease-stream");
    create_data_stream(&engine, &stream).await;
    let configure = kinesis_config(&engine.endpoint(), &table, Some(&stream));
    let mut proxies = start_fleet(&engine.endpoint(), &redis, 2, configure).await;
    let holder = {
        let all: Vec<&TestProxy> = proxies.iter().collect();
        lease_holder(&all, &table).await
    };
    let all: Vec<&TestProxy> = proxies.iter().collect();
    until_reading(&engine, &stream, &all, &table).await;
    let survivor = &proxies[1 - holder];
    let keys: Vec<String> = (0..10).map(|i| format!("h{i}")).collect();
    for pk in &keys {
        cached(survivor, &table, pk, 0).await;
    }

    // The holder dies; every key is written, and its record put, while nobody holds the lease.
    let dead = proxies.remove(holder);
    let survivor = &proxies[0];
    dead.shutdown().await.unwrap();
    for pk in &keys {
        put_direct(&direct, &table, pk, 1).await;
        put_record(&engine, &stream, &change(&table, pk, 1)).await;
    }
    lease_holder(&[survivor], &table).await;
    for pk in &keys {
        until_served(survivor, &table, pk, 1).await;
    }
}
