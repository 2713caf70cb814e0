//! Responses, the last phase: a cache hit (the stored bytes with their precomputed checksum and a
//! fresh request id), an answer ddbcache composed (a merged BatchGetItem), the upstream's answer
//! as it came, or an error ddbcache answers itself. Each carries the headers an SDK checks.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::front_door::LocalAnswer;
use super::headers::{crc32_header, request_id};
use crate::cache::Entry;
use crate::protocol::{self, ProtocolError};
use crate::upstream::UpstreamResponse;

/// The body of every response ddbcache sends.
pub type Body = Full<Bytes>;

/// The `x-ddbcache` header: what the cache did with a request.
pub const HEADER_OUTCOME: &str = "x-ddbcache";

/// What happened to a request, for the `x-ddbcache` header, the log line and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Hit,
    /// A hit of the shared tier (an entry kept in the fleet's Redis).
    HitShared,
    /// An expired entry answered because DynamoDB failed the read (stale-if-error).
    Stale,
    Miss,
    /// A cacheable operation that went around the cache (see `policy::BypassReason`).
    Bypass,
    /// Not a cacheable read (a write, a control-plane call, ...): no header.
    NotCacheable,
}

impl Outcome {
    /// The label as a header value, made at compile time (`from_static` at run time checks
    /// every byte).
    fn header(self) -> HeaderValue {
        const fn value(outcome: Outcome) -> HeaderValue {
            HeaderValue::from_static(outcome.label())
        }
        const HIT: HeaderValue = value(Outcome::Hit);
        const HIT_SHARED: HeaderValue = value(Outcome::HitShared);
        const STALE: HeaderValue = value(Outcome::Stale);
        const MISS: HeaderValue = value(Outcome::Miss);
        const BYPASS: HeaderValue = value(Outcome::Bypass);
        const NOT_CACHEABLE: HeaderValue = value(Outcome::NotCacheable);
        match self {
            Outcome::Hit => HIT,
            Outcome::HitShared => HIT_SHARED,
            Outcome::Stale => STALE,
            Outcome::Miss => MISS,
            Outcome::Bypass => BYPASS,
            Outcome::NotCacheable => NOT_CACHEABLE,
        }
    }

    pub(crate) const fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::HitShared => "hit-shared",
            Outcome::Stale => "stale",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
            Outcome::NotCacheable => "not_cacheable",
        }
    }
}

/// A JSON answer ddbcache sends itself: content type, `x-amz-crc32` (`crc32` is the body's,
/// computed by the caller, so a hit can reuse the one computed at fill time) and a fresh
/// `x-amzn-requestid`. A cache hit and the bare baseline server both answer with this.
pub fn json_response(status: StatusCode, body: Bytes, crc32: HeaderValue) -> Response<Body> {
    // Names built once, at compile time: `from_static` at run time checks every byte.
    const CRC32: HeaderName = HeaderName::from_static(protocol::HEADER_CRC32);
    const REQUEST_ID: HeaderName = HeaderName::from_static(protocol::HEADER_REQUEST_ID);
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(protocol::CONTENT_TYPE),
    );
    headers.insert(CRC32, crc32);
    headers.insert(REQUEST_ID, request_id());
    response
}

/// Writes the `x-ddbcache` header when it is enabled and the request was a cacheable read.
pub(crate) fn mark(headers: &mut HeaderMap, outcome: Outcome, enabled: bool) {
    if enabled && outcome != Outcome::NotCacheable {
        const OUTCOME: HeaderName = HeaderName::from_static(HEADER_OUTCOME);
        headers.insert(OUTCOME, outcome.header());
    }
}

/// A cache hit: the stored bytes, their precomputed checksum, a fresh request id. When the
/// request asked for `ConsumedCapacity`, the hit reports it — zero units, a hit consumes none — in
/// the shape asked for.
pub(crate) fn hit(entry: &Entry, capacity: Option<&ZeroCapacity<'_>>) -> Response<Body> {
    let stored = || {
        let (body, crc32) = entry.response_parts();
        let crc32 =
            HeaderValue::from_maybe_shared(crc32).unwrap_or_else(|_| HeaderValue::from_static("0"));
        json_response(StatusCode::OK, body, crc32)
    };
    let Some(capacity) = capacity else {
        return stored();
    };
    let body = entry.body();
    let Some(open) = body.iter().rposition(|b| *b == b'}') else {
        return stored();
    };
    let mut out = Vec::with_capacity(body.len() + 128);
    out.extend_from_slice(&body[..open]);
    let empty = body[..open]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .is_some_and(|i| body[i] == b'{');
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(b"\"ConsumedCapacity\":");
    capacity.write_json(&mut out);
    out.extend_from_slice(&body[open..]);
    composed(out)
}

/// An expired entry answering a read DynamoDB failed (stale-if-error): a hit's answer, with an
/// `Age` header saying how old it is (seconds since the answer it holds was read).
pub(crate) fn stale(
    entry: &Entry,
    capacity: Option<&ZeroCapacity<'_>>,
    age: std::time::Duration,
) -> Response<Body> {
    let mut response = hit(entry, capacity);
    response
        .headers_mut()
        .insert(header::AGE, HeaderValue::from(age.as_secs()));
    response
}

/// The `ConsumedCapacity` of a hit: zero units, for the table (and index) the request read.
pub(crate) struct ZeroCapacity<'a> {
    /// `TOTAL` or `INDEXES`.
    pub(crate) indexes: bool,
    /// `TableName` as the client sent it.
    pub(crate) table: &'a str,
    /// The index read, and whether it is a global one.
    pub(crate) index: Option<(&'a str, bool)>,
}

impl ZeroCapacity<'_> {
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"TableName\":");
        let _ = serde_json::to_writer(&mut *out, self.table);
        out.extend_from_slice(b",\"CapacityUnits\":0.0");
        if self.indexes {
            out.extend_from_slice(b",\"Table\":{\"CapacityUnits\":0.0}");
            if let Some((index, global)) = self.index {
                out.extend_from_slice(if global {
                    b",\"GlobalSecondaryIndexes\":{" as &[u8]
                } else {
                    b",\"LocalSecondaryIndexes\":{"
                });
                let _ = serde_json::to_writer(&mut *out, index);
                out.extend_from_slice(b":{\"CapacityUnits\":0.0}}");
            }
        }
        out.push(b'}');
    }
}

/// A 200 answer ddbcache composed itself (a merged BatchGetItem).
pub(crate) fn composed(body: Vec<u8>) -> Response<Body> {
    let crc = crc32_header(&body);
    json_response(StatusCode::OK, Bytes::from(body), crc)
}

/// The upstream's answer, status, headers and body as they came.
pub(crate) fn relayed(upstream: UpstreamResponse) -> Response<Body> {
    let mut response = Response::new(Full::new(upstream.body));
    *response.status_mut() = upstream.status;
    *response.headers_mut() = upstream.headers;
    response.extensions_mut().insert(Relayed);
    response
}

/// Marks a response that is the upstream's own (never sent on the wire).
#[derive(Debug, Clone, Copy)]
struct Relayed;

/// Whether a response is the upstream's answer as it came (rather than one ddbcache composed).
pub(crate) fn is_relayed(response: &Response<Body>) -> bool {
    response.extensions().get::<Relayed>().is_some()
}

/// An answer the front door composed.
pub(crate) fn local(answer: LocalAnswer) -> Response<Body> {
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    response
}

/// An error ddbcache answers itself, in DynamoDB's shape.
pub fn error(e: &ProtocolError) -> Response<Body> {
    let body = e.body();
    let crc = crc32_header(&body);
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, body, crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(r: Response<Body>) -> serde_json::Value {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_hit_reports_zero_capacity_in_the_shape_asked_for() {
        let total = ZeroCapacity {
            indexes: false,
            table: "t",
            index: None,
        };
        let mut out = Vec::new();
        total.write_json(&mut out);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
            serde_json::json!({"TableName":"t","CapacityUnits":0.0})
        );
        let indexes = ZeroCapacity {
            indexes: true,
            table: "t",
            index: Some(("g", true)),
        };
        out.clear();
        indexes.write_json(&mut out);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
            serde_json::json!({"TableName":"t","CapacityUnits":0.0,"Table":{"CapacityUnits":0.0},
                "GlobalSecondaryIndexes":{"g":{"CapacityUnits":0.0}}})
        );
        for (stored, expected) in [
            (
                &b"{}"[..],
                serde_json::json!({"ConsumedCapacity":{"TableName":"t","CapacityUnits":0.0}}),
            ),
            (
                br#"{"Item":{"a":{"S":"x"}}}"#,
                serde_json::json!({"Item":{"a":{"S":"x"}},"ConsumedCapacity":{"TableName":"t","CapacityUnits":0.0}}),
            ),
        ] {
            let entry = crate::cache::Entry::for_tests(stored);
            let response = hit(&entry, Some(&total));
            let crc = response.headers()[protocol::HEADER_CRC32].clone();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(crc, crc32_header(&body));
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
                expected
            );
        }
        let plain = crate::cache::Entry::for_tests(b"{}");
        assert_eq!(body_of(hit(&plain, None)).await, serde_json::json!({}));
    }
}
