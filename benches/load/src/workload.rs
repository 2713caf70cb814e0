//! What the load generator asks for: the operation mix, which key each request touches, and
//! the DynamoDB JSON bodies themselves.
//!
//! The table has a string hash key `pk` and a string range key `sk`. Key number `i` (0-based,
//! `i < keys`) lives at `pk = p{i / rows_per_pk:010}`, `sk = s{i % rows_per_pk:06}`, so with the
//! default of one row per partition every key is its own partition and a Query returns one item;
//! with `--rows-per-pk 10` a Query returns up to ten. Fixed-width numbers keep every item the same
//! size, which `--item-bytes` relies on.
//!
//! Bodies are built by appending to a `String` from pieces prepared once (the JSON-escaped table
//! name, the padding value of an item), which costs well under a microsecond per request, so the
//! generator spends its CPU on HTTP rather than on JSON.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::Rng;
use rand_distr::{Distribution, Zipf};

/// The DynamoDB operations the generator can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    GetItem,
    BatchGetItem,
    Query,
    Scan,
    PutItem,
    UpdateItem,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::GetItem,
        Op::BatchGetItem,
        Op::Query,
        Op::Scan,
        Op::PutItem,
        Op::UpdateItem,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::GetItem => "GetItem",
            Op::BatchGetItem => "BatchGetItem",
            Op::Query => "Query",
            Op::Scan => "Scan",
            Op::PutItem => "PutItem",
            Op::UpdateItem => "UpdateItem",
        }
    }

    /// The `X-Amz-Target` header value.
    pub fn target(self) -> &'static str {
        match self {
            Op::GetItem => "DynamoDB_20120810.GetItem",
            Op::BatchGetItem => "DynamoDB_20120810.BatchGetItem",
            Op::Query => "DynamoDB_20120810.Query",
            Op::Scan => "DynamoDB_20120810.Scan",
            Op::PutItem => "DynamoDB_20120810.PutItem",
            Op::UpdateItem => "DynamoDB_20120810.UpdateItem",
        }
    }

    /// The short name used in `--mix`.
    fn mix_name(self) -> &'static str {
        match self {
            Op::GetItem => "get",
            Op::BatchGetItem => "batchget",
            Op::Query => "query",
            Op::Scan => "scan",
            Op::PutItem => "put",
            Op::UpdateItem => "update",
        }
    }
}

/// Relative weights of the operations, e.g. `get=80,put=10,query=5,update=5`.
#[derive(Clone, Debug)]
pub struct Mix {
    weights: [u32; 6],
    total: u32,
}

impl Mix {
    pub fn pick(&self, rng: &mut SmallRng) -> Op {
        let mut roll = rng.random_range(0..self.total);
        for op in Op::ALL {
            let weight = self.weights[op.index()];
            if roll < weight {
                return op;
            }
            roll -= weight;
        }
        unreachable!("roll is below the sum of the weights")
    }

    /// The operations with a non-zero weight, for reports.
    pub fn describe(&self) -> String {
        Op::ALL
            .iter()
            .filter(|op| self.weights[op.index()] > 0)
            .map(|op| format!("{}={}", op.mix_name(), self.weights[op.index()]))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl FromStr for Mix {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Mix> {
        let mut weights = [0u32; 6];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("mix entry {part:?} is not NAME=WEIGHT"))?;
            let op = match name.trim().to_ascii_lowercase().as_str() {
                "get" | "getitem" => Op::GetItem,
                "batchget" | "batchgetitem" => Op::BatchGetItem,
                "query" => Op::Query,
                "scan" => Op::Scan,
                "put" | "putitem" => Op::PutItem,
                "update" | "updateitem" => Op::UpdateItem,
                other => bail!(
                    "unknown operation {other:?} in mix (known: get, batchget, query, scan, put, update)"
                ),
            };
            weights[op.index()] = weight
                .trim()
                .parse()
                .with_context(|| format!("weight of {name:?} is not a whole number"))?;
        }
        let total = weights.iter().try_fold(0u32, |sum, w| sum.checked_add(*w));
        match total {
            Some(total) if total > 0 => Ok(Mix { weights, total }),
            Some(_) => bail!("the mix {s:?} has no operation with a weight above 0"),
            None => bail!("the weights of the mix {s:?} are too large"),
        }
    }
}

/// How keys are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Dist {
    /// Every key equally likely.
    Uniform,
    /// Key `i` chosen with probability proportional to 1/(i+1)^s (`--zipf-s`).
    Zipf,
    /// Keys 0, 1, 2, ... in order across all workers, wrapping around: `--dist seq --requests K`
    /// with K = `--keys` touches every key exactly once (a cache warm-up pass).
    Seq,
}

/// Draws key numbers in `0..keys`. Shared by all workers; each brings its own RNG.
pub struct KeySampler {
    keys: u64,
    kind: SamplerKind,
}

enum SamplerKind {
    Uniform,
    Zipf(Zipf<f64>),
    Seq(AtomicU64),
}

impl KeySampler {
    pub fn new(keys: u64, dist: Dist, zipf_s: f64) -> anyhow::Result<KeySampler> {
        if keys == 0 {
            bail!("--keys must be at least 1");
        }
        let kind = match dist {
            Dist::Uniform => SamplerKind::Uniform,
            Dist::Zipf => SamplerKind::Zipf(
                Zipf::new(keys as f64, zipf_s)
                    .map_err(|e| anyhow::anyhow!("invalid Zipf parameters: {e}"))?,
            ),
            Dist::Seq => SamplerKind::Seq(AtomicU64::new(0)),
        };
        Ok(KeySampler { keys, kind })
    }

    pub fn sample(&self, rng: &mut SmallRng) -> u64 {
        match &self.kind {
            SamplerKind::Uniform => rng.random_range(0..self.keys),
            // Zipf yields ranks 1..=n as floats; rank 1 is the hottest key.
            SamplerKind::Zipf(zipf) => (zipf.sample(rng) as u64).clamp(1, self.keys) - 1,
            SamplerKind::Seq(next) => next.fetch_add(1, Ordering::Relaxed) % self.keys,
        }
    }
}

/// The shape of the table's contents.
#[derive(Clone, Copy, Debug)]
pub struct Keyspace {
    pub keys: u64,
    pub rows_per_pk: u64,
    pub item_bytes: usize,
}

/// Attribute-name and key-value bytes of an item without its `v` payload (DynamoDB counts
/// names plus values): "pk" + 11, "sk" + 7, "v".
const ITEM_FIXED_BYTES: usize = 2 + 11 + 2 + 7 + 1;

impl Keyspace {
    fn push_key(&self, out: &mut String, key: u64) {
        let _ = write!(
            out,
            r#"{{"pk":{{"S":"p{:010}"}},"sk":{{"S":"s{:06}"}}}}"#,
            key / self.rows_per_pk,
            key % self.rows_per_pk
        );
    }

    fn push_partition_value(&self, out: &mut String, key: u64) {
        let _ = write!(out, r#"{{"S":"p{:010}"}}"#, key / self.rows_per_pk);
    }

    /// Length of the `v` attribute that brings an item to `item_bytes` (DynamoDB's item size).
    fn payload_len(&self) -> usize {
        self.item_bytes.saturating_sub(ITEM_FIXED_BYTES).max(1)
    }

    /// The full item for key number `key`, as a DynamoDB JSON attribute map.
    pub fn push_item(&self, out: &mut String, key: u64, payload: &str) {
        let _ = write!(
            out,
            r#"{{"pk":{{"S":"p{:010}"}},"sk":{{"S":"s{:06}"}},"v":{{"S":"{payload}"}}}}"#,
            key / self.rows_per_pk,
            key % self.rows_per_pk
        );
    }

    /// The padding value stored in `v` (ASCII, needs no escaping).
    pub fn payload(&self) -> String {
        "x".repeat(self.payload_len())
    }
}

/// Per-run request settings beyond the key space.
#[derive(Clone, Debug)]
pub struct RequestShape {
    pub batch_size: usize,
    pub query_limit: u32,
    pub scan_limit: u32,
    pub consistent_read: bool,
}

/// Builds request bodies for one table. Shared, read-only; the key choice comes from the caller.
pub struct Workload {
    /// The table name as a JSON string literal, quotes included.
    table_json: String,
    keyspace: Keyspace,
    payload: String,
    shape: RequestShape,
    pub mix: Mix,
    pub sampler: KeySampler,
}

impl Workload {
    pub fn new(
        table: &str,
        keyspace: Keyspace,
        shape: RequestShape,
        mix: Mix,
        sampler: KeySampler,
    ) -> Workload {
        let mut shape = shape;
        // BatchGetItem rejects duplicate keys, so a batch can never be larger than the key space.
        shape.batch_size = shape.batch_size.clamp(1, 100).min(keyspace.keys as usize);
        Workload {
            table_json: json_string(table),
            payload: keyspace.payload(),
            keyspace,
            shape,
            mix,
            sampler,
        }
    }

    /// Picks the next operation and key(s) and returns the request body.
    pub fn next_request(&self, rng: &mut SmallRng) -> (Op, Bytes) {
        let op = self.mix.pick(rng);
        (op, self.body(op, rng))
    }

    fn body(&self, op: Op, rng: &mut SmallRng) -> Bytes {
        let ks = &self.keyspace;
        let mut b = String::with_capacity(match op {
            Op::PutItem => 160 + self.payload.len(),
            Op::BatchGetItem => 64 + 56 * self.shape.batch_size,
            _ => 192,
        });
        match op {
            Op::GetItem => {
                b.push_str(r#"{"TableName":"#);
                b.push_str(&self.table_json);
                b.push_str(r#","Key":"#);
                ks.push_key(&mut b, self.sampler.sample(rng));
                self.push_consistent_read(&mut b);
                b.push('}');
            }
            Op::BatchGetItem => {
                let mut keys: Vec<u64> = Vec::with_capacity(self.shape.batch_size);
                while keys.len() < self.shape.batch_size {
                    let key = self.sampler.sample(rng);
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
                b.push_str(r#"{"RequestItems":{"#);
                b.push_str(&self.table_json);
                b.push_str(r#":{"Keys":["#);
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        b.push(',');
                    }
                    ks.push_key(&mut b, key);
                }
                b.push(']');
                self.push_consistent_read(&mut b);
                b.push_str("}}}");
            }
            Op::Query => {
                b.push_str(r#"{"TableName":"#);
                b.push_str(&self.table_json);
                b.push_str(
                    r#","KeyConditionExpression":"pk = :pk","ExpressionAttributeValues":{":pk":"#,
                );
                ks.push_partition_value(&mut b, self.sampler.sample(rng));
                let _ = write!(b, r#"}},"Limit":{}"#, self.shape.query_limit);
                self.push_consistent_read(&mut b);
                b.push('}');
            }
            Op::Scan => {
                // A page of the table starting after a sampled key: pages differ, so Scan is not
                // one hot entry in a query cache.
                b.push_str(r#"{"TableName":"#);
                b.push_str(&self.table_json);
                let _ = write!(
                    b,
                    r#","Limit":{},"ExclusiveStartKey":"#,
                    self.shape.scan_limit
                );
                ks.push_key(&mut b, self.sampler.sample(rng));
                self.push_consistent_read(&mut b);
                b.push('}');
            }
            Op::PutItem => {
                b.push_str(r#"{"TableName":"#);
                b.push_str(&self.table_json);
                b.push_str(r#","Item":"#);
                ks.push_item(&mut b, self.sampler.sample(rng), &self.payload);
                b.push('}');
            }
            Op::UpdateItem => {
                b.push_str(r#"{"TableName":"#);
                b.push_str(&self.table_json);
                b.push_str(r#","Key":"#);
                ks.push_key(&mut b, self.sampler.sample(rng));
                b.push_str(
                    r#","UpdateExpression":"ADD n :one","ExpressionAttributeValues":{":one":{"N":"1"}}}"#,
                );
            }
        }
        Bytes::from(b)
    }

    fn push_consistent_read(&self, b: &mut String) {
        if self.shape.consistent_read {
            b.push_str(r#","ConsistentRead":true"#);
        }
    }
}

/// A string as a JSON literal (quotes and escapes included).
pub fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Bodies of the control-plane and bulk-load requests `preload` sends.
pub mod admin_bodies {
    use super::*;

    pub fn create_table(table: &str) -> Bytes {
        Bytes::from(format!(
            concat!(
                r#"{{"TableName":{},"BillingMode":"PAY_PER_REQUEST","#,
                r#""AttributeDefinitions":[{{"AttributeName":"pk","AttributeType":"S"}},"#,
                r#"{{"AttributeName":"sk","AttributeType":"S"}}],"#,
                r#""KeySchema":[{{"AttributeName":"pk","KeyType":"HASH"}},"#,
                r#"{{"AttributeName":"sk","KeyType":"RANGE"}}]}}"#
            ),
            json_string(table)
        ))
    }

    pub fn describe_table(table: &str) -> Bytes {
        Bytes::from(format!(r#"{{"TableName":{}}}"#, json_string(table)))
    }

    /// A BatchWriteItem of PutRequests for keys `keys` (at most 25).
    pub fn batch_write(
        table: &str,
        keyspace: &Keyspace,
        payload: &str,
        keys: std::ops::Range<u64>,
    ) -> Bytes {
        let mut b = String::with_capacity(64 + keys.clone().count() * (64 + payload.len()));
        b.push_str(r#"{"RequestItems":{"#);
        b.push_str(&json_string(table));
        b.push_str(":[");
        for (i, key) in keys.enumerate() {
            if i > 0 {
                b.push(',');
            }
            b.push_str(r#"{"PutRequest":{"Item":"#);
            keyspace.push_item(&mut b, key, payload);
            b.push_str("}}");
        }
        b.push_str("]}}");
        Bytes::from(b)
    }
}

/// The GetItem response body `serve-fixed` answers with: the item for key 0 of a key space with
/// items of `item_bytes`.
pub fn fixed_get_item_response(item_bytes: usize) -> Bytes {
    let keyspace = Keyspace {
        keys: 1,
        rows_per_pk: 1,
        item_bytes,
    };
    let mut b = String::from(r#"{"Item":"#);
    keyspace.push_item(&mut b, 0, &keyspace.payload());
    b.push('}');
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn workload(mix: &str, dist: Dist, keys: u64) -> Workload {
        let keyspace = Keyspace {
            keys,
            rows_per_pk: 1,
            item_bytes: 200,
        };
        let shape = RequestShape {
            batch_size: 10,
            query_limit: 10,
            scan_limit: 10,
            consistent_read: false,
        };
        Workload::new(
            "bench",
            keyspace,
            shape,
            mix.parse().unwrap(),
            KeySampler::new(keys, dist, 0.99).unwrap(),
        )
    }

    #[test]
    fn every_body_is_valid_json() {
        let w = workload(
            "get=1,batchget=1,query=1,scan=1,put=1,update=1",
            Dist::Zipf,
            50,
        );
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..600 {
            let (op, body) = w.next_request(&mut rng);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if op == Op::BatchGetItem {
                assert_eq!(
                    v["RequestItems"]["bench"]["Keys"].as_array().unwrap().len(),
                    10
                );
            } else {
                assert_eq!(v["TableName"], "bench");
            }
        }
    }

    #[test]
    fn item_has_the_requested_size() {
        let ks = Keyspace {
            keys: 10,
            rows_per_pk: 1,
            item_bytes: 200,
        };
        let mut b = String::new();
        ks.push_item(&mut b, 3, &ks.payload());
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        let size: usize = v
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, value)| name.len() + value["S"].as_str().unwrap().len())
            .sum();
        assert_eq!(size, 200);
    }

    #[test]
    fn seq_visits_every_key_once_per_pass() {
        let s = KeySampler::new(5, Dist::Seq, 0.0).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let keys: Vec<u64> = (0..7).map(|_| s.sample(&mut rng)).collect();
        assert_eq!(keys, [0, 1, 2, 3, 4, 0, 1]);
    }

    #[test]
    fn mix_rejects_unknown_and_empty() {
        assert!("get=1,frob=2".parse::<Mix>().is_err());
        assert!("get=0".parse::<Mix>().is_err());
        assert_eq!(
            "get=80,put=20".parse::<Mix>().unwrap().describe(),
            "get=80,put=20"
        );
    }
}
