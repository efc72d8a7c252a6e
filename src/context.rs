//! The context every command runs in: the settings, resolved once, and the archive's
//! storage, opened on first use (`status`, `completions` and an invalid prefix never
//! open it; `wal-fetch` serving from the spool never pays for it).

use std::sync::{Arc, OnceLock};

use crate::archive::{self, Archive};
use crate::config::Settings;
use crate::error::Result;
use crate::objects::Objects;
use crate::storage::{self, Storage};

/// Settings and lazily opened storage.
pub struct Context {
    /// Every shared setting.
    pub settings: Settings,
    storage: OnceLock<Arc<dyn Storage>>,
    archive: OnceLock<Arc<dyn Archive>>,
}

impl Context {
    /// A context for `settings`; nothing is opened yet.
    pub fn new(settings: Settings) -> Context {
        Context {
            settings,
            storage: OnceLock::new(),
            archive: OnceLock::new(),
        }
    }

    /// The archive's storage, opened on the first call.
    pub fn storage(&self) -> Result<Arc<dyn Storage>> {
        if let Some(s) = self.storage.get() {
            return Ok(Arc::clone(s));
        }
        let opened = storage::open(&self.settings.storage()?.connection()?)?;
        Ok(Arc::clone(self.storage.get_or_init(|| opened)))
    }

    /// The archive's objects: its storage and the keys of its encrypted objects.
    pub fn objects(&self) -> Result<Objects> {
        Ok(Objects::new(self.storage()?, self.settings.storage()?.keys.clone()))
    }

    /// The archive in its format (recognised on the first call), over [`Context::storage`].
    pub fn archive(&self) -> Result<Arc<dyn Archive>> {
        if let Some(a) = self.archive.get() {
            return Ok(Arc::clone(a));
        }
        let opened = archive::open(self.storage()?, self.settings.storage()?)?;
        Ok(Arc::clone(self.archive.get_or_init(|| opened)))
    }
}
