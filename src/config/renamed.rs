//! Keys that changed spelling, still read in their old one. `upstream.timeout_ms` and
//! `upstream.connect_timeout_ms` took whole milliseconds until they became durations like every
//! other (`upstream.timeout = "3s"`). A file or a variable using an old key is read as if it used
//! the new one; a file that sets both is refused rather than one silently winning. A serde alias
//! would not do: the unit differs. `check-config` prints the new spelling.

use serde::de::Error as _;

use super::keys;

/// `(old key, new key)`: the old one in whole milliseconds, the new one a duration.
const MILLISECOND_KEYS: [(&str, &str); 2] = [
    ("upstream.connect_timeout_ms", "upstream.connect_timeout"),
    ("upstream.timeout_ms", "upstream.timeout"),
];

/// How `key` is spelt now (itself, unless it is an old spelling).
pub(super) fn current(key: &str) -> &str {
    MILLISECOND_KEYS
        .iter()
        .find(|(old, _)| *old == key)
        .map_or(key, |(_, new)| new)
}

/// The other spelling of a renamed key (the new one of an old key, the old one of a new key).
pub(super) fn other_spelling(key: &str) -> Option<&'static str> {
    MILLISECOND_KEYS.iter().find_map(|&(old, new)| match key {
        k if k == old => Some(new),
        k if k == new => Some(old),
        _ => None,
    })
}

/// Rewrites each old key of a file's `table` as its new one, and says whether there was any.
/// Refuses a file that sets both spellings of a key, or an old one to anything but whole
/// milliseconds.
pub(super) fn upgrade(table: &mut toml::Table) -> Result<bool, toml::de::Error> {
    let mut upgraded = false;
    for (old, new) in MILLISECOND_KEYS {
        let Some(value) = keys::remove(table, old) else {
            continue;
        };
        if keys::lookup(table, new).is_some() {
            return Err(toml::de::Error::custom(format!(
                "{old} and {new} are one setting (the old spelling in milliseconds): keep only {new}"
            )));
        }
        keys::insert(table, new, milliseconds(old, &value)?);
        upgraded = true;
    }
    Ok(upgraded)
}

/// An environment variable's text for the old key `old`, as the value of its new key.
pub(super) fn env_value(old: &str, raw: &str) -> Result<toml::Value, toml::de::Error> {
    let value = raw
        .parse()
        .map_or_else(|_| toml::Value::String(raw.into()), toml::Value::Integer);
    milliseconds(old, &value)
}

/// The value of the old key `old`, whole milliseconds, as its new key's duration.
fn milliseconds(old: &str, value: &toml::Value) -> Result<toml::Value, toml::de::Error> {
    match value.as_integer() {
        Some(ms) if ms >= 0 => Ok(toml::Value::String(format!("{ms}ms"))),
        _ => Err(toml::de::Error::custom(format!(
            "{old} is in whole milliseconds, such as 3000 (or write {} = \"3s\")",
            current(old)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{chain, with_env};
    use super::super::{Config, ConfigError};

    #[test]
    fn old_millisecond_keys_are_read_as_durations_and_printed_new() {
        let c =
            Config::from_toml("[upstream]\ntimeout_ms = 250\nconnect_timeout_ms = 100\n").unwrap();
        assert_eq!(c.upstream.timeout, Some(Duration::from_millis(250)));
        assert_eq!(c.upstream.connect_timeout, Duration::from_millis(100));
        c.validate().unwrap();
        let printed = c.to_toml();
        assert!(printed.contains("timeout = \"250ms\""), "{printed}");
        assert!(!printed.contains("timeout_ms"), "{printed}");
        // The rest of such a file is read as usual, unknown keys refused.
        let err =
            Config::from_toml("[upstream]\ntimeout_ms = 250\ntimeuot = \"1s\"\n").unwrap_err();
        assert!(chain(&err).contains("timeuot"), "{}", chain(&err));
    }

    #[test]
    fn a_file_setting_both_spellings_is_refused() {
        let err =
            Config::from_toml("[upstream]\ntimeout = \"2s\"\ntimeout_ms = 2000\n").unwrap_err();
        let text = chain(&err);
        assert!(matches!(err, ConfigError::Toml { .. }), "{err:?}");
        assert!(
            text.contains("upstream.timeout_ms") && text.contains("keep only upstream.timeout"),
            "{text}"
        );
        let err =
            Config::from_toml("[upstream]\nconnect_timeout = \"1s\"\nconnect_timeout_ms = 1000\n")
                .unwrap_err();
        assert!(
            chain(&err).contains("connect_timeout_ms"),
            "{}",
            chain(&err)
        );
    }

    #[test]
    fn an_old_key_takes_whole_milliseconds_only() {
        for value in ["\"3s\"", "-1", "2.5"] {
            let err =
                Config::from_toml(&format!("[upstream]\ntimeout_ms = {value}\n")).unwrap_err();
            assert!(
                chain(&err).contains("upstream.timeout_ms is in whole milliseconds"),
                "{value}: {}",
                chain(&err)
            );
        }
    }

    #[test]
    fn old_variables_override_as_the_new_ones_do() {
        let c = with_env("", &[("DDBCACHE_UPSTREAM_TIMEOUT_MS", "250")]).unwrap();
        assert_eq!(c.upstream.timeout, Some(Duration::from_millis(250)));
        // A variable overrides the file whichever spelling either uses.
        let c = with_env(
            "[upstream]\ntimeout = \"5s\"\nconnect_timeout_ms = 900\n",
            &[
                ("DDBCACHE_UPSTREAM_TIMEOUT_MS", "250"),
                ("DDBCACHE_UPSTREAM_CONNECT_TIMEOUT", "2s"),
            ],
        )
        .unwrap();
        assert_eq!(c.upstream.timeout, Some(Duration::from_millis(250)));
        assert_eq!(c.upstream.connect_timeout, Duration::from_secs(2));
        // Empty, an old variable returns the key to its default, as any variable does.
        let c = with_env(
            "[upstream]\ntimeout_ms = 900\n",
            &[("DDBCACHE_UPSTREAM_TIMEOUT_MS", "")],
        )
        .unwrap();
        assert_eq!(c.upstream.timeout, None);
        // An empty variable beside its other spelling leaves the decision to that one.
        for (old, new, timeout) in [("", "2s", 2000), ("250", "", 250)] {
            let c = with_env(
                "",
                &[
                    ("DDBCACHE_UPSTREAM_TIMEOUT_MS", old),
                    ("DDBCACHE_UPSTREAM_TIMEOUT", new),
                ],
            )
            .unwrap();
            assert_eq!(
                c.upstream.timeout,
                Some(Duration::from_millis(timeout)),
                "{old:?} {new:?}"
            );
        }
        let err = with_env("", &[("DDBCACHE_UPSTREAM_TIMEOUT_MS", "3s")]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Env {
                    var: "DDBCACHE_UPSTREAM_TIMEOUT_MS",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn both_variables_of_one_key_are_refused() {
        let err = with_env(
            "",
            &[
                ("DDBCACHE_UPSTREAM_TIMEOUT", "2s"),
                ("DDBCACHE_UPSTREAM_TIMEOUT_MS", "2000"),
            ],
        )
        .unwrap_err();
        let text = chain(&err);
        assert!(
            text.contains("DDBCACHE_UPSTREAM_TIMEOUT_MS")
                && text.contains("keep only DDBCACHE_UPSTREAM_TIMEOUT"),
            "{text}"
        );
    }
}
