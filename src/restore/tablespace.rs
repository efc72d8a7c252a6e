//! Tablespaces of a restored backup: where each `pg_tblspc/<oid>` link points, from the
//! sentinel's spec, relocated by `--tablespace-map OID=PATH`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::layout::sentinel::TablespaceSpec;

/// Parses one `--tablespace-map OID=PATH` argument.
pub fn parse_mapping(arg: &str) -> Result<(String, PathBuf)> {
    let (oid, path) = arg
        .split_once('=')
        .ok_or_else(|| Error::new(ErrorKind::Config, format!("--tablespace-map '{arg}': expected OID=PATH")))?;
    if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::new(
            ErrorKind::Config,
            format!("--tablespace-map '{arg}': '{oid}' is not a tablespace OID"),
        ));
    }
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(Error::new(
            ErrorKind::Config,
            format!("--tablespace-map '{arg}': the path must be absolute"),
        ));
    }
    Ok((oid.to_string(), path))
}

/// The relocations a `--restore-spec` file gives, in the format wal-g and WAL-E read
/// and write (`{"<oid>": {"loc": PATH, "link": "pg_tblspc/<oid>"}, "tablespaces": [...],
/// "base_prefix": ...}`, wal-g's capitalised `Loc`, `Link`, `Tablespaces` too): each
/// tablespace's `loc`. The data directory stays where backup-fetch is told.
pub fn read_spec(path: &Path) -> Result<Vec<(String, PathBuf)>> {
    let bad = |why: String| Error::new(ErrorKind::Config, format!("--restore-spec {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
    let mut out = Vec::new();
    for (key, v) in obj {
        if matches!(key.as_str(), "base_prefix" | "BasePrefix" | "tablespaces" | "Tablespaces") {
            continue;
        }
        if !key.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!("'{key}' is neither a tablespace OID nor base_prefix/tablespaces")));
        }
        let loc = v
            .get("loc")
            .or_else(|| v.get("Loc"))
            .and_then(|l| l.as_str())
            .ok_or_else(|| bad(format!("tablespace {key} has no \"loc\"")))?;
        let link = v.get("link").or_else(|| v.get("Link")).and_then(|l| l.as_str());
        if let Some(link) = link.filter(|l| *l != format!("pg_tblspc/{key}")) {
            return Err(bad(format!("tablespace {key}: link '{link}' is not pg_tblspc/{key}")));
        }
        let loc = PathBuf::from(loc.trim_end_matches('/'));
        if !loc.is_absolute() {
            return Err(bad(format!("tablespace {key}: loc '{}' is not absolute", loc.display())));
        }
        out.push((key.clone(), loc));
    }
    Ok(out)
}

/// Final location of every tablespace: the spec's, overridden by the mappings.
/// A mapping for an OID the backup does not have is an error (a typo would otherwise
/// silently restore into the source's path).
pub fn plan(spec: Option<&TablespaceSpec>, mappings: &[(String, PathBuf)]) -> Result<BTreeMap<String, PathBuf>> {
    let sources: BTreeMap<String, PathBuf> = spec
        .map(|s| s.locations.iter().map(|(oid, loc)| (oid.clone(), PathBuf::from(loc))).collect())
        .unwrap_or_default();
    relocate(sources, mappings)
}

/// The source locations of a backup's tablespaces (OID to path), overridden by the
/// mappings (see [`plan`]).
pub fn relocate(sources: BTreeMap<String, PathBuf>, mappings: &[(String, PathBuf)]) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = sources;
    for (oid, path) in mappings {
        match out.get_mut(oid) {
            Some(loc) => *loc = path.clone(),
            None => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "--tablespace-map {oid}: the backup has no tablespace {oid} (it has: {})",
                        if out.is_empty() {
                            "none".to_string()
                        } else {
                            out.keys().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// `tablespace_map` contents (`<oid> <path>` per line) rewritten to the final locations,
/// so PostgreSQL does not re-point the links at the source's paths during recovery.
pub fn rewrite_map(text: &str, locations: &BTreeMap<String, PathBuf>) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let (oid, _) = line.split_once(' ').unwrap_or((line, ""));
        match locations.get(oid) {
            Some(loc) => out.push_str(&format!("{oid} {}\n", loc.display())),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_override_the_spec_and_typos_fail() {
        let mut spec = TablespaceSpec::default();
        spec.locations.insert("16385".into(), "/mnt/tbs1".into());
        let plan1 = plan(Some(&spec), &[parse_mapping("16385=/srv/t").unwrap()]).unwrap();
        assert_eq!(plan1["16385"], PathBuf::from("/srv/t"));
        assert!(plan(Some(&spec), &[parse_mapping("1=/x").unwrap()]).is_err());
        assert!(parse_mapping("x=/y").is_err());
        assert!(parse_mapping("1=rel").is_err());
        assert!(parse_mapping("1").is_err());
    }

    #[test]
    fn tablespace_map_is_rewritten() {
        let mut loc = BTreeMap::new();
        loc.insert("16385".to_string(), PathBuf::from("/srv/new"));
        assert_eq!(rewrite_map("16385 /mnt/old\n16386 /keep\n", &loc), "16385 /srv/new\n16386 /keep\n");
    }
}
