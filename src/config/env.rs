//! `DDBCACHE_*` environment variables: each overrides one config key ([`ENV_OVERRIDES`] is the
//! one list of them). A variable's value is put into the file's TOML at its key before the whole
//! is deserialized, so it is read by the same parsers as the file (a size takes `256MiB`, a flag
//! `true` or `false`). An empty variable counts as unset and returns its key to the default.

use std::path::Path;

use serde::de::Error as _;

use super::{keys, renamed, Config, ConfigError};

/// The environment variable naming the config file to read (`--config` wins over it).
pub const CONFIG_ENV: &str = "DDBCACHE_CONFIG";

/// Environment variables that override config keys: `(variable, dotted key)`. The `_MS` variables
/// of the upstream timeouts are their old spellings, in whole milliseconds (`renamed`).
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("DDBCACHE_LISTEN_ADDR", "listen.addr"),
    ("DDBCACHE_ADMIN_ADDR", "listen.admin_addr"),
    ("DDBCACHE_UPSTREAM_ENDPOINT", "upstream.endpoint"),
    (
        "DDBCACHE_UPSTREAM_KINESIS_ENDPOINT",
        "upstream.kinesis_endpoint",
    ),
    ("DDBCACHE_UPSTREAM_REGION", "upstream.region"),
    ("DDBCACHE_UPSTREAM_PIN_REGION", "upstream.pin_region"),
    ("DDBCACHE_UPSTREAM_SIGN", "upstream.sign"),
    (
        "DDBCACHE_UPSTREAM_ACCOUNT_ENDPOINTS",
        "upstream.account_endpoints",
    ),
    ("DDBCACHE_UPSTREAM_ACCOUNT_ID", "upstream.account_id"),
    (
        "DDBCACHE_UPSTREAM_CONNECT_TIMEOUT",
        "upstream.connect_timeout",
    ),
    (
        "DDBCACHE_UPSTREAM_CONNECT_TIMEOUT_MS",
        "upstream.connect_timeout_ms",
    ),
    ("DDBCACHE_UPSTREAM_TIMEOUT", "upstream.timeout"),
    ("DDBCACHE_UPSTREAM_TIMEOUT_MS", "upstream.timeout_ms"),
    ("DDBCACHE_UPSTREAM_BACKSTOP", "upstream.backstop"),
    (
        "DDBCACHE_UPSTREAM_BREAKER_FAILURES",
        "upstream.breaker_failures",
    ),
    ("DDBCACHE_UPSTREAM_BREAKER_OPEN", "upstream.breaker_open"),
    (
        "DDBCACHE_UPSTREAM_BREAKER_HANG_UP",
        "upstream.breaker_hang_up",
    ),
    ("DDBCACHE_MAX_BODY_BYTES", "server.max_body_bytes"),
    ("DDBCACHE_SHUTDOWN_GRACE", "server.shutdown_grace"),
    ("DDBCACHE_WORKER_THREADS", "server.worker_threads"),
    ("DDBCACHE_MAX_CONNECTIONS", "server.max_connections"),
    ("DDBCACHE_LISTEN_BACKLOG", "server.listen_backlog"),
    ("DDBCACHE_HEADER_TIMEOUT", "server.header_timeout"),
    ("DDBCACHE_BODY_TIMEOUT", "server.body_timeout"),
    ("DDBCACHE_IDLE_TIMEOUT", "server.idle_timeout"),
    ("DDBCACHE_MAX_BUFFERED_BYTES", "server.max_buffered_bytes"),
    ("DDBCACHE_ADMIN_TOKEN", "admin.token"),
    ("DDBCACHE_ADMIN_TOKEN_FILE", "admin.token_file"),
    ("DDBCACHE_TLS_CERT_FILE", "tls.cert_file"),
    ("DDBCACHE_TLS_KEY_FILE", "tls.key_file"),
    ("DDBCACHE_TLS_CLIENT_CA_FILE", "tls.client_ca_file"),
    ("DDBCACHE_LOG_FORMAT", "log.format"),
    ("DDBCACHE_LOG_LEVEL", "log.level"),
    ("DDBCACHE_CACHE_ENABLED", "cache.enabled"),
    ("DDBCACHE_CACHE_HEADER", "cache.header"),
    ("DDBCACHE_ITEM_TTL", "cache.item.ttl"),
    ("DDBCACHE_ITEM_NEGATIVE_TTL", "cache.item.negative_ttl"),
    ("DDBCACHE_ITEM_CAPACITY", "cache.item.capacity"),
    ("DDBCACHE_QUERY_TTL", "cache.query.ttl"),
    ("DDBCACHE_QUERY_CAPACITY", "cache.query.capacity"),
    ("DDBCACHE_CONSISTENCY_WINDOW", "cache.consistency_window"),
    ("DDBCACHE_IN_DOUBT_WINDOW", "cache.in_doubt_window"),
    ("DDBCACHE_CACHE_COMPRESSION", "cache.compression"),
    ("DDBCACHE_STALE_IF_ERROR", "cache.stale_if_error"),
    ("DDBCACHE_REFRESH_AHEAD", "cache.refresh_ahead"),
    ("DDBCACHE_FLEET_REDIS_URL", "fleet.redis_url"),
    ("DDBCACHE_FLEET_REDIS_CA_FILE", "fleet.redis_ca_file"),
    ("DDBCACHE_FLEET_CHANNEL", "fleet.channel"),
    ("DDBCACHE_FLEET_SHARED", "fleet.shared.enabled"),
    (
        "DDBCACHE_FLEET_SHARED_CONSISTENCY",
        "fleet.shared.consistency",
    ),
    ("DDBCACHE_FLEET_SHARED_KEY_FILE", "fleet.shared.key_file"),
    ("DDBCACHE_FLEET_PUBLISH_TIMEOUT", "fleet.publish_timeout"),
    ("DDBCACHE_FLEET_PUBLISH_QUEUE", "fleet.publish_queue"),
    ("DDBCACHE_STREAMS_TABLES", "streams.tables"),
    ("DDBCACHE_STREAMS_SOURCE", "streams.source"),
    ("DDBCACHE_ALIASES", "aliases"),
];

impl Config {
    /// The config that `text` (a file's contents, `path` naming it in errors) and the `DDBCACHE_*`
    /// variables of `env` describe, not yet validated. `env` is a function so that tests need not
    /// touch the process environment.
    pub fn from_toml_and_env(
        text: &str,
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        // The file alone first, so that its errors are reported as the file's.
        let (mut table, _) = Self::parse_file(text, path)?;
        let set = |var: &str| env(var).is_some_and(|v| !v.trim().is_empty());
        let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
        for &(var, key) in ENV_OVERRIDES {
            let Some(raw) = env(var) else { continue };
            let raw = raw.trim();
            let current = renamed::current(key);
            // The variable of the key's other spelling, when that is set too.
            let twin = renamed::other_spelling(key)
                .map(variable_of)
                .filter(|twin| set(twin));
            if raw.is_empty() {
                // Unset, unless the other spelling is set: that one then decides.
                if twin.is_none() {
                    keys::remove(&mut table, current);
                }
                continue;
            }
            let env_error = |source| ConfigError::Env {
                var,
                key,
                source: Box::new(source),
            };
            if let Some(twin) = twin {
                return Err(env_error(toml::de::Error::custom(format!(
                    "{var} and {twin} are one setting: keep only {}",
                    variable_of(current)
                ))));
            }
            let value = if current == key {
                env_value(raw, keys::lookup(&defaults, key))
            } else {
                renamed::env_value(key, raw).map_err(env_error)?
            };
            // Each variable alone over the defaults, so that a bad value names its variable.
            let mut alone = toml::Table::new();
            keys::insert(&mut alone, current, value.clone());
            toml::Value::Table(alone)
                .try_into::<Config>()
                .map_err(env_error)?;
            keys::insert(&mut table, current, value);
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|source| ConfigError::Toml {
                path: path.map(Path::to_path_buf),
                source: Box::new(source),
            })
    }
}

/// The variable that overrides `key`.
fn variable_of(key: &str) -> &'static str {
    ENV_OVERRIDES
        .iter()
        .find(|(_, k)| *k == key)
        .map_or("", |(var, _)| var)
}

/// An environment value as the TOML value its key takes: a flag or a number when the key's
/// default is one, else a string (which the key's own parser reads, as it reads the file's).
fn env_value(raw: &str, default: Option<&toml::Value>) -> toml::Value {
    match default {
        Some(toml::Value::Boolean(_)) => match raw {
            "true" => return toml::Value::Boolean(true),
            "false" => return toml::Value::Boolean(false),
            _ => {}
        },
        Some(toml::Value::Integer(_)) => {
            if let Ok(n) = raw.parse() {
                return toml::Value::Integer(n);
            }
        }
        Some(toml::Value::Float(_)) => {
            if let Ok(x) = raw.parse() {
                return toml::Value::Float(x);
            }
        }
        _ => {}
    }
    toml::Value::String(raw.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{chain, with_env};
    use super::super::{LogFormat, StreamTables};
    use super::*;

    #[test]
    fn env_overrides_file() {
        let c = with_env(
            "[upstream]\nregion = \"eu-west-1\"\n",
            &[
                ("DDBCACHE_UPSTREAM_REGION", "ap-south-1"),
                ("DDBCACHE_ITEM_CAPACITY", "1GiB"),
                ("DDBCACHE_CACHE_ENABLED", "false"),
                ("DDBCACHE_UPSTREAM_TIMEOUT", "250ms"),
                ("DDBCACHE_SHUTDOWN_GRACE", "5s"),
                ("DDBCACHE_LOG_FORMAT", "json"),
            ],
        )
        .unwrap();
        assert_eq!(c.upstream.region, "ap-south-1");
        assert_eq!(c.cache.item.capacity, 1 << 30);
        assert!(!c.cache.enabled);
        assert_eq!(c.upstream.timeout, Some(Duration::from_millis(250)));
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn env_values_take_what_the_file_takes() {
        // A size in bytes, as the file allows.
        let c = with_env("", &[("DDBCACHE_MAX_BODY_BYTES", "1048576")]).unwrap();
        assert_eq!(c.server.max_body_bytes, 1 << 20);
        // A flag is `true` or `false`, as in the file.
        assert!(with_env("", &[("DDBCACHE_UPSTREAM_SIGN", "yes")]).is_err());
        // A fraction is a number, as in the file.
        let c = with_env("", &[("DDBCACHE_REFRESH_AHEAD", "0.25")]).unwrap();
        assert_eq!(c.cache.refresh_ahead, 0.25);
        // A list of stream tables is comma-separated.
        let c = with_env("", &[("DDBCACHE_STREAMS_TABLES", "a, b")]).unwrap();
        assert_eq!(
            c.streams.tables,
            StreamTables::Named(vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn empty_env_value_returns_the_key_to_its_default() {
        let c = with_env(
            "[upstream]\nendpoint = \"http://127.0.0.1:4567\"\n",
            &[("DDBCACHE_UPSTREAM_ENDPOINT", "")],
        )
        .unwrap();
        assert_eq!(c.upstream.endpoint, None);
    }

    #[test]
    fn bad_env_value_names_the_variable_and_key() {
        let err = with_env("", &[("DDBCACHE_UPSTREAM_SIGN", "maybe")]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Env {
                    var: "DDBCACHE_UPSTREAM_SIGN",
                    ..
                }
            ),
            "{err:?}"
        );
        let text = chain(&err);
        assert!(text.contains("upstream.sign"), "{text}");
        assert!(text.contains("maybe"), "{text}");
        let err = chain(&with_env("", &[("DDBCACHE_ITEM_TTL", "soon")]).unwrap_err());
        assert!(err.contains("DDBCACHE_ITEM_TTL"), "{err}");
    }

    #[test]
    fn every_override_names_a_key() {
        // Unknown keys are errors, so a dotted key that names nothing fails here.
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for &(var, key) in ENV_OVERRIDES {
            let example = match keys::lookup(&defaults, key) {
                Some(toml::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                // Keys without a default value.
                None if renamed::current(key) != key => "3000".to_string(),
                None if ["cache.in_doubt_window", "upstream.timeout"].contains(&key) => {
                    "12s".to_string()
                }
                None if key == "upstream.account_endpoints" => "required".to_string(),
                None if key == "aliases" => "orders=orders-restored".to_string(),
                None => "http://127.0.0.1:4567".to_string(),
            };
            with_env("", &[(var, &example)]).unwrap_or_else(|e| panic!("{var}: {}", chain(&e)));
        }
    }
}
