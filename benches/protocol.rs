//! The protocol side of a cache hit, before the cache is touched: the front door (method, target,
//! signature shape, JSON), classifying a request by its `X-Amz-Target`, proving the read valid,
//! and reading a GetItem or Query body down to its cache key.
//!
//! `cargo bench --bench protocol`. Bodies are the shapes `ddbcache-load` sends, so these numbers
//! add up to the per-request CPU the end-to-end runs of `ddbcache-load compare` measure.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ddbcache::cache::CacheKey;
use ddbcache::protocol::reads::{self, Parsed, Read, ReadParse};
use ddbcache::protocol::region::Region;
use ddbcache::protocol::table::TableId;
use ddbcache::protocol::{validate, Operation};
use ddbcache::proxy::front_door::{self, Verdict};
use http::{HeaderMap, HeaderValue, Method};

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
        Ok(ReadParse::Cacheable(read)) => CacheKey::item(
            &TableId::new("us-east-1", &read.table),
            &read.key,
            &read.projection,
        ),
        _ => panic!("the bench body is a cacheable GetItem"),
    }
}

/// What the proxy does with a GetItem body before the lookup: its key and the proof that DynamoDB
/// would accept it, in one pass for the usual shape (`validate/GetItem` + `canonical_key/GetItem`
/// is what it costs otherwise).
fn get_item_proven_key(body: &[u8]) -> CacheKey {
    match reads::parse_read(Operation::GetItem, body) {
        Ok(Parsed::Proven(Read::GetItem(read))) => CacheKey::item(
            &TableId::new("us-east-1", &read.table),
            &read.key,
            &read.projection,
        ),
        _ => panic!("the bench body is a cacheable, valid GetItem"),
    }
}

fn query_key(body: &[u8]) -> CacheKey {
    match reads::parse_query(body, false) {
        Ok(ReadParse::Cacheable(read)) => {
            CacheKey::query(&TableId::new("us-east-1", &read.table), &read.key)
        }
        _ => panic!("the bench body is a cacheable Query"),
    }
}

fn canonical_keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("canonical_key");
    for (name, body, key) in [
        ("GetItem", GET_ITEM, get_item_key as fn(&[u8]) -> CacheKey),
        ("GetItem_projection", GET_ITEM_PROJECTED, get_item_key),
        ("GetItem_proven_one_pass", GET_ITEM, get_item_proven_key),
        ("Query", QUERY, query_key),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| b.iter(|| key(black_box(body))));
    }
    g.finish();
}

/// The front door as a GetItem from an SDK meets it: signed header, JSON body.
fn front_door(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/x-amz-json-1.0"),
        ("x-amz-target", "DynamoDB_20120810.GetItem"),
        ("x-amz-date", "20200101T000000Z"),
        ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    let region = Region::parse("us-east-1").expect("a region");
    c.bench_function("front_door/GetItem", |b| {
        b.iter(|| {
            let headers = black_box(&headers);
            let inbound = front_door::Request {
                method: &Method::POST,
                path_and_query: "/",
                headers,
                known: &front_door::Known::read(headers),
                body: black_box(GET_ITEM),
            };
            matches!(front_door::examine(&inbound, &region), Verdict::Admit(_))
        })
    });
}

fn validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    for (name, body, op) in [
        ("GetItem", GET_ITEM, Operation::GetItem),
        ("GetItem_projection", GET_ITEM_PROJECTED, Operation::GetItem),
        ("Query", QUERY, Operation::Query),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| validate::cacheable_read(op, black_box(body)).is_ok())
        });
    }
    g.finish();
}

criterion_group!(benches, front_door, classify, validation, canonical_keys);
criterion_main!(benches);
