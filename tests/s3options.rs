//! S3 options a provider's bucket may need: SSE-C keys and requester-pays sent on every
//! request that needs them, and a custom CA bundle for an endpoint with its own
//! certificate authority (a TLS terminator in front of the local S3 server).

use std::fs;
use std::process::Command;

use crate::common::archive::{encode, Archive};
use crate::common::proxy::FaultProxy;
use crate::common::*;
use walfetch::codec::Codec;

const SEG: &str = "000000010000000000000005";

fn env_for(endpoint: &str) -> Vec<(String, String)> {
    s3_archive_env(endpoint, "pg", &[("WALG_PG_WAL_SIZE", "1"), ("WALFETCH_MAX_RETRIES", "1")])
}

#[test]
fn sse_c_and_requester_pays_go_with_every_request() {
    let a = Archive::new();
    let data = fake_segment(SEG, 1 << 20, 7);
    a.put(&format!("wal_005/{SEG}.lz4"), &encode(Codec::Lz4, &data));
    let s3 = S3Server::start(a.s3_data());
    let proxy = FaultProxy::start(s3.port);
    let key = "0123456789abcdef0123456789abcdef";
    let mut env = env_for(&proxy.endpoint());
    env.push(("WALG_S3_SSE_C".into(), key.into()));
    env.push(("WALG_S3_REQUESTER_PAYS".into(), "true".into()));
    let dir = a.datadir(7, true);
    let out = walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap(), data);
    let seen = proxy.seen();
    let gets: Vec<_> = seen.iter().filter(|r| r.line.starts_with("GET") && r.line.contains(SEG)).collect();
    assert!(!gets.is_empty());
    // base64 of the key, and of its MD5 (md5sum of the 32 bytes, computed by the tool).
    let md5 = Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{key}' | openssl dgst -md5 -binary | base64"))
        .output()
        .unwrap();
    let md5 = String::from_utf8_lossy(&md5.stdout).trim().to_string();
    for r in &gets {
        assert_eq!(
            r.header("x-amz-server-side-encryption-customer-algorithm"),
            Some("AES256"),
            "{:?}",
            r.head
        );
        assert_eq!(
            r.header("x-amz-server-side-encryption-customer-key-md5"),
            Some(md5.as_str()),
            "{:?}",
            r.head
        );
        assert!(r.header("x-amz-server-side-encryption-customer-key").is_some());
        assert_eq!(r.header("x-amz-request-payer"), Some("requester"), "{:?}", r.head);
    }
    assert!(
        seen.iter()
            .filter(|r| r.line.contains("list-type=2"))
            .all(|r| r.header("x-amz-request-payer") == Some("requester")),
        "listings carry the requester-pays header too"
    );
    // A key that is not 32 bytes is a setting to fix, said at once.
    env.retain(|(k, _)| k != "WALG_S3_SSE_C");
    env.push(("WALG_S3_SSE_C".into(), "short".into()));
    let out = walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/OTHER"], &env);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("WALG_S3_SSE_C must be the 32-byte"), "{}", stderr(&out));
}

#[test]
fn an_endpoint_with_its_own_ca_is_trusted_through_the_bundle_only() {
    let a = Archive::new();
    let data = fake_segment(SEG, 1 << 20, 7);
    a.put(&format!("wal_005/{SEG}.lz4"), &encode(Codec::Lz4, &data));
    let s3 = S3Server::start(a.s3_data());
    let (mut socat, port, ca) = tls_terminator(&a.scratch, s3.port);
    let dir = a.datadir(7, true);
    let env = env_for(&format!("https://127.0.0.1:{port}"));

    // Without the bundle the certificate is not trusted: an error, never "absent".
    let out = walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &env);
    let code = out.status.code();
    assert!(code != Some(0) && code != Some(1), "exit {code:?}: {}", stderr(&out));
    assert!(!dir.join("pg_wal/RECOVERYXLOG").exists());

    let mut trusting = env.clone();
    trusting.push(("WALG_S3_CA_CERT_FILE".into(), ca.display().to_string()));
    let out = walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &trusting);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap(), data);

    // A file with no certificate in it is refused as a setting.
    let bad = a.scratch.path().join("not-a-bundle.pem");
    fs::write(&bad, "not a certificate\n").unwrap();
    give_to_postgres(&bad);
    let mut wrong = env.clone();
    wrong.push(("WALG_S3_CA_CERT_FILE".into(), bad.display().to_string()));
    let out = walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/OTHER"], &wrong);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no PEM certificate"), "{}", stderr(&out));
    let _ = socat.kill();
    let _ = socat.wait();
}
