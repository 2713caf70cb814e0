//! Write requests, read for what they may change: the items (table and canonical key) of
//! PutItem, UpdateItem, DeleteItem, BatchWriteItem and TransactWriteItems, and the table of a
//! control-plane call. Parsed leniently: a write ddbcache does not fully understand is forwarded
//! all the same, and its scope widens (the whole table, or everything).

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::canonical::{encode_key, table_name, KeyAttr};
use super::error::ProtocolError;
use super::reads::require_object;

/// What one write may have changed: the entries that must go.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteScope {
    /// (table, canonical key) of every item written.
    pub items: Vec<(String, Vec<u8>)>,
    /// Tables whose items cannot be named exactly: all their entries go.
    pub tables: Vec<String>,
    /// Nothing could be named: every entry goes.
    pub everything: bool,
}

impl WriteScope {
    pub fn everything() -> Self {
        WriteScope {
            everything: true,
            ..Default::default()
        }
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
    set: &mut WriteScope,
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
pub(crate) fn parse_write(
    op: super::Operation,
    body: &[u8],
    schema: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<WriteScope, ProtocolError> {
    use super::Operation::*;
    require_object(body)?;
    let mut set = WriteScope::default();
    match op {
        PutItem | UpdateItem | DeleteItem => {
            let Ok(w) = serde_json::from_slice::<KeyOrItem>(body) else {
                return Ok(WriteScope::everything());
            };
            match &w.table_name {
                Some(t) => add_write(&mut set, t, &w, schema),
                None => return Ok(WriteScope::everything()),
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
                return Ok(WriteScope::everything());
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
                return Ok(WriteScope::everything());
            };
            for item in &input.transact_items {
                // ConditionCheck writes nothing.
                for w in [&item.put, &item.update, &item.delete]
                    .into_iter()
                    .flatten()
                {
                    match &w.table_name {
                        Some(t) => add_write(&mut set, t, w, schema),
                        None => return Ok(WriteScope::everything()),
                    }
                }
            }
        }
        _ => return Ok(WriteScope::everything()),
    }
    Ok(set)
}

/// The table a control-plane call changes; `None` if the body does not name one.
pub(crate) fn control_table(body: &[u8]) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reads::{parse_get_item, ReadParse};
    use crate::protocol::Operation;

    fn no_schema(_: &str) -> Option<Vec<String>> {
        None
    }

    #[test]
    fn put_item_needs_schema_for_item_level_invalidation() {
        let body = br#"{"TableName":"t","Item":{"pk":{"S":"a"},"v":{"N":"1"}}}"#;
        let without = parse_write(Operation::PutItem, body, &no_schema).unwrap();
        assert_eq!(without.tables, vec!["t"]);
        let with = parse_write(Operation::PutItem, body, &|_| Some(vec!["pk".into()])).unwrap();
        assert_eq!(with.items.len(), 1);
        let Ok(ReadParse::Cacheable(get)) =
            parse_get_item(br#"{"TableName":"t","Key":{"pk":{"S":"a"}}}"#)
        else {
            panic!("a cacheable GetItem");
        };
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
}
