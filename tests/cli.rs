//! Conventions: version with the build's commit, completions and man page from the
//! clap definitions, JSON logs.

use crate::common::*;

#[test]
fn version_completions_manpage_and_json_logs() {
    let out = walfetch(&["--version"], &[]);
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.starts_with("walfetch ") && v.contains('(') && v.trim_end().ends_with(')'), "{v}");

    let out = walfetch(&["completions", "bash"], &[]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("wal-fetch"));
    let out = walfetch(&["manpage"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH walfetch"));

    let a = crate::common::archive::Archive::new();
    a.put(
        "wal_005/000000010000000000000002.lz4",
        b"another segment: the archive holds objects",
    );
    let dest = a.scratch.path().join("RECOVERYXLOG");
    let args = [
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "wal-fetch",
        "000000010000000000000001",
        dest.to_str().unwrap(),
    ];
    let out = walfetch(&args, &a.env());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.lines().count() >= 1, "no log lines");
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
}

#[test]
fn the_readme_lists_every_exit_code_of_the_table_and_no_other() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## Exit codes").nth(1).expect("README has an Exit codes section");
    let listed: Vec<u8> = section
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with('|'))
        .filter_map(|l| l.strip_prefix("| ")?.split(' ').next()?.parse().ok())
        .collect();
    let table: Vec<u8> = walfetch::error::exit::TABLE.iter().map(|(_, code)| *code).collect();
    assert_eq!(listed, table, "README's exit codes against walfetch::error::exit::TABLE");
}
