//! The headers DynamoDB puts on every answer, as ddbcache makes them for the answers it gives
//! itself: the body's `x-amz-crc32` and a fresh `x-amzn-requestid`.

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

/// The `x-amz-crc32` header value of a body: CRC32 (IEEE) in decimal, which SDKs verify.
pub fn crc32_header(body: &[u8]) -> HeaderValue {
    let mut buf = itoa::Buffer::new();
    HeaderValue::from_str(buf.format(crc32fast::hash(body))).expect("digits are a valid header")
}

/// A fresh request id for answers ddbcache gives itself: 52 characters of `[0-9A-Z]`, the shape
/// DynamoDB uses. Unique per process (a random prefix and a counter), cheap enough for the hit path.
pub fn request_id() -> HeaderValue {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        // 39 base-36 digits need more randomness than one u128 holds: take two.
        let mut s = String::with_capacity(39);
        for (count, mut x) in [
            (24, uuid::Uuid::new_v4().as_u128()),
            (15, uuid::Uuid::new_v4().as_u128()),
        ] {
            for _ in 0..count {
                s.push(char::from(ALPHABET[(x % 36) as usize]));
                x /= 36;
            }
        }
        s
    });
    let mut n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = [b'0'; 52];
    id[..39].copy_from_slice(prefix.as_bytes());
    for slot in id[39..].iter_mut().rev() {
        *slot = ALPHABET[(n % 36) as usize];
        n /= 36;
    }
    HeaderValue::from_bytes(&id).expect("alphanumerics are a valid header")
}

const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_dynamodb_example() {
        // dynalite answers `{"TableNames":[]}` with x-amz-crc32: 1315925753.
        assert_eq!(crc32_header(br#"{"TableNames":[]}"#), "1315925753");
    }

    #[test]
    fn request_ids_are_unique_and_shaped() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 52);
        assert!(a.as_bytes().iter().all(|c| c.is_ascii_alphanumeric()));
    }
}
