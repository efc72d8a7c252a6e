//! wal-g's layout behind [`Archive`](super::Archive): the functions of [`crate::layout`]
//! and [`crate::wal::fetch`] (also WAL-E's and walrus's archives, which share it).

use std::sync::Arc;

use super::{Archive, WalObject};
use crate::config::Format;
use crate::error::{Error, Result};
use crate::layout::backup::{list_backups, read_backup, Backup};
use crate::layout::wal_inventory::{no_backup, scan, Inventory};
use crate::layout::WAL;
use crate::storage::Storage;

/// A wal-g (WAL-E, walrus) archive.
pub struct WalG {
    storage: Arc<dyn Storage>,
}

impl WalG {
    /// The archive at `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> WalG {
        WalG { storage }
    }
}

impl Archive for WalG {
    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn format(&self) -> Format {
        Format::WalG
    }

    fn describe(&self) -> String {
        self.storage.describe()
    }

    fn wal_folder(&self) -> String {
        WAL.to_string()
    }

    fn backups(&self, concurrency: usize) -> Result<Vec<Backup>> {
        list_backups(&self.storage, concurrency)
    }

    fn backup(&self, name: &str) -> Result<Backup> {
        read_backup(self.storage.as_ref(), name)
    }

    fn no_backup(&self, concurrency: usize) -> Error {
        no_backup(self.storage.as_ref(), concurrency)
    }

    fn open_wal(&self, name: &str) -> Result<WalObject> {
        let (key, codec, raw) = crate::wal::fetch::find(self.storage.as_ref(), name)?;
        let url = format!("{}/{key}", self.storage.describe());
        let reader = Box::new(codec.reader(raw, &url, self.storage.keys()));
        Ok(WalObject { url, reader })
    }

    fn wal_inventory(&self, segment_size: Option<u64>, concurrency: usize) -> Result<(Inventory, u64)> {
        scan(self.storage.as_ref(), segment_size, concurrency)
    }
}
