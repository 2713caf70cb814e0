//! What a config must satisfy beyond its types: URLs that parse, a region name, sections that go
//! together, and no zero where a timeout or an interval is meant (every field declared
//! `positive_duration` or `positive_size` in the schema, found by its declaration).

use std::time::Duration;

use super::{units, Config, ConfigError};

impl Config {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                message: message.to_string(),
            })
        };
        for (key, endpoint) in [
            ("upstream.endpoint", self.upstream.endpoint_url()),
            (
                "upstream.streams_endpoint",
                self.upstream.streams_endpoint_url(),
            ),
            (
                "upstream.kinesis_endpoint",
                self.upstream.kinesis_endpoint_url(),
            ),
        ] {
            match endpoint.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http") | Some("https"))
                        && uri.authority().is_some() => {}
                _ => {
                    return invalid(
                        key,
                        &format!("`{endpoint}` is not an http:// or https:// URL"),
                    )
                }
            }
        }
        if let Some(account) = &self.upstream.account_id {
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                return invalid(
                    "upstream.account_id",
                    "must be an AWS account id: 12 digits",
                );
            }
        }
        if let Err(message) = self.aliases.entries() {
            return invalid("aliases", &message);
        }
        if crate::protocol::region::Region::parse(&self.upstream.region).is_none() {
            return invalid("upstream.region", "must be a region name such as us-east-1");
        }
        self.positive_fields_are_positive()?;
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be greater than 0");
        }
        if self.server.listen_backlog == 0 {
            return invalid("server.listen_backlog", "must be greater than 0");
        }
        if self.server.max_buffered_bytes < self.server.max_body_bytes {
            return invalid(
                "server.max_buffered_bytes",
                "must be at least server.max_body_bytes (one largest body must fit)",
            );
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid("tls.key_file", "tls.cert_file and tls.key_file go together");
        }
        if self.tls.client_ca_file.is_some() && !self.tls.enabled() {
            return invalid("tls.client_ca_file", "needs tls.cert_file and tls.key_file");
        }
        if self.listen.addr == self.listen.admin_addr && self.listen.addr.port() != 0 {
            return invalid(
                "listen.admin_addr",
                "must differ from listen.addr (the admin port is separate)",
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid("log.level", "not a valid tracing filter (try `info`)");
        }
        if let Some(url) = &self.fleet.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://"))
                || redis::Client::open(url.as_str()).is_err()
            {
                return invalid(
                    "fleet.redis_url",
                    "not a redis:// or rediss:// URL like redis://host:6379",
                );
            }
        }
        if self.fleet.channel.is_empty() {
            return invalid("fleet.channel", "must not be empty");
        }
        if self.fleet.shared.enabled && self.fleet.redis_url.is_none() {
            return invalid("fleet.shared.enabled", "needs fleet.redis_url");
        }
        if self.fleet.shared.enabled && !self.cache.enabled {
            return invalid("fleet.shared.enabled", "needs cache.enabled");
        }
        let fractions =
            std::iter::once(("cache.refresh_ahead".to_string(), self.cache.refresh_ahead)).chain(
                self.tables.iter().filter_map(|(name, o)| {
                    Some((format!("tables.{name}.refresh_ahead"), o.refresh_ahead?))
                }),
            );
        for (key, fraction) in fractions {
            if !(0.0..1.0).contains(&fraction) {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 0 and less than 1 (a fraction of the TTL)".into(),
                });
            }
        }
        if self.fleet.publish_queue == 0 {
            return invalid("fleet.publish_queue", "must be at least 1");
        }
        if self.streams.lease_ttl < Duration::from_secs(1) {
            return invalid("streams.lease_ttl", "must be at least 1s");
        }
        self.failover_is_possible()
    }

    /// A table's replica regions are region names, and reads fail over only where they can: while
    /// a breaker is open, to another region's endpoint, signed for that region.
    fn failover_is_possible(&self) -> Result<(), ConfigError> {
        for (name, table) in &self.tables {
            let invalid = |key: &str, message: &str| {
                Err(ConfigError::Invalid {
                    key: format!("tables.{name}.{key}"),
                    message: message.to_string(),
                })
            };
            if let Some(bad) = table
                .replicas
                .iter()
                .find(|r| crate::protocol::region::Region::parse(r).is_none())
            {
                return invalid(
                    "replicas",
                    &format!("`{bad}` is not a region name such as us-west-2"),
                );
            }
            if !table.failover {
                continue;
            }
            if self.upstream.breaker_failures == 0 {
                return invalid(
                    "failover",
                    "needs upstream.breaker_failures: reads fail over while the breaker of the \
                     table's region is open",
                );
            }
            if !self.upstream.sign {
                return invalid(
                    "failover",
                    "needs upstream.sign: a read sent to another region is signed for it",
                );
            }
            if !self.upstream.follows_client_region() {
                return invalid(
                    "failover",
                    "needs an endpoint per region (`{region}` in upstream.endpoint, or the \
                     default) and upstream.pin_region off",
                );
            }
        }
        Ok(())
    }

    /// The first field declared positive that is zero, as the error naming its key: the config is
    /// serialized with such a zero failing (`units::checking`), and the path of the failure is the
    /// dotted key.
    fn positive_fields_are_positive(&self) -> Result<(), ConfigError> {
        units::checking(|| serde_path_to_error::serialize(self, serde_json::value::Serializer))
            .map(drop)
            .map_err(|e| ConfigError::Invalid {
                key: e.path().to_string(),
                message: e.inner().to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys;
    use super::super::units::parse_duration;
    use super::*;

    /// The durations and sizes that refuse zero: timeouts and intervals, and the largest body.
    const POSITIVE: [&str; 16] = [
        "upstream.connect_timeout",
        "upstream.timeout",
        "upstream.backstop",
        "upstream.breaker_open",
        "server.max_body_bytes",
        "server.header_timeout",
        "server.body_timeout",
        "server.idle_timeout",
        "tls.reload_interval",
        "fleet.publish_timeout",
        "fleet.ping_interval",
        "fleet.ping_timeout",
        "fleet.shared.timeout",
        "fleet.shared.lease_ttl",
        "streams.poll_interval",
        "streams.describe_interval",
    ];

    /// Those with a lower bound of their own, checked by the tests below.
    const OWN_RULE: [&str; 2] = ["server.max_buffered_bytes", "streams.lease_ttl"];

    #[test]
    fn a_zero_timeout_or_interval_fails_validation_naming_it() {
        // Every duration and size the defaults print, set to zero in turn: refused, naming its
        // key, exactly where a zero means nothing (a timeout, an interval); accepted where it
        // means "off" (a TTL, a window, a grace period).
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let mut keys_seen = Vec::new();
        let mut stack = vec![(String::new(), &defaults)];
        while let Some((prefix, table)) = stack.pop() {
            for (name, value) in table {
                let key = format!("{prefix}{name}");
                match value {
                    toml::Value::Table(t) => stack.push((format!("{key}."), t)),
                    toml::Value::String(s) if parse_duration(s).is_ok() => {
                        keys_seen.push((key, toml::Value::String("0s".into())))
                    }
                    toml::Value::String(s) if units::parse_size(s).is_ok() => {
                        keys_seen.push((key, toml::Value::Integer(0)))
                    }
                    _ => {}
                }
            }
        }
        // Optional ones too, which the defaults leave out.
        keys_seen.push(("upstream.timeout".into(), toml::Value::String("0s".into())));
        assert!(keys_seen.len() > POSITIVE.len(), "{keys_seen:?}");
        for (key, zero) in keys_seen {
            let mut table = defaults.clone();
            keys::insert(&mut table, &key, zero);
            let config: Config = toml::Value::Table(table).try_into().unwrap();
            let outcome = config.validate();
            if POSITIVE.contains(&key.as_str()) {
                let err = outcome.expect_err(&key).to_string();
                assert!(
                    err.contains(&format!("{key}: must be greater than 0")),
                    "{key}: {err}"
                );
            } else if !OWN_RULE.contains(&key.as_str()) {
                outcome.unwrap_or_else(|e| panic!("{key}: {e}"));
            }
        }
    }

    #[test]
    fn lease_ttl_is_at_least_a_second() {
        let mut c = Config::default();
        c.streams.lease_ttl = Duration::from_millis(999);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("streams.lease_ttl"), "{err}");
    }

    #[test]
    fn buffered_bytes_hold_the_largest_body() {
        let mut c = Config::default();
        c.server.max_buffered_bytes = c.server.max_body_bytes - 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("server.max_buffered_bytes"), "{err}");
    }

    #[test]
    fn failover_needs_a_breaker_signing_and_an_endpoint_per_region() {
        let check = |toml: &str| Config::from_toml(toml).unwrap().validate();
        let table = "[tables.t]\nfailover = true\nreplicas = [\"us-west-2\"]\n";
        let upstream = |extra: &str| format!("[upstream]\nbreaker_failures = 3\n{extra}\n{table}");
        check(&upstream("")).unwrap();
        check(&upstream("endpoint = \"http://127.0.0.1:8001/{region}\"")).unwrap();
        for (toml, says) in [
            (table.to_string(), "upstream.breaker_failures"),
            (upstream("sign = false"), "upstream.sign"),
            (upstream("pin_region = true"), "endpoint per region"),
            (
                upstream("endpoint = \"http://127.0.0.1:8001\""),
                "endpoint per region",
            ),
        ] {
            let err = check(&toml).unwrap_err().to_string();
            assert!(
                err.contains("tables.t.failover") && err.contains(says),
                "{err}"
            );
        }
        let err = check("[tables.t]\nreplicas = [\"us-west-2\", \"West US\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tables.t.replicas") && err.contains("West US"),
            "{err}"
        );
    }

    #[test]
    fn bad_endpoint_fails_validation() {
        let mut c = Config::default();
        c.upstream.endpoint = Some("ftp://x".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("upstream.endpoint"), "{err}");
    }

    #[test]
    fn bad_region_fails_validation() {
        let mut c = Config::default();
        c.upstream.region = "us-east-1.evil.com".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("upstream.region"), "{err}");
    }
}
