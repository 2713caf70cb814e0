//! SigV4 re-signing with credentials from the standard AWS chain (environment, shared profile,
//! web identity / IRSA, EKS pod identity, ECS container and EC2 instance metadata).
//!
//! Credentials are cached and refreshed five minutes before they expire (by the request that
//! notices, and by a background refresher), so the request path almost never waits on STS.
//! They are never logged.

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_types::endpoint_config::AccountIdEndpointMode;
use tokio::sync::{Mutex, RwLock};

use crate::config::AccountEndpoints;

/// Refresh credentials this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot load AWS credentials")]
    Credentials(#[source] aws_credential_types::provider::error::CredentialsError),
    #[error("invalid signing parameters")]
    Parameters(#[source] BoxError),
    #[error("the request cannot be signed")]
    Request(#[source] BoxError),
}

/// Signs requests for DynamoDB (the signing name of DynamoDB Streams is `dynamodb` too).
pub struct Signer {
    provider: SharedCredentialsProvider,
    region: String,
    cached: RwLock<Option<Credentials>>,
    refreshing: Mutex<()>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer using the default credential chain, and the account-based endpoint mode the
    /// SDKs read with it (`AWS_ACCOUNT_ID_ENDPOINT_MODE`, the profile's
    /// `account_id_endpoint_mode`), when one is set.
    pub async fn from_default_chain(
        region: String,
    ) -> anyhow::Result<(Signer, Option<AccountEndpoints>)> {
        let sdk_config = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(region.clone()))
            .load()
            .await;
        let provider = sdk_config
            .credentials_provider()
            .ok_or_else(|| anyhow::anyhow!("no AWS credential provider could be configured"))?;
        let mode = sdk_config.account_id_endpoint_mode().map(|m| match m {
            AccountIdEndpointMode::Disabled => AccountEndpoints::Disabled,
            AccountIdEndpointMode::Required => AccountEndpoints::Required,
            // Preferred, and whatever a newer SDK adds: the SDKs' default.
            _ => AccountEndpoints::Preferred,
        });
        Ok((Self::with_provider(provider, region), mode))
    }

    pub fn with_provider(provider: SharedCredentialsProvider, region: String) -> Signer {
        Signer {
            provider,
            region,
            cached: RwLock::new(None),
            refreshing: Mutex::new(()),
        }
    }

    fn fresh(c: &Credentials) -> bool {
        c.expiry()
            .is_none_or(|exp| exp > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
    }

    fn usable(c: &Credentials) -> bool {
        c.expiry().is_none_or(|exp| exp > SystemTime::now())
    }

    /// Current credentials, refreshing them if they are near expiry.
    pub async fn credentials(&self) -> Result<Credentials, SigningError> {
        if let Some(c) = self.cached.read().await.as_ref().filter(|c| Self::fresh(c)) {
            return Ok(c.clone());
        }
        let _one_refresh_at_a_time = self.refreshing.lock().await;
        if let Some(c) = self.cached.read().await.as_ref().filter(|c| Self::fresh(c)) {
            return Ok(c.clone());
        }
        match self.provider.provide_credentials().await {
            Ok(c) => {
                *self.cached.write().await = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                // Keep using credentials that have not yet expired while the refresh fails.
                let old = self.cached.read().await.clone().filter(Self::usable);
                old.ok_or(SigningError::Credentials(e))
            }
        }
    }

    /// Signs `request` (whose URI is absolute and whose `host` header is set) in place for the
    /// signer's region, replacing any `authorization`, `x-amz-date` and `x-amz-security-token` it
    /// carries.
    pub async fn sign(
        &self,
        request: &mut http::Request<bytes::Bytes>,
    ) -> Result<(), SigningError> {
        self.sign_for(request, &self.region).await
    }

    /// Signs `request` as [`Signer::sign`] does, for `region`.
    pub async fn sign_for(
        &self,
        request: &mut http::Request<bytes::Bytes>,
        region: &str,
    ) -> Result<(), SigningError> {
        self.sign_as(request, region, "dynamodb").await
    }

    /// Signs `request` as a call of the service whose signing name is `service` (`dynamodb`,
    /// `kinesis`) in `region`.
    pub async fn sign_as(
        &self,
        request: &mut http::Request<bytes::Bytes>,
        region: &str,
        service: &str,
    ) -> Result<(), SigningError> {
        let credentials = self.credentials().await?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| SigningError::Parameters(e.into()))?
            .into();
        for h in ["authorization", "x-amz-date", "x-amz-security-token"] {
            request.headers_mut().remove(h);
        }
        let instructions = {
            let headers = request
                .headers()
                .iter()
                .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)));
            let uri = request.uri().to_string();
            let signable = SignableRequest::new(
                request.method().as_str(),
                uri,
                headers,
                SignableBody::Bytes(request.body()),
            )
            .map_err(|e| SigningError::Request(e.into()))?;
            sign(signable, &params)
                .map_err(|e| SigningError::Request(e.into()))?
                .into_parts()
                .0
        };
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signs_with_authorization_for_the_host() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let signer =
            Signer::with_provider(SharedCredentialsProvider::new(creds), "eu-west-1".into());
        let mut req = http::Request::builder()
            .method("POST")
            .uri("https://dynamodb.eu-west-1.amazonaws.com/")
            .header("host", "dynamodb.eu-west-1.amazonaws.com")
            .header("x-amz-target", "DynamoDB_20120810.ListTables")
            .header("authorization", "bogus")
            .body(bytes::Bytes::from_static(b"{}"))
            .unwrap();
        signer.sign(&mut req).await.unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/eu-west-1/dynamodb/aws4_request"), "{auth}");
        assert!(
            auth.contains("SignedHeaders=") && auth.contains("host"),
            "{auth}"
        );
        assert!(req.headers().contains_key("x-amz-date"));
    }

    #[tokio::test]
    async fn expired_credentials_are_not_used() {
        let creds = Credentials::new(
            "AKID",
            "secret",
            None,
            Some(SystemTime::now() - Duration::from_secs(1)),
            "test",
        );
        // A provider that always hands out expired credentials: they are returned once (fresh
        // from the provider), but a failing refresh would not fall back to them.
        let signer = Signer::with_provider(
            SharedCredentialsProvider::new(creds.clone()),
            "us-east-1".into(),
        );
        assert!(!Signer::usable(&creds));
        assert!(!Signer::fresh(&creds));
        assert!(signer.credentials().await.is_ok());
    }
}
