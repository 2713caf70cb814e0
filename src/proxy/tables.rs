//! Which table a read names, and its key schema — fetched with ddbcache's own DescribeTable.
//!
//! A read's `TableName` resolves to a table identity (`region/name`) when it is a name, or the
//! ARN of a table of the request's region owned by the account ddbcache's credentials reach (as
//! the table's own DescribeTable showed); anything else is a foreign table and bypasses the cache.
//!
//! The schema is fetched once per table (single-flight: concurrent callers wait for the first), with
//! the headers of the request that needed it, so that it reaches the same region and, when
//! ddbcache does not sign, carries the client's own credentials. It costs one DynamoDB call per
//! table per process, and again after every control-plane call or contradiction.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use tracing::debug;

use crate::cache::schemas::Need;
use crate::cache::Cache;
use crate::protocol::answers::describe_table_schema;
use crate::protocol::table::{KeySchema, TableId, TableRef};
use crate::protocol::{Operation, HEADER_TARGET};
use crate::upstream::UpstreamResponse;

use super::admit::Inbound;
use super::policy::BypassReason;
use super::{Encoding, Proxy};

/// A table a read may use the cache for.
pub(crate) struct ReadTable<'a> {
    /// Its identity.
    pub(crate) id: TableId,
    /// Its plain name (per-table settings are by name).
    pub(crate) name: &'a str,
    /// How the request named it (the DescribeTable ddbcache sends names it the same way).
    pub(crate) as_sent: &'a str,
}

impl Proxy {
    /// The table a read names, if the cache may be used for it.
    pub(super) fn read_table<'a>(
        &self,
        cache: &Cache,
        region: &str,
        table_name: &'a str,
    ) -> Result<ReadTable<'a>, BypassReason> {
        let name = match TableRef::parse(table_name) {
            TableRef::Name(n) => n,
            TableRef::Arn(a)
                if a.region == region
                    && cache.schemas().local_account(region).as_deref() == Some(a.account) =>
            {
                a.name
            }
            TableRef::Arn(_) | TableRef::Malformed => return Err(BypassReason::ForeignTable),
        };
        Ok(ReadTable {
            id: TableId::new(region, name),
            name,
            as_sent: table_name,
        })
    }

    /// The table's key schema: known, fetched now, or awaited from another request's fetch.
    /// `None` when it cannot be had (no such table, upstream trouble).
    pub(super) async fn schema(
        self: &Arc<Self>,
        cache: &Cache,
        table: &ReadTable<'_>,
        inb: &Inbound,
    ) -> Option<Arc<KeySchema>> {
        // Bounded: a fetch either lands or fails; a change during it sends one more round.
        for _ in 0..3 {
            match cache.schemas().need(&table.id) {
                Need::Known(s) => return Some(s),
                Need::Unavailable => return None,
                Need::Wait(mut done) => {
                    let _ = done.changed().await;
                }
                Need::Fetch(ticket) => {
                    let schema = self.describe_table(table.as_sent, inb).await;
                    self.metrics
                        .schema_fetches
                        .with_label_values(&[if schema.is_some() { "known" } else { "failed" }])
                        .inc();
                    ticket.finish(schema);
                }
            }
        }
        cache.schemas().get(&table.id)
    }

    /// Starts fetching a table's schema in the background, unless it is known or being fetched
    /// (for writes, which do not wait: until it is known they invalidate the whole table).
    pub(super) fn prefetch_schema(
        self: &Arc<Self>,
        cache: &Arc<Cache>,
        id: &TableId,
        name: &str,
        inb: &Inbound,
    ) {
        if let Need::Fetch(ticket) = cache.schemas().need(id) {
            let this = self.clone();
            let (name, inb) = (name.to_string(), inb.clone());
            tokio::spawn(async move {
                let schema = this.describe_table(&name, &inb).await;
                this.metrics
                    .schema_fetches
                    .with_label_values(&[if schema.is_some() { "known" } else { "failed" }])
                    .inc();
                ticket.finish(schema);
            });
        }
    }

    /// ddbcache's own DescribeTable, sent with the headers of the request that needed it.
    async fn describe_table(&self, table_name: &str, like: &Inbound) -> Option<KeySchema> {
        let mut headers = like.headers.clone();
        headers.insert(
            HeaderName::from_static(HEADER_TARGET),
            HeaderValue::from_static("DynamoDB_20120810.DescribeTable"),
        );
        let body = serde_json::json!({ "TableName": table_name }).to_string();
        let mut request = like.with_body(Bytes::from(body));
        request.op = Operation::DescribeTable;
        request.path = "/".to_string();
        request.headers = headers;
        match self.forward(&request, Encoding::Identity).await {
            Ok(answer) if answer.status == StatusCode::OK => describe_table_schema(&answer.body),
            Ok(answer) => {
                debug!(table = table_name, status = %answer.status, "DescribeTable for the key schema failed");
                None
            }
            Err(_) => None,
        }
    }
}

/// Whether an upstream answer says the table's key is not what ddbcache thought, or the table is
/// gone: the schema is then forgotten and fetched again when next needed.
pub(crate) fn contradicts_schema(answer: &UpstreamResponse) -> bool {
    if answer.status != StatusCode::BAD_REQUEST {
        return false;
    }
    let body = &answer.body[..];
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    has(b"ResourceNotFoundException")
        || has(b"does not match the schema")
        || has(b"Missing the key")
}
