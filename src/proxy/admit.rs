//! Admission, the first phase. The body is read whole — a body over `server.max_body_bytes` is
//! refused with a 413 as soon as that is known (from its `Content-Length`, before a byte of it
//! arrives), then read on and thrown away within a bound before the connection closes, as nginx's
//! lingering close does, so that a client still sending can read the 413 rather than have its
//! connection reset — and a gzipped one is inflated for reading (it is still forwarded exactly as
//! the client sent it). Then DynamoDB's front door ([`front_door`]) answers what DynamoDB answers
//! before any operation runs: CORS preflights, `GET`, wrong methods and content types, bodies that
//! are not JSON objects, unknown targets, malformed signatures. What passes is an [`Inbound`].

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};

use super::front_door::{self, Admission, Verdict};
use crate::config::UpstreamConfig;
use crate::connection::Lingering;
use crate::protocol::region::Region;
use crate::protocol::{Operation, ProtocolError};

use super::budget::{BodyBudget, Reservation};
use super::respond::{self, Body};

/// How much of a too-large body is read and thrown away after its 413, at most, before the
/// connection is closed.
const LINGER_LIMIT: u64 = 64 << 20;

/// An admitted request: its operation, its region and its whole body.
#[derive(Clone)]
pub(crate) struct Inbound {
    pub(crate) op: Operation,
    /// The request target as sent: path and query string.
    pub(crate) path: PathAndQuery,
    pub(crate) headers: HeaderMap,
    /// The body exactly as the client sent it (forwarded as is).
    pub(crate) body: Bytes,
    /// The JSON to parse: `body`, or its decompression when the client gzipped it.
    pub(crate) json: Bytes,
    /// The region whose tables answer this request: the one it is sent to and signed for. The
    /// same table name in two regions is two tables, so whatever is kept per table (entries,
    /// generations, schemas) is kept per region.
    pub(crate) region: Region,
    /// What the front door learned about the request (CORS, content type, where the signature
    /// was).
    pub(crate) admission: Admission,
    /// When the request was admitted: its upstream time (`upstream.timeout`, when set) counts
    /// from here.
    pub(crate) admitted: Instant,
    /// The body's share of `server.max_buffered_bytes`, held until the request ends.
    _buffered: Option<Arc<Reservation>>,
}

impl Inbound {
    /// The same request with another body, sent uncompressed (a BatchGetItem narrowed to the
    /// keys that missed).
    pub(crate) fn with_body(&self, body: Bytes) -> Inbound {
        let mut headers = self.headers.clone();
        headers.remove(header::CONTENT_ENCODING);
        Inbound {
            op: self.op,
            path: self.path.clone(),
            headers,
            body: body.clone(),
            json: body,
            region: self.region.clone(),
            admission: self.admission.clone(),
            admitted: self.admitted,
            _buffered: None,
        }
    }
}

/// A request answered at admission: the answer, and the operation when it was known (for
/// metrics).
pub(crate) struct Turned {
    pub(crate) op: Option<Operation>,
    pub(crate) response: Response<Body>,
}

impl Turned {
    fn error(op: Option<Operation>, e: &ProtocolError) -> Turned {
        Turned {
            op,
            response: respond::error(e),
        }
    }

    /// An error answered while the body may still be coming: the connection cannot carry another
    /// request, and says so.
    fn closing(op: Option<Operation>, e: &ProtocolError) -> Turned {
        let mut turned = Turned::error(op, e);
        turned
            .response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        turned.response.extensions_mut().insert(Lingering);
        turned
    }
}

/// How a request's region is chosen: the one its client signed for, unless regions are pinned
/// (`UpstreamConfig::follows_client_region`) or the signature names none.
pub(crate) struct Regions {
    /// `upstream.region`.
    pub(crate) default: Region,
    follow_client: bool,
}

impl Regions {
    pub(crate) fn new(config: &UpstreamConfig) -> Regions {
        Regions {
            default: Region::parse(&config.region)
                .expect("config validation checks that upstream.region is a region name"),
            follow_client: config.follows_client_region(),
        }
    }

    fn of(&self, client: Option<&Region>) -> Region {
        match client {
            Some(region) if self.follow_client => region.clone(),
            _ => self.default.clone(),
        }
    }
}

/// Reads and checks one request, its body within the `budget` (which holds
/// `server.max_body_bytes`).
pub(crate) async fn admit(
    req: Request<Incoming>,
    budget: &BodyBudget,
    regions: &Regions,
    arrived: Instant,
) -> Result<Inbound, Turned> {
    let max = budget.max_body();
    let (parts, body) = req.into_parts();
    let known = front_door::Known::read(&parts.headers);
    // Only for the metrics of a request turned away.
    let (body, buffered) = match read_body(&known, body, budget, arrived).await {
        Ok(read) => read,
        Err(BodyError::TooLarge) => {
            let e = ProtocolError::RequestTooLarge(format!(
                "request body exceeds the limit of {max} bytes"
            ));
            return Err(Turned::closing(known.named_operation(&parts.headers), &e));
        }
        Err(BodyError::Refused(e)) => {
            return Err(Turned::closing(known.named_operation(&parts.headers), &e))
        }
        Err(BodyError::Read(e)) => {
            let e = ProtocolError::Serialization(format!("request body could not be read: {e}"));
            return Err(Turned::error(known.named_operation(&parts.headers), &e));
        }
    };
    let gzipped = known
        .content_encoding
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let json = if gzipped {
        let mut out = Vec::new();
        let inflated = flate2::read::GzDecoder::new(&body[..])
            .take(max + 1)
            .read_to_end(&mut out);
        if let Err(e) = inflated {
            let e = ProtocolError::Serialization(format!("gzip request body is corrupt: {e}"));
            return Err(Turned::error(known.named_operation(&parts.headers), &e));
        }
        if out.len() as u64 > max {
            let e = ProtocolError::RequestTooLarge(format!(
                "request body exceeds the limit of {max} bytes"
            ));
            return Err(Turned::error(known.named_operation(&parts.headers), &e));
        }
        Bytes::from(out)
    } else {
        body.clone()
    };
    // Moved out of the URI, not copied.
    let path = parts
        .uri
        .into_parts()
        .path_and_query
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let inbound = front_door::Request {
        method: &parts.method,
        path_and_query: path.as_str(),
        headers: &parts.headers,
        known: &known,
        body: &json,
    };
    let admission = match front_door::examine(&inbound, &regions.default) {
        Verdict::Admit(admission) => admission,
        Verdict::Answer(answer) => {
            return Err(Turned {
                op: known.named_operation(&parts.headers),
                response: respond::local(answer),
            });
        }
    };
    Ok(Inbound {
        op: admission.op,
        path,
        headers: parts.headers,
        body,
        json,
        region: regions.of(admission.region.as_ref()),
        admission,
        // A body that came with its headers, waiting for nothing, was admitted as they arrived.
        admitted: if buffered.waited() {
            Instant::now()
        } else {
            arrived
        },
        _buffered: Some(Arc::new(buffered)),
    })
}

enum BodyError {
    /// Over the limit; what is still coming of it is being thrown away ([`linger`]).
    TooLarge,
    Read(hyper::Error),
    /// No room within `server.max_buffered_bytes` in time, or not sent within the body timeout.
    Refused(ProtocolError),
}

/// The whole body, up to `max` bytes. A longer one (declared or sent) is refused at once, and
/// what is still coming of it handed to [`linger`]. A client waiting for `100 Continue` has sent
/// nothing of it and will not: its connection is closed after the answer.
async fn read_body(
    known: &front_door::Known<'_>,
    mut body: Incoming,
    budget: &BodyBudget,
    arrived: Instant,
) -> Result<(Bytes, Reservation), BodyError> {
    let max = budget.max_body();
    let declared = known
        .content_length
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        let expects_continue = known
            .expect
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !expects_continue {
            linger(body, budget.deadline(arrived));
        }
        return Err(BodyError::TooLarge);
    }
    // What is at hand (room in the budget, a small body that came with its headers) is taken
    // without building the futures that waiting for it takes; those wait on the heap, so that
    // every request's future (moved whole as it is made and handed to the connection) stays
    // small.
    let mut buffered = match budget.start_now(declared, arrived) {
        Some(reservation) => reservation,
        None => Box::pin(budget.start(declared, arrived))
            .await
            .map_err(BodyError::Refused)?,
    };
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut len = 0u64;
    loop {
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => Box::pin(budget.frame(&mut buffered, &mut body))
                .await
                .map_err(BodyError::Refused)?,
        };
        let Some(frame) = frame else { break };
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue;
        };
        len += data.len() as u64;
        if len > max {
            linger(body, buffered.deadline());
            return Err(BodyError::TooLarge);
        }
        if !budget.cover_now(&mut buffered, len) {
            Box::pin(budget.cover(&mut buffered, len))
                .await
                .map_err(BodyError::Refused)?;
        }
        // One chunk (the usual small request) is kept as it came, without a copy.
        match &first {
            None => first = Some(data),
            Some(f) => {
                if rest.is_empty() {
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&data);
            }
        }
        // A body whose declared length has all arrived is whole: no further read to learn that.
        if body.is_end_stream() {
            break;
        }
    }
    let body = if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        rest.freeze()
    };
    Ok((body, buffered))
}

/// Reads the rest of a refused body and throws it away, in the background, while its answer goes
/// out: until the body ends, [`LINGER_LIMIT`] bytes were thrown away, or `until` (when the body
/// was due) passes. The connection, whose answer says `Connection: close`, closes then. Closing
/// at once would reset it while the client is still sending, and a client that writes its whole
/// request before it reads would never see the 413. The answer is marked [`Lingering`], so the
/// connection's header timeout does not take what still arrives for a next request.
fn linger(mut body: Incoming, until: tokio::time::Instant) {
    let discard = async move {
        let mut discarded = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                discarded += data.len() as u64;
                if discarded > LINGER_LIMIT {
                    return;
                }
            }
        }
    };
    tokio::spawn(tokio::time::timeout_at(until, discard));
}
