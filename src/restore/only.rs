//! `backup-fetch --restore-only DB[,DB]`: restore the named databases and what the
//! cluster needs to start (the global catalog, the system databases `postgres`,
//! `template0` and `template1`, everything outside a database directory); the other
//! databases' relation files are not downloaded.
//!
//! Those files are left as placeholders: empty files of their recorded size (sparse: no
//! disk is used), as pgBackRest's `--db-include` does. The databases stay in the catalog,
//! and WAL replay that touches them finds the files it expects (every page changed after
//! the backup began comes with a full-page image), but their contents are gone: the user
//! drops them once the server is promoted, and the restore says so. A partition (wal-g)
//! or stored object (pgBackRest) that holds only such files is never fetched; one that
//! also holds wanted files is fetched, and the unwanted members in it become
//! placeholders too.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, ErrorKind, Result};

/// The first OID of objects created after `initdb`: databases below it are the
/// system's own.
const FIRST_NORMAL_OID: u32 = 16384;

/// Which databases a restore brings back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The OIDs of the databases left as placeholders.
    pub excluded: BTreeSet<u32>,
    /// The names restored (those asked for, and the system's).
    pub kept: Vec<String>,
    /// The names left as placeholders.
    pub dropped: Vec<String>,
}

impl Selection {
    /// Whether the file `name` (relative to the data directory) belongs to a database
    /// left as a placeholder.
    pub fn excludes(&self, name: &str) -> bool {
        crate::layout::files_metadata::database_of(name).is_some_and(|oid| self.excluded.contains(&oid))
    }

    /// What the user must do afterwards, in one line.
    pub fn advice(&self, not_downloaded: u64) -> String {
        format!(
            "restore-only: restored {}; {} left as empty placeholders ({} not downloaded): drop {} once the server is promoted ({})",
            self.kept.join(", "),
            self.dropped.join(", "),
            crate::inspect::backups::human_size(Some(not_downloaded)),
            if self.dropped.len() == 1 { "it" } else { "them" },
            self.dropped
                .iter()
                .map(|d| format!("DROP DATABASE {};", crate::pg::db::quote_ident(d)))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

/// The selection for `requested` among the backup's `databases` (name to OID);
/// `object` names where the list of databases comes from, for errors.
pub fn select(requested: &[String], databases: &BTreeMap<String, u32>, object: &str) -> Result<Selection> {
    if databases.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            format!("--restore-only: {object} records no databases (wal-g before 2.0 and walrus do not); restore the whole backup"),
        ));
    }
    for r in requested {
        if !databases.contains_key(r) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "--restore-only {r}: the backup has no database '{r}' (it has: {})",
                    databases.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    let mut sel = Selection::default();
    for (name, oid) in databases {
        let system = *oid < FIRST_NORMAL_OID || matches!(name.as_str(), "postgres" | "template0" | "template1");
        if system || requested.contains(name) {
            sel.kept.push(name.clone());
        } else {
            sel.excluded.insert(*oid);
            sel.dropped.push(name.clone());
        }
    }
    Ok(sel)
}

/// For a wal-g chain (oldest first): the selection, read from the newest backup's
/// `files_metadata.json` (`DatabasesByNames`), and the partitions of every layer that
/// hold nothing but files of the databases left out (`TarFileSets`), by key. `place`
/// hears every file of those databases the newest backup has (its name and recorded
/// size, 0 when the writer records none), to leave its placeholder.
pub fn plan_walg(
    storage: &dyn crate::storage::Storage,
    chain: &[crate::layout::plan::RestorePlan],
    requested: &[String],
    place: &mut dyn FnMut(&str, u64) -> Result<()>,
) -> Result<(Selection, BTreeSet<String>)> {
    use crate::codec::Codec;
    use crate::layout::files_metadata::{self, normal_name};
    let newest = chain.last().ok_or_else(|| Error::new(ErrorKind::Config, "nothing to restore"))?;
    let key = newest.files_metadata.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!("--restore-only: {} has no files_metadata.json, so which files are whose is unknown (WAL-E backups); restore the whole backup", newest.name()),
        )
    })?;
    let url = |k: &str| format!("{}/{k}", storage.describe());
    let meta = files_metadata::read(storage.open(key)?, &url(key), &mut |_, _| Ok(()))?;
    let selection = select(requested, &meta.databases, &url(key))?;
    // The placeholders: a second pass over the newest backup's list of files.
    files_metadata::read(storage.open(key)?, &url(key), &mut |name, entry| {
        let name = normal_name(name);
        if selection.excludes(&name) {
            place(&name, entry.size.unwrap_or(0))?;
        }
        Ok(())
    })?;
    let mut skip = BTreeSet::new();
    for plan in chain {
        let layer_meta = match &plan.files_metadata {
            Some(k) if k == key => meta.partition_databases.clone(),
            Some(k) => files_metadata::read(storage.open(k)?, &url(k), &mut |_, _| Ok(()))?.partition_databases,
            None => continue,
        };
        for (set, (dbs, other)) in layer_meta {
            let only_left_out = !other && !dbs.is_empty() && dbs.is_subset(&selection.excluded);
            if !only_left_out {
                continue;
            }
            let stem = Codec::split(&set).0.to_string();
            for p in &plan.partitions.data {
                let file = p.key.rsplit('/').next().unwrap_or(&p.key);
                if Codec::split(file).0 == stem {
                    skip.insert(p.key.clone());
                }
            }
        }
    }
    Ok((selection, skip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_databases_always_come_back() {
        let dbs: BTreeMap<String, u32> = [
            ("postgres", 5),
            ("template0", 4),
            ("template1", 1),
            ("app1", 16384),
            ("app2", 16385),
            ("App 3", 16390),
        ]
        .into_iter()
        .map(|(n, o)| (n.to_string(), o))
        .collect();
        let s = select(&["app2".into()], &dbs, "m").unwrap();
        assert_eq!(s.excluded, BTreeSet::from([16384, 16390]));
        assert!(s.kept.contains(&"postgres".to_string()) && s.kept.contains(&"app2".to_string()));
        assert!(s.excludes("base/16384/1259") && s.excludes("pg_tblspc/16400/PG_15_202209061/16390/1"));
        assert!(!s.excludes("base/16385/1259") && !s.excludes("global/1262") && !s.excludes("base/16384"));
        assert!(
            s.advice(1 << 20).contains("DROP DATABASE \"App 3\"; DROP DATABASE app1;") || s.advice(1 << 20).contains("DROP DATABASE app1;")
        );
        assert!(select(&["nope".into()], &dbs, "m")
            .unwrap_err()
            .to_string()
            .contains("it has: App 3, app1"));
        assert!(select(&["a".into()], &BTreeMap::new(), "m").is_err());
    }
}
