//! The migration guide, rehearsed: every `sh` block of docs/MIGRATING.md runs, in order,
//! against a local S3 server holding a "provider's" archive, and must bring up a standby
//! and promote it.

use std::path::PathBuf;

use crate::common::*;

/// The `sh` code blocks of the guide, in order: those before the section whose title
/// starts with `split`, and those from it on.
fn guide_commands(split: &str) -> (String, String) {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/MIGRATING.md")).unwrap();
    let (mut before, mut after) = (String::new(), String::new());
    let mut in_sh = false;
    let mut past = false;
    for line in text.lines() {
        if line.starts_with("## A provider that writes pgBackRest") || line.starts_with("## A Kubernetes operator") {
            break;
        }
        if line.starts_with("## ")
            && line[3..]
                .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')
                .starts_with(split)
        {
            past = true;
        }
        let script = if past { &mut after } else { &mut before };
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
        before.contains("backup-fetch")
            && after.contains("AWS_SHARED_CREDENTIALS_FILE")
            && after.contains("walfetch promote \"$REHEARSAL\"")
            && after.contains("walfetch promote \"$STANDBY\"")
            && after.matches("walfetch check-indexes").count() == 2,
        "the guide lost its commands:\n{before}\n---\n{after}"
    );
    (before, after)
}

/// The `sh` blocks of the guide's section whose title starts with `title`.
fn section_commands(title: &str) -> String {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/MIGRATING.md")).unwrap();
    let mut script = String::new();
    let (mut inside, mut in_sh) = (false, false);
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            inside = heading.starts_with(title);
        }
        match (inside, in_sh, line.trim_end()) {
            (true, false, "```sh") => in_sh = true,
            (_, true, "```") => in_sh = false,
            (true, true, l) => {
                script.push_str(l);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(
        script.contains("backup-fetch") && script.contains("promote"),
        "the section lost its commands:\n{script}"
    );
    script
}

#[test]
fn the_pgbackrest_path_of_the_guide_restores_a_provider_repository_and_promotes_it() {
    use crate::common::pgbackrest::Source;
    let scratch = Scratch::new();
    let s3 = S3Server::start(scratch.dir("s3"));
    // The provider: pgBackRest into its bucket over TLS, encrypted, bundled.
    let mut source = Source::in_s3(
        &scratch,
        &s3,
        "/cluster-abc",
        &[
            ("repo1-bundle", "y"),
            ("repo1-cipher-type", "aes-256-cbc"),
            ("repo1-cipher-pass", "provider"),
        ],
    );
    source.primary.pgbench(&["-i", "-s", "1", "-q"]);
    source.backup("full", &[]);
    source.primary.pgbench(&["-n", "-t", "200", "-c", "2"]);
    source.backup("diff", &[]);
    source.primary.sql("CREATE TABLE late AS SELECT generate_series(1, 5000) g");
    let final_lsn = source.primary.sql("SELECT pg_current_wal_lsn()");
    source.primary.archive_through(&final_lsn);
    let expected = [
        source.primary.table_digest("pgbench_accounts", "aid"),
        source.primary.table_digest("late", "g"),
    ];
    source.primary.stop();
    let socket = source.primary.socket_dir.clone();
    let standby = scratch.path().join("standby");
    let port = free_port();
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        walfetch_bin().parent().unwrap().display(),
        pg_bin().display()
    );
    let out = as_postgres("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail\nexport PATH='{path}'\n{}",
            section_commands("A provider that writes pgBackRest")
        ))
        .env("PGBACKREST_PROVIDER_CONFIG", &source.config)
        .env("STANDBY", &standby)
        .env("STANDBY_PORT", port.to_string())
        .env("FINAL_LSN", &final_lsn)
        .current_dir(scratch.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "the guide failed:\n{stdout}\n{}", stderr(&out));
    assert!(stdout.contains("promoted: timeline 1 -> 2") && stdout.contains("ok: "), "{stdout}");
    let mut promoted = Cluster::attach(&scratch, "standby", standby);
    promoted.adopt_running();
    promoted.port = port;
    promoted.socket_dir = socket;
    assert_eq!(
        [promoted.table_digest("pgbench_accounts", "aid"), promoted.table_digest("late", "g")],
        expected
    );
}

#[test]
fn the_barman_cloud_path_of_the_guide_restores_an_operator_archive_and_promotes_it() {
    use crate::common::barman::{Source, SERVER};
    let scratch = Scratch::new();
    // The operator: barman-cloud, WAL and data compressed, as CloudNativePG runs it.
    let mut source = Source::new(&scratch, "--gzip", &[]);
    source.primary.pgbench(&["-i", "-s", "1", "-q"]);
    source.backup(&["--snappy", "-n", "backup-nightly"]);
    source.primary.sql("CREATE TABLE late AS SELECT generate_series(1, 5000) g");
    let final_lsn = source.primary.sql("SELECT pg_current_wal_lsn()");
    source.primary.archive_through(&final_lsn);
    let expected = [
        source.primary.table_digest("pgbench_accounts", "aid"),
        source.primary.table_digest("late", "g"),
    ];
    source.primary.stop();
    let socket = source.primary.socket_dir.clone();
    let standby = scratch.path().join("standby");
    let port = free_port();
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        walfetch_bin().parent().unwrap().display(),
        pg_bin().display()
    );
    let out = as_postgres("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail\nexport PATH='{path}'\n{}",
            section_commands("A Kubernetes operator")
        ))
        .envs(source.s3.env())
        .env("BARMAN_DESTINATION_PATH", format!("s3://{BUCKET}/barman"))
        .env("BARMAN_SERVER_NAME", SERVER)
        .env("STANDBY", &standby)
        .env("STANDBY_PORT", port.to_string())
        .env("FINAL_LSN", &final_lsn)
        .current_dir(scratch.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "the guide failed:\n{stdout}\n{}", stderr(&out));
    assert!(stdout.contains("promoted: timeline 1 -> 2") && stdout.contains("ok: "), "{stdout}");
    let mut promoted = Cluster::attach(&scratch, "standby", standby);
    promoted.adopt_running();
    promoted.port = port;
    promoted.socket_dir = socket;
    assert_eq!(
        [promoted.table_digest("pgbench_accounts", "aid"), promoted.table_digest("late", "g")],
        expected
    );
}

#[test]
fn the_migration_guide_brings_up_a_standby_renews_its_credentials_and_promotes_it() {
    let scratch = Scratch::new();
    let data = scratch.dir("s3");
    let port = free_port();
    let s3 = S3Server::start_with(data.clone(), port, "first-key", "first-secret-0123456789");
    // The provider's archiver and the new server each have a credentials file.
    let source_creds = scratch.path().join("source-credentials");
    let creds = scratch.path().join("credentials");
    write_credentials(&source_creds, "first-key", "first-secret-0123456789");
    write_credentials(&creds, "first-key", "first-secret-0123456789");
    let source_env = credentials_file_env(&source_creds, port, "provider");
    let env = credentials_file_env(&creds, port, "provider");

    // The provider's side: a primary archiving to the bucket, with a base backup.
    let mut source = Cluster::archiving(&scratch, "source", walfetch_bin(), &source_env, &[]);
    source.pgbench(&["-i", "-s", "1", "-q"]);
    source.backup_push(walfetch_bin(), &source_env);
    source.pgbench(&["-n", "-t", "100", "-c", "2"]);
    source.archive_through(&source.sql("SELECT pg_current_wal_lsn()"));

    let standby = scratch.path().join("standby");
    let port_standby = free_port();
    let rehearsal = scratch.path().join("rehearsal");
    let port_rehearsal = free_port();
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        walfetch_bin().parent().unwrap().display(),
        pg_bin().display()
    );
    let (before, after) = guide_commands("Renew the credentials");
    let socket = source.socket_dir.clone();
    let run = |script: &str, final_lsn: &str| {
        let out = as_postgres("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\nexport PATH='{path}'\n{script}"))
            .envs(env.iter().cloned())
            .env("STANDBY", &standby)
            .env("STANDBY_PORT", port_standby.to_string())
            .env("STANDBY_SOCKET", &socket)
            .env("REHEARSAL", &rehearsal)
            .env("REHEARSAL_PORT", port_rehearsal.to_string())
            .env("FINAL_LSN", final_lsn)
            .env("NEW_ACCESS_KEY_ID", "second-key")
            .env("NEW_SECRET_ACCESS_KEY", "second-secret-0123456789")
            .current_dir(scratch.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "the guide failed:\n{stdout}\n{}", stderr(&out));
        stdout
    };
    run(&before, "");

    // Mid-way the provider rotates the key; its archiver has the new one at once, the
    // standby's file not yet: status says so while the source writes on.
    drop(s3);
    let _s3 = S3Server::start_with(data.clone(), port, "second-key", "second-secret-0123456789");
    write_credentials(&source_creds, "second-key", "second-secret-0123456789");
    source.pgbench(&["-n", "-t", "200", "-c", "2"]);
    source.sql("CREATE TABLE after_rotation AS SELECT generate_series(1, 5000) g");
    // Cut-over steps 1 and 2: writes stop, the last WAL is archived, FINAL_LSN noted.
    let final_lsn = source.sql("SELECT pg_current_wal_lsn()");
    source.archive_through(&final_lsn);
    let expected = [
        source.table_digest("pgbench_accounts", "aid"),
        source.table_digest("after_rotation", "g"),
    ];
    source.stop();
    let out = walfetch(&["status", standby.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(18), "{}", String::from_utf8_lossy(&out.stdout));

    // Renewal, then cut-over with walfetch promote.
    let stdout = run(&after, &final_lsn);
    assert!(stdout.contains("promoted: timeline 1 -> 2"), "{stdout}");
    assert_eq!(
        stdout.matches("ok: ").count(),
        2,
        "check-indexes passed after the rehearsal's promotion and the real one:\n{stdout}"
    );
    assert!(!rehearsal.exists(), "the rehearsal copy is removed");
    assert!(stdout.trim_end().ends_with('f'), "the standby was not promoted:\n{stdout}");

    let mut promoted = Cluster::attach(&scratch, "standby", standby);
    promoted.adopt_running();
    promoted.port = port_standby;
    promoted.socket_dir = source.socket_dir.clone();
    assert_eq!(
        [
            promoted.table_digest("pgbench_accounts", "aid"),
            promoted.table_digest("after_rotation", "g")
        ],
        expected
    );
    assert_eq!(promoted.sql("SELECT pg_is_in_recovery()"), "f");
}
