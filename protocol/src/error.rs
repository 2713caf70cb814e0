//! The errors ddbcache answers itself, in DynamoDB's JSON shape: their `__type`, message and
//! status code (the proxy's `respond::error` makes the HTTP response).

use bytes::Bytes;

/// An error answered by ddbcache rather than by the upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("{0}")]
    Serialization(String),
    #[error("{0}")]
    UnknownOperation(String),
    #[error("{0}")]
    RequestTooLarge(String),
    /// Upstream could not be reached, or did not answer in time: retryable.
    #[error("{0}")]
    UpstreamUnavailable(String),
    /// ddbcache is receiving as many request bodies as `server.max_buffered_bytes` allows:
    /// retryable.
    #[error("{0}")]
    Overloaded(String),
    /// The client did not send its whole body within `server.body_timeout`.
    #[error("{0}")]
    RequestTimeout(String),
    /// Something inside ddbcache failed (e.g. signing credentials unavailable): retryable.
    #[error("{0}")]
    Internal(String),
    /// A request ddbcache cannot send as the client meant it (a table alias it cannot apply).
    #[error("{0}")]
    Validation(String),
}

impl ProtocolError {
    /// The HTTP status code. Upstream trouble is 503 and internal trouble 500: every AWS SDK
    /// retries both.
    pub fn status(&self) -> u16 {
        match self {
            ProtocolError::Serialization(_)
            | ProtocolError::UnknownOperation(_)
            | ProtocolError::Validation(_) => 400,
            ProtocolError::RequestTooLarge(_) => 413,
            ProtocolError::UpstreamUnavailable(_) | ProtocolError::Overloaded(_) => 503,
            ProtocolError::RequestTimeout(_) => 408,
            ProtocolError::Internal(_) => 500,
        }
    }

    /// The `__type` suffix, a name every SDK maps to an error kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            ProtocolError::Serialization(_) => "SerializationException",
            ProtocolError::UnknownOperation(_) => "UnknownOperationException",
            ProtocolError::RequestTooLarge(_) | ProtocolError::Validation(_) => {
                "ValidationException"
            }
            ProtocolError::UpstreamUnavailable(_) | ProtocolError::Overloaded(_) => {
                "ServiceUnavailable"
            }
            ProtocolError::RequestTimeout(_) => "RequestTimeoutException",
            ProtocolError::Internal(_) => "InternalServerError",
        }
    }

    /// `{"__type":"com.amazonaws.dynamodb.v20120810#Name","message":"..."}`
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{}", self.type_name()),
            "message": self.to_string(),
        });
        Bytes::from(body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_dynamodb_shape() {
        let e = ProtocolError::UnknownOperation("no such target".into());
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(
            v["__type"],
            "com.amazonaws.dynamodb.v20120810#UnknownOperationException"
        );
        assert_eq!(v["message"], "no such target");
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn upstream_trouble_is_retryable_status() {
        assert_eq!(ProtocolError::UpstreamUnavailable("x".into()).status(), 503);
        assert_eq!(ProtocolError::Internal("x".into()).status(), 500);
    }
}
