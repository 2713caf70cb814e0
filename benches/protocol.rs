//! The protocol side of a cache hit, before the cache is touched: classifying a request by its
//! `X-Amz-Target`, and reading a GetItem or Query body down to its cache key.
//!
//! `cargo bench --bench protocol`. Bodies are the shapes `ddbcache-load` sends, so these numbers
//! add up to the per-request CPU the end-to-end runs of `ddbcache-load compare` measure.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ddbcache::cache::CacheKey;
use ddbcache::protocol::reads::{self, ReadParse};
use ddbcache::protocol::Operation;

const GET_ITEM: &[u8] =
    br#"{"TableName":"bench","Key":{"pk":{"S":"p0000012345"},"sk":{"S":"s000000"}}}"#;
const GET_ITEM_PROJECTED: &[u8] = br##"{"TableName":"bench","Key":{"pk":{"S":"p0000012345"},"sk":{"S":"s000000"}},"ProjectionExpression":"#v, n","ExpressionAttributeNames":{"#v":"v"}}"##;
const QUERY: &[u8] = br#"{"TableName":"bench","KeyConditionExpression":"pk = :pk","ExpressionAttributeValues":{":pk":{"S":"p0000012345"}},"Limit":10}"#;

fn classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    for target in [
        "DynamoDB_20120810.GetItem",
        "DynamoDB_20120810.UpdateContinuousBackups",
        "DynamoDBStreams_20120810.GetRecords",
    ] {
        let name = target.rsplit('.').next().unwrap_or(target);
        g.bench_function(name, |b| {
            b.iter(|| Operation::from_target(black_box(target)).map(Operation::class))
        });
    }
    g.finish();
}

fn get_item_key(body: &[u8]) -> CacheKey {
    match reads::parse_get_item(body) {
        Ok(ReadParse::Cacheable(read)) => CacheKey::item(&read.table, &read.key, &read.projection),
        _ => panic!("the bench body is a cacheable GetItem"),
    }
}

fn query_key(body: &[u8]) -> CacheKey {
    match reads::parse_query(body, false) {
        Ok(ReadParse::Cacheable(read)) => CacheKey::query(&read.table, &read.key),
        _ => panic!("the bench body is a cacheable Query"),
    }
}

fn canonical_keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("canonical_key");
    for (name, body, key) in [
        ("GetItem", GET_ITEM, get_item_key as fn(&[u8]) -> CacheKey),
        ("GetItem_projection", GET_ITEM_PROJECTED, get_item_key),
        ("Query", QUERY, query_key),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| b.iter(|| key(black_box(body))));
    }
    g.finish();
}

criterion_group!(benches, classify, canonical_keys);
criterion_main!(benches);
