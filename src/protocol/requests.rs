//! Just enough parsing of request and response bodies to key the caches and to know what a write
//! touches. Bodies are forwarded as the client sent them; nothing here re-serializes a hit.
//!
//! Parsing policy (DESIGN.md): a body that is not a JSON object, or whose fields ddbcache needs have
//! the wrong JSON type, is a `SerializationException` answered locally. Read requests are parsed
//! strictly: a field ddbcache does not know might change the answer, so such a read is forwarded
//! uncached. Writes are parsed leniently and invalidate conservatively when not understood.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::canonical::{encode_key, encode_projection, normalize_numbers_in, table_name, KeyAttr};
use super::error::ProtocolError;

/// How a read request came out of parsing.
#[derive(Debug)]
pub enum ReadParse<T> {
    Cacheable(T),
    /// Valid JSON, but carrying something ddbcache does not key on: forward without caching.
    Uncacheable,
}

/// Parses strictly; maps serde's verdict onto the parsing policy.
fn parse_strict<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<ReadParse<T>, ProtocolError> {
    match serde_json::from_slice::<T>(body) {
        Ok(v) => Ok(ReadParse::Cacheable(v)),
        Err(e) => {
            let msg = e.to_string();
            if e.is_data() && (msg.starts_with("unknown field") || msg.starts_with("missing field"))
            {
                // A parameter ddbcache does not know, or one DynamoDB will reject with a
                // ValidationException of its own: let the upstream answer.
                if serde_json::from_slice::<serde_json::Map<String, Value>>(body).is_ok() {
                    return Ok(ReadParse::Uncacheable);
                }
            }
            Err(serialization_error(&e))
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

fn wants_capacity(rcc: &Option<String>) -> bool {
    matches!(rcc.as_deref(), Some(v) if v != "NONE")
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
    #[serde(rename = "ReturnConsumedCapacity")]
    return_consumed_capacity: Option<String>,
}

/// A GetItem, reduced to what keys the item cache; names borrow from the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetItemRead<'a> {
    pub table: Cow<'a, str>,
    /// The key's attribute names, sorted: what the table's key schema must be.
    pub key_names: Vec<Cow<'a, str>>,
    /// Canonical primary key.
    pub key: Vec<u8>,
    /// Canonical projection (empty: whole item).
    pub projection: Vec<u8>,
    pub consistent_read: bool,
    pub wants_capacity: bool,
}

pub fn parse_get_item(body: &[u8]) -> Result<ReadParse<GetItemRead<'_>>, ProtocolError> {
    let input: GetItemInput = match parse_strict(body)? {
        ReadParse::Cacheable(i) => i,
        ReadParse::Uncacheable => return Ok(ReadParse::Uncacheable),
    };
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
    let table = match input.table_name {
        Cow::Borrowed(name) => Cow::Borrowed(table_name(name)),
        Cow::Owned(name) => Cow::Owned(table_name(&name).to_owned()),
    };
    Ok(ReadParse::Cacheable(GetItemRead {
        table,
        key_names: input.key.into_keys().collect(),
        key,
        projection,
        consistent_read: input.consistent_read.unwrap_or(false),
        wants_capacity: wants_capacity(&input.return_consumed_capacity),
    }))
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
    /// The name as the client wrote it (the response is keyed by it).
    pub request_name: String,
    pub table: String,
    pub key_names: Vec<String>,
    /// Canonical keys, in request order.
    pub keys: Vec<Vec<u8>>,
    pub projection: Vec<u8>,
    pub consistent_read: bool,
}

#[derive(Debug, Clone)]
pub struct BatchGetRead {
    pub tables: Vec<BatchTable>,
    pub wants_capacity: bool,
}

pub fn parse_batch_get_item(body: &[u8]) -> Result<ReadParse<BatchGetRead>, ProtocolError> {
    let input: BatchGetItemInput = match parse_strict(body)? {
        ReadParse::Cacheable(i) => i,
        ReadParse::Uncacheable => return Ok(ReadParse::Uncacheable),
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
            table: table_name(&name).to_string(),
            request_name: name,
            key_names: key_names.unwrap_or_default(),
            keys,
            projection,
            consistent_read: ka.consistent_read.unwrap_or(false),
        });
    }
    Ok(ReadParse::Cacheable(BatchGetRead {
        tables,
        wants_capacity: wants_capacity(&input.return_consumed_capacity),
    }))
}

/// Rewrites a BatchGetItem body to ask only for the keys `keep(table_index, key_index)` selects.
/// Tables left with no keys are dropped. Everything else in the request is kept as it was.
pub fn batch_get_subset(
    body: &[u8],
    read: &BatchGetRead,
    keep: impl Fn(usize, usize) -> bool,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRead {
    pub table: String,
    /// The whole request in canonical form: every field that changes the answer.
    pub key: Vec<u8>,
    pub consistent_read: bool,
    pub wants_capacity: bool,
}

/// `is_scan` separates Query and Scan entries that would otherwise share a canonical body.
pub fn parse_query(body: &[u8], is_scan: bool) -> Result<ReadParse<QueryRead>, ProtocolError> {
    let mut v: serde_json::Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| serialization_error(&e))?;
    let table = match v.get("TableName") {
        Some(Value::String(t)) => table_name(t).to_string(),
        Some(_) => {
            return Err(ProtocolError::Serialization(
                "TableName must be a string".into(),
            ))
        }
        None => return Ok(ReadParse::Uncacheable),
    };
    let consistent_read = match v.get("ConsistentRead") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ProtocolError::Serialization(
                "ConsistentRead must be a boolean".into(),
            ))
        }
    };
    let wants_capacity = match v.remove("ReturnConsumedCapacity") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => s != "NONE",
        Some(_) => {
            return Err(ProtocolError::Serialization(
                "ReturnConsumedCapacity must be a string".into(),
            ))
        }
    };
    v.insert("TableName".into(), Value::String(table.clone()));
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
        wants_capacity,
    }))
}

// ---------------------------------------------------------------------------------------------
// Responses

#[derive(Deserialize)]
struct GetItemOutput<'a> {
    #[serde(rename = "Item", borrow)]
    item: Option<&'a RawValue>,
    #[serde(rename = "ConsumedCapacity", borrow)]
    consumed_capacity: Option<&'a RawValue>,
}

/// What a GetItem response holds, for filling the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetItemAnswer {
    /// Byte range of the `Item` value inside the body; `None` for "no such item".
    pub item: Option<std::ops::Range<usize>>,
    pub has_capacity: bool,
}

pub fn parse_get_item_output(body: &[u8]) -> Option<GetItemAnswer> {
    let out: GetItemOutput = serde_json::from_slice(body).ok()?;
    let item = out.item.map(|raw| {
        let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
        start..start + raw.get().len()
    });
    Some(GetItemAnswer {
        item,
        has_capacity: out.consumed_capacity.is_some(),
    })
}

#[derive(Deserialize)]
pub struct BatchGetItemOutput<'a> {
    #[serde(rename = "Responses", borrow, default)]
    pub responses: HashMap<String, Vec<&'a RawValue>>,
    #[serde(rename = "UnprocessedKeys", borrow)]
    pub unprocessed_keys: Option<&'a RawValue>,
    #[serde(rename = "ConsumedCapacity", borrow)]
    pub consumed_capacity: Option<&'a RawValue>,
}

pub fn parse_batch_get_output(body: &[u8]) -> Option<BatchGetItemOutput<'_>> {
    serde_json::from_slice(body).ok()
}

/// The canonical key of a returned item, given the table's key attribute names; `None` if the
/// item does not carry them (a projection left them out).
pub fn item_key(item: &RawValue, key_names: &[String]) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Item<'a>(#[serde(borrow)] HashMap<&'a str, &'a RawValue>);
    let Item(attrs) = serde_json::from_str(item.get()).ok()?;
    let mut values = Vec::with_capacity(key_names.len());
    for name in key_names {
        let raw = attrs.get(name.as_str())?;
        values.push((
            name.as_str(),
            serde_json::from_str::<KeyAttr>(raw.get()).ok()?,
        ));
    }
    encode_key(values.iter().map(|(n, v)| (*n, v)))
}

/// Whether an upstream response body carries `ConsumedCapacity` (such bodies are not cached: a
/// hit would replay a cost that the hit did not incur).
pub fn has_consumed_capacity(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(rename = "ConsumedCapacity", borrow)]
        consumed_capacity: Option<&'a RawValue>,
    }
    serde_json::from_slice::<Probe>(body)
        .map(|p| p.consumed_capacity.is_some())
        .unwrap_or(true)
}

/// Key attribute names learned from DescribeTable / CreateTable responses.
pub fn key_schema_of(body: &[u8]) -> Option<(String, Vec<String>)> {
    #[derive(Deserialize)]
    struct Out {
        #[serde(rename = "Table", alias = "TableDescription")]
        table: Desc,
    }
    #[derive(Deserialize)]
    struct Desc {
        #[serde(rename = "TableName")]
        table_name: String,
        #[serde(rename = "KeySchema")]
        key_schema: Vec<KeyElement>,
    }
    #[derive(Deserialize)]
    struct KeyElement {
        #[serde(rename = "AttributeName")]
        attribute_name: String,
    }
    let out: Out = serde_json::from_slice(body).ok()?;
    let mut names: Vec<String> = out
        .table
        .key_schema
        .into_iter()
        .map(|k| k.attribute_name)
        .collect();
    names.sort();
    Some((out.table.table_name, names))
}

// ---------------------------------------------------------------------------------------------
// Writes

/// What one write request touches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteSet {
    /// (table, canonical key) of every item written.
    pub items: Vec<(String, Vec<u8>)>,
    /// Tables whose items cannot be named exactly: all their entries go.
    pub tables: Vec<String>,
    /// Nothing could be named: every entry goes.
    pub everything: bool,
}

impl WriteSet {
    fn everything() -> Self {
        WriteSet {
            everything: true,
            ..Default::default()
        }
    }

    /// Every table the write touches (the query cache drops all of these).
    pub fn touched_tables(&self) -> impl Iterator<Item = &str> {
        self.items
            .iter()
            .map(|(t, _)| t.as_str())
            .chain(self.tables.iter().map(String::as_str))
    }
}

#[derive(Deserialize)]
struct KeyOrItem<'a> {
    #[serde(rename = "TableName")]
    table_name: Option<String>,
    #[serde(rename = "Key", borrow)]
    key: Option<BTreeMap<String, KeyAttr<'a>>>,
    #[serde(rename = "Item", borrow)]
    item: Option<HashMap<String, &'a RawValue>>,
}

/// Resolves the key of one written item: from `Key`, or from `Item` with the table's key schema.
fn add_write<'a>(
    set: &mut WriteSet,
    table: &str,
    w: &KeyOrItem<'a>,
    schema: &dyn Fn(&str) -> Option<Vec<String>>,
) {
    let table = table_name(table).to_string();
    let key = if let Some(key) = &w.key {
        encode_key(key.iter().map(|(k, v)| (k.as_str(), v)))
    } else if let Some(item) = &w.item {
        schema(&table).and_then(|names| {
            let mut vals = Vec::with_capacity(names.len());
            for n in &names {
                vals.push((
                    n.as_str(),
                    serde_json::from_str::<KeyAttr>(item.get(n.as_str())?.get()).ok()?,
                ));
            }
            encode_key(vals.iter().map(|(n, v)| (*n, v)))
        })
    } else {
        None
    };
    match key {
        Some(k) => set.items.push((table, k)),
        None => set.tables.push(table),
    }
}

/// What a PutItem / UpdateItem / DeleteItem / BatchWriteItem / TransactWriteItems touches.
/// `schema` gives a table's key attribute names when known. Errors only for bodies that are not
/// JSON objects; anything else not understood widens the set.
pub fn parse_write(
    op: super::Operation,
    body: &[u8],
    schema: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<WriteSet, ProtocolError> {
    use super::Operation::*;
    require_object(body)?;
    let mut set = WriteSet::default();
    match op {
        PutItem | UpdateItem | DeleteItem => {
            let Ok(w) = serde_json::from_slice::<KeyOrItem>(body) else {
                return Ok(WriteSet::everything());
            };
            match &w.table_name {
                Some(t) => add_write(&mut set, t, &w, schema),
                None => return Ok(WriteSet::everything()),
            }
        }
        BatchWriteItem => {
            #[derive(Deserialize)]
            struct Input<'a> {
                #[serde(rename = "RequestItems", borrow)]
                request_items: HashMap<String, Vec<WriteRequest<'a>>>,
            }
            #[derive(Deserialize)]
            struct WriteRequest<'a> {
                #[serde(rename = "PutRequest", borrow)]
                put: Option<KeyOrItem<'a>>,
                #[serde(rename = "DeleteRequest", borrow)]
                delete: Option<KeyOrItem<'a>>,
            }
            let Ok(input) = serde_json::from_slice::<Input>(body) else {
                return Ok(WriteSet::everything());
            };
            for (table, requests) in &input.request_items {
                for r in requests {
                    match r.put.as_ref().or(r.delete.as_ref()) {
                        Some(w) => add_write(&mut set, table, w, schema),
                        None => set.tables.push(table_name(table).to_string()),
                    }
                }
            }
        }
        TransactWriteItems => {
            #[derive(Deserialize)]
            struct Input<'a> {
                #[serde(rename = "TransactItems", borrow)]
                transact_items: Vec<TransactItem<'a>>,
            }
            #[derive(Deserialize)]
            struct TransactItem<'a> {
                #[serde(rename = "Put", borrow)]
                put: Option<KeyOrItem<'a>>,
                #[serde(rename = "Update", borrow)]
                update: Option<KeyOrItem<'a>>,
                #[serde(rename = "Delete", borrow)]
                delete: Option<KeyOrItem<'a>>,
            }
            let Ok(input) = serde_json::from_slice::<Input>(body) else {
                return Ok(WriteSet::everything());
            };
            for item in &input.transact_items {
                // ConditionCheck writes nothing.
                for w in [&item.put, &item.update, &item.delete]
                    .into_iter()
                    .flatten()
                {
                    match &w.table_name {
                        Some(t) => add_write(&mut set, t, w, schema),
                        None => return Ok(WriteSet::everything()),
                    }
                }
            }
        }
        _ => return Ok(WriteSet::everything()),
    }
    Ok(set)
}

/// The table a control-plane call changes; `None` if the body does not name one.
pub fn control_table(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Input {
        #[serde(rename = "TableName")]
        table_name: Option<String>,
        #[serde(rename = "TargetTableName")]
        target_table_name: Option<String>,
        #[serde(rename = "GlobalTableName")]
        global_table_name: Option<String>,
        #[serde(rename = "TableCreationParameters")]
        creation: Option<Creation>,
    }
    #[derive(Deserialize)]
    struct Creation {
        #[serde(rename = "TableName")]
        table_name: Option<String>,
    }
    let i: Input = serde_json::from_slice(body).ok()?;
    let name = i
        .target_table_name
        .or(i.table_name)
        .or(i.global_table_name)
        .or(i.creation.and_then(|c| c.table_name))?;
    Some(table_name(&name).to_string())
}

// ---------------------------------------------------------------------------------------------
// PartiQL

/// What a PartiQL request (ExecuteStatement, BatchExecuteStatement, ExecuteTransaction) writes.
pub fn parse_partiql(op: super::Operation, body: &[u8]) -> Result<WriteSet, ProtocolError> {
    use super::Operation::*;
    require_object(body)?;
    #[derive(Deserialize)]
    struct Stmt {
        #[serde(rename = "Statement")]
        statement: String,
    }
    #[derive(Deserialize)]
    struct Single {
        #[serde(rename = "Statement")]
        statement: String,
    }
    #[derive(Deserialize)]
    struct Batch {
        #[serde(rename = "Statements")]
        statements: Vec<Stmt>,
    }
    #[derive(Deserialize)]
    struct Transaction {
        #[serde(rename = "TransactStatements")]
        statements: Vec<Stmt>,
    }
    let statements: Option<Vec<String>> = match op {
        ExecuteStatement => serde_json::from_slice::<Single>(body)
            .ok()
            .map(|s| vec![s.statement]),
        BatchExecuteStatement => serde_json::from_slice::<Batch>(body)
            .ok()
            .map(|b| b.statements.into_iter().map(|s| s.statement).collect()),
        ExecuteTransaction => serde_json::from_slice::<Transaction>(body)
            .ok()
            .map(|b| b.statements.into_iter().map(|s| s.statement).collect()),
        _ => None,
    };
    let Some(statements) = statements else {
        return Ok(WriteSet::everything());
    };
    let mut set = WriteSet::default();
    for s in &statements {
        match partiql_write_target(s) {
            PartiqlTarget::Read => {}
            PartiqlTarget::Table(t) => set.tables.push(t),
            PartiqlTarget::Unknown => return Ok(WriteSet::everything()),
        }
    }
    Ok(set)
}

#[derive(Debug, PartialEq, Eq)]
enum PartiqlTarget {
    Read,
    Table(String),
    Unknown,
}

/// `INSERT INTO "t" ...`, `UPDATE t SET ...`, `DELETE FROM "t" WHERE ...`, `SELECT ...`.
fn partiql_write_target(statement: &str) -> PartiqlTarget {
    let s = statement.trim_start();
    let (word, rest) = split_word(s);
    let rest = match word.to_ascii_uppercase().as_str() {
        "SELECT" | "EXISTS" => return PartiqlTarget::Read,
        "UPDATE" => rest,
        "INSERT" | "DELETE" => {
            let (into, rest) = split_word(rest);
            let expected = if word.eq_ignore_ascii_case("INSERT") {
                "INTO"
            } else {
                "FROM"
            };
            if !into.eq_ignore_ascii_case(expected) {
                return PartiqlTarget::Unknown;
            }
            rest
        }
        _ => return PartiqlTarget::Unknown,
    };
    match partiql_identifier(rest.trim_start()) {
        Some(t) => PartiqlTarget::Table(table_name(&t).to_string()),
        None => PartiqlTarget::Unknown,
    }
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s
        .find(|c: char| c.is_whitespace() || c == '"' || c == '(')
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// A quoted (`"My Table"`, with `""` as an escaped quote) or bare identifier.
fn partiql_identifier(s: &str) -> Option<String> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    out.push('"');
                } else {
                    return (!out.is_empty()).then_some(out);
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .unwrap_or(s.len());
        (end > 0).then(|| s[..end].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Operation;

    fn no_schema(_: &str) -> Option<Vec<String>> {
        None
    }

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
        assert_eq!(a.key_names, vec!["pk", "sk"]);
        assert!(!a.consistent_read);
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
    fn get_item_wrong_types_are_serialization_errors() {
        for body in [
            &b"not json"[..],
            b"null",
            b"[1]",
            br#"{"TableName":5,"Key":{}}"#,
            br#"{"TableName":"t","Key":{"pk":{"S":"a"}},"ConsistentRead":"yes"}"#,
        ] {
            assert!(
                matches!(parse_get_item(body), Err(ProtocolError::Serialization(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn get_item_unknown_field_or_missing_key_goes_upstream_uncached() {
        for body in [
            &br#"{"TableName":"t","Key":{"pk":{"S":"a"}},"FutureParameter":1}"#[..],
            br#"{"TableName":"t"}"#,
            br#"{"TableName":"t","Key":{"pk":{"BOOL":true}}}"#,
        ] {
            assert!(matches!(parse_get_item(body), Ok(ReadParse::Uncacheable)));
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
        let sub = batch_get_subset(body, &read, |t, k| t == 0 && k == 1).unwrap();
        let v: Value = serde_json::from_slice(&sub).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"RequestItems":{"a":{"Keys":[{"k":{"S":"2"}}]}}})
        );
    }

    #[test]
    fn get_item_output_locates_item() {
        let body = br#"{"Item":{"pk":{"S":"a"}}}"#;
        let a = parse_get_item_output(body).unwrap();
        assert_eq!(&body[a.item.unwrap()], br#"{"pk":{"S":"a"}}"#);
        assert_eq!(parse_get_item_output(b"{}").unwrap().item, None);
    }

    #[test]
    fn put_item_needs_schema_for_item_level_invalidation() {
        let body = br#"{"TableName":"t","Item":{"pk":{"S":"a"},"v":{"N":"1"}}}"#;
        let without = parse_write(Operation::PutItem, body, &no_schema).unwrap();
        assert_eq!(without.tables, vec!["t"]);
        let with = parse_write(Operation::PutItem, body, &|_| Some(vec!["pk".into()])).unwrap();
        assert_eq!(with.items.len(), 1);
        let get = cacheable(parse_get_item(
            br#"{"TableName":"t","Key":{"pk":{"S":"a"}}}"#,
        ));
        assert_eq!(with.items[0].1, get.key);
    }

    #[test]
    fn transact_and_batch_writes_name_every_key() {
        let tw = br#"{"TransactItems":[{"Update":{"TableName":"a","Key":{"k":{"S":"1"}}}},{"ConditionCheck":{"TableName":"c","Key":{"k":{"S":"9"}}}},{"Delete":{"TableName":"b","Key":{"k":{"S":"2"}}}}]}"#;
        let set = parse_write(Operation::TransactWriteItems, tw, &no_schema).unwrap();
        let tables: Vec<_> = set.items.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tables, vec!["a", "b"]);
        let bw = br#"{"RequestItems":{"a":[{"DeleteRequest":{"Key":{"k":{"S":"1"}}}},{"PutRequest":{"Item":{"k":{"S":"2"}}}}]}}"#;
        let set = parse_write(Operation::BatchWriteItem, bw, &|_| Some(vec!["k".into()])).unwrap();
        assert_eq!(set.items.len(), 2);
        assert!(!set.everything);
    }

    #[test]
    fn unintelligible_writes_widen_to_everything() {
        let set = parse_write(Operation::PutItem, br#"{"Item":{}}"#, &no_schema).unwrap();
        assert!(set.everything);
        assert!(parse_write(Operation::PutItem, b"[]", &no_schema).is_err());
    }

    #[test]
    fn partiql_targets() {
        assert_eq!(partiql_write_target("SELECT * FROM t"), PartiqlTarget::Read);
        assert_eq!(
            partiql_write_target(r#"UPDATE "My ""T""" SET a = 1 WHERE pk = 'x'"#),
            PartiqlTarget::Table(r#"My "T""#.into())
        );
        assert_eq!(
            partiql_write_target("insert into Music value {'a': 1}"),
            PartiqlTarget::Table("Music".into())
        );
        assert_eq!(
            partiql_write_target(r#"DELETE FROM "t" WHERE pk = 'x'"#),
            PartiqlTarget::Table("t".into())
        );
        assert_eq!(partiql_write_target("UPSERT t"), PartiqlTarget::Unknown);
        let set = parse_partiql(
            Operation::ExecuteTransaction,
            br#"{"TransactStatements":[{"Statement":"UPDATE a SET x=1 WHERE k='1'"},{"Statement":"EXISTS(SELECT * FROM b WHERE k='2')"}]}"#,
        )
        .unwrap();
        assert_eq!(set.tables, vec!["a"]);
    }

    #[test]
    fn control_calls_name_their_table() {
        assert_eq!(
            control_table(br#"{"TargetTableName":"restored","BackupArn":"x"}"#),
            Some("restored".into())
        );
        assert_eq!(
            control_table(br#"{"TableCreationParameters":{"TableName":"imp"}}"#),
            Some("imp".into())
        );
        assert_eq!(control_table(br#"{}"#), None);
    }

    #[test]
    fn key_schema_from_describe_table() {
        let body = br#"{"Table":{"TableName":"t","KeySchema":[{"AttributeName":"sk","KeyType":"RANGE"},{"AttributeName":"pk","KeyType":"HASH"}]}}"#;
        assert_eq!(
            key_schema_of(body),
            Some(("t".into(), vec!["pk".into(), "sk".into()]))
        );
    }
}
