//! Progress of a long restore: a bar on a terminal (bytes, rate, ETA, partitions), and a
//! one-line log every few seconds otherwise (cron, systemd, CI), from counters the
//! workers bump. The workers never print.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counters shared with the workers.
#[derive(Debug, Default)]
pub struct Counters {
    /// Compressed bytes read from storage.
    pub read: AtomicU64,
    /// Partitions finished.
    pub parts_done: AtomicU64,
}

/// A running reporter; stops when finished or dropped.
pub struct Reporter {
    /// Dropping it wakes the reporter at once (a sleeping reporter made every restore
    /// wait up to one tick, 100 ms on average, at its end).
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Seconds between log lines when not on a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Reporter {
    /// Starts reporting progress towards `total` compressed bytes in `parts` partitions.
    pub fn start(what: &str, counters: Arc<Counters>, total: u64, parts: u64) -> Reporter {
        let (stop, stopped) = channel::<()>();
        let what = what.to_string();
        let tty = std::io::stderr().is_terminal();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let bar = tty.then(|| {
                let bar = indicatif::ProgressBar::new(total);
                let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> ");
                bar.set_style(style);
                bar
            });
            let mut last_log = Instant::now();
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_millis(200)) {
                let read = counters.read.load(Ordering::Relaxed);
                let done = counters.parts_done.load(Ordering::Relaxed);
                match &bar {
                    Some(bar) => {
                        bar.set_position(read.min(total));
                        bar.set_message(format!("{what}: {done}/{parts} partitions"));
                    }
                    None if last_log.elapsed() >= LOG_EVERY => {
                        last_log = Instant::now();
                        let secs = started.elapsed().as_secs_f64().max(0.001);
                        let rate = read as f64 / secs;
                        let eta = if rate > 0.0 {
                            (total.saturating_sub(read)) as f64 / rate
                        } else {
                            f64::NAN
                        };
                        tracing::info!(
                            "{what}: {:.1} of {:.1} MiB compressed ({done}/{parts} partitions), {:.1} MiB/s, ETA {:.0}s",
                            read as f64 / 1048576.0,
                            total as f64 / 1048576.0,
                            rate / 1048576.0,
                            eta
                        );
                    }
                    None => {}
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        Reporter {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Progress of a count of like items (indexes checked): a bar on a terminal, a log line
/// every few seconds otherwise; stops when dropped.
pub struct Tally {
    reporter: Reporter,
    /// Items done so far; the workers bump it.
    pub done: Arc<AtomicU64>,
}

impl Tally {
    /// Starts counting towards `total` items, described as `what` ("checking indexes").
    pub fn start(what: &str, total: u64) -> Tally {
        let done = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = channel::<()>();
        let (what, seen) = (what.to_string(), Arc::clone(&done));
        let tty = std::io::stderr().is_terminal();
        let thread = std::thread::spawn(move || {
            let bar = tty.then(|| {
                let bar = indicatif::ProgressBar::new(total);
                let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ETA {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> ");
                bar.set_style(style);
                bar.set_message(what.clone());
                bar
            });
            let mut last_log = Instant::now();
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_millis(200)) {
                let n = seen.load(Ordering::Relaxed);
                match &bar {
                    Some(bar) => bar.set_position(n.min(total)),
                    None if last_log.elapsed() >= LOG_EVERY => {
                        last_log = Instant::now();
                        tracing::info!("{what}: {n} of {total}");
                    }
                    None => {}
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        Tally {
            reporter: Reporter {
                stop: Some(stop),
                thread: Some(thread),
            },
            done,
        }
    }

    /// Stops reporting.
    pub fn finish(self) {
        drop(self.reporter);
    }
}
