//! Can this machine use the archive? Lists and reads it, says when the credentials
//! expire (where the credential provider knows), and suggests the fix for the usual
//! mistakes: a wrong region, path-style addressing, an expired session token. The report
//! behind `walfetch check`.

use std::time::{Duration, SystemTime};

use crate::archive::Archive;
use crate::codec::Codec;
use crate::config::{Format, StorageSettings};
use crate::crypto::{self, Found, Keys};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::{BASEBACKUPS, SENTINEL_SUFFIX, WAL};
use crate::storage::Storage;
use crate::wal::name::WalFile;

/// A hint for a failure, from its kind, its message and the settings in use.
pub fn hint(err: &Error, settings: &StorageSettings) -> Option<String> {
    let m = err.message();
    match err.kind() {
        ErrorKind::Credentials if m.contains("ExpiredToken") || m.contains("expired") => {
            Some("the session token has expired: get new credentials (aws sso login, a new STS token) and retry".into())
        }
        // The access shapes (a missing s3:ListBucket, a KMS key) say what to ask for.
        ErrorKind::Credentials if m.contains("s3:ListBucket") || m.contains("kms:Decrypt") => None,
        ErrorKind::Credentials => Some("check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or AWS_PROFILE, and that the key may read this bucket".into()),
        ErrorKind::Config if m.contains("region") || m.contains("redirect") => {
            Some("set the bucket's region: --region or AWS_REGION (the provider tells you which)".into())
        }
        ErrorKind::Unreachable if settings.endpoint.is_some() && !settings.path_style => Some(
            "with a custom endpoint, virtual-host addressing needs DNS for <bucket>.<endpoint>: try --path-style (AWS_S3_FORCE_PATH_STYLE=true)".into(),
        ),
        ErrorKind::Unreachable => Some("check the network path to the endpoint (proxy, firewall, DNS)".into()),
        _ => None,
    }
}

/// Runs one step: on failure, says so with a hint and returns the error.
fn step<T>(label: &str, settings: &StorageSettings, say: &mut dyn FnMut(&str), f: impl FnOnce() -> Result<T>) -> Result<T> {
    f().inspect_err(|e| {
        say(&format!("FAIL  {label}: {e}"));
        if let Some(h) = hint(e, settings) {
            say(&format!("      hint: {h}"));
        }
    })
}

/// Runs the checks, saying each result as one line; the error of the first failing
/// one is returned (and decides the exit code).
pub fn check(archive: &dyn Archive, settings: &StorageSettings, expiry_warning: Duration, say: &mut dyn FnMut(&str)) -> Result<()> {
    if archive.format() != Format::WalG {
        return check_through_interface(archive, settings, expiry_warning, say);
    }
    let storage = archive.storage().as_ref();
    say(&format!("archive: {}", storage.describe()));
    let sentinels = step(&format!("list {BASEBACKUPS}"), settings, say, || {
        let all = storage.list_all(BASEBACKUPS, false)?;
        Ok(all.into_iter().filter(|o| o.key.ends_with(SENTINEL_SUFFIX)).collect::<Vec<_>>())
    })?;
    say(&format!("ok    list {BASEBACKUPS}: {} complete backups", sentinels.len()));
    if let Some(newest) = sentinels.iter().max_by_key(|o| o.modified) {
        step(&format!("read {}", newest.key), settings, say, || {
            let mut r = storage.open(&newest.key)?;
            std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| Error::local_io(&newest.key, &e))?;
            Ok(())
        })?;
        say(&format!("ok    read {}", newest.key));
    }
    let mut wal_objects = 0usize;
    let mut newest_segment = None;
    step(&format!("list {WAL}"), settings, say, || {
        storage.list(&format!("{WAL}0"), false, &mut |page| {
            wal_objects += page.len();
            let name = |k: &str| Codec::split(k.strip_prefix(WAL).unwrap_or(k)).0.to_string();
            if let Some(last) = page
                .iter()
                .rev()
                .find(|o| matches!(WalFile::parse(&name(&o.key)), Some(WalFile::Segment(_))))
            {
                newest_segment = Some(last.key.clone());
            }
            Ok(())
        })
    })?;
    say(&format!("ok    list {WAL}: {wal_objects} objects"));
    if sentinels.is_empty() {
        // A standby restored some other way can live on WAL alone: said, not failed.
        say(&format!(
            "WARN  base backup: {}",
            crate::layout::wal_inventory::no_backup(&archive.objects(), 8)
        ));
    }
    if let Some(key) = &newest_segment {
        let line = step("encryption", settings, say, || encryption(storage, archive.keys(), key))?;
        say(&format!("ok    encryption: {line}"));
    }
    credentials(storage, settings, expiry_warning, say)?;
    say("verdict: OK");
    Ok(())
}

/// The checks of a pgBackRest repository: its info files (decrypted when it is
/// encrypted), its WAL, the newest segment read whole (its SHA-1 checked).
/// `check` of a pgBackRest repository or a barman-cloud server: through the archive
/// interface, as every command reads them.
fn check_through_interface(
    archive: &dyn Archive,
    settings: &StorageSettings,
    expiry_warning: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<()> {
    say(&format!("archive: {}", archive.describe()));
    let backups = step("read the backups' backup.info", settings, say, || archive.backups(8))?;
    say(&format!(
        "ok    read the backups' backup.info: {} complete backups{}",
        backups.len(),
        backups.last().map(|b| format!(", newest {}", b.name.name)).unwrap_or_default()
    ));
    let (inv, size) = step("list the WAL archive", settings, say, || archive.wal_inventory(None, 8))?;
    say(&format!("ok    list {}: {} objects", archive.wal_folder(), inv.objects));
    if backups.is_empty() {
        say(&format!("WARN  base backup: {}", archive.no_backup(8)));
    }
    if let Some((_, newest)) = inv.span(size) {
        let name = newest.to_string();
        step(&format!("read {name}"), settings, say, || {
            let mut wal = archive.open_wal(&name)?;
            std::io::copy(&mut wal.reader, &mut std::io::sink()).map_err(|e| crate::archive::timelines::read_error(&e, &wal.url))?;
            Ok(())
        })?;
        let how = match (archive.format(), settings.format.cipher_pass.is_some()) {
            (Format::PgBackRest, true) => "encrypted (aes-256-cbc), the passphrase opens it, its SHA-1 as its name records",
            (Format::PgBackRest, false) => "not encrypted, its SHA-1 as its name records",
            _ => "decoded whole (barman-cloud encrypts only server-side)",
        };
        say(&format!("ok    read {name}: {how}"));
    }
    credentials(archive.storage().as_ref(), settings, expiry_warning, say)?;
    say("verdict: OK");
    Ok(())
}

/// Says when the credentials in use expire.
fn credentials(storage: &dyn Storage, settings: &StorageSettings, expiry_warning: Duration, say: &mut dyn FnMut(&str)) -> Result<()> {
    match step("load credentials", settings, say, || storage.credentials_expiry())? {
        None => say("ok    credentials: no expiry reported"),
        Some(at) => {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            let mins = left.as_secs() / 60;
            if left < expiry_warning {
                say(&format!("WARN  credentials expire in {mins} min: refresh them before a long restore (a restore_command running after expiry fails)"));
            } else {
                say(&format!("ok    credentials expire in {}h{:02}m", mins / 60, mins % 60));
            }
        }
    }
    Ok(())
}

/// Samples `key` (its first chunk): the line to say when it can be read with the keys
/// set, the error otherwise.
fn encryption(storage: &dyn Storage, keys: &Keys, key: &str) -> Result<String> {
    let url = format!("{}/{key}", storage.describe());
    let keyed = keys.any();
    match crypto::sample(storage.open(key)?, Codec::split(key).1, keys, &url)? {
        Found::Sealed { key_set: false } => Err(Error::new(
            ErrorKind::Config,
            format!(
                "{url} looks encrypted and no {}key is set: set WALG_LIBSODIUM_KEY or WALG_LIBSODIUM_KEY_PATH (and WALG_LIBSODIUM_KEY_TRANSFORM)",
                if keyed { "libsodium " } else { "" }
            ),
        )),
        Found::Sealed { key_set: true } => Err(Error::new(
            ErrorKind::Corrupt,
            format!("{url} looks encrypted, and the libsodium key set does not open it (another key, or another transform?)"),
        )),
        Found::OpenPgp => Err(Error::new(
            ErrorKind::Config,
            format!("{url} is OpenPGP-encrypted and no OpenPGP key is set: set WALG_PGP_KEY_PATH (or WALG_PGP_KEY, with WALG_PGP_KEY_PASSPHRASE), or WALE_GPG_KEY_ID to use gpg's key ring"),
        )),
        Found::OpenPgpRefused(why) => Err(Error::new(ErrorKind::Corrupt, format!("the OpenPGP key set does not open it: {why}"))),
        Found::Opened(how) => Ok(format!("{key} is encrypted ({how}) and the key opens it")),
        Found::Unknown => Ok(format!(
            "{key}: cannot tell whether it is encrypted (its compression has no signature){}",
            if keyed { ", and the key does not open it" } else { "" }
        )),
        _ if keyed => Ok(format!(
            "{key} is plaintext (a key is set: encrypted objects are decrypted, plaintext ones read as they are)"
        )),
        _ => Ok(format!("{key} is plaintext")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::settings::Location;

    #[test]
    fn hints_for_the_usual_mistakes() {
        let mut s = StorageSettings::at(Location::S3 {
            bucket: "b".into(),
            prefix: "p".into(),
        });
        s.endpoint = Some("http://minio:9000".into());
        let h = |kind, msg: &str| hint(&Error::new(kind, msg), &s).unwrap_or_default();
        assert!(h(ErrorKind::Credentials, "credentials rejected (ExpiredToken: x)").contains("expired"));
        assert!(h(ErrorKind::Config, "bucket b is in another region").contains("region"));
        assert!(h(ErrorKind::Unreachable, "cannot reach storage (dns error)").contains("--path-style"));
    }
}
