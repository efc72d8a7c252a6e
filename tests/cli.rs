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
