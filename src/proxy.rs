//! The request pipeline: admit → classify → (lookup | invalidate) → forward → (fill | invalidate)
//! → respond. Each phase is a function named for it; `handle` reads top to bottom as the life of
//! one request.

use std::io::Read;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use prometheus::IntCounter;
use tracing::{debug, warn};

use crate::cache::{Cache, CacheKey, Entry, Kind, Lookup};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::requests::{self, ReadParse, WriteSet};
use crate::protocol::{self, OpClass, Operation, ProtocolError};
use crate::upstream::{Upstream, UpstreamResponse};

pub type Body = Full<Bytes>;

/// The `x-ddbcache` header: what the cache did with a request.
pub const HEADER_OUTCOME: &str = "x-ddbcache";

/// What happened to a request, for the header, the log line and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Hit,
    Miss,
    Bypass,
    /// Not a cacheable read.
    Pass,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
            Outcome::Pass => "pass",
        }
    }
}

/// An admitted request: a known operation and its whole body.
struct Inbound {
    op: Operation,
    path: String,
    headers: HeaderMap,
    /// The body exactly as the client sent it (forwarded as is).
    body: Bytes,
    /// The JSON to parse: `body`, or its decompression when the client gzipped it.
    json: Bytes,
}

pub struct Proxy {
    config: Arc<Config>,
    upstream: Arc<Upstream>,
    cache: Option<Cache>,
    metrics: Arc<Metrics>,
    /// `ddbcache_requests_total{operation, status="200"}` per operation (indexed by the
    /// operation), resolved on first use: most requests end here, and a labelled lookup per request
    /// would take the metric family's lock and hash both labels.
    ok_requests: Box<[OnceLock<IntCounter>]>,
}

impl Proxy {
    pub fn new(config: Arc<Config>, upstream: Arc<Upstream>, metrics: Arc<Metrics>) -> Proxy {
        let cache = config
            .cache
            .enabled
            .then(|| Cache::new(config.clone(), metrics.clone()));
        Proxy {
            config,
            upstream,
            cache,
            metrics,
            ok_requests: Operation::ALL.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// One request's whole life.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        self.metrics.in_flight.inc();
        let _in_flight = scopeguard(|| self.metrics.in_flight.dec());

        let (op, result) = match self.admit(req).await {
            Ok(inbound) => (Some(inbound.op), self.dispatch(&inbound).await),
            Err((op, e)) => (op, Err(e)),
        };
        let (response, outcome) = match result {
            Ok(r) => r,
            Err(e) => (error_response(&e), Outcome::Pass),
        };

        let op_name = op.map_or("Unknown", Operation::name);
        match op {
            Some(op) if response.status() == StatusCode::OK => self.ok_requests[op as usize]
                .get_or_init(|| self.metrics.requests.with_label_values(&[op_name, "200"]))
                .inc(),
            _ => self
                .metrics
                .requests
                .with_label_values(&[op_name, response.status().as_str()])
                .inc(),
        }
        self.metrics
            .request_duration
            .observe(started.elapsed().as_secs_f64());
        debug!(
            op = op_name,
            status = response.status().as_u16(),
            outcome = outcome.as_str(),
            micros = started.elapsed().as_micros() as u64,
            "request"
        );
        response
    }

    /// Admission: a known `X-Amz-Target`, a body within the limit, gzip undone for parsing.
    async fn admit(
        &self,
        req: Request<Incoming>,
    ) -> Result<Inbound, (Option<Operation>, ProtocolError)> {
        let target = req
            .headers()
            .get(protocol::HEADER_TARGET)
            .map(|v| v.to_str().unwrap_or(""));
        let op = match target {
            None => {
                return Err((
                    None,
                    ProtocolError::UnknownOperation("missing X-Amz-Target header".into()),
                ))
            }
            Some(t) => Operation::from_target(t).ok_or_else(|| {
                (
                    None,
                    ProtocolError::UnknownOperation(format!(
                        "X-Amz-Target `{t}` is not an operation ddbcache knows"
                    )),
                )
            })?,
        };
        let max = self.config.server.max_body_bytes;
        let too_large = || {
            (
                Some(op),
                ProtocolError::RequestTooLarge(format!(
                    "request body exceeds the limit of {max} bytes"
                )),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(too_large());
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, max as usize).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Err(e) => {
                return Err((
                    Some(op),
                    ProtocolError::Serialization(format!("request body could not be read: {e}")),
                ))
            }
        };
        let gzipped = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let json = if gzipped {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .take(max + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    (
                        Some(op),
                        ProtocolError::Serialization(format!("gzip request body is corrupt: {e}")),
                    )
                })?;
            if out.len() as u64 > max {
                return Err(too_large());
            }
            Bytes::from(out)
        } else {
            body.clone()
        };
        Ok(Inbound {
            op,
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
            headers: parts.headers,
            body,
            json,
        })
    }

    /// Classification: which path the request takes.
    async fn dispatch(&self, inb: &Inbound) -> Result<(Response<Body>, Outcome), ProtocolError> {
        let Some(cache) = &self.cache else {
            requests::require_object(&inb.json)?;
            return self.pass_through(inb).await;
        };
        match inb.op.class() {
            OpClass::ItemRead if inb.op == Operation::GetItem => self.get_item(cache, inb).await,
            OpClass::ItemRead => self.batch_get_item(cache, inb).await,
            OpClass::QueryRead => self.query(cache, inb).await,
            OpClass::ItemWrite => {
                let set = requests::parse_write(inb.op, &inb.json, &|t: &str| cache.key_names(t))?;
                self.write(cache, inb, &set).await
            }
            OpClass::PartiQl => {
                let set = requests::parse_partiql(inb.op, &inb.json)?;
                if set == WriteSet::default() {
                    self.pass_through(inb).await
                } else {
                    self.write(cache, inb, &set).await
                }
            }
            OpClass::Control => self.control(cache, inb).await,
            OpClass::Other => {
                requests::require_object(&inb.json)?;
                let (response, outcome, upstream) = self.forward(inb, false, Outcome::Pass).await?;
                if inb.op == Operation::DescribeTable && upstream.status.is_success() {
                    if let Some((table, names)) = requests::key_schema_of(&upstream.body) {
                        cache.learn_key_names(&table, names);
                    }
                }
                Ok((response, outcome))
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reads

    async fn get_item(
        &self,
        cache: &Cache,
        inb: &Inbound,
    ) -> Result<(Response<Body>, Outcome), ProtocolError> {
        let read = match requests::parse_get_item(&inb.json)? {
            ReadParse::Cacheable(r) => r,
            ReadParse::Uncacheable => return self.bypass(cache, Kind::Item, inb).await,
        };
        let ttls = cache.ttls(&read.table);
        if read.consistent_read || (ttls.item.is_none() && ttls.negative.is_none()) {
            return self.bypass(cache, Kind::Item, inb).await;
        }
        let key = CacheKey::item(&read.table, &read.key, &read.projection);
        let fill = match cache.lookup(Kind::Item, &read.table, &read.key, key).await {
            Lookup::Hit { entry, .. } => return Ok((self.hit_response(&entry), Outcome::Hit)),
            Lookup::Miss(fill) => fill,
        };
        let (response, outcome, upstream) = self.forward(inb, true, Outcome::Miss).await?;
        if let Some(answer) = cacheable_answer(&upstream)
            .and_then(|_| requests::parse_get_item_output(&upstream.body))
            .filter(|a| !a.has_capacity)
        {
            if cache.key_names(&read.table).is_none() {
                let names = read.key_names.iter().map(|n| n.to_string()).collect();
                cache.learn_key_names(&read.table, names);
            }
            let ttl = if answer.item.is_some() {
                ttls.item
            } else {
                ttls.negative
            };
            if let Some(ttl) = ttl {
                fill.complete(upstream.body.clone(), answer.item, ttl);
            }
        }
        Ok((response, outcome))
    }

    async fn query(
        &self,
        cache: &Cache,
        inb: &Inbound,
    ) -> Result<(Response<Body>, Outcome), ProtocolError> {
        let read = match requests::parse_query(&inb.json, inb.op == Operation::Scan)? {
            ReadParse::Cacheable(r) => r,
            ReadParse::Uncacheable => return self.bypass(cache, Kind::Query, inb).await,
        };
        let Some(ttl) = cache
            .ttls(&read.table)
            .query
            .filter(|_| !read.consistent_read)
        else {
            return self.bypass(cache, Kind::Query, inb).await;
        };
        let key = CacheKey::query(&read.table, &read.key);
        let fill = match cache.lookup(Kind::Query, &read.table, b"", key).await {
            Lookup::Hit { entry, .. } => return Ok((self.hit_response(&entry), Outcome::Hit)),
            Lookup::Miss(fill) => fill,
        };
        let (response, outcome, upstream) = self.forward(inb, true, Outcome::Miss).await?;
        if cacheable_answer(&upstream).is_some() && !requests::has_consumed_capacity(&upstream.body)
        {
            fill.complete(upstream.body.clone(), None, ttl);
        }
        Ok((response, outcome))
    }

    /// BatchGetItem: answer the keys that hit, forward only the misses, merge.
    async fn batch_get_item(
        &self,
        cache: &Cache,
        inb: &Inbound,
    ) -> Result<(Response<Body>, Outcome), ProtocolError> {
        let read = match requests::parse_batch_get_item(&inb.json)? {
            ReadParse::Cacheable(r) => r,
            ReadParse::Uncacheable => return self.bypass(cache, Kind::Item, inb).await,
        };
        if read.tables.iter().any(|t| t.consistent_read) {
            return self.bypass(cache, Kind::Item, inb).await;
        }
        // Per table, per key: a hit's item JSON, or the fill to complete.
        let mut hits: Vec<Vec<Arc<Entry>>> = Vec::with_capacity(read.tables.len());
        let mut misses = Vec::new();
        let mut hit_mask: Vec<Vec<bool>> = Vec::with_capacity(read.tables.len());
        for (ti, t) in read.tables.iter().enumerate() {
            let ttls = cache.ttls(&t.table);
            let cached = ttls.item.is_some() || ttls.negative.is_some();
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
        let all_hit = hit_mask.iter().flatten().all(|h| *h);
        if all_hit {
            let body = merge_batch_get(&read, &hits, None)?;
            return Ok((self.local_response(body, Outcome::Hit), Outcome::Hit));
        }

        // Forward the misses only (the whole request when nothing hit).
        let forwarded;
        let sub = if any_hit {
            let body = requests::batch_get_subset(&inb.json, &read, |ti, ki| !hit_mask[ti][ki])?;
            forwarded = Inbound {
                op: inb.op,
                path: inb.path.clone(),
                headers: without_content_encoding(&inb.headers),
                body: Bytes::from(body.clone()),
                json: Bytes::from(body),
            };
            &forwarded
        } else {
            inb
        };
        let upstream = self.send(sub, true).await?;
        let Some(output) = cacheable_answer(&upstream)
            .and_then(|_| requests::parse_batch_get_output(&upstream.body))
        else {
            // An error (or an answer ddbcache cannot read): the client gets it as it came.
            return Ok((
                self.upstream_response(upstream, Outcome::Miss),
                Outcome::Miss,
            ));
        };
        self.fill_batch(cache, &read, &output, misses);
        if !any_hit {
            return Ok((
                self.upstream_response(upstream, Outcome::Miss),
                Outcome::Miss,
            ));
        }
        let body = merge_batch_get(&read, &hits, Some(&output))?;
        Ok((self.local_response(body, Outcome::Miss), Outcome::Miss))
    }

    /// Stores what a BatchGetItem answer says about each missed key: its item, or (when every
    /// returned item could be matched to its key and the key is not unprocessed) its absence.
    fn fill_batch(
        &self,
        cache: &Cache,
        read: &requests::BatchGetRead,
        output: &requests::BatchGetItemOutput<'_>,
        misses: Vec<(usize, usize, crate::cache::Fill<'_>)>,
    ) {
        let unprocessed = output
            .unprocessed_keys
            .map(|raw| unprocessed_keys(raw.get(), read))
            .unwrap_or_default();
        // Per table: canonical key → item JSON; None when some item could not be matched.
        let mut found: Vec<Option<std::collections::HashMap<Vec<u8>, &str>>> = read
            .tables
            .iter()
            .map(|t| {
                let mut m = std::collections::HashMap::new();
                for item in output.responses.get(&t.request_name).into_iter().flatten() {
                    m.insert(requests::item_key(item, &t.key_names)?, item.get());
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
            let ttls = cache.ttls(&t.table);
            match table_found.remove(key) {
                Some(item) => {
                    if let Some(ttl) = ttls.item {
                        let body = Bytes::from(format!("{{\"Item\":{item}}}"));
                        let range = 8..8 + item.len();
                        fill.complete(body, Some(range), ttl);
                    }
                }
                None if !unprocessed.contains(&(ti, key.clone())) => {
                    if let Some(ttl) = ttls.negative {
                        fill.complete(Bytes::from_static(b"{}"), None, ttl);
                    }
                }
                None => {}
            }
        }
        if cache.key_names(&read.tables[0].table).is_none() {
            for t in &read.tables {
                cache.learn_key_names(&t.table, t.key_names.clone());
            }
        }
    }

    async fn bypass(
        &self,
        cache: &Cache,
        kind: Kind,
        inb: &Inbound,
    ) -> Result<(Response<Body>, Outcome), ProtocolError> {
        cache.count_bypass(kind);
        let (response, outcome, _) = self.forward(inb, false, Outcome::Bypass).await?;
        Ok((response, outcome))
    }

    // -----------------------------------------------------------------------------------------
    // Writes

    /// Invalidate, forward, invalidate again — whatever the outcome, since a write that failed or
    /// got no answer may still have happened.
    async fn write(
        &self,
        cache: &Cache,
        inb: &Inbound,
        set: &WriteSet,
    ) -> Result<(Response<Body>, Outcome), ProtocolError> {
        cache.write_started(set);
        let result = self.forward(inb, false, Outcome::Pass).await;
        cache.write_finished(set);
        result.map(|(response, outcome, _)| (response, outcome))
    }

    /// Control-plane calls: the table's entries and key schema go, before and after.
    async fn control(
        &self,
        cache: &Cache,
        inb: &Inbound,
    ) -> Result<(Response<Body>, Outcome), ProtocolError> {
        requests::require_object(&inb.json)?;
        let table = requests::control_table(&inb.json);
        let invalidate = || match &table {
            Some(t) => cache.invalidate_table(t, "control"),
            None => cache.invalidate_everything("control"),
        };
        invalidate();
        let result = self.forward(inb, false, Outcome::Pass).await;
        invalidate();
        let (response, outcome, upstream) = result?;
        if inb.op == Operation::CreateTable && upstream.status.is_success() {
            if let Some((table, names)) = requests::key_schema_of(&upstream.body) {
                cache.learn_key_names(&table, names);
            }
        }
        Ok((response, outcome))
    }

    // -----------------------------------------------------------------------------------------
    // Forwarding and responses

    async fn pass_through(
        &self,
        inb: &Inbound,
    ) -> Result<(Response<Body>, Outcome), ProtocolError> {
        let (response, outcome, _) = self.forward(inb, false, Outcome::Pass).await?;
        Ok((response, outcome))
    }

    /// Sends upstream and builds the client's response; the upstream answer is returned too, for
    /// filling and learning.
    async fn forward(
        &self,
        inb: &Inbound,
        identity_encoding: bool,
        outcome: Outcome,
    ) -> Result<(Response<Body>, Outcome, UpstreamResponse), ProtocolError> {
        let upstream = self.send(inb, identity_encoding).await?;
        let response = self.upstream_response(upstream.clone(), outcome);
        Ok((response, outcome, upstream))
    }

    async fn send(
        &self,
        inb: &Inbound,
        identity_encoding: bool,
    ) -> Result<UpstreamResponse, ProtocolError> {
        let result = self
            .upstream
            .send(
                inb.op,
                &inb.path,
                &inb.headers,
                inb.body.clone(),
                identity_encoding,
            )
            .await;
        match result {
            Ok(r) => {
                self.metrics
                    .upstream_duration
                    .with_label_values(&[inb.op.name()])
                    .observe(r.elapsed.as_secs_f64());
                Ok(r)
            }
            Err(e) => {
                self.metrics
                    .upstream_errors
                    .with_label_values(&[e.kind()])
                    .inc();
                warn!(op = inb.op.name(), error = %e, "upstream call failed");
                Err(e.to_protocol())
            }
        }
    }

    fn outcome_header(&self, headers: &mut HeaderMap, outcome: Outcome) {
        if self.config.cache.header && outcome != Outcome::Pass {
            headers.insert(
                HeaderName::from_static(HEADER_OUTCOME),
                HeaderValue::from_static(outcome.as_str()),
            );
        }
    }

    fn upstream_response(&self, upstream: UpstreamResponse, outcome: Outcome) -> Response<Body> {
        let mut response = Response::new(Full::new(upstream.body));
        *response.status_mut() = upstream.status;
        *response.headers_mut() = upstream.headers;
        self.outcome_header(response.headers_mut(), outcome);
        response
    }

    /// A cache hit: the stored bytes, their precomputed checksum, a fresh request id.
    fn hit_response(&self, entry: &Entry) -> Response<Body> {
        let mut response = own_response(StatusCode::OK, entry.body.clone(), entry.crc32.clone());
        self.outcome_header(response.headers_mut(), Outcome::Hit);
        response
    }

    /// A 200 answer ddbcache composed itself (a merged BatchGetItem).
    fn local_response(&self, body: Vec<u8>, outcome: Outcome) -> Response<Body> {
        let crc = protocol::crc32_header(&body);
        let mut response = own_response(StatusCode::OK, Bytes::from(body), crc);
        self.outcome_header(response.headers_mut(), outcome);
        response
    }
}

/// A response ddbcache answers itself, with the headers an SDK checks.
fn own_response(status: StatusCode, body: Bytes, crc32: HeaderValue) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(protocol::CONTENT_TYPE),
    );
    headers.insert(HeaderName::from_static(protocol::HEADER_CRC32), crc32);
    headers.insert(
        HeaderName::from_static(protocol::HEADER_REQUEST_ID),
        protocol::request_id(),
    );
    response
}

/// `Some(())` when an upstream answer may be cached: a 200 with an uncompressed body.
fn cacheable_answer(r: &UpstreamResponse) -> Option<()> {
    let identity = r
        .headers
        .get(header::CONTENT_ENCODING)
        .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"));
    (r.status == StatusCode::OK && identity).then_some(())
}

/// The client's headers for a body ddbcache rewrote (it is sent uncompressed).
fn without_content_encoding(headers: &HeaderMap) -> HeaderMap {
    let mut h = headers.clone();
    h.remove(header::CONTENT_ENCODING);
    h
}

/// Canonical keys listed in a BatchGetItem's `UnprocessedKeys`, as (table index, key).
fn unprocessed_keys(
    raw: &str,
    read: &requests::BatchGetRead,
) -> std::collections::HashSet<(usize, Vec<u8>)> {
    #[derive(serde::Deserialize)]
    struct Ka<'a> {
        #[serde(rename = "Keys", borrow)]
        keys: Vec<&'a serde_json::value::RawValue>,
    }
    let mut out = std::collections::HashSet::new();
    let Ok(map) = serde_json::from_str::<std::collections::HashMap<String, Ka>>(raw) else {
        return out;
    };
    for (ti, t) in read.tables.iter().enumerate() {
        for key in map.get(&t.request_name).map(|k| &k.keys[..]).unwrap_or(&[]) {
            if let Some(k) = requests::item_key(key, &t.key_names) {
                out.insert((ti, k));
            }
        }
    }
    out
}

/// Builds a BatchGetItem answer from cached items plus (optionally) an upstream answer for the
/// rest: `Responses` per table, `UnprocessedKeys` as the upstream gave them, and the upstream's
/// `ConsumedCapacity` when it sent one (hits consume none).
fn merge_batch_get(
    read: &requests::BatchGetRead,
    hits: &[Vec<Arc<Entry>>],
    upstream: Option<&requests::BatchGetItemOutput<'_>>,
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

/// The response for an error ddbcache answers itself.
pub fn error_response(e: &ProtocolError) -> Response<Body> {
    let body = e.body();
    let crc = protocol::crc32_header(&body);
    own_response(e.status(), body, crc)
}

/// Runs `f` when dropped (the in-flight gauge must come down however the request ends).
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    Guard(Some(f))
}
