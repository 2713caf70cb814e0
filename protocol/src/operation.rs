//! The one list of operations ddbcache speaks, and what each one means for the cache.
//!
//! DynamoDB adds operations over time, and refusing one that ddbcache has not heard of would
//! block its users. Such an operation is forwarded as [`Operation::Unknown`] (or
//! [`Operation::UnknownStreams`]), of class [`OpClass::Unknown`]: ddbcache cannot know whether it
//! writes, so it is treated as a write of unknown scope and invalidates everything, before and
//! after. (`protocol::front_door` decides which targets are operations at all.)

/// Target prefix of the DynamoDB data and control plane.
pub const DYNAMODB_PREFIX: &str = "DynamoDB_20120810.";
/// Target prefix of DynamoDB Streams.
pub const STREAMS_PREFIX: &str = "DynamoDBStreams_20120810.";

/// What an operation means to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpClass {
    /// GetItem, BatchGetItem: the item cache.
    ItemRead,
    /// Query, Scan: the query cache.
    QueryRead,
    /// Writes items of tables named in the body (Put/Update/Delete/BatchWrite/TransactWrite).
    ItemWrite,
    /// PartiQL: reads or writes depending on the statements.
    PartiQl,
    /// Changes a table's definition or contents wholesale: drop its entries and its key schema.
    Control,
    /// Everything else: forwarded unchanged. None of these change what a table holds (a
    /// DescribeTable answer teaches the table's key schema).
    Other,
    /// An operation ddbcache does not know: forwarded, and it may have written anything.
    Unknown,
}

macro_rules! operations {
    ($( $name:ident => $class:ident ),* $(,)?) => {
        /// A DynamoDB (or DynamoDB Streams) operation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Operation { $( $name ),* }

        impl Operation {
            /// Every operation, in declaration order.
            pub const ALL: &'static [Operation] = &[ $( Operation::$name ),* ];

            /// The operation's name as it appears after the target prefix.
            pub fn name(self) -> &'static str {
                match self { $( Operation::$name => stringify!($name) ),* }
            }

            pub fn class(self) -> OpClass {
                match self { $( Operation::$name => OpClass::$class ),* }
            }

            /// The operation a target names after its prefix. Matched as bytes (a `match` of
            /// strings compares them one after another all the same), so a header's bytes need
            /// no proof of being text first.
            fn from_name(name: &[u8]) -> Option<Operation> {
                match name {
                    $( n if n == stringify!($name).as_bytes() => Some(Operation::$name), )*
                    _ => None,
                }
            }
        }
    };
}

operations! {
    // The item cache.
    GetItem => ItemRead,
    BatchGetItem => ItemRead,
    // The query cache.
    Query => QueryRead,
    Scan => QueryRead,
    // Item writes.
    PutItem => ItemWrite,
    UpdateItem => ItemWrite,
    DeleteItem => ItemWrite,
    BatchWriteItem => ItemWrite,
    TransactWriteItems => ItemWrite,
    // PartiQL.
    ExecuteStatement => PartiQl,
    BatchExecuteStatement => PartiQl,
    ExecuteTransaction => PartiQl,
    // Control plane calls that change what a table holds or how its items are keyed.
    CreateTable => Control,
    UpdateTable => Control,
    DeleteTable => Control,
    RestoreTableFromBackup => Control,
    RestoreTableToPointInTime => Control,
    ImportTable => Control,
    UpdateTimeToLive => Control,
    CreateGlobalTable => Control,
    UpdateGlobalTable => Control,
    UpdateGlobalTableSettings => Control,
    UpdateTableReplicaAutoScaling => Control,
    // Everything else passes through.
    TransactGetItems => Other,
    DescribeTable => Other,
    ListTables => Other,
    DescribeTimeToLive => Other,
    DescribeEndpoints => Other,
    DescribeLimits => Other,
    CreateBackup => Other,
    DeleteBackup => Other,
    DescribeBackup => Other,
    ListBackups => Other,
    DescribeContinuousBackups => Other,
    UpdateContinuousBackups => Other,
    ExportTableToPointInTime => Other,
    DescribeExport => Other,
    ListExports => Other,
    DescribeImport => Other,
    ListImports => Other,
    DescribeGlobalTable => Other,
    DescribeGlobalTableSettings => Other,
    ListGlobalTables => Other,
    DescribeTableReplicaAutoScaling => Other,
    DescribeContributorInsights => Other,
    ListContributorInsights => Other,
    UpdateContributorInsights => Other,
    DescribeKinesisStreamingDestination => Other,
    EnableKinesisStreamingDestination => Other,
    DisableKinesisStreamingDestination => Other,
    UpdateKinesisStreamingDestination => Other,
    TagResource => Other,
    UntagResource => Other,
    ListTagsOfResource => Other,
    GetResourcePolicy => Other,
    PutResourcePolicy => Other,
    DeleteResourcePolicy => Other,
    // DynamoDB Streams.
    DescribeStream => Other,
    GetRecords => Other,
    GetShardIterator => Other,
    ListStreams => Other,
    // Any other operation of DynamoDB, or of DynamoDB Streams. (Their names are not operations of
    // either service, so a target that spells them is rightly one ddbcache does not know.)
    Unknown => Unknown,
    UnknownStreams => Unknown,
}

const STREAMS_OPS: &[Operation] = &[
    Operation::DescribeStream,
    Operation::GetRecords,
    Operation::GetShardIterator,
    Operation::ListStreams,
    Operation::UnknownStreams,
];

impl Operation {
    /// A DynamoDB Streams operation (served by the Streams endpoint).
    pub fn is_streams(self) -> bool {
        STREAMS_OPS.contains(&self)
    }

    /// Parses an `X-Amz-Target` header value. Streams operations only under the Streams prefix,
    /// table operations only under the DynamoDB prefix.
    pub fn from_target(target: &str) -> Option<Operation> {
        Operation::from_target_bytes(target.as_bytes())
    }

    /// [`Operation::from_target`] of a header's bytes, which need not be text.
    pub fn from_target_bytes(target: &[u8]) -> Option<Operation> {
        let (name, streams) = if let Some(name) = target.strip_prefix(DYNAMODB_PREFIX.as_bytes()) {
            (name, false)
        } else {
            (target.strip_prefix(STREAMS_PREFIX.as_bytes())?, true)
        };
        let op = Operation::from_name(name)?;
        (STREAMS_OPS.contains(&op) == streams).then_some(op)
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip() {
        for op in Operation::ALL {
            let prefix = if STREAMS_OPS.contains(op) {
                STREAMS_PREFIX
            } else {
                DYNAMODB_PREFIX
            };
            assert_eq!(
                Operation::from_target(&format!("{prefix}{}", op.name())),
                Some(*op)
            );
        }
    }

    #[test]
    fn targets_are_read_from_bytes_that_need_not_be_text() {
        assert_eq!(
            Operation::from_target_bytes(b"DynamoDB_20120810.GetItem"),
            Some(Operation::GetItem)
        );
        assert_eq!(
            Operation::from_target_bytes(b"DynamoDBStreams_20120810.GetRecords"),
            Some(Operation::GetRecords)
        );
        for refused in [
            &b"DynamoDB_20120810.GetRecords"[..],
            b"DynamoDBStreams_20120810.GetItem",
            b"DynamoDB_20120810.GetItem\xe9",
            b"DynamoDB_20120810.\xff",
            b"DynamoDB_20120810.",
            b"GetItem",
        ] {
            assert_eq!(Operation::from_target_bytes(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn unknown_operations_are_writes_of_unknown_scope_per_service() {
        assert_eq!(Operation::Unknown.class(), OpClass::Unknown);
        assert!(!Operation::Unknown.is_streams());
        assert!(Operation::UnknownStreams.is_streams());
    }

    #[test]
    fn unknown_and_misplaced_targets_are_refused() {
        assert_eq!(
            Operation::from_target("DynamoDB_20120810.FlyToTheMoon"),
            None
        );
        assert_eq!(Operation::from_target("GetItem"), None);
        assert_eq!(Operation::from_target("DynamoDB_20120810.GetRecords"), None);
        assert_eq!(
            Operation::from_target("DynamoDBStreams_20120810.GetItem"),
            None
        );
        assert_eq!(
            Operation::from_target("DynamoDB_20120810.GetItem").map(Operation::class),
            Some(OpClass::ItemRead)
        );
    }
}
