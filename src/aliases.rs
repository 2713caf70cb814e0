//! Table aliases: the name applications use for a table → the table that serves it, per region.
//!
//! Restores and imports never write into an existing table: point-in-time recovery, a restore
//! from a backup and an import from S3 each create a new one, and every application must then be
//! pointed at it. A sidecar in front of every client is the one place where that can be done
//! once: with `orders → orders-restored`, a request naming `orders` is sent to `orders-restored`
//! and its answer names `orders` again (`proxy::aliases` does the rewriting). Entries, key
//! schemas and invalidations belong to the real table, so nothing cached for one table is ever
//! served for another.
//!
//! Aliases come from the config (`[aliases]`) and from the admin port (`PUT /aliases`, so an
//! incident needs no restart); an admin alias of a name wins over the config's. An alias of one
//! region wins over one of every region. Switching an alias drops the entries of the table it
//! named and of the one it names now (operators switch after the new table was written around
//! ddbcache: a restore, writes to verify it). In a fleet the admin aliases live in Redis and the
//! switch is published on the bus, so every sidecar switches together ([`crate::fleet`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;
use tracing::info;

use crate::cache::Cache;
use crate::config::{parse_alias_key, TableAliases};

/// An alias's name and its region (`None`: every region).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AliasKey {
    pub region: Option<String>,
    pub alias: String,
}

impl AliasKey {
    /// `alias`, or `region/alias`.
    pub fn parse(key: &str) -> Result<AliasKey, String> {
        let (region, alias) = parse_alias_key(key)?;
        Ok(AliasKey { region, alias })
    }
}

impl std::fmt::Display for AliasKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.region {
            Some(region) => write!(f, "{region}/{}", self.alias),
            None => f.write_str(&self.alias),
        }
    }
}

/// The aliases in force: what a request is rewritten with.
#[derive(Debug, Default)]
pub struct InForce {
    map: HashMap<AliasKey, String>,
    /// Every alias name, once: a body that holds none of them names no alias.
    names: Vec<String>,
}

impl InForce {
    /// The table that serves `name` in `region`, when an alias says so.
    pub fn resolve(&self, region: &str, name: &str) -> Option<&str> {
        let key = |region: Option<&str>| AliasKey {
            region: region.map(str::to_string),
            alias: name.to_string(),
        };
        self.map
            .get(&key(Some(region)))
            .or_else(|| self.map.get(&key(None)))
            .map(String::as_str)
            .filter(|table| *table != name)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// An alias as the admin port lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub alias: String,
    /// `*`: every region.
    pub region: String,
    pub table: String,
    /// `config` or `admin`.
    pub source: &'static str,
}

/// The table aliases of this sidecar; see the module docs.
pub struct Aliases {
    /// Whether any alias is in force: all a request without one pays.
    any: AtomicBool,
    state: RwLock<State>,
    /// Where the entries of switched tables are dropped (none without a cache).
    cache: Option<Arc<Cache>>,
}

#[derive(Default)]
struct State {
    config: BTreeMap<AliasKey, String>,
    admin: BTreeMap<AliasKey, String>,
    in_force: Arc<InForce>,
}

impl State {
    fn effective(&self) -> BTreeMap<AliasKey, String> {
        let mut map = self.config.clone();
        map.extend(self.admin.clone());
        map
    }
}

/// A name whose table changed: from the table it named to the one it names now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub key: AliasKey,
    pub from: String,
    pub to: String,
}

impl Aliases {
    /// The aliases of `config` (already validated), switching on `cache`.
    pub fn new(config: &TableAliases, cache: Option<Arc<Cache>>) -> Aliases {
        let config = config
            .entries()
            .unwrap_or_default()
            .into_iter()
            .map(|(region, alias, table)| (AliasKey { region, alias }, table))
            .collect();
        let aliases = Aliases {
            any: AtomicBool::new(false),
            state: RwLock::new(State {
                config,
                ..State::default()
            }),
            cache,
        };
        aliases.change(|_| {});
        aliases
    }

    /// The aliases in force, when there are any. One atomic load when there are none: every
    /// request asks this.
    #[inline]
    pub fn in_force(&self) -> Option<Arc<InForce>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        Some(self.state.read().in_force.clone())
    }

    /// Sets (`Some`) or removes (`None`) the admin alias `key`; what switched.
    pub fn set(&self, key: AliasKey, table: Option<String>) -> Vec<Switch> {
        self.change(|admin| match table {
            Some(t) => {
                admin.insert(key, t);
            }
            None => {
                admin.remove(&key);
            }
        })
    }

    /// Replaces every admin alias (as a fleet's Redis holds them); what switched.
    pub fn replace_admin(&self, aliases: BTreeMap<AliasKey, String>) -> Vec<Switch> {
        self.change(|admin| *admin = aliases)
    }

    /// Every alias in force, with where it comes from.
    pub fn list(&self) -> Vec<Listed> {
        let state = self.state.read();
        state
            .effective()
            .into_iter()
            .map(|(key, table)| Listed {
                source: if state.admin.contains_key(&key) {
                    "admin"
                } else {
                    "config"
                },
                region: key.region.clone().unwrap_or_else(|| "*".into()),
                alias: key.alias,
                table,
            })
            .collect()
    }

    /// Changes the admin aliases, puts the new set in force, and drops the entries of every table
    /// a name stopped or started naming.
    fn change(&self, edit: impl FnOnce(&mut BTreeMap<AliasKey, String>)) -> Vec<Switch> {
        let switches = {
            let mut state = self.state.write();
            let before = state.effective();
            edit(&mut state.admin);
            let after = state.effective();
            let names: BTreeSet<String> = after.keys().map(|k| k.alias.clone()).collect();
            state.in_force = Arc::new(InForce {
                map: after.clone().into_iter().collect(),
                names: names.into_iter().collect(),
            });
            self.any.store(!after.is_empty(), Ordering::Release);
            let keys: BTreeSet<&AliasKey> = before.keys().chain(after.keys()).collect();
            keys.into_iter()
                .filter_map(|key| {
                    let table = |m: &BTreeMap<AliasKey, String>| {
                        m.get(key).cloned().unwrap_or_else(|| key.alias.clone())
                    };
                    let (from, to) = (table(&before), table(&after));
                    (from != to).then(|| Switch {
                        key: key.clone(),
                        from,
                        to,
                    })
                })
                .collect::<Vec<_>>()
        };
        // After the new aliases are in force: a read that still went to a dropped table is one
        // that started before the switch.
        for switch in &switches {
            info!(alias = %switch.key, from = switch.from, to = switch.to, "alias switched");
            if let Some(cache) = &self.cache {
                for table in [&switch.from, &switch.to] {
                    cache.flush_table(table, switch.key.region.as_deref());
                }
            }
        }
        switches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases(pairs: &[(&str, &str)]) -> Aliases {
        let config = TableAliases(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        Aliases::new(&config, None)
    }

    #[test]
    fn a_regions_alias_wins_over_every_regions_and_admin_over_config() {
        let a = aliases(&[("orders", "orders-2"), ("eu-west-1/orders", "orders-eu")]);
        let in_force = a.in_force().unwrap();
        assert_eq!(in_force.resolve("us-east-1", "orders"), Some("orders-2"));
        assert_eq!(in_force.resolve("eu-west-1", "orders"), Some("orders-eu"));
        assert_eq!(in_force.resolve("us-east-1", "other"), None);
        assert_eq!(in_force.names(), ["orders"]);
        let switched = a.set(AliasKey::parse("orders").unwrap(), Some("orders-3".into()));
        assert_eq!(
            switched,
            vec![Switch {
                key: AliasKey::parse("orders").unwrap(),
                from: "orders-2".into(),
                to: "orders-3".into()
            }]
        );
        assert_eq!(
            a.in_force().unwrap().resolve("us-east-1", "orders"),
            Some("orders-3")
        );
        let sources: Vec<(String, &str)> =
            a.list().into_iter().map(|l| (l.region, l.source)).collect();
        assert_eq!(
            sources,
            [
                ("*".to_string(), "admin"),
                ("eu-west-1".to_string(), "config")
            ]
        );
        // Removing the admin alias returns to the config's.
        a.set(AliasKey::parse("orders").unwrap(), None);
        assert_eq!(
            a.in_force().unwrap().resolve("us-east-1", "orders"),
            Some("orders-2")
        );
        // An alias to itself is no alias.
        a.set(AliasKey::parse("orders").unwrap(), Some("orders".into()));
        assert_eq!(a.in_force().unwrap().resolve("us-east-1", "orders"), None);
    }

    #[test]
    fn without_aliases_nothing_is_in_force() {
        let a = aliases(&[]);
        assert!(a.in_force().is_none());
        a.set(AliasKey::parse("t").unwrap(), Some("u".into()));
        assert!(a.in_force().is_some());
        a.replace_admin(BTreeMap::new());
        assert!(a.in_force().is_none());
        assert!(AliasKey::parse("bad region/t").is_err());
        assert!(AliasKey::parse("t/x/y").is_err());
    }
}
