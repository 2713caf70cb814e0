//! Whether a cacheable read is one DynamoDB would certainly accept.
//!
//! A cache entry is filled by a request the engine answered with 200, and looked up by its cache
//! key. The key is canonical — it erases differences that do not change a valid request's answer
//! — so an invalid request can share a key with a valid one and be answered 200 from the cache
//! where DynamoDB would answer 400. This module stands between the key and the lookup: a read is
//! looked up only when it is *proven* valid; anything else is [`NotProven`], with a named reason
//! (a metric label), and the caller forwards it uncached so that the engine answers in its own
//! words. It never answers a client itself, and it is conservative: a valid request it cannot
//! prove is only a missed hit.
//!
//! - **GetItem and BatchGetItem** entries are keyed by table, canonical key and canonical
//!   projection, which erases a lot (number spellings, the order of projection paths, how names
//!   were substituted, ARN or name, `ReturnConsumedCapacity`, the order of keys). So these are
//!   checked as DynamoDB checks them: every parameter, every key value, the projection grammar,
//!   reserved words, expression attribute names, `AttributesToGet`, duplicate keys and the
//!   100-key limit. Unknown parameters are not proven either.
//! - **Query and Scan** entries are keyed by the whole canonical request, so an invalid request
//!   can only meet a valid entry through what canonicalisation erases: `ReturnConsumedCapacity`
//!   (left out of the key), numbers (normalised, so `+1` or ` 1` key like `1`), number sets
//!   (sorted) and the table (an ARN keys like its name). Only those are checked here (and the type
//!   of `ConsistentRead`, which decides whether the cache is used at all); expressions,
//!   names and values are in the key verbatim, so an invalid one never meets a valid entry. A
//!   change to what the query key erases must come with a check here.
//!
//! Entry points take the request's JSON body: [`cacheable_read`], or [`get_item`],
//! [`batch_get_item`] and [`query_or_scan`].

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::canonical::{encode_key, normalize_number, KeyAttr};
use super::projection::{self, is_identifier_byte, Step};
use super::region::Region;
use super::table::TableRef;
use super::Operation;

/// Why a read was not proven to be one DynamoDB accepts. Each is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotProven {
    #[error("the operation is not a cacheable read")]
    NotARead,
    #[error("the body is not a JSON object")]
    NotAnObject,
    #[error("a parameter ddbcache does not know")]
    UnknownParameter,
    #[error("a required parameter is missing")]
    MissingParameter,
    #[error("a parameter has the wrong JSON type, or is null")]
    WrongType,
    #[error("a JSON object names a member twice")]
    DuplicateMember,
    #[error("a table name is neither a valid name nor a table ARN")]
    TableName,
    #[error("ReturnConsumedCapacity is not INDEXES, TOTAL or NONE")]
    ReturnConsumedCapacity,
    #[error("an attribute value does not have exactly one known type member")]
    AttributeValue,
    #[error("a key attribute value is not a non-empty S, N or B")]
    KeyValue,
    #[error("a number DynamoDB would refuse")]
    Number,
    #[error("a projection expression DynamoDB would not parse")]
    ExpressionSyntax,
    #[error("a reserved word used as a bare name in an expression")]
    ReservedWord,
    #[error("an expression uses a #name that ExpressionAttributeNames does not define")]
    UndefinedName,
    #[error("ExpressionAttributeNames defines a name no expression uses")]
    UnusedName,
    #[error(
        "ExpressionAttributeNames is empty, has an invalid key or value, or has no expression"
    )]
    AttributeNames,
    #[error("ProjectionExpression together with AttributesToGet")]
    ProjectionWithAttributesToGet,
    #[error("AttributesToGet is empty, too long, or has an empty or duplicate name")]
    AttributesToGet,
    #[error("two projection paths overlap or conflict")]
    OverlappingPaths,
    #[error("the keys of one table have different attribute names")]
    MixedKeyAttributes,
    #[error("a table's Keys list the same key twice")]
    DuplicateKeys,
    #[error("more than 100 keys in one BatchGetItem")]
    TooManyKeys,
    #[error("a table's Keys list is empty")]
    EmptyKeys,
    #[error("RequestItems is empty")]
    EmptyRequestItems,
    #[error("RequestItems names the same table twice")]
    DuplicateTable,
}

type Proof = Result<(), NotProven>;

/// Validates the body of a cacheable read (GetItem, BatchGetItem, Query, Scan).
pub fn cacheable_read(op: Operation, json: &[u8]) -> Proof {
    match op {
        Operation::GetItem => get_item(json),
        Operation::BatchGetItem => batch_get_item(json),
        Operation::Query | Operation::Scan => query_or_scan(json),
        _ => Err(NotProven::NotARead),
    }
}

// ---------------------------------------------------------------------------------------------
// GetItem and BatchGetItem

/// Validates a GetItem body.
pub fn get_item(json: &[u8]) -> Proof {
    let body = object(json)?;
    let (mut table, mut key, mut rcc) = (None, None, None);
    let mut consistent_read: Option<bool> = None;
    let mut projection = Projection::default();
    for (name, raw) in &body.0 {
        match name.0.as_ref() {
            "TableName" => set_once(&mut table, member::<Text>(raw)?)?,
            "Key" => set_once(&mut key, member::<Members<&RawValue>>(raw)?)?,
            "ConsistentRead" => set_once(&mut consistent_read, member(raw)?)?,
            "ReturnConsumedCapacity" => set_once(&mut rcc, member::<Text>(raw)?)?,
            other => projection.read(other, raw)?,
        }
    }
    check_table_name(&table.ok_or(NotProven::MissingParameter)?.0)?;
    check_return_consumed_capacity(rcc.as_ref())?;
    check_key(&key.ok_or(NotProven::MissingParameter)?)?;
    projection.check()
}

/// The most keys one BatchGetItem may ask for.
pub const BATCH_GET_MAX_KEYS: usize = 100;

/// Validates a BatchGetItem body.
pub fn batch_get_item(json: &[u8]) -> Proof {
    let body = object(json)?;
    let (mut request_items, mut rcc) = (None, None);
    for (name, raw) in &body.0 {
        match name.0.as_ref() {
            "RequestItems" => set_once(&mut request_items, member::<Members<&RawValue>>(raw)?)?,
            "ReturnConsumedCapacity" => set_once(&mut rcc, member::<Text>(raw)?)?,
            _ => return Err(NotProven::UnknownParameter),
        }
    }
    check_return_consumed_capacity(rcc.as_ref())?;
    let tables = request_items.ok_or(NotProven::MissingParameter)?.0;
    if tables.is_empty() {
        return Err(NotProven::EmptyRequestItems);
    }
    let mut resolved: Vec<&str> = Vec::with_capacity(tables.len());
    let mut total_keys = 0;
    for (name, raw) in &tables {
        check_table_name(&name.0)?;
        resolved.push(TableRef::parse(&name.0).name().unwrap_or(&name.0));
        total_keys += check_keys_and_attributes(raw)?;
        if total_keys > BATCH_GET_MAX_KEYS {
            return Err(NotProven::TooManyKeys);
        }
    }
    // A name and an ARN of one table, or the same name twice, are the same table.
    resolved.sort_unstable();
    if resolved.windows(2).any(|w| w[0] == w[1]) {
        return Err(NotProven::DuplicateTable);
    }
    Ok(())
}

/// One table's part of a BatchGetItem; returns how many keys it asks for.
fn check_keys_and_attributes(raw: &RawValue) -> Result<usize, NotProven> {
    let mut keys: Option<Vec<&RawValue>> = None;
    let mut consistent_read: Option<bool> = None;
    let mut projection = Projection::default();
    for (name, raw) in &member::<Members<&RawValue>>(raw)?.0 {
        match name.0.as_ref() {
            "Keys" => set_once(&mut keys, member(raw)?)?,
            "ConsistentRead" => set_once(&mut consistent_read, member(raw)?)?,
            other => projection.read(other, raw)?,
        }
    }
    let keys = keys.ok_or(NotProven::MissingParameter)?;
    if keys.is_empty() {
        return Err(NotProven::EmptyKeys);
    }
    if keys.len() > BATCH_GET_MAX_KEYS {
        return Err(NotProven::TooManyKeys);
    }
    check_batch_keys(&keys)?;
    projection.check()?;
    Ok(keys.len())
}

/// One table's keys: each valid, all with the same attribute names, none twice.
fn check_batch_keys(keys: &[&RawValue]) -> Proof {
    fn names_of<'k>(key: &'k Members<&RawValue>) -> Vec<&'k str> {
        let mut names: Vec<&str> = key.0.iter().map(|(n, _)| n.0.as_ref()).collect();
        names.sort_unstable();
        names
    }
    let keys = keys
        .iter()
        .map(|raw| serde_json::from_str::<Members<&RawValue>>(raw.get()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| NotProven::KeyValue)?;
    let first_names = names_of(&keys[0]);
    let mut canonical = Vec::with_capacity(keys.len());
    for key in &keys {
        check_key(key)?;
        if names_of(key) != first_names {
            return Err(NotProven::MixedKeyAttributes);
        }
        let attrs = key
            .0
            .iter()
            .map(|(n, v)| Ok((n.0.as_ref(), serde_json::from_str::<KeyAttr>(v.get())?)))
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .map_err(|_| NotProven::KeyValue)?;
        canonical.push(encode_key(attrs.iter().map(|(n, v)| (*n, v))).ok_or(NotProven::KeyValue)?);
    }
    canonical.sort_unstable();
    if canonical.windows(2).any(|w| w[0] == w[1]) {
        return Err(NotProven::DuplicateKeys);
    }
    Ok(())
}

/// A primary key: one or two attributes, each a valid key value.
fn check_key(key: &Members<&RawValue>) -> Proof {
    if key.0.is_empty() || key.0.len() > 2 {
        return Err(NotProven::KeyValue);
    }
    if key.0.len() == 2 && key.0[0].0 .0 == key.0[1].0 .0 {
        return Err(NotProven::DuplicateMember);
    }
    for (name, value) in &key.0 {
        if name.0.is_empty() {
            return Err(NotProven::KeyValue);
        }
        check_key_value(value)?;
    }
    Ok(())
}

/// A key attribute value: exactly one member, `S`, `N` or `B`, non-empty and well-formed.
fn check_key_value(raw: &RawValue) -> Proof {
    let value: Members<&RawValue> =
        serde_json::from_str(raw.get()).map_err(|_| NotProven::AttributeValue)?;
    let [(tag, member)] = value.0.as_slice() else {
        return Err(NotProven::AttributeValue);
    };
    if !ATTRIBUTE_TYPES.contains(&tag.0.as_ref()) {
        return Err(NotProven::AttributeValue);
    }
    let text: Text = serde_json::from_str(member.get()).map_err(|_| NotProven::KeyValue)?;
    match tag.0.as_ref() {
        "S" if !text.0.is_empty() => Ok(()),
        "N" => check_number(&text.0),
        "B" => match base64::engine::general_purpose::STANDARD.decode(text.0.as_bytes()) {
            Ok(bytes) if !bytes.is_empty() => Ok(()),
            _ => Err(NotProven::KeyValue),
        },
        _ => Err(NotProven::KeyValue),
    }
}

/// The type members an attribute value may have.
const ATTRIBUTE_TYPES: &[&str] = &["B", "BOOL", "BS", "L", "M", "N", "NS", "NULL", "S", "SS"];

/// The parameters that choose what a GetItem, or one table of a BatchGetItem, returns.
#[derive(Default)]
struct Projection<'a> {
    expression: Option<Text<'a>>,
    names: Option<Members<'a, Text<'a>>>,
    attributes_to_get: Option<Vec<Text<'a>>>,
}

impl<'a> Projection<'a> {
    /// Reads one member of the request that is none of the caller's own: a projection
    /// parameter, or else an unknown parameter.
    fn read(&mut self, name: &str, raw: &'a RawValue) -> Proof {
        match name {
            "ProjectionExpression" => set_once(&mut self.expression, member(raw)?),
            "ExpressionAttributeNames" => set_once(&mut self.names, member(raw)?),
            "AttributesToGet" => set_once(&mut self.attributes_to_get, member(raw)?),
            _ => Err(NotProven::UnknownParameter),
        }
    }

    /// ProjectionExpression, ExpressionAttributeNames and AttributesToGet, as DynamoDB checks
    /// them.
    fn check(&self) -> Proof {
        if self.expression.is_some() && self.attributes_to_get.is_some() {
            return Err(NotProven::ProjectionWithAttributesToGet);
        }
        if let Some(attrs) = &self.attributes_to_get {
            check_attributes_to_get(attrs)?;
        }
        let names = match &self.names {
            Some(_) if self.expression.is_none() => return Err(NotProven::AttributeNames),
            Some(names) => Some(AttributeNames::new(names)?),
            None => None,
        };
        if let Some(expression) = &self.expression {
            let mut used = vec![false; names.as_ref().map_or(0, |n| n.sorted.len())];
            check_projection(&expression.0, names.as_ref(), &mut used)?;
            if used.contains(&false) {
                return Err(NotProven::UnusedName);
            }
        }
        Ok(())
    }
}

fn check_attributes_to_get(attrs: &[Text]) -> Proof {
    if attrs.is_empty() || attrs.len() > 255 || attrs.iter().any(|a| a.0.is_empty()) {
        return Err(NotProven::AttributesToGet);
    }
    let mut sorted: Vec<&str> = attrs.iter().map(|a| a.0.as_ref()).collect();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(NotProven::AttributesToGet);
    }
    Ok(())
}

/// ExpressionAttributeNames, sorted by placeholder for lookups.
struct AttributeNames<'n> {
    sorted: Vec<(&'n str, &'n str)>,
}

impl<'n> AttributeNames<'n> {
    fn new(names: &'n Members<'_, Text<'_>>) -> Result<AttributeNames<'n>, NotProven> {
        if names.0.is_empty() {
            return Err(NotProven::AttributeNames);
        }
        let mut sorted = Vec::with_capacity(names.0.len());
        for (placeholder, name) in &names.0 {
            let p = placeholder.0.as_ref();
            let valid = p.len() > 1
                && p.starts_with('#')
                && p.bytes().skip(1).all(is_identifier_byte)
                && !name.0.is_empty();
            if !valid {
                return Err(NotProven::AttributeNames);
            }
            sorted.push((p, name.0.as_ref()));
        }
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if sorted.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(NotProven::DuplicateMember);
        }
        Ok(AttributeNames { sorted })
    }

    fn resolve(&self, placeholder: &str) -> Option<(usize, &'n str)> {
        let i = self
            .sorted
            .binary_search_by(|(p, _)| (*p).cmp(placeholder))
            .ok()?;
        Some((i, self.sorted[i].1))
    }
}

// ---------------------------------------------------------------------------------------------
// ProjectionExpression

/// Parses a projection ([`projection`]) and checks it as DynamoDB does: no bare reserved word,
/// every placeholder defined (marked in `used`), no two paths overlapping (`a, a.b`, `a, a`) or
/// conflicting (`a[0], a.b`).
fn check_projection(expression: &str, names: Option<&AttributeNames>, used: &mut [bool]) -> Proof {
    let resolve = |placeholder: &str| {
        let (i, name) = names?.resolve(placeholder)?;
        used[i] = true;
        Some(name)
    };
    let mut paths = projection::parse(expression, resolve).map_err(|e| match e {
        projection::Error::Syntax => NotProven::ExpressionSyntax,
        projection::Error::ReservedWord => NotProven::ReservedWord,
        projection::Error::UndefinedName => NotProven::UndefinedName,
    })?;
    paths.sort_unstable();
    for pair in paths.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        match a.iter().zip(b).find(|(x, y)| x != y) {
            // One is a prefix of the other (or they are equal): they overlap.
            None => return Err(NotProven::OverlappingPaths),
            Some((Step::Index(_), Step::Name(_)) | (Step::Name(_), Step::Index(_))) => {
                return Err(NotProven::OverlappingPaths)
            }
            Some(_) => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Query and Scan

/// Validates a Query or Scan body, as far as its cache key (the whole canonical request) does
/// not already keep it apart from valid requests: see the module documentation.
pub fn query_or_scan(json: &[u8]) -> Proof {
    let request: serde_json::Map<String, Value> =
        serde_json::from_slice(json).map_err(|_| NotProven::NotAnObject)?;
    match request.get("TableName") {
        Some(Value::String(name)) => check_table_name(name)?,
        Some(_) => return Err(NotProven::WrongType),
        None => return Err(NotProven::MissingParameter),
    }
    match request.get("ReturnConsumedCapacity") {
        None => {}
        Some(Value::String(rcc)) => check_return_consumed_capacity_value(rcc)?,
        Some(_) => return Err(NotProven::WrongType),
    }
    // Read (not keyed on) to choose the cache at all: a wrong type must reach the engine.
    if !matches!(request.get("ConsistentRead"), None | Some(Value::Bool(_))) {
        return Err(NotProven::WrongType);
    }
    request.values().try_for_each(check_numbers_in)
}

/// Every number that canonicalisation rewrites (`{"N": ..}` and `{"NS": [..]}`, found as
/// `canonical::normalize_numbers_in` finds them) must be one DynamoDB accepts, and a number set
/// must not hold one number twice.
fn check_numbers_in(value: &Value) -> Proof {
    match value {
        Value::Object(map) => {
            if map.len() == 1 {
                if let Some(Value::String(n)) = map.get("N") {
                    return check_number(n);
                }
                if let Some(Value::Array(ns)) = map.get("NS") {
                    let mut normalized = Vec::with_capacity(ns.len());
                    for n in ns {
                        let Value::String(n) = n else {
                            return Err(NotProven::WrongType);
                        };
                        check_number(n)?;
                        normalized.push(normalize_number(n));
                    }
                    normalized.sort_unstable();
                    if normalized.windows(2).any(|w| w[0] == w[1]) {
                        return Err(NotProven::Number);
                    }
                    return Ok(());
                }
            }
            map.values().try_for_each(check_numbers_in)
        }
        Value::Array(items) => items.iter().try_for_each(check_numbers_in),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Values every read shares

/// DynamoDB's number syntax (`-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?`), at most 38 significant
/// digits, magnitude zero or within 1e-130 ..= 9.99…e125.
pub fn check_number(s: &str) -> Proof {
    if !number_syntax(s.as_bytes()) {
        return Err(NotProven::Number);
    }
    let normalized = normalize_number(s).ok_or(NotProven::Number)?;
    if normalized == "0" {
        return Ok(());
    }
    // `normalize_number` writes `[-]digits e exponent`, digits without leading or trailing zeros.
    let (mantissa, exponent) = normalized.split_once('e').ok_or(NotProven::Number)?;
    let digits = mantissa.trim_start_matches('-').len() as i64;
    let exponent: i64 = exponent.parse().map_err(|_| NotProven::Number)?;
    let magnitude = exponent + digits - 1;
    if digits > 38 || !(-130..=125).contains(&magnitude) {
        return Err(NotProven::Number);
    }
    Ok(())
}

fn number_syntax(s: &[u8]) -> bool {
    let mut i = usize::from(s.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while s.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let int = digits(&mut i);
    let frac = if s.get(i) == Some(&b'.') {
        i += 1;
        Some(digits(&mut i))
    } else {
        None
    };
    if int == 0 && frac.unwrap_or(0) == 0 {
        return false;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == s.len()
}

/// A table name (`[a-zA-Z0-9_.-]{3,255}`) or a table ARN
/// (`arn:<partition>:dynamodb:<region>:<12-digit account>:table/<name>`, nothing after the name).
pub fn check_table_name(name: &str) -> Proof {
    if is_plain_table_name(name) || is_table_arn(name) {
        Ok(())
    } else {
        Err(NotProven::TableName)
    }
}

fn is_plain_table_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A table ARN DynamoDB would take: its structure as [`TableRef`] reads it, and each part valid.
fn is_table_arn(arn: &str) -> bool {
    let TableRef::Arn(a) = TableRef::parse(arn) else {
        return false;
    };
    let partition_ok = (3..=32).contains(&a.partition.len())
        && a.partition.starts_with("aws")
        && a.partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-');
    partition_ok && Region::parse(a.region).is_some() && is_plain_table_name(a.name)
}

fn check_return_consumed_capacity(rcc: Option<&Text>) -> Proof {
    rcc.map_or(Ok(()), |v| check_return_consumed_capacity_value(&v.0))
}

fn check_return_consumed_capacity_value(rcc: &str) -> Proof {
    match rcc {
        "INDEXES" | "TOTAL" | "NONE" => Ok(()),
        _ => Err(NotProven::ReturnConsumedCapacity),
    }
}

/// The request body as its members; anything but a JSON object is not proven.
fn object(json: &[u8]) -> Result<Members<'_, &RawValue>, NotProven> {
    serde_json::from_slice(json).map_err(|_| NotProven::NotAnObject)
}

/// One member's value, of the type DynamoDB expects there (`null` is not, whatever the type).
fn member<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Result<T, NotProven> {
    serde_json::from_str(raw.get()).map_err(|_| NotProven::WrongType)
}

/// Stores a member's value, refusing a member named twice.
fn set_once<T>(slot: &mut Option<T>, value: T) -> Proof {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(NotProven::DuplicateMember),
    }
}

// ---------------------------------------------------------------------------------------------
// Deserialization helpers: borrowed strings, objects as member lists, null refused

/// A JSON string, borrowed from the body unless escapes forced a copy.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(TextVisitor(PhantomData))
    }
}

/// A JSON object as its members in order, duplicates kept (so that they can be refused).
struct Members<'a, V>(Vec<(Text<'a>, V)>);

impl<'de: 'a, 'a, V: Deserialize<'de>> Deserialize<'de> for Members<'a, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor<'a, V>(PhantomData<(&'a (), V)>);
        impl<'de: 'a, 'a, V: Deserialize<'de>> Visitor<'de> for MembersVisitor<'a, V> {
            type Value = Members<'a, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(16));
                while let Some(entry) = map.next_entry()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(MembersVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn get(body: &str) -> Proof {
        get_item(body.as_bytes())
    }

    fn batch(body: &str) -> Proof {
        batch_get_item(body.as_bytes())
    }

    fn query(body: &str) -> Proof {
        query_or_scan(body.as_bytes())
    }

    /// A GetItem on table `t` with `extra` members added to the body.
    fn get_with(extra: &str) -> Proof {
        let sep = if extra.is_empty() { "" } else { "," };
        get(&format!(
            r#"{{"TableName":"t01","Key":{{"pk":{{"S":"a"}}}}{sep}{extra}}}"#
        ))
    }

    #[test]
    fn ordinary_get_items_are_proven() {
        for extra in [
            "",
            r#""ConsistentRead":false"#,
            r#""ReturnConsumedCapacity":"TOTAL""#,
            r#""ReturnConsumedCapacity":"INDEXES""#,
            r#""ReturnConsumedCapacity":"NONE""#,
            r##""ProjectionExpression":"a, b.c, d[1], #n","ExpressionAttributeNames":{"#n":"name"}"##,
            r#""ProjectionExpression":" a [ 0 ] . b ,c ""#,
            r#""ProjectionExpression":"_private, a1_b2""#,
            r#""ProjectionExpression":"a[0], a[1]""#,
            r#""AttributesToGet":["name","price"]"#,
        ] {
            assert_eq!(get_with(extra), Ok(()), "{extra}");
        }
        assert_eq!(
            get(
                r#"{"TableName":"arn:aws:dynamodb:eu-west-1:123456789012:table/Music","Key":{"pk":{"N":"-1.5e3"},"sk":{"B":"AAE="}}}"#
            ),
            Ok(())
        );
    }

    #[test]
    fn get_item_parameter_shapes_are_checked() {
        use NotProven::*;
        let cases = [
            (r#""FutureParameter":1"#, UnknownParameter),
            (
                r#""ExpressionAttributeValues":{":v":{"S":"x"}}"#,
                UnknownParameter,
            ),
            (r#""ConsistentRead":"yes""#, WrongType),
            (r#""ConsistentRead":null"#, WrongType),
            (r#""ProjectionExpression":null"#, WrongType),
            (r#""ReturnConsumedCapacity":"ALL""#, ReturnConsumedCapacity),
            (
                r#""ReturnConsumedCapacity":"total""#,
                ReturnConsumedCapacity,
            ),
            (r#""ReturnConsumedCapacity":1"#, WrongType),
            (r#""TableName":"t02""#, DuplicateMember),
        ];
        for (extra, reason) in cases {
            assert_eq!(get_with(extra), Err(reason), "{extra}");
        }
        assert_eq!(get(r#"{"TableName":"t01"}"#), Err(MissingParameter));
        assert_eq!(get(r#"{"Key":{"pk":{"S":"a"}}}"#), Err(MissingParameter));
        assert_eq!(get(r#"["t01",{"pk":{"S":"a"}}]"#), Err(NotAnObject));
        assert_eq!(get("null"), Err(NotAnObject));
        assert_eq!(get("{"), Err(NotAnObject));
        assert_eq!(get(""), Err(NotAnObject));
    }

    #[test]
    fn table_names_follow_dynamodb_pattern_or_are_table_arns() {
        for good in [
            "abc",
            "My_Table.v1-2",
            &"a".repeat(255),
            "arn:aws:dynamodb:us-east-1:123456789012:table/Music",
            "arn:aws-cn:dynamodb:cn-north-1:123456789012:table/t.1",
            "arn:aws-us-gov:dynamodb:us-gov-west-1:000000000000:table/abc",
        ] {
            assert_eq!(check_table_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "ab",
            &"a".repeat(256),
            "has space",
            "slash/name",
            "ünï",
            "arn:aws:dynamodb:us-east-1:123456789012:table/Music/stream/2020",
            "arn:aws:dynamodb:us-east-1:123456789012:table/ab",
            "arn:aws:dynamodb:us-east-1:12345678901:table/Music",
            "arn:aws:dynamodb:us-east-1:1234567890123:table/Music",
            "arn:aws:dynamodb:US-EAST-1:123456789012:table/Music",
            "arn:aws:dynamodb::123456789012:table/Music",
            "arn:aws:s3:us-east-1:123456789012:table/Music",
            "arn:xyz:dynamodb:us-east-1:123456789012:table/Music",
            "arn:aws:dynamodb:us-east-1:123456789012:index/Music",
            "arn:aws:dynamodb:us-east-1:123456789012:table/Music:x",
            "arn:aws:dynamodb:us-east-1:123456789012",
        ] {
            assert_eq!(check_table_name(bad), Err(NotProven::TableName), "{bad}");
        }
        assert_eq!(
            get(r#"{"TableName":"ab","Key":{"pk":{"S":"a"}}}"#),
            Err(NotProven::TableName)
        );
    }

    #[test]
    fn key_values_must_be_one_non_empty_scalar_key_type() {
        use NotProven::*;
        let key = |k: &str| get(&format!(r#"{{"TableName":"t01","Key":{k}}}"#));
        assert_eq!(key(r#"{"pk":{"S":"a"},"sk":{"N":"1"}}"#), Ok(()));
        let cases = [
            (r#"{}"#, KeyValue),
            (r#"{"a":{"S":"1"},"b":{"S":"2"},"c":{"S":"3"}}"#, KeyValue),
            (r#"{"pk":{"S":"a"},"pk":{"S":"b"}}"#, DuplicateMember),
            (r#"{"":{"S":"a"}}"#, KeyValue),
            (r#"{"pk":{}}"#, AttributeValue),
            (r#"{"pk":{"S":"a","N":"1"}}"#, AttributeValue),
            (r#"{"pk":{"S":"a","BOOL":true}}"#, AttributeValue),
            (r#"{"pk":{"S":"a","S":"a"}}"#, AttributeValue),
            (r#"{"pk":{"X":"a"}}"#, AttributeValue),
            (r#"{"pk":["a"]}"#, AttributeValue),
            (r#"{"pk":"a"}"#, AttributeValue),
            (r#"{"pk":{"BOOL":true}}"#, KeyValue),
            (r#"{"pk":{"SS":["a"]}}"#, KeyValue),
            (r#"{"pk":{"NULL":true}}"#, KeyValue),
            (r#"{"pk":{"S":""}}"#, KeyValue),
            (r#"{"pk":{"S":null}}"#, KeyValue),
            (r#"{"pk":{"S":1}}"#, KeyValue),
            (r#"{"pk":{"B":""}}"#, KeyValue),
            (r#"{"pk":{"B":"AAE"}}"#, KeyValue),
            (r#"{"pk":{"B":"AAF="}}"#, KeyValue),
            (r#"{"pk":{"B":"not base64!"}}"#, KeyValue),
            (r#"{"pk":{"N":"+1"}}"#, Number),
            (r#"{"pk":{"N":""}}"#, Number),
            (r#"["pk"]"#, WrongType),
            (r#"null"#, WrongType),
        ];
        for (k, reason) in cases {
            assert_eq!(key(k), Err(reason), "{k}");
        }
    }

    #[test]
    fn numbers_dynamodb_refuses_are_not_proven() {
        for good in [
            "0",
            "-0",
            "1",
            "1.",
            ".5",
            "-12.50",
            "1E5",
            "1e+5",
            "1e-5",
            "007",
            "0.0000",
            "1e125",
            "9.9999999999999999999999999999999999999e125",
            "1e-130",
            "-1e-130",
            "12345678901234567890123456789012345678",
            "1234567890123456789012345678901234567800000",
            "0.00012345678901234567890123456789012345678",
        ] {
            assert_eq!(check_number(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-",
            ".",
            "+1",
            " 1",
            "1 ",
            "1e",
            "1e+",
            "e5",
            "0x10",
            "1.2.3",
            "1,5",
            "Infinity",
            "NaN",
            "1e126",
            "10e125",
            "1e-131",
            "0.1e-130",
            "123456789012345678901234567890123456789",
            "1.23456789012345678901234567890123456789",
            "1e99999999999999999999",
        ] {
            assert_eq!(check_number(bad), Err(NotProven::Number), "{bad:?}");
        }
    }

    #[test]
    fn projection_expressions_are_checked_as_dynamodb_does() {
        use NotProven::*;
        let proj = |expr: &str, names: &str| {
            let names = if names.is_empty() {
                String::new()
            } else {
                format!(r#","ExpressionAttributeNames":{names}"#)
            };
            get_with(&format!(r#""ProjectionExpression":{expr:?}{names}"#))
        };
        assert_eq!(proj("a,b", ""), Ok(()));
        assert_eq!(proj("#a.#b[2]", r##"{"#a":"x","#b":"y"}"##), Ok(()));
        assert_eq!(proj("#n", r##"{"#n":"name"}"##), Ok(()));
        assert_eq!(proj("#1", r##"{"#1":"a.b"}"##), Ok(()));
        let cases = [
            ("", "", ExpressionSyntax),
            ("  ", "", ExpressionSyntax),
            ("a,", "", ExpressionSyntax),
            (",a", "", ExpressionSyntax),
            ("a b", "", ExpressionSyntax),
            ("a.", "", ExpressionSyntax),
            ("a[]", "", ExpressionSyntax),
            ("a[-1]", "", ExpressionSyntax),
            ("a[1", "", ExpressionSyntax),
            ("a[99999999999]", "", ExpressionSyntax),
            ("1a", "", ExpressionSyntax),
            ("a-b", "", ExpressionSyntax),
            ("#", r##"{"#a":"x"}"##, ExpressionSyntax),
            ("ä", "", ExpressionSyntax),
            ("name", "", ReservedWord),
            ("a.Status", "", ReservedWord),
            ("a, COUNT", "", ReservedWord),
            ("#n", "", UndefinedName),
            ("#n", r##"{"#m":"x"}"##, UndefinedName),
            ("a", r##"{"#n":"x"}"##, UnusedName),
            ("#a", r##"{"#a":"x","#b":"y"}"##, UnusedName),
            ("a", r##"{}"##, AttributeNames),
            ("#a", r##"{"#a":""}"##, AttributeNames),
            ("#a", r##"{"#a":"x","a":"y"}"##, AttributeNames),
            ("#a", r##"{"#a-b":"x"}"##, AttributeNames),
            ("#a", r##"{"#a":"x","#a":"x"}"##, DuplicateMember),
            ("#a", r##"{"#a":1}"##, WrongType),
            ("a, a", "", OverlappingPaths),
            ("a, a.b", "", OverlappingPaths),
            ("a.b, a", "", OverlappingPaths),
            ("a[0], a[0].c", "", OverlappingPaths),
            ("a[01], a[1]", "", OverlappingPaths),
            ("a[0], a.b", "", OverlappingPaths),
            ("#x, a", r##"{"#x":"a"}"##, OverlappingPaths),
        ];
        for (expr, names, reason) in cases {
            assert_eq!(proj(expr, names), Err(reason), "{expr:?} {names}");
        }
        assert_eq!(proj("a1, a2, a3.b2, b[0], b[1].c, c.d, c.e", ""), Ok(()));
        let deep = vec!["a"; projection::MAX_PATH_DEPTH].join(".");
        assert_eq!(proj(&deep, ""), Ok(()));
        assert_eq!(proj(&format!("{deep}.a"), ""), Err(ExpressionSyntax));
        let long = (0..1000).map(|i| format!("a{i}")).collect::<Vec<_>>();
        assert_eq!(proj(&long.join(","), ""), Err(ExpressionSyntax));
        assert_eq!(proj(&long[..500].join(","), ""), Ok(()));
    }

    #[test]
    fn names_and_attributes_to_get_are_checked() {
        use NotProven::*;
        let cases = [
            (r##""ExpressionAttributeNames":{"#n":"x"}"##, AttributeNames),
            (
                r##""AttributesToGet":["a"],"ExpressionAttributeNames":{"#n":"a"}"##,
                AttributeNames,
            ),
            (
                r#""ProjectionExpression":"a","AttributesToGet":["a"]"#,
                ProjectionWithAttributesToGet,
            ),
            (r#""AttributesToGet":[]"#, AttributesToGet),
            (r#""AttributesToGet":["a","a"]"#, AttributesToGet),
            (r#""AttributesToGet":[""]"#, AttributesToGet),
            (r#""AttributesToGet":"a""#, WrongType),
            (r#""AttributesToGet":[1]"#, WrongType),
        ];
        for (extra, reason) in cases {
            assert_eq!(get_with(extra), Err(reason), "{extra}");
        }
        let many: Vec<String> = (0..256).map(|i| format!("\"a{i}\"")).collect();
        assert_eq!(
            get_with(&format!(r#""AttributesToGet":[{}]"#, many.join(","))),
            Err(AttributesToGet)
        );
        assert_eq!(
            get_with(&format!(r#""AttributesToGet":[{}]"#, many[..255].join(","))),
            Ok(())
        );
        // Reserved words are fine where names are literal.
        assert_eq!(get_with(r#""AttributesToGet":["name","status"]"#), Ok(()));
    }

    #[test]
    fn batch_get_items_are_checked_per_table_and_in_total() {
        use NotProven::*;
        let ok = r##"{"RequestItems":{"t01":{"Keys":[{"pk":{"S":"a"}},{"pk":{"S":"b"}}],"ProjectionExpression":"#n","ExpressionAttributeNames":{"#n":"name"},"ConsistentRead":false},"arn:aws:dynamodb:us-east-1:123456789012:table/t02":{"Keys":[{"k":{"N":"1"},"r":{"B":"AA=="}}]}},"ReturnConsumedCapacity":"TOTAL"}"##;
        assert_eq!(batch(ok), Ok(()));
        let keys = |n: usize| {
            (0..n)
                .map(|i| format!(r#"{{"pk":{{"N":"{i}"}}}}"#))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            batch(&format!(
                r#"{{"RequestItems":{{"t01":{{"Keys":[{}]}}}}}}"#,
                keys(100)
            )),
            Ok(())
        );
        let cases = [
            (r#"{"RequestItems":{}}"#.to_string(), EmptyRequestItems),
            (r#"{}"#.to_string(), MissingParameter),
            (r#"{"RequestItems":{"t01":{"Keys":[]}}}"#.to_string(), EmptyKeys),
            (r#"{"RequestItems":{"t01":{}}}"#.to_string(), MissingParameter),
            (
                format!(r#"{{"RequestItems":{{"t01":{{"Keys":[{}]}}}}}}"#, keys(101)),
                TooManyKeys,
            ),
            (
                format!(
                    r#"{{"RequestItems":{{"t01":{{"Keys":[{}]}},"t02":{{"Keys":[{}]}}}}}}"#,
                    keys(60),
                    keys(41)
                ),
                TooManyKeys,
            ),
            (
                r#"{"RequestItems":{"t01":{"Keys":[{"pk":{"N":"1"}},{"pk":{"N":"1.0"}}]}}}"#
                    .to_string(),
                DuplicateKeys,
            ),
            (
                r#"{"RequestItems":{"t01":{"Keys":[{"pk":{"S":"a"},"sk":{"S":"b"}},{"sk":{"S":"b"},"pk":{"S":"a"}}]}}}"#
                    .to_string(),
                DuplicateKeys,
            ),
            (
                r#"{"RequestItems":{"t01":{"Keys":[{"pk":{"S":"a"}},{"pk":{"S":"a"},"sk":{"S":"b"}}]}}}"#
                    .to_string(),
                MixedKeyAttributes,
            ),
            (
                r#"{"RequestItems":{"t01":{"Keys":[{"pk":{"S":"a"}}]},"arn:aws:dynamodb:us-east-1:123456789012:table/t01":{"Keys":[{"pk":{"S":"b"}}]}}}"#
                    .to_string(),
                DuplicateTable,
            ),
            (
                r#"{"RequestItems":{"t01":{"Keys":[{"pk":{"S":"a"}}]},"t01":{"Keys":[{"pk":{"S":"b"}}]}}}"#
                    .to_string(),
                DuplicateTable,
            ),
            (
                r#"{"RequestItems":{"t1":{"Keys":[{"pk":{"S":"a"}}]}}}"#.to_string(),
                TableName,
            ),
            (
                r#"{"RequestItems":{"t01":[[{"pk":{"S":"a"}}]]}}"#.to_string(),
                WrongType,
            ),
            (
                r#"{"RequestItems":{"t01":{"Keys":[{"pk":{"S":"a"}}],"Extra":1}}}"#.to_string(),
                UnknownParameter,
            ),
            (
                r#"{"RequestItems":{"t01":{"Keys":[{"pk":{"S":"a"}}]}},"ReturnConsumedCapacity":"SOME"}"#
                    .to_string(),
                ReturnConsumedCapacity,
            ),
            (
                r#"{"RequestItems":{"t01":{"Keys":[{"pk":{"S":"a"}}],"AttributesToGet":[]}}}"#
                    .to_string(),
                AttributesToGet,
            ),
            (
                r#"{"RequestItems":{"t01":{"Keys":[{"pk":{"S":"a"}}],"ProjectionExpression":"size"}}}"#
                    .to_string(),
                ReservedWord,
            ),
            (
                r#"{"RequestItems":{"t01":{"Keys":[{"pk":{"S":"a","N":"1"}}]}}}"#.to_string(),
                AttributeValue,
            ),
            (
                r#"{"RequestItems":{"t01":{"Keys":[{"pk":{"S":""}}]}}}"#.to_string(),
                KeyValue,
            ),
            (
                r#"{"RequestItems":{"t01":{"Keys":[{"pk":{"S":"a"}}]}},"Extra":1}"#.to_string(),
                UnknownParameter,
            ),
        ];
        for (body, reason) in cases {
            assert_eq!(batch(&body), Err(reason), "{body}");
        }
    }

    #[test]
    fn query_and_scan_check_what_their_key_erases() {
        use NotProven::*;
        let base =
            r#""KeyConditionExpression":"pk = :v","ExpressionAttributeValues":{":v":{"N":"1"}}"#;
        assert_eq!(query(&format!(r#"{{"TableName":"t01",{base}}}"#)), Ok(()));
        assert_eq!(
            query(&format!(
                r#"{{"TableName":"arn:aws:dynamodb:us-east-1:123456789012:table/t01",{base},"ReturnConsumedCapacity":"INDEXES"}}"#
            )),
            Ok(())
        );
        // What the key keeps verbatim is the engine's business: it can never meet a valid entry.
        assert_eq!(
            query(r##"{"TableName":"t01","ExpressionAttributeNames":{"#unused":"x"},"Future":1}"##),
            Ok(())
        );
        let cases = [
            (
                r#"{"TableName":"t01","ReturnConsumedCapacity":"ALL"}"#,
                ReturnConsumedCapacity,
            ),
            (
                r#"{"TableName":"t01","ReturnConsumedCapacity":null}"#,
                WrongType,
            ),
            (r#"{"TableName":"t1"}"#, TableName),
            (
                r#"{"TableName":"arn:aws:dynamodb:us-east-1:1:table/t01"}"#,
                TableName,
            ),
            (r#"{"TableName":5}"#, WrongType),
            (r#"{"Limit":1}"#, MissingParameter),
            (r#"["t01"]"#, NotAnObject),
            (
                r#"{"TableName":"t01","ExpressionAttributeValues":{":v":{"N":"+1"}}}"#,
                Number,
            ),
            (
                r#"{"TableName":"t01","ExpressionAttributeValues":{":v":{"N":" 1"}}}"#,
                Number,
            ),
            (
                r#"{"TableName":"t01","ExpressionAttributeValues":{":v":{"N":"1e200"}}}"#,
                Number,
            ),
            (
                r#"{"TableName":"t01","ExclusiveStartKey":{"pk":{"N":"1.0.0"}}}"#,
                Number,
            ),
            (
                r#"{"TableName":"t01","ExpressionAttributeValues":{":v":{"L":[{"N":"x"}]}}}"#,
                Number,
            ),
            (
                r#"{"TableName":"t01","ExpressionAttributeValues":{":v":{"NS":["1","1.0"]}}}"#,
                Number,
            ),
            (
                r#"{"TableName":"t01","ExpressionAttributeValues":{":v":{"NS":["1",2]}}}"#,
                WrongType,
            ),
            (
                r#"{"TableName":"t01","ScanFilter":{"a":{"AttributeValueList":[{"N":"0x1"}]}}}"#,
                Number,
            ),
        ];
        for (body, reason) in cases {
            assert_eq!(query(body), Err(reason), "{body}");
        }
        assert_eq!(
            query(r#"{"TableName":"t01","ExpressionAttributeValues":{":v":{"NS":["2","1"]}}}"#),
            Ok(())
        );
    }

    #[test]
    fn cacheable_read_dispatches_and_refuses_other_operations() {
        let body = br#"{"TableName":"t01","Key":{"pk":{"S":"a"}}}"#;
        assert_eq!(cacheable_read(Operation::GetItem, body), Ok(()));
        assert_eq!(cacheable_read(Operation::Scan, body), Ok(()));
        assert_eq!(
            cacheable_read(Operation::PutItem, body),
            Err(NotProven::NotARead)
        );
    }

    #[test]
    fn escaped_strings_are_read_like_plain_ones() {
        assert_eq!(
            get(
                r#"{"TableName":"t\u0030\u0031","Key":{"p\u006b":{"S":"\u00e9"}},"ProjectionExpression":"\u0061"}"#
            ),
            Ok(())
        );
        assert_eq!(
            get(r#"{"TableName":"t01","Key":{"pk":{"S":"a"}},"ProjectionExpression":"n\u0061me"}"#),
            Err(NotProven::ReservedWord)
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            for op in [Operation::GetItem, Operation::BatchGetItem, Operation::Query] {
                let _ = cacheable_read(op, &body);
            }
        }

        #[test]
        fn random_projections_never_panic(expr in "[ a-z#_.,\\[\\]0-9\u{e9}]{0,40}") {
            let body = serde_json::json!({
                "TableName": "t01",
                "Key": {"pk": {"S": "a"}},
                "ProjectionExpression": expr,
                "ExpressionAttributeNames": {"#a": "x", "#b": "y"},
            });
            let _ = get_item(body.to_string().as_bytes());
        }

        #[test]
        fn random_numbers_never_panic(n in "[-+.eE0-9 ]{0,60}") {
            let _ = check_number(&n);
        }

        #[test]
        fn numbers_that_pass_are_numbers_normalize_accepts(n in "-?[0-9]{0,45}(\\.[0-9]{0,45})?([eE][-+]?[0-9]{1,4})?") {
            if check_number(&n).is_ok() {
                prop_assert!(normalize_number(&n).is_some());
            }
        }
    }
}
