//! BatchGetItem: every requested key is looked up in the item cache; the keys that hit are
//! answered from it, only the misses are forwarded (as a smaller BatchGetItem), and the two are
//! merged into one answer in DynamoDB's shape. `UnprocessedKeys` pass back untouched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use crate::cache::{Cache, CacheKey, Entry, Fill, Kind, Lookup};
use crate::protocol::answers::{self, BatchGetItemOutput};
use crate::protocol::reads::{self, BatchGetRead, ReadParse};
use crate::protocol::ProtocolError;

use super::admit::Inbound;
use super::policy::{self, BypassReason, ItemDecision};
use super::respond::{self, Outcome};
use super::{Answered, Encoding, Proxy};

/// A key that missed: (table index, key index in the request, the right to fill it).
type Missed<'a> = (usize, usize, Fill<'a>);

impl Proxy {
    pub(super) async fn batch_get_item(&self, cache: &Cache, inb: &Inbound) -> Answered {
        let read = match reads::parse_batch_get_item(&inb.json)? {
            ReadParse::Cacheable(r) => r,
            ReadParse::Uncacheable => {
                return self
                    .bypass(Kind::Item, BypassReason::NotUnderstood, inb)
                    .await
            }
        };
        let decisions: Vec<ItemDecision> = read
            .tables
            .iter()
            .map(|t| policy::item_read(&self.config, &t.table, t.consistent_read))
            .collect();
        if let Some(reason) = decisions.iter().find_map(|d| match d {
            ItemDecision::Bypass(BypassReason::ConsistentRead) => {
                Some(BypassReason::ConsistentRead)
            }
            _ => None,
        }) {
            return self.bypass(Kind::Item, reason, inb).await;
        }

        // Look every key up: per table, the entries that hit and a mask of which keys did.
        let mut hits: Vec<Vec<Arc<Entry>>> = Vec::with_capacity(read.tables.len());
        let mut hit_mask: Vec<Vec<bool>> = Vec::with_capacity(read.tables.len());
        let mut misses = Vec::new();
        for (ti, t) in read.tables.iter().enumerate() {
            let cached = matches!(decisions[ti], ItemDecision::Cache { .. });
            let mut table_hits = Vec::new();
            let mut mask = Vec::with_capacity(t.keys.len());
            for (ki, k) in t.keys.iter().enumerate() {
                if !cached {
                    mask.push(false);
                    continue;
                }
                let key = CacheKey::item(&t.table, k, &t.projection);
                match cache.peek_item(&t.table, k, key) {
                    Lookup::Hit { entry, .. } => {
                        table_hits.push(entry);
                        mask.push(true);
                    }
                    Lookup::Miss(fill) => {
                        misses.push((ti, ki, fill));
                        mask.push(false);
                    }
                }
            }
            hits.push(table_hits);
            hit_mask.push(mask);
        }
        let any_hit = hit_mask.iter().flatten().any(|h| *h);
        if hit_mask.iter().flatten().all(|h| *h) {
            let body = merge(&read, &hits, None)?;
            return Ok((respond::composed(body), Outcome::Hit));
        }

        // Forward the misses only (the whole request when nothing hit).
        let forwarded;
        let sub = if any_hit {
            let body = reads::batch_get_subset(&inb.json, &read, |ti, ki| !hit_mask[ti][ki])?;
            forwarded = inb.with_body(Bytes::from(body));
            &forwarded
        } else {
            inb
        };
        let upstream = self.forward(sub, Encoding::Identity).await?;
        let Some(output) = policy::storable(&upstream)
            .then(|| answers::parse_batch_get_output(&upstream.body))
            .flatten()
        else {
            // An error (or an answer ddbcache cannot read): the client gets it as it came.
            return Ok((respond::relayed(upstream), Outcome::Miss));
        };
        self.fill_batch(cache, &read, &decisions, &output, misses);
        if !any_hit {
            return Ok((respond::relayed(upstream), Outcome::Miss));
        }
        let body = merge(&read, &hits, Some(&output))?;
        Ok((respond::composed(body), Outcome::Miss))
    }

    /// Stores what a BatchGetItem answer says about each missed key: its item, or (when every
    /// returned item could be matched to its key and the key is not unprocessed) its absence.
    fn fill_batch(
        &self,
        cache: &Cache,
        read: &BatchGetRead,
        decisions: &[ItemDecision],
        output: &BatchGetItemOutput<'_>,
        misses: Vec<Missed<'_>>,
    ) {
        let unprocessed = output
            .unprocessed_keys
            .map(|raw| unprocessed_keys(raw.get(), read))
            .unwrap_or_default();
        // Per table: canonical key → item JSON; None when some item could not be matched.
        let mut found: Vec<Option<HashMap<Vec<u8>, &str>>> = read
            .tables
            .iter()
            .map(|t| {
                let mut m = HashMap::new();
                for item in output.responses.get(&t.request_name).into_iter().flatten() {
                    m.insert(answers::item_key(item, &t.key_names)?, item.get());
                }
                Some(m)
            })
            .collect();
        for (ti, ki, fill) in misses {
            let t = &read.tables[ti];
            let key = &t.keys[ki];
            let Some(table_found) = found[ti].as_mut() else {
                continue;
            };
            let ItemDecision::Cache {
                found: found_ttl,
                absent: absent_ttl,
            } = decisions[ti]
            else {
                continue;
            };
            match table_found.remove(key) {
                Some(item) => {
                    if let Some(ttl) = found_ttl {
                        let body = Bytes::from(format!("{{\"Item\":{item}}}"));
                        let range = 8..8 + item.len();
                        fill.complete(body, Some(range), ttl);
                    }
                }
                None if !unprocessed.contains(&(ti, key.clone())) => {
                    if let Some(ttl) = absent_ttl {
                        fill.complete(Bytes::from_static(b"{}"), None, ttl);
                    }
                }
                None => {}
            }
        }
        if cache.schemas().key_names(&read.tables[0].table).is_none() {
            for t in &read.tables {
                cache.schemas().learn(&t.table, t.key_names.clone());
            }
        }
    }
}

/// Canonical keys listed in a BatchGetItem's `UnprocessedKeys`, as (table index, key).
fn unprocessed_keys(raw: &str, read: &BatchGetRead) -> HashSet<(usize, Vec<u8>)> {
    #[derive(serde::Deserialize)]
    struct KeysAndAttributes<'a> {
        #[serde(rename = "Keys", borrow)]
        keys: Vec<&'a serde_json::value::RawValue>,
    }
    let mut out = HashSet::new();
    let Ok(map) = serde_json::from_str::<HashMap<String, KeysAndAttributes>>(raw) else {
        return out;
    };
    for (ti, t) in read.tables.iter().enumerate() {
        for key in map.get(&t.request_name).map(|k| &k.keys[..]).unwrap_or(&[]) {
            if let Some(k) = answers::item_key(key, &t.key_names) {
                out.insert((ti, k));
            }
        }
    }
    out
}

/// Builds a BatchGetItem answer from cached items plus (optionally) an upstream answer for the
/// rest: `Responses` per table, `UnprocessedKeys` as the upstream gave them, and the upstream's
/// `ConsumedCapacity` when it sent one (hits consume none).
fn merge(
    read: &BatchGetRead,
    hits: &[Vec<Arc<Entry>>],
    upstream: Option<&BatchGetItemOutput<'_>>,
) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"Responses\":{");
    for (ti, t) in read.tables.iter().enumerate() {
        if ti > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &t.request_name)
            .map_err(|e| ProtocolError::Internal(e.to_string()))?;
        out.extend_from_slice(b":[");
        let mut first = true;
        let cached = hits[ti].iter().filter_map(|e| e.item_json());
        let fetched = upstream
            .and_then(|u| u.responses.get(&t.request_name))
            .into_iter()
            .flatten()
            .map(|raw| raw.get().as_bytes());
        for item in cached.chain(fetched) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(item);
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"UnprocessedKeys\":");
    match upstream.and_then(|u| u.unprocessed_keys) {
        Some(raw) => out.extend_from_slice(raw.get().as_bytes()),
        None => out.extend_from_slice(b"{}"),
    }
    if let Some(cc) = upstream.and_then(|u| u.consumed_capacity) {
        out.extend_from_slice(b",\"ConsumedCapacity\":");
        out.extend_from_slice(cc.get().as_bytes());
    }
    out.push(b'}');
    Ok(out)
}
