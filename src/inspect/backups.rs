//! The table `walfetch backup-list` prints.

use std::fmt::Write as _;

use crate::layout::backup::BackupSummary;

/// A size for people: KiB, MiB or GiB with one decimal, `-` when unknown.
pub fn human_size(bytes: Option<u64>) -> String {
    match bytes {
        None => "-".into(),
        Some(b) if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        Some(b) => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

/// The backups as a table, oldest first (the last row is what LATEST means).
pub fn render_table(rows: &[BackupSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:>3} {:<14} {:<14} {:<28} {:>7} {:>11} {:>11}  {:<5} parent",
        "name", "tli", "start_lsn", "finish_lsn", "finish_time", "pg", "size", "compressed", "kind"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<32} {:>3} {:<14} {:<14} {:<28} {:>7} {:>11} {:>11}  {:<5} {}",
            r.name,
            r.timeline,
            r.start_lsn.as_deref().unwrap_or("-"),
            r.finish_lsn.as_deref().unwrap_or("-"),
            r.finish_time.as_deref().unwrap_or("-"),
            r.pg_version.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            human_size(r.uncompressed_size),
            human_size(r.compressed_size),
            r.kind,
            r.delta_from.as_deref().unwrap_or("-"),
        );
    }
    out
}
