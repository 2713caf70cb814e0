//! The errors ddbcache answers itself, in DynamoDB's JSON shape, and the one place that turns them
//! into HTTP responses' parts.

use bytes::Bytes;
use http::StatusCode;

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
}

impl ProtocolError {
    /// HTTP status. Upstream trouble is 503 and internal trouble 500: every AWS SDK retries both.
    pub fn status(&self) -> StatusCode {
        match self {
            ProtocolError::Serialization(_) | ProtocolError::UnknownOperation(_) => {
                StatusCode::BAD_REQUEST
            }
            ProtocolError::RequestTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProtocolError::UpstreamUnavailable(_) | ProtocolError::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProtocolError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProtocolError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `__type` suffix, a name every SDK maps to an error kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            ProtocolError::Serialization(_) => "SerializationException",
            ProtocolError::UnknownOperation(_) => "UnknownOperationException",
            ProtocolError::RequestTooLarge(_) => "ValidationException",
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
        assert!(ProtocolError::UpstreamUnavailable("x".into())
            .status()
            .is_server_error());
        assert!(ProtocolError::Internal("x".into())
            .status()
            .is_server_error());
    }
}
