//! The migration guide, rehearsed: every `sh` block of docs/MIGRATING.md runs, in order,
//! against a local S3 server holding a "provider's" archive, and must bring up a standby
//! and promote it.

use std::path::PathBuf;

use crate::common::*;

/// The `sh` code blocks of the guide, in order.
fn guide_commands() -> String {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/MIGRATING.md")).unwrap();
    let mut script = String::new();
    let mut in_sh = false;
    for line in text.lines() {
        match (in_sh, line.trim_end()) {
            (false, "```sh") => in_sh = true,
            (true, "```") => in_sh = false,
            (true, l) => {
                script.push_str(l);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(
        script.contains("backup-fetch") && script.contains("promote"),
        "the guide lost its commands:\n{script}"
    );
    script
}

#[test]
fn the_migration_guide_brings_up_a_standby_and_promotes_it() {
    let scratch = Scratch::new();
    let s3 = S3Server::start(scratch.dir("s3"));
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/provider")));

    // The provider's side: a primary archiving to the bucket, with a base backup.
    let mut source = Cluster::archiving(&scratch, "source", walfetch_bin(), &env, &[]);
    source.pgbench(&["-i", "-s", "1", "-q"]);
    source.backup_push(walfetch_bin(), &env);
    source.pgbench(&["-n", "-t", "100", "-c", "2"]);
    // Cut-over steps 1 and 2: writes stop, the last WAL is archived, FINAL_LSN noted.
    let final_lsn = source.sql("SELECT pg_current_wal_lsn()");
    source.archive_through(&final_lsn);
    let expected = source.table_digest("pgbench_accounts", "aid");
    source.stop();

    let standby = scratch.path().join("standby");
    let port = free_port();
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        walfetch_bin().parent().unwrap().display(),
        pg_bin().display()
    );
    let script = format!("set -euo pipefail\nexport PATH='{path}'\n{}", guide_commands());
    let out = as_postgres("bash")
        .arg("-c")
        .arg(&script)
        .envs(env.iter().cloned())
        .env("STANDBY", &standby)
        .env("STANDBY_PORT", port.to_string())
        .env("STANDBY_SOCKET", &source.socket_dir)
        .env("FINAL_LSN", &final_lsn)
        .current_dir(scratch.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the guide failed:\n{stdout}\n{}", stderr(&out));
    assert!(stdout.trim_end().ends_with('f'), "the standby was not promoted:\n{stdout}");

    let mut promoted = Cluster::attach(&scratch, "standby", standby);
    promoted.adopt_running();
    promoted.port = port;
    promoted.socket_dir = source.socket_dir.clone();
    assert_eq!(promoted.table_digest("pgbench_accounts", "aid"), expected);
    assert_eq!(promoted.sql("SELECT pg_is_in_recovery()"), "f");
}
