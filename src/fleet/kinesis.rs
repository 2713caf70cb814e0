//! Kinesis Data Streams for DynamoDB as the change source (`[streams] source = "kinesis"`): for
//! tables that stream their changes to a Kinesis data stream (longer retention, more consumers;
//! often with DynamoDB Streams off), the data stream is read and the keys of its records
//! invalidated, as [`super::streams`] does with DynamoDB Streams.
//!
//! A record's `Data` is the JSON DynamoDB writes for the feature (developer guide, "Using Kinesis
//! Data Streams to capture changes to DynamoDB"): `{"awsRegion":"us-east-1","eventID":"...",
//! "eventName":"INSERT"|"MODIFY"|"REMOVE","userIdentity":null,"recordFormat":"application/json",
//! "tableName":"orders","dynamodb":{"ApproximateCreationDateTime":1649930048474,"Keys":{...},
//! "NewImage":{...},"OldImage":{...},"SizeBytes":120},"eventSource":"aws:dynamodb"}`. The keys in
//! `dynamodb.Keys` are invalidated in the table `tableName` names; a data stream may carry several
//! tables' changes, and every one is applied. A record that cannot be read widens to every table
//! the stream is read for.
//!
//! Delivery is at least once and not in order: DynamoDB documents that a change may appear in the
//! data stream more than once, and in another order than the changes were made. For ddbcache
//! that is enough as it is. A record only says "this key changed"; invalidating is idempotent
//! (a duplicate kills what is already dead) and commutes (two records in either order leave the
//! same entries dead), and nothing is ever filled from a record, so no order can bring an old
//! value back. What a late record costs is an extra miss.
//!
//! Per data stream: ListShards names the shards; a shard is read once its parents
//! (`ParentShardId`, and `AdjacentParentShardId` after a merge) are read to their end, so a
//! resharding is followed in order; GetShardIterator (after the checkpoint; LATEST for a shard
//! open when the stream was first read; else TRIM_HORIZON) and GetRecords read it. Checkpoints
//! are written once a batch's invalidations went out. With a fleet, one sidecar per data stream
//! reads, under the same Redis lease and fenced checkpoints as DynamoDB Streams ([`super::lease`]),
//! and publishes what it reads on the bus. A table's data stream is configured
//! (`[streams.kinesis_streams]`) or asked for (DescribeKinesisStreamingDestination: its active
//! destination).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::lease::{Checkpoints, Lease, END, STARTED_AT_LATEST};
use super::streams::{
    self, advance, count_error, publish, stop_or_retry, Batch, CallError, Ctx, ShardError,
    ShardRead, Stop, FIRST_ERROR_WAIT, FIRST_IDLE_WAIT, MAX_ERROR_WAIT,
};
use crate::cache::Learned;
use crate::config::StreamTables;
use crate::protocol::region::Region;
use crate::protocol::table::TableId;
use crate::protocol::writes::WriteScope;
use crate::protocol::Operation;
use crate::wait::Backoff;

/// The tables a data stream is read for (it may carry others too).
type Tables = Arc<Mutex<BTreeSet<String>>>;

/// Starts the work `[streams] tables` asks for, reading Kinesis.
pub(super) fn spawn(ctx: Arc<Ctx>) -> Vec<tokio::task::JoinHandle<()>> {
    match ctx.config.tables.clone() {
        StreamTables::None => Vec::new(),
        tables => vec![tokio::spawn(place_tables(ctx, tables))],
    }
}

/// A Kinesis data stream, as configured or as DynamoDB names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DataStream {
    name: String,
    /// When it was named by ARN (calls then name it so: it may be another account's).
    arn: Option<String>,
    region: String,
}

impl DataStream {
    /// `orders-changes`, or `arn:aws:kinesis:us-east-1:111122223333:stream/orders-changes`.
    fn parse(s: &str, default_region: &str) -> Option<DataStream> {
        let Some(rest) = s.strip_prefix("arn:") else {
            return (!s.is_empty() && !s.contains('/')).then(|| DataStream {
                name: s.to_string(),
                arn: None,
                region: default_region.to_string(),
            });
        };
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [_partition, "kinesis", region, _account, resource] = parts[..] else {
            return None;
        };
        let name = resource.strip_prefix("stream/").filter(|n| !n.is_empty())?;
        Region::parse(region)?;
        Some(DataStream {
            name: name.to_string(),
            arn: Some(s.to_string()),
            region: region.to_string(),
        })
    }

    /// What its lease and checkpoints are kept under.
    fn key(&self) -> String {
        format!("kinesis/{}/{}", self.region, self.name)
    }

    /// A call's body naming the stream, with `members` added.
    fn body(&self, members: Value) -> Value {
        let mut body = match &self.arn {
            Some(arn) => json!({ "StreamARN": arn }),
            None => json!({ "StreamName": self.name }),
        };
        if let (Some(b), Value::Object(m)) = (body.as_object_mut(), members) {
            b.extend(m);
        }
        body
    }
}

/// A reader of one data stream, ended when dropped.
struct Reader {
    task: tokio::task::JoinHandle<()>,
    tables: Tables,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Finds each table's data stream and keeps one reader per data stream; tables whose stream is
/// not found yet (or, with `"*"`, tables seen since) are looked at again every describe interval.
async fn place_tables(ctx: Arc<Ctx>, tables: StreamTables) {
    let mut readers: HashMap<String, Reader> = HashMap::new();
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut warned: BTreeSet<String> = BTreeSet::new();
    loop {
        let wanted: Vec<String> = match &tables {
            StreamTables::Named(names) => names.clone(),
            StreamTables::All => ctx
                .cache
                .table_ids()
                .iter()
                .filter(|id| id.region() == ctx.region)
                .map(|id| id.name().to_string())
                .collect(),
            StreamTables::None => Vec::new(),
        };
        for table in wanted {
            if placed.contains(&table) {
                continue;
            }
            match data_stream_of(&ctx, &table).await {
                Ok(Some(stream)) => {
                    info!(
                        table,
                        stream = stream.name,
                        "kinesis: the table's changes are read from its data stream"
                    );
                    let reader = readers.entry(stream.key()).or_insert_with(|| {
                        let tables = Tables::default();
                        let task = tokio::spawn(read_forever(ctx.clone(), stream, tables.clone()));
                        Reader { task, tables }
                    });
                    reader.tables.lock().insert(table.clone());
                    placed.insert(table);
                }
                Ok(None) => {
                    if warned.insert(table.clone()) {
                        warn!(table, "kinesis: the table streams to no active Kinesis data stream; writes made elsewhere are bounded by the TTL only");
                    }
                    count_error(&ctx, "not_enabled");
                }
                Err(e) => {
                    debug!(table, error = %e, "kinesis: cannot ask for the table's data stream");
                    count_error(&ctx, e.kind);
                }
            }
        }
        tokio::time::sleep(ctx.config.describe_interval).await;
    }
}

/// The table's data stream: configured, or its active Kinesis streaming destination.
async fn data_stream_of(ctx: &Ctx, table: &str) -> Result<Option<DataStream>, CallError> {
    if let Some(configured) = ctx.config.kinesis_streams.get(table) {
        return Ok(DataStream::parse(configured, &ctx.region));
    }
    let answer = streams::call(
        ctx,
        Operation::DescribeKinesisStreamingDestination,
        json!({ "TableName": table }),
    )
    .await?;
    let destinations = answer["KinesisDataStreamDestinations"].as_array();
    Ok(destinations
        .into_iter()
        .flatten()
        .filter(|d| matches!(d["DestinationStatus"].as_str(), Some("ACTIVE" | "UPDATING")))
        .find_map(|d| DataStream::parse(d["StreamArn"].as_str()?, &ctx.region)))
}

/// One data stream, for as long as the sidecar runs: take the lease (with a fleet), read, and
/// when reading stops start over after a pause.
async fn read_forever(ctx: Arc<Ctx>, stream: DataStream, tables: Tables) {
    let gauge = |metric: &prometheus::IntGaugeVec, value: i64| {
        for table in tables.lock().iter() {
            metric.with_label_values(&[table]).set(value);
        }
    };
    let fleet = &ctx.metrics.fleet;
    let mut warned_gone = false;
    // Without a fleet, where reading got to survives a restart of the reading.
    let mut local = HashMap::new();
    loop {
        let lease = match &ctx.bus {
            None => None,
            Some(bus) => {
                let lease = streams::acquire(&ctx, bus, &stream.key()).await;
                gauge(&fleet.stream_lease_held, 1);
                info!(stream = stream.name, "kinesis: lease taken; reading");
                Some(lease)
            }
        };
        let result = read_stream(&ctx, &stream, &tables, lease, &mut local).await;
        gauge(&fleet.stream_lease_held, 0);
        gauge(&fleet.stream_readable, 0);
        match result {
            Err(Stop::NotEnabled) => {
                if !warned_gone {
                    warn!(stream = stream.name, "kinesis: the data stream is not found; writes made elsewhere are bounded by the TTL only");
                    warned_gone = true;
                }
                count_error(&ctx, "not_enabled");
            }
            Err(Stop::Lease(e)) => {
                warn!(stream = stream.name, error = %e, "kinesis: stopped reading")
            }
            Err(Stop::Call(e)) => {
                warn!(stream = stream.name, error = %e, "kinesis: cannot read; retrying later");
                count_error(&ctx, e.kind);
            }
            Ok(never) => match never {},
        }
        tokio::time::sleep(ctx.config.describe_interval.min(ctx.config.lease_ttl)).await;
    }
}

/// One shard's reading state.
#[derive(Debug, Default)]
struct Shard {
    /// `ParentShardId` and `AdjacentParentShardId`: read to their end first.
    parents: Vec<String>,
    /// Listed with an `EndingSequenceNumber`: no record will be added to it.
    closed: bool,
    iterator: Option<String>,
    /// The last sequence number read (and checkpointed).
    last: Option<String>,
    /// Read from LATEST: it was open when the stream was first read.
    from_latest: bool,
    /// Read to its end: GetRecords answered without a `NextShardIterator`.
    done: bool,
}

/// The shards that may be read now: not done, and every parent ddbcache knows of done.
fn ready(shards: &BTreeMap<String, Shard>) -> Vec<String> {
    shards
        .iter()
        .filter(|(_, s)| !s.done)
        .filter(|(_, s)| {
            s.parents
                .iter()
                .all(|p| shards.get(p).is_none_or(|parent| parent.done))
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Reads one data stream until something stops it.
async fn read_stream(
    ctx: &Ctx,
    stream: &DataStream,
    tables: &Tables,
    lease: Option<Lease>,
    local: &mut HashMap<String, String>,
) -> Result<std::convert::Infallible, Stop> {
    let mut checkpoints = match lease {
        Some(lease) => Checkpoints::fleet(lease, &stream.key()),
        None => Checkpoints::Local(local),
    };
    let saved = checkpoints.load().await?;
    // Nobody read this stream before: start at its present.
    let fresh = saved.is_empty();
    let mut shards: BTreeMap<String, Shard> = BTreeMap::new();
    let mut first = true;
    let mut listed = Instant::now();
    let poll = ctx.config.poll_interval;
    let idle_cap = checkpoints
        .lease_mut()
        .map_or(poll, |lease| poll.min(lease.ttl() / 4));
    let mut idle_wait = Backoff::new(FIRST_IDLE_WAIT, idle_cap);
    let mut error_wait = Backoff::new(FIRST_ERROR_WAIT, MAX_ERROR_WAIT);
    let mut renewed = Instant::now();
    loop {
        if first || listed.elapsed() >= ctx.config.describe_interval {
            for (id, listed_shard) in list_shards(ctx, stream).await? {
                if shards.contains_key(&id) {
                    continue;
                }
                let position = saved.get(&id).map(String::as_str);
                let mut shard = Shard {
                    done: position == Some(END) || (first && fresh && listed_shard.closed),
                    last: position
                        .filter(|p| *p != END && *p != STARTED_AT_LATEST)
                        .map(str::to_string),
                    ..listed_shard
                };
                if first && fresh {
                    let position = if shard.done { END } else { STARTED_AT_LATEST };
                    checkpoints.save(&id, position).await?;
                    shard.from_latest = !shard.done;
                }
                shards.insert(id, shard);
            }
            for table in tables.lock().iter() {
                ctx.metrics
                    .fleet
                    .stream_readable
                    .with_label_values(&[table])
                    .set(1);
            }
            first = false;
            listed = Instant::now();
        }
        if let Some(lease) = checkpoints.lease_mut() {
            if renewed.elapsed() >= lease.ttl() / 3 {
                lease.renew().await?;
                renewed = Instant::now();
            }
        }
        let (mut read_any, mut closed_any) = (false, false);
        for id in ready(&shards) {
            let shard = shards.get_mut(&id).expect("listed above");
            match read_shard(ctx, stream, tables, &id, shard, &mut checkpoints).await {
                Ok(ShardRead { records, closed }) => {
                    read_any |= records > 0;
                    closed_any |= closed;
                    error_wait.reset();
                }
                Err(ShardError::Stop(stop)) => return Err(stop),
                Err(ShardError::Retry(e)) => {
                    count_error(ctx, e.kind);
                    debug!(stream = stream.name, shard = id, error = %e, "kinesis: GetRecords failed; backing off");
                    error_wait.wait().await;
                }
            }
        }
        if closed_any {
            // A shard ended: its children are to be found, and may be readable now.
            listed = Instant::now() - ctx.config.describe_interval;
            continue;
        }
        if read_any {
            idle_wait.reset();
            continue;
        }
        idle_wait.wait().await;
    }
}

/// Every shard of the stream, by id: its parents and whether it is closed (nothing read yet).
async fn list_shards(ctx: &Ctx, stream: &DataStream) -> Result<Vec<(String, Shard)>, Stop> {
    let mut shards = Vec::new();
    let mut next: Option<String> = None;
    loop {
        // A page after the first names the stream by its token alone.
        let body = match &next {
            Some(token) => json!({ "NextToken": token }),
            None => stream.body(json!({})),
        };
        let answer = call(ctx, stream, "ListShards", body)
            .await
            .map_err(|e| match e.kind {
                "not_enabled" => Stop::NotEnabled,
                _ => Stop::Call(e),
            })?;
        for s in answer["Shards"].as_array().map_or(&[][..], Vec::as_slice) {
            let Some(id) = s["ShardId"].as_str() else {
                continue;
            };
            let parents = ["ParentShardId", "AdjacentParentShardId"]
                .iter()
                .filter_map(|p| s[*p].as_str().map(str::to_string))
                .collect();
            shards.push((
                id.to_string(),
                Shard {
                    parents,
                    closed: s["SequenceNumberRange"]["EndingSequenceNumber"].is_string(),
                    ..Shard::default()
                },
            ));
        }
        match answer["NextToken"].as_str() {
            Some(token) => next = Some(token.to_string()),
            None => return Ok(shards),
        }
    }
}

/// One GetRecords on one shard (getting an iterator first when needed), and what follows.
async fn read_shard(
    ctx: &Ctx,
    stream: &DataStream,
    tables: &Tables,
    id: &str,
    shard: &mut Shard,
    checkpoints: &mut Checkpoints<'_>,
) -> Result<ShardRead, ShardError> {
    let nothing = ShardRead {
        records: 0,
        closed: false,
    };
    let iterator = match shard.iterator.take() {
        Some(it) => it,
        None => match shard_iterator(ctx, stream, id, shard).await {
            Ok(it) => it,
            Err(e) if e.kind == "other" && shard.last.is_some() => {
                // The checkpoint is no position of this shard any more (the stream was made
                // anew under its name): what was missed is unknown.
                warn!(stream = stream.name, shard = id, error = %e, "kinesis: the checkpoint is refused; dropping the tables' entries and reading the shard from its start");
                let scope = whole_tables(&ctx.region, tables);
                ctx.cache.learned(&scope, Learned::Stream);
                publish(ctx, &scope).await;
                shard.last = None;
                return Ok(nothing);
            }
            Err(e) => return Err(stop_or_retry(e)),
        },
    };
    let answer = match call(
        ctx,
        stream,
        "GetRecords",
        stream.body(json!({ "ShardIterator": iterator, "Limit": 1000 })),
    )
    .await
    {
        Ok(a) => a,
        Err(e) if e.kind == "expired_iterator" => {
            // A new one from the checkpoint next time round.
            count_error(ctx, e.kind);
            return Ok(nothing);
        }
        Err(e) => return Err(stop_or_retry(e)),
    };
    let records = answer["Records"].as_array().map_or(&[][..], Vec::as_slice);
    if !records.is_empty() {
        let changes: Vec<Option<Value>> = records.iter().map(change_of).collect();
        let scope = scope_of_changes(ctx, tables, &changes);
        ctx.cache.learned(&scope, Learned::Stream);
        publish(ctx, &scope).await;
        count_records(ctx, &changes);
    }
    // A shard is closed and read to its end when Kinesis answers without a next iterator.
    let batch = Batch {
        records: records.len(),
        last: records.last().and_then(|r| r["SequenceNumber"].as_str()),
        next: answer["NextShardIterator"].as_str(),
    };
    let (iterator, last, done) = (&mut shard.iterator, &mut shard.last, &mut shard.done);
    Ok(advance(checkpoints, id, batch, iterator, last, done).await?)
}

async fn shard_iterator(
    ctx: &Ctx,
    stream: &DataStream,
    id: &str,
    shard: &Shard,
) -> Result<String, CallError> {
    let mut members = json!({ "ShardId": id });
    match &shard.last {
        Some(seq) => {
            members["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER".into();
            members["StartingSequenceNumber"] = seq.clone().into();
        }
        None if shard.from_latest => members["ShardIteratorType"] = "LATEST".into(),
        None => members["ShardIteratorType"] = "TRIM_HORIZON".into(),
    }
    let answer = call(ctx, stream, "GetShardIterator", stream.body(members)).await?;
    answer["ShardIterator"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| CallError {
            kind: "other",
            message: "GetShardIterator answered without a ShardIterator".into(),
        })
}

/// The change a Kinesis record carries: the JSON DynamoDB wrote into its `Data` (base64 on the
/// wire).
fn change_of(record: &Value) -> Option<Value> {
    let data = base64::engine::general_purpose::STANDARD
        .decode(record["Data"].as_str()?)
        .ok()?;
    let change: Value = serde_json::from_slice(&data).ok()?;
    change["tableName"].is_string().then_some(change)
}

/// The table identity a change names: its `tableName` in its `awsRegion` (else the sidecar's).
fn table_of(change: &Value, default_region: &str) -> Option<TableId> {
    let region = change["awsRegion"]
        .as_str()
        .filter(|r| Region::parse(r).is_some())
        .unwrap_or(default_region);
    Some(TableId::new(region, change["tableName"].as_str()?))
}

/// What a batch of changes invalidates: each change's key in its table (with the table's
/// partition key attribute, when ddbcache knows it, so that Query entries of other partitions
/// stay), and every table the stream is read for when a record cannot be read.
fn scope_of_changes(ctx: &Ctx, tables: &Tables, changes: &[Option<Value>]) -> WriteScope {
    let mut by_table: BTreeMap<TableId, Vec<Value>> = BTreeMap::new();
    let mut scope = WriteScope::default();
    for change in changes {
        match change
            .as_ref()
            .and_then(|c| Some((table_of(c, &ctx.region)?, c)))
        {
            Some((id, c)) => by_table.entry(id).or_default().push(c.clone()),
            None => whole_tables(&ctx.region, tables)
                .tables
                .into_iter()
                .for_each(|id| scope.add_table(id)),
        }
    }
    for (id, changes) in by_table {
        let partition_key = ctx.cache.key_schema(&id).map(|s| s.hash.clone());
        let of_table = streams::scope_of(&id, partition_key.as_deref(), &changes);
        scope.items.extend(of_table.items);
        of_table.tables.into_iter().for_each(|t| scope.add_table(t));
    }
    scope
}

/// Every table the stream is read for, whole.
fn whole_tables(region: &str, tables: &Tables) -> WriteScope {
    let mut scope = WriteScope::default();
    for table in tables.lock().iter() {
        scope.add_table(TableId::new(region, table));
    }
    scope
}

/// `ddbcache_stream_records_total` by the records' tables, and the lag of each.
fn count_records(ctx: &Ctx, changes: &[Option<Value>]) {
    let m = &ctx.metrics.fleet;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    for change in changes.iter().flatten() {
        if let Some(table) = change["tableName"].as_str() {
            m.stream_records.with_label_values(&[table]).inc();
        }
        if let Some(created) = change["dynamodb"]["ApproximateCreationDateTime"].as_f64() {
            m.stream_lag
                .observe((now - epoch_seconds(created)).max(0.0));
        }
    }
}

/// `ApproximateCreationDateTime` of a Kinesis record in seconds: milliseconds by default,
/// microseconds when the destination was enabled with that precision.
fn epoch_seconds(stamp: f64) -> f64 {
    if stamp > 1e14 {
        stamp / 1e6
    } else {
        stamp / 1e3
    }
}

/// One Kinesis call of ddbcache's own, in the stream's region.
async fn call(
    ctx: &Ctx,
    stream: &DataStream,
    action: &str,
    body: Value,
) -> Result<Value, CallError> {
    let answer = ctx
        .upstream
        .send_kinesis(action, &stream.region, Bytes::from(body.to_string()))
        .await
        .map_err(streams::upstream_failed)?;
    streams::read_answer(action, &answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(parents: &[&str], done: bool) -> Shard {
        Shard {
            parents: parents.iter().map(|p| p.to_string()).collect(),
            done,
            ..Shard::default()
        }
    }

    #[test]
    fn parents_are_read_before_their_children() {
        // 0 split into 1 and 2; 1 and 2 merged into 3. 9's parent is unknown (trimmed away).
        let mut shards: BTreeMap<String, Shard> = [
            ("0", shard(&[], false)),
            ("1", shard(&["0"], false)),
            ("2", shard(&["0"], false)),
            ("3", shard(&["1", "2"], false)),
            ("9", shard(&["gone"], false)),
        ]
        .into_iter()
        .map(|(id, s)| (id.to_string(), s))
        .collect();
        assert_eq!(ready(&shards), ["0", "9"]);
        shards.get_mut("0").unwrap().done = true;
        assert_eq!(ready(&shards), ["1", "2", "9"]);
        shards.get_mut("1").unwrap().done = true;
        // A merge waits for both of its parents.
        assert_eq!(ready(&shards), ["2", "9"]);
        shards.get_mut("2").unwrap().done = true;
        assert_eq!(ready(&shards), ["3", "9"]);
    }

    #[test]
    fn data_streams_by_name_or_arn() {
        let named = DataStream::parse("orders-changes", "eu-west-1").unwrap();
        assert_eq!(
            (
                named.name.as_str(),
                named.arn.as_deref(),
                named.region.as_str()
            ),
            ("orders-changes", None, "eu-west-1")
        );
        assert_eq!(
            named.body(json!({"Limit": 1})),
            json!({"StreamName": "orders-changes", "Limit": 1})
        );
        let arn = "arn:aws:kinesis:us-west-2:111122223333:stream/cdc";
        let by_arn = DataStream::parse(arn, "eu-west-1").unwrap();
        assert_eq!(
            (by_arn.name.as_str(), by_arn.region.as_str()),
            ("cdc", "us-west-2")
        );
        assert_eq!(by_arn.body(json!({})), json!({"StreamARN": arn}));
        assert_eq!(by_arn.key(), "kinesis/us-west-2/cdc");
        for bad in [
            "",
            "a/b",
            "arn:aws:dynamodb:us-east-1:1:table/t",
            "arn:aws:kinesis:us-east-1:1:stream/",
        ] {
            assert_eq!(DataStream::parse(bad, "r"), None, "{bad}");
        }
    }

    #[test]
    fn records_carry_the_change_in_their_data() {
        let change = json!({"awsRegion":"eu-west-1","eventName":"MODIFY","recordFormat":"application/json","tableName":"orders","dynamodb":{"ApproximateCreationDateTime":1649930048474u64,"Keys":{"pk":{"S":"a"}},"SizeBytes":20},"eventSource":"aws:dynamodb"});
        let data = base64::engine::general_purpose::STANDARD.encode(change.to_string());
        let record = json!({"SequenceNumber":"1","Data":data,"PartitionKey":"x"});
        let read = change_of(&record).unwrap();
        assert_eq!(
            table_of(&read, "us-east-1"),
            Some(TableId::new("eu-west-1", "orders"))
        );
        assert_eq!(change_of(&json!({"Data":"not base64!"})), None);
        assert!((epoch_seconds(1649930048474.0) - 1649930048.474).abs() < 1e-6);
        assert!((epoch_seconds(1649930048474123.0) - 1649930048.474123).abs() < 1e-6);
    }
}
