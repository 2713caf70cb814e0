//! Table names rewritten wherever a request or an answer holds one: the JSON side of table
//! aliases (the proxy decides what a name becomes; this module finds where names stand).
//!
//! A request names tables in `TableName` (a name or a table ARN) and in the members each
//! operation has for it: `RequestItems` keys, `TransactItems[].Put.TableName`, PartiQL statements,
//! `SourceTableName`, `ResourceArn`, `StreamArn`, ... (`request_sites`). An answer names them
//! in `ConsumedCapacity`, `Responses`/`UnprocessedKeys`/`UnprocessedItems`/`ItemCollectionMetrics`
//! keys, table descriptions (`TableName`, `TableArn`, `LatestStreamArn`, index ARNs), backup,
//! export, import and stream descriptions, and in error messages (`answer_sites`). Items, keys,
//! expressions and values are never touched: the walk goes down only the members that lead to a
//! name, and an object is written again only when a name in it changed, its other members byte for
//! byte as they came. Opaque identifiers that embed a name (a `BackupArn`, a shard iterator) are
//! left alone: DynamoDB made them and takes them back as they are.

use std::ops::Range;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::partiql::{self, Statement};
use super::Operation;

/// What a place in a body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// A table's name or ARN (`arn:...:dynamodb:region:account:table/NAME`, and what follows the
    /// name in a stream's or an index's ARN).
    Table,
    /// A PartiQL statement: its table identifier.
    Statement,
    /// Free text naming tables: an error message.
    Message,
}

/// What a name becomes.
pub trait Renames {
    /// The new name of table `name`; `region` is an ARN's (`None` for a plain name). `None`:
    /// unchanged.
    fn rename(&mut self, region: Option<&str>, name: &str) -> Option<String>;
    /// Names to replace in free text, as `(from, to)`.
    fn in_text(&self) -> Vec<(String, String)>;
}

/// Why a body could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// A PartiQL statement whose table ddbcache cannot find.
    #[error("the table of the PartiQL statement `{0}` cannot be found")]
    Statement(String),
}

/// One step of a path to a name.
#[derive(Debug, Clone, Copy)]
enum Seg {
    /// The object member of that name.
    Member(&'static str),
    /// Every member of an object (a transaction item's `Put`, `Update`, ...).
    AnyMember,
    /// Every element of an array; an object is taken as the one element (`ConsumedCapacity` is
    /// one or a list).
    Each,
    /// The object's member names themselves (`RequestItems`): last on a path.
    Keys,
}

use Seg::*;

type Path = (&'static [Seg], Site);

/// A table description's names (`Table`, `TableDescription`).
macro_rules! description {
    ($at:literal) => {
        [
            (&[Member($at), Member("TableName")], Site::Table),
            (&[Member($at), Member("TableArn")], Site::Table),
            (&[Member($at), Member("LatestStreamArn")], Site::Table),
            (
                &[
                    Member($at),
                    Member("GlobalSecondaryIndexes"),
                    Each,
                    Member("IndexArn"),
                ],
                Site::Table,
            ),
            (
                &[
                    Member($at),
                    Member("LocalSecondaryIndexes"),
                    Each,
                    Member("IndexArn"),
                ],
                Site::Table,
            ),
            (
                &[
                    Member($at),
                    Member("RestoreSummary"),
                    Member("SourceTableArn"),
                ],
                Site::Table,
            ),
        ]
    };
}

const TABLE_NAME: &[Path] = &[(&[Member("TableName")], Site::Table)];
const REQUEST_ITEMS: &[Path] = &[(&[Member("RequestItems"), Keys], Site::Table)];
const TRANSACT_ITEMS: &[Path] = &[(
    &[
        Member("TransactItems"),
        Each,
        AnyMember,
        Member("TableName"),
    ],
    Site::Table,
)];
const STATEMENT: &[Path] = &[(&[Member("Statement")], Site::Statement)];
const STATEMENTS: &[Path] = &[(
    &[Member("Statements"), Each, Member("Statement")],
    Site::Statement,
)];
const TRANSACT_STATEMENTS: &[Path] = &[(
    &[Member("TransactStatements"), Each, Member("Statement")],
    Site::Statement,
)];
const RESTORE_TO_POINT_IN_TIME: &[Path] = &[
    (&[Member("SourceTableName")], Site::Table),
    (&[Member("SourceTableArn")], Site::Table),
    (&[Member("TargetTableName")], Site::Table),
];
const TARGET_TABLE_NAME: &[Path] = &[(&[Member("TargetTableName")], Site::Table)];
const TABLE_ARN: &[Path] = &[(&[Member("TableArn")], Site::Table)];
const IMPORT_TABLE: &[Path] = &[(
    &[Member("TableCreationParameters"), Member("TableName")],
    Site::Table,
)];
const RESOURCE_ARN: &[Path] = &[(&[Member("ResourceArn")], Site::Table)];
const STREAM_ARN: &[Path] = &[(&[Member("StreamArn")], Site::Table)];
const GLOBAL_TABLE_NAME: &[Path] = &[(&[Member("GlobalTableName")], Site::Table)];
/// An operation ddbcache does not know: the members that name a table in the operations it
/// knows, at the top.
const UNKNOWN: &[Path] = &[
    (&[Member("TableName")], Site::Table),
    (&[Member("TableArn")], Site::Table),
    (&[Member("ResourceArn")], Site::Table),
];

/// Where a request of `op` names tables.
fn request_sites(op: Operation) -> &'static [Path] {
    use Operation::*;
    match op {
        GetItem
        | PutItem
        | UpdateItem
        | DeleteItem
        | Query
        | Scan
        | CreateTable
        | UpdateTable
        | DeleteTable
        | DescribeTable
        | UpdateTimeToLive
        | DescribeTimeToLive
        | UpdateTableReplicaAutoScaling
        | DescribeTableReplicaAutoScaling
        | CreateBackup
        | ListBackups
        | DescribeContinuousBackups
        | UpdateContinuousBackups
        | DescribeContributorInsights
        | ListContributorInsights
        | UpdateContributorInsights
        | DescribeKinesisStreamingDestination
        | EnableKinesisStreamingDestination
        | DisableKinesisStreamingDestination
        | UpdateKinesisStreamingDestination
        | ListStreams => TABLE_NAME,
        BatchGetItem | BatchWriteItem => REQUEST_ITEMS,
        TransactGetItems | TransactWriteItems => TRANSACT_ITEMS,
        ExecuteStatement => STATEMENT,
        BatchExecuteStatement => STATEMENTS,
        ExecuteTransaction => TRANSACT_STATEMENTS,
        RestoreTableFromBackup => TARGET_TABLE_NAME,
        RestoreTableToPointInTime => RESTORE_TO_POINT_IN_TIME,
        ExportTableToPointInTime | ListExports | ListImports => TABLE_ARN,
        ImportTable => IMPORT_TABLE,
        TagResource | UntagResource | ListTagsOfResource | GetResourcePolicy
        | PutResourcePolicy | DeleteResourcePolicy => RESOURCE_ARN,
        DescribeStream | GetShardIterator => STREAM_ARN,
        CreateGlobalTable
        | UpdateGlobalTable
        | DescribeGlobalTable
        | DescribeGlobalTableSettings
        | UpdateGlobalTableSettings => GLOBAL_TABLE_NAME,
        Unknown | UnknownStreams => UNKNOWN,
        ListTables | DescribeEndpoints | DescribeLimits | DeleteBackup | DescribeBackup
        | DescribeExport | DescribeImport | ListGlobalTables | GetRecords => &[],
    }
}

/// What every answer may hold: consumed capacity, and an error's message.
const ANY_ANSWER: &[Path] = &[
    (
        &[Member("ConsumedCapacity"), Each, Member("TableName")],
        Site::Table,
    ),
    (&[Member("message")], Site::Message),
    (&[Member("Message")], Site::Message),
    (
        &[Member("CancellationReasons"), Each, Member("Message")],
        Site::Message,
    ),
];
const TABLE: &[Path] = &description!("Table");
const TABLE_DESCRIPTION: &[Path] = &description!("TableDescription");
const BATCH_GET_ANSWER: &[Path] = &[
    (&[Member("Responses"), Keys], Site::Table),
    (&[Member("UnprocessedKeys"), Keys], Site::Table),
];
const BATCH_WRITE_ANSWER: &[Path] = &[
    (&[Member("UnprocessedItems"), Keys], Site::Table),
    (&[Member("ItemCollectionMetrics"), Keys], Site::Table),
];
const TRANSACT_WRITE_ANSWER: &[Path] = &[(&[Member("ItemCollectionMetrics"), Keys], Site::Table)];
const BATCH_STATEMENT_ANSWER: &[Path] = &[
    (
        &[Member("Responses"), Each, Member("TableName")],
        Site::Table,
    ),
    (
        &[
            Member("Responses"),
            Each,
            Member("Error"),
            Member("Message"),
        ],
        Site::Message,
    ),
];
const BACKUPS_ANSWER: &[Path] = &[
    (
        &[Member("BackupSummaries"), Each, Member("TableName")],
        Site::Table,
    ),
    (
        &[Member("BackupSummaries"), Each, Member("TableArn")],
        Site::Table,
    ),
];
const BACKUP_ANSWER: &[Path] = &[
    (
        &[
            Member("BackupDescription"),
            Member("SourceTableDetails"),
            Member("TableName"),
        ],
        Site::Table,
    ),
    (
        &[
            Member("BackupDescription"),
            Member("SourceTableDetails"),
            Member("TableArn"),
        ],
        Site::Table,
    ),
];
const EXPORT_ANSWER: &[Path] = &[(
    &[Member("ExportDescription"), Member("TableArn")],
    Site::Table,
)];
const IMPORT_ANSWER: &[Path] = &[
    (
        &[Member("ImportTableDescription"), Member("TableArn")],
        Site::Table,
    ),
    (
        &[
            Member("ImportTableDescription"),
            Member("TableCreationParameters"),
            Member("TableName"),
        ],
        Site::Table,
    ),
];
const STREAMS_ANSWER: &[Path] = &[
    (&[Member("Streams"), Each, Member("TableName")], Site::Table),
    (&[Member("Streams"), Each, Member("StreamArn")], Site::Table),
];
const STREAM_ANSWER: &[Path] = &[
    (
        &[Member("StreamDescription"), Member("TableName")],
        Site::Table,
    ),
    (
        &[Member("StreamDescription"), Member("StreamArn")],
        Site::Table,
    ),
];
const AUTO_SCALING_ANSWER: &[Path] = &[(
    &[Member("TableAutoScalingDescription"), Member("TableName")],
    Site::Table,
)];

/// Where an answer to `op` names tables, besides `ANY_ANSWER`'s places.
fn answer_sites(op: Operation) -> &'static [Path] {
    use Operation::*;
    match op {
        BatchGetItem => BATCH_GET_ANSWER,
        BatchWriteItem => BATCH_WRITE_ANSWER,
        TransactWriteItems => TRANSACT_WRITE_ANSWER,
        BatchExecuteStatement => BATCH_STATEMENT_ANSWER,
        DescribeTable => TABLE,
        CreateTable
        | UpdateTable
        | DeleteTable
        | RestoreTableFromBackup
        | RestoreTableToPointInTime => TABLE_DESCRIPTION,
        ListBackups => BACKUPS_ANSWER,
        DescribeBackup | DeleteBackup => BACKUP_ANSWER,
        ExportTableToPointInTime | DescribeExport => EXPORT_ANSWER,
        ImportTable | DescribeImport => IMPORT_ANSWER,
        ListStreams => STREAMS_ANSWER,
        DescribeStream => STREAM_ANSWER,
        DescribeTableReplicaAutoScaling | UpdateTableReplicaAutoScaling => AUTO_SCALING_ANSWER,
        DescribeKinesisStreamingDestination
        | EnableKinesisStreamingDestination
        | DisableKinesisStreamingDestination
        | UpdateKinesisStreamingDestination
        | DescribeContributorInsights
        | UpdateContributorInsights => TABLE_NAME,
        _ => &[],
    }
}

/// A request of `op` with its table names renamed; `Ok(None)` when nothing changed.
pub fn rewrite_request(
    op: Operation,
    body: &[u8],
    renames: &mut dyn Renames,
) -> Result<Option<Vec<u8>>, RewriteError> {
    rewrite(body, &[request_sites(op)], renames)
}

/// An answer to `op` with its table names renamed; `None` when nothing changed (or the body is
/// not a JSON object).
pub fn rewrite_answer(op: Operation, body: &[u8], renames: &mut dyn Renames) -> Option<Vec<u8>> {
    rewrite(body, &[ANY_ANSWER, answer_sites(op)], renames)
        .ok()
        .flatten()
}

fn rewrite(
    body: &[u8],
    sites: &[&'static [Path]],
    renames: &mut dyn Renames,
) -> Result<Option<Vec<u8>>, RewriteError> {
    let Ok(root) = serde_json::from_slice::<&RawValue>(body) else {
        return Ok(None);
    };
    let paths: Vec<(&[Seg], Site)> = sites.iter().flat_map(|s| s.iter().copied()).collect();
    Ok(walk(root, &paths, renames)?.map(String::into_bytes))
}

/// The value with the names `paths` lead to renamed; `None` when nothing changed.
fn walk(
    value: &RawValue,
    paths: &[(&[Seg], Site)],
    renames: &mut dyn Renames,
) -> Result<Option<String>, RewriteError> {
    if paths.is_empty() {
        return Ok(None);
    }
    if let Some((_, site)) = paths.iter().find(|(p, _)| p.is_empty()) {
        return rename_value(value, *site, renames);
    }
    let text = value.get();
    if text.starts_with('{') {
        if paths.iter().any(|(p, _)| matches!(p.first(), Some(Each))) {
            // `Each` on an object: the object is the one element.
            let own: Vec<(&[Seg], Site)> = paths
                .iter()
                .map(|(p, s)| match p.first() {
                    Some(Each) => (&p[1..], *s),
                    _ => (*p, *s),
                })
                .collect();
            return walk(value, &own, renames);
        }
        let Ok(Members(members)) = serde_json::from_str::<Members>(text) else {
            return Ok(None);
        };
        let mut changed = false;
        let mut out: Vec<(String, Option<String>)> = Vec::with_capacity(members.len());
        for (key, member) in &members {
            let mut key = key.clone();
            let mut below: Vec<(&[Seg], Site)> = Vec::new();
            for (p, site) in paths {
                match p.first() {
                    Some(Member(m)) if m == &key => below.push((&p[1..], *site)),
                    Some(AnyMember) => below.push((&p[1..], *site)),
                    Some(Keys) => {
                        if let Some(new) = rename_string(&key, *site, renames)? {
                            key = new;
                            changed = true;
                        }
                    }
                    _ => {}
                }
            }
            let new = walk(member, &below, renames)?;
            changed |= new.is_some();
            out.push((key, new));
        }
        if !changed {
            return Ok(None);
        }
        let mut s = String::with_capacity(text.len() + 16);
        s.push('{');
        for (i, ((key, new), (_, old))) in out.iter().zip(&members).enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&serde_json::to_string(key).expect("a string serializes"));
            s.push(':');
            s.push_str(new.as_deref().unwrap_or(old.get()));
        }
        s.push('}');
        return Ok(Some(s));
    }
    if text.starts_with('[') {
        let each: Vec<(&[Seg], Site)> = paths
            .iter()
            .filter_map(|(p, s)| match p.first() {
                Some(Each) => Some((&p[1..], *s)),
                _ => None,
            })
            .collect();
        let Ok(elements) = serde_json::from_str::<Vec<&RawValue>>(text) else {
            return Ok(None);
        };
        let mut new = Vec::with_capacity(elements.len());
        for e in &elements {
            new.push(walk(e, &each, renames)?);
        }
        if new.iter().all(Option::is_none) {
            return Ok(None);
        }
        let parts: Vec<&str> = new
            .iter()
            .zip(&elements)
            .map(|(n, e)| n.as_deref().unwrap_or(e.get()))
            .collect();
        return Ok(Some(format!("[{}]", parts.join(","))));
    }
    Ok(None)
}

/// A JSON string site, renamed (the JSON text of the new string).
fn rename_value(
    value: &RawValue,
    site: Site,
    renames: &mut dyn Renames,
) -> Result<Option<String>, RewriteError> {
    let Ok(s) = serde_json::from_str::<String>(value.get()) else {
        return Ok(None);
    };
    Ok(rename_string(&s, site, renames)?
        .map(|new| serde_json::to_string(&new).expect("a string serializes")))
}

fn rename_string(
    s: &str,
    site: Site,
    renames: &mut dyn Renames,
) -> Result<Option<String>, RewriteError> {
    match site {
        Site::Table => Ok(rename_table(s, renames)),
        Site::Statement => rename_statement(s, renames),
        Site::Message => Ok(rename_text(s, &renames.in_text())),
    }
}

/// A table's name, or the name in a table's (or its stream's, or index's) ARN.
fn rename_table(s: &str, renames: &mut dyn Renames) -> Option<String> {
    match arn_name(s) {
        Some((region, name)) => {
            let new = renames.rename(Some(region), &s[name.clone()])?;
            Some(format!("{}{new}{}", &s[..name.start], &s[name.end..]))
        }
        None if s.starts_with("arn:") => None,
        None => renames.rename(None, s),
    }
}

/// `arn:<partition>:dynamodb:<region>:<account>:table/<name>[/...]`: the region, and where the
/// name stands.
fn arn_name(s: &str) -> Option<(&str, Range<usize>)> {
    let mut parts = s.splitn(6, ':');
    let ("arn", Some(_), Some("dynamodb"), Some(region), Some(_), Some(resource)) = (
        parts.next()?,
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let name = resource.strip_prefix("table/")?;
    let len = name.find('/').unwrap_or(name.len());
    let start = s.len() - name.len();
    (len > 0 && !region.is_empty()).then_some((region, start..start + len))
}

/// A statement with its table renamed.
fn rename_statement(s: &str, renames: &mut dyn Renames) -> Result<Option<String>, RewriteError> {
    let table = match partiql::statement(s) {
        Statement::Reads(Some(t)) | Statement::Writes(t) => t,
        Statement::Reads(None) | Statement::Unknown => {
            return Err(RewriteError::Statement(s.to_string()))
        }
    };
    Ok(renames.rename(None, &table.name).map(|new| {
        format!(
            "{}{}{}",
            &s[..table.span.start],
            partiql::quoted(&new),
            &s[table.span.end..]
        )
    }))
}

/// Free text with each `from` that stands as a whole name (not inside a longer name) replaced.
fn rename_text(s: &str, pairs: &[(String, String)]) -> Option<String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    let mut out = s.to_string();
    let mut changed = false;
    for (from, to) in pairs {
        if from.is_empty() {
            continue;
        }
        let mut next = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.find(from.as_str()) {
            let before = rest[..i].chars().next_back();
            let after = rest[i + from.len()..].chars().next();
            next.push_str(&rest[..i]);
            // A name may end a sentence: a trailing dot is punctuation, not part of it.
            let after_is_name = after.is_some_and(|c| {
                is_name_char(c)
                    && !(c == '.'
                        && rest[i + from.len() + 1..]
                            .chars()
                            .next()
                            .is_none_or(|n| !is_name_char(n)))
            });
            if before.is_some_and(is_name_char) || after_is_name {
                next.push_str(from);
            } else {
                next.push_str(to);
                changed = true;
            }
            rest = &rest[i + from.len()..];
        }
        next.push_str(rest);
        out = next;
    }
    changed.then_some(out)
}

/// An object's members in order, their values as they came.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    members.push((key, map.next_value::<&'a RawValue>()?));
                }
                Ok(Members(members))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Members<'a>, A::Error> {
                Err(serde::de::Error::custom("an array is not an object"))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `orders` → `orders-restored` (in every region), remembering what was asked.
    #[derive(Default)]
    struct Restored {
        asked: Vec<(Option<String>, String)>,
    }

    impl Renames for Restored {
        fn rename(&mut self, region: Option<&str>, name: &str) -> Option<String> {
            self.asked
                .push((region.map(str::to_string), name.to_string()));
            (name == "orders").then(|| "orders-restored".to_string())
        }
        fn in_text(&self) -> Vec<(String, String)> {
            vec![("orders-restored".into(), "orders".into())]
        }
    }

    fn request(op: Operation, body: &str) -> String {
        let out = rewrite_request(op, body.as_bytes(), &mut Restored::default()).unwrap();
        String::from_utf8(out.unwrap_or_else(|| body.as_bytes().to_vec())).unwrap()
    }

    fn answer(op: Operation, body: &str) -> String {
        let mut back = Back;
        let out = rewrite_answer(op, body.as_bytes(), &mut back);
        String::from_utf8(out.unwrap_or_else(|| body.as_bytes().to_vec())).unwrap()
    }

    /// `orders-restored` → `orders`, as an answer is mapped back.
    struct Back;

    impl Renames for Back {
        fn rename(&mut self, _: Option<&str>, name: &str) -> Option<String> {
            (name == "orders-restored").then(|| "orders".to_string())
        }
        fn in_text(&self) -> Vec<(String, String)> {
            vec![("orders-restored".into(), "orders".into())]
        }
    }

    #[test]
    fn requests_are_rewritten_where_they_name_tables_and_nowhere_else() {
        use Operation::*;
        // Items, keys and values that happen to hold the name are not names.
        let get = r#"{"TableName":"orders","Key":{"TableName":{"S":"orders"}},"ProjectionExpression":"orders"}"#;
        assert_eq!(
            request(GetItem, get),
            r#"{"TableName":"orders-restored","Key":{"TableName":{"S":"orders"}},"ProjectionExpression":"orders"}"#
        );
        assert_eq!(
            request(
                GetItem,
                r#"{"TableName": "arn:aws:dynamodb:eu-west-1:111122223333:table/orders", "Key" : {}}"#
            ),
            r#"{"TableName":"arn:aws:dynamodb:eu-west-1:111122223333:table/orders-restored","Key":{}}"#
        );
        assert_eq!(
            request(
                BatchWriteItem,
                r#"{"RequestItems":{"orders":[{"PutRequest":{"Item":{"orders":{"S":"x"}}}}],"other":[]}}"#
            ),
            r#"{"RequestItems":{"orders-restored":[{"PutRequest":{"Item":{"orders":{"S":"x"}}}}],"other":[]}}"#
        );
        assert_eq!(
            request(
                TransactWriteItems,
                r#"{"TransactItems":[{"Put":{"TableName":"orders"}},{"ConditionCheck":{"TableName":"orders","Key":{}}}],"ClientRequestToken":"orders"}"#
            ),
            r#"{"TransactItems":[{"Put":{"TableName":"orders-restored"}},{"ConditionCheck":{"TableName":"orders-restored","Key":{}}}],"ClientRequestToken":"orders"}"#
        );
        assert_eq!(
            request(
                ExecuteStatement,
                r#"{"Statement":"SELECT * FROM orders WHERE pk = 'orders'"}"#
            ),
            r#"{"Statement":"SELECT * FROM \"orders-restored\" WHERE pk = 'orders'"}"#
        );
        assert_eq!(
            request(
                DescribeStream,
                r#"{"StreamArn":"arn:aws:dynamodb:us-east-1:111122223333:table/orders/stream/2026-01-01T00:00:00.000"}"#
            ),
            r#"{"StreamArn":"arn:aws:dynamodb:us-east-1:111122223333:table/orders-restored/stream/2026-01-01T00:00:00.000"}"#
        );
        let untouched = r#"{"TableName":"other","Limit":1.0}"#;
        assert_eq!(
            rewrite_request(Query, untouched.as_bytes(), &mut Restored::default()),
            Ok(None)
        );
        assert!(matches!(
            rewrite_request(
                ExecuteStatement,
                br#"{"Statement":"UPSERT orders"}"#,
                &mut Restored::default()
            ),
            Err(RewriteError::Statement(_))
        ));
    }

    #[test]
    fn a_plain_name_is_asked_without_a_region_and_an_arn_with_its_own() {
        let mut r = Restored::default();
        let body = br#"{"RequestItems":{"orders":{},"arn:aws:dynamodb:eu-west-1:111122223333:table/t":{},"arn:aws:s3:::bucket":{}}}"#;
        rewrite_request(Operation::BatchGetItem, body, &mut r).unwrap();
        assert_eq!(
            r.asked,
            vec![
                (None, "orders".to_string()),
                (Some("eu-west-1".to_string()), "t".to_string())
            ]
        );
    }

    #[test]
    fn answers_are_mapped_back() {
        use Operation::*;
        let batch = r#"{"Responses":{"orders-restored":[{"pk":{"S":"orders-restored"}}]},"UnprocessedKeys":{},"ConsumedCapacity":[{"TableName":"orders-restored","CapacityUnits":1.0}]}"#;
        assert_eq!(
            answer(BatchGetItem, batch),
            r#"{"Responses":{"orders":[{"pk":{"S":"orders-restored"}}]},"UnprocessedKeys":{},"ConsumedCapacity":[{"TableName":"orders","CapacityUnits":1.0}]}"#
        );
        let get = r#"{"Item":{"a":{"S":"orders-restored"}},"ConsumedCapacity":{"TableName":"orders-restored","CapacityUnits":0.5}}"#;
        assert_eq!(
            answer(GetItem, get),
            r#"{"Item":{"a":{"S":"orders-restored"}},"ConsumedCapacity":{"TableName":"orders","CapacityUnits":0.5}}"#
        );
        let described = r#"{"Table":{"TableName":"orders-restored","TableArn":"arn:aws:dynamodb:r:1:table/orders-restored","LatestStreamArn":"arn:aws:dynamodb:r:1:table/orders-restored/stream/x","GlobalSecondaryIndexes":[{"IndexName":"g","IndexArn":"arn:aws:dynamodb:r:1:table/orders-restored/index/g"}]}}"#;
        assert_eq!(
            answer(DescribeTable, described),
            r#"{"Table":{"TableName":"orders","TableArn":"arn:aws:dynamodb:r:1:table/orders","LatestStreamArn":"arn:aws:dynamodb:r:1:table/orders/stream/x","GlobalSecondaryIndexes":[{"IndexName":"g","IndexArn":"arn:aws:dynamodb:r:1:table/orders/index/g"}]}}"#
        );
        let error = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found: Table: orders-restored not found. orders-restored.x orders-restored2 my.orders-restored"}"#;
        assert_eq!(
            answer(GetItem, error),
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found: Table: orders not found. orders-restored.x orders-restored2 my.orders-restored"}"#
        );
        // An answer naming nothing is left as it came.
        let query = br#"{"Items":[],"Count":0,"ScannedCount":0}"#;
        assert_eq!(rewrite_answer(Query, query, &mut Back), None);
        assert_eq!(rewrite_answer(Query, b"not json", &mut Back), None);
    }
}
