//! Checks of a restored directory against the backup's own description, and the one
//! file a relocation rewrites.

use std::collections::BTreeMap;
use std::fs;
use std::io;

use crate::error::{Error, ErrorKind, Result};
use crate::fsutil;
use crate::layout::files_metadata;
use crate::restore::extract::{sanitize, Target, STAGED_PG_CONTROL};
use crate::restore::tablespace;
use crate::storage::ObjectReader;

/// Checks every file `files_metadata.json` lists against the target: it must have
/// been extracted, and where the entry records a size (walfetch's writer does), have
/// exactly that many bytes.
pub fn check_files_extracted(reader: ObjectReader, object: &str, target: &Target) -> Result<()> {
    let (mut missing, mut wrong_size) = (Examples::default(), Examples::default());
    files_metadata::read(reader, object, &mut |name, entry| {
        if entry.is_skipped {
            return Ok(());
        }
        let parts = sanitize(name.as_bytes(), object)?;
        let rel = parts.join("/");
        let path = if rel == "global/pg_control" {
            target.root().join(STAGED_PG_CONTROL)
        } else {
            target.root().join(&rel)
        };
        match fs::symlink_metadata(&path).or_else(|_| fs::metadata(&path)) {
            Err(_) => missing.add(rel),
            Ok(meta) => match entry.size {
                Some(listed) if meta.is_file() && meta.len() != listed => {
                    wrong_size.add(format!("{rel}: {} bytes, listed {listed}", meta.len()))
                }
                _ => {}
            },
        }
        Ok(())
    })?;
    missing.fail(|n, e| format!("{object}: {n} listed files are in no partition (e.g. {e}); the backup is incomplete"))?;
    wrong_size.fail(|n, e| format!("{object}: {n} restored files differ in size from the listing (e.g. {e}); the backup is inconsistent"))
}

/// A problem found while walking a listing: how often, and the first few cases.
#[derive(Default)]
struct Examples {
    count: u64,
    shown: Vec<String>,
}

impl Examples {
    fn add(&mut self, case: String) {
        self.count += 1;
        if self.shown.len() < 5 {
            self.shown.push(case);
        }
    }

    /// A corrupt-backup error with the message `describe(count, examples)`, if any case was found.
    fn fail(&self, describe: impl FnOnce(u64, String) -> String) -> Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        Err(Error::new(ErrorKind::Corrupt, describe(self.count, self.shown.join("; "))))
    }
}

/// Rewrites `tablespace_map` (if the backup has one) to the relocated paths.
pub fn rewrite_tablespace_map(target: &Target) -> Result<()> {
    let path = target.root().join("tablespace_map");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::local_io(path.display(), &e)),
    };
    let new = tablespace::rewrite_map(
        &text,
        &target
            .tablespaces()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    );
    fsutil::write_atomically(&path, |f| io::Write::write_all(f, new.as_bytes()), false)
}
