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
        }
    }

    /// Whether this layer is the backup asked for.
    pub fn is_newest(&self) -> bool {
        self.newest
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
        match self.flags.get(name) {
            Some(f) if f.incremented => Action::Increment,
            _ => Action::Whole,
        }
    }
}

/// A file name as the metadata or a tar member gives it, relative to the data directory.
fn normal(name: &str) -> &str {
    name.trim_start_matches('/')
}

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
                normal(name).to_string(),
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
        layers.push(Layer {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(needed: Option<&[&str]>, flags: &[(&str, bool, bool)], newest: bool) -> Layer {
        Layer {
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
    }
}
