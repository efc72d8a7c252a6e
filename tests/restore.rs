//! End to end: a primary archives with walrus (an independent wal-g port) or walfetch,
//! a base backup is taken, more is written and archived, and walfetch restores a
//! standby that must replay to the primary's last archived LSN with identical data.
//! Every codec, S3 and file storage, and a relocated tablespace.

use std::path::PathBuf;

use crate::common::*;

#[derive(Clone, Copy, Debug)]
enum Writer {
    Walrus,
    Walfetch,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    File,
    S3,
}

/// Tables compared between primary and standby, with their ordering.
const TABLES: &[(&str, &str)] = &[
    ("pgbench_accounts", "aid"),
    ("pgbench_branches", "bid"),
    ("pgbench_tellers", "tid"),
    ("pgbench_history", "tid, bid, aid, delta, mtime"),
    ("after_backup", "g"),
];

fn scenario(writer: Writer, codec: &str, store: Store, tablespace: bool) {
    restore_with(writer, Writer::Walfetch, codec, store, tablespace);
}

/// `reader` restores (backup-fetch, then wal-fetch as restore_command) what `writer` wrote.
fn restore_with(writer: Writer, reader: Writer, codec: &str, store: Store, tablespace: bool) {
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = (store == Store::S3).then(|| S3Server::start(s3data.clone()));
    let mut env: Vec<(String, String)> = vec![("WALG_COMPRESSION_METHOD".into(), codec.into())];
    match &s3 {
        Some(s3) => {
            env.extend(s3.env());
            env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
        }
        None => {
            let root = s3data.join(BUCKET).join("pg");
            std::fs::create_dir_all(&root).unwrap();
            give_to_postgres(&s3data);
            env.push(("WALG_FILE_PREFIX".into(), root.display().to_string()));
        }
    }
    let writer_bin = match writer {
        Writer::Walrus => walrus_bin(),
        Writer::Walfetch => walfetch_bin(),
    };

    let mut primary = Cluster::archiving(&scratch, "primary", writer_bin, &env, &[]);
    primary.pgbench(&["-i", "-s", "1", "-q"]);
    let mut tables = TABLES.to_vec();
    let tbs_restored = scratch.dir("tbs-restored");
    if tablespace {
        let loc = scratch.dir("tbs-source");
        primary.sql(&format!("CREATE TABLESPACE spaced LOCATION '{}'", loc.display()));
        primary.sql("CREATE TABLE in_tablespace TABLESPACE spaced AS SELECT g, md5(g::text) AS m FROM generate_series(1, 20000) g");
        tables.push(("in_tablespace", "g"));
    }

    primary.backup_push(writer_bin, &env);
    if matches!(writer, Writer::Walfetch) {
        // walfetch's writer records each file's size, which backup-fetch checks.
        let backups = s3data.join(BUCKET).join("pg/basebackups_005");
        let dir = std::fs::read_dir(&backups)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.path().is_dir())
            .unwrap();
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("files_metadata.json")).unwrap()).unwrap();
        let files = meta["Files"].as_object().unwrap();
        assert!(files.values().all(|f| f["Size"].is_u64()), "{meta}");
        let version = std::fs::metadata(primary.data.join("PG_VERSION")).unwrap().len();
        assert_eq!(files["PG_VERSION"]["Size"], version);
    }

    primary.pgbench(&["-n", "-t", "200", "-c", "2"]);
    primary.sql("CREATE TABLE after_backup AS SELECT g FROM generate_series(1, 10000) g");
    if tablespace {
        primary.sql("INSERT INTO in_tablespace SELECT g, 'after' FROM generate_series(20001, 25000) g");
    }
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    let expected: Vec<String> = tables.iter().map(|(t, o)| primary.table_digest(t, o)).collect();
    primary.stop();

    let restored: PathBuf = scratch.path().join("standby");
    let restored_s = restored.display().to_string();
    let mut args = vec!["backup-fetch", restored_s.as_str(), "LATEST", "--standby"];
    let mapping = format!("{}={}", "TBS_OID", tbs_restored.display());
    let mapping = if tablespace {
        let oid = std::fs::read_dir(primary.data.join("pg_tblspc"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name();
        mapping.replace("TBS_OID", oid.to_str().unwrap())
    } else {
        mapping
    };
    if tablespace {
        args.extend(["--tablespace-map", mapping.as_str()]);
    }
    match reader {
        Writer::Walfetch => {
            let out = walfetch(&args, &env);
            assert!(out.status.success(), "backup-fetch: {}", stderr(&out));
            assert!(!restored.join("WALFETCH_RESTORE_INCOMPLETE").exists());
            assert!(restored.join("standby.signal").exists());
        }
        Writer::Walrus => {
            let out = as_postgres(walrus_bin())
                .arg("backup-fetch")
                .arg(&restored)
                .arg("LATEST")
                .envs(env.iter().cloned())
                .output()
                .unwrap();
            assert!(out.status.success(), "walrus backup-fetch: {}", stderr(&out));
            std::fs::write(restored.join("standby.signal"), "").unwrap();
            let prefix = env
                .iter()
                .filter(|(k, _)| k.starts_with("WALG_") && k.ends_with("_PREFIX"))
                .map(|(k, v)| format!("{k}={v} "))
                .collect::<String>();
            let conf = format!(
                "archive_mode = 'off'\nrestore_command = 'env {prefix}{} wal-fetch %f %p'\n",
                walrus_bin().display()
            );
            let auto = restored.join("postgresql.auto.conf");
            std::fs::write(&auto, std::fs::read_to_string(&auto).unwrap_or_default() + &conf).unwrap();
            give_to_postgres(&restored);
        }
    }

    let mut standby = Cluster::attach(&scratch, "standby", restored);
    // Only the credentials come from the server's environment; where the archive is
    // comes from the restore_command that backup-fetch wrote.
    standby.env = env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
    standby.start();
    standby.wait_replayed(&lsn);
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t");
    let actual: Vec<String> = tables.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
    assert_eq!(actual, expected, "standby data differs from the primary's");
    if tablespace {
        let link = std::fs::read_dir(standby.data.join("pg_tblspc"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        assert_eq!(std::fs::read_link(link).unwrap(), tbs_restored, "tablespace must be relocated");
    }
    let log = standby.log_text();
    assert!(
        log.contains("restored log file"),
        "standby replayed nothing from the archive:\n{log}"
    );
}

#[test]
fn walrus_lz4_file() {
    scenario(Writer::Walrus, "lz4", Store::File, false);
}

#[test]
fn walrus_lz4_s3() {
    scenario(Writer::Walrus, "lz4", Store::S3, false);
}

#[test]
fn walrus_zstd_file() {
    scenario(Writer::Walrus, "zstd", Store::File, false);
}

#[test]
fn walrus_zstd_s3() {
    scenario(Writer::Walrus, "zstd", Store::S3, false);
}

#[test]
fn walrus_brotli_file() {
    scenario(Writer::Walrus, "brotli", Store::File, false);
}

#[test]
fn walrus_brotli_s3() {
    scenario(Writer::Walrus, "brotli", Store::S3, false);
}

#[test]
fn walrus_lzma_file() {
    scenario(Writer::Walrus, "lzma", Store::File, false);
}

#[test]
fn walrus_lzma_s3() {
    scenario(Writer::Walrus, "lzma", Store::S3, false);
}

#[test]
fn walfetch_lz4_s3_with_tablespace() {
    scenario(Writer::Walfetch, "lz4", Store::S3, true);
}

#[test]
fn walfetch_zstd_file_with_tablespace() {
    scenario(Writer::Walfetch, "zstd", Store::File, true);
}

#[test]
fn walfetch_brotli_s3() {
    scenario(Writer::Walfetch, "brotli", Store::S3, false);
}

#[test]
fn walfetch_lzma_file() {
    scenario(Writer::Walfetch, "lzma", Store::File, false);
}

#[test]
fn walfetch_uncompressed_file() {
    scenario(Writer::Walfetch, "none", Store::File, false);
}

#[test]
fn walrus_restores_walfetch_lz4_s3() {
    restore_with(Writer::Walfetch, Writer::Walrus, "lz4", Store::S3, false);
}

#[test]
fn walrus_restores_walfetch_zstd_file() {
    restore_with(Writer::Walfetch, Writer::Walrus, "zstd", Store::File, false);
}

#[test]
fn walrus_restores_walfetch_brotli_file() {
    restore_with(Writer::Walfetch, Writer::Walrus, "brotli", Store::File, false);
}

#[test]
fn walrus_restores_walfetch_lzma_s3() {
    restore_with(Writer::Walfetch, Writer::Walrus, "lzma", Store::S3, false);
}
