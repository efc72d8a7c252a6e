//! Can this machine use the archive? Lists and reads it, says when the credentials
//! expire (where the credential provider knows), and suggests the fix for the usual
//! mistakes: a wrong region, path-style addressing, an expired session token. The report
//! behind `walfetch check`.

use std::time::{Duration, SystemTime};

use crate::config::StorageSettings;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::{BASEBACKUPS, SENTINEL_SUFFIX, WAL};
use crate::storage::Storage;

/// A hint for a failure, from its kind, its message and the settings in use.
pub fn hint(err: &Error, settings: &StorageSettings) -> Option<String> {
    let m = err.message();
    match err.kind() {
        ErrorKind::Credentials if m.contains("ExpiredToken") || m.contains("expired") => {
            Some("the session token has expired: get new credentials (aws sso login, a new STS token) and retry".into())
        }
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
pub fn check(storage: &dyn Storage, settings: &StorageSettings, expiry_warning: Duration, say: &mut dyn FnMut(&str)) -> Result<()> {
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
    step(&format!("list {WAL}"), settings, say, || {
        storage.list(&format!("{WAL}0"), false, &mut |page| {
            wal_objects += page.len();
            Ok(())
        })
    })?;
    say(&format!("ok    list {WAL}: {wal_objects} objects"));
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
    say("verdict: OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Location;

    #[test]
    fn hints_for_the_usual_mistakes() {
        let s = StorageSettings {
            location: Location::S3 {
                bucket: "b".into(),
                prefix: "p".into(),
            },
            endpoint: Some("http://minio:9000".into()),
            region: None,
            path_style: false,
            tuning: Default::default(),
            keys: Default::default(),
        };
        let h = |kind, msg: &str| hint(&Error::new(kind, msg), &s).unwrap_or_default();
        assert!(h(ErrorKind::Credentials, "credentials rejected (ExpiredToken: x)").contains("expired"));
        assert!(h(ErrorKind::Config, "bucket b is in another region").contains("region"));
        assert!(h(ErrorKind::Unreachable, "cannot reach storage (dns error)").contains("--path-style"));
    }
}
