//! An AWS region name, as a client names it in its SigV4 credential scope or a table ARN.
//!
//! The name comes from the client and ends up in a host name (`dynamodb.<region>.amazonaws.com`,
//! or the `{region}` of a configured endpoint) and in cache keys, so only names shaped like AWS's
//! own are accepted: lower-case letters, digits and single hyphens, starting with a letter. Such a
//! name cannot add a path, a port, a user or another host to a URL.
//!
//! Every request names its region, so the name is held inline (no allocation; a clone copies 33 bytes):
//! the front door reads one per request, hits included.

use std::fmt;

/// A region name known to be safe to put in a host name: its bytes, zero-padded (zero never
/// occurs in a name, so equality and order are those of the names).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region {
    bytes: [u8; Region::MAX_LEN],
    len: u8,
}

impl Region {
    /// Longer than any AWS region name (the longest today, e.g. `ap-southeast-5` or
    /// `us-isob-east-1`, are under 20 characters), short enough for a DNS label.
    pub const MAX_LEN: usize = 32;

    /// `Some` if `name` is shaped like a region: 2 to [`Region::MAX_LEN`] characters of
    /// `[a-z0-9-]`, starting with a letter, not ending with a hyphen, no two hyphens in a row.
    pub fn parse(name: &str) -> Option<Region> {
        let b = name.as_bytes();
        let shaped = (2..=Self::MAX_LEN).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b[b.len() - 1] != b'-'
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && !b.windows(2).any(|w| w == b"--");
        shaped.then(|| {
            let mut bytes = [0; Self::MAX_LEN];
            bytes[..b.len()].copy_from_slice(b);
            Region {
                bytes,
                len: b.len() as u8,
            }
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (see `parse`).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
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
