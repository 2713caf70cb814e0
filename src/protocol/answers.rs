//! Upstream answers, read just enough to fill the caches and learn key schemas: where a GetItem's
//! `Item` sits in its body, a BatchGetItem's per-table items and unprocessed keys, the key of a
//! returned item, and a table's key schema from DescribeTable or CreateTable.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::canonical::{encode_key, KeyAttr};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_item_output_locates_item() {
        let body = br#"{"Item":{"pk":{"S":"a"}}}"#;
        let a = parse_get_item_output(body).unwrap();
        assert_eq!(&body[a.item.unwrap()], br#"{"pk":{"S":"a"}}"#);
        assert_eq!(parse_get_item_output(b"{}").unwrap().item, None);
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
