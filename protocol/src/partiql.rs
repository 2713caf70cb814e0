//! PartiQL requests (ExecuteStatement, BatchExecuteStatement, ExecuteTransaction), read for the
//! tables their statements write (a statement ddbcache cannot read widens to everything), and
//! statements read for where they name their table ([`statement`]), which table aliases rewrite.

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
        match statement(s) {
            Statement::Reads(_) => {}
            Statement::Writes(t) => match tables_named(region, &t.name) {
                Some(ids) => ids.into_iter().for_each(|id| scope.add_table(id)),
                None => return WriteScope::everything(),
            },
            Statement::Unknown => return WriteScope::everything(),
        }
    }
    scope
}

/// What a PartiQL statement is, as far as its table goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Statement {
    /// `SELECT ... FROM t ...` or `EXISTS(SELECT ...)`: the table when it could be found.
    Reads(Option<TableToken>),
    /// `INSERT INTO t ...`, `UPDATE t ...`, `DELETE FROM t ...`.
    Writes(TableToken),
    /// Anything else.
    Unknown,
}

/// Where a statement names its table.
#[derive(Debug, PartialEq, Eq)]
pub struct TableToken {
    /// The identifier as written: `"My ""T"""` (quotes included) or `Music`.
    pub span: std::ops::Range<usize>,
    /// The table's name: `My "T"`, `Music`.
    pub name: String,
}

/// Reads a statement's first words and the table they name: `INSERT INTO "t" ...`,
/// `UPDATE t SET ...`, `DELETE FROM "t" WHERE ...`, `SELECT ... FROM "t"."index" ...`.
pub fn statement(statement: &str) -> Statement {
    let mut tokens = Tokens::new(statement);
    let Some(Token::Word(first)) = tokens.next() else {
        return Statement::Unknown;
    };
    let word = |t: Option<Token<'_>>, w: &str| matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
    let table = |t: Option<Token<'_>>, at: usize| match t {
        Some(Token::Quoted(name, span)) => Some(TableToken { span, name }),
        Some(Token::Word(name)) => Some(TableToken {
            span: at..at + name.len(),
            name: name.to_string(),
        }),
        _ => None,
    };
    match first.to_ascii_uppercase().as_str() {
        "SELECT" | "EXISTS" => {
            // The first FROM that is a word (not in a string or a quoted name).
            while let Some(t) = tokens.next() {
                if word(Some(t), "FROM") {
                    let at = tokens.position();
                    return Statement::Reads(table(tokens.next(), at));
                }
            }
            Statement::Reads(None)
        }
        "UPDATE" => {
            let at = tokens.position();
            table(tokens.next(), at).map_or(Statement::Unknown, Statement::Writes)
        }
        "INSERT" | "DELETE" => {
            let expected = if first.eq_ignore_ascii_case("INSERT") {
                "INTO"
            } else {
                "FROM"
            };
            if !word(tokens.next(), expected) {
                return Statement::Unknown;
            }
            let at = tokens.position();
            table(tokens.next(), at).map_or(Statement::Unknown, Statement::Writes)
        }
        _ => Statement::Unknown,
    }
}

/// A name as a statement writes it: quoted, with `"` doubled.
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One token of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    /// A keyword or bare name: letters, digits, `_`, `-`, `.`.
    Word(&'a str),
    /// A `"quoted name"` (its text, and where it stands, quotes included).
    Quoted(String, std::ops::Range<usize>),
    /// A `'string'`, an Ion `` `literal` ``, or one character of punctuation.
    Other,
}

/// The tokens of a statement, with the position where the next one starts (after blanks).
struct Tokens<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Tokens<'a> {
        Tokens { text, at: 0 }
    }

    /// Where the next token starts.
    fn position(&mut self) -> usize {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start().len();
        self.at
    }

    /// The end of a token opened by `quote` at `start` (where the quote is), `""`-style doubled
    /// quotes inside; the unquoted text.
    fn delimited(&self, start: usize, quote: char) -> Option<(usize, String)> {
        let mut out = String::new();
        let mut chars = self.text[start + 1..].char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c != quote {
                out.push(c);
            } else if chars.peek().is_some_and(|(_, n)| *n == quote) {
                chars.next();
                out.push(quote);
            } else {
                return Some((start + 1 + i + 1, out));
            }
        }
        None
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let start = self.position();
        let c = self.text[start..].chars().next()?;
        let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-' || c == '.';
        if is_word(c) {
            let len = self.text[start..]
                .find(|c: char| !is_word(c))
                .unwrap_or(self.text.len() - start);
            self.at = start + len;
            return Some(Token::Word(&self.text[start..start + len]));
        }
        if matches!(c, '"' | '\'' | '`') {
            // An unterminated one ends the statement.
            let (end, text) = self.delimited(start, c)?;
            self.at = end;
            return Some(match c {
                '"' => Token::Quoted(text, start..end),
                _ => Token::Other,
            });
        }
        self.at = start + c.len_utf8();
        Some(Token::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::TableId;
    use crate::Operation;

    #[test]
    fn partiql_targets() {
        let table = |s: &str| match statement(s) {
            Statement::Writes(t) => Some(t.name),
            _ => None,
        };
        assert!(matches!(
            statement("SELECT * FROM t"),
            Statement::Reads(Some(_))
        ));
        assert_eq!(
            table(r#"UPDATE "My ""T""" SET a = 1 WHERE pk = 'x'"#),
            Some(r#"My "T""#.into())
        );
        assert_eq!(
            table("insert into Music value {'a': 1}"),
            Some("Music".into())
        );
        assert_eq!(table(r#"DELETE FROM "t" WHERE pk = 'x'"#), Some("t".into()));
        assert_eq!(statement("UPSERT t"), Statement::Unknown);
        assert_eq!(statement("INSERT t VALUE {}"), Statement::Unknown);
        let set = parse_partiql(
            Operation::ExecuteTransaction,
            br#"{"TransactStatements":[{"Statement":"UPDATE a SET x=1 WHERE k='1'"},{"Statement":"EXISTS(SELECT * FROM b WHERE k='2')"}]}"#,
            "r",
        );
        assert_eq!(set.tables, TableId::list(&["r/a"]));
    }

    #[test]
    fn a_statement_names_its_table_where_it_stands() {
        fn at(s: &str) -> Option<(String, &str)> {
            match statement(s) {
                Statement::Reads(Some(t)) | Statement::Writes(t) => Some((t.name, &s[t.span])),
                _ => None,
            }
        }
        let s = r#"SELECT "FROM", 'FROM' FROM "orders"."by-date" WHERE pk = 'FROM x'"#;
        assert_eq!(at(s).unwrap(), ("orders".to_string(), r#""orders""#));
        let s = "EXISTS(SELECT * FROM orders WHERE pk = 'a')";
        assert_eq!(at(s).unwrap(), ("orders".to_string(), "orders"));
        let s = "  select size(a) from\tmy-table";
        assert_eq!(at(s).unwrap(), ("my-table".to_string(), "my-table"));
        assert_eq!(
            statement("SELECT 'unterminated FROM t"),
            Statement::Reads(None)
        );
        assert_eq!(quoted(r#"a"b"#), r#""a""b""#);
    }
}
