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

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;

use super::wal_fetch::{fetch_into, find};
use crate::cli::absolute;
use crate::error::{Error, ErrorKind, Result};
use crate::pg::controldata;
use crate::pg::datadir::{pg_major, system_identifier};
use crate::spool::{FollowStatus, Spool};
use crate::storage::Storage;
use crate::wal::name::Segment;
use crate::wal::records::{check_continuation, OpenRecord};
use crate::wal::timeline::{chain, parse_history, Span};

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

/// The segment numbered `segno` as PostgreSQL will ask for it: on the newest timeline of
/// `chain` that began at or before it (and is not older than the standby's), as
/// PostgreSQL's own search across timelines goes.
fn owner(chain: &[Span], want: Segment, segno: u64, size: u64) -> Segment {
    let timeline = chain
        .iter()
        .rev()
        .filter(|s| s.timeline >= want.timeline)
        .find(|s| {
            Segment::containing(s.timeline, s.begin, size)
                .number(size)
                .is_some_and(|b| b <= segno)
        })
        .map_or(want.timeline, |s| s.timeline);
    Segment::from_number(timeline, segno, size)
}

/// The chain of the newest timeline after `from` that has a history file in the
/// archive, if there is one (unreadable histories end the search: PostgreSQL would stop
/// at them too).
fn newest_chain(storage: &dyn Storage, from: u32) -> Option<Vec<Span>> {
    let mut newest = None;
    let mut tli = from;
    while let Some(next) = tli.checked_add(1) {
        let name = format!("{next:08X}.history");
        let Ok((key, codec, raw)) = find(storage, &name) else { break };
        let mut text = String::new();
        if codec.decoder(raw, &key).read_to_string(&mut text).is_err() {
            break;
        }
        match parse_history(&text, &key) {
            Ok(records) => newest = Some(chain(next, &records)),
            Err(e) => {
                tracing::warn!(object = %key, cause = %e, "unreadable history file; not reading ahead past it");
                break;
            }
        }
        tli = next;
    }
    newest
}

/// What the fetcher keeps of a segment it downloaded, to check the next one's start.
struct Tail {
    /// The object read.
    url: String,
    /// Its last record, if that runs on into the next segment.
    open: Option<OpenRecord>,
}

/// For each ready segment of `window` whose predecessor this fetcher downloaded and left
/// with an open record: checks the record's CRC over both parts. A mismatch refuses the
/// segment (it leaves the spool, and wal-fetch stops recovery with the reason).
fn check_heads(spool: &Spool, window: &[Segment], size: u64, tails: &BTreeMap<Segment, Tail>, checked: &mut BTreeSet<Segment>) {
    for seg in window {
        if checked.contains(seg) || !spool.ready_path(seg).exists() {
            continue;
        }
        let Some(prev) = seg.number(size).and_then(|n| n.checked_sub(1)) else {
            continue;
        };
        let (Some(prev_tail), Some(own)) = (tails.get(&Segment::from_number(seg.timeline, prev, size)), tails.get(seg)) else {
            continue;
        };
        if let Some(open) = &prev_tail.open {
            if let Err(e) = check_head(spool, seg, &own.url, open) {
                tracing::error!(segment = %seg, object = %own.url, cause = %e, "segment refused: a record that began in the previous segment does not check out");
                if let Err(e2) = spool.refuse(seg, e.message()) {
                    tracing::error!(segment = %seg, cause = %e2, "could not record the refusal");
                }
                continue;
            }
        }
        checked.insert(*seg);
    }
}

/// Checks the continuation of `open` at the start of the ready segment `seg`.
fn check_head(spool: &Spool, seg: &Segment, url: &str, open: &OpenRecord) -> Result<()> {
    let path = spool.ready_path(seg);
    let file = std::fs::File::open(&path).map_err(|e| Error::local_io(path.display(), &e))?;
    // SAFETY: ready segments are complete files that are only ever renamed or removed, never written.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::local_io(path.display(), &e))?;
    check_continuation(&map, *seg, url, open)
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
        // Per segment this fetcher downloaded: its object and its last record if that runs
        // on into the next segment; and the segments whose first record part was checked.
        let mut tails: BTreeMap<Segment, Tail> = BTreeMap::new();
        let mut heads_checked: BTreeSet<Segment> = BTreeSet::new();
        // The newest timeline's chain, once the archive names one after the standby's own;
        // looked for at start and whenever the window runs into missing segments.
        let mut chain: Vec<Span> = Vec::new();
        let mut look_for_timelines = true;
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
            if look_for_timelines {
                let from = chain.last().map_or(want.timeline, |s| s.timeline.max(want.timeline));
                if let Some(newer) = newest_chain(storage.as_ref(), from) {
                    tracing::info!(
                        timeline = newer.last().map(|s| s.timeline),
                        "the archive has a newer timeline; reading ahead along it"
                    );
                    chain = newer;
                }
            }
            let window: Vec<Segment> = (0..ahead as u64)
                .filter_map(|i| want.number(size).map(|n| owner(&chain, want, n + i, size)))
                .collect();
            let results = self.fill(storage.as_ref(), &spool, &window, sysid);
            let outcomes: Vec<Outcome> = results.iter().map(|(o, _)| *o).collect();
            for (seg, (_, fetched)) in window.iter().zip(results) {
                if let Some(f) = fetched {
                    tails.insert(*seg, f);
                }
            }
            check_heads(&spool, &window, size, &tails, &mut heads_checked);
            if let Some(prev) = want.number(size).and_then(|n| n.checked_sub(1)) {
                let prev = Segment::from_number(want.timeline, prev, size);
                tails.retain(|s, _| *s >= prev);
                heads_checked.retain(|s| *s >= want);
            }

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
            look_for_timelines = first_absent.is_some();
            if waiting {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(self.max_poll.max(1)));
            } else {
                delay = Duration::from_millis(200);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Downloads the window's segments that are not ready yet, in parallel; returns each
    /// one's outcome, and what this call downloaded.
    fn fill(&self, storage: &dyn Storage, spool: &Spool, window: &[Segment], sysid: Option<u64>) -> Vec<(Outcome, Option<Tail>)> {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let handles: Vec<_> = window
                .iter()
                .map(|seg| {
                    let stop = &stop;
                    s.spawn(move || {
                        let ready = spool.ready_path(seg);
                        if ready.exists() {
                            return (Outcome::Ready, None);
                        }
                        if stop.load(Ordering::Relaxed) || spool.refused(seg).is_some() {
                            return (Outcome::Failed, None);
                        }
                        let tmp = spool.running_dir().join(format!("{seg}.{}", std::process::id()));
                        let started = Instant::now();
                        match fetch_into(storage, &seg.to_string(), &ready, &tmp, sysid) {
                            Ok(f) => {
                                tracing::debug!(object = %f.url, bytes = f.bytes, ms = started.elapsed().as_millis() as u64, "prefetched");
                                (Outcome::Ready, Some(Tail { url: f.url, open: f.open }))
                            }
                            Err(e) if e.kind() == ErrorKind::NotFound => (Outcome::Absent, None),
                            Err(e) => {
                                tracing::error!(segment = %seg, cause = %e, "prefetch failed; wal-fetch will fetch it directly and report the error");
                                if e.kind() != ErrorKind::Unreachable {
                                    stop.store(true, Ordering::Relaxed);
                                }
                                (Outcome::Failed, None)
                            }
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or((Outcome::Failed, None))).collect()
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
