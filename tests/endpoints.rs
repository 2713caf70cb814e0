//! AWS's endpoints as ddbcache chooses them, checked against the AWS SDK's own choice: the Rust
//! SDK's endpoint resolver (`aws_sdk_dynamodb::config::endpoint::DefaultResolver`, generated from
//! DynamoDB's endpoint ruleset) is asked with the same region, account and
//! `AccountIdEndpointMode` for every partition, and must give the same URL, or fail where
//! ddbcache fails.

use aws_sdk_dynamodb::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use ddbcache::config::AccountEndpoints;
use ddbcache::upstream::endpoints::{resolve, Service};

/// What the SDK resolves: the URL, or `None` for an error.
async fn sdk(region: &str, account: Option<&str>, mode: AccountEndpoints) -> Option<String> {
    let mode = match mode {
        AccountEndpoints::Preferred => "preferred",
        AccountEndpoints::Disabled => "disabled",
        AccountEndpoints::Required => "required",
    };
    let params = Params::builder()
        .region(region)
        .use_fips(false)
        .use_dual_stack(false)
        .account_id_endpoint_mode(mode)
        .set_account_id(account.map(str::to_string))
        .build()
        .unwrap();
    DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .ok()
        .map(|e| e.url().to_string())
}

#[tokio::test]
async fn dynamodb_endpoints_are_the_sdks() {
    let regions = [
        "us-east-1",
        "eu-central-2",
        "ap-southeast-7",
        "mx-central-1",
        "il-central-1",
        "cn-north-1",
        "cn-northwest-1",
        "us-gov-west-1",
        "us-iso-east-1",
        "us-isob-east-1",
        "us-isof-south-1",
        "eu-isoe-west-1",
        "eusc-de-east-1",
        // A region the partition table does not list yet: the SDKs put it in `aws`.
        "xx-future-9",
    ];
    let accounts = [
        None,
        Some("111122223333"),
        Some("000000000000"),
        Some(""),
        Some("not.an.account"),
    ];
    let modes = [
        AccountEndpoints::Preferred,
        AccountEndpoints::Disabled,
        AccountEndpoints::Required,
    ];
    let mut compared = 0;
    for region in regions {
        for account in accounts {
            for mode in modes {
                let ours = resolve(Service::DynamoDb, region, account, mode).ok();
                let theirs = sdk(region, account, mode).await;
                assert_eq!(ours, theirs, "{region} {account:?} {mode:?}");
                compared += 1;
            }
        }
    }
    assert_eq!(compared, regions.len() * accounts.len() * modes.len());
}
