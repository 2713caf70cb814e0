//! Read failover: where an eventually consistent read of a global table may go while the circuit
//! breaker of its own region is open — the first of the table's replica regions whose breaker is
//! closed ([`Failover::route`]). [`super::forward`] sends it there, signed for that region, and
//! marks the answer ([`HEADER_FAILOVER`]); whether the cache may keep it is the policy's to say
//! ([`super::policy::failover_storable`]).
//!
//! Only reads a replica can answer as well as the table's own region: GetItem, BatchGetItem,
//! Query and Scan, proven valid (`protocol::reads::parse_read`), naming their tables by name (an
//! ARN names one region's table), none with `ConsistentRead` — and of tables that say
//! `failover = true`. A consistent read asks for what the table's own region has acknowledged,
//! which an eventually consistent replica (MREC) may not have yet; a write goes where the
//! application sends it, never elsewhere.
//!
//! A table's replica regions are its `replicas` in config, in that order (nearest first), or else
//! those its DescribeTable lists (`Table.Replicas`, active ones), learned when ddbcache fetched
//! its key schema ([`Failover::learned`]) — before the outage, since DescribeTable needs the
//! region that is down.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::RwLock;

use crate::config::Config;
use crate::protocol::reads::{parse_read, Parsed, Read};
use crate::protocol::region::Region;
use crate::protocol::table::{TableId, TableRef};
use crate::protocol::Operation;
use crate::upstream::UpstreamResponse;

use super::policy;

/// The header naming the replica region that answered a read instead of the request's own.
pub const HEADER_FAILOVER: &str = "x-ddbcache-failover";

/// The tables whose reads may fail over, and their replica regions.
pub(crate) struct Failover {
    config: Arc<Config>,
    /// Per table name (`failover = true`): its configured replica regions (empty: learned).
    tables: HashMap<String, Arc<[Region]>>,
    /// Replica regions from tables' DescribeTable answers.
    learned: RwLock<HashMap<TableId, Arc<[Region]>>>,
}

/// Where a read fails over to, and whether its answer may be stored.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) region: Region,
    pub(crate) storable: bool,
}

impl Failover {
    /// `None` when no table's reads may fail over.
    pub(crate) fn new(config: &Arc<Config>) -> Option<Failover> {
        let tables: HashMap<String, Arc<[Region]>> = config
            .tables
            .iter()
            .filter(|(_, t)| t.failover)
            .map(|(name, t)| {
                // Validation refused names that are not regions.
                let replicas = t.replicas.iter().filter_map(|r| Region::parse(r));
                (name.clone(), replicas.collect())
            })
            .collect();
        (!tables.is_empty()).then(|| Failover {
            config: config.clone(),
            tables,
            learned: RwLock::new(HashMap::new()),
        })
    }

    /// What a DescribeTable of `table` said of its replica regions.
    pub(crate) fn learned(&self, table: &TableId, replicas: Vec<Region>) {
        if !self.tables.contains_key(table.name()) {
            return;
        }
        let mut learned = self.learned.write();
        if replicas.is_empty() {
            learned.remove(table);
        } else {
            learned.insert(table.clone(), replicas.into());
        }
    }

    /// Where a request (`op` of `region`, with `body`), refused by its region's breaker, may be
    /// sent instead: the first replica region (of every table it reads) that is `usable` (its
    /// breaker closed). `None` when it is not an eventually consistent read of tables that fail
    /// over, or no replica region is usable.
    pub(crate) fn route(
        &self,
        op: Operation,
        region: &Region,
        body: &[u8],
        usable: impl Fn(&Region) -> bool,
    ) -> Option<Route> {
        let names = eventually_consistent_tables(op, body)?;
        let lists = names
            .iter()
            .map(|name| self.replicas(region, name))
            .collect::<Option<Vec<_>>>()?;
        let (first, rest) = lists.split_first()?;
        let replica = first
            .iter()
            .find(|r| *r != region && rest.iter().all(|list| list.contains(r)) && usable(r))?;
        let settings = names.iter().map(|name| self.config.tables.get(name));
        Some(Route {
            region: replica.clone(),
            storable: policy::failover_storable(settings),
        })
    }

    /// The replica regions of table `name` of `region`, if its reads fail over.
    fn replicas(&self, region: &Region, name: &str) -> Option<Arc<[Region]>> {
        let configured = self.tables.get(name)?;
        if !configured.is_empty() {
            return Some(configured.clone());
        }
        let learned = self.learned.read();
        learned.get(&TableId::new(region.as_str(), name)).cloned()
    }
}

/// The tables a request reads, by name, if it is an eventually consistent read a replica may
/// answer.
fn eventually_consistent_tables(op: Operation, body: &[u8]) -> Option<Vec<String>> {
    let Ok(Parsed::Proven(read)) = parse_read(op, body) else {
        return None;
    };
    let read: Vec<(&str, bool)> = match &read {
        Read::GetItem(r) => vec![(&r.table, r.consistent_read)],
        Read::Query(r) => vec![(&r.table, r.consistent_read)],
        Read::BatchGetItem(r) => r
            .tables
            .iter()
            .map(|t| (t.request_name.as_str(), t.consistent_read))
            .collect(),
    };
    read.into_iter()
        .map(|(table, consistent)| match TableRef::parse(table) {
            TableRef::Name(name) if !consistent => Some(name.to_string()),
            _ => None,
        })
        .collect()
}

/// Marks an answer read from a replica region with [`HEADER_FAILOVER`].
pub(crate) fn mark(answer: &mut UpstreamResponse) {
    if let Some(replica) = &answer.from_replica {
        let region = HeaderValue::from_str(replica.region.as_str())
            .expect("a region name is a valid header value");
        answer
            .headers
            .insert(HeaderName::from_static(HEADER_FAILOVER), region);
    }
}

/// Carries the mark of an answer read from a replica region over to an answer composed from it
/// (a BatchGetItem merged with hits).
pub(crate) fn carry_mark(from: &UpstreamResponse, to: &mut HeaderMap) {
    if let Some(region) = from.headers.get(HEADER_FAILOVER) {
        to.insert(HeaderName::from_static(HEADER_FAILOVER), region.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failover(toml: &str) -> Failover {
        let config = Config::from_toml(toml).unwrap();
        Failover::new(&Arc::new(config)).unwrap()
    }

    /// Where `op` of us-east-1 with `body` fails over to, with every region usable but `not`.
    fn route(f: &Failover, op: Operation, body: &str, not: &str) -> Option<Route> {
        let home = region("us-east-1");
        f.route(op, &home, body.as_bytes(), |r| r.as_str() != not)
    }

    fn region(name: &str) -> Region {
        Region::parse(name).unwrap()
    }

    const TABLES: &str =
        "[tables.orders]\nfailover = true\nreplicas = [\"eu-west-1\", \"us-west-2\"]\n\
                          [tables.users]\nfailover = true\nreplicas = [\"us-west-2\"]\n\
                          store_failover = true\n\
                          [tables.views]\nfailover = true\nstore_failover = true\n\
                          [tables.off]\nreplicas = [\"us-west-2\"]\n";

    const GET_ORDERS: &str = r#"{"TableName":"orders","Key":{"pk":{"S":"a"}}}"#;

    #[test]
    fn eventually_consistent_reads_of_failover_tables_go_to_the_first_usable_replica() {
        let f = failover(TABLES);
        assert_eq!(
            route(&f, Operation::GetItem, GET_ORDERS, ""),
            Some(Route {
                region: region("eu-west-1"),
                storable: false
            })
        );
        let second = route(&f, Operation::GetItem, GET_ORDERS, "eu-west-1").unwrap();
        assert_eq!(second.region, region("us-west-2"));
        let home = region("us-east-1");
        let nowhere = f.route(Operation::GetItem, &home, GET_ORDERS.as_bytes(), |_| false);
        assert_eq!(nowhere, None);
        for (op, body) in [
            (
                Operation::Query,
                r#"{"TableName":"users","KeyConditionExpression":"pk = :p","ExpressionAttributeValues":{":p":{"S":"a"}}}"#,
            ),
            (Operation::Scan, r#"{"TableName":"users"}"#),
        ] {
            let expected = Route {
                region: region("us-west-2"),
                storable: true,
            };
            assert_eq!(route(&f, op, body, ""), Some(expected), "{body}");
        }
        // A BatchGetItem goes where every table it reads has a replica; stored only if all allow.
        let batch = r#"{"RequestItems":{"orders":{"Keys":[{"pk":{"S":"a"}}]},"users":{"Keys":[{"pk":{"S":"b"}}]}}}"#;
        assert_eq!(
            route(&f, Operation::BatchGetItem, batch, ""),
            Some(Route {
                region: region("us-west-2"),
                storable: false
            })
        );
    }

    #[test]
    fn consistent_reads_writes_arns_and_tables_without_failover_stay_home() {
        let f = failover(TABLES);
        for (op, body) in [
            (
                Operation::GetItem,
                r#"{"TableName":"orders","Key":{"pk":{"S":"a"}},"ConsistentRead":true}"#,
            ),
            (
                Operation::Scan,
                r#"{"TableName":"orders","ConsistentRead":true}"#,
            ),
            (
                Operation::BatchGetItem,
                r#"{"RequestItems":{"orders":{"Keys":[{"pk":{"S":"a"}}]},"users":{"Keys":[{"pk":{"S":"b"}}],"ConsistentRead":true}}}"#,
            ),
            (
                Operation::PutItem,
                r#"{"TableName":"orders","Item":{"pk":{"S":"a"}}}"#,
            ),
            (
                Operation::UpdateItem,
                r#"{"TableName":"orders","Key":{"pk":{"S":"a"}}}"#,
            ),
            (
                Operation::GetItem,
                r#"{"TableName":"arn:aws:dynamodb:us-east-1:000000000000:table/orders","Key":{"pk":{"S":"a"}}}"#,
            ),
            (
                Operation::GetItem,
                r#"{"TableName":"off","Key":{"pk":{"S":"a"}}}"#,
            ),
            (
                Operation::GetItem,
                r#"{"TableName":"unknown","Key":{"pk":{"S":"a"}}}"#,
            ),
            // Not proven valid: DynamoDB may refuse it.
            (Operation::GetItem, r#"{"TableName":"orders","Key":{}}"#),
            // A BatchGetItem with a table that does not fail over.
            (
                Operation::BatchGetItem,
                r#"{"RequestItems":{"orders":{"Keys":[{"pk":{"S":"a"}}]},"off":{"Keys":[{"pk":{"S":"b"}}]}}}"#,
            ),
        ] {
            assert_eq!(route(&f, op, body, ""), None, "{op:?} {body}");
        }
        let no_failover = Config::from_toml("[tables.off]\nreplicas = [\"us-west-2\"]\n").unwrap();
        assert!(Failover::new(&Arc::new(no_failover)).is_none());
    }

    #[test]
    fn replicas_learned_from_describe_table_serve_tables_that_configure_none() {
        let f = failover(TABLES);
        let get_views = r#"{"TableName":"views","Key":{"pk":{"S":"a"}}}"#;
        assert_eq!(
            route(&f, Operation::GetItem, get_views, ""),
            None,
            "none known yet"
        );
        let views = TableId::new("us-east-1", "views");
        // The request's own region is never a replica to fail over to.
        f.learned(&views, vec![region("us-east-1"), region("ap-south-1")]);
        assert_eq!(
            route(&f, Operation::GetItem, get_views, ""),
            Some(Route {
                region: region("ap-south-1"),
                storable: true
            })
        );
        // Another region's table of the same name is another table.
        let elsewhere = region("eu-west-1");
        let there = f.route(Operation::GetItem, &elsewhere, get_views.as_bytes(), |_| {
            true
        });
        assert_eq!(there, None);
        f.learned(&views, Vec::new());
        assert_eq!(route(&f, Operation::GetItem, get_views, ""), None);
    }
}
