//! Finding the first of a few bytes eight at a time, in one `u64` ("SIMD within a register"):
//! for the short runs every request is scanned over (a JSON string, an `Authorization` token),
//! where a loop a byte at a time costs more per byte than its test, and a vectorised search
//! (`memchr`) more per call than the run is long.
//!
//! A word's *flags* are the high bits of its bytes, set for the bytes sought. The tests below can
//! also flag a byte after a true one (a borrow carries upwards), never before it, so the lowest
//! flag is the first byte sought.

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGH: u64 = u64::from_le_bytes([0x80; 8]);

/// Flags the bytes of `word` equal to `byte`.
pub fn equal(word: u64, byte: u8) -> u64 {
    zero(word ^ (ONES * u64::from(byte)))
}

/// Flags the bytes of `word` below `bound` (at most 0x80).
pub fn below(word: u64, bound: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(bound)) & !word & HIGH
}

fn zero(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGH
}

/// Where the first byte sought is in `bytes`: `flags` flags them in a word, `wanted` tells the
/// last few bytes (fewer than eight) one at a time.
#[inline(always)]
pub fn find(
    bytes: &[u8],
    flags: impl Fn(u64) -> u64,
    wanted: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let found = flags(u64::from_le_bytes(word.try_into().expect("eight bytes")));
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = words.remainder().iter().position(|b| wanted(*b))?;
    Some(at + tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Eight at a time finds what one at a time finds, the bytes sought drawn often (and the
        /// bytes either side of them, where a borrow would show).
        #[test]
        fn words_find_what_bytes_find(
            bytes in prop::collection::vec(prop_oneof![
                3 => 0x20u8..0x7f,
                1 => prop::sample::select(vec![b',', b' ', b'"', 0, 0x1f, 0x21, 0x2b, 0x2d, 0x7f, 0x80, 0xff]),
            ], 0..40),
        ) {
            let sought = |b: u8| b == b',' || b == b' ' || b < 0x20;
            let flags = |w| equal(w, b',') | equal(w, b' ') | below(w, 0x20);
            prop_assert_eq!(find(&bytes, flags, sought), bytes.iter().position(|b| sought(*b)));
        }
    }
}
