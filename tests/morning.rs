//! The morning after a cut-over: a physical copy carries the source's btree indexes in
//! the order of the source's C library. Here the "provider" builds its indexes under one
//! definition of a locale and records its collation versions as an older glibc would;
//! the new machine has the same locale name with another order (`LOCPATH`: the same
//! name compiled from en_US on one side and from et_EE on the other, where `z` sorts
//! after `s`, as glibc upgrades reorder strings). `status` and `promote` name the changed
//! collations; `check-indexes` finds exactly the indexes that disagree (key, expression
//! and partial), prints the REINDEX for each, waits for promotion where amcheck cannot be
//! created, and passes once they are rebuilt.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// The locale name both "C libraries" define.
const LOCALE: &str = "walfetch_test.UTF-8";

/// Compiles `LOCALE` from `source` (and, with `extra`, `walfetch_gone.UTF-8` from en_US)
/// into a directory for `LOCPATH`.
fn locale_dir(scratch: &Scratch, name: &str, source: &str, extra: bool) -> PathBuf {
    let dir = scratch.dir(name);
    let mut compile = vec![(source, LOCALE)];
    if extra {
        compile.push(("en_US", "walfetch_gone.UTF-8"));
    }
    for (from, to) in compile {
        let out = Command::new("localedef")
            .args(["-i", from, "-f", "UTF-8"])
            .arg(dir.join(to))
            .output()
            .unwrap();
        assert!(
            dir.join(to).exists(),
            "localedef {from}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&dir).status();
    dir
}

fn locpath(dir: &Path) -> (String, String) {
    ("LOCPATH".into(), dir.display().to_string())
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), stderr(out)))
}

fn names(list: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{}:{}", f["database"].as_str().unwrap(), f["index"].as_str().unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn changed_collations_are_named_and_the_indexes_they_broke_are_found_and_rebuilt() {
    let scratch = Scratch::new();
    let old_libc = locale_dir(&scratch, "old-libc", "en_US", true);
    let new_libc = locale_dir(&scratch, "new-libc", "et_EE", false);
    let s3 = S3Server::start(scratch.dir("s3"));
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));

    // The provider: its databases in the locale, indexes built under its order.
    let locale_arg = format!("--locale={LOCALE}");
    let mut source = Cluster::init_env(&scratch, "source", pg_bin(), &[&locale_arg], &[locpath(&old_libc)]);
    source.env = env.clone();
    source.env.push(locpath(&old_libc));
    source.configure(&[("archive_mode", "on"), ("archive_command", &push_command(walfetch_bin()))]);
    source.start();
    for sql in [
        "CREATE EXTENSION amcheck",
        &format!("CREATE COLLATION words_coll (locale = '{LOCALE}')"),
        "CREATE TABLE words (id int PRIMARY KEY, w text UNIQUE, x text COLLATE words_coll, n int)",
        "INSERT INTO words SELECT row_number() OVER (), p || g, p || g, g
           FROM generate_series(1, 400) g, unnest(ARRAY['sa', 'ta', 'za']) p",
        "CREATE INDEX words_x ON words (x)",
        "CREATE INDEX words_lower ON words (lower(w))",
        // Under the new order the za rows also satisfy this predicate: the index lacks them.
        "CREATE INDEX words_partial ON words (n) WHERE w < 'tz'",
        "CREATE INDEX words_bytes ON words (w COLLATE \"C\")",
        "CREATE DATABASE app2",
        "CREATE DATABASE gone LOCALE 'walfetch_gone.UTF-8' TEMPLATE template0",
    ] {
        source.sql(sql);
    }
    source.sql_in(
        "app2",
        "CREATE TABLE t AS SELECT p || g AS w FROM generate_series(1, 400) g, unnest(ARRAY['sa', 'za', 'ta']) p",
    );
    source.sql_in("app2", "CREATE INDEX t_w ON t (w)");
    // As an older C library recorded them.
    source.sql("UPDATE pg_database SET datcollversion = '2.28' WHERE datname IN ('postgres', 'app2')");
    source.sql("UPDATE pg_collation SET collversion = '2.28' WHERE collname = 'words_coll'");

    // On the provider's own machine the indexes are in order: a clean cluster passes.
    let out = walfetch(
        &[
            "check-indexes",
            source.data.to_str().unwrap(),
            "--all",
            "--install-amcheck",
            "--json",
        ],
        &env,
    );
    let clean = json(&out);
    assert_eq!(out.status.code(), Some(0), "{clean}");
    assert!(clean["good"].as_u64().unwrap() >= 6, "{clean}");
    assert_eq!(
        source.sql_in("app2", "SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'"),
        "0",
        "dropped again"
    );

    source.backup_push(walfetch_bin(), &env);
    source.sql("INSERT INTO words VALUES (0, 'after the backup', 'x', 0)");
    let final_lsn = source.sql("SELECT pg_current_wal_lsn()");
    source.archive_through(&final_lsn);
    source.stop();

    // The new machine: the same locale name, another order; no walfetch_gone at all.
    let restored = scratch.path().join("standby");
    let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST", "--standby"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut standby = Cluster::attach(&scratch, "standby", restored);
    standby.env = env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
    standby.env.push(locpath(&new_libc));
    standby.start();
    standby.wait_replayed(&final_lsn);
    let data = standby.data.to_str().unwrap().to_string();

    // status names the changed collations, with recorded and actual versions.
    let out = walfetch(&["status", &data, "--json"], &env);
    let status = json(&out);
    let changes = status["collations"]["changes"].as_array().unwrap_or_else(|| panic!("{status}"));
    let mut changed: Vec<String> = changes
        .iter()
        .map(|c| {
            format!(
                "{}:{}:{}",
                c["database"].as_str().unwrap(),
                c["collation"].as_str().unwrap(),
                c["recorded"].as_str().unwrap()
            )
        })
        .collect();
    changed.sort();
    assert_eq!(
        changed,
        [
            "app2:database default:2.28",
            "postgres:database default:2.28",
            "postgres:public.words_coll:2.28"
        ],
        "{status}"
    );
    assert!(changes.iter().all(|c| c["actual"].is_string() && c["actual"] != "2.28"), "{status}");
    let unchecked = status["collations"]["unchecked"].as_array().unwrap();
    assert!(
        unchecked.len() == 1 && unchecked[0]["database"] == "gone" && unchecked[0]["reason"].as_str().unwrap().contains("walfetch_gone"),
        "the database whose locale this machine lacks is named: {status}"
    );
    let out = walfetch(&["status", &data], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("collation changed: database postgres: database default") && text.contains("check-indexes"),
        "{text}"
    );

    // On the standby: what amcheck can check now, and what must wait for promotion.
    let out = walfetch(&["check-indexes", &data, "--json"], &env);
    let report = json(&out);
    assert_eq!(out.status.code(), Some(22), "{report}");
    assert_eq!(report["in_recovery"], true);
    let broken = [
        "postgres:public.words_lower",
        "postgres:public.words_partial",
        "postgres:public.words_w_key",
        "postgres:public.words_x",
    ];
    assert_eq!(names(&report["rebuild"]), broken, "{report}");
    let waits: Vec<String> = names(&report["unchecked"]);
    assert_eq!(waits, ["app2:public.t_w", "gone:(every index)"], "{report}");
    let wait_reason = report["unchecked"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["database"] == "app2")
        .unwrap()["detail"]
        .clone();
    assert!(wait_reason.as_str().unwrap().contains("must wait for promotion"), "{wait_reason}");
    let out = walfetch(&["check-indexes", &data], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("REBUILD public.words_w_key on public.words (database postgres)")
            && text.contains("  REINDEX INDEX CONCURRENTLY public.words_w_key;"),
        "{text}"
    );

    // promote says it too, then check-indexes after promotion, rebuild, check again.
    let out = walfetch(&["promote", &data, "--lsn", &final_lsn, "--timeout", "60s"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("warning: collation changed: database postgres: public.words_coll"),
        "{text}"
    );
    assert!(text.contains("collations changed with the move: 3"), "{text}");
    let out = walfetch(&["check-indexes", &data, "--json"], &env);
    let report = json(&out);
    assert_eq!(out.status.code(), Some(22), "{report}");
    assert_eq!(names(&report["rebuild"]), broken, "{report}");
    let app2 = report["unchecked"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["database"] == "app2")
        .unwrap()
        .clone();
    assert!(app2["detail"].as_str().unwrap().contains("--install-amcheck"), "{app2}");
    for f in report["rebuild"].as_array().unwrap() {
        standby.sql_in(f["database"].as_str().unwrap(), f["reindex"].as_str().unwrap());
    }
    standby.sql("DROP DATABASE gone");
    let out = walfetch(&["check-indexes", &data, "--install-amcheck", "--json"], &env);
    let report = json(&out);
    assert_eq!(out.status.code(), Some(22), "{report}");
    assert_eq!(names(&report["rebuild"]), ["app2:public.t_w"], "{report}");
    standby.sql_in("app2", report["rebuild"][0]["reindex"].as_str().unwrap());
    let out = walfetch(&["check-indexes", &data, "--install-amcheck"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("REFRESH COLLATION VERSION"), "{text}");
    assert_eq!(
        standby.sql_in("app2", "SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'"),
        "0"
    );
    // And the unique index holds again: the rebuilt order finds the duplicate.
    let dup = as_postgres("psql")
        .args(["-X", "-c", "INSERT INTO words VALUES (100000, 'za1', 'x', 1)"])
        .envs(standby.libpq_env())
        .output()
        .unwrap();
    assert!(stderr(&dup).contains("duplicate key"), "{}", stderr(&dup));
}
