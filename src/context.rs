//! The context every command runs in: the settings, resolved once, and the archive's
//! storage, opened on first use (`status`, `completions` and an invalid prefix never
//! open it; `wal-fetch` serving from the spool never pays for it).

use std::sync::{Arc, OnceLock};

use crate::config::Settings;
use crate::error::Result;
use crate::storage::{self, Storage};

/// Settings and lazily opened storage.
pub struct Context {
    /// Every shared setting.
    pub settings: Settings,
    storage: OnceLock<Arc<dyn Storage>>,
}

impl Context {
    /// A context for `settings`; nothing is opened yet.
    pub fn new(settings: Settings) -> Context {
        Context {
            settings,
            storage: OnceLock::new(),
        }
    }

    /// The archive's storage, opened on the first call.
    pub fn storage(&self) -> Result<Arc<dyn Storage>> {
        if let Some(s) = self.storage.get() {
            return Ok(Arc::clone(s));
        }
        let opened = storage::open(self.settings.storage()?)?;
        Ok(Arc::clone(self.storage.get_or_init(|| opened)))
    }
}
