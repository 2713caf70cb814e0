//! Upstream answers, read just enough to fill the caches and learn key schemas: where a GetItem's
//! `Item` sits in its body, a BatchGetItem's per-table items and unprocessed keys, the key of a
//! returned item, a table's key schema and replica regions from its DescribeTable, and an answer's
//! body without its `ConsumedCapacity` (what is stored: a hit consumes none).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::canonical::{encode_key, KeyAttr};
use super::region::Region;
use super::table::KeySchema;
use super::Operation;

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

/// Whether an answer (its HTTP status and body) says the table's key is not what ddbcache thought,
/// or the table is gone: the key schema is then forgotten and fetched again when next needed.
pub fn contradicts_schema(status: u16, body: &[u8]) -> bool {
    if status != 400 {
        return false;
    }
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    has(b"ResourceNotFoundException")
        || has(b"does not match the schema")
        || has(b"Missing the key")
}

/// Whether an answer (its HTTP status and body) is DynamoDB throttling the request: a table's or
/// index's throughput, or the account's request rate. (`ThrottlingReasons`, where DynamoDB adds
/// them, say which; any of them is throttling.)
pub fn is_throttling(status: u16, body: &[u8]) -> bool {
    if status != 400 {
        return false;
    }
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    has(b"ProvisionedThroughputExceededException")
        || has(b"ThrottlingException")
        || has(b"RequestLimitExceeded")
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

/// Whether an answer to a cacheable read has the shape DynamoDB's answers to `op` have: known
/// fields only, every item (and `LastEvaluatedKey`) an attribute-value map checked all the way
/// down, `Count` and `ScannedCount` on a Query or Scan. Anything else — an error body under a
/// 200, a proxy's page, valid JSON of another shape — is not an answer to store.
pub fn has_answer_shape(op: Operation, body: &[u8]) -> bool {
    use serde::de::IgnoredAny;
    type Object = serde_json::Map<String, serde_json::Value>;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct GetItem {
        #[serde(rename = "Item")]
        _item: Option<AttributeMap>,
        #[serde(rename = "ConsumedCapacity")]
        _consumed_capacity: Option<Object>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Query {
        #[serde(rename = "Items")]
        _items: Option<Vec<AttributeMap>>,
        #[serde(rename = "Count")]
        _count: u64,
        #[serde(rename = "ScannedCount")]
        _scanned_count: u64,
        #[serde(rename = "LastEvaluatedKey")]
        _last_evaluated_key: Option<AttributeMap>,
        #[serde(rename = "ConsumedCapacity")]
        _consumed_capacity: Option<Object>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct BatchGetItem {
        #[serde(rename = "Responses")]
        _responses: Option<HashMap<String, Vec<AttributeMap>>>,
        #[serde(rename = "UnprocessedKeys")]
        _unprocessed_keys: Option<HashMap<String, IgnoredAny>>,
        #[serde(rename = "ConsumedCapacity")]
        _consumed_capacity: Option<Vec<Object>>,
    }
    match op {
        Operation::GetItem => serde_json::from_slice::<GetItem>(body).is_ok(),
        Operation::Query | Operation::Scan => serde_json::from_slice::<Query>(body).is_ok(),
        Operation::BatchGetItem => serde_json::from_slice::<BatchGetItem>(body).is_ok(),
        _ => false,
    }
}

/// An attribute-value map, checked and thrown away: `{"name": <attribute value>, ...}`.
struct AttributeMap;

/// One attribute value: an object with exactly one of DynamoDB's type tags, its value of the
/// type that tag takes.
struct AttributeValue;

#[derive(Deserialize)]
#[allow(clippy::upper_case_acronyms)]
enum TypeTag {
    S,
    N,
    B,
    SS,
    NS,
    BS,
    M,
    L,
    NULL,
    BOOL,
}

/// A JSON string, not kept.
struct Str;
/// A JSON boolean, not kept.
struct Bool;

impl<'de> Deserialize<'de> for AttributeMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AttributeMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an attribute-value map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AttributeMap, A::Error> {
                while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    map.next_value::<AttributeValue>()?;
                }
                Ok(AttributeMap)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for AttributeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AttributeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an attribute value such as {\"S\": \"x\"}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AttributeValue, A::Error> {
                use serde::de::Error;
                let Some(tag) = map.next_key::<TypeTag>()? else {
                    return Err(A::Error::custom("an attribute value needs a type"));
                };
                match tag {
                    TypeTag::S | TypeTag::N | TypeTag::B => map.next_value::<Str>().map(drop)?,
                    TypeTag::SS | TypeTag::NS | TypeTag::BS => {
                        map.next_value::<Vec<Str>>().map(drop)?
                    }
                    TypeTag::M => map.next_value::<AttributeMap>().map(drop)?,
                    TypeTag::L => map.next_value::<Vec<AttributeValue>>().map(drop)?,
                    TypeTag::NULL | TypeTag::BOOL => map.next_value::<Bool>().map(drop)?,
                }
                if map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::custom("an attribute value has one type"));
                }
                Ok(AttributeValue)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Str;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, _: &str) -> Result<Str, E> {
                Ok(Str)
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Bool;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a boolean")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Bool, E> {
                Ok(Bool)
            }
        }
        d.deserialize_bool(V)
    }
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

/// A DescribeTable answer, `Table` read as `T` (what one reader wants of it).
#[derive(Deserialize)]
struct DescribeTableOutput<T> {
    #[serde(rename = "Table")]
    table: T,
}

/// Most attributes one side (HASH or RANGE) of a global secondary index's key may have: four since
/// multi-attribute keys (November 2025).
pub const MAX_INDEX_KEY_ATTRIBUTES: usize = 4;

/// A table's key schema and indexes, from a DescribeTable answer. `None` when the answer is not
/// one ddbcache can read exactly — the schema then stays unknown and every write to the table
/// invalidates all its entries, rather than the entries a misread key would name:
///
/// - the table's key must be one HASH attribute and at most one RANGE attribute;
/// - a local secondary index's key must be the table's HASH attribute and one RANGE attribute
///   (ddbcache relies on it sharing the table's partitions);
/// - a global secondary index's key may have one to four HASH attributes and up to four RANGE
///   attributes (multi-attribute keys, `"KeySchema":[{"AttributeName":"tournamentId",
///   "KeyType":"HASH"},{"AttributeName":"region","KeyType":"HASH"},...]`), none named twice;
/// - every key element is HASH or RANGE.
///
/// What a global index is keyed by does not change what ddbcache invalidates (its Query entries
/// depend on every write to the table), so only its name is kept.
pub fn describe_table_schema(body: &[u8]) -> Option<KeySchema> {
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
    struct Index {
        #[serde(rename = "IndexName")]
        index_name: String,
        #[serde(rename = "KeySchema")]
        key_schema: Vec<KeyElement>,
    }
    let out: DescribeTableOutput<Desc> = serde_json::from_slice(body).ok()?;
    let (mut hash, range) = key_sides(out.table.key_schema)?;
    if hash.len() != 1 || range.len() > 1 {
        return None;
    }
    let hash = hash.pop()?;
    let mut local_indexes = Vec::with_capacity(out.table.local_indexes.len());
    for index in out.table.local_indexes {
        let (index_hash, index_range) = key_sides(index.key_schema)?;
        if index_hash != [hash.as_str()] || index_range.len() != 1 {
            return None;
        }
        local_indexes.push(index.index_name);
    }
    let mut global_indexes = Vec::with_capacity(out.table.global_indexes.len());
    for index in out.table.global_indexes {
        let (index_hash, index_range) = key_sides(index.key_schema)?;
        let sides = [index_hash.len(), index_range.len()];
        if !(1..=MAX_INDEX_KEY_ATTRIBUTES).contains(&sides[0])
            || sides[1] > MAX_INDEX_KEY_ATTRIBUTES
        {
            return None;
        }
        global_indexes.push(index.index_name);
    }
    Some(KeySchema {
        table_arn: out.table.table_arn,
        hash,
        range: range.into_iter().next(),
        local_indexes,
        global_indexes,
    })
}

/// One element of a `KeySchema`.
#[derive(Deserialize)]
struct KeyElement {
    #[serde(rename = "AttributeName")]
    attribute_name: String,
    #[serde(rename = "KeyType")]
    key_type: String,
}

/// A key's HASH and RANGE attributes, each in the order given; `None` for a key type other than
/// HASH and RANGE, or an attribute named twice.
fn key_sides(elements: Vec<KeyElement>) -> Option<(Vec<String>, Vec<String>)> {
    let (mut hash, mut range) = (Vec::new(), Vec::new());
    for e in elements {
        if hash.contains(&e.attribute_name) || range.contains(&e.attribute_name) {
            return None;
        }
        match e.key_type.as_str() {
            "HASH" => hash.push(e.attribute_name),
            "RANGE" => range.push(e.attribute_name),
            _ => return None,
        }
    }
    Some((hash, range))
}

/// The regions holding an active replica of a global table (version 2019.11.21), from its
/// DescribeTable answer (`Table.Replicas`), in the order DynamoDB lists them; empty for a table
/// that is not global, and for names that are not region names. Replicas being created, deleted
/// or cut off (`REGION_DISABLED`, `INACCESSIBLE_ENCRYPTION_CREDENTIALS`) are left out: a read
/// sent there would not be answered from the table's data.
pub fn describe_table_replicas(body: &[u8]) -> Vec<Region> {
    #[derive(Deserialize)]
    struct Desc {
        #[serde(rename = "Replicas", default)]
        replicas: Vec<Replica>,
    }
    #[derive(Deserialize)]
    struct Replica {
        #[serde(rename = "RegionName")]
        region_name: Option<String>,
        #[serde(rename = "ReplicaStatus")]
        replica_status: Option<String>,
    }
    let Ok(out) = serde_json::from_slice::<DescribeTableOutput<Desc>>(body) else {
        return Vec::new();
    };
    out.table
        .replicas
        .into_iter()
        .filter(|r| r.replica_status.as_deref() == Some("ACTIVE"))
        .filter_map(|r| Region::parse(r.region_name.as_deref()?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_another_shape_are_not_answers() {
        let get = |b: &[u8]| has_answer_shape(Operation::GetItem, b);
        for garbage in [
            &br#"{"message":"Service Unavailable"}"#[..],
            br#"{"Item":"garbage"}"#,
            br#"{"Item":{"pk":"a"}}"#,
            br#"{"Item":{"pk":{"S":1}}}"#,
            br#"{"Item":{"pk":{"S":"a","N":"1"}}}"#,
            br#"{"Item":{"pk":{"X":"a"}}}"#,
            br#"{"Item":{"l":{"L":[{"SS":["a",2]}]}}}"#,
            br#"{"Item":{"pk":{}}}"#,
            b"[]",
        ] {
            assert!(!get(garbage), "{}", String::from_utf8_lossy(garbage));
        }
        assert!(get(b"{}"));
        assert!(get(br#"{"Item":{"m":{"M":{"l":{"L":[{"N":"1"},{"NULL":true},{"BS":["AA=="]}]}}},"b":{"BOOL":false}},"ConsumedCapacity":{"TableName":"t","CapacityUnits":0.5}}"#));
        let query = |b: &[u8]| has_answer_shape(Operation::Query, b);
        assert!(query(br#"{"Items":[{"pk":{"S":"a"}}],"Count":1,"ScannedCount":1,"LastEvaluatedKey":{"pk":{"S":"a"}}}"#));
        assert!(query(br#"{"Count":3,"ScannedCount":3}"#));
        for garbage in [
            &br#"{"foo":1}"#[..],
            br#"{"Items":[{"pk":"a"}],"Count":1,"ScannedCount":1}"#,
            br#"{"Items":[],"Count":-1,"ScannedCount":0}"#,
            br#"{"Items":[]}"#,
        ] {
            assert!(!query(garbage), "{}", String::from_utf8_lossy(garbage));
        }
        let batch = |b: &[u8]| has_answer_shape(Operation::BatchGetItem, b);
        assert!(batch(br#"{"Responses":{"t":[{"pk":{"S":"a"}}]},"UnprocessedKeys":{},"ConsumedCapacity":[{"TableName":"t"}]}"#));
        assert!(!batch(
            br#"{"Responses":{"t":[{"pk":"a"}]},"UnprocessedKeys":{}}"#
        ));
        assert!(!batch(br#"{"message":"x"}"#));
    }

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
        let body = br#"{"Table":{"TableName":"t","TableArn":"arn:aws:dynamodb:r:000000000000:table/t","KeySchema":[{"AttributeName":"sk","KeyType":"RANGE"},{"AttributeName":"pk","KeyType":"HASH"}],"LocalSecondaryIndexes":[{"IndexName":"l","KeySchema":[{"AttributeName":"pk","KeyType":"HASH"},{"AttributeName":"x","KeyType":"RANGE"}]}],"GlobalSecondaryIndexes":[{"IndexName":"g","KeySchema":[{"AttributeName":"x","KeyType":"HASH"}]}]}}"#;
        let schema = describe_table_schema(body).unwrap();
        assert_eq!(schema.hash, "pk");
        assert_eq!(schema.range.as_deref(), Some("sk"));
        assert_eq!(schema.local_indexes, vec!["l"]);
        assert_eq!(schema.global_indexes, vec!["g"]);
        assert_eq!(schema.account(), Some("000000000000"));
        let two_hashes = br#"{"Table":{"KeySchema":[{"AttributeName":"a","KeyType":"HASH"},{"AttributeName":"b","KeyType":"HASH"}]}}"#;
        assert_eq!(describe_table_schema(two_hashes), None);
    }

    /// The table of DynamoDB's multi-attribute keys guide: `TournamentMatches` keyed by
    /// `matchId`, with a global index keyed by two HASH and two RANGE attributes.
    fn with_global_index(key_schema: &str) -> Vec<u8> {
        format!(
            r#"{{"Table":{{"TableName":"TournamentMatches","KeySchema":[{{"AttributeName":"matchId","KeyType":"HASH"}}],"GlobalSecondaryIndexes":[{{"IndexName":"TournamentRegionIndex","KeySchema":{key_schema},"Projection":{{"ProjectionType":"ALL"}},"IndexStatus":"ACTIVE"}}]}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn multi_attribute_global_index_keys_are_read() {
        let key = r#"[{"AttributeName":"tournamentId","KeyType":"HASH"},{"AttributeName":"region","KeyType":"HASH"},{"AttributeName":"round","KeyType":"RANGE"},{"AttributeName":"bracket","KeyType":"RANGE"}]"#;
        let schema = describe_table_schema(&with_global_index(key)).unwrap();
        assert_eq!(schema.hash, "matchId");
        assert_eq!(schema.global_indexes, vec!["TournamentRegionIndex"]);
        assert_eq!(
            schema.index_shares_partitions(Some("TournamentRegionIndex")),
            Some(false)
        );
        let four_and_four = |hash: usize, range: usize| {
            let element = |side: &str, i: usize| {
                format!(r#"{{"AttributeName":"{side}{i}","KeyType":"{side}"}}"#)
            };
            let elements: Vec<String> = (0..hash)
                .map(|i| element("HASH", i))
                .chain((0..range).map(|i| element("RANGE", i)))
                .collect();
            describe_table_schema(&with_global_index(&format!("[{}]", elements.join(","))))
        };
        assert!(four_and_four(4, 4).is_some());
        assert!(four_and_four(1, 0).is_some());
        // Beyond what DynamoDB documents, or no partition key at all: not read as anything.
        assert_eq!(four_and_four(5, 0), None);
        assert_eq!(four_and_four(1, 5), None);
        assert_eq!(four_and_four(0, 1), None);
    }

    #[test]
    fn key_schemas_ddbcache_cannot_read_exactly_are_not_read() {
        for key in [
            r#"[{"AttributeName":"a","KeyType":"HASH"},{"AttributeName":"a","KeyType":"RANGE"}]"#,
            r#"[{"AttributeName":"a","KeyType":"PARTITION"}]"#,
            r#"[{"AttributeName":"a"}]"#,
        ] {
            assert_eq!(
                describe_table_schema(&with_global_index(key)),
                None,
                "{key}"
            );
        }
        let without_key = br#"{"Table":{"KeySchema":[{"AttributeName":"pk","KeyType":"HASH"}],"GlobalSecondaryIndexes":[{"IndexName":"g"}]}}"#;
        assert_eq!(describe_table_schema(without_key), None);
        // A local index shares the table's partitions only when keyed by its HASH attribute.
        let local = |key: &str| {
            let body = format!(
                r#"{{"Table":{{"KeySchema":[{{"AttributeName":"pk","KeyType":"HASH"}},{{"AttributeName":"sk","KeyType":"RANGE"}}],"LocalSecondaryIndexes":[{{"IndexName":"l","KeySchema":{key}}}]}}}}"#
            );
            describe_table_schema(body.as_bytes())
        };
        assert!(local(
            r#"[{"AttributeName":"pk","KeyType":"HASH"},{"AttributeName":"x","KeyType":"RANGE"}]"#
        )
        .is_some());
        assert_eq!(
            local(
                r#"[{"AttributeName":"other","KeyType":"HASH"},{"AttributeName":"x","KeyType":"RANGE"}]"#
            ),
            None
        );
        assert_eq!(
            local(
                r#"[{"AttributeName":"pk","KeyType":"HASH"},{"AttributeName":"y","KeyType":"HASH"},{"AttributeName":"x","KeyType":"RANGE"}]"#
            ),
            None
        );
    }

    #[test]
    fn replica_regions_from_describe_table() {
        let body = br#"{"Table":{"TableName":"t","KeySchema":[{"AttributeName":"pk","KeyType":"HASH"}],"Replicas":[{"RegionName":"eu-west-1","ReplicaStatus":"ACTIVE"},{"RegionName":"us-west-2","ReplicaStatus":"CREATING"},{"RegionName":"ap-south-1","ReplicaStatus":"ACTIVE","ReplicaStatusDescription":"x"},{"RegionName":"Not A Region","ReplicaStatus":"ACTIVE"},{"ReplicaStatus":"ACTIVE"}]}}"#;
        let names: Vec<String> = describe_table_replicas(body)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(names, ["eu-west-1", "ap-south-1"]);
        for single_region in [
            &br#"{"Table":{"TableName":"t"}}"#[..],
            br#"{"Table":{"Replicas":[]}}"#,
            b"garbage",
        ] {
            assert!(describe_table_replicas(single_region).is_empty());
        }
    }
}
