//! How many reads a full cache answers: the hit ratio of GetItem reads over a key set larger
//! than the capacity, drawn by popularity (Zipf, as YCSB draws them) and uniformly, each miss
//! filled as the proxy fills it (`Cache::lookup`, then `Fill::complete`). What it measures is the
//! eviction policy: which entries a full cache keeps.
//!
//! `cargo bench --bench hit_ratio` prints one line per case: the key set, the capacity as a
//! share of what the whole key set would take, the distribution, and the hit ratio over the reads
//! after a warm-up of as many reads.

mod support;
use support::{answer, key_part, lookup_or_fill, new_cache, runtime};

/// Distinct items read.
const ITEMS: u64 = 100_000;
/// Reads measured per case (and as many before them, to fill the cache).
const READS: u64 = 1_000_000;
/// What an item takes in the cache, stored: its answer, key and bookkeeping (`memory` bench).
const STORED_ITEM: u64 = 372;

/// A xorshift generator: the same reads in every run.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Item numbers by rank, drawn with probability proportional to `1 / rank^s` (`s` = 0:
/// uniformly). Ranks are spread over the item numbers, so that the popular items are not
/// neighbours.
struct Popularity {
    cumulative: Vec<f64>,
}

impl Popularity {
    fn new(s: f64) -> Popularity {
        let mut total = 0.0;
        let cumulative = (1..=ITEMS)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect::<Vec<_>>();
        Popularity {
            cumulative: cumulative.iter().map(|c| c / total).collect(),
        }
    }

    fn item(&self, draw: &mut Draw) -> u64 {
        let u = draw.unit();
        let rank = self.cumulative.partition_point(|c| *c < u) as u64;
        // 2654435761 is odd and not a multiple of 5: a bijection of 0..100 000.
        (rank.min(ITEMS - 1) * 2_654_435_761) % ITEMS
    }
}

fn main() {
    let rt = runtime();
    for (name, s) in [("zipf 0.99", 0.99), ("zipf 0.8", 0.8), ("uniform", 0.0)] {
        let popularity = Popularity::new(s);
        for share in [0.1, 0.3] {
            let capacity = (ITEMS as f64 * STORED_ITEM as f64 * share) as u64;
            let cache = new_cache(capacity);
            let mut draw = Draw(0x2545_f491_4f6c_dd1d);
            let (mut hits, mut reads) = (0u64, 0u64);
            rt.block_on(async {
                for n in 0..2 * READS {
                    let i = popularity.item(&mut draw);
                    let hit = lookup_or_fill(&cache, &key_part(i), &answer(i)).await;
                    if n >= READS {
                        reads += 1;
                        hits += u64::from(hit);
                    }
                }
            });
            println!(
                "{ITEMS} items, capacity {:.0}% of them ({:.1} MiB), {name}: hit ratio {:.3}",
                share * 100.0,
                capacity as f64 / (1 << 20) as f64,
                hits as f64 / reads as f64
            );
        }
    }
}
