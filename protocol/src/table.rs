//! Tables: how a request names one (`TableName` is a name or a table ARN), the identity ddbcache
//! keys entries, generations and schemas by, and a table's key schema.
//!
//! A table is identified by its region and name (`us-east-1/orders`): the same name in two
//! regions is two tables, whatever the upstream. An ARN names the same table as its name when it is
//! of the request's region and of the account whose credentials reach it (learned from the
//! table's own DescribeTable); any other ARN, or something that looks like an ARN but is not one,
//! never reads a local table's entries.

use std::fmt;

use arrayvec::ArrayString;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::canonical::{encode_key, KeyAttr};

/// How a request names a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableRef<'a> {
    /// A plain name (whether DynamoDB accepts it is the upstream's business).
    Name(&'a str),
    /// `arn:<partition>:dynamodb:<region>:<account>:table/<name>`, and nothing after the name.
    Arn(TableArn<'a>),
    /// Starts like an ARN but is not a table ARN.
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableArn<'a> {
    /// `aws`, `aws-cn`, `aws-us-gov`, ...
    pub partition: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub name: &'a str,
}

impl<'a> TableRef<'a> {
    pub fn parse(s: &'a str) -> TableRef<'a> {
        if !s.starts_with("arn:") {
            return TableRef::Name(s);
        }
        let mut parts = s.splitn(6, ':');
        let (
            Some("arn"),
            Some(partition),
            Some("dynamodb"),
            Some(region),
            Some(account),
            Some(rest),
        ) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        )
        else {
            return TableRef::Malformed;
        };
        let Some(name) = rest.strip_prefix("table/") else {
            return TableRef::Malformed;
        };
        let well_formed = !partition.is_empty()
            && !region.is_empty()
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && !name.is_empty()
            && !name.contains('/');
        if well_formed {
            TableRef::Arn(TableArn {
                partition,
                region,
                account,
                name,
            })
        } else {
            TableRef::Malformed
        }
    }

    /// The table's name, whatever the form (`None` for a malformed ARN).
    pub fn name(self) -> Option<&'a str> {
        match self {
            TableRef::Name(n) => Some(n),
            TableRef::Arn(a) => Some(a.name),
            TableRef::Malformed => None,
        }
    }
}

/// A table's identity: its region and its name. The same name in two regions is two tables, so
/// entries, generations and key schemas are kept by identity. On the wire (fleet messages) it is
/// the string `region/name`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TableId(CompactString);

impl TableId {
    /// The table `name` of `region`. Every read makes one: held inline up to 24 bytes
    /// (`us-east-1/` and a 14-character name), with no allocation.
    pub fn new(region: &str, name: &str) -> TableId {
        // Joined on the stack, then copied once (a `CompactString` pushed to piece by piece
        // checks where it keeps its bytes at every push).
        let mut joined = ArrayString::<24>::new();
        if joined.try_push_str(region).is_ok()
            && joined.try_push('/').is_ok()
            && joined.try_push_str(name).is_ok()
        {
            return TableId(CompactString::new(joined.as_str()));
        }
        let mut id = String::with_capacity(region.len() + 1 + name.len());
        id.push_str(region);
        id.push('/');
        id.push_str(name);
        TableId(CompactString::from(id))
    }

    pub fn region(&self) -> &str {
        self.0.split_once('/').map_or("", |(region, _)| region)
    }

    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(_, name)| name)
    }

    /// `region/name`: what cache keys start with. A table identity never contains NUL (names and
    /// regions are ASCII letters, digits and `._-/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
impl TableId {
    /// Table identities written `region/name`, for tests.
    pub fn list(ids: &[&str]) -> Vec<TableId> {
        ids.iter()
            .map(|id| {
                let (region, name) = id.split_once('/').expect("region/name");
                TableId::new(region, name)
            })
            .collect()
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A table's primary key and indexes, from its DescribeTable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySchema {
    /// The table's ARN as DynamoDB gave it (it names the account that owns the table).
    pub table_arn: Option<String>,
    /// The partition (HASH) key attribute.
    pub hash: String,
    /// The sort (RANGE) key attribute.
    pub range: Option<String>,
    /// Local secondary indexes: their partition key is the table's.
    pub local_indexes: Vec<String>,
    /// Global secondary indexes.
    pub global_indexes: Vec<String>,
}

impl KeySchema {
    /// The key attribute names, sorted (how requests' keys are compared with the schema).
    pub fn key_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = std::iter::once(self.hash.as_str())
            .chain(self.range.as_deref())
            .collect();
        names.sort_unstable();
        names
    }

    /// Whether `names` (in any order) are exactly the key attributes.
    pub fn is_key<'n>(&self, names: impl IntoIterator<Item = &'n str>) -> bool {
        // Without collecting: every read that may be a hit asks this.
        let (mut hash, mut range) = (false, self.range.is_none());
        for name in names {
            if !hash && name == self.hash {
                hash = true;
            } else if !range && Some(name) == self.range.as_deref() {
                range = true;
            } else {
                return false;
            }
        }
        hash && range
    }

    /// The account that owns the table, from its ARN.
    pub fn account(&self) -> Option<&str> {
        match TableRef::parse(self.table_arn.as_deref()?) {
            TableRef::Arn(a) => Some(a.account),
            _ => None,
        }
    }

    /// Whether Query and Scan on `index` (None: the base table) read the table's partitions, so
    /// that they support `ConsistentRead` and a write to partition P only changes their answers
    /// on P. `None` when the index is unknown.
    pub fn index_shares_partitions(&self, index: Option<&str>) -> Option<bool> {
        match index {
            None => Some(true),
            Some(i) if self.local_indexes.iter().any(|l| l == i) => Some(true),
            Some(i) if self.global_indexes.iter().any(|g| g == i) => Some(false),
            Some(_) => None,
        }
    }

    /// The canonical primary key and partition key of an item (or a `Key`), given its attributes
    /// as raw JSON values; `None` when a key attribute is missing or not a key value.
    pub fn keys_of<'v>(
        &self,
        get: impl Fn(&str) -> Option<&'v RawValue>,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let hash: KeyAttr = serde_json::from_str(get(&self.hash)?.get()).ok()?;
        let range: Option<KeyAttr> = match &self.range {
            Some(r) => Some(serde_json::from_str(get(r)?.get()).ok()?),
            None => None,
        };
        let mut attrs = vec![(self.hash.as_str(), &hash)];
        if let (Some(name), Some(value)) = (&self.range, &range) {
            attrs.push((name.as_str(), value));
        }
        let key = encode_key(attrs.iter().map(|(n, v)| (*n, *v)))?;
        let partition = encode_key([(self.hash.as_str(), &hash)])?;
        Some((key, partition))
    }

    /// The canonical partition key of a value of the partition key attribute.
    pub fn partition_of(&self, value: &KeyAttr<'_>) -> Option<Vec<u8>> {
        encode_key([(self.hash.as_str(), value)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_refs() {
        assert_eq!(TableRef::parse("orders"), TableRef::Name("orders"));
        assert_eq!(
            TableRef::parse("arn:aws:dynamodb:eu-west-1:123456789012:table/orders"),
            TableRef::Arn(TableArn {
                partition: "aws",
                region: "eu-west-1",
                account: "123456789012",
                name: "orders"
            })
        );
        for bad in [
            "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/x",
            "arn:aws:dynamodb:eu-west-1:1234:table/orders",
            "arn:aws:s3:eu-west-1:123456789012:table/orders",
            "arn:aws:dynamodb:eu-west-1:123456789012:index/orders",
            "arn:aws:dynamodb::123456789012:table/orders",
            "arn:",
        ] {
            assert_eq!(TableRef::parse(bad), TableRef::Malformed, "{bad}");
        }
        let id = TableId::new("r", "t");
        assert_eq!((id.region(), id.name(), id.as_str()), ("r", "t", "r/t"));
        // Joined on the stack up to 24 bytes, on the heap beyond: the same identity either way.
        for name in ["orders-by-day1", "orders-by-day12", &"n".repeat(255)] {
            let id = TableId::new("us-east-1", name);
            assert_eq!(id.as_str(), format!("us-east-1/{name}"));
            assert_eq!((id.region(), id.name()), ("us-east-1", name));
        }
        let wire: TableId = serde_json::from_str("\"eu-west-1/a.b\"").unwrap();
        assert_eq!((wire.region(), wire.name()), ("eu-west-1", "a.b"));
        assert_eq!(serde_json::to_string(&wire).unwrap(), "\"eu-west-1/a.b\"");
    }

    #[test]
    fn keys_of_items_follow_the_schema() {
        let schema = KeySchema {
            table_arn: Some("arn:aws:dynamodb:us-east-1:000000000000:table/t".into()),
            hash: "pk".into(),
            range: Some("sk".into()),
            local_indexes: vec!["lsi".into()],
            global_indexes: vec!["gsi".into()],
        };
        let item: std::collections::HashMap<&str, &RawValue> =
            serde_json::from_str(r#"{"sk":{"N":"1.0"},"pk":{"S":"a"},"v":{"S":"x"}}"#).unwrap();
        let (key, partition) = schema.keys_of(|n| item.get(n).copied()).unwrap();
        let a: KeyAttr = serde_json::from_str(r#"{"S":"a"}"#).unwrap();
        let one: KeyAttr = serde_json::from_str(r#"{"N":"1"}"#).unwrap();
        assert_eq!(key, encode_key([("pk", &a), ("sk", &one)]).unwrap());
        assert_eq!(partition, schema.partition_of(&a).unwrap());
        assert!(schema.is_key(["sk", "pk"]));
        assert!(!schema.is_key(["pk"]));
        assert!(!schema.is_key(["pk", "pk"]));
        assert!(!schema.is_key(["pk", "sk", "x"]));
        assert!(!schema.is_key(std::iter::empty()));
        assert_eq!(schema.account(), Some("000000000000"));
        assert_eq!(schema.index_shares_partitions(Some("lsi")), Some(true));
        assert_eq!(schema.index_shares_partitions(Some("gsi")), Some(false));
        assert_eq!(schema.index_shares_partitions(Some("nope")), None);
        let missing: std::collections::HashMap<&str, &RawValue> =
            serde_json::from_str(r#"{"pk":{"S":"a"}}"#).unwrap();
        assert_eq!(schema.keys_of(|n| missing.get(n).copied()), None);
    }
}
