//! When the credentials in use expire, for `status`, `wal-verify` and `check`.
//!
//! A provider's session credentials last about 36 hours; a standby whose credentials
//! lapse stops replaying (every wal-fetch fails, never "absent"). Monitors should hear of
//! it before: within a margin (default one hour, `--credentials-margin`,
//! `WALFETCH_CREDENTIALS_MARGIN`) the reports carry a distinct exit code,
//! [`exit::CREDENTIALS_EXPIRING`], when nothing worse is wrong.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::inspect::prometheus::Gauges;
use crate::storage::Storage;

/// When the credentials expire.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Expiry {
    /// The moment, RFC 3339 (UTC).
    pub expires_at: String,
    /// Seconds from now (negative: expired already).
    pub seconds_left: i64,
    /// Whether that is within the margin.
    pub within_margin: bool,
}

impl Expiry {
    /// The expiry at `at`, seen at `now` with `margin`.
    pub fn at(at: SystemTime, now: SystemTime, margin: Duration) -> Expiry {
        let seconds_left = match at.duration_since(now) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        Expiry {
            expires_at: DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Secs, true),
            seconds_left,
            within_margin: seconds_left < margin.as_secs() as i64,
        }
    }

    /// One line for people.
    pub fn line(&self) -> String {
        let left = self.seconds_left.unsigned_abs();
        let span = format!("{}h{:02}m", left / 3600, left % 3600 / 60);
        if self.seconds_left <= 0 {
            format!(
                "the credentials in use expired at {} ({span} ago): renew them (every wal-fetch fails until then)",
                self.expires_at
            )
        } else if self.within_margin {
            format!(
                "the credentials in use expire at {} (in {span}): renew them before then, or replay stops",
                self.expires_at
            )
        } else {
            format!("the credentials in use expire at {} (in {span})", self.expires_at)
        }
    }
}

/// When the credentials `storage` uses expire (`None`: they report no expiry, as
/// long-lived keys and directories do).
pub fn expiry(storage: &dyn Storage, margin: Duration) -> Result<Option<Expiry>> {
    Ok(storage.credentials_expiry()?.map(|at| Expiry::at(at, SystemTime::now(), margin)))
}

/// The Prometheus gauge for `e` (seconds left; absent expiry: no line), labelled `label`.
pub fn prometheus_gauge(e: Option<&Expiry>, label: &str) -> String {
    let mut gauges = Gauges::with_label(label);
    if let Some(e) = e {
        expiry_gauge(&mut gauges, e);
    }
    gauges.finish()
}

/// Adds the expiry gauge for `e` to `gauges`.
pub fn expiry_gauge(gauges: &mut Gauges, e: &Expiry) {
    gauges.gauge(
        "credentials_expiry_seconds",
        "Seconds until the credentials in use expire (negative: expired).",
        e.seconds_left,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants::CREDENTIALS_MARGIN;

    #[test]
    fn the_margin_decides_and_the_line_says_when() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let soon = Expiry::at(now + Duration::from_secs(1800), now, CREDENTIALS_MARGIN);
        assert!(soon.within_margin);
        assert_eq!(soon.seconds_left, 1800);
        assert!(soon.line().contains("(in 0h30m): renew them"), "{}", soon.line());
        let later = Expiry::at(now + Duration::from_secs(36 * 3600), now, CREDENTIALS_MARGIN);
        assert!(!later.within_margin);
        assert!(later.line().ends_with("(in 36h00m)"), "{}", later.line());
        let gone = Expiry::at(now - Duration::from_secs(120), now, CREDENTIALS_MARGIN);
        assert!(gone.within_margin && gone.seconds_left == -120);
        assert!(gone.line().contains("expired at"), "{}", gone.line());
        assert!(prometheus_gauge(Some(&soon), "archive=\"x\"").contains("walfetch_credentials_expiry_seconds{archive=\"x\"} 1800"));
        assert!(prometheus_gauge(None, "").is_empty());
    }
}
