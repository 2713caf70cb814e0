//! Table aliases at the edge of the pipeline: right after admission a request naming an alias is
//! rewritten to name the real table (`protocol::aliases` finds where names stand), so that every
//! step after it — policy, cache keys, key schemas, invalidation, the fleet, the upstream — sees
//! the real table only; and right before the answer leaves, the names this request used are put
//! back, so the application sees its own names (in `ConsumedCapacity`, batch answers' keys, table
//! descriptions and ARNs, error messages).
//!
//! A request without an alias in force, or whose body holds no alias name, costs one atomic load
//! and a substring search. A rewritten request is sent uncompressed and asks for an uncompressed
//! answer, so that the answer can be read back. A request that would name one real table twice
//! under two names (an alias and its table, say, in one BatchGetItem) cannot be answered under
//! both and is refused, as is a PartiQL statement whose table ddbcache cannot find while an alias
//! name stands in it: a `ValidationException` saying why.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::Response;
use http_body_util::{BodyExt, Full};

use super::admit::Inbound;
use super::headers::crc32_header;
use super::respond::Body;
use crate::aliases::{Aliases, InForce};
use crate::protocol::aliases::{rewrite_answer, rewrite_request, Renames};
use crate::protocol::{Operation, ProtocolError, HEADER_CRC32};

/// The names a rewritten request used: what its answer maps back.
pub(super) struct Renamed {
    /// `(real table, as the client named it)`.
    back: Vec<(String, String)>,
}

/// The request with its aliases applied, and what to map its answer back with; `None` when it
/// names no alias.
pub(super) fn apply(
    aliases: &Aliases,
    inb: &Inbound,
) -> Result<Option<(Inbound, Renamed)>, ProtocolError> {
    let Some(in_force) = aliases.in_force() else {
        return Ok(None);
    };
    // A name can only be in the body as it is, or spelled with a `\u` escape.
    let holds = |needle: &[u8]| memchr::memmem::find(&inb.json, needle).is_some();
    if !in_force.names().iter().any(|n| holds(n.as_bytes())) && !holds(b"\\u") {
        return Ok(None);
    }
    let mut forward = Forward {
        in_force: &in_force,
        region: inb.region.as_str(),
        seen: HashMap::new(),
        twice: None,
    };
    let body = rewrite_request(inb.op, &inb.json, &mut forward).map_err(|e| {
        ProtocolError::Validation(format!(
            "{e}, and a table alias may apply to it: name its table after FROM, INTO or UPDATE"
        ))
    })?;
    if let Some((table, a, b)) = forward.twice {
        return Err(ProtocolError::Validation(format!(
            "the request names table {table} twice, as {a} and as {b} (a table alias): send one \
             request per name"
        )));
    }
    let Some(body) = body else {
        return Ok(None);
    };
    let back = forward
        .seen
        .into_iter()
        .filter(|((_, real), named)| real != named)
        .map(|((_, real), named)| (real, named))
        .collect();
    let mut rewritten = inb.with_body(Bytes::from(body));
    // The answer is read back: it must come uncompressed.
    rewritten.headers.remove(header::ACCEPT_ENCODING);
    // The rewritten body was read whole as JSON.
    rewritten.admission.json_proven = true;
    Ok(Some((rewritten, Renamed { back })))
}

/// Names as the client sent them → the tables that serve them.
struct Forward<'a> {
    in_force: &'a InForce,
    region: &'a str,
    /// `(region, real table)` → the name the request used for it.
    seen: HashMap<(String, String), String>,
    /// A real table named under two names: `(table, one name, the other)`.
    twice: Option<(String, String, String)>,
}

impl Renames for Forward<'_> {
    fn rename(&mut self, region: Option<&str>, name: &str) -> Option<String> {
        let region = region.unwrap_or(self.region);
        let real = self.in_force.resolve(region, name);
        let key = (region.to_string(), real.unwrap_or(name).to_string());
        match self.seen.get(&key) {
            Some(other) if other != name => {
                self.twice = Some((key.1.clone(), other.clone(), name.to_string()));
            }
            _ => {
                self.seen.insert(key, name.to_string());
            }
        }
        real.map(str::to_string)
    }

    fn in_text(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Real tables → the names the request used.
struct Back<'a>(&'a [(String, String)]);

impl Renames for Back<'_> {
    fn rename(&mut self, _: Option<&str>, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(real, _)| real == name)
            .map(|(_, named)| named.clone())
    }

    fn in_text(&self) -> Vec<(String, String)> {
        self.0.to_vec()
    }
}

/// The answer with the request's names put back (and its checksum computed again).
pub(super) async fn answer_back(
    response: Response<Body>,
    op: Operation,
    renamed: &Renamed,
) -> Response<Body> {
    if renamed.back.is_empty() || response.headers().contains_key(header::CONTENT_ENCODING) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await;
    let body = collected.to_bytes();
    let names_one = renamed
        .back
        .iter()
        .any(|(real, _)| memchr::memmem::find(&body, real.as_bytes()).is_some());
    let rewritten = names_one
        .then(|| rewrite_answer(op, &body, &mut Back(&renamed.back)))
        .flatten();
    let Some(new) = rewritten else {
        return Response::from_parts(parts, Full::new(body));
    };
    const CRC32: HeaderName = HeaderName::from_static(HEADER_CRC32);
    if parts.headers.contains_key(CRC32) {
        parts.headers.insert(CRC32, crc32_header(&new));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Full::new(Bytes::from(new)))
}
