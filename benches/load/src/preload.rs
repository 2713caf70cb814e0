//! `preload`: create the benchmark table and fill it, so reads find their items.
//!
//! CreateTable (on-demand billing, `pk`/`sk` string keys; an existing table is reused), then
//! DescribeTable until ACTIVE, then BatchWriteItem in batches of 25 from several workers.
//! UnprocessedItems are sent again with exponential back-off, as the SDKs do; throttling and
//! 5xx answers are retried, any other error stops the load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::Value;

use crate::client::{DynamoClient, Reply};
use crate::workload::{admin_bodies, Keyspace};

const BATCH: u64 = 25;
const MAX_ATTEMPTS: u32 = 12;

pub async fn preload(
    client: Arc<DynamoClient>,
    table: &str,
    keyspace: Keyspace,
    concurrency: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    create_table(&client, table).await?;
    wait_active(&client, table).await?;

    let batches = keyspace.keys.div_ceil(BATCH);
    let next = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let payload: Arc<str> = keyspace.payload().into();
    let progress = tokio::spawn({
        let written = Arc::clone(&written);
        let keys = keyspace.keys;
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "preload: {} / {keys} items",
                    written.load(Ordering::Relaxed)
                );
            }
        }
    });
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, 64) {
        let client = Arc::clone(&client);
        let next = Arc::clone(&next);
        let written = Arc::clone(&written);
        let payload = Arc::clone(&payload);
        let table = table.to_owned();
        workers.push(tokio::spawn(async move {
            loop {
                let batch = next.fetch_add(1, Ordering::Relaxed);
                if batch >= batches {
                    return anyhow::Ok(());
                }
                let keys = batch * BATCH..((batch + 1) * BATCH).min(keyspace.keys);
                let count = keys.end - keys.start;
                let body = admin_bodies::batch_write(&table, &keyspace, &payload, keys);
                write_batch(&client, body).await?;
                written.fetch_add(count, Ordering::Relaxed);
            }
        }));
    }
    let mut result = Ok(());
    for worker in workers {
        if let Err(e) = worker.await? {
            result = Err(e);
        }
    }
    progress.abort();
    result?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "preload: table {table} has {} items of {} B ({:.1}s, {:.0} items/s)",
        keyspace.keys,
        keyspace.item_bytes,
        secs,
        keyspace.keys as f64 / secs
    );
    Ok(())
}

async fn create_table(client: &DynamoClient, table: &str) -> anyhow::Result<()> {
    let reply = client
        .call_target(
            "DynamoDB_20120810.CreateTable",
            admin_bodies::create_table(table),
        )
        .await
        .map_err(|e| anyhow::anyhow!("CreateTable: {}: {}", e.kind(), e.detail()))?;
    if reply.status.is_success() {
        eprintln!("preload: created table {table}");
        return Ok(());
    }
    if reply.error_type().as_deref() == Some("ResourceInUseException") {
        eprintln!("preload: table {table} exists, reusing it");
        return Ok(());
    }
    bail!("CreateTable {table}: {}", describe(&reply))
}

async fn wait_active(client: &DynamoClient, table: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let reply = client
            .call_target(
                "DynamoDB_20120810.DescribeTable",
                admin_bodies::describe_table(table),
            )
            .await
            .map_err(|e| anyhow::anyhow!("DescribeTable: {}: {}", e.kind(), e.detail()))?;
        if !reply.status.is_success() {
            bail!("DescribeTable {table}: {}", describe(&reply));
        }
        let v: Value = serde_json::from_slice(&reply.body).context("DescribeTable response")?;
        let status = v["Table"]["TableStatus"].as_str().unwrap_or("");
        if status == "ACTIVE" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("table {table} is still {status:?} after 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Writes one batch, resending whatever DynamoDB leaves unprocessed.
async fn write_batch(client: &DynamoClient, mut body: Bytes) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    loop {
        let retry = match client
            .call_target("DynamoDB_20120810.BatchWriteItem", body.clone())
            .await
        {
            Err(e) => format!("{}: {}", e.kind(), e.detail()),
            Ok(reply) if reply.status.is_success() => {
                let v: Value =
                    serde_json::from_slice(&reply.body).context("BatchWriteItem response")?;
                match v.get("UnprocessedItems") {
                    Some(Value::Object(left)) if !left.is_empty() => {
                        body = Bytes::from(serde_json::json!({ "RequestItems": left }).to_string());
                        attempt = 0;
                        // Unprocessed items mean the table is at capacity: slow down a little.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    _ => return Ok(()),
                }
            }
            Ok(reply) => {
                let retryable = reply.status.is_server_error()
                    || matches!(
                        reply.error_type().as_deref(),
                        Some("ProvisionedThroughputExceededException")
                            | Some("ThrottlingException")
                            | Some("RequestLimitExceeded")
                    );
                if !retryable {
                    bail!("BatchWriteItem: {}", describe(&reply));
                }
                describe(&reply)
            }
        };
        attempt += 1;
        if attempt >= MAX_ATTEMPTS {
            bail!("BatchWriteItem failed {MAX_ATTEMPTS} times, last: {retry}");
        }
        let backoff = Duration::from_millis(25 << attempt.min(8));
        tokio::time::sleep(backoff).await;
    }
}

fn describe(reply: &Reply) -> String {
    format!(
        "HTTP {}: {}",
        reply.status.as_u16(),
        String::from_utf8_lossy(&reply.body[..reply.body.len().min(500)])
    )
}
