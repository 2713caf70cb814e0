//! Dotted keys (`cache.item.ttl`) in a TOML table: how an environment variable's value and a
//! renamed key's value are put into the file's table before the whole is deserialized.

/// The value at `key`, if the table has one.
pub(super) fn lookup<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let (parents, last) = key.rsplit_once('.').unwrap_or(("", key));
    let mut node = table;
    for part in parents.split('.').filter(|p| !p.is_empty()) {
        node = node.get(part)?.as_table()?;
    }
    node.get(last)
}

/// Puts `value` at `key`, making the sections on the way.
pub(super) fn insert(table: &mut toml::Table, key: &str, value: toml::Value) {
    let (parents, last) = key.rsplit_once('.').unwrap_or(("", key));
    let mut node = table;
    for part in parents.split('.').filter(|p| !p.is_empty()) {
        let entry = node
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        // A section given a plain value was already rejected by the file's own parse.
        let Some(inner) = entry.as_table_mut() else {
            return;
        };
        node = inner;
    }
    node.insert(last.to_string(), value);
}

/// Takes the value at `key` out of the table, if it has one.
pub(super) fn remove(table: &mut toml::Table, key: &str) -> Option<toml::Value> {
    let (parents, last) = key.rsplit_once('.').unwrap_or(("", key));
    let mut node = table;
    for part in parents.split('.').filter(|p| !p.is_empty()) {
        node = node.get_mut(part).and_then(toml::Value::as_table_mut)?;
    }
    node.remove(last)
}
