//! The DynamoDB JSON protocol as ddbcache sees it: the operation list ([`operation`]), the error
//! shape ([`error`]), canonical keys ([`canonical`]), and the few fields the caches need from read
//! requests ([`reads`]), write requests ([`writes`], [`partiql`]) and upstream answers
//! ([`answers`]); table names, ARNs and key schemas ([`table`]); whether a read is one DynamoDB
//! accepts ([`validate`]). No HTTP, no I/O, no clock and no cache in here: these are functions of
//! bytes. What DynamoDB's HTTP front door answers is the proxy's (`proxy::front_door`).

pub mod aliases;
pub mod answers;
pub mod canonical;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod operation;
pub mod partiql;
pub mod projection;
pub mod reads;
pub mod region;
pub mod reserved_words;
pub mod swar;
pub mod table;
pub mod validate;
pub mod writes;

pub use error::ProtocolError;
pub use operation::{OpClass, Operation};

/// Content type of every DynamoDB JSON-protocol response.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
pub const HEADER_TARGET: &str = "x-amz-target";
pub const HEADER_CRC32: &str = "x-amz-crc32";
pub const HEADER_REQUEST_ID: &str = "x-amzn-requestid";
