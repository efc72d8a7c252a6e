//! OpenPGP-encrypted archives: written by WAL-E 1.1.1 with `WALE_GPG_KEY_ID` (its own gpg
//! pipeline), and encrypted as wal-g's PGP mode does (compressed, then one binary
//! OpenPGP message to the key, names unchanged, JSON files plaintext); restored and
//! replayed by walfetch with gpg's key ring and with the key as a file. Also the errors
//! for a missing key, another key, a wrong passphrase and a damaged object, and
//! walfetch's own OpenPGP writer, read back by gpg.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;

const TABLES: &[(&str, &str)] = &[
    ("pgbench_accounts", "aid"),
    ("pgbench_history", "tid, bid, aid, delta, mtime"),
    ("after_backup", "g"),
];

/// A GnuPG home owned by postgres (who runs WAL-E, walfetch and the servers).
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn new(scratch: &Scratch, name: &str) -> Gpg {
        let home = scratch.dir(name);
        give_to_postgres(&home);
        let out = as_postgres("chmod").arg("700").arg(&home).output().unwrap();
        assert!(out.status.success());
        Gpg { home }
    }

    fn env(&self) -> (String, String) {
        ("GNUPGHOME".to_string(), self.home.display().to_string())
    }

    fn gpg(&self, args: &[&str]) -> Output {
        as_postgres("gpg")
            .env("GNUPGHOME", &self.home)
            .args(["--batch", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.gpg(args);
        assert!(out.status.success(), "gpg {args:?}: {}", stderr(&out));
        out.stdout
    }

    /// Makes a key and returns its fingerprint: RSA with an RSA encryption subkey
    /// (`rsa`), or ed25519 with a cv25519 subkey, under `passphrase` ("" for none).
    fn make_key(&self, uid: &str, rsa: bool, passphrase: &str) -> String {
        let algo = if rsa { "rsa2048" } else { "ed25519" };
        self.ok(&["--passphrase", passphrase, "--quick-gen-key", uid, algo, "sign,cert", "never"]);
        let colons = String::from_utf8(self.ok(&["--with-colons", "--list-keys", uid])).unwrap();
        let fpr = colons
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string();
        let sub = if rsa { "rsa2048" } else { "cv25519" };
        self.ok(&["--passphrase", passphrase, "--quick-add-key", &fpr, sub, "encr", "never"]);
        fpr
    }

    /// The secret key, armored, in a file postgres can read.
    fn export_secret(&self, fpr: &str, passphrase: &str, path: &Path) -> String {
        let key = self.ok(&["--passphrase", passphrase, "--armor", "--export-secret-keys", fpr]);
        fs::write(path, &key).unwrap();
        give_to_postgres(path);
        String::from_utf8(key).unwrap()
    }

    /// Replaces `path` with a binary OpenPGP message of it to `fpr`, uncompressed, as
    /// wal-g's PGP mode (and WAL-E) writes.
    fn encrypt_in_place(&self, path: &Path, fpr: &str) {
        let sealed = self.ok(&[
            "--trust-model",
            "always",
            "-z",
            "0",
            "--encrypt",
            "-r",
            fpr,
            "--output",
            "-",
            path.to_str().unwrap(),
        ]);
        fs::write(path, sealed).unwrap();
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = as_postgres("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

/// Files under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Whether a file's first bytes are an OpenPGP public-key encrypted session key packet.
fn is_openpgp(path: &Path) -> bool {
    let bytes = fs::read(path).unwrap();
    bytes
        .first()
        .is_some_and(|b| b & 0x80 != 0 && (b & 0x40 == 0 && (b >> 2) & 0x0F == 1 || b & 0x3F == 1))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A primary archived by `writer` (walrus or walfetch) with `env`: a base backup of
/// pgbench scale 1, then 200 transactions and a table `after_backup`, archived through.
/// Returns the last LSN and the digests of [`TABLES`]; the primary is stopped.
fn archived_source(scratch: &Scratch, writer: &Path, env: &[(String, String)]) -> (String, Vec<String>) {
    let mut primary = Cluster::archiving(scratch, "primary", writer, env, &[]);
    primary.pgbench(&["-i", "-s", "1", "-q"]);
    primary.backup_push(writer, env);
    primary.pgbench(&["-n", "-t", "200", "-c", "2"]);
    primary.sql("CREATE TABLE after_backup AS SELECT g FROM generate_series(1, 10000) g");
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    let expected = TABLES.iter().map(|(t, o)| primary.table_digest(t, o)).collect();
    primary.stop();
    (lsn, expected)
}

/// Restores LATEST as a standby with `env`, starts it with `server_env` (what its
/// restore_command needs) and compares the tables with `expected`.
fn restore_and_replay(
    scratch: &Scratch,
    name: &str,
    env: &[(String, String)],
    server_env: Vec<(String, String)>,
    lsn: &str,
    expected: &[String],
) {
    let restored = scratch.path().join(name);
    let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST", "--standby"], env);
    assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
    let mut standby = Cluster::attach(scratch, name, restored);
    standby.env = server_env;
    standby.start();
    standby.wait_replayed(lsn);
    let actual: Vec<String> = TABLES.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
    assert_eq!(actual, expected, "{name}: the standby's data differs from the primary's");
    assert!(standby.log_text().contains("restored log file"), "{name}: nothing replayed");
    standby.stop();
}

#[test]
fn wale_gpg_archive_restores_with_the_key_ring_and_with_the_key_file() {
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = S3Server::start(s3data.clone());
    let gpg = Gpg::new(&scratch, "gnupg");
    let fpr = gpg.make_key("WAL-E archiver <wale@example.test>", true, "");
    let wale_env = vec![
        ("WALE_S3_PREFIX".to_string(), format!("s3://{BUCKET}/wale")),
        ("WALE_S3_ENDPOINT".to_string(), format!("http+path://127.0.0.1:{}", s3.port)),
        ("AWS_ACCESS_KEY_ID".to_string(), ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), SECRET_KEY.to_string()),
        ("WALE_GPG_KEY_ID".to_string(), fpr.clone()),
        gpg.env(),
    ];
    let (lsn, expected) = wale_archive(&scratch, &wale_env, TABLES);

    let root = s3data.join(BUCKET).join("wale");
    let lzo: Vec<PathBuf> = files(&root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "lzo"))
        .collect();
    assert!(lzo.len() > 3, "WAL-E wrote {} .lzo objects", lzo.len());
    assert!(lzo.iter().all(|p| is_openpgp(p)), "WAL-E encrypts every .lzo object");

    // Without a key: exit 3, naming the settings.
    let plain: Vec<(String, String)> = wale_env.iter().filter(|(k, _)| k != "WALE_GPG_KEY_ID").cloned().collect();
    let out = walfetch(&["backup-fetch", scratch.path().join("nokey").to_str().unwrap(), "LATEST"], &plain);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is OpenPGP-encrypted; set WALG_PGP_KEY_PATH"),
        "{}",
        stderr(&out)
    );

    // The key ring, through gpg, as WAL-E reads it (from S3).
    let ring_server: Vec<(String, String)> = wale_env
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_") || k == "WALE_GPG_KEY_ID" || k == "GNUPGHOME")
        .cloned()
        .collect();
    restore_and_replay(&scratch, "standby-ring", &wale_env, ring_server, &lsn, &expected);

    // The key as a file, read in process (from a directory copy of the bucket).
    let key_file = scratch.path().join("wale-secret.asc");
    gpg.export_secret(&fpr, "", &key_file);
    let file_env = vec![
        ("WALE_FILE_PREFIX".to_string(), format!("file://localhost{}", root.display())),
        ("WALG_PGP_KEY_PATH".to_string(), key_file.display().to_string()),
    ];
    let out = walfetch(&["check"], &file_env);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("is encrypted (OpenPGP) and the key opens it"),
        "{}",
        stdout(&out)
    );
    let file_server = vec![file_env[1].clone()];
    restore_and_replay(&scratch, "standby-file", &file_env, file_server, &lsn, &expected);
}

#[test]
fn walg_pgp_mode_objects_restore_with_the_key_file_and_errors_say_why() {
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = S3Server::start(s3data.clone());
    let gpg = Gpg::new(&scratch, "gnupg");
    let passphrase = "a passphrase, as wal-g's WALG_PGP_KEY_PASSPHRASE";
    let fpr = gpg.make_key("wal-g archiver <walg@example.test>", false, passphrase);
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    env.push(("WALG_COMPRESSION_METHOD".into(), "lz4".into()));

    // walrus writes the archive; then every object but the JSON files is encrypted as
    // wal-g's PGP mode writes it, except two old WAL segments left plaintext (a mixed
    // bucket, as wal-g builds that silently skipped encryption left).
    let (lsn, expected) = archived_source(&scratch, walrus_bin(), &env);
    let root = s3data.join(BUCKET).join("pg");
    let wal: Vec<PathBuf> = files(&root.join("wal_005"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "lz4"))
        .collect();
    assert!(wal.len() >= 4, "{} WAL objects", wal.len());
    let mut sealed = 0;
    for p in files(&root) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".json") || wal[..2].contains(&p) || name.starts_with(".") {
            continue;
        }
        gpg.encrypt_in_place(&p, &fpr);
        sealed += 1;
    }
    assert!(sealed > 4, "{sealed} objects encrypted");

    let key_file = scratch.path().join("walg-secret.asc");
    let armored = gpg.export_secret(&fpr, passphrase, &key_file);
    let mut keyed = env.clone();
    keyed.push(("WALG_PGP_KEY_PATH".into(), key_file.display().to_string()));
    keyed.push(("WALG_PGP_KEY_PASSPHRASE".into(), passphrase.into()));

    // Missing key: exit 3 naming the settings, in check and in a restore.
    let out = walfetch(&["check"], &env);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("OpenPGP-encrypted and no OpenPGP key is set"),
        "{}",
        stdout(&out)
    );
    let out = walfetch(&["backup-fetch", scratch.path().join("nokey").to_str().unwrap(), "LATEST"], &env);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("set WALG_PGP_KEY_PATH"), "{}", stderr(&out));

    // A wrong passphrase is a setting to fix (3), said before any object is read.
    let mut bad_pass = env.clone();
    bad_pass.push(("WALG_PGP_KEY_PATH".into(), key_file.display().to_string()));
    bad_pass.push(("WALG_PGP_KEY_PASSPHRASE".into(), "not it".into()));
    let out = walfetch(&["check"], &bad_pass);
    assert_eq!(out.status.code(), Some(3), "{}{}", stdout(&out), stderr(&out));
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("WALG_PGP_KEY_PASSPHRASE does not unlock it"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // Another key: exit 7, "decryption failed: wrong key or damaged object".
    let other = Gpg::new(&scratch, "gnupg-other");
    let other_fpr = other.make_key("someone else <else@example.test>", false, "");
    let other_file = scratch.path().join("other-secret.asc");
    other.export_secret(&other_fpr, "", &other_file);
    let mut wrong = env.clone();
    wrong.push(("WALG_PGP_KEY_PATH".into(), other_file.display().to_string()));
    let t = scratch.path().join("wrong");
    let out = walfetch(&["backup-fetch", t.to_str().unwrap(), "LATEST"], &wrong);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("decryption failed: wrong key or damaged object"),
        "{}",
        stderr(&out)
    );
    let newest = wal.last().unwrap();
    let seg = newest.file_name().unwrap().to_string_lossy().trim_end_matches(".lz4").to_string();
    let dest = scratch.path().join("fetched");
    // (Outside a standby's pg_wal, wal-fetch serves archive recovery: an error is fatal,
    // 135, so PostgreSQL stops rather than promotes; never 1, "absent".)
    let out = walfetch(&["wal-fetch", &seg, dest.to_str().unwrap()], &wrong);
    assert_eq!(out.status.code(), Some(135), "wal-fetch with another key: {}", stderr(&out));
    assert!(
        stderr(&out).contains("decryption failed: wrong key or damaged object"),
        "{}",
        stderr(&out)
    );
    assert!(!dest.exists(), "nothing is left at the destination");

    // A damaged object (one byte flipped in the middle of the ciphertext): exit 7, and
    // no file where PostgreSQL would read it; the intact archive still reads.
    let original = fs::read(newest).unwrap();
    let mut damaged = original.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x40;
    fs::write(newest, &damaged).unwrap();
    let out = walfetch(&["wal-fetch", &seg, dest.to_str().unwrap()], &keyed);
    assert_eq!(out.status.code(), Some(135), "wal-fetch of a damaged object: {}", stderr(&out));
    assert!(stderr(&out).contains(&seg), "the error names the object: {}", stderr(&out));
    assert!(
        stderr(&out).contains("decryption failed: wrong key or damaged object"),
        "the damage is named as such, not as a decompression error: {}",
        stderr(&out)
    );
    assert!(!dest.exists(), "nothing is left at the destination");
    fs::write(newest, &original).unwrap();
    let out = walfetch(&["wal-fetch", &seg, dest.to_str().unwrap()], &keyed);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::metadata(&dest).unwrap().len(), 16 << 20);

    // check with the key given inline, as wal-g reads WALG_PGP_KEY (literal \n for newlines).
    let mut inline = env.clone();
    inline.push(("WALG_PGP_KEY".into(), armored.replace('\n', "\\n")));
    inline.push(("WALG_PGP_KEY_PASSPHRASE".into(), passphrase.into()));
    let out = walfetch(&["check"], &inline);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("is encrypted (OpenPGP) and the key opens it"),
        "{}",
        stdout(&out)
    );

    let server: Vec<(String, String)> = keyed
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("WALG_PGP"))
        .cloned()
        .collect();
    restore_and_replay(&scratch, "standby", &keyed, server, &lsn, &expected);
}

#[test]
fn walfetch_writes_openpgp_that_gpg_and_walfetch_read() {
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = S3Server::start(s3data.clone());
    let gpg = Gpg::new(&scratch, "gnupg");
    let fpr = gpg.make_key("walfetch archiver <walfetch@example.test>", true, "");
    // The writer holds only the public key; the reader the secret one.
    let public = scratch.path().join("public.asc");
    fs::write(&public, gpg.ok(&["--armor", "--export", &fpr])).unwrap();
    give_to_postgres(&public);
    let secret = scratch.path().join("secret.asc");
    gpg.export_secret(&fpr, "", &secret);
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let mut writer = env.clone();
    writer.push(("WALG_PGP_KEY_PATH".into(), public.display().to_string()));
    let mut reader = env.clone();
    reader.push(("WALG_PGP_KEY_PATH".into(), secret.display().to_string()));

    let (lsn, expected) = archived_source(&scratch, walfetch_bin(), &writer);

    let root = s3data.join(BUCKET).join("pg");
    let objects = files(&root);
    let data: Vec<&PathBuf> = objects
        .iter()
        .filter(|p| !p.to_string_lossy().ends_with(".json") && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        data.len() > 4 && data.iter().all(|p| is_openpgp(p)),
        "walfetch encrypts every data object"
    );
    assert!(
        objects
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".json"))
            .all(|p| fs::read(p).unwrap().starts_with(b"{")),
        "JSON files stay plaintext"
    );
    // gpg reads what walfetch wrote: a zstd or lz4 stream comes out, whole.
    let out = gpg.gpg(&["--decrypt", data[0].to_str().unwrap()]);
    assert!(out.status.success(), "gpg --decrypt: {}", stderr(&out));
    assert!(out.stdout.len() > 16, "gpg decrypted {} bytes", out.stdout.len());

    let out = walfetch(
        &["backup-fetch", scratch.path().join("public-only").to_str().unwrap(), "LATEST"],
        &writer,
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds a public key only"), "{}", stderr(&out));
    let server: Vec<(String, String)> = reader
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("WALG_PGP"))
        .cloned()
        .collect();
    restore_and_replay(&scratch, "standby", &reader, server, &lsn, &expected);
}

/// The unhappy paths of an OpenPGP object's bytes, for both ways of decrypting (the
/// key as a file, in process; the key ring, through gpg): a body cut once is resumed
/// and the segment restored whole; a body cut every time, or an answer from something
/// that is not S3, is a storage error, never "absent" (1) and never "decryption failed"
/// (which would send the user after their key).
#[test]
fn openpgp_objects_whose_bytes_fail_are_storage_errors_never_absent_nor_a_wrong_key() {
    use crate::common::archive::{encode, Archive};
    use crate::common::proxy::{Fault, FaultProxy};
    use walfetch::codec::Codec;

    let a = Archive::new();
    let gpg = Gpg::new(&a.scratch, "gnupg");
    let fpr = gpg.make_key("cut archiver <cut@example.test>", false, "");
    let secret = a.scratch.path().join("secret.asc");
    gpg.export_secret(&fpr, "", &secret);
    let seg = "000000010000000000000005";
    let data = fake_segment(seg, 1 << 20, 7);
    // Incompressible pages, so the object is large enough to cut in the middle.
    a.put(&format!("wal_005/{seg}.lz4"), &encode(Codec::Lz4, &data));
    let object = a.scratch.path().join(format!("s3/{BUCKET}/pg/wal_005/{seg}.lz4"));
    gpg.encrypt_in_place(&object, &fpr);
    let half = fs::metadata(&object).unwrap().len() as usize / 2;
    assert!(half > 1000, "an object of {} bytes", 2 * half);
    let s3 = S3Server::start(a.s3_data());
    let proxy = FaultProxy::start(s3.port);
    let extra = [("WALG_PG_WAL_SIZE", "1"), ("WALFETCH_MAX_RETRIES", "1")];
    let base = s3_archive_env(&proxy.endpoint(), "pg", &extra);
    let dir = a.datadir(7, true);
    let dest = dir.join("pg_wal/RECOVERYXLOG");
    let key_file = [("WALG_PGP_KEY_PATH".to_string(), secret.display().to_string())];
    let key_ring = [("WALE_GPG_KEY_ID".to_string(), fpr.clone()), gpg.env()];
    for (how, keys) in [("key file", &key_file[..]), ("key ring", &key_ring[..])] {
        let mut env = base.clone();
        env.extend(keys.iter().cloned());
        let fetch = || walfetch_in(Some(&dir), &["wal-fetch", seg, "pg_wal/RECOVERYXLOG"], &env);

        proxy.inject(&format!("{seg}.lz4"), Fault::ResetAfter(half), 1);
        let out = fetch();
        assert_eq!(out.status.code(), Some(0), "{how}: a body cut once is resumed: {}", stderr(&out));
        assert_eq!(fs::read(&dest).unwrap(), data, "{how}: the segment, whole");
        fs::remove_file(&dest).unwrap();

        for (what, fault) in [
            ("a body cut every time, before any byte", Fault::ResetAfter(0)),
            ("a bare 404 from a proxy", Fault::Answer(404, None, "")),
            (
                "an HTML 404",
                Fault::Answer(404, Some("text/html"), "<html><body>Not Found</body></html>"),
            ),
        ] {
            proxy.clear();
            proxy.inject(&format!("{seg}.lz4"), fault, 100);
            let out = fetch();
            let code = out.status.code();
            assert!(code != Some(0) && code != Some(1), "{how}, {what}: exit {code:?}: {}", stderr(&out));
            assert!(
                !stderr(&out).contains("decryption failed"),
                "{how}, {what}: taken for a wrong key: {}",
                stderr(&out)
            );
            assert!(!dest.exists(), "{how}, {what}: nothing where PostgreSQL reads");
        }
        // Cut in the middle of the message, and the resumed request refused every time:
        // the OpenPGP reader meets the failure mid-stream, and reports it as storage's.
        proxy.clear();
        proxy.inject(&format!("{seg}.lz4"), Fault::ResetAfter(half), 1);
        proxy.inject(&format!("{seg}.lz4|bytes={half}-"), Fault::Status(503, "SlowDown"), 100);
        let out = fetch();
        let code = out.status.code();
        assert!(
            code != Some(0) && code != Some(1),
            "{how}, cut mid-message: exit {code:?}: {}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("decryption failed") && stderr(&out).contains("503"),
            "{how}, cut mid-message: {}",
            stderr(&out)
        );
        assert!(
            proxy
                .seen()
                .iter()
                .any(|r| r.range.as_deref().is_some_and(|g| g.starts_with(&format!("bytes={half}-")))),
            "{how}: the failure came after the message began"
        );
        assert!(!dest.exists(), "{how}, cut mid-message: nothing where PostgreSQL reads");
        proxy.clear();
    }
}
