//! Admission, the first phase: a request is let in when its `X-Amz-Target` names an operation
//! ddbcache knows and its body fits the limit. The body is read whole here, and a gzipped one is
//! inflated for reading (it is still forwarded exactly as the client sent it).

use std::io::Read;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::Request;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::protocol::{self, Operation, ProtocolError};

/// An admitted request: a known operation and its whole body.
pub(crate) struct Inbound {
    pub(crate) op: Operation,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    /// The body exactly as the client sent it (forwarded as is).
    pub(crate) body: Bytes,
    /// The JSON to parse: `body`, or its decompression when the client gzipped it.
    pub(crate) json: Bytes,
}

/// A request turned away at admission, with the operation when it was known (for metrics).
#[derive(Debug)]
pub(crate) struct Rejected {
    pub(crate) op: Option<Operation>,
    pub(crate) error: ProtocolError,
}

impl Rejected {
    fn new(op: Option<Operation>, error: ProtocolError) -> Rejected {
        Rejected { op, error }
    }
}

/// Reads and checks one request; `max` is `server.max_body_bytes`.
pub(crate) async fn admit(req: Request<Incoming>, max: u64) -> Result<Inbound, Rejected> {
    let op = operation(req.headers()).map_err(|e| Rejected::new(None, e))?;
    let too_large = || {
        Rejected::new(
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
            return Err(Rejected::new(
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
                Rejected::new(
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

/// The operation an `X-Amz-Target` names.
fn operation(headers: &HeaderMap) -> Result<Operation, ProtocolError> {
    let Some(target) = headers.get(protocol::HEADER_TARGET) else {
        return Err(ProtocolError::UnknownOperation(
            "missing X-Amz-Target header".into(),
        ));
    };
    let target = target.to_str().unwrap_or("");
    Operation::from_target(target).ok_or_else(|| {
        ProtocolError::UnknownOperation(format!(
            "X-Amz-Target `{target}` is not an operation ddbcache knows"
        ))
    })
}
