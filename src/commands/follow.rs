//! `walfetch follow PGDATA`: the fetcher that keeps a standby fed.
//!
//! It keeps the next `--ahead` segments (from the one PostgreSQL asked for last, on its
//! timeline) downloaded, decoded and validated in the spool ([`crate::spool`]), so
//! `wal-fetch` only renames a ready file. When the segment the standby needs is missing
//! while later ones exist, it reports the gap at once, by name, in its log and in the
//! spool's status file (which `walfetch status` shows). At the archive head it polls with
//! backoff, so the standby follows the source until cut-over.
//!
//! It runs as a service (`--foreground`, see `docs/walfetch-follow@.service`) or on
//! demand: `wal-fetch` starts it detached when none runs, and it exits once PostgreSQL
//! has asked for nothing for `--idle-timeout` seconds. A lock in the spool keeps it to
//! one fetcher per data directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;

use super::wal_fetch::fetch_into;
use crate::cli::absolute;
use crate::error::{ErrorKind, Result};
use crate::pg::controldata;
use crate::pg::datadir::{pg_major, system_identifier};
use crate::spool::{FollowStatus, Spool};
use crate::storage::Storage;
use crate::wal::name::Segment;

/// Options of `follow`.
#[derive(Debug, Args)]
pub struct Follow {
    /// The standby's data directory.
    pub pgdata: PathBuf,
    /// Segments kept ready ahead of the standby [env: WALG_DOWNLOAD_CONCURRENCY; default: 8]
    #[arg(long)]
    pub ahead: Option<usize>,
    /// Run until stopped (for a service), instead of exiting when idle.
    #[arg(long)]
    pub foreground: bool,
    /// Exit after PostgreSQL has asked for nothing for this many seconds (on-demand mode) [env: WALFETCH_FOLLOW_IDLE]
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// Longest wait between two looks at the archive head, in seconds.
    #[arg(long, default_value_t = 5)]
    pub max_poll: u64,
}

/// What happened to one segment of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ready,
    Absent,
    Failed,
}

impl Follow {
    fn ahead(&self) -> usize {
        self.ahead
            .or_else(|| std::env::var("WALG_DOWNLOAD_CONCURRENCY").ok().and_then(|v| v.trim().parse().ok()))
            .filter(|n| *n > 0)
            .unwrap_or(8)
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(
            self.idle_timeout
                .or_else(|| std::env::var("WALFETCH_FOLLOW_IDLE").ok().and_then(|v| v.trim().parse().ok()))
                .unwrap_or(60),
        )
    }

    /// Follows until idle (or forever with `--foreground`).
    pub fn run(&self, storage: &Arc<dyn Storage>) -> Result<()> {
        let datadir = absolute(&self.pgdata);
        let spool = Spool::for_wal_dir(&datadir.join("pg_wal"));
        let Some(_lock) = spool.try_lock()? else {
            tracing::info!(spool = %spool.dir().display(), "a fetcher already runs for this data directory");
            return Ok(());
        };
        let sysid = system_identifier(&datadir).ok().flatten();
        let ahead = self.ahead();
        let started = SystemTime::now();
        tracing::info!(datadir = %datadir.display(), ahead, "fetcher started");
        let mut status = FollowStatus {
            pid: std::process::id(),
            ..Default::default()
        };
        let mut delay = Duration::from_millis(200);
        loop {
            let (want, asked_at) = match spool.requested() {
                Some(r) => r,
                None => (self.start_segment(&datadir)?, started),
            };
            if !self.foreground
                && asked_at.elapsed().unwrap_or_default() > self.idle_timeout()
                && started.elapsed().unwrap_or_default() > self.idle_timeout()
            {
                tracing::info!("PostgreSQL has asked for nothing recently; fetcher exits");
                return Ok(());
            }
            spool.remove_older_than(&want);
            let size = self.segment_size(&datadir);
            let window: Vec<Segment> = (0..ahead as u64)
                .filter_map(|i| want.number(size).map(|n| Segment::from_number(want.timeline, n + i, size)))
                .collect();
            let outcomes = self.fill(storage.as_ref(), &spool, &window, sysid);

            // A gap: the first missing segment of the window while a later one exists.
            let first_absent = outcomes.iter().position(|o| *o == Outcome::Absent);
            let later_present = first_absent.is_some_and(|i| outcomes[i + 1..].contains(&Outcome::Ready));
            let gap = first_absent.filter(|_| later_present).map(|i| window[i].to_string());
            if gap != status.gap {
                match &gap {
                    Some(g) => {
                        tracing::error!(segment = %g, archive = %storage.describe(), "gap in the archive: {g} is missing while later segments exist; the standby cannot pass it")
                    }
                    None if status.gap.is_some() => tracing::info!("the gap is filled"),
                    None => {}
                }
                status.gap_since = gap.as_ref().map(|_| chrono::Utc::now().to_rfc3339());
                status.gap = gap;
            }
            status.wanted = Some(want.to_string());
            status.ready = outcomes.iter().filter(|o| **o == Outcome::Ready).count() as u64;
            status.at_archive_head = first_absent.is_some() && !later_present;
            status.updated = chrono::Utc::now().to_rfc3339();
            let _ = spool.write_status(&status);

            // Poll with backoff while waiting at the head (or behind a gap); go on at once otherwise.
            let waiting = first_absent.is_some() || outcomes.contains(&Outcome::Failed);
            if waiting {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(self.max_poll.max(1)));
            } else {
                delay = Duration::from_millis(200);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Downloads the window's segments that are not ready yet, in parallel.
    fn fill(&self, storage: &dyn Storage, spool: &Spool, window: &[Segment], sysid: Option<u64>) -> Vec<Outcome> {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let handles: Vec<_> = window
                .iter()
                .map(|seg| {
                    let stop = &stop;
                    s.spawn(move || {
                        let ready = spool.ready_path(seg);
                        if ready.exists() {
                            return Outcome::Ready;
                        }
                        if stop.load(Ordering::Relaxed) {
                            return Outcome::Failed;
                        }
                        let tmp = spool.running_dir().join(format!("{seg}.{}", std::process::id()));
                        let started = Instant::now();
                        match fetch_into(storage, &seg.to_string(), &ready, &tmp, sysid) {
                            Ok((url, bytes)) => {
                                tracing::debug!(object = %url, bytes, ms = started.elapsed().as_millis() as u64, "prefetched");
                                Outcome::Ready
                            }
                            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Absent,
                            Err(e) => {
                                tracing::error!(segment = %seg, cause = %e, "prefetch failed; wal-fetch will fetch it directly and report the error");
                                if e.kind() != ErrorKind::Unreachable {
                                    stop.store(true, Ordering::Relaxed);
                                }
                                Outcome::Failed
                            }
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(Outcome::Failed)).collect()
        })
    }

    fn start_segment(&self, datadir: &std::path::Path) -> Result<Segment> {
        let control = controldata::read(datadir, pg_major(datadir)?)?;
        let (lsn, tli) = if control.min_recovery > control.redo {
            (control.min_recovery, control.min_recovery_timeline)
        } else {
            (control.redo, control.timeline)
        };
        Ok(Segment::containing(tli, lsn, control.segment_size))
    }

    fn segment_size(&self, datadir: &std::path::Path) -> u64 {
        std::env::var("WALG_PG_WAL_SIZE")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|mb| mb << 20)
            .or_else(|| {
                pg_major(datadir)
                    .ok()
                    .and_then(|v| controldata::read(datadir, v).ok())
                    .map(|c| c.segment_size)
            })
            .unwrap_or(crate::constants::DEFAULT_WAL_SEGMENT_SIZE)
    }
}
