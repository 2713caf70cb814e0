//! What a DynamoDB endpoint answers before any operation runs, as pure functions over a
//! request's method, path, headers and body.
//!
//! A client that talks to ddbcache must get the answers it would get from DynamoDB's own front
//! door: CORS preflights, the `GET` health answer, 404 for other methods and content types, the
//! Coral framework's `SerializationException` and `UnknownOperationException`, and the checks of
//! a signature's shape (which re-signing would otherwise hide). ddbcache answers these itself —
//! some local engines crash on bodies that are not JSON objects — following dynalite's
//! imitation of DynamoDB, its order and its words. Everything else is admitted, with what the rest
//! of the pipeline needs: the operation (possibly [`Operation::Unknown`], a DynamoDB operation
//! ddbcache does not know, to be forwarded as a write of unknown scope), the region the client
//! signed for, and whether the signature came in the query string.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::headers::{crc32_header, request_id};
use crate::protocol::operation::{DYNAMODB_PREFIX, STREAMS_PREFIX};
use crate::protocol::region::Region;
use crate::protocol::swar;
use crate::protocol::{Operation, HEADER_CRC32, HEADER_REQUEST_ID, HEADER_TARGET};

/// The content types of DynamoDB's JSON protocol. DynamoDB answers in the one the client used,
/// and in `application/json` when the client named none.
pub const AMZ_JSON: &str = "application/x-amz-json-1.0";
pub const JSON: &str = "application/json";

/// The parts of a request the front door looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'r> {
    pub method: &'r Method,
    /// The request target as sent: path and query string.
    pub path_and_query: &'r str,
    pub headers: &'r HeaderMap,
    /// What `headers` hold that the front door reads.
    pub known: &'r Known<'r>,
    /// The body (decompressed, when the client compressed it).
    pub body: &'r [u8],
}

/// The front door's decision.
#[derive(Debug)]
pub enum Verdict {
    /// DynamoDB answers this before any operation runs: send it as it is.
    Answer(LocalAnswer),
    /// An operation to run.
    Admit(Admission),
}

/// A complete answer: status, headers (request id, checksum, CORS and content type where
/// DynamoDB sends them) and body.
#[derive(Debug, Clone)]
pub struct LocalAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An admitted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The operation the target names: a known one, or [`Operation::Unknown`] /
    /// [`Operation::UnknownStreams`].
    pub op: Operation,
    /// The region of the client's SigV4 credential scope, when it names a valid one.
    pub region: Option<Region>,
    /// The signature came in the query string (`X-Amz-Algorithm`, ...): re-signing must strip it
    /// first ([`without_query_auth`]).
    pub query_signed: bool,
    /// The request carries `Origin`: every answer gets `Access-Control-Allow-Origin: *`.
    pub cors: bool,
    /// The content type DynamoDB answers this request with ([`AMZ_JSON`] or [`JSON`]).
    pub content_type: &'static str,
    /// The body was proven to be a JSON object. A GetItem's is not, when its signature's shape
    /// passed: reading it proves it in the same pass ([`crate::protocol::reads::get_item_fast`]),
    /// and a body that reading does not take must then pass [`prove_json`] first.
    pub json_proven: bool,
}

impl Admission {
    /// Gives an answer ddbcache composes (a hit, a merged batch, an error of its own) what
    /// DynamoDB gives every answer to this request: CORS, and its JSON in the content type the
    /// client used.
    pub fn decorate(&self, headers: &mut HeaderMap) {
        if self.cors {
            allow_any_origin(headers);
        }
        // ddbcache's own answers are already in the usual content type.
        if self.content_type != crate::protocol::CONTENT_TYPE
            && headers.contains_key(header::CONTENT_TYPE)
        {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
        }
    }
}

/// Runs the front door's checks in DynamoDB's order. `default_region` names the endpoint in the
/// health answer when the request names no region of its own.
pub fn examine(req: &Request<'_>, default_region: &Region) -> Verdict {
    let (headers, known) = (req.headers, req.known);
    let cors = known.origin.joined(headers).is_some_and(|o| !o.is_empty());
    let query = QueryString::new(req.path_and_query);

    if cors && req.method == Method::OPTIONS {
        return Verdict::Answer(preflight(headers));
    }
    if req.method == Method::GET {
        let region = credential_region(known, &query, default_region);
        let region = region.as_ref().unwrap_or(default_region);
        let body = format!("healthy: dynamodb.{region}.amazonaws.com ");
        return Verdict::Answer(answer(StatusCode::OK, None, Bytes::from(body), cors));
    }

    // What SDKs send is one of the two types as it is, compared whole before anything is split.
    let exact = known
        .content_type
        .and_then(|v| [AMZ_JSON, JSON].into_iter().find(|t| v == *t));
    let header;
    let content_type = match exact {
        Some(exact) => exact,
        None => {
            header = known.content_type.map(text).unwrap_or_default();
            header
                .split_once(';')
                .map_or(&*header, |(before, _)| before)
                .trim()
        }
    };
    if req.method != Method::POST
        || (!req.body.is_empty() && content_type != JSON && content_type != AMZ_JSON)
    {
        let body = Bytes::from_static(b"<UnknownOperationException/>\n");
        return Verdict::Answer(answer(StatusCode::NOT_FOUND, None, body, cors));
    }
    let content_type = if content_type == AMZ_JSON {
        AMZ_JSON
    } else {
        JSON
    };
    let coral = |name: &str, message: Option<(&str, &str)>| {
        Verdict::Answer(coral_answer(coral_error(name, message), content_type, cors))
    };

    // A body that is not JSON is refused before anything else is looked at; a GetItem's is
    // proven later, when it is read, unless another error is to be answered first.
    let op = operation(known.target, headers);
    let deferred = op == Some(Operation::GetItem) && !req.body.is_empty();
    if !deferred && !req.body.is_empty() && !is_json(req.body) {
        return coral("SerializationException", None);
    }

    let Some(op) = op else {
        return coral("UnknownOperationException", None);
    };

    let region = match check_auth(known, headers, &query, default_region) {
        Ok(region) => region,
        Err((name, message)) => {
            if deferred && !is_json(req.body) {
                return coral("SerializationException", None);
            }
            return coral(name, Some(("message", &message)));
        }
    };

    let admission = Admission {
        op,
        region,
        query_signed: query.has(QUERY_ALGORITHM),
        cors,
        content_type,
        json_proven: !deferred,
    };
    if !deferred {
        if let Some(answer) = object_check(req.body, &admission) {
            return Verdict::Answer(answer);
        }
    }
    Verdict::Admit(admission)
}

/// The headers admission and the front door read, found in one pass over the request's headers
/// (a lookup by name hashes the name; every request is examined, hits included). Each is its
/// first value, or as Node presents it ([`Seen`]).
#[derive(Debug)]
pub struct Known<'h> {
    pub content_length: Option<&'h HeaderValue>,
    pub content_encoding: Option<&'h HeaderValue>,
    pub expect: Option<&'h HeaderValue>,
    origin: Seen<'h>,
    content_type: Option<&'h HeaderValue>,
    target: Seen<'h>,
    authorization: Option<&'h HeaderValue>,
    amz_date: Seen<'h>,
    date: Seen<'h>,
}

/// A header the front door reads as Node presents it: its values joined.
#[derive(Debug, Clone, Copy)]
enum Seen<'h> {
    Absent,
    Once(&'h HeaderValue),
    /// Sent more than once: joined from the map, which is rare enough to look up again.
    Repeated(&'h HeaderName),
}

impl<'h> Seen<'h> {
    fn add(&mut self, name: &'h HeaderName, value: &'h HeaderValue) {
        *self = match self {
            Seen::Absent => Seen::Once(value),
            _ => Seen::Repeated(name),
        };
    }

    /// The first value, looked up again when there were more.
    fn first(self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        match self {
            Seen::Absent => None,
            Seen::Once(value) => Some(value),
            Seen::Repeated(name) => headers.get(name),
        }
    }

    fn joined(self, headers: &'h HeaderMap) -> Option<Cow<'h, str>> {
        match self {
            Seen::Absent => None,
            Seen::Once(value) => Some(text(value)),
            Seen::Repeated(name) => joined(headers, name),
        }
    }
}

impl<'h> Known<'h> {
    /// The operation the target's first value names, for the metrics of a request turned away
    /// before the front door decided what the target means.
    pub fn named_operation(&self, headers: &HeaderMap) -> Option<Operation> {
        Operation::from_target_bytes(self.target.first(headers)?.as_bytes())
    }

    pub fn read(headers: &'h HeaderMap) -> Known<'h> {
        const TARGET: HeaderName = HeaderName::from_static(HEADER_TARGET);
        const AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
        let mut known = Known {
            content_length: None,
            content_encoding: None,
            expect: None,
            origin: Seen::Absent,
            content_type: None,
            target: Seen::Absent,
            authorization: None,
            amz_date: Seen::Absent,
            date: Seen::Absent,
        };
        // A map's values come entry by entry, each entry's first value first.
        for (name, value) in headers {
            if name == header::AUTHORIZATION {
                known.authorization.get_or_insert(value);
            } else if name == header::CONTENT_TYPE {
                known.content_type.get_or_insert(value);
            } else if name == TARGET {
                known.target.add(name, value);
            } else if name == AMZ_DATE {
                known.amz_date.add(name, value);
            } else if name == header::ORIGIN {
                known.origin.add(name, value);
            } else if name == header::DATE {
                known.date.add(name, value);
            } else if name == header::CONTENT_LENGTH {
                known.content_length.get_or_insert(value);
            } else if name == header::CONTENT_ENCODING {
                known.content_encoding.get_or_insert(value);
            } else if name == header::EXPECT {
                known.expect.get_or_insert(value);
            }
        }
        known
    }
}

fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// What the front door answers a body that is not a JSON object, for a request whose admission
/// left that unproven ([`Admission::json_proven`]): `None` when it is one.
pub fn prove_json(body: &[u8], admission: &Admission) -> Option<LocalAnswer> {
    if !body.is_empty() && !is_json(body) {
        let body = coral_error("SerializationException", None);
        return Some(coral_answer(body, admission.content_type, admission.cors));
    }
    object_check(body, admission)
}

/// What Coral answers when the body (valid JSON, or none) does not deserialize into the
/// operation's input.
fn object_check(body: &[u8], admission: &Admission) -> Option<LocalAnswer> {
    let error = match body.iter().find(|c| !c.is_ascii_whitespace()) {
        Some(b'{') => return None,
        Some(b'[') => coral_error(
            "SerializationException",
            Some(("Message", "Start of list found where not expected")),
        ),
        _ => coral_error("SerializationException", None),
    };
    Some(coral_answer(error, admission.content_type, admission.cors))
}

/// A Coral error (400, in the client's JSON content type).
fn coral_answer(body: Bytes, content_type: &'static str, cors: bool) -> LocalAnswer {
    answer(StatusCode::BAD_REQUEST, Some(content_type), body, cors)
}

/// The request target without the query-string signature parameters, for re-signing a request
/// the client signed in its query string. Other parameters are kept as they were written.
pub fn without_query_auth(path_and_query: &str) -> Cow<'_, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return Cow::Borrowed(path_and_query);
    };
    let is_auth = |pair: &&str| {
        let name = percent_decode(pair.split_once('=').map_or(*pair, |(k, _)| k));
        QUERY_AUTH_PARAMS.contains(&name.as_ref())
    };
    if !query.split('&').any(|p| is_auth(&p)) {
        return Cow::Borrowed(path_and_query);
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_auth(p)).collect();
    if kept.is_empty() {
        Cow::Owned(path.to_string())
    } else {
        Cow::Owned(format!("{path}?{}", kept.join("&")))
    }
}

/// Adds `Access-Control-Allow-Origin: *`, which DynamoDB sends to every request with `Origin`.
pub fn allow_any_origin(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

const QUERY_ALGORITHM: &str = "X-Amz-Algorithm";
const QUERY_CREDENTIAL: &str = "X-Amz-Credential";
/// What DynamoDB requires of a query-string signature, in the order it names what is missing.
const QUERY_REQUIRED: &[&str] = &[
    QUERY_ALGORITHM,
    QUERY_CREDENTIAL,
    "X-Amz-Signature",
    "X-Amz-SignedHeaders",
    "X-Amz-Date",
];
/// Every query-string parameter that belongs to a signature.
const QUERY_AUTH_PARAMS: &[&str] = &[
    QUERY_ALGORITHM,
    QUERY_CREDENTIAL,
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-Security-Token",
    "X-Amz-Signature",
    "X-Amz-SignedHeaders",
];
/// What DynamoDB requires of an `Authorization` header, in the order it names what is missing.
const HEADER_REQUIRED: [&str; 3] = ["Credential", "Signature", "SignedHeaders"];

/// The operation an `X-Amz-Target` names: a known one, an operation of DynamoDB or DynamoDB
/// Streams that ddbcache does not know, or `None` (DynamoDB's `UnknownOperationException`).
fn operation(target: Seen<'_>, headers: &HeaderMap) -> Option<Operation> {
    // The usual target, sent once, is read from its bytes without making text of them first.
    if let Seen::Once(value) = target {
        if let Some(op) = Operation::from_target_bytes(value.as_bytes()) {
            return Some(op);
        }
    }
    let target = target.joined(headers)?;
    if let Some(op) = Operation::from_target(&target) {
        return Some(op);
    }
    let (service, name) = target.split_once('.')?;
    if name.contains('.') {
        return None;
    }
    let shaped = (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_uppercase()
        && name.bytes().all(|b| b.is_ascii_alphanumeric());
    if !shaped {
        return None;
    }
    // The 2011 API version is DynamoDB's too; ddbcache knows none of its operations.
    if service == DYNAMODB_PREFIX.trim_end_matches('.') || service == "DynamoDB_20111205" {
        Some(Operation::Unknown)
    } else if service == STREAMS_PREFIX.trim_end_matches('.') {
        Some(Operation::UnknownStreams)
    } else {
        None
    }
}

/// The shape checks DynamoDB makes of a signature before verifying it: `Ok` with the region of
/// the credential scope, or the Coral error (name, message) DynamoDB answers.
fn check_auth(
    known: &Known<'_>,
    headers: &HeaderMap,
    query: &QueryString<'_>,
    usual: &Region,
) -> Result<Option<Region>, (&'static str, String)> {
    // Read as bytes: every request carries this header, and its Latin-1 text (as Node reads it)
    // is needed only for an error's message. Each byte is one char of that text, so positions,
    // emptiness and the ASCII delimiters are the same either way.
    let auth = known
        .authorization
        .map(HeaderValue::as_bytes)
        .filter(|a| !a.is_empty());
    let query_signed = query.has(QUERY_ALGORITHM);
    if auth.is_some() && query_signed {
        return Err((
            "InvalidSignatureException",
            "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header."
                .into(),
        ));
    }
    let missing = || {
        Err((
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token".into(),
        ))
    };
    let mut message = String::new();
    let region = match &auth {
        None if !query_signed => return missing(),
        Some(auth) if !trim_latin1(auth).starts_with(b"AWS4-") => return missing(),
        Some(auth) => {
            let params = AuthParams::parse(auth);
            for (name, value) in HEADER_REQUIRED.iter().zip(&params.values) {
                if value.is_none_or(<[u8]>::is_empty) {
                    message.push_str(&format!(
                        "Authorization header requires '{name}' parameter. "
                    ));
                }
            }
            let has_date = |date: Seen<'_>| match date {
                Seen::Absent => false,
                Seen::Once(value) => !value.is_empty(),
                Seen::Repeated(_) => date.joined(headers).is_some_and(|d| !d.is_empty()),
            };
            if !has_date(known.amz_date) && !has_date(known.date) {
                message.push_str(
                    "Authorization header requires existence of either a 'X-Amz-Date' or a \
                     'Date' header. ",
                );
            }
            if !message.is_empty() {
                message.push_str("Authorization=");
                message.push_str(&latin1(auth));
            }
            params.values[0].and_then(|c| scope_region(c, usual))
        }
        None => {
            for name in QUERY_REQUIRED {
                if !query.truthy(name) {
                    message.push_str(&format!(
                        "AWS query-string parameters must include '{name}'. "
                    ));
                }
            }
            if !message.is_empty() {
                message.push_str("Re-examine the query-string parameters.");
            }
            query
                .first(QUERY_CREDENTIAL)
                .and_then(|c| scope_region(c.as_bytes(), usual))
        }
    };
    if message.is_empty() {
        Ok(region)
    } else {
        Err(("IncompleteSignatureException", message))
    }
}

/// The region a request is signed for, wherever its signature is; `None` when it names no
/// valid one.
fn credential_region(known: &Known<'_>, query: &QueryString<'_>, usual: &Region) -> Option<Region> {
    if let Some(auth) = known.authorization {
        return AuthParams::parse(auth.as_bytes()).values[0].and_then(|c| scope_region(c, usual));
    }
    query
        .first(QUERY_CREDENTIAL)
        .and_then(|c| scope_region(c.as_bytes(), usual))
}

/// `AKID/20200101/us-east-1/dynamodb/aws4_request` → `us-east-1` (trailing slashes ignored,
/// as DynamoDB ignores them).
/// `usual` (`upstream.region`, which nearly every request names) is recognised by comparison.
fn scope_region(credential: &[u8], usual: &Region) -> Option<Region> {
    // Every request's credential is read here, hits included: bytes, not `str::split`.
    let end = credential
        .iter()
        .rposition(|b| *b != b'/')
        .map_or(0, |i| i + 1);
    // Five parts: four slashes, the region between the second and the third. A credential is
    // short: each slash is found a word at a time, where a search call would cost more.
    let bytes = &credential[..end];
    let slash = |rest: &[u8]| swar::find(rest, |w| swar::equal(w, b'/'), |b| b == b'/');
    let mut slashes = [0; 4];
    let mut at = 0;
    for found in &mut slashes {
        *found = at + slash(&bytes[at..])?;
        at = *found + 1;
    }
    if slash(&bytes[at..]).is_some() {
        return None;
    }
    let region = &credential[slashes[1] + 1..slashes[2]];
    if region == usual.as_str().as_bytes() {
        return Some(usual.clone());
    }
    Region::parse_bytes(region)
}

/// `Credential`, `Signature` and `SignedHeaders` of an `Authorization` header, read as DynamoDB
/// reads them: tokens split at commas and spaces after the algorithm, `key=value` up to the next
/// `=`, the last occurrence winning. Read over the header's bytes, each one char of its Latin-1
/// text.
struct AuthParams<'a> {
    values: [Option<&'a [u8]>; 3],
}

impl<'a> AuthParams<'a> {
    fn parse(auth: &'a [u8]) -> AuthParams<'a> {
        let mut values = [None; 3];
        // Every request carries this header, hits included: its delimiters are found eight bytes
        // at a time (its tokens are a few dozen bytes, shorter than `memchr` pays off for).
        let delimiter = |w| swar::equal(w, b',') | swar::equal(w, b' ');
        let mut start = 0;
        let mut piece = 0;
        while start <= auth.len() {
            let end = swar::find(&auth[start..], delimiter, |b| b == b',' || b == b' ')
                .map_or(auth.len(), |at| start + at);
            // Tokens split at spaces seldom have whitespace at their ends: one that begins and
            // ends with a visible ASCII character is already trimmed.
            let raw = &auth[start..end];
            let token = match (raw.first(), raw.last()) {
                (Some(first), Some(last))
                    if first.is_ascii_graphic() && last.is_ascii_graphic() =>
                {
                    raw
                }
                _ => trim_latin1(raw),
            };
            start = end + 1;
            piece += 1;
            // Only `Credential`, `Signature` and `SignedHeaders` are kept.
            if piece == 1 || !matches!(token.first(), Some(b'C' | b'S')) {
                continue;
            }
            // `key=value` up to the next `=`, or a bare `key` (no value).
            for (i, key) in HEADER_REQUIRED.iter().enumerate() {
                let Some(rest) = token.strip_prefix(key.as_bytes()) else {
                    continue;
                };
                if rest.is_empty() {
                    values[i] = None;
                } else if let Some(rest) = rest.strip_prefix(b"=") {
                    let end = swar::find(rest, |w| swar::equal(w, b'='), |b| b == b'=');
                    let value = end.map_or(rest, |e| &rest[..e]);
                    values[i] = Some(value);
                }
            }
        }
        AuthParams { values }
    }
}

/// Bytes trimmed as `str::trim` trims their Latin-1 text: each byte whose char is whitespace.
fn trim_latin1(bytes: &[u8]) -> &[u8] {
    let space = |b: &u8| char::from(*b).is_whitespace();
    let start = bytes.iter().position(|b| !space(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// A query string, read as DynamoDB (and Node's `querystring`) read it: `&`-separated pairs,
/// names and values percent-decoded, `+` a space.
struct QueryString<'a> {
    raw: &'a str,
}

impl<'a> QueryString<'a> {
    fn new(path_and_query: &'a str) -> QueryString<'a> {
        QueryString {
            raw: path_and_query
                .as_bytes()
                .iter()
                .position(|b| *b == b'?')
                .map_or("", |at| &path_and_query[at + 1..]),
        }
    }

    fn values(&self, name: &'a str) -> impl Iterator<Item = Cow<'a, str>> + '_ {
        // Most requests have no query string.
        let raw = if self.raw.is_empty() {
            None
        } else {
            Some(self.raw)
        };
        raw.into_iter()
            .flat_map(|raw| raw.split('&'))
            .filter(|pair| !pair.is_empty())
            .filter_map(move |pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k) == name).then(|| percent_decode(v))
            })
    }

    fn has(&self, name: &'a str) -> bool {
        // Asked of every request, which seldom has a query string.
        !self.raw.is_empty() && self.values(name).next().is_some()
    }

    fn first(&self, name: &'a str) -> Option<Cow<'a, str>> {
        self.values(name).next()
    }

    /// Present with a non-empty value, or present more than once (Node then has an array, which
    /// is truthy whatever it holds).
    fn truthy(&self, name: &'a str) -> bool {
        let mut values = self.values(name);
        match (values.next(), values.next()) {
            (Some(v), None) => !v.is_empty(),
            (Some(_), Some(_)) => true,
            (None, _) => false,
        }
    }
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// A header's values joined with `, ` (how Node presents a repeated header).
fn joined(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<Cow<'_, str>> {
    let mut values = headers.get_all(name).iter();
    let first = text(values.next()?);
    let rest: Vec<Cow<str>> = values.map(text).collect();
    if rest.is_empty() {
        return Some(first);
    }
    let mut all = first.into_owned();
    for v in rest {
        all.push_str(", ");
        all.push_str(&v);
    }
    Some(Cow::Owned(all))
}

/// A header's value as text (bytes beyond ASCII read as Latin-1, as Node reads them).
fn text(value: &HeaderValue) -> Cow<'_, str> {
    latin1(value.as_bytes())
}

/// Bytes read as Latin-1 text, each byte one char.
fn latin1(bytes: &[u8]) -> Cow<'_, str> {
    // ASCII reads the same either way; `is_ascii` and `from_utf8` take it a word at a time,
    // where `HeaderValue::to_str` checks a byte at a time.
    match std::str::from_utf8(bytes) {
        Ok(s) if bytes.is_ascii() => Cow::Borrowed(s),
        _ => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// The answer to a CORS preflight: whatever the browser asks to send is allowed, for two days.
fn preflight(headers: &HeaderMap) -> LocalAnswer {
    let mut out = HeaderMap::new();
    out.insert(HeaderName::from_static(HEADER_REQUEST_ID), request_id());
    allow_any_origin(&mut out);
    for (asked, allowed) in [
        (
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
        ),
        (
            header::ACCESS_CONTROL_REQUEST_METHOD,
            header::ACCESS_CONTROL_ALLOW_METHODS,
        ),
    ] {
        if let Some(v) = joined(headers, asked).filter(|v| !v.is_empty()) {
            if let Ok(v) = HeaderValue::from_str(&v) {
                out.insert(allowed, v);
            }
        }
    }
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("172800"),
    );
    LocalAnswer {
        status: StatusCode::OK,
        headers: out,
        body: Bytes::new(),
    }
}

/// An answer with a request id, the body's checksum, CORS when asked for, and a content type
/// when the body is JSON.
fn answer(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: Bytes,
    cors: bool,
) -> LocalAnswer {
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static(HEADER_REQUEST_ID), request_id());
    headers.insert(HeaderName::from_static(HEADER_CRC32), crc32_header(&body));
    if let Some(ct) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    if cors {
        allow_any_origin(&mut headers);
    }
    LocalAnswer {
        status,
        headers,
        body,
    }
}

/// `{"__type":"com.amazon.coral.service#<name>"}`, with the message under the member name
/// DynamoDB uses for it (`message` for signature errors, `Message` for serialization errors).
fn coral_error(name: &str, message: Option<(&str, &str)>) -> Bytes {
    let mut body = format!("{{\"__type\":\"com.amazon.coral.service#{name}\"");
    if let Some((key, text)) = message {
        body.push_str(&format!(",\"{key}\":{}", serde_json::Value::from(text)));
    }
    body.push('}');
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SIGNED: &str = "AWS4-HMAC-SHA256 Credential=AKID/20200101/eu-west-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=abc";

    struct Req {
        method: Method,
        path: String,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Req {
        /// A well-formed, signed ListTables.
        fn new() -> Req {
            Req::post("DynamoDB_20120810.ListTables", "{}")
        }

        fn post(target: &str, body: &str) -> Req {
            let mut headers = HeaderMap::new();
            headers.insert("x-amz-target", HeaderValue::from_str(target).unwrap());
            headers.insert("content-type", HeaderValue::from_static(AMZ_JSON));
            headers.insert("authorization", HeaderValue::from_static(SIGNED));
            headers.insert("x-amz-date", HeaderValue::from_static("20200101T000000Z"));
            Req {
                method: Method::POST,
                path: "/".into(),
                headers,
                body: body.as_bytes().to_vec(),
            }
        }

        fn bare(method: Method) -> Req {
            Req {
                method,
                path: "/".into(),
                headers: HeaderMap::new(),
                body: Vec::new(),
            }
        }

        fn header(mut self, name: &'static str, value: &str) -> Req {
            self.headers
                .insert(name, HeaderValue::from_str(value).unwrap());
            self
        }

        fn without(mut self, name: &'static str) -> Req {
            self.headers.remove(name);
            self
        }

        fn body(mut self, body: &[u8]) -> Req {
            self.body = body.to_vec();
            self
        }

        fn path(mut self, path: &str) -> Req {
            self.path = path.into();
            self
        }

        fn examine(&self) -> Verdict {
            examine(
                &Request {
                    method: &self.method,
                    path_and_query: &self.path,
                    headers: &self.headers,
                    known: &Known::read(&self.headers),
                    body: &self.body,
                },
                &Region::parse("us-east-1").unwrap(),
            )
        }

        fn answer(&self) -> LocalAnswer {
            match self.examine() {
                Verdict::Answer(a) => a,
                Verdict::Admit(a) => panic!("admitted: {a:?}"),
            }
        }

        fn admission(&self) -> Admission {
            match self.examine() {
                Verdict::Admit(a) => a,
                Verdict::Answer(a) => panic!("answered {} {:?}", a.status, a.body),
            }
        }
    }

    fn header<'a>(a: &'a LocalAnswer, name: &str) -> Option<&'a str> {
        a.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// A 400 Coral error: body, checksum, content type and request id as DynamoDB sends them.
    fn assert_coral(a: &LocalAnswer, body: &str, content_type: &str) {
        assert_eq!(a.status, 400);
        assert_eq!(std::str::from_utf8(&a.body).unwrap(), body);
        assert_eq!(
            header(a, "x-amz-crc32").unwrap(),
            crc32fast::hash(body.as_bytes()).to_string()
        );
        assert_eq!(header(a, "content-type"), Some(content_type));
        assert_eq!(header(a, "x-amzn-requestid").unwrap().len(), 52);
    }

    const SERIALIZATION: &str = r#"{"__type":"com.amazon.coral.service#SerializationException"}"#;
    const UNKNOWN_OP: &str = r#"{"__type":"com.amazon.coral.service#UnknownOperationException"}"#;
    const MISSING: &str = r#"{"__type":"com.amazon.coral.service#MissingAuthenticationTokenException","message":"Request is missing Authentication Token"}"#;

    #[test]
    fn coral_bodies_match_dynamodb_checksums() {
        // The checksums DynamoDB sends with these exact bodies.
        assert_eq!(crc32fast::hash(SERIALIZATION.as_bytes()), 3948637019);
        assert_eq!(crc32fast::hash(UNKNOWN_OP.as_bytes()), 1368724161);
        assert_eq!(crc32fast::hash(MISSING.as_bytes()), 2088342776);
        assert_eq!(coral_error("SerializationException", None), SERIALIZATION);
    }

    #[test]
    fn get_is_the_health_answer_for_the_region() {
        let a = Req::bare(Method::GET).answer();
        assert_eq!(a.status, 200);
        assert_eq!(a.body, "healthy: dynamodb.us-east-1.amazonaws.com ");
        assert_eq!(header(&a, "x-amz-crc32"), Some("3128867991"));
        assert_eq!(header(&a, "content-type"), None);
        assert_eq!(header(&a, "access-control-allow-origin"), None);
        let signed = Req::bare(Method::GET)
            .header("authorization", SIGNED)
            .answer();
        assert_eq!(signed.body, "healthy: dynamodb.eu-west-1.amazonaws.com ");
        let cors = Req::bare(Method::GET)
            .header("origin", "https://app")
            .answer();
        assert_eq!(header(&cors, "access-control-allow-origin"), Some("*"));
    }

    #[test]
    fn other_methods_and_content_types_are_not_found() {
        let not_found = |a: LocalAnswer| {
            assert_eq!(a.status, 404);
            assert_eq!(a.body, "<UnknownOperationException/>\n");
            assert_eq!(header(&a, "x-amz-crc32"), Some("3552371480"));
            assert_eq!(header(&a, "content-type"), None);
            assert_eq!(header(&a, "x-amzn-requestid").unwrap().len(), 52);
        };
        for method in [
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::HEAD,
            Method::PATCH,
        ] {
            not_found(Req::bare(method).answer());
        }
        // OPTIONS is a preflight only with Origin.
        let mut options = Req::new();
        options.method = Method::OPTIONS;
        not_found(options.answer());
        not_found(Req::bare(Method::POST).body(b"hi").answer());
        not_found(Req::new().header("content-type", "whatever").answer());
        not_found(
            Req::new()
                .header("content-type", "Application/JSON")
                .answer(),
        );
        not_found(Req::new().without("content-type").answer());
        // Without a body, the content type does not matter.
        let empty = Req::new().without("content-type").body(b"").answer();
        assert_coral(&empty, SERIALIZATION, JSON);
    }

    #[test]
    fn cors_preflight_allows_what_is_asked() {
        let a = Req::bare(Method::OPTIONS)
            .header("origin", "https://app.example")
            .header("access-control-request-headers", "a, b, c")
            .header("access-control-request-method", "POST")
            .answer();
        assert_eq!(a.status, 200);
        assert!(a.body.is_empty());
        assert_eq!(header(&a, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&a, "access-control-allow-headers"), Some("a, b, c"));
        assert_eq!(header(&a, "access-control-allow-methods"), Some("POST"));
        assert_eq!(header(&a, "access-control-max-age"), Some("172800"));
        assert_eq!(header(&a, "x-amz-crc32"), None);
        let plain = Req::bare(Method::OPTIONS).header("origin", "x").answer();
        assert_eq!(header(&plain, "access-control-allow-headers"), None);
        assert_eq!(header(&plain, "access-control-allow-methods"), None);
    }

    #[test]
    fn cors_is_flagged_on_admitted_requests_and_errors() {
        let admitted = Req::new().header("origin", "https://app").admission();
        assert!(admitted.cors);
        let mut headers = HeaderMap::new();
        admitted.decorate(&mut headers);
        assert_eq!(headers["access-control-allow-origin"], "*");
        assert!(!Req::new().admission().cors);
        let e = Req::new()
            .without("x-amz-target")
            .header("origin", "x")
            .answer();
        assert_eq!(header(&e, "access-control-allow-origin"), Some("*"));
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_serialization_errors() {
        assert_coral(&Req::new().body(b"hi").answer(), SERIALIZATION, AMZ_JSON);
        assert_coral(
            &Req::new()
                .header("content-type", "application/json; charset=utf-8")
                .body(b"{")
                .answer(),
            SERIALIZATION,
            JSON,
        );
        for body in [&b"null"[..], b"1", b"\"x\"", b"true", b"", b" "] {
            assert_coral(&Req::new().body(body).answer(), SERIALIZATION, AMZ_JSON);
        }
        assert_coral(
            &Req::new().body(b" [1]").answer(),
            r#"{"__type":"com.amazon.coral.service#SerializationException","Message":"Start of list found where not expected"}"#,
            AMZ_JSON,
        );
        assert_eq!(
            Req::new().body(b" {\"a\":[1]} ").admission().content_type,
            AMZ_JSON
        );
    }

    #[test]
    fn invalid_json_is_refused_before_the_target_but_null_after_it() {
        let no_target = Req::new().without("x-amz-target");
        assert_coral(&no_target.body(b"{").answer(), SERIALIZATION, AMZ_JSON);
        let no_target = Req::new().without("x-amz-target");
        assert_coral(&no_target.body(b"null").answer(), UNKNOWN_OP, AMZ_JSON);
        let unsigned = Req::new().without("authorization");
        assert_coral(&unsigned.body(b"").answer(), MISSING, AMZ_JSON);
    }

    #[test]
    fn a_get_items_body_is_proven_when_read_unless_another_error_comes_first() {
        let get = |body: &[u8]| Req::post("DynamoDB_20120810.GetItem", "").body(body);
        let Verdict::Admit(admitted) = get(b"{").examine() else {
            panic!("a signed GetItem is admitted before its body is proven");
        };
        assert!(!admitted.json_proven);
        // Proving it answers what the door would have answered.
        assert_coral(
            &prove_json(b"{", &admitted).unwrap(),
            SERIALIZATION,
            AMZ_JSON,
        );
        let list = r#"{"__type":"com.amazon.coral.service#SerializationException","Message":"Start of list found where not expected"}"#;
        assert_coral(&prove_json(b" [1]", &admitted).unwrap(), list, AMZ_JSON);
        assert_coral(
            &prove_json(b"null", &admitted).unwrap(),
            SERIALIZATION,
            AMZ_JSON,
        );
        assert!(prove_json(b" {}", &admitted).is_none());
        // A body that is not JSON still comes before the signature's errors...
        let unsigned = get(b"{").without("authorization");
        assert_coral(&unsigned.answer(), SERIALIZATION, AMZ_JSON);
        // ...and after them when it is JSON.
        assert_coral(
            &get(b"[]").without("authorization").answer(),
            MISSING,
            AMZ_JSON,
        );
        // Every other operation's body is proven at the door.
        assert!(Req::new().admission().json_proven);
        assert!(matches!(
            Req::post("DynamoDB_20120810.PutItem", "[]").examine(),
            Verdict::Answer(_)
        ));
    }

    #[test]
    fn targets_known_unknown_and_malformed() {
        let target = |t: &str| Req::post(t, "{}").examine();
        let admitted = |t: &str| match target(t) {
            Verdict::Admit(a) => Some(a.op),
            Verdict::Answer(a) => {
                assert_coral(&a, UNKNOWN_OP, AMZ_JSON);
                None
            }
        };
        assert_eq!(
            admitted("DynamoDB_20120810.GetItem"),
            Some(Operation::GetItem)
        );
        assert_eq!(
            admitted("DynamoDBStreams_20120810.GetRecords"),
            Some(Operation::GetRecords)
        );
        assert_eq!(
            admitted("DynamoDB_20120810.FlyToTheMoon"),
            Some(Operation::Unknown)
        );
        assert_eq!(
            admitted("DynamoDB_20111205.GetItem"),
            Some(Operation::Unknown)
        );
        // A Streams operation under the table prefix is not the Streams operation.
        assert_eq!(
            admitted("DynamoDB_20120810.GetRecords"),
            Some(Operation::Unknown)
        );
        assert_eq!(
            admitted("DynamoDBStreams_20120810.PutItem"),
            Some(Operation::UnknownStreams)
        );
        for bad in [
            "whatever",
            "DynamoDB_20120810",
            "DynamoDB_20120810.",
            "DynamoDB_20120810.Get.Item",
            "DynamoDB_20120810.getItem",
            "DynamoDB_20120810.Get-Item",
            "DynamoDB_20990101.GetItem",
            ".GetItem",
            "Kinesis_20131202.PutRecord",
        ] {
            assert_eq!(admitted(bad), None, "{bad}");
        }
        assert_coral(
            &Req::new().without("x-amz-target").answer(),
            UNKNOWN_OP,
            AMZ_JSON,
        );
    }

    #[test]
    fn authentication_shape_is_checked_as_dynamodb_does() {
        assert_coral(
            &Req::new().without("authorization").answer(),
            MISSING,
            AMZ_JSON,
        );
        assert_coral(
            &Req::new().header("authorization", "AWS4").answer(),
            MISSING,
            AMZ_JSON,
        );
        assert_coral(
            &Req::new().header("authorization", "Basic abc").answer(),
            MISSING,
            AMZ_JSON,
        );
        assert_coral(
            &Req::new().header("authorization", "").answer(),
            MISSING,
            AMZ_JSON,
        );
        let incomplete = Req::new()
            .header("authorization", "AWS4-")
            .without("x-amz-date")
            .answer();
        let body = r#"{"__type":"com.amazon.coral.service#IncompleteSignatureException","message":"Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization=AWS4-"}"#;
        assert_coral(&incomplete, body, AMZ_JSON);
        assert_eq!(crc32fast::hash(body.as_bytes()), 1828866742);
        let no_sig = Req::new()
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=host, Signature=",
            )
            .answer();
        assert_coral(
            &no_sig,
            r#"{"__type":"com.amazon.coral.service#IncompleteSignatureException","message":"Authorization header requires 'Signature' parameter. Authorization=AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=host, Signature="}"#,
            AMZ_JSON,
        );
        // A Date header does instead of X-Amz-Date.
        let dated = Req::new()
            .without("x-amz-date")
            .header("date", "Wed, 01 Jan 2020 00:00:00 GMT");
        assert!(matches!(dated.examine(), Verdict::Admit(_)));
        let both = Req::new()
            .path("/?X-Amz-Algorithm=AWS4-HMAC-SHA256")
            .answer();
        assert_coral(
            &both,
            r#"{"__type":"com.amazon.coral.service#InvalidSignatureException","message":"Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header."}"#,
            AMZ_JSON,
        );
    }

    #[test]
    fn query_string_signatures_are_admitted_with_their_region() {
        let full = "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20200101%2Fap-south-2%2Fdynamodb%2Faws4_request&X-Amz-Date=20200101T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature=abc";
        let a = Req::new().without("authorization").path(full).admission();
        assert!(a.query_signed);
        assert_eq!(a.region, Region::parse("ap-south-2"));
        let partial = Req::new()
            .without("authorization")
            .path("/?X-Amz-Algorithm=&X-Amz-Signature=x&X-Amz-Date=d&X-Amz-Date=")
            .answer();
        assert_coral(
            &partial,
            r#"{"__type":"com.amazon.coral.service#IncompleteSignatureException","message":"AWS query-string parameters must include 'X-Amz-Algorithm'. AWS query-string parameters must include 'X-Amz-Credential'. AWS query-string parameters must include 'X-Amz-SignedHeaders'. Re-examine the query-string parameters."}"#,
            AMZ_JSON,
        );
        assert!(!Req::new().admission().query_signed);
    }

    #[test]
    fn region_comes_from_the_credential_scope_and_only_if_valid() {
        let region = |auth: &str| {
            Req::new()
                .header("authorization", auth)
                .admission()
                .region
                .map(|r| r.to_string())
        };
        let with = |cred: &str| {
            format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host, Signature=x")
        };
        assert_eq!(region(SIGNED).as_deref(), Some("eu-west-1"));
        assert_eq!(
            region(&with("AKID/20200101/us-west-2/dynamodb/aws4_request/")).as_deref(),
            Some("us-west-2")
        );
        assert_eq!(region("AWS4-HMAC-SHA256,Credential=AKID/20200101/eu-north-1/dynamodb/aws4_request,SignedHeaders=host,Signature=x").as_deref(), Some("eu-north-1"));
        for bad in [
            "AKID/20200101/evil.com/dynamodb/aws4_request",
            "AKID/20200101/us-east-1@evil/dynamodb/aws4_request",
            "AKID/20200101/US-EAST-1/dynamodb/aws4_request",
            "AKID/20200101//dynamodb/aws4_request",
            "AKID/20200101/us-east-1/dynamodb",
            "AKID/20200101/us-east-1/dynamodb/aws4_request/extra",
            "AKID/20200101/a%2Fb/dynamodb/aws4_request",
        ] {
            assert_eq!(region(&with(bad)), None, "{bad}");
        }
        let query = |cred: &str| {
            Req::new()
                .without("authorization")
                .path(&format!("/?X-Amz-Algorithm=A&X-Amz-Credential={cred}&X-Amz-Signature=s&X-Amz-SignedHeaders=host&X-Amz-Date=d"))
                .admission()
                .region
        };
        assert_eq!(
            query("AKID/20200101/sa-east-1/dynamodb/aws4_request"),
            Region::parse("sa-east-1")
        );
        assert_eq!(
            query("AKID%2F20200101%2Fhost%3A1%2Fdynamodb%2Faws4_request"),
            None
        );
        assert_eq!(
            query("AKID%2F20200101%2Fa.b%2Fdynamodb%2Faws4_request"),
            None
        );
    }

    #[test]
    fn query_auth_is_stripped_for_re_signing() {
        assert_eq!(without_query_auth("/"), "/");
        assert_eq!(without_query_auth("/?a=1&b=2"), "/?a=1&b=2");
        assert_eq!(
            without_query_auth("/?X-Amz-Algorithm=A&X-Amz-Credential=c%2Fd&keep=1&X-Amz-Date=d&X-Amz-Expires=5&X-Amz-SignedHeaders=host&X-Amz-Signature=s&X-Amz-Security-Token=t&X%2DAmz%2DSignature=s2&other"),
            "/?keep=1&other"
        );
        assert_eq!(without_query_auth("/p?X-Amz-Signature=s"), "/p");
    }

    #[test]
    fn percent_decoding_follows_querystring() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41%42"), "AB");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn repeated_headers_are_joined_as_node_joins_them() {
        let mut r = Req::bare(Method::OPTIONS).header("origin", "x");
        r.headers.append(
            "access-control-request-headers",
            HeaderValue::from_static("a"),
        );
        r.headers.append(
            "access-control-request-headers",
            HeaderValue::from_static("b"),
        );
        assert_eq!(
            header(&r.answer(), "access-control-allow-headers"),
            Some("a, b")
        );
        let mut t = Req::new();
        t.headers.append(
            "x-amz-target",
            HeaderValue::from_static("DynamoDB_20120810.Query"),
        );
        assert_coral(&t.answer(), UNKNOWN_OP, AMZ_JSON);
    }

    #[test]
    fn non_ascii_header_bytes_do_not_break_messages() {
        let mut r = Req::new();
        r.headers.insert(
            "authorization",
            HeaderValue::from_bytes(b"AWS4-\xe9 \"x\"").unwrap(),
        );
        let a = r.answer();
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert!(v["message"]
            .as_str()
            .unwrap()
            .ends_with("Authorization=AWS4-\u{e9} \"x\""));
    }

    #[test]
    fn latin1_bytes_trim_as_their_text_does() {
        // NBSP and NEL are whitespace as Latin-1 chars; 0xE9 (é) is not.
        assert_eq!(trim_latin1(b"\xa0 \tAWS4-x\x85 "), b"AWS4-x");
        assert_eq!(trim_latin1(b"\xe9x\xe9"), b"\xe9x\xe9");
        assert_eq!(trim_latin1(b" \xa0 "), b"");
        let text: String = b"\xa0 AWS4-x".iter().map(|&b| char::from(b)).collect();
        assert_eq!(text.trim(), "AWS4-x");
    }

    proptest! {
        #[test]
        fn random_requests_never_panic(
            method in prop::sample::select(vec![Method::GET, Method::POST, Method::OPTIONS, Method::PUT]),
            path in "/[ -~]{0,40}",
            target in "[ -~]{0,40}",
            auth in "[ -~]{0,80}",
            origin in prop::option::of("[a-z]{0,5}"),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut r = Req::new().path(&path);
            r.method = method;
            r.body = body;
            if let Ok(v) = HeaderValue::from_str(&target) {
                r.headers.insert("x-amz-target", v);
            }
            if let Ok(v) = HeaderValue::from_str(&auth) {
                r.headers.insert("authorization", v);
            }
            if let Some(o) = origin {
                r.headers.insert("origin", HeaderValue::from_str(&o).unwrap());
            }
            match r.examine() {
                Verdict::Answer(a) => prop_assert!(a.headers.contains_key("x-amzn-requestid")),
                Verdict::Admit(a) => prop_assert!(a.region.is_none_or(|r| Region::parse(r.as_str()).is_some())),
            }
            let _ = without_query_auth(&path);
        }

        /// The byte scan reads an `Authorization` header exactly as splitting it at commas and
        /// spaces does (the plain statement of DynamoDB's rule).
        #[test]
        fn auth_params_read_as_split_reads_them(
            auth in r"[ \t]?(AWS4-X)?([ ,\t]{0,2}(Credential|Signature|SignedHeaders|\u{e9}|x)(=[a-z=]{0,3})?){0,8}[ ,]?",
        ) {
            // The header's bytes are the text's Latin-1 encoding (every char here is below 256).
            let latin1 = |s: &str| s.chars().map(|c| u8::try_from(c).unwrap()).collect::<Vec<u8>>();
            let mut expected: [Option<Vec<u8>>; 3] = [None, None, None];
            for token in auth.split([',', ' ']).skip(1).filter(|t| !t.is_empty()) {
                let mut kv = token.trim().split('=');
                let key = kv.next().unwrap_or("");
                if let Some(i) = HEADER_REQUIRED.iter().position(|k| *k == key) {
                    expected[i] = kv.next().map(latin1);
                }
            }
            let bytes = latin1(&auth);
            let read = AuthParams::parse(&bytes).values.map(|v| v.map(<[u8]>::to_vec));
            prop_assert_eq!(read, expected);
        }

        #[test]
        fn json_bodies_of_every_shape_get_an_answer_or_an_object(body in "[\\[\\]{}\" a-z0-9:,.nul\\\\]{0,30}") {
            if let Verdict::Admit(_) = Req::new().body(body.as_bytes()).examine() {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                prop_assert!(v.is_object());
            }
        }
    }
}
