//! Key schemas, fetched with ddbcache's own DescribeTable.
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

use crate::cache::Need;
use crate::protocol::answers::{describe_table_replicas, describe_table_schema};
use crate::protocol::table::{KeySchema, TableId};
use crate::protocol::{Operation, HEADER_TARGET};

use super::admit::Inbound;
use super::forward::Encoding;
use super::Cached;

/// The table's key schema: known, fetched now, or awaited from another request's fetch. `None`
/// when it cannot be had (no such table, upstream trouble). `as_sent` names the table as the
/// request did.
pub(super) async fn schema(
    cx: &Cached,
    table: &TableId,
    as_sent: &str,
    inb: &Inbound,
) -> Option<Arc<KeySchema>> {
    // Bounded: a fetch either lands or fails; a change during it sends one more round.
    for _ in 0..3 {
        match cx.cache.need_schema(table) {
            Need::Known(s) => return Some(s),
            Need::Unavailable => return None,
            Need::Wait(mut done) => {
                let _ = done.changed().await;
            }
            Need::Fetch(ticket) => {
                let schema = describe_table(cx, table, as_sent, inb).await;
                ticket.finish(schema);
            }
        }
    }
    cx.cache.key_schema(table)
}

/// Starts fetching a table's schema in the background, unless it is known or being fetched (for
/// reads and writes that do not wait for it).
pub(super) fn prefetch(cx: &Cached, table: &TableId, as_sent: &str, inb: &Inbound) {
    if let Need::Fetch(ticket) = cx.cache.need_schema(table) {
        let (cx, as_sent, inb) = (cx.clone(), as_sent.to_string(), inb.clone());
        let table = table.clone();
        tokio::spawn(async move {
            let schema = describe_table(&cx, &table, &as_sent, &inb).await;
            ticket.finish(schema);
        });
    }
}

/// ddbcache's own DescribeTable of `table`, sent with the headers of the request that needed it
/// and naming the table as it did (`table_name`). What it says of the table's replica regions is
/// kept for its reads' failover.
async fn describe_table(
    cx: &Cached,
    table: &TableId,
    table_name: &str,
    like: &Inbound,
) -> Option<KeySchema> {
    let mut headers = like.headers.clone();
    headers.insert(
        HeaderName::from_static(HEADER_TARGET),
        HeaderValue::from_static("DynamoDB_20120810.DescribeTable"),
    );
    let body = serde_json::json!({ "TableName": table_name }).to_string();
    let mut request = like.with_body(Bytes::from(body));
    request.op = Operation::DescribeTable;
    request.path = http::uri::PathAndQuery::from_static("/");
    request.headers = headers;
    let schema = match cx.upstream.send_own(&request, Encoding::Identity).await {
        Ok(answer) if answer.status == StatusCode::OK => {
            cx.upstream
                .learned_replicas(table, describe_table_replicas(&answer.body));
            describe_table_schema(&answer.body)
        }
        Ok(answer) => {
            debug!(table = table_name, status = %answer.status, "DescribeTable for the key schema failed");
            None
        }
        Err(_) => None,
    };
    cx.counters.schema_fetch(schema.is_some());
    schema
}
