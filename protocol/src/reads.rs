//! Read requests, parsed just enough to key the caches: GetItem and BatchGetItem down to table,
//! canonical primary key and canonical projection; Query and Scan down to their whole canonical
//! request. Bodies are forwarded as the client sent them; nothing here re-serializes a hit.
//!
//! Read requests are parsed strictly: a field ddbcache does not know might change the answer, and
//! a field of the wrong type is the engine's to reject in its own words, so such a read is
//! forwarded uncached ([`ReadParse::Uncacheable`]). Only a body that is not a JSON object at all is
//! an error here.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use arrayvec::ArrayVec;
use serde::Deserialize;
use serde_json::Value;

use base64::Engine as _;

use super::canonical::{
    encode_key, encode_projection, encode_sorted_key_inline, normalize_numbers_in, InlineKey,
    KeyAttr,
};
use super::error::ProtocolError;
use super::swar;
use super::table::KeySchema;
use super::validate::{self, NotProven};
use super::Operation;

/// How a read request came out of parsing.
#[derive(Debug)]
pub enum ReadParse<T> {
    Cacheable(T),
    /// A JSON object, but carrying something ddbcache does not key on (an unknown field, a
    /// field of the wrong type, a value that is not a key): forward without caching.
    Uncacheable,
}

/// `ReturnConsumedCapacity`, when it has one of the values DynamoDB accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Capacity {
    #[default]
    None,
    Total,
    Indexes,
}

impl Capacity {
    fn parse(value: Option<&str>) -> Option<Capacity> {
        match value {
            None | Some("NONE") => Some(Capacity::None),
            Some("TOTAL") => Some(Capacity::Total),
            Some("INDEXES") => Some(Capacity::Indexes),
            Some(_) => None,
        }
    }
}

/// Parses strictly; anything serde refuses in a JSON object is uncacheable.
fn parse_strict<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<ReadParse<T>, ProtocolError> {
    match serde_json::from_slice::<T>(body) {
        Ok(v) => Ok(ReadParse::Cacheable(v)),
        Err(e) => {
            require_object(body)?;
            // An unknown parameter, or one of the wrong type: the upstream answers it.
            let _ = e;
            Ok(ReadParse::Uncacheable)
        }
    }
}

pub fn serialization_error(e: &serde_json::Error) -> ProtocolError {
    ProtocolError::Serialization(format!("request body could not be parsed: {e}"))
}

/// Checks that a body is a JSON object (what every DynamoDB operation takes).
pub fn require_object(body: &[u8]) -> Result<(), ProtocolError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map_err(|e| serialization_error(&e))
        .and_then(|_| match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Ok(()),
            _ => Err(ProtocolError::Serialization(
                "request body must be a JSON object".into(),
            )),
        })
}

/// A cacheable read, parsed down to what keys the caches.
#[derive(Debug)]
pub enum Read<'a> {
    GetItem(GetItemRead<'a>),
    BatchGetItem(BatchGetRead),
    /// A Query or a Scan.
    Query(QueryRead),
}

/// A cacheable read as parsing and validation left it: what the cache policy is asked about.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// Keyed, and proven to be a request DynamoDB accepts.
    Proven(Read<'a>),
    /// Keyed, but not proven valid: a hit must never answer a request DynamoDB would reject.
    NotProven(NotProven),
    /// Something ddbcache does not key on ([`ReadParse::Uncacheable`]).
    NotUnderstood,
}

/// The one way a cacheable read (GetItem, BatchGetItem, Query, Scan) is parsed and proven: the
/// usual GetItem in one pass ([`get_item_fast`]), everything else by its strict parser and the
/// validator. Only a body that is not a JSON object is an error; for a GetItem the caller proves
/// that first, as the front door would have.
pub fn parse_read(op: Operation, body: &[u8]) -> Result<Parsed<'_>, ProtocolError> {
    if op == Operation::GetItem {
        if let Some(read) = get_item_fast(body) {
            return Ok(Parsed::Proven(Read::GetItem(read)));
        }
    }
    let read = match op {
        Operation::GetItem => parse_get_item(body)?.map(Read::GetItem),
        Operation::BatchGetItem => parse_batch_get_item(body)?.map(Read::BatchGetItem),
        Operation::Query => parse_query(body, false)?.map(Read::Query),
        Operation::Scan => parse_query(body, true)?.map(Read::Query),
        _ => ReadParse::Uncacheable,
    };
    Ok(match read {
        ReadParse::Cacheable(read) => match validate::cacheable_read(op, body) {
            Ok(()) => Parsed::Proven(read),
            Err(why) => Parsed::NotProven(why),
        },
        ReadParse::Uncacheable => Parsed::NotUnderstood,
    })
}

impl<T> ReadParse<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> ReadParse<U> {
        match self {
            ReadParse::Cacheable(t) => ReadParse::Cacheable(f(t)),
            ReadParse::Uncacheable => ReadParse::Uncacheable,
        }
    }
}

/// The same request, asking for a strongly consistent read (`ConsistentRead: true`), for a miss
/// that must not read a replica which may lack a recent write. `None` if it cannot be rewritten.
pub fn with_consistent_read(body: &[u8]) -> Option<Vec<u8>> {
    let mut v: serde_json::Map<String, Value> = serde_json::from_slice(body).ok()?;
    v.insert("ConsistentRead".into(), Value::Bool(true));
    serde_json::to_vec(&v).ok()
}

// ---------------------------------------------------------------------------------------------
// GetItem

// The hit path: strings are borrowed from the body (a `Cow` only copies when JSON escapes must be
// undone), so reading a GetItem down to its cache key allocates little beyond the key itself.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetItemInput<'a> {
    #[serde(rename = "TableName", borrow)]
    table_name: Cow<'a, str>,
    #[serde(rename = "Key", borrow)]
    key: BTreeMap<Cow<'a, str>, KeyAttr<'a>>,
    #[serde(rename = "ProjectionExpression", borrow)]
    projection_expression: Option<Cow<'a, str>>,
    #[serde(rename = "ExpressionAttributeNames")]
    expression_attribute_names: Option<HashMap<String, String>>,
    #[serde(rename = "AttributesToGet")]
    attributes_to_get: Option<Vec<String>>,
    #[serde(rename = "ConsistentRead")]
    consistent_read: Option<bool>,
    #[serde(rename = "ReturnConsumedCapacity", borrow)]
    return_consumed_capacity: Option<Cow<'a, str>>,
}

/// A key's attribute names, held inline: a primary key has one or two.
pub type KeyNames<'a> = ArrayVec<Cow<'a, str>, 2>;

/// A GetItem, reduced to what keys the item cache; names borrow from the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetItemRead<'a> {
    /// `TableName` as the client sent it (a name or an ARN).
    pub table: Cow<'a, str>,
    /// The key's attribute names, sorted: what the table's key schema must be.
    pub key_names: KeyNames<'a>,
    /// Canonical primary key.
    pub key: InlineKey,
    /// Canonical projection (empty: whole item).
    pub projection: Vec<u8>,
    pub consistent_read: bool,
    pub capacity: Capacity,
}

pub fn parse_get_item(body: &[u8]) -> Result<ReadParse<GetItemRead<'_>>, ProtocolError> {
    let input: GetItemInput = match parse_strict(body)? {
        ReadParse::Cacheable(i) => i,
        ReadParse::Uncacheable => return Ok(ReadParse::Uncacheable),
    };
    // More than two attributes are never a table's key: DynamoDB says what is wrong with it.
    if input.key.len() > 2 {
        return Ok(ReadParse::Uncacheable);
    }
    let Some(key) = encode_key(input.key.iter().map(|(k, v)| (k.as_ref(), v))) else {
        return Ok(ReadParse::Uncacheable);
    };
    let Some(projection) = encode_projection(
        input.projection_expression.as_deref(),
        input.expression_attribute_names.as_ref(),
        input.attributes_to_get.as_deref(),
    ) else {
        return Ok(ReadParse::Uncacheable);
    };
    let Some(capacity) = Capacity::parse(input.return_consumed_capacity.as_deref()) else {
        return Ok(ReadParse::Uncacheable);
    };
    Ok(ReadParse::Cacheable(GetItemRead {
        table: input.table_name,
        key_names: input.key.into_keys().collect(),
        key: InlineKey::from_vec(key),
        projection,
        consistent_read: input.consistent_read.unwrap_or(false),
        capacity,
    }))
}

/// The usual GetItem — `TableName`, `Key` (one or two attributes of type S, N or B), optionally
/// `ConsistentRead` and `ReturnConsumedCapacity`, strings without escapes — read and proven valid
/// in one pass, without building a document. It accepts only what [`parse_get_item`] reads to
/// the same [`GetItemRead`] *and* the validator proves valid (a property test holds it to that);
/// `None` for anything else, which then takes the full path.
pub fn get_item_fast(body: &[u8]) -> Option<GetItemRead<'_>> {
    // The body is proven UTF-8 once; every string then ends at an ASCII quote, a char boundary.
    let text = std::str::from_utf8(body).ok()?;
    let mut scan = Scan { text, at: 0 };
    let (mut table, mut key, mut consistent, mut capacity) = (None, None, None, None);
    scan.object(|name, scan| match name {
        "TableName" => once(&mut table, scan.string()?),
        "Key" => once(&mut key, fast_key(scan)?),
        "ConsistentRead" => once(&mut consistent, scan.boolean()?),
        "ReturnConsumedCapacity" => once(&mut capacity, Capacity::parse(Some(scan.string()?))?),
        _ => None,
    })?;
    if !scan.at_end() {
        return None;
    }
    let table = table?;
    validate::check_table_name(table).ok()?;
    let (key_names, key) = key?;
    Some(GetItemRead {
        table: Cow::Borrowed(table),
        key_names,
        key,
        projection: Vec::new(),
        consistent_read: consistent.unwrap_or(false),
        capacity: capacity.unwrap_or_default(),
    })
}

fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

/// A `Key` of one or two valid S, N or B attributes: its sorted names and canonical bytes.
fn fast_key<'a>(scan: &mut Scan<'a>) -> Option<(KeyNames<'a>, InlineKey)> {
    let mut attrs: ArrayVec<(&'a str, KeyAttr<'a>), 2> = ArrayVec::new();
    scan.object(|name, scan| {
        // Two short names at most: compared in place, not by a call to `memcmp`.
        let same =
            |n: &str| n.len() == name.len() && n.bytes().zip(name.bytes()).all(|(a, b)| a == b);
        if name.is_empty() || attrs.len() == 2 || attrs.iter().any(|(n, _)| same(n)) {
            return None;
        }
        let mut typed = None;
        scan.object(|tag, scan| once(&mut typed, (tag, scan.string()?)))?;
        let (tag, text) = typed?;
        let valid = match tag {
            "S" => !text.is_empty(),
            "N" => validate::check_number(text).is_ok(),
            "B" => base64::engine::general_purpose::STANDARD
                .decode(text)
                .is_ok_and(|b| !b.is_empty()),
            _ => false,
        };
        if !valid {
            return None;
        }
        attrs.push((name, KeyAttr::new(tag, text)?));
        Some(())
    })?;
    if attrs.len() == 2 && attrs[0].0 > attrs[1].0 {
        attrs.swap(0, 1);
    }
    let key = encode_sorted_key_inline(&attrs)?;
    let mut names = KeyNames::new();
    for (name, _) in &attrs {
        names.push(Cow::Borrowed(*name));
    }
    Some((names, key))
}

/// The bytes a fast-path string stops at: its closing quote, and what sends the body to the full
/// path (an escape, a control character).
static STRING_STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        stops[b] = true;
        b += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
};

/// Where the first of [`STRING_STOPS`] is in `rest`: a quote, a backslash or a control byte,
/// eight bytes at a time (a request's strings are short).
fn string_stop(rest: &[u8]) -> Option<usize> {
    let flags = |w| swar::equal(w, b'"') | swar::equal(w, b'\\') | swar::below(w, 0x20);
    swar::find(rest, flags, |b| STRING_STOPS[usize::from(b)])
}

/// A cursor over JSON that understands only what the fast path accepts.
struct Scan<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scan<'a> {
    fn skip_whitespace(&mut self) {
        while matches!(
            self.text.as_bytes().get(self.at),
            Some(b' ' | b'\t' | b'\n' | b'\r')
        ) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.text.as_bytes().get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// A string without escapes or control characters (anything else: `None`).
    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let rest = self.text.as_bytes().get(start..)?;
        let len = string_stop(rest)?;
        if rest[len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        self.text.get(start..start + len)
    }

    fn boolean(&mut self) -> Option<bool> {
        self.skip_whitespace();
        let rest = &self.text.as_bytes()[self.at..];
        let (value, len) = if rest.starts_with(b"true") {
            (true, 4)
        } else if rest.starts_with(b"false") {
            (false, 5)
        } else {
            return None;
        };
        self.at += len;
        Some(value)
    }

    /// An object whose members `member` reads, each value in full.
    fn object(&mut self, mut member: impl FnMut(&'a str, &mut Self) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let name = self.string()?;
            self.expect(b':')?;
            member(name, self)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// BatchGetItem

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchGetItemInput<'a> {
    #[serde(rename = "RequestItems", borrow)]
    request_items: BTreeMap<String, KeysAndAttributes<'a>>,
    #[serde(rename = "ReturnConsumedCapacity")]
    return_consumed_capacity: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysAndAttributes<'a> {
    #[serde(rename = "Keys", borrow)]
    keys: Vec<BTreeMap<String, KeyAttr<'a>>>,
    #[serde(rename = "ProjectionExpression")]
    projection_expression: Option<String>,
    #[serde(rename = "ExpressionAttributeNames")]
    expression_attribute_names: Option<HashMap<String, String>>,
    #[serde(rename = "AttributesToGet")]
    attributes_to_get: Option<Vec<String>>,
    #[serde(rename = "ConsistentRead")]
    consistent_read: Option<bool>,
}

/// One table's part of a BatchGetItem.
#[derive(Debug, Clone)]
pub struct BatchTable {
    /// `TableName` as the client wrote it (the response is keyed by it).
    pub request_name: String,
    /// The key's attribute names, sorted (every key of one table must have the same).
    pub key_names: Vec<String>,
    /// Canonical keys, in request order.
    pub keys: Vec<Vec<u8>>,
    pub projection: Vec<u8>,
    pub consistent_read: bool,
}

#[derive(Debug, Clone)]
pub struct BatchGetRead {
    pub tables: Vec<BatchTable>,
    pub capacity: Capacity,
}

pub fn parse_batch_get_item(body: &[u8]) -> Result<ReadParse<BatchGetRead>, ProtocolError> {
    let input: BatchGetItemInput = match parse_strict(body)? {
        ReadParse::Cacheable(i) => i,
        ReadParse::Uncacheable => return Ok(ReadParse::Uncacheable),
    };
    let Some(capacity) = Capacity::parse(input.return_consumed_capacity.as_deref()) else {
        return Ok(ReadParse::Uncacheable);
    };
    let mut tables = Vec::with_capacity(input.request_items.len());
    for (name, ka) in input.request_items {
        let mut keys = Vec::with_capacity(ka.keys.len());
        let mut key_names: Option<Vec<String>> = None;
        for key in &ka.keys {
            let names: Vec<String> = key.keys().cloned().collect();
            if key_names.get_or_insert_with(|| names.clone()) != &names {
                return Ok(ReadParse::Uncacheable);
            }
            match encode_key(key.iter().map(|(k, v)| (k.as_str(), v))) {
                Some(k) => keys.push(k),
                None => return Ok(ReadParse::Uncacheable),
            }
        }
        let Some(projection) = encode_projection(
            ka.projection_expression.as_deref(),
            ka.expression_attribute_names.as_ref(),
            ka.attributes_to_get.as_deref(),
        ) else {
            return Ok(ReadParse::Uncacheable);
        };
        tables.push(BatchTable {
            request_name: name,
            key_names: key_names.unwrap_or_default(),
            keys,
            projection,
            consistent_read: ka.consistent_read.unwrap_or(false),
        });
    }
    Ok(ReadParse::Cacheable(BatchGetRead { tables, capacity }))
}

/// Rewrites a BatchGetItem body to ask only for the keys `keep(table_index, key_index)` selects,
/// with `ConsistentRead: true` for the tables `consistent(table_index)` selects. Tables left with
/// no keys are dropped. Everything else in the request is kept as it was.
pub fn batch_get_subset(
    body: &[u8],
    read: &BatchGetRead,
    keep: impl Fn(usize, usize) -> bool,
    consistent: impl Fn(usize) -> bool,
) -> Result<Vec<u8>, ProtocolError> {
    let mut v: Value = serde_json::from_slice(body).map_err(|e| serialization_error(&e))?;
    let items = v
        .get_mut("RequestItems")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ProtocolError::Serialization("RequestItems must be a map".into()))?;
    for (ti, t) in read.tables.iter().enumerate() {
        let Some(entry) = items.get_mut(&t.request_name) else {
            continue;
        };
        if consistent(ti) {
            if let Some(e) = entry.as_object_mut() {
                e.insert("ConsistentRead".into(), Value::Bool(true));
            }
        }
        if let Some(keys) = entry.get_mut("Keys").and_then(Value::as_array_mut) {
            let mut i = 0;
            keys.retain(|_| {
                let kept = keep(ti, i);
                i += 1;
                kept
            });
            if keys.is_empty() {
                items.remove(&t.request_name);
            }
        }
    }
    serde_json::to_vec(&v).map_err(|e| ProtocolError::Internal(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Query and Scan

/// A Query or Scan, reduced to what keys the query cache.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRead {
    /// `TableName` as the client sent it (a name or an ARN).
    pub table: String,
    /// The whole request in canonical form: every field that changes the answer.
    pub key: Vec<u8>,
    pub consistent_read: bool,
    pub capacity: Capacity,
    /// `IndexName`, when the read is on an index.
    pub index: Option<String>,
    /// What names the partition a Query reads (nothing for a Scan).
    partition: PartitionCondition,
}

/// The members of a Query that say which partition it reads.
#[derive(Debug, Clone, PartialEq, Default)]
struct PartitionCondition {
    key_condition_expression: Option<String>,
    key_conditions: Option<Value>,
    names: Option<Value>,
    values: Option<Value>,
}

impl QueryRead {
    /// The canonical partition key this Query reads, given the table's key schema: the value the
    /// partition key attribute is compared equal to, in `KeyConditionExpression` or in the legacy
    /// `KeyConditions`. `None` when it cannot be told for sure (the entry then depends on every
    /// write to the table).
    pub fn partition(&self, schema: &KeySchema) -> Option<Vec<u8>> {
        let c = &self.partition;
        let value = match (&c.key_condition_expression, &c.key_conditions) {
            (Some(expr), None) => {
                let placeholder = equality_placeholder(expr, &schema.hash, c.names.as_ref())?;
                c.values.as_ref()?.get(placeholder)?.clone()
            }
            (None, Some(Value::Object(conditions))) => {
                let cond = conditions.get(&schema.hash)?;
                if cond.get("ComparisonOperator")?.as_str()? != "EQ" {
                    return None;
                }
                match cond.get("AttributeValueList")?.as_array()?.as_slice() {
                    [v] => v.clone(),
                    _ => return None,
                }
            }
            _ => return None,
        };
        let text = value.to_string();
        let attr: KeyAttr = serde_json::from_str(&text).ok()?;
        schema.partition_of(&attr)
    }
}

/// The placeholder (`:v`) a KeyConditionExpression compares the attribute `name` equal to, if it
/// does so exactly once (a valid expression compares the partition key exactly once, with `=`).
fn equality_placeholder<'e>(expr: &'e str, name: &str, names: Option<&Value>) -> Option<&'e str> {
    let tokens = key_condition_tokens(expr)?;
    let is_attr = |t: &str| {
        if t.starts_with('#') {
            names.and_then(|n| n.get(t)).and_then(Value::as_str) == Some(name)
        } else {
            t == name
        }
    };
    let mut found = None;
    for w in tokens.windows(3) {
        let placeholder = match (w[0], w[1], w[2]) {
            (a, "=", v) if is_attr(a) && v.starts_with(':') => v,
            (v, "=", a) if is_attr(a) && v.starts_with(':') => v,
            _ => continue,
        };
        if found.replace(placeholder).is_some() {
            return None;
        }
    }
    found
}

/// Splits a KeyConditionExpression into names, placeholders, operators and punctuation.
fn key_condition_tokens(expr: &str) -> Option<Vec<&str>> {
    let mut tokens = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' || c == b':' || c.is_ascii_alphanumeric() || c == b'_' {
            i += 1;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
            {
                i += 1;
            }
        } else if matches!(c, b'<' | b'>') {
            i += 1;
            if i < bytes.len() && matches!(bytes[i], b'=' | b'>') {
                i += 1;
            }
        } else if matches!(c, b'=' | b'(' | b')' | b',') {
            i += 1;
        } else {
            // Not something a KeyConditionExpression holds: do not guess.
            return None;
        }
        tokens.push(&expr[start..i]);
    }
    Some(tokens)
}

/// `is_scan` separates Query and Scan entries that would otherwise share a canonical body.
pub fn parse_query(body: &[u8], is_scan: bool) -> Result<ReadParse<QueryRead>, ProtocolError> {
    require_object(body)?;
    let Ok(mut v) = serde_json::from_slice::<serde_json::Map<String, Value>>(body) else {
        return Ok(ReadParse::Uncacheable);
    };
    let Some(Value::String(table)) = v.get("TableName") else {
        return Ok(ReadParse::Uncacheable);
    };
    let table = table.clone();
    let consistent_read = match v.get("ConsistentRead") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Ok(ReadParse::Uncacheable),
    };
    let capacity = match v.remove("ReturnConsumedCapacity") {
        None | Some(Value::Null) => Capacity::None,
        Some(Value::String(s)) => match Capacity::parse(Some(&s)) {
            Some(c) => c,
            None => return Ok(ReadParse::Uncacheable),
        },
        Some(_) => return Ok(ReadParse::Uncacheable),
    };
    let index = match v.get("IndexName") {
        None => None,
        Some(Value::String(i)) => Some(i.clone()),
        Some(_) => return Ok(ReadParse::Uncacheable),
    };
    let partition = if is_scan {
        PartitionCondition::default()
    } else {
        PartitionCondition {
            key_condition_expression: v
                .get("KeyConditionExpression")
                .and_then(Value::as_str)
                .map(str::to_string),
            key_conditions: v.get("KeyConditions").cloned(),
            names: v.get("ExpressionAttributeNames").cloned(),
            values: v.get("ExpressionAttributeValues").cloned(),
        }
    };
    let mut canonical = Value::Object(v);
    normalize_numbers_in(&mut canonical);
    // serde_json's map is ordered by key, so equal requests serialize to equal bytes.
    let mut key = Vec::with_capacity(body.len() + 2);
    key.push(if is_scan { b'S' } else { b'Q' });
    serde_json::to_writer(&mut key, &canonical)
        .map_err(|e| ProtocolError::Internal(e.to_string()))?;
    Ok(ReadParse::Cacheable(QueryRead {
        table,
        key,
        consistent_read,
        capacity,
        index,
        partition,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cacheable<T>(r: Result<ReadParse<T>, ProtocolError>) -> T {
        match r.unwrap() {
            ReadParse::Cacheable(t) => t,
            ReadParse::Uncacheable => panic!("expected cacheable"),
        }
    }

    #[test]
    fn get_item_keys_agree_across_spellings() {
        let a = cacheable(parse_get_item(
            br#"{"TableName":"t","Key":{"pk":{"S":"a"},"sk":{"N":"1.0"}}}"#,
        ));
        let b = cacheable(parse_get_item(
            br#"{"Key":{"sk":{"N":"1"},"pk":{"S":"a"}},"TableName":"t","ConsistentRead":false}"#,
        ));
        assert_eq!(a.key, b.key);
        assert_eq!(a.key_names.as_slice(), ["pk", "sk"]);
        assert!(!a.consistent_read);
    }

    #[test]
    fn a_get_item_key_of_more_than_two_attributes_is_not_keyed() {
        let body = br#"{"TableName":"t","Key":{"a":{"S":"1"},"b":{"S":"2"},"c":{"S":"3"}}}"#;
        assert!(matches!(parse_get_item(body), Ok(ReadParse::Uncacheable)));
        assert!(matches!(
            parse_read(Operation::GetItem, body),
            Ok(Parsed::NotUnderstood)
        ));
    }

    #[test]
    fn get_item_escapes_are_undone_before_keying() {
        // Names and values are borrowed from the body unless escaped: both must key alike.
        let plain = cacheable(parse_get_item(
            br#"{"TableName":"t1","Key":{"pk":{"S":"a/b"}}}"#,
        ));
        let escaped = cacheable(parse_get_item(
            br#"{"TableName":"t\u0031","Key":{"p\u006b":{"S":"a\/b"}}}"#,
        ));
        assert_eq!(plain, escaped);
        assert_eq!(escaped.table, "t1");
    }

    #[test]
    fn bodies_that_are_not_objects_are_serialization_errors() {
        for body in [&b"not json"[..], b"null", b"[1]", b"5"] {
            assert!(
                matches!(parse_get_item(body), Err(ProtocolError::Serialization(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(matches!(
                parse_query(body, false),
                Err(ProtocolError::Serialization(_))
            ));
        }
    }

    #[test]
    fn unknown_or_wrongly_typed_fields_go_upstream_uncached() {
        for body in [
            &br#"{"TableName":"t","Key":{"pk":{"S":"a"}},"FutureParameter":1}"#[..],
            br#"{"TableName":"t"}"#,
            br#"{"TableName":"t","Key":{"pk":{"BOOL":true}}}"#,
            br#"{"TableName":5,"Key":{}}"#,
            br#"{"TableName":"t","Key":{"pk":{"S":"a"}},"ConsistentRead":"yes"}"#,
            br#"{"TableName":"t","Key":{"pk":{"S":"a"}},"ReturnConsumedCapacity":"ALL"}"#,
        ] {
            assert!(
                matches!(parse_get_item(body), Ok(ReadParse::Uncacheable)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(matches!(
            parse_query(
                br#"{"TableName":"t","ReturnConsumedCapacity":"SOME"}"#,
                false
            ),
            Ok(ReadParse::Uncacheable)
        ));
    }

    #[test]
    fn query_partition_is_read_from_its_key_condition() {
        let schema = KeySchema {
            table_arn: None,
            hash: "pk".into(),
            range: Some("sk".into()),
            local_indexes: vec![],
            global_indexes: vec![],
        };
        let a: KeyAttr = serde_json::from_str(r#"{"S":"a"}"#).unwrap();
        let expected = schema.partition_of(&a);
        let partition = |body: &[u8]| cacheable(parse_query(body, false)).partition(&schema);
        for body in [
            &br#"{"TableName":"t","KeyConditionExpression":"pk = :v","ExpressionAttributeValues":{":v":{"S":"a"}}}"#[..],
            br##"{"TableName":"t","KeyConditionExpression":"#s BETWEEN :x AND :y AND (:v=#p)","ExpressionAttributeNames":{"#p":"pk","#s":"sk"},"ExpressionAttributeValues":{":v":{"S":"a"},":x":{"S":"1"},":y":{"S":"2"}}}"##,
            br#"{"TableName":"t","KeyConditions":{"pk":{"ComparisonOperator":"EQ","AttributeValueList":[{"S":"a"}]}}}"#,
        ] {
            assert_eq!(partition(body), expected, "{}", String::from_utf8_lossy(body));
        }
        for body in [
            // The sort key alone, a comparison other than equality, an unknown placeholder.
            &br#"{"TableName":"t","KeyConditionExpression":"sk = :v","ExpressionAttributeValues":{":v":{"S":"a"}}}"#[..],
            br#"{"TableName":"t","KeyConditionExpression":"pk > :v","ExpressionAttributeValues":{":v":{"S":"a"}}}"#,
            br#"{"TableName":"t","KeyConditionExpression":"pk = :w","ExpressionAttributeValues":{":v":{"S":"a"}}}"#,
            br#"{"TableName":"t","KeyConditionExpression":"pk = :v AND pk = :v","ExpressionAttributeValues":{":v":{"S":"a"}}}"#,
        ] {
            assert_eq!(partition(body), None, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(
            cacheable(parse_query(br#"{"TableName":"t"}"#, true)).partition(&schema),
            None
        );
    }

    #[test]
    fn consistent_read_is_added_or_turned_on() {
        for body in [
            &br#"{"TableName":"t"}"#[..],
            br#"{"TableName":"t","ConsistentRead":false}"#,
        ] {
            let v: Value = serde_json::from_slice(&with_consistent_read(body).unwrap()).unwrap();
            assert_eq!(v["ConsistentRead"], Value::Bool(true));
            assert_eq!(v["TableName"], "t");
        }
    }

    #[test]
    fn query_key_covers_every_field_but_capacity() {
        let q = |b: &[u8]| cacheable(parse_query(b, false)).key;
        let base = q(br#"{"TableName":"t","KeyConditionExpression":"pk = :v","ExpressionAttributeValues":{":v":{"N":"1"}}}"#);
        let respelled = q(br#"{"ExpressionAttributeValues":{":v":{"N":"1.0"}},"KeyConditionExpression":"pk = :v","TableName":"t","ReturnConsumedCapacity":"TOTAL"}"#);
        assert_eq!(base, respelled);
        let limited = q(br#"{"TableName":"t","KeyConditionExpression":"pk = :v","ExpressionAttributeValues":{":v":{"N":"1"}},"Limit":1}"#);
        assert_ne!(base, limited);
        let scan = cacheable(parse_query(br#"{"TableName":"t","KeyConditionExpression":"pk = :v","ExpressionAttributeValues":{":v":{"N":"1"}}}"#, true)).key;
        assert_ne!(base, scan);
    }

    #[test]
    fn batch_get_subset_keeps_only_selected_keys() {
        let body = br#"{"RequestItems":{"a":{"Keys":[{"k":{"S":"1"}},{"k":{"S":"2"}}]},"b":{"Keys":[{"k":{"S":"3"}}],"ProjectionExpression":"x"}}}"#;
        let read = cacheable(parse_batch_get_item(body));
        let sub = batch_get_subset(body, &read, |t, k| t == 0 && k == 1, |_| false).unwrap();
        let v: Value = serde_json::from_slice(&sub).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"RequestItems":{"a":{"Keys":[{"k":{"S":"2"}}]}}})
        );
    }

    #[test]
    fn the_usual_get_item_takes_the_one_pass_path() {
        for body in [
            &br#"{"TableName":"bench","Key":{"pk":{"S":"p0000000001"},"sk":{"S":"s000000"}}}"#[..],
            br#" { "Key" : { "id" : { "N" : "-1.50E+2" } } , "TableName" : "t.1-_" , "ConsistentRead" : true } "#,
            br#"{"TableName":"t01","Key":{"b":{"B":"AAE="}},"ReturnConsumedCapacity":"TOTAL"}"#,
        ] {
            let fast = get_item_fast(body).expect("the usual shape");
            assert_eq!(fast, cacheable(parse_get_item(body)));
            assert!(validate::get_item(body).is_ok());
        }
    }

    #[test]
    fn what_the_one_pass_path_cannot_prove_takes_the_full_path() {
        for body in [
            // Escapes, projections, unknown members, duplicates, other types, invalid values.
            &br#"{"TableName":"t\u0031","Key":{"pk":{"S":"a"}}}"#[..],
            br#"{"TableName":"t01","Key":{"pk":{"S":"a"}},"ProjectionExpression":"x"}"#,
            br#"{"TableName":"t01","Key":{"pk":{"S":"a"}},"Other":1}"#,
            br#"{"TableName":"t01","TableName":"t02","Key":{"pk":{"S":"a"}}}"#,
            br#"{"TableName":"t01","Key":{"pk":{"S":"a"},"pk":{"S":"b"}}}"#,
            br#"{"TableName":"t01","Key":{"pk":{"BOOL":true}}}"#,
            br#"{"TableName":"t01","Key":{"pk":{"S":""}}}"#,
            br#"{"TableName":"t01","Key":{"pk":{"N":"1e999"}}}"#,
            br#"{"TableName":"t01","Key":{"pk":{"B":"!"}}}"#,
            br#"{"TableName":"t","Key":{"pk":{"S":"a"}}}"#,
            br#"{"TableName":"t01","Key":{"a":{"S":"1"},"b":{"S":"2"},"c":{"S":"3"}}}"#,
            br#"{"TableName":"t01","Key":{"pk":{"S":"a"}}} x"#,
            br#"{"TableName":"t01","Key":{"pk":{"S":"a"}},"ReturnConsumedCapacity":"ALL"}"#,
        ] {
            assert!(
                get_item_fast(body).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    mod one_pass {
        use super::*;
        use proptest::prelude::*;

        /// A GetItem-like body close to the usual shape: mostly a table and a key of valid
        /// pieces, sometimes not, with other members in any order.
        fn body() -> impl Strategy<Value = String> {
            let name = prop_oneof![
                4 => prop::sample::select(vec!["pk", "sk"]),
                1 => prop::sample::select(vec!["", "p\\u006b", "Pk", "pk ", "\u{e9}"]),
            ];
            let tag = prop_oneof![
                4 => prop::sample::select(vec!["S", "N", "B"]),
                1 => prop::sample::select(vec!["BOOL", "SS", "s", "NULL"]),
            ];
            let text = prop::sample::select(vec![
                "a", "", "1", "1.0", "-0", "+1", "1e999", "1E-130", "1e125", "AAE=", "AA", "!",
                "x y", "a\\\"b", "a\\/b", "\u{e9}", "00012.50", ".5", "1.", " 1", "0x1", "NaN",
            ]);
            let attr = (name, tag, text).prop_map(|(n, t, v)| format!(r#""{n}":{{"{t}":"{v}"}}"#));
            let key = prop::collection::vec(attr, 0..4)
                .prop_map(|a| format!(r#""Key":{{{}}}"#, a.join(",")));
            let table = prop_oneof![
                4 => prop::sample::select(vec!["bench", "t01", "a.b-c_d"]),
                1 => prop::sample::select(vec![
                    "t",
                    "t\\u0031",
                    "bad name",
                    "",
                    "arn:aws:dynamodb:us-east-1:123456789012:table/t01",
                ]),
            ]
            .prop_map(|t| format!(r#""TableName":"{t}""#));
            let extra = prop_oneof![
                prop::sample::select(vec!["true", "false", "null", "\"true\"", "1"])
                    .prop_map(|v| format!(r#""ConsistentRead":{v}"#)),
                prop::sample::select(vec![
                    "\"NONE\"",
                    "\"TOTAL\"",
                    "\"INDEXES\"",
                    "\"ALL\"",
                    "null",
                ])
                .prop_map(|v| format!(r#""ReturnConsumedCapacity":{v}"#)),
                Just(r#""ProjectionExpression":"pk""#.to_owned()),
                Just(r#""AttributesToGet":["pk"]"#.to_owned()),
                Just(r#""Bogus":{}"#.to_owned()),
                Just(r#""TableName":"t02""#.to_owned()),
            ];
            let members = (
                prop::option::weighted(0.9, table),
                prop::option::weighted(0.9, key),
                prop::collection::vec(extra, 0..3),
            )
                .prop_map(|(table, key, mut members)| {
                    members.extend(table);
                    members.extend(key);
                    members
                })
                .prop_shuffle();
            let space = prop::sample::select(vec!["", " ", "\n", "\t "]);
            (members, space, prop::bool::weighted(0.1)).prop_map(|(members, space, trailing)| {
                let joined = members.join(&format!("{space},{space}"));
                let end = if trailing { "x" } else { "" };
                format!("{space}{{{space}{joined}{space}}}{end}")
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            /// The one-pass path answers only what the full parse reads alike and the validator
            /// proves valid.
            #[test]
            fn the_one_pass_path_agrees_with_the_full_parse_and_the_validator(body in body()) {
                if let Some(fast) = get_item_fast(body.as_bytes()) {
                    let full = parse_get_item(body.as_bytes());
                    prop_assert!(matches!(&full, Ok(ReadParse::Cacheable(f)) if *f == fast), "{full:?}");
                    prop_assert!(validate::get_item(body.as_bytes()).is_ok());
                }
            }

            #[test]
            fn random_bytes_never_panic_the_one_pass_path(body in prop::collection::vec(any::<u8>(), 0..256)) {
                let _ = get_item_fast(&body);
            }

            /// Eight bytes at a time finds the first stop a byte at a time finds, stops drawn
            /// often (and bytes either side of them, where a borrow would show).
            #[test]
            fn string_stops_are_found_as_a_byte_at_a_time_finds_them(
                rest in prop::collection::vec(prop_oneof![
                    4 => 0x20u8..0x7f,
                    1 => prop::sample::select(vec![b'"', b'\\', 0, 0x1f, 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xff]),
                ], 0..40),
            ) {
                let expected = rest.iter().position(|b| STRING_STOPS[usize::from(*b)]);
                prop_assert_eq!(string_stop(&rest), expected);
            }
        }
    }
}
