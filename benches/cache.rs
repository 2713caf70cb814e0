//! The cache verbs a request calls: `lookup` (a hit, at 1k, 100k and 1M entries), a whole hit
//! (the GetItem body read down to its key and proven valid, the lookup and the response built;
//! `get_item_hit_lz4` with bodies stored compressed),
//! `lookup` + `Fill::complete` (a miss being stored), and the invalidations a write or a
//! control-plane call makes.
//!
//! `cargo bench --bench cache`. Lookups pick keys uniformly at random from what was filled, so at
//! 1M entries the index no longer fits in the CPU caches, as in a real sidecar with a full cache.
//! Each lookup builds its `CacheKey`, as the request path does.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use ddbcache::cache::{Address, CacheKey, Dependency, Kind, Lookup, WriteKind, WriteOutcome};
use ddbcache::config::Compression;
use ddbcache::protocol::table::TableId;
use ddbcache::protocol::writes::{ItemWrite, WriteScope};

mod support;
use support::{
    get_item_body, key_part, lookup_or_fill, new_cache, new_cache_with, next_random, response,
    runtime, serve_get_item, TABLE, TTL,
};

/// xorshift64*: cheap, and not the thing being measured.
fn lookup_hit(c: &mut Criterion) {
    let rt = runtime();
    let body = response();
    let mut g = c.benchmark_group("lookup_hit");
    for entries in [1_000u64, 100_000, 1_000_000] {
        let cache = new_cache(4 << 30);
        let keys: Vec<Vec<u8>> = (0..entries).map(key_part).collect();
        rt.block_on(async {
            for k in &keys {
                lookup_or_fill(&cache, k, &body).await;
            }
        });
        assert_eq!(cache.stats(Kind::Item).entries, entries, "all entries fit");
        g.bench_function(BenchmarkId::from_parameter(entries), |b| {
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let k = &keys[(next_random(&mut state) % entries) as usize];
                        let hit = lookup_or_fill(&cache, black_box(k), &body).await;
                        debug_assert!(hit);
                        black_box(hit);
                    }
                    started.elapsed()
                })
            })
        });
    }
    g.finish();
}

/// A whole hit past HTTP (`serve_get_item`), with 100k entries cached.
fn get_item_hit(c: &mut Criterion) {
    for (name, compression) in [
        ("get_item_hit", Compression::None),
        ("get_item_hit_lz4", Compression::Lz4),
    ] {
        get_item_hit_stored(c, name, compression);
    }
}

/// A GetItem hit past HTTP, with bodies stored as `compression` says.
fn get_item_hit_stored(c: &mut Criterion, name: &str, compression: Compression) {
    const ENTRIES: u64 = 100_000;
    let rt = runtime();
    let body = response();
    let cache = new_cache_with(4 << 30, compression);
    let requests: Vec<Vec<u8>> = (0..ENTRIES).map(get_item_body).collect();
    rt.block_on(async {
        for r in &requests {
            serve_get_item(&cache, r, &body).await;
        }
    });
    c.bench_function(name, |b| {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let request = &requests[(next_random(&mut state) % ENTRIES) as usize];
                    let response = serve_get_item(&cache, black_box(request), &body).await;
                    debug_assert!(response.is_some());
                    black_box(response);
                }
                started.elapsed()
            })
        })
    });
}

fn fill(c: &mut Criterion) {
    let rt = runtime();
    let body = response();
    // Room for about 100k entries: once full, every fill also evicts, as in steady state.
    let cache = new_cache(100_000 * 512);
    let mut next = 0u64;
    c.bench_function("fill", |b| {
        b.iter_custom(|iters| {
            let keys: Vec<Vec<u8>> = (next..next + iters).map(key_part).collect();
            next += iters;
            rt.block_on(async {
                let started = Instant::now();
                for k in &keys {
                    black_box(lookup_or_fill(&cache, k, &body).await);
                }
                started.elapsed()
            })
        })
    });
}

fn invalidation(c: &mut Criterion) {
    let rt = runtime();
    let body = response();
    let mut g = c.benchmark_group("invalidate");

    let cache = new_cache(1 << 30);
    rt.block_on(async {
        for i in 0..100_000 {
            lookup_or_fill(&cache, &key_part(i), &body).await;
        }
    });
    // A PutItem / UpdateItem / DeleteItem: its key's stripe and its table, before and after.
    let item_write = WriteScope {
        items: vec![ItemWrite {
            table: TABLE.clone(),
            key: key_part(42),
            partition: None,
        }],
        ..Default::default()
    };
    g.bench_function("write_item", |b| {
        b.iter(|| {
            cache
                .write_started(black_box(item_write.clone()), WriteKind::Item)
                .finished(WriteOutcome::Answered)
        })
    });
    // A write whose items cannot be named (a PartiQL UPDATE ... WHERE): the whole table, O(1).
    let table_write = WriteScope {
        tables: vec![TABLE.clone()],
        ..Default::default()
    };
    g.bench_function("write_table", |b| {
        b.iter(|| {
            cache
                .write_started(black_box(table_write.clone()), WriteKind::Item)
                .finished(WriteOutcome::Answered)
        })
    });

    // `POST /cache/flush?table=`: the table's entries are dropped and their memory reclaimed, so
    // this one walks the cache; 10k entries of the table go, 10k of another table stay.
    g.sample_size(20);
    g.bench_function("flush_table_10k", |b| {
        b.iter_batched(
            || {
                let cache = new_cache(1 << 30);
                rt.block_on(async {
                    for i in 0..10_000 {
                        let k = key_part(i);
                        lookup_or_fill(&cache, &k, &body).await;
                        let other = TableId::new("us-east-1", "other");
                        let key = CacheKey::item(&other, &k, b"");
                        let at = Address {
                            kind: Kind::Item,
                            table: &other,
                            dependency: Dependency::Item(&k),
                            key: &key,
                        };
                        if let Lookup::Miss(fill) = cache.lookup(at).await {
                            let _ = fill.complete(body.clone(), None, TTL);
                        }
                    }
                });
                cache
            },
            |cache| {
                cache.flush_table(TABLE.name(), None);
                cache
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, lookup_hit, get_item_hit, fill, invalidation);
criterion_main!(benches);
