//! The Python literals barman writes into `backup.info` with `repr()`: strings (with
//! their escapes), numbers, `None`, booleans, and tuples, lists and dicts of them. Read,
//! never evaluated.

/// A Python literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `'text'` or `"text"`, escapes resolved.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float (kept as written).
    Float(String),
    /// `None`.
    None,
    /// `True` or `False`.
    Bool(bool),
    /// `(a, b)` or `[a, b]`.
    Seq(Vec<Value>),
    /// `{k: v}`.
    Dict(Vec<(Value, Value)>),
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Seq(v) => Some(v),
            _ => None,
        }
    }
}

/// Parses one literal, the whole of `text`; `Err` says where and why.
pub fn parse(text: &str) -> Result<Value, String> {
    let mut p = Parser {
        chars: text.chars().collect(),
        at: 0,
    };
    let v = p.value(0)?;
    p.skip_space();
    if p.at != p.chars.len() {
        return Err(format!("unexpected '{}' at {}", p.chars[p.at], p.at));
    }
    Ok(v)
}

/// Nesting deeper than this is refused (a hostile file cannot exhaust the stack).
const MAX_DEPTH: usize = 32;

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        self.skip_space();
        match self.peek() {
            Some(q @ ('\'' | '"')) => self.string(q).map(Value::Str),
            Some('(') => self.seq(')', depth).map(Value::Seq),
            Some('[') => self.seq(']', depth).map(Value::Seq),
            Some('{') => self.dict(depth).map(Value::Dict),
            Some(c) if c == '-' || c.is_ascii_digit() => Ok(self.number()),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.at;
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    self.at += 1;
                }
                match self.chars[start..self.at].iter().collect::<String>().as_str() {
                    "None" => Ok(Value::None),
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    other => Err(format!("'{other}' is not a literal")),
                }
            }
            Some(c) => Err(format!("unexpected '{c}' at {}", self.at)),
            None => Err("ends where a value should be".into()),
        }
    }

    fn number(&mut self) -> Value {
        let start = self.at;
        self.at += 1;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-' | '_'))
        {
            self.at += 1;
        }
        let text: String = self.chars[start..self.at].iter().filter(|c| **c != '_').collect();
        text.parse().map_or(Value::Float(text), Value::Int)
    }

    fn string(&mut self, quote: char) -> Result<String, String> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let c = self.peek().ok_or("a string without its closing quote")?;
            self.at += 1;
            match c {
                c if c == quote => return Ok(out),
                '\\' => {
                    let e = self.peek().ok_or("a string ends in a backslash")?;
                    self.at += 1;
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        '\\' | '\'' | '"' => out.push(e),
                        'x' => out.push(self.code_point(2)?),
                        'u' => out.push(self.code_point(4)?),
                        'U' => out.push(self.code_point(8)?),
                        other => {
                            out.push('\\');
                            out.push(other);
                        }
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn code_point(&mut self, digits: usize) -> Result<char, String> {
        let hex: String = self.chars.get(self.at..self.at + digits).ok_or("a cut escape")?.iter().collect();
        self.at += digits;
        u32::from_str_radix(&hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| format!("'\\{hex}' is not a character"))
    }

    fn seq(&mut self, close: char, depth: usize) -> Result<Vec<Value>, String> {
        self.at += 1;
        let mut items = Vec::new();
        loop {
            self.skip_space();
            if self.peek() == Some(close) {
                self.at += 1;
                return Ok(items);
            }
            items.push(self.value(depth + 1)?);
            self.skip_space();
            match self.peek() {
                Some(',') => self.at += 1,
                Some(c) if c == close => {}
                _ => return Err(format!("expected ',' or '{close}' at {}", self.at)),
            }
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Vec<(Value, Value)>, String> {
        self.at += 1;
        let mut items = Vec::new();
        loop {
            self.skip_space();
            if self.peek() == Some('}') {
                self.at += 1;
                return Ok(items);
            }
            let k = self.value(depth + 1)?;
            self.skip_space();
            if self.peek() != Some(':') {
                return Err(format!("expected ':' at {}", self.at));
            }
            self.at += 1;
            let v = self.value(depth + 1)?;
            items.push((k, v));
            self.skip_space();
            match self.peek() {
                Some(',') => self.at += 1,
                Some('}') => {}
                _ => return Err(format!("expected ',' or '}}' at {}", self.at)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_repr_writes() {
        let t = parse("[('fast', 16385, '/srv/fast'), ('it''s', 16386, \"/srv/it's\")]");
        assert!(t.is_err(), "adjacent literals are not one value");
        let t = parse("[('fast', 16385, '/srv/fast'), (\"it's\", 16386, '/srv/o\\'k')]").unwrap();
        let rows = t.items().unwrap();
        assert_eq!(rows[0].items().unwrap()[1].as_int(), Some(16385));
        assert_eq!(rows[1].items().unwrap()[0].as_str(), Some("it's"));
        assert_eq!(rows[1].items().unwrap()[2].as_str(), Some("/srv/o'k"));
        let label = parse("'START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\\nLABEL: x \\xe9\\u00e9\\n'").unwrap();
        assert_eq!(
            label.as_str(),
            Some("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: x éé\n")
        );
        let stats = parse("{'total_time': 1.5, 'number_of_workers': 2, 'x': None, 'y': True}").unwrap();
        assert!(matches!(stats, Value::Dict(ref d) if d.len() == 4));
        assert!(parse("__import__('os')").is_err());
        assert!(parse(&"[".repeat(100)).is_err());
    }
}
