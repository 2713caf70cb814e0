//! PartiQL requests (ExecuteStatement, BatchExecuteStatement, ExecuteTransaction), read for the
//! tables their statements write. A statement ddbcache cannot read widens to everything.

use serde::Deserialize;

use super::writes::{tables_named, WriteScope};

/// What a PartiQL request (ExecuteStatement, BatchExecuteStatement, ExecuteTransaction) for
/// `region` writes.
pub fn parse_partiql(op: super::Operation, body: &[u8], region: &str) -> WriteScope {
    use super::Operation::*;
    #[derive(Deserialize)]
    struct Stmt {
        #[serde(rename = "Statement")]
        statement: String,
    }
    #[derive(Deserialize)]
    struct Single {
        #[serde(rename = "Statement")]
        statement: String,
    }
    #[derive(Deserialize)]
    struct Batch {
        #[serde(rename = "Statements")]
        statements: Vec<Stmt>,
    }
    #[derive(Deserialize)]
    struct Transaction {
        #[serde(rename = "TransactStatements")]
        statements: Vec<Stmt>,
    }
    let statements: Option<Vec<String>> = match op {
        ExecuteStatement => serde_json::from_slice::<Single>(body)
            .ok()
            .map(|s| vec![s.statement]),
        BatchExecuteStatement => serde_json::from_slice::<Batch>(body)
            .ok()
            .map(|b| b.statements.into_iter().map(|s| s.statement).collect()),
        ExecuteTransaction => serde_json::from_slice::<Transaction>(body)
            .ok()
            .map(|b| b.statements.into_iter().map(|s| s.statement).collect()),
        _ => None,
    };
    let Some(statements) = statements else {
        return WriteScope::everything();
    };
    let mut scope = WriteScope::default();
    for s in &statements {
        match partiql_write_target(s) {
            PartiqlTarget::Read => {}
            PartiqlTarget::Table(t) => match tables_named(region, &t) {
                Some(ids) => ids.into_iter().for_each(|id| scope.add_table(id)),
                None => return WriteScope::everything(),
            },
            PartiqlTarget::Unknown => return WriteScope::everything(),
        }
    }
    scope
}

#[derive(Debug, PartialEq, Eq)]
enum PartiqlTarget {
    Read,
    Table(String),
    Unknown,
}

/// `INSERT INTO "t" ...`, `UPDATE t SET ...`, `DELETE FROM "t" WHERE ...`, `SELECT ...`.
fn partiql_write_target(statement: &str) -> PartiqlTarget {
    let s = statement.trim_start();
    let (word, rest) = split_word(s);
    let rest = match word.to_ascii_uppercase().as_str() {
        "SELECT" | "EXISTS" => return PartiqlTarget::Read,
        "UPDATE" => rest,
        "INSERT" | "DELETE" => {
            let (into, rest) = split_word(rest);
            let expected = if word.eq_ignore_ascii_case("INSERT") {
                "INTO"
            } else {
                "FROM"
            };
            if !into.eq_ignore_ascii_case(expected) {
                return PartiqlTarget::Unknown;
            }
            rest
        }
        _ => return PartiqlTarget::Unknown,
    };
    match partiql_identifier(rest.trim_start()) {
        Some(t) => PartiqlTarget::Table(t),
        None => PartiqlTarget::Unknown,
    }
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s
        .find(|c: char| c.is_whitespace() || c == '"' || c == '(')
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// A quoted (`"My Table"`, with `""` as an escaped quote) or bare identifier.
fn partiql_identifier(s: &str) -> Option<String> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    out.push('"');
                } else {
                    return (!out.is_empty()).then_some(out);
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .unwrap_or(s.len());
        (end > 0).then(|| s[..end].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::TableId;
    use crate::Operation;

    #[test]
    fn partiql_targets() {
        assert_eq!(partiql_write_target("SELECT * FROM t"), PartiqlTarget::Read);
        assert_eq!(
            partiql_write_target(r#"UPDATE "My ""T""" SET a = 1 WHERE pk = 'x'"#),
            PartiqlTarget::Table(r#"My "T""#.into())
        );
        assert_eq!(
            partiql_write_target("insert into Music value {'a': 1}"),
            PartiqlTarget::Table("Music".into())
        );
        assert_eq!(
            partiql_write_target(r#"DELETE FROM "t" WHERE pk = 'x'"#),
            PartiqlTarget::Table("t".into())
        );
        assert_eq!(partiql_write_target("UPSERT t"), PartiqlTarget::Unknown);
        let set = parse_partiql(
            Operation::ExecuteTransaction,
            br#"{"TransactStatements":[{"Statement":"UPDATE a SET x=1 WHERE k='1'"},{"Statement":"EXISTS(SELECT * FROM b WHERE k='2')"}]}"#,
            "r",
        );
        assert_eq!(set.tables, TableId::list(&["r/a"]));
    }
}
