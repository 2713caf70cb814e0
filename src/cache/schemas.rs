//! Key schemas: which attributes of a table's items form their primary key.
//!
//! A PutItem names its item, not its key; to invalidate exactly the entry it changes, ddbcache must
//! know which of the item's attributes are the key. Without a table's schema, its writes
//! invalidate the whole table instead: more than needed, never less.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

/// The known key schemas, by table.
#[derive(Default)]
pub struct KeySchemas {
    /// Key attribute names, sorted.
    tables: RwLock<HashMap<String, Arc<[String]>>>,
}

impl KeySchemas {
    /// The table's key attribute names, sorted, if known.
    pub fn key_names(&self, table: &str) -> Option<Arc<[String]>> {
        self.tables.read().get(table).cloned()
    }

    pub fn learn(&self, table: &str, mut names: Vec<String>) {
        names.sort();
        let mut tables = self.tables.write();
        if tables.get(table).map(|n| &n[..]) != Some(&names[..]) {
            tables.insert(table.to_string(), names.into());
        }
    }

    /// Forgets a table's schema (it may have been deleted and created again with another key).
    pub fn forget(&self, table: &str) {
        self.tables.write().remove(table);
    }

    /// Forgets every schema (a full flush).
    pub fn forget_all(&self) {
        self.tables.write().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_remembered_and_forgotten() {
        let s = KeySchemas::default();
        assert_eq!(s.key_names("t"), None);
        s.learn("t", vec!["sk".into(), "pk".into()]);
        assert_eq!(
            s.key_names("t").as_deref(),
            Some(&["pk".to_string(), "sk".to_string()][..])
        );
        s.forget("t");
        assert_eq!(s.key_names("t"), None);
        s.learn("u", vec!["pk".into()]);
        s.forget_all();
        assert_eq!(s.key_names("u"), None);
    }
}
