//! DynamoDB Streams readers: the keys of every record invalidated, so that writes made around every
//! sidecar (another service, a Lambda, another region of a global table, item TTL deletions) are
//! stale for no longer than the stream's lag instead of the cache TTL.
//!
//! Per table: DescribeTable names the latest stream; DescribeStream lists its shards. A shard is
//! read only once its parent has been read to its end (or is gone), so a split's records come in
//! order. Where reading starts: after the checkpointed sequence number; for a shard open when this
//! reader first saw the stream, LATEST (the cache holds nothing older than the sidecar); for any
//! other shard (a child discovered later, or one a previous lease holder never checkpointed), its
//! start. Records come in batches: a batch's keys are invalidated here, published on the bus when
//! there is one, and only then checkpointed, so a crash re-reads records rather than skipping any.
//!
//! With a fleet, one sidecar per table reads, under a lease ([`super::lease`]). A stream that is
//! not enabled or not readable is a warning and a metric; the table then falls back to its TTL.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use tracing::{debug, info, warn};

use super::bus::{Bus, Origin};
use super::lease::{Checkpoints, Lease, LeaseError, END, STARTED_AT_LATEST};
use crate::cache::{Cache, Learned};
use crate::config::{Config, StreamSource, StreamTables, StreamsConfig};
use crate::metrics::Metrics;
use crate::protocol::canonical::{encode_key, KeyAttr};
use crate::protocol::table::TableId;
use crate::protocol::writes::{ItemWrite, WriteScope};
use crate::protocol::Operation;
use crate::upstream::{error_chain, Upstream};
use crate::wait::Backoff;

/// First wait after an empty read; it doubles up to `streams.poll_interval`.
pub(super) const FIRST_IDLE_WAIT: Duration = Duration::from_millis(50);
/// First and longest wait after throttling or an upstream failure.
pub(super) const FIRST_ERROR_WAIT: Duration = Duration::from_millis(100);
pub(super) const MAX_ERROR_WAIT: Duration = Duration::from_secs(10);

/// What every reader shares (the Kinesis readers too).
pub(super) struct Ctx {
    pub(super) config: StreamsConfig,
    /// `upstream.region`: the region of the tables read, and so of their identities.
    pub(super) region: String,
    pub(super) cache: Arc<Cache>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) upstream: Arc<Upstream>,
    pub(super) bus: Option<Arc<Bus>>,
}

/// Starts the readers `[streams] tables` asks for.
pub(super) fn spawn(
    config: &Config,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    upstream: Arc<Upstream>,
    bus: Option<Arc<Bus>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ctx = Arc::new(Ctx {
        config: config.streams.clone(),
        region: config.upstream.region.clone(),
        cache,
        metrics,
        upstream,
        bus,
    });
    if config.streams.source == StreamSource::Kinesis {
        return super::kinesis::spawn(ctx);
    }
    match &config.streams.tables {
        StreamTables::None => Vec::new(),
        StreamTables::Named(tables) => tables
            .iter()
            .map(|t| tokio::spawn(read_table(ctx.clone(), t.clone())))
            .collect(),
        StreamTables::All => vec![tokio::spawn(read_every_seen_table(ctx))],
    }
}

/// `tables = "*"`: a reader for every table the cache has seen, checked every describe interval.
async fn read_every_seen_table(ctx: Arc<Ctx>) {
    let mut readers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    // Abort the readers when this task is aborted.
    struct AbortAll<'a>(&'a mut HashMap<String, tokio::task::JoinHandle<()>>);
    impl Drop for AbortAll<'_> {
        fn drop(&mut self) {
            for task in self.0.values() {
                task.abort();
            }
        }
    }
    let readers = AbortAll(&mut readers);
    loop {
        let names: std::collections::BTreeSet<String> = ctx
            .cache
            .table_ids()
            .iter()
            .filter(|id| id.region() == ctx.region)
            .map(|id| id.name().to_string())
            .collect();
        for table in names {
            readers
                .0
                .entry(table.clone())
                .or_insert_with(|| tokio::spawn(read_table(ctx.clone(), table)));
        }
        tokio::time::sleep(ctx.config.describe_interval).await;
    }
}

/// Why reading a table stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum Stop {
    #[error("the table has no enabled stream")]
    NotEnabled,
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("{0}")]
    Call(#[from] CallError),
}

/// One table, for as long as the sidecar runs: take the lease (with a fleet), read, and when
/// reading stops (lease lost, stream disabled, persistent errors) start over after a pause.
async fn read_table(ctx: Arc<Ctx>, table: String) {
    let held = ctx
        .metrics
        .fleet
        .stream_lease_held
        .with_label_values(&[&table]);
    let readable = ctx
        .metrics
        .fleet
        .stream_readable
        .with_label_values(&[&table]);
    let mut warned_not_enabled = false;
    // Without a fleet, where reading got to survives a restart of the reading (not of the process:
    // a new process starts with an empty cache, so it may start at the stream's present).
    let mut local = HashMap::new();
    loop {
        let lease = match &ctx.bus {
            None => None,
            Some(bus) => {
                let lease = acquire(&ctx, bus, &table).await;
                held.set(1);
                info!(table, "stream: lease taken; reading");
                Some(lease)
            }
        };
        let result = read_stream(&ctx, &table, lease, &mut local).await;
        held.set(0);
        readable.set(0);
        match result {
            Err(Stop::NotEnabled) => {
                if !warned_not_enabled {
                    warn!(table, "stream: not enabled on the table; writes made elsewhere are bounded by the TTL only");
                    warned_not_enabled = true;
                }
                count_error(&ctx, "not_enabled");
            }
            Err(Stop::Lease(e)) => warn!(table, error = %e, "stream: stopped reading"),
            Err(Stop::Call(e)) => {
                warn!(table, error = %e, "stream: cannot read; retrying later");
                count_error(&ctx, e.kind);
            }
            Ok(never) => match never {},
        }
        tokio::time::sleep(ctx.config.describe_interval.min(ctx.config.lease_ttl)).await;
    }
}

/// Waits until this sidecar holds the table's lease (another holder's lapses within its TTL).
pub(super) async fn acquire(ctx: &Ctx, bus: &Arc<Bus>, table: &str) -> Lease {
    let ttl = ctx.config.lease_ttl;
    loop {
        match Lease::try_acquire(bus, table, ttl).await {
            Ok(Some(lease)) => return lease,
            Ok(None) => {}
            Err(e) => {
                debug!(table, error = %e, "stream: cannot try the lease");
                count_error(ctx, "redis");
            }
        }
        tokio::time::sleep(ttl / 5).await;
    }
}

/// One shard's reading state.
struct Shard {
    parent: Option<String>,
    iterator: Option<String>,
    /// The last sequence number read (and checkpointed).
    last: Option<String>,
    done: bool,
}

/// Reads one table's stream until something stops it.
async fn read_stream(
    ctx: &Ctx,
    table: &str,
    lease: Option<Lease>,
    local: &mut HashMap<String, String>,
) -> Result<std::convert::Infallible, Stop> {
    let arn = latest_stream_arn(ctx, table).await?;
    let mut checkpoints = match lease {
        Some(lease) => Checkpoints::fleet(lease, &arn),
        None => Checkpoints::Local(local),
    };
    ctx.metrics
        .fleet
        .stream_readable
        .with_label_values(&[table])
        .set(1);
    let saved = checkpoints.load().await?;
    // Nobody read this stream before, or what was read is forgotten (Redis lost the checkpoints
    // with the rest of its data): start at its present. What changed before it is unknown, so
    // the table's entries go, here, for the fleet and in the shared tier.
    let fresh = saved.is_empty();
    if fresh {
        let scope = WriteScope {
            tables: vec![TableId::new(&ctx.region, table)],
            ..Default::default()
        };
        ctx.cache.learned(&scope, Learned::Stream);
        publish(ctx, &scope).await;
    }
    let mut shards: HashMap<String, Shard> = HashMap::new();
    let mut started_latest: HashSet<String> = HashSet::new();
    let mut first = true;
    let mut described = Instant::now();
    // After reading nothing anywhere: wait longer each time, up to `poll_interval`, but renew a
    // lease in time.
    let poll = ctx.config.poll_interval;
    let idle_cap = checkpoints
        .lease_mut()
        .map_or(poll, |lease| poll.min(lease.ttl() / 4));
    let mut idle_wait = Backoff::new(FIRST_IDLE_WAIT, idle_cap);
    let mut error_wait = Backoff::new(FIRST_ERROR_WAIT, MAX_ERROR_WAIT);
    let mut renewed = Instant::now();
    let mut partition_key: Option<String> = None;
    loop {
        if first || described.elapsed() >= ctx.config.describe_interval {
            let listed = describe_stream(ctx, &arn).await?;
            partition_key = listed.partition_key.or(partition_key);
            for (id, parent, closed) in listed.shards {
                if shards.contains_key(&id) {
                    continue;
                }
                let position = saved.get(&id).map(String::as_str);
                let done = position == Some(END) || (first && fresh && closed);
                if first && fresh && !done {
                    checkpoints.save(&id, STARTED_AT_LATEST).await?;
                    started_latest.insert(id.clone());
                } else if first && fresh && done {
                    checkpoints.save(&id, END).await?;
                }
                let last = position
                    .filter(|p| *p != END && *p != STARTED_AT_LATEST)
                    .map(str::to_string);
                shards.insert(
                    id,
                    Shard {
                        parent,
                        iterator: None,
                        last,
                        done,
                    },
                );
            }
            first = false;
            described = Instant::now();
        }
        if let Some(lease) = checkpoints.lease_mut() {
            if renewed.elapsed() >= lease.ttl() / 3 {
                lease.renew().await?;
                renewed = Instant::now();
            }
        }

        let mut read_any = false;
        let mut closed_any = false;
        let ready: Vec<String> = shards
            .iter()
            .filter(|(_, s)| !s.done)
            .filter(|(_, s)| {
                // Parents first: a child waits while its parent is known and unfinished.
                s.parent
                    .as_ref()
                    .and_then(|p| shards.get(p))
                    .is_none_or(|p| p.done)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ready {
            let shard = shards.get_mut(&id).expect("listed above");
            let at = Reading {
                table,
                arn: &arn,
                partition_key: partition_key.as_deref(),
                started_latest: &started_latest,
            };
            match read_shard(ctx, &at, &id, shard, &mut checkpoints).await {
                Ok(ShardRead { records, closed }) => {
                    read_any |= records > 0;
                    closed_any |= closed;
                    error_wait.reset();
                }
                Err(ShardError::Stop(stop)) => return Err(stop),
                Err(ShardError::Retry(e)) => {
                    count_error(ctx, e.kind);
                    debug!(table, shard = id, error = %e, "stream: GetRecords failed; backing off");
                    error_wait.wait().await;
                }
            }
        }
        if closed_any {
            // A shard ended: its children are to be found (and may be readable now).
            described = Instant::now() - ctx.config.describe_interval;
            continue;
        }
        if read_any {
            idle_wait.reset();
            continue;
        }
        // Nothing new anywhere.
        idle_wait.wait().await;
    }
}

/// What a shard is read for: its table and stream, and where reading began.
#[derive(Clone, Copy)]
struct Reading<'a> {
    table: &'a str,
    arn: &'a str,
    partition_key: Option<&'a str>,
    started_latest: &'a HashSet<String>,
}

pub(super) struct ShardRead {
    pub(super) records: usize,
    pub(super) closed: bool,
}

pub(super) enum ShardError {
    /// Stop reading the table (lease lost, stream gone).
    Stop(Stop),
    /// Try again after a pause (throttling, upstream trouble).
    Retry(CallError),
}

impl From<LeaseError> for ShardError {
    fn from(e: LeaseError) -> Self {
        ShardError::Stop(Stop::Lease(e))
    }
}

/// One GetRecords on one shard (getting an iterator first when needed), and what follows from it.
async fn read_shard(
    ctx: &Ctx,
    at: &Reading<'_>,
    id: &str,
    shard: &mut Shard,
    checkpoints: &mut Checkpoints<'_>,
) -> Result<ShardRead, ShardError> {
    let Reading {
        table,
        arn,
        partition_key,
        started_latest,
    } = *at;
    let iterator = match shard.iterator.take() {
        Some(it) => it,
        None => {
            let (kind, seq) = match &shard.last {
                Some(seq) => ("AFTER_SEQUENCE_NUMBER", Some(seq.as_str())),
                None if started_latest.contains(id) => ("LATEST", None),
                None => ("TRIM_HORIZON", None),
            };
            shard_iterator(ctx, arn, id, kind, seq)
                .await
                .map_err(stop_or_retry)?
        }
    };
    let answer = match call(
        ctx,
        Operation::GetRecords,
        serde_json::json!({ "ShardIterator": iterator, "Limit": 1000 }),
    )
    .await
    {
        Ok(a) => a,
        Err(e) if e.kind == "expired_iterator" => {
            // Take a new one from the checkpoint next time round.
            count_error(ctx, e.kind);
            return Ok(ShardRead {
                records: 0,
                closed: false,
            });
        }
        Err(e) if e.kind == "trimmed" => {
            // Records were lost to the stream's 24-hour retention: what they changed is unknown.
            count_error(ctx, e.kind);
            warn!(
                table,
                shard = id,
                "stream: records trimmed before they were read; dropping the table's entries"
            );
            let scope = WriteScope {
                tables: vec![TableId::new(&ctx.region, table)],
                ..Default::default()
            };
            ctx.cache.learned(&scope, Learned::Stream);
            publish(ctx, &scope).await;
            shard.last = None;
            return Ok(ShardRead {
                records: 0,
                closed: false,
            });
        }
        Err(e) => return Err(stop_or_retry(e)),
    };
    let records = answer["Records"].as_array().map_or(&[][..], Vec::as_slice);
    if !records.is_empty() {
        let scope = scope_of(&TableId::new(&ctx.region, table), partition_key, records);
        ctx.cache.learned(&scope, Learned::Stream);
        publish(ctx, &scope).await;
        let m = &ctx.metrics.fleet;
        m.stream_records
            .with_label_values(&[table])
            .inc_by(records.len() as u64);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for r in records {
            if let Some(created) = r["dynamodb"]["ApproximateCreationDateTime"].as_f64() {
                m.stream_lag.observe((now - created).max(0.0));
            }
        }
    }
    let batch = Batch {
        records: records.len(),
        last: records
            .last()
            .and_then(|r| r["dynamodb"]["SequenceNumber"].as_str()),
        next: answer["NextShardIterator"].as_str(),
    };
    let (iterator, last, done) = (&mut shard.iterator, &mut shard.last, &mut shard.done);
    Ok(advance(checkpoints, id, batch, iterator, last, done).await?)
}

/// What one GetRecords brought, once its invalidations went out.
pub(super) struct Batch<'a> {
    pub(super) records: usize,
    /// The last record's sequence number.
    pub(super) last: Option<&'a str>,
    /// `NextShardIterator`: none once a closed shard is read to its end.
    pub(super) next: Option<&'a str>,
}

/// Moves a shard past a batch whose invalidations went out: checkpoints its last record (so a
/// crash re-reads the batch rather than skipping it), then keeps the next iterator, or marks the
/// shard read to its end.
pub(super) async fn advance(
    checkpoints: &mut Checkpoints<'_>,
    id: &str,
    batch: Batch<'_>,
    iterator: &mut Option<String>,
    last: &mut Option<String>,
    done: &mut bool,
) -> Result<ShardRead, LeaseError> {
    if let Some(seq) = batch.last {
        checkpoints.save(id, seq).await?;
        *last = Some(seq.to_string());
    }
    *done = batch.next.is_none();
    if let Some(next) = batch.next {
        *iterator = Some(next.to_string());
    } else {
        checkpoints.save(id, END).await?;
    }
    Ok(ShardRead {
        records: batch.records,
        closed: *done,
    })
}

pub(super) fn stop_or_retry(e: CallError) -> ShardError {
    match e.kind {
        "not_enabled" => ShardError::Stop(Stop::NotEnabled),
        "denied" => ShardError::Stop(Stop::Call(e)),
        _ => ShardError::Retry(e),
    }
}

pub(super) async fn publish(ctx: &Ctx, scope: &WriteScope) {
    if let Some(bus) = &ctx.bus {
        bus.publish(scope, Origin::Stream).await;
    }
}

/// The items a batch of records changed, for table identity `id` whose partition key attribute
/// is `partition_key` (when known: Query entries of the item's partition go too, else every Query
/// entry of the table). A record whose keys cannot be read widens to the whole table.
pub(super) fn scope_of(id: &TableId, partition_key: Option<&str>, records: &[Value]) -> WriteScope {
    let mut scope = WriteScope::default();
    for r in records {
        let keys = r["dynamodb"]["Keys"].to_string();
        let Ok(attrs) = serde_json::from_str::<BTreeMap<String, KeyAttr>>(&keys) else {
            scope.add_table(id.clone());
            continue;
        };
        let Some(key) = encode_key(attrs.iter().map(|(n, v)| (n.as_str(), v))) else {
            scope.add_table(id.clone());
            continue;
        };
        let partition = partition_key.and_then(|p| encode_key([(p, attrs.get(p)?)]));
        scope.items.push(ItemWrite {
            table: id.clone(),
            key,
            partition,
        });
    }
    scope
}

async fn latest_stream_arn(ctx: &Ctx, table: &str) -> Result<String, Stop> {
    let answer = call(
        ctx,
        Operation::DescribeTable,
        serde_json::json!({ "TableName": table }),
    )
    .await
    .map_err(|e| match e.kind {
        "not_enabled" => Stop::NotEnabled,
        _ => Stop::Call(e),
    })?;
    let t = &answer["Table"];
    let enabled = t["StreamSpecification"]["StreamEnabled"]
        .as_bool()
        .unwrap_or(false);
    match t["LatestStreamArn"].as_str() {
        Some(arn) if enabled => Ok(arn.to_string()),
        _ => Err(Stop::NotEnabled),
    }
}

#[derive(Default)]
struct Described {
    partition_key: Option<String>,
    shards: Vec<(String, Option<String>, bool)>,
}

/// A stream's partition key attribute (when it says) and every shard: (id, parent, closed).
async fn describe_stream(ctx: &Ctx, arn: &str) -> Result<Described, Stop> {
    let mut described = Described::default();
    let mut start: Option<String> = None;
    loop {
        let mut body = serde_json::json!({ "StreamArn": arn });
        if let Some(s) = &start {
            body["ExclusiveStartShardId"] = s.clone().into();
        }
        let answer = call(ctx, Operation::DescribeStream, body)
            .await
            .map_err(|e| match e.kind {
                "not_enabled" => Stop::NotEnabled,
                _ => Stop::Call(e),
            })?;
        let d = &answer["StreamDescription"];
        if d["StreamStatus"].as_str() == Some("DISABLED") {
            return Err(Stop::NotEnabled);
        }
        if let Some(hash) = d["KeySchema"]
            .as_array()
            .and_then(|k| k.iter().find(|e| e["KeyType"] == "HASH"))
            .and_then(|e| e["AttributeName"].as_str())
        {
            described.partition_key = Some(hash.to_string());
        }
        for s in d["Shards"].as_array().map_or(&[][..], Vec::as_slice) {
            let Some(id) = s["ShardId"].as_str() else {
                continue;
            };
            described.shards.push((
                id.to_string(),
                s["ParentShardId"].as_str().map(str::to_string),
                s["SequenceNumberRange"]["EndingSequenceNumber"].is_string(),
            ));
        }
        match d["LastEvaluatedShardId"].as_str() {
            Some(last) => start = Some(last.to_string()),
            None => return Ok(described),
        }
    }
}

async fn shard_iterator(
    ctx: &Ctx,
    arn: &str,
    shard: &str,
    kind: &str,
    seq: Option<&str>,
) -> Result<String, CallError> {
    let mut body = serde_json::json!({
        "StreamArn": arn,
        "ShardId": shard,
        "ShardIteratorType": kind,
    });
    if let Some(seq) = seq {
        body["SequenceNumber"] = seq.into();
    }
    let answer = call(ctx, Operation::GetShardIterator, body).await?;
    answer["ShardIterator"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| CallError {
            kind: "other",
            message: "GetShardIterator answered without a ShardIterator".into(),
        })
}

/// A failed stream call, with the `kind` label of `ddbcache_stream_errors_total`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(super) struct CallError {
    pub(super) kind: &'static str,
    pub(super) message: String,
}

pub(super) fn count_error(ctx: &Ctx, kind: &str) {
    ctx.metrics
        .fleet
        .stream_errors
        .with_label_values(&[kind])
        .inc();
}

/// One call of ddbcache's own to the DynamoDB or Streams endpoint.
pub(super) async fn call(ctx: &Ctx, op: Operation, body: Value) -> Result<Value, CallError> {
    let headers = ctx.upstream.own_headers(op);
    let answer = ctx
        .upstream
        .send(
            op,
            &ctx.region,
            "/",
            &headers,
            Bytes::from(body.to_string()),
            true,
        )
        .await
        .map_err(upstream_failed)?;
    read_answer(op.name(), &answer)
}

/// A call that got no answer.
pub(super) fn upstream_failed(e: crate::upstream::UpstreamError) -> CallError {
    CallError {
        kind: "upstream",
        message: error_chain(&e),
    }
}

/// A stream call's answer (`what` names the call): its JSON, or the error it says, with the
/// kind of error it is (the error names of DynamoDB, DynamoDB Streams and Kinesis alike).
pub(super) fn read_answer(
    what: &str,
    answer: &crate::upstream::UpstreamResponse,
) -> Result<Value, CallError> {
    let json: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    if answer.status.is_success() {
        return Ok(json);
    }
    let error_type = json["__type"].as_str().unwrap_or("");
    let name = error_type.rsplit('#').next().unwrap_or(error_type);
    let kind = match name {
        "ThrottlingException"
        | "LimitExceededException"
        | "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded" => "throttled",
        "ExpiredIteratorException" => "expired_iterator",
        "TrimmedDataAccessException" => "trimmed",
        "ResourceNotFoundException" => "not_enabled",
        "AccessDeniedException" | "UnrecognizedClientException" => "denied",
        _ if answer.status.is_server_error() => "upstream",
        _ => "other",
    };
    let message = json["message"]
        .as_str()
        .or(json["Message"].as_str())
        .unwrap_or("");
    Err(CallError {
        kind,
        message: format!("{what} {}: {name} {message}", answer.status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_become_the_canonical_keys_reads_use() {
        let records: Vec<Value> = serde_json::from_str(
            r#"[{"eventName":"MODIFY","dynamodb":{"Keys":{"sk":{"N":"1.0"},"pk":{"S":"a"}}}},
                {"eventName":"REMOVE","dynamodb":{"Keys":{"pk":{"BOOL":true}}}}]"#,
        )
        .unwrap();
        let id = TableId::new("us-east-1", "t");
        let scope = scope_of(&id, Some("pk"), &records);
        let Ok(crate::protocol::reads::ReadParse::Cacheable(get)) =
            crate::protocol::reads::parse_get_item(
                br#"{"TableName":"t","Key":{"pk":{"S":"a"},"sk":{"N":"1"}}}"#,
            )
        else {
            panic!("a cacheable GetItem");
        };
        assert_eq!(scope.items.len(), 1);
        assert_eq!(scope.items[0].table, id);
        assert_eq!(scope.items[0].key, &get.key[..]);
        let partition = crate::protocol::canonical::encode_key([(
            "pk",
            &serde_json::from_str::<KeyAttr>(r#"{"S":"a"}"#).unwrap(),
        )]);
        assert_eq!(scope.items[0].partition, partition);
        // A key ddbcache cannot read widens to the whole table.
        assert_eq!(scope.tables, vec![id]);
    }
}
