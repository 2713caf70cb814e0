//! Instructions per GetItem hit past HTTP (the body read and proven, the lookup, the response
//! built) at a given cache size, for callgrind, whose counts do not depend on the machine's
//! noise: `hit_instructions ENTRIES HITS` fills ENTRIES items, then serves HITS hits on keys
//! chosen uniformly at random, all inside `measured_hits`, which callgrind alone counts:
//!
//! ```sh
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_hits*' \
//!     target/release/deps/hit_instructions-HASH 1000000 100000
//! ```
//!
//! A third argument, `lz4`, stores the bodies compressed (`cache.compression = "lz4"`), so that a
//! hit decompresses its body.
//!
//! Instructions are flat in the cache size when the index is a hash table; what grows with the
//! size is cache misses, which the criterion bench `lookup_hit` sees in time.

use std::hint::black_box;

use bytes::Bytes;
use ddbcache::cache::Cache;

mod support;
use ddbcache::config::Compression;
use support::{get_item_body, new_cache_with, next_random, response, runtime, serve_get_item};

#[inline(never)]
fn measured_hits(
    rt: &tokio::runtime::Runtime,
    cache: &Cache,
    requests: &[Vec<u8>],
    hits: u64,
) -> u64 {
    let body = Bytes::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut answered = 0;
    rt.block_on(async {
        for _ in 0..hits {
            let request = &requests[(next_random(&mut state) % requests.len() as u64) as usize];
            if serve_get_item(cache, black_box(request), &body)
                .await
                .is_some()
            {
                answered += 1;
            }
        }
    });
    answered
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let number =
        |i: usize, default: u64| args.get(i).and_then(|n| n.parse().ok()).unwrap_or(default);
    let (entries, hits) = (number(0, 1_000).max(1), number(1, 10_000));
    let compression = match args.get(2).map(String::as_str) {
        Some("lz4") => Compression::Lz4,
        _ => Compression::None,
    };
    let rt = runtime();
    let cache = new_cache_with(4 << 30, compression);
    let answer = response();
    let requests: Vec<Vec<u8>> = (0..entries).map(get_item_body).collect();
    rt.block_on(async {
        for request in &requests {
            serve_get_item(&cache, request, &answer).await;
        }
    });
    let answered = measured_hits(&rt, &cache, &requests, hits);
    assert_eq!(
        answered, hits,
        "every key was filled, so every request is a hit"
    );
    println!("{entries} entries: {hits} hits, compression {compression:?}");
}
