//! What the cache benches share: the keys `ddbcache-load` makes, in the cache's canonical form,
//! so the benches' entries are the size of the ones a load run fills.

/// The canonical key of item number `i`, shaped like the ones `ddbcache-load` sends.
pub fn key_part(i: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(48);
    for (name, value) in [("pk", format!("p{i:010}")), ("sk", "s000000".to_owned())] {
        k.push(b'A');
        k.extend_from_slice(&(name.len() as u32).to_le_bytes());
        k.extend_from_slice(name.as_bytes());
        k.push(b'S');
        k.extend_from_slice(&(value.len() as u32).to_le_bytes());
        k.extend_from_slice(value.as_bytes());
    }
    k
}
