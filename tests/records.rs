//! Every record checked on the path a segment actually took: a continuation damaged so
//! that each segment passes its own checks is refused whether the segment comes through
//! wal-fetch directly, from the spool, or after a restart.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::wal::{continuation_victim, damage_continuation, seg_name};
use crate::common::*;

/// The walfetch call PostgreSQL makes, run in `datadir` with `env`.
fn wal_fetch(datadir: &Path, n: u32, env: &[(String, String)]) -> std::process::Output {
    walfetch_in(Some(datadir), &["wal-fetch", &seg_name(n), "pg_wal/RECOVERYXLOG"], env)
}

#[test]
fn a_damaged_continuation_is_refused_however_the_segment_arrives() {
    let scratch = Scratch::new();
    let root = scratch.dir(&format!("s3/{BUCKET}/pg"));
    let env = vec![("WALG_FILE_PREFIX".to_string(), root.display().to_string())];
    let (primary, _, _) = primary_with_backup(&scratch, &env, &["--wal-segsize", "1"]);
    let backup_start = fs::read_dir(root.join("basebackups_005"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("base_")
                .map(|n| u32::from_str_radix(&n[16..24], 16).unwrap())
        })
        .next()
        .unwrap();
    let victim = continuation_victim(&root, backup_start + 2);
    damage_continuation(&root, victim);

    // Archive recovery, prefetch off: PostgreSQL stops at the damaged segment, never promotes.
    let restored = scratch.path().join("restored");
    let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST", "--recovery"], &env);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut pg = Cluster::attach(&scratch, "restored", restored.clone());
    pg.env = vec![("WALFETCH_PREFETCH".into(), "off".into())];
    let log = recovery_stops(&mut pg, "a damaged record");
    assert!(log.contains("exit code 135"), "{log}");
    assert_eq!(pg.control_field("Database cluster state:"), "in archive recovery");

    // The same calls by hand, prefetch off: the previous segment handed over, then the
    // damaged one refused in both modes, naming the object and the record.
    let off = vec![env[0].clone(), ("WALFETCH_PREFETCH".into(), "off".into())];
    assert_eq!(code(&wal_fetch(&restored, victim - 1, &off)), 0);
    let out = wal_fetch(&restored, victim, &off);
    assert_eq!(code(&out), 128 + 7, "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(
        msg.contains(&format!("wal_005/{}.lz4", seg_name(victim))) && msg.contains("begun in the previous segment"),
        "{msg}"
    );
    fs::write(restored.join("standby.signal"), "").unwrap();
    assert_eq!(code(&wal_fetch(&restored, victim, &off)), 7);
    // Without walfetch's record of the last hand-over, the previous segment PostgreSQL
    // keeps in pg_wal is read instead.
    let state = restored.join("pg_wal/.wal-g/prefetch/.walfetch-handover.json");
    fs::remove_file(&state).unwrap();
    fs::rename(
        restored.join("pg_wal/RECOVERYXLOG"),
        restored.join("pg_wal").join(seg_name(victim - 1)),
    )
    .unwrap();
    assert_eq!(code(&wal_fetch(&restored, victim, &off)), 7);
    assert!(!restored.join("pg_wal/RECOVERYXLOG").exists());

    // Prefetch on, the fetcher started by a direct fetch of the previous segment: it
    // prefetches the damaged one without its predecessor's tail, so only the hand-over
    // gate can see the damage; it refuses it from the spool.
    let on = vec![
        env[0].clone(),
        ("WALFETCH_PREFETCH".into(), "on".into()),
        ("WALFETCH_FOLLOW_IDLE".into(), "300".into()),
    ];
    assert_eq!(code(&wal_fetch(&restored, victim - 1, &on)), 0);
    let spooled = restored.join("pg_wal/.wal-g/prefetch").join(seg_name(victim));
    wait_for("the fetcher to prefetch the damaged segment", 30, || spooled.exists());
    let out = wal_fetch(&restored, victim, &on);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(prefetched)") && stderr(&out).contains("begun in the previous segment"),
        "{}",
        stderr(&out)
    );

    // A standby retries; `walfetch status` names what blocks it.
    let mut pg = Cluster::attach(&scratch, "standby", restored.clone());
    pg.env = on[1..].to_vec();
    pg.start();
    wait_for("PostgreSQL to ask for the damaged segment", 60, || {
        pg.log_text().contains(&seg_name(victim))
    });
    // The fetcher's own failure is in its next report (it may have moved on to later
    // segments first): status is asked until it is there, for a while.
    let ask = || walfetch(&["status", restored.to_str().unwrap(), "--json"], &[]);
    let mut out = ask();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&out.stdout).contains("the prefetch fetcher keeps failing") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        out = ask();
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    assert_eq!(code(&out), 15, "{report:#}");
    assert_eq!(report["next_segment"], seg_name(victim), "{report:#}");
    assert_eq!(report["next_segment_source"], "restore_command", "{report:#}");
    assert!(
        report["problems"].to_string().contains("begun in the previous segment"),
        "{report:#}"
    );
    assert_eq!(report["failing_call"]["file"], seg_name(victim), "{report:#}");
    assert!(
        report["failing_call"]["failing_since"].is_string() && report["failing_call"]["failures"].as_u64() >= Some(1),
        "{report:#}"
    );
    assert!(
        report["problems"]
            .to_string()
            .contains("the prefetch fetcher keeps failing (corrupt) since"),
        "{report:#}"
    );
    // The fetcher it started goes when the server goes.
    let spool = restored.join("pg_wal/.wal-g/prefetch");
    let info: serde_json::Value = serde_json::from_slice(&fs::read(spool.join(".walfetch-follow.json")).unwrap()).unwrap();
    let pid = info["pid"].as_u64().unwrap() as u32;
    assert!(info["postmaster"].as_u64().is_some(), "{info}");
    pg.stop();
    wait_for("the fetcher to exit with its server", 15, || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    drop(primary);
}
