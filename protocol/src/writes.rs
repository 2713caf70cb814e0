//! Write requests, read for what they may change: the items of PutItem, UpdateItem, DeleteItem,
//! BatchWriteItem and TransactWriteItems, and the table of a control-plane call.
//!
//! What is written is computed exactly as the engine computes it, from the members the engine
//! reads: a PutItem's key is in its `Item` (a stray `Key` is ignored, as DynamoDB ignores it), an
//! UpdateItem's and a DeleteItem's in `Key`, a RestoreTableFromBackup's table in
//! `TargetTableName`. Members ddbcache does not model never choose what is invalidated. Whenever the
//! key cannot be named exactly — the table's key schema is unknown, the key does not match it, the
//! request has a shape DynamoDB would reject — the scope widens to the whole table, or to
//! everything when the table cannot be named either: more than needed, never less.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::table::{KeySchema, TableId, TableRef};
use super::Operation;

/// What one write may have changed: the entries that must go. Tables are table identities
/// (`region/name`, see [`super::table`]); keys are canonical.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteScope {
    /// Every item written, with its table.
    pub items: Vec<ItemWrite>,
    /// Tables whose items cannot be named exactly: all their entries go.
    pub tables: Vec<TableId>,
    /// Nothing could be named: every entry goes.
    pub everything: bool,
    /// The write got no answer (timed out, connection lost, 5xx): it may still land, so what it
    /// touched is in doubt for a while.
    #[serde(default)]
    pub in_doubt: bool,
}

/// One written item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemWrite {
    /// The table's identity.
    pub table: TableId,
    /// The canonical primary key.
    pub key: Vec<u8>,
    /// The canonical partition key (Query entries on that partition go too).
    pub partition: Option<Vec<u8>>,
}

impl WriteScope {
    pub fn everything() -> Self {
        WriteScope {
            everything: true,
            ..Default::default()
        }
    }

    /// Whether the write changes nothing ddbcache caches.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.tables.is_empty() && !self.everything
    }

    /// Every table the write names, items' tables included (a table may come more than once).
    pub fn touched_tables(&self) -> impl Iterator<Item = &TableId> {
        self.items.iter().map(|i| &i.table).chain(&self.tables)
    }

    pub fn add_table(&mut self, id: TableId) {
        if !self.tables.contains(&id) {
            self.tables.push(id);
        }
    }
}

/// What a write is read against: the request's region and the key schemas ddbcache knows.
pub struct WriteContext<'a> {
    pub region: &'a str,
    /// The key schema of a table identity, when known.
    pub schema: &'a dyn Fn(&TableId) -> Option<Arc<KeySchema>>,
}

impl WriteContext<'_> {
    fn tables(&self, table_name: &str) -> Option<Vec<TableId>> {
        tables_named(self.region, table_name)
    }

    /// Adds one written item, named by the attributes in `attrs` (an `Item` or a `Key`); widens to
    /// the table when its schema is unknown, the attributes do not hold its key, or (for a `Key`)
    /// they hold more than its key.
    fn add_item(
        &self,
        scope: &mut WriteScope,
        table_name: &str,
        attrs: &HashMap<&str, &RawValue>,
        exact_key: bool,
    ) {
        let Some(ids) = self.tables(table_name) else {
            scope.everything = true;
            return;
        };
        let by_name = matches!(TableRef::parse(table_name), TableRef::Name(_));
        let schema = (self.schema)(&ids[0]).filter(|_| by_name);
        let keys = schema.as_ref().and_then(|schema| {
            if exact_key && !schema.is_key(attrs.keys().copied()) {
                return None;
            }
            schema.keys_of(|n| attrs.get(n).copied())
        });
        match keys {
            Some((key, partition)) => scope.items.push(ItemWrite {
                table: ids.into_iter().next().expect("one identity"),
                key,
                partition: Some(partition),
            }),
            None => ids.into_iter().for_each(|id| scope.add_table(id)),
        }
    }
}

/// The identities a `TableName` may denote in a request for `region`. A name is one table of the
/// request's region; an ARN is its own region's table, and — in case the upstream resolves it
/// otherwise — the request region's table of that name too. `None` for a malformed ARN.
pub fn tables_named(region: &str, table_name: &str) -> Option<Vec<TableId>> {
    match TableRef::parse(table_name) {
        TableRef::Name(n) => Some(vec![TableId::new(region, n)]),
        TableRef::Arn(a) => {
            let mut ids = vec![TableId::new(a.region, a.name)];
            if a.region != region {
                ids.push(TableId::new(region, a.name));
            }
            Some(ids)
        }
        TableRef::Malformed => None,
    }
}

type Attrs<'a> = HashMap<&'a str, &'a RawValue>;

/// The members of a PutItem, UpdateItem or DeleteItem (or a transaction's Put, Update, Delete)
/// that say what it writes.
#[derive(Deserialize)]
struct Target<'a> {
    #[serde(rename = "TableName", borrow)]
    table_name: &'a str,
    #[serde(rename = "Item", borrow, default)]
    item: Option<Attrs<'a>>,
    #[serde(rename = "Key", borrow, default)]
    key: Option<Attrs<'a>>,
}

/// What a PutItem / UpdateItem / DeleteItem / BatchWriteItem / TransactWriteItems may change.
/// Anything not understood widens the scope.
pub fn parse_write(op: Operation, body: &[u8], ctx: &WriteContext<'_>) -> WriteScope {
    let mut scope = WriteScope::default();
    let understood = match op {
        Operation::PutItem | Operation::UpdateItem | Operation::DeleteItem => {
            match serde_json::from_slice::<Target>(body) {
                Ok(Target {
                    table_name,
                    item: Some(item),
                    ..
                }) if op == Operation::PutItem => {
                    ctx.add_item(&mut scope, table_name, &item, false);
                    true
                }
                Ok(Target {
                    table_name,
                    key: Some(key),
                    ..
                }) if op != Operation::PutItem => {
                    ctx.add_item(&mut scope, table_name, &key, true);
                    true
                }
                _ => false,
            }
        }
        Operation::BatchWriteItem => batch_write(body, ctx, &mut scope).is_some(),
        Operation::TransactWriteItems => transact_write(body, ctx, &mut scope).is_some(),
        _ => false,
    };
    if !understood {
        return WriteScope::everything();
    }
    scope
}

/// BatchWriteItem: each request is a PutRequest (key in `Item`) or a DeleteRequest (key in `Key`),
/// exactly one of them; a request of another shape widens to its table.
fn batch_write(body: &[u8], ctx: &WriteContext<'_>, scope: &mut WriteScope) -> Option<()> {
    #[derive(Deserialize)]
    struct Input<'a> {
        #[serde(rename = "RequestItems", borrow)]
        request_items: HashMap<&'a str, Vec<WriteRequest<'a>>>,
    }
    #[derive(Deserialize)]
    struct WriteRequest<'a> {
        #[serde(rename = "PutRequest", borrow, default)]
        put: Option<ItemMember<'a>>,
        #[serde(rename = "DeleteRequest", borrow, default)]
        delete: Option<KeyMember<'a>>,
    }
    #[derive(Deserialize)]
    struct ItemMember<'a> {
        #[serde(rename = "Item", borrow)]
        item: Attrs<'a>,
    }
    #[derive(Deserialize)]
    struct KeyMember<'a> {
        #[serde(rename = "Key", borrow)]
        key: Attrs<'a>,
    }
    let input: Input = serde_json::from_slice(body).ok()?;
    for (table, requests) in &input.request_items {
        for r in requests {
            match (&r.put, &r.delete) {
                (Some(p), None) => ctx.add_item(scope, table, &p.item, false),
                (None, Some(d)) => ctx.add_item(scope, table, &d.key, true),
                _ => ctx
                    .tables(table)?
                    .into_iter()
                    .for_each(|id| scope.add_table(id)),
            }
        }
    }
    Some(())
}

/// TransactWriteItems: each item is exactly one of Put, Update, Delete or ConditionCheck (which
/// writes nothing).
fn transact_write(body: &[u8], ctx: &WriteContext<'_>, scope: &mut WriteScope) -> Option<()> {
    #[derive(Deserialize)]
    struct Input<'a> {
        #[serde(rename = "TransactItems", borrow)]
        transact_items: Vec<TransactItem<'a>>,
    }
    #[derive(Deserialize)]
    struct TransactItem<'a> {
        #[serde(rename = "Put", borrow, default)]
        put: Option<Target<'a>>,
        #[serde(rename = "Update", borrow, default)]
        update: Option<Target<'a>>,
        #[serde(rename = "Delete", borrow, default)]
        delete: Option<Target<'a>>,
        #[serde(rename = "ConditionCheck", borrow, default)]
        condition_check: Option<&'a RawValue>,
    }
    let input: Input = serde_json::from_slice(body).ok()?;
    for t in &input.transact_items {
        match (&t.put, &t.update, &t.delete, &t.condition_check) {
            (Some(p), None, None, None) => {
                ctx.add_item(scope, p.table_name, p.item.as_ref()?, false)
            }
            (None, Some(u), None, None) => ctx.add_item(scope, u.table_name, u.key.as_ref()?, true),
            (None, None, Some(d), None) => ctx.add_item(scope, d.table_name, d.key.as_ref()?, true),
            (None, None, None, Some(_)) => {}
            _ => return None,
        }
    }
    Some(())
}

/// What a control-plane call may change: the table it names in the member the engine reads for
/// that operation, or everything when that member is missing or unreadable.
pub fn control_scope(op: Operation, body: &[u8], region: &str) -> WriteScope {
    #[derive(Deserialize)]
    struct Input<'a> {
        #[serde(rename = "TableName", borrow, default)]
        table_name: Option<&'a str>,
        #[serde(rename = "TargetTableName", borrow, default)]
        target_table_name: Option<&'a str>,
        #[serde(rename = "GlobalTableName", borrow, default)]
        global_table_name: Option<&'a str>,
        #[serde(rename = "TableCreationParameters", borrow, default)]
        creation: Option<Creation<'a>>,
    }
    #[derive(Deserialize)]
    struct Creation<'a> {
        #[serde(rename = "TableName", borrow, default)]
        table_name: Option<&'a str>,
    }
    use Operation::*;
    let Ok(i) = serde_json::from_slice::<Input>(body) else {
        return WriteScope::everything();
    };
    let name = match op {
        CreateTable
        | UpdateTable
        | DeleteTable
        | UpdateTimeToLive
        | UpdateTableReplicaAutoScaling => i.table_name,
        RestoreTableFromBackup | RestoreTableToPointInTime => i.target_table_name,
        ImportTable => i.creation.and_then(|c| c.table_name),
        CreateGlobalTable | UpdateGlobalTable | UpdateGlobalTableSettings => i.global_table_name,
        _ => None,
    };
    let mut scope = WriteScope::default();
    match name.and_then(|n| tables_named(region, n)) {
        Some(ids) => ids.into_iter().for_each(|id| scope.add_table(id)),
        None => scope.everything = true,
    }
    scope
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{encode_key, KeyAttr};
    use crate::table::TableId;

    fn schema(hash: &str, range: Option<&str>) -> Arc<KeySchema> {
        Arc::new(KeySchema {
            table_arn: None,
            hash: hash.into(),
            range: range.map(str::to_string),
            local_indexes: vec![],
            global_indexes: vec![],
        })
    }

    fn parse(op: Operation, body: &str, schema: Option<Arc<KeySchema>>) -> WriteScope {
        let lookup = move |_: &TableId| schema.clone();
        parse_write(
            op,
            body.as_bytes(),
            &WriteContext {
                region: "r",
                schema: &lookup,
            },
        )
    }

    fn key(pairs: &[(&str, &str)]) -> Vec<u8> {
        let json: Vec<String> = pairs
            .iter()
            .map(|(_, s)| format!(r#"{{"S":"{s}"}}"#))
            .collect();
        let attrs: Vec<(&str, KeyAttr)> = pairs
            .iter()
            .zip(&json)
            .map(|((n, _), j)| (*n, serde_json::from_str(j).unwrap()))
            .collect();
        encode_key(attrs.iter().map(|(n, v)| (*n, v))).unwrap()
    }

    #[test]
    fn put_item_is_keyed_by_its_item_with_the_schema_and_widens_without_it() {
        let body = r#"{"TableName":"t","Item":{"pk":{"S":"a"},"v":{"N":"1"}}}"#;
        assert_eq!(
            parse(Operation::PutItem, body, None).tables,
            TableId::list(&["r/t"])
        );
        let with = parse(Operation::PutItem, body, Some(schema("pk", None)));
        assert_eq!(
            with.items,
            vec![ItemWrite {
                table: TableId::new("r", "t"),
                key: key(&[("pk", "a")]),
                partition: Some(key(&[("pk", "a")])),
            }]
        );
    }

    #[test]
    fn members_the_engine_ignores_never_choose_the_item() {
        // A stray Key on a PutItem: the engine writes the Item's key.
        let body = r#"{"TableName":"t","Key":{"pk":{"S":"other"}},"Item":{"pk":{"S":"a"}}}"#;
        let set = parse(Operation::PutItem, body, Some(schema("pk", None)));
        assert_eq!(set.items[0].key, key(&[("pk", "a")]));
        // A Key with more than the key attributes is not a key: widen.
        let body = r#"{"TableName":"t","Key":{"pk":{"S":"a"},"extra":{"S":"x"}}}"#;
        let set = parse(Operation::DeleteItem, body, Some(schema("pk", None)));
        assert!(set.items.is_empty());
        assert_eq!(set.tables, TableId::list(&["r/t"]));
        // Without a schema an UpdateItem widens to its table.
        let body = r#"{"TableName":"t","Key":{"pk":{"S":"a"}}}"#;
        assert_eq!(
            parse(Operation::UpdateItem, body, None).tables,
            TableId::list(&["r/t"])
        );
    }

    #[test]
    fn transact_and_batch_writes_name_every_key() {
        let s = Some(schema("k", None));
        let tw = r#"{"TransactItems":[{"Update":{"TableName":"a","Key":{"k":{"S":"1"}}}},{"ConditionCheck":{"TableName":"c","Key":{"k":{"S":"9"}}}},{"Delete":{"TableName":"b","Key":{"k":{"S":"2"}}}}]}"#;
        let set = parse(Operation::TransactWriteItems, tw, s.clone());
        let tables: Vec<_> = set.items.iter().map(|i| i.table.clone()).collect();
        assert_eq!(tables, TableId::list(&["r/a", "r/b"]));
        let bw = r#"{"RequestItems":{"a":[{"DeleteRequest":{"Key":{"k":{"S":"1"}}}},{"PutRequest":{"Item":{"k":{"S":"2"}}}}]}}"#;
        let set = parse(Operation::BatchWriteItem, bw, s.clone());
        assert_eq!(set.items.len(), 2);
        assert!(!set.everything);
        // Two members in one transaction item: DynamoDB refuses it, ddbcache widens.
        let odd = r#"{"TransactItems":[{"Put":{"TableName":"a","Item":{"k":{"S":"1"}}},"Delete":{"TableName":"b","Key":{"k":{"S":"2"}}}}]}"#;
        assert!(parse(Operation::TransactWriteItems, odd, s).everything);
    }

    #[test]
    fn arns_and_unintelligible_writes_widen() {
        let set = parse(
            Operation::PutItem,
            r#"{"TableName":"arn:aws:dynamodb:x-1:123456789012:table/t","Item":{"pk":{"S":"a"}}}"#,
            Some(schema("pk", None)),
        );
        assert_eq!(set.tables, TableId::list(&["x-1/t", "r/t"]));
        assert!(parse(Operation::PutItem, r#"{"Item":{}}"#, None).everything);
        assert!(
            parse(
                Operation::PutItem,
                r#"{"TableName":"arn:bad","Item":{}}"#,
                None
            )
            .everything
        );
        assert!(parse(Operation::PutItem, "[]", None).everything);
    }

    #[test]
    fn control_calls_name_the_table_their_operation_changes() {
        let scope = |op, body: &str| control_scope(op, body.as_bytes(), "r");
        assert_eq!(
            scope(
                Operation::RestoreTableFromBackup,
                r#"{"TargetTableName":"restored","BackupArn":"x"}"#
            )
            .tables,
            TableId::list(&["r/restored"])
        );
        assert_eq!(
            scope(
                Operation::ImportTable,
                r#"{"TableCreationParameters":{"TableName":"imp"}}"#
            )
            .tables,
            TableId::list(&["r/imp"])
        );
        // DeleteTable changes TableName; a stray TargetTableName does not steer it.
        assert_eq!(
            scope(
                Operation::DeleteTable,
                r#"{"TableName":"t","TargetTableName":"other"}"#
            )
            .tables,
            TableId::list(&["r/t"])
        );
        assert!(scope(Operation::DeleteTable, r#"{"TargetTableName":"other"}"#).everything);
        assert!(scope(Operation::UpdateTable, "{}").everything);
    }
}
