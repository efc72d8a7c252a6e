//! A fetcher never outlives its credentials or its settings: a renewal in the
//! credentials file reaches the running fetcher, and one started with other settings
//! is replaced.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::common::archive::*;
use crate::common::wal::seg_name;
use crate::common::*;
use walfetch::codec::Codec;

/// The walfetch call PostgreSQL makes, run in `datadir` with `env`.
fn wal_fetch(datadir: &Path, n: u32, env: &[(String, String)]) -> std::process::Output {
    walfetch_in(Some(datadir), &["wal-fetch", &seg_name(n), "pg_wal/RECOVERYXLOG"], env)
}

/// Fake segments 5.. of 1 MiB in the bucket's archive, as lz4.
fn put_segments(data: &Path, range: std::ops::RangeInclusive<u32>) {
    for n in range {
        let path = data.join(BUCKET).join(format!("pg/wal_005/{}.lz4", seg_name(n)));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, encode(Codec::Lz4, &fake_segment(&seg_name(n), 1 << 20, 7))).unwrap();
    }
    give_to_postgres(data);
}

#[test]
fn credentials_renewed_in_a_file_reach_the_running_fetcher() {
    let a = Archive::new();
    let data = a.s3_data();
    let port = free_port();
    let s3 = S3Server::start_with(data.clone(), port, "first-key", "first-secret-0123456789");
    put_segments(&data, 5..=8);
    let creds = a.scratch.path().join("credentials");
    write_credentials(&creds, "first-key", "first-secret-0123456789");
    let mut env = credentials_file_env(&creds, port, "pg");
    env.extend([
        ("WALG_PG_WAL_SIZE".into(), "1".into()),
        ("WALFETCH_PREFETCH".into(), "on".into()),
        ("WALFETCH_FOLLOW_IDLE".into(), "300".into()),
    ]);
    let dir = a.datadir(7, true);
    let spool = dir.join("pg_wal/.wal-g/prefetch");
    assert_eq!(code(&wal_fetch(&dir, 5, &env)), 0);
    wait_for("the spool to fill", 30, || (6..=8).all(|n| spool.join(seg_name(n)).exists()));
    let pid = || -> u64 {
        let info: serde_json::Value = serde_json::from_slice(&fs::read(spool.join(".walfetch-follow.json")).unwrap()).unwrap();
        info["pid"].as_u64().unwrap()
    };
    let fetcher = pid();

    // The provider rotates the key; the standby moves on to segments the fetcher does not have.
    drop(s3);
    let _s3 = S3Server::start_with(data.clone(), port, "second-key", "second-secret-0123456789");
    put_segments(&data, 9..=12);
    for n in 6..=8 {
        assert_eq!(code(&wal_fetch(&dir, n, &env)), 0);
    }
    let status = spool.join(".walfetch-status.json");
    wait_for("the fetcher to report rejected credentials", 30, || {
        fs::read_to_string(&status).is_ok_and(|t| t.contains("\"kind\": \"credentials\""))
    });
    // A direct fetch meanwhile fails as a credentials error, never as "absent".
    let out = wal_fetch(&dir, 9, &env);
    assert_eq!(code(&out), 6, "{}", stderr(&out));

    // The renewed file is picked up by the same fetcher, within its reload interval.
    write_credentials(&creds, "second-key", "second-secret-0123456789");
    wait_for("the fetcher to prefetch with the renewed credentials", 60, || {
        spool.join(seg_name(9)).exists()
    });
    assert_eq!(pid(), fetcher, "the fetcher reloaded its credentials itself");
    wait_for("the fetcher to report that it works again", 20, || {
        fs::read_to_string(&status).is_ok_and(|t| !t.contains("\"kind\": \"credentials\""))
    });
    let log = fs::read_to_string(spool.join(".walfetch-follow.log")).unwrap();
    let failures = log.lines().filter(|l| l.contains("prefetch") && l.contains("fail")).count();
    assert!((1..=3).contains(&failures), "a repeated failure is logged once a minute:\n{log}");
    assert!(log.contains("reloaded"), "{log}");
}

#[test]
fn a_fetcher_with_other_settings_is_replaced() {
    let a = Archive::new();
    for n in 5..=9 {
        a.put(
            &format!("wal_005/{}.lz4", seg_name(n)),
            &encode(Codec::Lz4, &fake_segment(&seg_name(n), 1 << 20, 7)),
        );
    }
    let dir = a.datadir(7, true);
    let spool = dir.join("pg_wal/.wal-g/prefetch");
    let mut env = a.env();
    env.extend([
        ("WALFETCH_PREFETCH".to_string(), "on".to_string()),
        ("WALG_PG_WAL_SIZE".to_string(), "1".to_string()),
        ("WALFETCH_FOLLOW_IDLE".to_string(), "60".to_string()),
    ]);
    let pid = || -> Option<u64> {
        let info: serde_json::Value = serde_json::from_slice(&fs::read(spool.join(".walfetch-follow.json")).ok()?).ok()?;
        info["pid"].as_u64()
    };
    assert_eq!(code(&wal_fetch(&dir, 5, &env)), 0);
    wait_for("the fetcher to start", 60, || {
        pid().is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
    });
    let first = pid().unwrap();
    // The server restarted with other settings (here: a different read-ahead).
    env.push(("WALG_DOWNLOAD_CONCURRENCY".into(), "3".into()));
    assert_eq!(code(&wal_fetch(&dir, 6, &env)), 0);
    wait_for("the old fetcher to go", 60, || !Path::new(&format!("/proc/{first}")).exists());
    // PostgreSQL calls again every few seconds; on a loaded machine the old fetcher may
    // still be exiting at the first call (which then leaves the start to the next one).
    let mut polls = 0;
    wait_for("a new fetcher", 60, || {
        polls += 1;
        if polls % 20 == 0 {
            let _ = wal_fetch(&dir, 6, &env);
        }
        pid().is_some_and(|p| p != first && Path::new(&format!("/proc/{p}")).exists())
    });

    // A fetcher run as a service (its own environment) is never stopped by wal-fetch.
    let second = pid().unwrap();
    // SAFETY: a signal to the fetcher this test started.
    unsafe {
        libc::kill(second as libc::pid_t, libc::SIGTERM);
    }
    wait_for("the on-demand fetcher to go", 60, || {
        !Path::new(&format!("/proc/{second}")).exists()
    });
    let mut service_env = env.clone();
    service_env.push(("AWS_REGION".into(), "eu-west-1".into()));
    let mut service = as_postgres(walfetch_bin())
        .args(["follow", dir.to_str().unwrap(), "--foreground"])
        .envs(service_env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the service fetcher", 60, || {
        pid().is_some_and(|p| p != second && Path::new(&format!("/proc/{p}")).exists())
    });
    let service_pid = pid().unwrap();
    assert_eq!(code(&wal_fetch(&dir, 7, &env)), 0);
    std::thread::sleep(Duration::from_millis(500));
    assert!(Path::new(&format!("/proc/{service_pid}")).exists(), "wal-fetch stopped a service");
    let _ = service.kill();
    let _ = service.wait();
}
