//! An AWS region name, as a client names it in its SigV4 credential scope or a table ARN.
//!
//! The name comes from the client and ends up in a host name (`dynamodb.<region>.amazonaws.com`,
//! or the `{region}` of a configured endpoint) and in cache keys, so only names shaped like AWS's
//! own are accepted: lower-case letters, digits and single hyphens, starting with a letter. Such a
//! name cannot add a path, a port, a user or another host to a URL.
//!
//! Every request names its region, so the name is held inline (no allocation; a clone copies 36 bytes):
//! the front door reads one per request, hits included.
//!
//! A region belongs to a [`Partition`], which says where its endpoints are (`amazonaws.com`,
//! `amazonaws.com.cn`, ...) and whether DynamoDB serves account-based endpoints there.

use std::fmt;

use arrayvec::ArrayString;

/// A region name known to be safe to put in a host name, held inline (equality, order and hash
/// are those of the name).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region {
    name: ArrayString<{ Region::MAX_LEN }>,
}

impl Region {
    /// Longer than any AWS region name (the longest today, e.g. `ap-southeast-5` or
    /// `us-isob-east-1`, are under 20 characters), short enough for a DNS label.
    pub const MAX_LEN: usize = 32;

    /// `Some` if `name` is shaped like a region: 2 to [`Region::MAX_LEN`] characters of
    /// `[a-z0-9-]`, starting with a letter, not ending with a hyphen, no two hyphens in a row.
    pub fn parse(name: &str) -> Option<Region> {
        Region::parse_bytes(name.as_bytes())
    }

    /// [`Region::parse`] of bytes (a region read out of a header, which may not be text).
    pub fn parse_bytes(b: &[u8]) -> Option<Region> {
        if !(2..=Self::MAX_LEN).contains(&b.len())
            || !b[0].is_ascii_lowercase()
            || b[b.len() - 1] == b'-'
        {
            return None;
        }
        // One pass (every signed request's region is read here): each byte allowed, and no
        // hyphen after a hyphen.
        let mut hyphen = false;
        for c in b {
            let next = *c == b'-';
            if !(c.is_ascii_lowercase() || c.is_ascii_digit() || next) || (next && hyphen) {
                return None;
            }
            hyphen = next;
        }
        // Every byte is ASCII by now.
        let name = std::str::from_utf8(b).ok()?;
        ArrayString::from(name).ok().map(|name| Region { name })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// An AWS partition, as far as DynamoDB's endpoints go.
#[derive(Debug, PartialEq, Eq)]
pub struct Partition {
    /// `aws`, `aws-cn`, ...: what a table ARN of the partition starts with.
    pub name: &'static str,
    /// The domain its endpoints are under: `https://dynamodb.{region}.{dns_suffix}`.
    pub dns_suffix: &'static str,
    /// Whether DynamoDB serves account-based endpoints (`https://{account}.ddb.{region}.
    /// {dns_suffix}`) in the partition.
    pub account_endpoints: bool,
}

/// The partitions other than `aws`, by the start of their regions' names (most specific first),
/// as the SDKs' partition table (`partitions.json`) has them.
const PARTITIONS: &[(&str, Partition)] = &[
    ("us-gov-", partition("aws-us-gov", "amazonaws.com", true)),
    ("us-isob-", partition("aws-iso-b", "sc2s.sgov.gov", false)),
    ("us-isof-", partition("aws-iso-f", "csp.hci.ic.gov", false)),
    ("us-iso-", partition("aws-iso", "c2s.ic.gov", false)),
    ("eu-isoe-", partition("aws-iso-e", "cloud.adc-e.uk", false)),
    ("eusc-", partition("aws-eusc", "amazonaws.eu", false)),
    ("cn-", partition("aws-cn", "amazonaws.com.cn", true)),
];

/// `aws`: every region no other partition claims, as in the SDKs.
const AWS: Partition = partition("aws", "amazonaws.com", true);

impl Partition {
    /// The regional endpoint of `service` (`dynamodb`, `streams.dynamodb`, `kinesis`) in `region`.
    pub fn endpoint(&self, service: &str, region: &str) -> String {
        format!("https://{service}.{region}.{}", self.dns_suffix)
    }
}

const fn partition(name: &'static str, dns_suffix: &'static str, accounts: bool) -> Partition {
    Partition {
        name,
        dns_suffix,
        account_endpoints: accounts,
    }
}

/// The partition `region` belongs to.
pub fn partition_of(region: &str) -> &'static Partition {
    PARTITIONS
        .iter()
        .find(|(prefix, _)| region.starts_with(prefix))
        .map_or(&AWS, |(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_region_names_are_accepted() {
        for name in [
            "us-east-1",
            "eu-west-3",
            "ap-southeast-5",
            "us-gov-west-1",
            "cn-northwest-1",
            "us-isob-east-1",
            "local",
        ] {
            assert_eq!(Region::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn names_not_shaped_like_a_region_are_refused() {
        let long = "a".repeat(Region::MAX_LEN + 1);
        for name in [
            "",
            "a",
            "a--b",
            "us--east-1",
            "-us",
            "us-",
            "Us-east-1",
            "us_east_1",
            "1us",
            "us-east-1.",
            &long,
        ] {
            assert!(Region::parse(name).is_none(), "{name}");
        }
        assert!(Region::parse(&long[1..]).is_some());
    }

    #[test]
    fn regions_belong_to_partitions() {
        for (region, name) in [
            ("us-east-1", "aws"),
            ("us-gov-west-1", "aws-us-gov"),
            ("us-iso-east-1", "aws-iso"),
            ("us-isob-east-1", "aws-iso-b"),
            ("cn-northwest-1", "aws-cn"),
            ("xx-new-1", "aws"),
        ] {
            assert_eq!(partition_of(region).name, name, "{region}");
        }
    }

    #[test]
    fn names_that_could_change_a_url_are_refused() {
        for name in [
            "",
            "a",
            "US-EAST-1",
            "us-east-1.evil.com",
            "us-east-1/x",
            "us-east-1:443",
            "user@host",
            "us east 1",
            "-us-east-1",
            "us-east-1-",
            "us--east-1",
            "1us-east",
            "us-east-1\n",
            "ab%2e",
            &"a".repeat(Region::MAX_LEN + 1),
        ] {
            assert_eq!(Region::parse(name), None, "{name:?}");
        }
    }
}
