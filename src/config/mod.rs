//! Typed configuration: `config/ddbcache.toml` (or any file given with `--config`), then `DDBCACHE_*`
//! environment overrides, then validation.
//!
//! Every key has a default, so an empty file is a valid config. Unknown keys are errors: a typo in a
//! sidecar's config should fail at start, not silently fall back to a default. `config/ddbcache.toml`
//! documents every key.
//!
//! A key is declared once, in `schema`: its field, its default, and its unit (a duration or a size,
//! which may have to be more than zero). Parsing, `check-config`'s TOML and JSON, and the zero
//! check all follow that declaration. Around it: `units` (`"5m"`, `"256MiB"`, and their forms),
//! `env` (the `DDBCACHE_*` variables), `renamed` (old spellings of keys, still read), `validate`,
//! `render` (`to_toml`, `to_json`) and `sizing` (the container memory rule).

mod env;
mod keys;
mod renamed;
mod render;
mod schema;
mod sizing;
mod units;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use env::{CONFIG_ENV, ENV_OVERRIDES};
pub use schema::{
    is_table_name, parse_alias_key, redacted_url, AccountEndpoints, AdminConfig, CacheConfig,
    Compression, Consistency, FleetConfig, ItemCacheConfig, ListenConfig, LogConfig, LogFormat,
    QueryCacheConfig, ServerConfig, SharedConfig, StreamSource, StreamTables, StreamsConfig,
    TableAliases, TableOverrides, TlsConfig, UpstreamConfig, REGION_PLACEHOLDER,
};
pub use sizing::CONTAINER_MEMORY_RULE;
pub use units::{parse_duration, parse_size};

/// The whole configuration, as read from TOML.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: ListenConfig,
    pub upstream: UpstreamConfig,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub cache: CacheConfig,
    pub admin: AdminConfig,
    pub tls: TlsConfig,
    /// Per-table overrides, keyed by table name.
    pub tables: BTreeMap<String, TableOverrides>,
    /// The invalidation bus shared by a fleet of sidecars (off without `redis_url`).
    pub fleet: FleetConfig,
    /// DynamoDB Streams read to invalidate writes made elsewhere (off without `tables`).
    pub streams: StreamsConfig,
    /// Table aliases: the table that serves a name applications use.
    #[serde(skip_serializing_if = "TableAliases::is_empty")]
    pub aliases: TableAliases,
}

/// A configuration problem, naming the file, variable or key and what was wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config{}", in_file(path.as_deref()))]
    Toml {
        path: Option<PathBuf>,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid value for {var} ({key})")]
    Env {
        var: &'static str,
        key: &'static str,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {key}: {message}")]
    Invalid { key: String, message: String },
}

fn in_file(path: Option<&Path>) -> String {
    path.map(|p| format!(" file {}", p.display()))
        .unwrap_or_default()
}

impl Config {
    /// The effective config: file (if any), then the process environment, then validation.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => read_file(p)?,
            None => String::new(),
        };
        let config = Self::from_toml_and_env(&text, path, |k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML config file (without environment overrides).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = read_file(path)?;
        Ok(Self::parse_file(&text, Some(path))?.1)
    }

    /// Parses TOML config text (without environment overrides).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Ok(Self::parse_file(text, None)?.1)
    }

    /// A file's TOML (its old key spellings rewritten, for environment overrides to go into) and
    /// the config it describes alone.
    fn parse_file(text: &str, path: Option<&Path>) -> Result<(toml::Table, Config), ConfigError> {
        let toml_error = |source| ConfigError::Toml {
            path: path.map(Path::to_path_buf),
            source: Box::new(source),
        };
        let mut table: toml::Table = toml::from_str(text).map_err(toml_error)?;
        let config = if renamed::upgrade(&mut table).map_err(toml_error)? {
            // What is read is no longer the file's text: errors name keys, not lines.
            toml::Value::Table(table.clone()).try_into()
        } else {
            // Straight from the text, so that an error points at its line.
            toml::from_str(text)
        };
        Ok((table, config.map_err(toml_error)?))
    }

    /// How long what a write with an unknown outcome touched stays in doubt. A forwarded write is
    /// waited for to its end: ddbcache stops waiting without an answer only when the connection
    /// is lost, the upstream answers a 5xx, or the backstop ran out with no client waiting. The
    /// write may then still land for about as long as ddbcache would have waited for it: one
    /// `upstream.backstop`.
    pub fn in_doubt_window(&self) -> Duration {
        self.cache.in_doubt_window.unwrap_or(self.upstream.backstop)
    }

    /// TTLs in force for one table (None = that cache is off for the table).
    pub fn table_ttls(&self, table: &str) -> TableTtls {
        let o = self.tables.get(table);
        let pick = |over: Option<Duration>, default: Duration| {
            let d = over.unwrap_or(default);
            (!d.is_zero()).then_some(d)
        };
        TableTtls {
            item: pick(o.and_then(|o| o.item_ttl), self.cache.item.ttl),
            negative: pick(o.and_then(|o| o.negative_ttl), self.cache.item.negative_ttl),
            query: pick(o.and_then(|o| o.query_ttl), self.cache.query.ttl),
            stale_if_error: o
                .and_then(|o| o.stale_if_error)
                .unwrap_or(self.cache.stale_if_error),
            refresh_ahead: o
                .and_then(|o| o.refresh_ahead)
                .unwrap_or(self.cache.refresh_ahead),
        }
    }
}

/// The TTLs that apply to one table (`None`: do not cache), and how its entries outlive them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableTtls {
    pub item: Option<Duration>,
    pub negative: Option<Duration>,
    pub query: Option<Duration>,
    /// How long past its TTL an entry may answer a read DynamoDB fails (zero: never).
    pub stale_if_error: Duration,
    /// The last part of the TTL in which a hit refreshes the entry (zero: never).
    pub refresh_ahead: f64,
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// What the config module's tests share.
#[cfg(test)]
mod testing {
    use super::{Config, ConfigError};

    /// The config of `text` with the environment variables `vars`.
    pub fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_and_env(text, None, |k| {
            vars.iter()
                .find(|(var, _)| *var == k)
                .map(|(_, v)| v.to_string())
        })
    }

    /// An error with its sources, as `ddbcache` prints it.
    pub fn chain(e: &dyn std::error::Error) -> String {
        crate::upstream::error_chain(e)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::chain;
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen.addr.to_string(), "127.0.0.1:8000");
        assert_eq!(c.cache.item.capacity, 256 << 20);
        assert_eq!(c.upstream.timeout, None, "no limit of ddbcache's own");
        assert_eq!(c.upstream.backstop, Duration::from_secs(60));
        assert_eq!(c.upstream.connect_timeout, Duration::from_secs(1));
        c.validate().unwrap();
    }

    #[test]
    fn shipped_config_file_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ddbcache.toml");
        let c = Config::from_file(&path).unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_named_and_the_toml_error_kept() {
        let err = Config::from_toml("[upstream]\ntimeuot = \"5s\"\n").unwrap_err();
        let source = std::error::Error::source(&err).expect("the TOML error is the source");
        assert!(
            source.to_string().contains("unknown field `timeuot`"),
            "{source}"
        );
        assert!(chain(&err).contains("line 2"), "{}", chain(&err));
    }

    #[test]
    fn bad_size_names_the_key() {
        let err =
            chain(&Config::from_toml("[cache.item]\ncapacity = \"12 parsecs\"\n").unwrap_err());
        assert!(err.contains("capacity"), "{err}");
        assert!(err.contains("parsecs"), "{err}");
    }

    #[test]
    fn in_doubt_window_defaults_to_the_backstop() {
        let c = Config::from_toml("[upstream]\nbackstop = \"2m\"\ntimeout = \"2s\"\n").unwrap();
        assert_eq!(c.in_doubt_window(), Duration::from_secs(120));
        let c = Config::from_toml("[cache]\nin_doubt_window = \"1s\"\n").unwrap();
        assert_eq!(c.in_doubt_window(), Duration::from_secs(1));
    }

    #[test]
    fn per_table_overrides_and_zero_means_off() {
        let c =
            Config::from_toml("[tables.orders]\nitem_ttl = \"30s\"\nquery_ttl = \"0s\"\n").unwrap();
        let t = c.table_ttls("orders");
        assert_eq!(t.item, Some(Duration::from_secs(30)));
        assert_eq!(t.query, None);
        assert_eq!(t.negative, Some(Duration::from_secs(300)));
        assert_eq!(c.table_ttls("other").item, Some(Duration::from_secs(300)));
    }

    #[test]
    fn effective_config_round_trips() {
        let c =
            Config::from_toml("[upstream]\ntimeout = \"1500ms\"\n[tables.t]\nitem_ttl = \"1m\"\n")
                .unwrap();
        let again = Config::from_toml(&c.to_toml()).unwrap();
        assert_eq!(again.table_ttls("t"), c.table_ttls("t"));
        assert_eq!(again.cache.item.capacity, c.cache.item.capacity);
        assert_eq!(again.upstream.timeout, Some(Duration::from_millis(1500)));
    }
}
