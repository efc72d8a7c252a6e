//! Writing a restore to disk: the plan's execution ([`fetch`] for wal-g archives,
//! [`pgbackrest`] for pgBackRest repositories), safe tar extraction ([`extract`]),
//! tablespace placement ([`tablespace`]) and the checks of the result ([`checks`]).

pub mod checks;
pub mod delta;
pub mod extract;
pub mod fetch;
pub mod journal;
pub mod only;
pub mod pgbackrest;
pub mod select;
pub mod tablespace;
pub mod target;

use std::path::Path;
use std::sync::Arc;

use crate::archive::Archive;
use crate::error::{Error, ErrorKind, Result};
use fetch::{Options, Start, Summary};
use select::Chosen;

/// Restores what [`select::select`] chose from `archive` into `dir` (prepared with
/// [`fetch::prepare_target`]): a wal-g chain, or a pgBackRest backup. Returns the summary
/// and the name of the backup restored.
pub fn restore(archive: &Arc<dyn Archive>, chosen: &Chosen, dir: &Path, opts: &Options, start: Start) -> Result<(Summary, String)> {
    match chosen {
        Chosen::WalG(chain) => {
            let name = chain.last().map(|p| p.name().to_string()).unwrap_or_default();
            Ok((fetch::restore(&archive.objects(), chain, dir, opts, start)?, name))
        }
        Chosen::PgBackRest(chosen) => {
            let (backup, manifest) = chosen.as_ref();
            let repo = archive
                .pgbackrest()
                .ok_or_else(|| Error::new(ErrorKind::Config, "internal: a pgBackRest backup outside a pgBackRest repository"))?;
            Ok((
                pgbackrest::restore(repo, backup, manifest, dir, opts, start)?,
                backup.name.name.clone(),
            ))
        }
    }
}
