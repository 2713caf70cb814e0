//! AWS's own endpoints, where requests go when `upstream.endpoint` is not set: what the AWS SDKs
//! resolve for the same region and account, so that an application pointed at ddbcache loses
//! nothing it had without it.
//!
//! Since late 2024 the SDKs send DynamoDB requests to an account-based endpoint,
//! `https://{account}.ddb.{region}.amazonaws.com`, when their credentials name the account
//! (`AWS_ACCOUNT_ID_ENDPOINT_MODE` / `account_id_endpoint_mode`: `preferred` by default,
//! `disabled`, `required`; AWS SDKs and Tools reference guide, "Account-based endpoints"). An
//! endpoint override — which is what pointing an application at ddbcache is — turns that off in
//! the client, so ddbcache makes the choice for its own upstream, with the rules of DynamoDB's
//! endpoint ruleset: account endpoints exist in the `aws`, `aws-cn` and `aws-us-gov` partitions;
//! `required` without an account, or where they do not exist, is an error; an account id that
//! cannot be a host label is an error. `tests/endpoints.rs` checks every case against the Rust
//! SDK's own resolver. DynamoDB Streams and Kinesis have no account-based endpoints.

use crate::config::AccountEndpoints;
use crate::protocol::region::partition_of;

/// A service ddbcache calls on AWS's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    DynamoDb,
    Streams,
    /// Kinesis Data Streams (the Kinesis change source).
    Kinesis,
}

impl Service {
    /// The first labels of the service's regional endpoint.
    fn prefix(self) -> &'static str {
        match self {
            Service::DynamoDb => "dynamodb",
            Service::Streams => "streams.dynamodb",
            Service::Kinesis => "kinesis",
        }
    }
}

/// Why no endpoint can be chosen: the SDKs' errors, in ddbcache's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "upstream.account_endpoints is required, but no AWS account is known: the credentials \
         name none and upstream.account_id is not set"
    )]
    NoAccount,
    #[error(
        "upstream.account_endpoints is required, but the {partition} partition ({region}) has no \
         account-based endpoints"
    )]
    NotInPartition {
        partition: &'static str,
        region: String,
    },
    #[error("the AWS account id {0:?} the credentials name cannot be part of an endpoint")]
    InvalidAccount(String),
}

/// The endpoint URL of `service` in `region` for `account` (when known), as the SDKs resolve it
/// with `mode`.
pub fn resolve(
    service: Service,
    region: &str,
    account: Option<&str>,
    mode: AccountEndpoints,
) -> Result<String, EndpointError> {
    let partition = partition_of(region);
    let regional = || Ok(partition.endpoint(service.prefix(), region));
    if service != Service::DynamoDb || mode == AccountEndpoints::Disabled {
        return regional();
    }
    if !partition.account_endpoints {
        return match mode {
            AccountEndpoints::Required => Err(EndpointError::NotInPartition {
                partition: partition.name,
                region: region.to_string(),
            }),
            _ => regional(),
        };
    }
    match account {
        Some(a) if is_host_label(a) => {
            Ok(format!("https://{a}.ddb.{region}.{}", partition.dns_suffix))
        }
        Some(a) => Err(EndpointError::InvalidAccount(a.to_string())),
        None if mode == AccountEndpoints::Required => Err(EndpointError::NoAccount),
        None => regional(),
    }
}

/// A DNS label: 1 to 63 letters, digits and hyphens, starting with a letter or digit.
fn is_host_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_endpoints_where_the_sdks_use_them() {
        use AccountEndpoints::*;
        let dynamodb = |region, account, mode| resolve(Service::DynamoDb, region, account, mode);
        let acct = Some("111122223333");
        assert_eq!(
            dynamodb("eu-west-1", acct, Preferred).unwrap(),
            "https://111122223333.ddb.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            dynamodb("eu-west-1", acct, Disabled).unwrap(),
            "https://dynamodb.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            dynamodb("eu-west-1", None, Preferred).unwrap(),
            "https://dynamodb.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            dynamodb("eu-west-1", None, Required),
            Err(EndpointError::NoAccount)
        );
        assert!(matches!(
            dynamodb("us-iso-east-1", acct, Required),
            Err(EndpointError::NotInPartition { .. })
        ));
        assert_eq!(
            resolve(Service::Streams, "cn-north-1", acct, Required).unwrap(),
            "https://streams.dynamodb.cn-north-1.amazonaws.com.cn"
        );
        assert!(is_host_label("111122223333") && !is_host_label("") && !is_host_label("a.b"));
    }
}
