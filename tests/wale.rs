//! WAL-E archives, written by the real WAL-E 1.1.1 (lzop, `base_<segment>_<offset>`
//! names, no pg_control.tar, no configuration files), restored and replayed by walfetch
//! with no WAL-E-specific flag, from the S3 server and from a directory copy of the bucket.

use crate::common::*;

const TABLES: &[(&str, &str)] = &[
    ("pgbench_accounts", "aid"),
    ("pgbench_history", "tid, bid, aid, delta, mtime"),
    ("after_backup", "g"),
];

#[test]
fn walfetch_restores_and_replays_a_real_wale_archive() {
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = S3Server::start(s3data.clone());
    let wale_env = vec![
        ("WALE_S3_PREFIX".to_string(), format!("s3://{BUCKET}/wale")),
        ("WALE_S3_ENDPOINT".to_string(), format!("http+path://127.0.0.1:{}", s3.port)),
        ("AWS_ACCESS_KEY_ID".to_string(), ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), SECRET_KEY.to_string()),
    ];

    let (lsn, expected) = wale_archive(&scratch, &wale_env, TABLES);
    let lzo = std::fs::read_dir(s3data.join(BUCKET).join("wale/wal_005"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".lzo"))
        .count();
    assert!(lzo > 0, "WAL-E wrote no .lzo segments");

    let file_env = vec![(
        "WALE_FILE_PREFIX".to_string(),
        format!("file://localhost{}", s3data.join(BUCKET).join("wale").display()),
    )];
    for (label, env) in [("s3", wale_env.clone()), ("directory", file_env)] {
        let restored = scratch.path().join(format!("standby-{label}"));
        let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST", "--standby"], &env);
        assert!(out.status.success(), "{label}: backup-fetch: {}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("pg_hba.conf: minimal configuration"), "{label}: {stdout}");
        assert!(
            std::fs::read_to_string(restored.join("postgresql.conf"))
                .unwrap()
                .contains("max_connections"),
            "{label}: primary's settings from pg_control"
        );

        let mut standby = Cluster::attach(&scratch, &format!("standby-{label}"), restored);
        standby.env = env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
        standby.start();
        standby.wait_replayed(&lsn);
        let actual: Vec<String> = TABLES.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
        assert_eq!(actual, expected, "{label}: standby data differs from the primary's");
        assert!(standby.log_text().contains("restored log file"), "{label}: nothing replayed");
    }
}
