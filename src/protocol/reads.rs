//! Read requests, parsed just enough to key the caches: GetItem and BatchGetItem down to table,
//! canonical primary key and canonical projection; Query and Scan down to their whole canonical
//! request. Bodies are forwarded as the client sent them; nothing here re-serializes a hit.
//!
//! Read requests are parsed strictly: a field ddbcache does not know might change the answer, so
//! such a read is forwarded uncached ([`ReadParse::Uncacheable`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
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

pub(crate) fn serialization_error(e: &serde_json::Error) -> ProtocolError {
    ProtocolError::Serialization(format!("request body could not be parsed: {e}"))
}

/// Checks that a body is a JSON object (what every DynamoDB operation takes).
pub(crate) fn require_object(body: &[u8]) -> Result<(), ProtocolError> {
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
    // Accepted (a known parameter), but a hit answers without capacity either way.
    _return_consumed_capacity: Option<String>,
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
pub(crate) struct BatchTable {
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
pub(crate) struct BatchGetRead {
    pub tables: Vec<BatchTable>,
}

pub(crate) fn parse_batch_get_item(body: &[u8]) -> Result<ReadParse<BatchGetRead>, ProtocolError> {
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
    Ok(ReadParse::Cacheable(BatchGetRead { tables }))
}

/// Rewrites a BatchGetItem body to ask only for the keys `keep(table_index, key_index)` selects.
/// Tables left with no keys are dropped. Everything else in the request is kept as it was.
pub(crate) fn batch_get_subset(
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
}
