//! BatchGetItem: every requested key is looked up in the item cache; the keys that hit are
//! answered from it, only the misses are forwarded (as a smaller BatchGetItem), and the two are
//! merged into one answer in DynamoDB's shape, under the table names the client sent.
//! `UnprocessedKeys` pass back untouched.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;

use crate::cache::{CacheKey, Entry, Fill, Kind, Lookup, Source};
use crate::protocol::answers::{self, BatchGetItemOutput};
use crate::protocol::reads::{self, BatchGetRead, Capacity};
use crate::protocol::table::KeySchema;
use crate::protocol::ProtocolError;

use super::admit::Inbound;
use super::failover;
use super::forward::Encoding;
use super::policy::{self, zero_capacity, BatchPlan, MissRead, Unstored};
use super::respond::{self, Body, Outcome};
use super::{tables, Answered, Cached};

/// A key that missed: where it is in the request, how it was read, and the right to fill it.
struct Missed<'a> {
    table: usize,
    key: usize,
    how: MissRead,
    fill: Fill<'a>,
}

/// Serves a planned BatchGetItem: hits from the cache, the misses from upstream, merged.
pub(super) async fn serve(cx: &Cached, inb: &Inbound, plan: BatchPlan<'_>) -> Answered {
    let read = plan.read;
    let wants_capacity = read.capacity != Capacity::None;

    // Look every key up at once: per table, the entries that hit and a mask of which keys did.
    let cached: Vec<(usize, usize, CacheKey)> = read
        .tables
        .iter()
        .zip(&plan.tables)
        .enumerate()
        .filter(|(_, (_, tp))| tp.ttls.is_some())
        .flat_map(|(ti, (t, tp))| {
            t.keys
                .iter()
                .enumerate()
                .map(move |(ki, k)| (ti, ki, CacheKey::item(&tp.table, k, &t.projection)))
        })
        .collect();
    let addresses: Vec<_> = cached
        .iter()
        .map(|(ti, ki, key)| plan.tables[*ti].address(&read.tables[*ti].keys[*ki], key))
        .collect();
    let looked_up = cx.cache.lookup_many(&addresses).await;
    let mut hits: Vec<Vec<Entry>> = vec![Vec::new(); read.tables.len()];
    let mut hit_mask: Vec<Vec<bool>> = read
        .tables
        .iter()
        .map(|t| vec![false; t.keys.len()])
        .collect();
    let mut misses = Vec::new();
    let mut shared = false;
    for ((ti, ki, _), lookup) in cached.iter().zip(looked_up) {
        match lookup {
            Lookup::Hit { entry, source, .. } => {
                shared |= source == Source::Shared;
                hits[*ti].push(entry);
                hit_mask[*ti][*ki] = true;
            }
            Lookup::Miss(fill) => {
                let how = policy::miss_read(fill.restrictions(), true, wants_capacity);
                misses.push(Missed {
                    table: *ti,
                    key: *ki,
                    how,
                    fill,
                });
            }
        }
    }
    let any_hit = hit_mask.iter().flatten().any(|h| *h);
    if hit_mask.iter().flatten().all(|h| *h) {
        let body = merge(read, &hits, None)?;
        let outcome = if shared {
            Outcome::HitShared
        } else {
            Outcome::Hit
        };
        return Ok((respond::composed(body), outcome));
    }

    // Forward the misses only (the whole request when nothing hit), reading consistently the
    // tables with a recently written key.
    let consistent: Vec<bool> = (0..read.tables.len())
        .map(|ti| {
            misses
                .iter()
                .any(|m| m.table == ti && m.how == MissRead::Consistent)
        })
        .collect();
    let rewrite = any_hit || consistent.iter().any(|c| *c);
    let forwarded;
    let sub = if rewrite {
        let body = reads::batch_get_subset(
            &inb.json,
            read,
            |ti, ki| !hit_mask[ti][ki],
            |ti| consistent[ti],
        )?;
        if consistent.iter().any(|c| *c) {
            cx.counters.consistent_read(Kind::Item);
        }
        forwarded = inb.with_body(Bytes::from(body));
        &forwarded
    } else {
        inb
    };
    // Key schemas are needed to match returned items to keys: fetch the unknown ones alongside
    // the read.
    let fetch_schemas = async {
        let mut fetched = Vec::with_capacity(plan.tables.len());
        for tp in &plan.tables {
            fetched.push(match &tp.schema {
                Some(s) => Some(s.clone()),
                None => tables::schema(cx, &tp.table, tp.as_sent, inb).await,
            });
        }
        fetched
    };
    let (upstream, schemas) =
        tokio::join!(cx.upstream.send(sub, Encoding::Identity), fetch_schemas);
    if let Some(failure) = policy::failure(&upstream) {
        if let Some(stale) = stale_answer(cx, &plan, &hits, &misses, failure)? {
            return Ok((stale, Outcome::Stale));
        }
    }
    let upstream = upstream?;
    if answers::contradicts_schema(upstream.status.as_u16(), &upstream.body) {
        for tp in &plan.tables {
            cx.cache.contradicted(&tp.table);
        }
    }
    let output = policy::storable(&upstream, inb.op)
        .and_then(|()| answers::parse_batch_get_output(&upstream.body).ok_or(Unstored::Shape));
    let output = match output {
        Ok(output) => output,
        Err(reason) => {
            for _ in &misses {
                cx.counters.unstored(Kind::Item, reason);
            }
            if any_hit && upstream.status == http::StatusCode::OK {
                // An answer to the misses alone that cannot be merged with the hits (its body
                // does not match its checksum, or is not shaped as DynamoDB's): the client's
                // whole request is sent as it came, and its answer relayed, as it would be direct.
                let whole = cx.upstream.send(inb, Encoding::AsClientAsked).await?;
                return Ok((respond::relayed(whole), Outcome::Miss));
            }
            // An error (or, for the whole request, an answer ddbcache cannot read): the client
            // gets it as it came.
            return Ok((respond::relayed(upstream), Outcome::Miss));
        }
    };
    match policy::failover_kept(&upstream) {
        Ok(()) => fill(cx, &plan, &schemas, &output, misses),
        Err(reason) => {
            for _ in &misses {
                cx.counters.unstored(Kind::Item, reason);
            }
        }
    }
    if !any_hit {
        return Ok((respond::relayed(upstream), Outcome::Miss));
    }
    let body = merge(read, &hits, Some(&output))?;
    let mut response = respond::composed(body);
    failover::carry_mark(&upstream, response.headers_mut());
    Ok((response, Outcome::Miss))
}

/// When DynamoDB failed the read and every key that missed has an expired entry its table keeps
/// for that long (stale-if-error), the answer those entries and the hits make, with an `Age`
/// header for the oldest of them.
fn stale_answer(
    cx: &Cached,
    plan: &BatchPlan<'_>,
    hits: &[Vec<Entry>],
    misses: &[Missed<'_>],
    failure: policy::Failure,
) -> Result<Option<Response<Body>>, ProtocolError> {
    let mut entries = hits.to_vec();
    let mut oldest = Duration::ZERO;
    for m in misses {
        let Some((entry, past)) = m
            .fill
            .stale()
            .filter(|(_, past)| *past < plan.tables[m.table].stale_if_error)
        else {
            return Ok(None);
        };
        entries[m.table].push(entry.clone());
        oldest = oldest.max(past);
    }
    for m in misses {
        if let Some((_, past)) = m.fill.stale() {
            cx.counters.stale_answer(Kind::Item, failure, past);
        }
    }
    let body = merge(plan.read, &entries, None)?;
    let mut response = respond::composed(body);
    let ttl = plan
        .tables
        .iter()
        .filter_map(|t| t.ttls.and_then(|(found, _)| found))
        .max()
        .unwrap_or(Duration::ZERO);
    response.headers_mut().insert(
        http::header::AGE,
        http::HeaderValue::from((ttl + oldest).as_secs()),
    );
    Ok(Some(response))
}

/// Stores what a BatchGetItem answer says about each missed key: its item, or (when every
/// returned item could be matched to its key and the key is not unprocessed) its absence.
fn fill(
    cx: &Cached,
    plan: &BatchPlan<'_>,
    schemas: &[Option<Arc<KeySchema>>],
    output: &BatchGetItemOutput<'_>,
    misses: Vec<Missed<'_>>,
) {
    let read = plan.read;
    let key_names: Vec<Option<Vec<String>>> = schemas
        .iter()
        .zip(&read.tables)
        .map(|(s, t)| {
            let s = s.as_ref()?;
            s.is_key(t.key_names.iter().map(String::as_str))
                .then(|| t.key_names.clone())
        })
        .collect();
    let unprocessed = output
        .unprocessed_keys
        .map(|raw| unprocessed_keys(raw.get(), read, &key_names))
        .unwrap_or_default();
    // Per table: canonical key → item JSON; None when some item could not be matched.
    let mut found: Vec<Option<HashMap<Vec<u8>, &str>>> = read
        .tables
        .iter()
        .zip(&key_names)
        .map(|(t, names)| {
            let names = names.as_ref()?;
            let mut m = HashMap::new();
            for item in output.responses.get(&t.request_name).into_iter().flatten() {
                m.insert(answers::item_key(item, names)?, item.get());
            }
            Some(m)
        })
        .collect();
    for missed in misses {
        let stored = match missed.how {
            MissRead::Unstored(reason) => Err(reason),
            _ => fill_one(plan, &mut found, &unprocessed, missed),
        };
        if let Err(reason) = stored {
            cx.counters.unstored(Kind::Item, reason);
        }
    }
}

fn fill_one(
    plan: &BatchPlan<'_>,
    found: &mut [Option<HashMap<Vec<u8>, &str>>],
    unprocessed: &HashSet<(usize, Vec<u8>)>,
    missed: Missed<'_>,
) -> Result<(), Unstored> {
    let (ti, key) = (
        missed.table,
        &plan.read.tables[missed.table].keys[missed.key],
    );
    let table_found = found[ti].as_mut().ok_or(Unstored::Schema)?;
    let Some((found_ttl, absent_ttl)) = plan.tables[ti].ttls else {
        return Ok(());
    };
    match table_found.remove(key) {
        Some(item) => match found_ttl {
            Some(ttl) => {
                let body = Bytes::from(format!("{{\"Item\":{item}}}"));
                let range = 8..8 + item.len();
                Ok(missed.fill.complete(body, Some(range), ttl)?)
            }
            None => Ok(()),
        },
        None if !unprocessed.contains(&(ti, key.clone())) => match absent_ttl {
            Some(ttl) => Ok(missed.fill.complete(Bytes::from_static(b"{}"), None, ttl)?),
            None => Ok(()),
        },
        // Unprocessed: DynamoDB said nothing about it.
        None => Ok(()),
    }
}

/// Canonical keys listed in a BatchGetItem's `UnprocessedKeys`, as (table index, key).
fn unprocessed_keys(
    raw: &str,
    read: &BatchGetRead,
    key_names: &[Option<Vec<String>>],
) -> HashSet<(usize, Vec<u8>)> {
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
        let Some(names) = &key_names[ti] else {
            continue;
        };
        for key in map.get(&t.request_name).map(|k| &k.keys[..]).unwrap_or(&[]) {
            if let Some(k) = answers::item_key(key, names) {
                out.insert((ti, k));
            }
        }
    }
    out
}

/// Builds a BatchGetItem answer from cached items plus (optionally) an upstream answer for the
/// rest: `Responses` per table, `UnprocessedKeys` as the upstream gave them, and — when the
/// request asked for it — `ConsumedCapacity`: the upstream's entries for the tables it read,
/// zero for the tables answered from the cache alone.
fn merge(
    read: &BatchGetRead,
    hits: &[Vec<Entry>],
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
            .map(|raw| Cow::Borrowed(raw.get().as_bytes()));
        for item in cached.chain(fetched) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&item);
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"UnprocessedKeys\":");
    match upstream.and_then(|u| u.unprocessed_keys) {
        Some(raw) => out.extend_from_slice(raw.get().as_bytes()),
        None => out.extend_from_slice(b"{}"),
    }
    if read.capacity != Capacity::None {
        out.extend_from_slice(b",\"ConsumedCapacity\":[");
        let from_upstream: Vec<serde_json::Value> = upstream
            .and_then(|u| u.consumed_capacity)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default();
        let mut first = true;
        for t in &read.tables {
            if !first {
                out.push(b',');
            }
            first = false;
            let upstream_entry = from_upstream
                .iter()
                .find(|c| c.get("TableName").and_then(|n| n.as_str()) == Some(&t.request_name));
            match upstream_entry {
                Some(entry) => serde_json::to_writer(&mut out, entry)
                    .map_err(|e| ProtocolError::Internal(e.to_string()))?,
                None => zero_capacity(read.capacity, &t.request_name, None)
                    .expect("capacity was asked for")
                    .write_json(&mut out),
            }
        }
        out.push(b']');
    }
    out.push(b'}');
    Ok(out)
}
