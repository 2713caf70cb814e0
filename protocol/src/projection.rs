//! ProjectionExpression's grammar, in one place: what the validator checks a projection against
//! and what canonical cache keys are built from.
//!
//! A projection is `path, path, ...`; a path is a name (`[A-Za-z_][A-Za-z0-9_]*`, not a reserved
//! word) or a `#placeholder`, followed by `[index]` or `.name` steps, with blanks allowed around
//! the punctuation. Placeholders are resolved as they are read, by the caller's lookup.

use super::reserved_words::is_reserved;

/// DynamoDB refuses expressions longer than 4 KB.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Document paths nest at most 32 levels deep.
pub const MAX_PATH_DEPTH: usize = 32;

/// One step of a document path, names resolved. Indexes order before names, so that sorted
/// paths put every index-versus-name conflict next to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step<'a> {
    Index(u32),
    Name(&'a str),
}

/// Why a projection does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Not the grammar above (or too long, or too deep).
    Syntax,
    /// A bare reserved word.
    ReservedWord,
    /// A `#placeholder` the lookup does not define.
    UndefinedName,
}

/// Parses a projection into its paths, resolving each `#placeholder` with `resolve`.
pub fn parse<'a>(
    expression: &'a str,
    resolve: impl FnMut(&str) -> Option<&'a str>,
) -> Result<Vec<Vec<Step<'a>>>, Error> {
    if expression.len() > MAX_EXPRESSION_BYTES {
        return Err(Error::Syntax);
    }
    let mut parser = Parser {
        text: expression,
        pos: 0,
        resolve,
    };
    let mut paths = Vec::new();
    parser.blanks();
    loop {
        paths.push(parser.path()?);
        parser.blanks();
        match parser.next() {
            None => break,
            Some(b',') => parser.blanks(),
            Some(_) => return Err(Error::Syntax),
        }
    }
    Ok(paths)
}

/// Whether `b` may continue a name or a placeholder.
pub fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

struct Parser<'a, R> {
    text: &'a str,
    pos: usize,
    resolve: R,
}

impl<'a, R: FnMut(&str) -> Option<&'a str>> Parser<'a, R> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn path(&mut self) -> Result<Vec<Step<'a>>, Error> {
        let mut path = vec![self.name()?];
        loop {
            let before = self.pos;
            self.blanks();
            match self.peek() {
                Some(b'[') => {
                    self.pos += 1;
                    self.blanks();
                    let start = self.pos;
                    while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    let index = self.text[start..self.pos]
                        .parse::<u32>()
                        .ok()
                        .filter(|i| *i <= i32::MAX as u32)
                        .ok_or(Error::Syntax)?;
                    self.blanks();
                    if self.next() != Some(b']') {
                        return Err(Error::Syntax);
                    }
                    path.push(Step::Index(index));
                }
                Some(b'.') => {
                    self.pos += 1;
                    self.blanks();
                    path.push(self.name()?);
                }
                _ => {
                    self.pos = before;
                    break;
                }
            }
            if path.len() > MAX_PATH_DEPTH {
                return Err(Error::Syntax);
            }
        }
        Ok(path)
    }

    /// An identifier (not reserved) or a defined `#placeholder`.
    fn name(&mut self) -> Result<Step<'a>, Error> {
        let start = self.pos;
        let placeholder = self.peek() == Some(b'#');
        if placeholder {
            self.pos += 1;
        } else if !self
            .peek()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        {
            return Err(Error::Syntax);
        }
        while self.peek().is_some_and(is_identifier_byte) {
            self.pos += 1;
        }
        let word = &self.text[start..self.pos];
        if placeholder {
            if word.len() == 1 {
                return Err(Error::Syntax);
            }
            (self.resolve)(word)
                .map(Step::Name)
                .ok_or(Error::UndefinedName)
        } else if is_reserved(word) {
            Err(Error::ReservedWord)
        } else {
            Ok(Step::Name(word))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(placeholder: &str) -> Option<&'static str> {
        match placeholder {
            "#a" => Some("x"),
            "#b" => Some("y.z"),
            _ => None,
        }
    }

    #[test]
    fn paths_resolve_placeholders_and_keep_indexes() {
        assert_eq!(
            parse(" #a . b [ 2 ] , c", names),
            Ok(vec![
                vec![Step::Name("x"), Step::Name("b"), Step::Index(2)],
                vec![Step::Name("c")],
            ])
        );
        // A placeholder stands for one name, dots and all.
        assert_eq!(parse("#b", names), Ok(vec![vec![Step::Name("y.z")]]));
    }

    #[test]
    fn what_dynamodb_refuses_does_not_parse() {
        for bad in ["", "a,", "a b", "a.", "a[]", "a[-1]", "a[1", "1a", "#", "ä"] {
            assert_eq!(parse(bad, names), Err(Error::Syntax), "{bad:?}");
        }
        assert_eq!(parse("name", names), Err(Error::ReservedWord));
        assert_eq!(parse("#c", names), Err(Error::UndefinedName));
    }
}
