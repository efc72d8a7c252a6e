//! pgBackRest's info-file format (`backup.info`, `archive.info`, `backup.manifest`):
//! strict INI whose values are JSON, with a SHA-1 over the whole content.
//!
//! Lines are not trimmed, empty lines are skipped, `#` is no comment. `[name]` starts a
//! section; `key=value` splits at the first `=` that leaves valid JSON to its right (keys
//! may hold `=`). The checksum (`[backrest] backrest-checksum`, written last, in a second
//! `[backrest]` section) is the SHA-1 of a JSON-like text built from every other pair in
//! file order: `{"section":{"key":value,...},...}`, the key in pgBackRest's JSON string
//! encoding and the value as the raw text of the file. `backrest-format` must be 5.
//!
//! The parser streams: pairs are handed over one by one as they are read, and the
//! checksum is fed on the way, so a manifest of a million files is never held as text.

use std::io::BufRead;

use sha1::{Digest, Sha1};

use crate::error::{Error, ErrorKind, Result};

/// The repository format this reader knows (`REPOSITORY_FORMAT`).
pub const FORMAT: u64 = 5;

/// The checksum's section and key.
const BACKREST: &str = "backrest";
const CHECKSUM_KEY: &str = "backrest-checksum";

/// The running SHA-1 of an info file's pairs.
struct Checksum {
    hash: Sha1,
    section: Option<String>,
}

impl Checksum {
    fn new() -> Checksum {
        let mut hash = Sha1::new();
        hash.update(b"{");
        Checksum { hash, section: None }
    }

    fn pair(&mut self, section: &str, key: &str, raw: &str) {
        match &self.section {
            Some(s) if s == section => self.hash.update(b","),
            previous => {
                if previous.is_some() {
                    self.hash.update(b"},");
                }
                self.hash.update(b"\"");
                self.hash.update(section.as_bytes());
                self.hash.update(b"\":{");
                self.section = Some(section.to_string());
            }
        }
        self.hash.update(json_string(key).as_bytes());
        self.hash.update(b":");
        self.hash.update(raw.as_bytes());
    }

    fn finish(mut self) -> String {
        self.hash.update(if self.section.is_some() { &b"}}"[..] } else { &b"}"[..] });
        hex(&self.hash.finalize())
    }
}

/// A string as pgBackRest's JSON writer writes it: quoted, with only `"`, `\`, and the
/// control characters `\n \r \t \b \f` escaped.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Splits `line` into key and raw JSON value at the first `=` that leaves valid JSON.
fn split_pair(line: &str) -> Option<(&str, &str)> {
    let mut from = 0;
    while let Some(at) = line[from..].find('=') {
        let at = from + at;
        let (key, value) = (&line[..at], &line[at + 1..]);
        if !key.is_empty() && serde_json::from_str::<serde::de::IgnoredAny>(value).is_ok() {
            return Some((key, value));
        }
        from = at + 1;
    }
    None
}

/// Reads an info file from `reader`, handing every pair but the checksum to `each`
/// (section, key, raw JSON value) in file order; fails unless the format is 5 and the
/// checksum matches. `object` names the file in errors.
pub fn read<R: BufRead>(mut reader: R, object: &str, each: &mut dyn FnMut(&str, &str, &str) -> Result<()>) -> Result<()> {
    let corrupt = |what: String| Error::new(ErrorKind::Corrupt, format!("{object}: {what}"));
    let mut checksum = Checksum::new();
    let mut section: Option<String> = None;
    let mut stored: Option<String> = None;
    let mut format: Option<String> = None;
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| Error::from_io_ref(&e).unwrap_or_else(|| corrupt(format!("not a pgBackRest info file: {e}"))))?;
        if n == 0 {
            break;
        }
        number += 1;
        let text = line.strip_suffix('\n').unwrap_or(&line);
        if text.is_empty() {
            continue;
        }
        if text.starts_with('[') && text.ends_with(']') && text.len() > 2 {
            section = Some(text[1..text.len() - 1].to_string());
            continue;
        }
        let Some(current) = section.as_deref() else {
            return Err(corrupt(format!("line {number}: a value before the first [section]")));
        };
        let (key, value) = split_pair(text).ok_or_else(|| corrupt(format!("line {number}: not key=JSON value")))?;
        if current == BACKREST && key == CHECKSUM_KEY {
            stored = serde_json::from_str::<String>(value).ok();
            continue;
        }
        if current == BACKREST && key == "backrest-format" {
            format = Some(value.to_string());
        }
        checksum.pair(current, key, value);
        each(current, key, value)?;
    }
    match format.as_deref().map(str::parse::<u64>) {
        Some(Ok(FORMAT)) => {}
        Some(_) => {
            return Err(corrupt(format!(
                "repository format {} is not the format {FORMAT} this walfetch reads",
                format.unwrap_or_default()
            )))
        }
        None => return Err(corrupt("no [backrest] backrest-format: not a pgBackRest info file".into())),
    }
    let actual = checksum.finish();
    match stored {
        Some(expected) if expected == actual => Ok(()),
        Some(expected) => Err(corrupt(format!("damaged: its checksum is {actual}, but it records {expected}"))),
        None => Err(corrupt("no backrest-checksum: the file is incomplete".into())),
    }
}

/// A JSON value of an info file, parsed (`what` names it in errors).
pub fn value<T: serde::de::DeserializeOwned>(raw: &str, object: &str, what: &str) -> Result<T> {
    serde_json::from_str(raw).map_err(|e| {
        Error::new(
            ErrorKind::Corrupt,
            format!("{object}: {what}: not the value pgBackRest writes ({e})"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Result<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        read(text.as_bytes(), "t", &mut |s, k, v| {
            out.push((s.into(), k.into(), v.into()));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn the_checksum_is_pgbackrests() {
        // The vectors of pgBackRest's own tests (infoTest.c).
        let mut c = Checksum::new();
        c.pair("backrest", "backrest-format", "5");
        assert_eq!(c.finish(), "a3765a8c2c1e5d35274a0b0ce118f4031faff0bd");
        let text = "[backrest]\nbackrest-checksum=\"fe989a75dcf7a0261e57d210707c0db741462763\"\nbackrest-format=5\nbackrest-version=\"2.17\"\nbogus=\"BOGUS\"\n";
        let got = pairs(text).unwrap();
        assert_eq!(got.len(), 3);
        let damaged = text.replace("BOGUS", "BOGUZ");
        let e = pairs(&damaged).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("damaged"), "{e}");
    }

    #[test]
    fn keys_may_hold_equals_signs_and_the_format_is_checked() {
        assert_eq!(
            split_pair(r#"pg_data/=equal=more=={"size":0}"#),
            Some(("pg_data/=equal=more=", r#"{"size":0}"#))
        );
        assert_eq!(split_pair("a=b"), None, "b is no JSON");
        let e = pairs("[backrest]\nbackrest-format=4\nbackrest-checksum=\"x\"\n").unwrap_err();
        assert!(e.to_string().contains("format 4"), "{e}");
        let e = pairs("x=1\n").unwrap_err();
        assert!(e.to_string().contains("before the first"), "{e}");
        assert_eq!(json_string("a\"b\\c\td/é"), "\"a\\\"b\\\\c\\td/é\"");
    }
}
