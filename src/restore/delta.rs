//! Delta backups: which layer of a chain each file comes from.
//!
//! A chain is restored oldest first (the full backup, then each delta), as wal-g does by
//! default, into the same directory. The newest backup's `files_metadata.json` says what
//! the result holds: a file it includes whole comes from it; a file it marks
//! `IsIncremented` is its parent's with this backup's changed pages applied (`wi1`); a
//! file it marks `IsSkipped` is its parent's unchanged; a file it does not list was
//! deleted and is never written. So a layer restores only the files every newer layer
//! marks skipped or incremented (and, of those, applies its own increments), and the
//! files only the newest backup may carry (`global/pg_control`, `backup_label`,
//! `tablespace_map`) come from it alone. Memory: one set of names per layer, never a
//! file's contents.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, ErrorKind, Result};
use crate::layout::files_metadata;
use crate::layout::increment;
use crate::layout::plan::RestorePlan;
use crate::storage::Storage;

/// What to do with one file member of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Not needed from this layer (a newer one has it, or it was deleted).
    Skip,
    /// Write it whole.
    Whole,
    /// Apply it, a `wi1` increment, to the file a lower layer restored.
    Increment,
    /// Leave an empty file of its size: it belongs to a database `--restore-only` leaves
    /// out.
    Placeholder,
}

/// Flags of one file in a layer's `files_metadata.json`.
#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    incremented: bool,
    skipped: bool,
}

/// One layer of a chain restore.
#[derive(Debug, Default)]
pub struct Layer {
    /// Files wanted from this layer; `None`: every file (the newest layer).
    needed: Option<HashSet<String>>,
    /// This layer's own flags.
    flags: HashMap<String, Flags>,
    /// Whether this is the newest layer (the backup asked for).
    newest: bool,
    /// `--restore-only`: the databases whose files are placeholders.
    only: Option<std::sync::Arc<crate::restore::only::Selection>>,
}

/// Files only the backup asked for may provide.
const NEWEST_ONLY: [&str; 3] = ["global/pg_control", "backup_label", "tablespace_map"];

impl Layer {
    /// A lone full backup: every member whole.
    pub fn whole() -> Layer {
        Layer {
            needed: None,
            flags: HashMap::new(),
            newest: true,
            only: None,
        }
    }

    /// The same layer, its files of the databases `only` leaves out as placeholders.
    pub fn with_only(mut self, only: Option<std::sync::Arc<crate::restore::only::Selection>>) -> Layer {
        self.only = only;
        self
    }

    /// Whether this layer is the backup asked for.
    pub fn is_newest(&self) -> bool {
        self.newest
    }

    /// Increments this layer must apply: the files it marks `IsIncremented` that are
    /// wanted from it.
    pub fn increments_expected(&self) -> u64 {
        self.flags
            .iter()
            .filter(|(name, f)| f.incremented && self.needed.as_ref().is_none_or(|n| n.contains(*name)))
            .count() as u64
    }

    /// What to do with the member `name` (relative to the data directory).
    pub fn action(&self, name: &str) -> Action {
        if !self.newest && NEWEST_ONLY.contains(&name) {
            return Action::Skip;
        }
        if let Some(needed) = &self.needed {
            if !needed.contains(name) {
                return Action::Skip;
            }
        }
        if self.only.as_ref().is_some_and(|o| o.excludes(name)) {
            return Action::Placeholder;
        }
        match self.flags.get(name) {
            Some(f) if f.incremented => Action::Increment,
            _ => Action::Whole,
        }
    }
}

use files_metadata::normal_name as normal;

/// The layers of the chain `plans` (oldest first): reads each backup's
/// `files_metadata.json`, which every delta and the full backup below one must have.
pub fn layers(storage: &dyn Storage, plans: &[RestorePlan]) -> Result<Vec<Layer>> {
    if plans.len() == 1 {
        return Ok(vec![Layer::whole()]);
    }
    let mut flags = Vec::with_capacity(plans.len());
    for plan in plans {
        let Some(key) = &plan.files_metadata else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{} is part of a delta chain but has no files_metadata.json: which files its layer provides cannot be known",
                    plan.name()
                ),
            ));
        };
        let object = format!("{}/{key}", storage.describe());
        let mut map = HashMap::new();
        files_metadata::read(storage.open(key)?, &object, &mut |name, entry| {
            map.insert(
                normal(name),
                Flags {
                    incremented: entry.is_incremented,
                    skipped: entry.is_skipped,
                },
            );
            Ok(())
        })?;
        flags.push(map);
    }
    // From the newest down: a layer is asked for what every newer layer takes from it.
    let mut layers: Vec<Layer> = Vec::with_capacity(plans.len());
    let mut needed: Option<HashSet<String>> = None;
    for (i, own) in flags.into_iter().enumerate().rev() {
        let newest = layers.is_empty();
        let below: HashSet<String> = own
            .iter()
            .filter(|(name, f)| (f.skipped || f.incremented) && needed.as_ref().is_none_or(|n| n.contains(*name)))
            .map(|(name, _)| name.clone())
            .collect();
        // Only the incremented names matter from here on (memory: files x layers otherwise).
        let mut own = own;
        own.retain(|_, f| f.incremented);
        layers.push(Layer {
            only: None,
            needed: needed.take(),
            flags: own,
            newest,
        });
        if i > 0 {
            needed = Some(below);
        }
    }
    layers.reverse();
    Ok(layers)
}

/// Bytes of a page in a `wi1` increment (PostgreSQL's default block size).
pub const PAGE: u64 = 8192;

/// The largest file an increment may describe: far beyond a relation segment (1 GiB by
/// default), and small enough that a damaged header cannot make a huge sparse file or a
/// block list that does not fit in memory.
const MAX_INCREMENTED_FILE: u64 = 64 << 30;

/// Applies a `wi1` increment read from `from` to `file`: magic `wi1\x55`, the file's size
/// (u64), the number of pages (u32), their block numbers (u32 each), then the 8 KiB
/// pages, all little-endian. The file is set to its size, then each page written in
/// place; nothing may follow the last page. `what` names the increment in errors,
/// `path` the file. `buf` is at least a page. Returns the file's size.
pub fn apply_wi1(from: &mut impl std::io::Read, file: &std::fs::File, what: &str, path: &str, buf: &mut [u8]) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let bad = |why: String| Error::new(ErrorKind::Corrupt, format!("{what}: {why}"));
    let mut read_exact = |into: &mut [u8], part: &str| {
        from.read_exact(into).map_err(|e| match Error::from_io_ref(&e) {
            Some(inner) => inner,
            None => bad(format!("cut short in its {part} ({e})")),
        })
    };
    let mut header = [0u8; increment::HEADER_LEN];
    read_exact(&mut header, "header")?;
    let Some((size, count)) = increment::parse_header(&header) else {
        return Err(bad(format!("not a wi1 increment (starts with {:02x?})", &header[..4])));
    };
    let count = u64::from(count);
    if size > MAX_INCREMENTED_FILE {
        return Err(bad(format!("a file of {size} bytes, more than any relation segment")));
    }
    if count > size.div_ceil(PAGE) {
        return Err(bad(format!("{count} pages for a file of {size} bytes")));
    }
    let mut blocks = Vec::new();
    for _ in 0..count {
        let mut b = [0u8; 4];
        read_exact(&mut b, "block list")?;
        let block = u64::from(u32::from_le_bytes(b));
        if (block + 1) * PAGE > size {
            return Err(bad(format!("block {block} lies beyond the file's {size} bytes")));
        }
        blocks.push(block as u32);
    }
    let io = |e: std::io::Error| Error::local_io(path, &e);
    file.set_len(size).map_err(io)?;
    let page = buf
        .get_mut(..PAGE as usize)
        .ok_or_else(|| bad("buffer smaller than a page".to_string()))?;
    for block in blocks {
        read_exact(page, "pages")?;
        file.write_all_at(page, u64::from(block) * PAGE).map_err(io)?;
    }
    let mut more = [0u8; 1];
    loop {
        match from.read(&mut more) {
            Ok(0) => return Ok(size),
            Ok(_) => return Err(bad("data after its last page".to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from_io_ref(&e).unwrap_or_else(|| bad(e.to_string()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(needed: Option<&[&str]>, flags: &[(&str, bool, bool)], newest: bool) -> Layer {
        Layer {
            only: None,
            needed: needed.map(|n| n.iter().map(|s| s.to_string()).collect()),
            flags: flags
                .iter()
                .map(|(n, i, s)| {
                    (
                        n.to_string(),
                        Flags {
                            incremented: *i,
                            skipped: *s,
                        },
                    )
                })
                .collect(),
            newest,
        }
    }

    #[test]
    fn each_layer_gives_what_the_newer_ones_take_from_it() {
        // Newest: a whole, b incremented, c skipped; d deleted (not listed).
        let newest = layer(None, &[("a", false, false), ("b", true, false), ("c", false, true)], true);
        assert_eq!(newest.action("a"), Action::Whole);
        assert_eq!(newest.action("b"), Action::Increment);
        assert_eq!(newest.action("global/pg_control"), Action::Whole);
        let parent = layer(
            Some(&["b", "c"]),
            &[("a", false, false), ("b", false, false), ("c", true, false), ("d", false, false)],
            false,
        );
        assert_eq!(parent.action("a"), Action::Skip, "the newest has it whole");
        assert_eq!(parent.action("b"), Action::Whole);
        assert_eq!(parent.action("c"), Action::Increment);
        assert_eq!(parent.action("d"), Action::Skip, "deleted since");
        assert_eq!(parent.action("global/pg_control"), Action::Skip);
        assert_eq!(parent.action("backup_label"), Action::Skip);
        assert_eq!(Layer::whole().action("anything"), Action::Whole);
        assert_eq!(normal("/base/1/2"), "base/1/2");
        assert_eq!(normal("./base//1/./2"), "base/1/2");
    }

    fn wi1(size: u64, pages: &[(u32, u8)]) -> Vec<u8> {
        let mut out = b"wi1\x55".to_vec();
        out.extend(size.to_le_bytes());
        out.extend((pages.len() as u32).to_le_bytes());
        for (b, _) in pages {
            out.extend(b.to_le_bytes());
        }
        for (_, fill) in pages {
            out.extend(vec![*fill; PAGE as usize]);
        }
        out
    }

    #[test]
    fn increments_set_the_size_and_write_their_pages_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("16384");
        std::fs::write(&path, vec![1u8; 4 * PAGE as usize]).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut buf = vec![0u8; PAGE as usize];
        let data = wi1(3 * PAGE, &[(2, 9), (0, 7)]);
        let size = apply_wi1(&mut std::io::Cursor::new(data), &file, "inc", "f", &mut buf).unwrap();
        assert_eq!(size, 3 * PAGE);
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 3 * PAGE as usize, "shrunk to the size");
        assert!(got[..8192].iter().all(|b| *b == 7) && got[8192..16384].iter().all(|b| *b == 1) && got[16384..].iter().all(|b| *b == 9));

        for (bad, says) in [
            (b"wi2\x55aaaaaaaaaaaa".to_vec(), "not a wi1 increment"),
            (wi1(PAGE, &[(1, 0)]), "beyond the file"),
            (wi1(PAGE, &[(0, 0), (0, 0)]), "2 pages for a file"),
            ([wi1(PAGE, &[(0, 0)]), vec![0]].concat(), "data after its last page"),
            (wi1(2 * PAGE, &[(0, 1)])[..100].to_vec(), "cut short"),
            (
                [b"wi1\x55".to_vec(), u64::MAX.to_le_bytes().to_vec(), vec![0xff; 4]].concat(),
                "more than any relation segment",
            ),
        ] {
            let e = apply_wi1(&mut std::io::Cursor::new(bad), &file, "inc of x", "f", &mut buf).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt);
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
