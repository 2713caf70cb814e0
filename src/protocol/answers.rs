//! Upstream answers, read just enough to fill the caches and learn key schemas: where a GetItem's
//! `Item` sits in its body, a BatchGetItem's per-table items and unprocessed keys, the key of a
//! returned item, a table's key schema from its DescribeTable, and an answer's body without its
//! `ConsumedCapacity` (what is stored: a hit consumes none).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::canonical::{encode_key, KeyAttr};
use super::table::KeySchema;

#[derive(Deserialize)]
struct GetItemOutput<'a> {
    #[serde(rename = "Item", borrow)]
    item: Option<&'a RawValue>,
}

/// Where a GetItem answer's `Item` sits in its body: `Some(None)` for "no such item".
pub fn get_item_output(body: &[u8]) -> Option<Option<std::ops::Range<usize>>> {
    let out: GetItemOutput = serde_json::from_slice(body).ok()?;
    Some(out.item.map(|raw| {
        let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
        start..start + raw.get().len()
    }))
}

/// The body without its top-level `ConsumedCapacity` member (the same bytes when it has none).
/// `None` when the body is not a JSON object ddbcache can cut the member out of.
pub fn without_consumed_capacity(body: &[u8]) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(rename = "ConsumedCapacity", borrow)]
        consumed_capacity: Option<&'a RawValue>,
    }
    let probe: Probe = serde_json::from_slice(body).ok()?;
    let Some(raw) = probe.consumed_capacity else {
        return Some(body.to_vec());
    };
    // The member is `"ConsumedCapacity"` `:` value; cut it with the comma that separates it
    // from its neighbour.
    let value_start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    let value_end = value_start + raw.get().len();
    let before = &body[..value_start];
    let colon = before.iter().rposition(|b| !b.is_ascii_whitespace())?;
    (before[colon] == b':').then_some(())?;
    let name_end = before[..colon]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())?
        + 1;
    let name_start = name_end.checked_sub(b"\"ConsumedCapacity\"".len())?;
    (&before[name_start..name_end] == b"\"ConsumedCapacity\"").then_some(())?;
    let skip_ws = |mut i: usize| {
        while i < body.len() && body[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let after = skip_ws(value_end);
    let (cut_start, cut_end) = if body.get(after) == Some(&b',') {
        (name_start, skip_ws(after + 1))
    } else {
        let comma = before[..name_start]
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())?;
        match before[comma] {
            b',' => (comma, value_end),
            b'{' => (name_start, after),
            _ => return None,
        }
    };
    let mut out = Vec::with_capacity(body.len() - (cut_end - cut_start));
    out.extend_from_slice(&body[..cut_start]);
    out.extend_from_slice(&body[cut_end..]);
    // What is left must still be a JSON object, and one without the member.
    let check: Probe = serde_json::from_slice(&out).ok()?;
    check.consumed_capacity.is_none().then_some(out)
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

/// A table's key schema and indexes, from a DescribeTable answer. `None` when the answer does not
/// hold exactly one HASH key and at most one RANGE key.
pub fn describe_table_schema(body: &[u8]) -> Option<KeySchema> {
    #[derive(Deserialize)]
    struct Out {
        #[serde(rename = "Table")]
        table: Desc,
    }
    #[derive(Deserialize)]
    struct Desc {
        #[serde(rename = "TableArn", default)]
        table_arn: Option<String>,
        #[serde(rename = "KeySchema")]
        key_schema: Vec<KeyElement>,
        #[serde(rename = "LocalSecondaryIndexes", default)]
        local_indexes: Vec<Index>,
        #[serde(rename = "GlobalSecondaryIndexes", default)]
        global_indexes: Vec<Index>,
    }
    #[derive(Deserialize)]
    struct KeyElement {
        #[serde(rename = "AttributeName")]
        attribute_name: String,
        #[serde(rename = "KeyType")]
        key_type: String,
    }
    #[derive(Deserialize)]
    struct Index {
        #[serde(rename = "IndexName")]
        index_name: String,
    }
    let out: Out = serde_json::from_slice(body).ok()?;
    let mut hash = None;
    let mut range = None;
    for k in out.table.key_schema {
        let slot = match k.key_type.as_str() {
            "HASH" => &mut hash,
            "RANGE" => &mut range,
            _ => return None,
        };
        if slot.replace(k.attribute_name).is_some() {
            return None;
        }
    }
    Some(KeySchema {
        table_arn: out.table.table_arn,
        hash: hash?,
        range,
        local_indexes: out
            .table
            .local_indexes
            .into_iter()
            .map(|i| i.index_name)
            .collect(),
        global_indexes: out
            .table
            .global_indexes
            .into_iter()
            .map(|i| i.index_name)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_item_output_locates_item() {
        let body = br#"{"Item":{"pk":{"S":"a"}}}"#;
        let item = get_item_output(body).unwrap();
        assert_eq!(&body[item.unwrap()], br#"{"pk":{"S":"a"}}"#);
        assert_eq!(get_item_output(b"{}").unwrap(), None);
    }

    #[test]
    fn consumed_capacity_is_cut_out_wherever_it_stands() {
        let cases: [(&[u8], &[u8]); 5] = [
            (
                br#"{"ConsumedCapacity":{"CapacityUnits":0.5,"TableName":"t"},"Item":{"a":{"S":"x"}}}"#,
                br#"{"Item":{"a":{"S":"x"}}}"#,
            ),
            (
                br#"{"Item":{"a":{"S":"x"}},"ConsumedCapacity":{"CapacityUnits":0.5}}"#,
                br#"{"Item":{"a":{"S":"x"}}}"#,
            ),
            (br#"{"ConsumedCapacity":{"CapacityUnits":0.5}}"#, b"{}"),
            (
                br#"{"Count":1, "ConsumedCapacity" : {"CapacityUnits":1} , "Items":[]}"#,
                br#"{"Count":1, "Items":[]}"#,
            ),
            (br#"{"Item":{"ConsumedCapacity":{"S":"x"}}}"#, br#"{"Item":{"ConsumedCapacity":{"S":"x"}}}"#),
        ];
        for (body, stripped) in cases {
            assert_eq!(
                without_consumed_capacity(body).as_deref(),
                Some(stripped),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(without_consumed_capacity(b"[]"), None);
    }

    #[test]
    fn key_schema_from_describe_table() {
        let body = br#"{"Table":{"TableName":"t","TableArn":"arn:aws:dynamodb:r:000000000000:table/t","KeySchema":[{"AttributeName":"sk","KeyType":"RANGE"},{"AttributeName":"pk","KeyType":"HASH"}],"LocalSecondaryIndexes":[{"IndexName":"l"}],"GlobalSecondaryIndexes":[{"IndexName":"g"}]}}"#;
        let schema = describe_table_schema(body).unwrap();
        assert_eq!(schema.hash, "pk");
        assert_eq!(schema.range.as_deref(), Some("sk"));
        assert_eq!(schema.local_indexes, vec!["l"]);
        assert_eq!(schema.global_indexes, vec!["g"]);
        assert_eq!(schema.account(), Some("000000000000"));
        let two_hashes = br#"{"Table":{"KeySchema":[{"AttributeName":"a","KeyType":"HASH"},{"AttributeName":"b","KeyType":"HASH"}]}}"#;
        assert_eq!(describe_table_schema(two_hashes), None);
    }
}
