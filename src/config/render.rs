//! The effective config as `check-config` prints it: TOML for people (durations and sizes as a
//! file writes them), JSON for programs (durations in seconds, sizes in bytes, plus figures
//! derived from the config). `scripts/lint_deploy.py` and `benches/load` read the JSON.

use super::{units, Config, CONTAINER_MEMORY_RULE};

impl Config {
    /// The effective config as TOML, as `check-config` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// The effective config as `check-config --json` prints it, for programs: the keys of the
    /// TOML form with sizes in bytes and durations in seconds, plus `derived` figures.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = units::in_numbers(|| serde_json::to_value(self)).unwrap_or_default();
        // The window in force, also when the file leaves it to its default.
        v["cache"]["in_doubt_window"] = self.in_doubt_window().as_secs_f64().into();
        v["derived"] = serde_json::json!({
            "endpoint_url": self.upstream.endpoint_url(),
            "streams_endpoint_url": self.upstream.streams_endpoint_url(),
            "kinesis_endpoint_url": self.upstream.kinesis_endpoint_url(),
            "container_memory_bytes": self.container_memory_bytes(),
            "container_memory_rule": CONTAINER_MEMORY_RULE,
        });
        v
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::units::{parse_duration, parse_size};
    use super::*;

    #[test]
    fn json_has_numbers_for_sizes_and_durations() {
        let c = Config::from_toml(
            "[server]\nshutdown_grace = \"250ms\"\n[tables.t]\nquery_ttl = \"1m\"\n",
        )
        .unwrap();
        let v = c.to_json();
        assert_eq!(v["server"]["shutdown_grace"], 0.25);
        assert_eq!(v["cache"]["item"]["capacity"], 256u64 << 20);
        assert_eq!(v["cache"]["in_doubt_window"], 60.0);
        assert_eq!(v["upstream"]["backstop"], 60.0);
        assert_eq!(v["upstream"].get("timeout"), None, "unset: no limit");
        assert_eq!(v["tables"]["t"]["query_ttl"], 60.0);
        assert_eq!(v["listen"]["admin_addr"], "127.0.0.1:9000");
        assert_eq!(
            v["derived"]["container_memory_bytes"],
            c.container_memory_bytes()
        );
    }

    /// The leaves of a TOML or JSON document (turned into JSON), by dotted path.
    fn leaves(v: &serde_json::Value, path: String, out: &mut Vec<(String, serde_json::Value)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let path = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    leaves(v, path, out);
                }
            }
            other => out.push((path, other.clone())),
        }
    }

    #[test]
    fn every_duration_is_seconds_and_every_size_bytes_in_json() {
        // Every optional duration set too, so that each field is printed.
        let c = Config::from_toml(
            "[upstream]\ntimeout = \"3s\"\n[cache]\nin_doubt_window = \"7s\"\n\
             [tables.t]\nitem_ttl = \"1m\"\nnegative_ttl = \"2s\"\nquery_ttl = \"0s\"\n",
        )
        .unwrap();
        let toml: serde_json::Value =
            serde_json::to_value(toml::Table::try_from(&c).unwrap()).unwrap();
        let json = c.to_json();
        let (mut words, mut numbers) = (Vec::new(), Vec::new());
        leaves(&toml, String::new(), &mut words);
        leaves(&json, String::new(), &mut numbers);
        let numbers: std::collections::BTreeMap<_, _> = numbers.into_iter().collect();
        let mut converted = 0;
        for (path, word) in &words {
            let number = numbers
                .get(path)
                .unwrap_or_else(|| panic!("{path} not in --json"));
            let Some(word) = word.as_str() else {
                assert_eq!(word, number, "{path}");
                continue;
            };
            if let Ok(d) = parse_duration(word) {
                assert_eq!(number, &serde_json::json!(d.as_secs_f64()), "{path}");
                converted += 1;
            } else if let Ok(bytes) = parse_size(word) {
                assert_eq!(number, &serde_json::json!(bytes), "{path}");
                converted += 1;
            } else {
                assert_eq!(number.as_str(), Some(word), "{path}");
            }
        }
        // A `Duration` field without its unit would print as a table of secs and nanos.
        assert!(
            !words.iter().any(|(path, _)| path.ends_with(".nanos")),
            "{words:?}"
        );
        assert!(
            converted >= 26,
            "not every duration and size printed: {words:?}"
        );
        assert_eq!(c.in_doubt_window(), Duration::from_secs(7));
    }
}
