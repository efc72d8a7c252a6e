//! An archive's objects as every format reads them: its storage and the keys that open
//! what is encrypted. [`Objects::open`] is the one read path of an object: fetched,
//! decrypted when it is encrypted (judged by its first bytes, [`crate::crypto`]), and
//! decoded by its extension's codec ([`crate::codec`]), with errors that name the
//! object and keep their kind.

use std::io::Read;
use std::sync::Arc;

use crate::codec::{Codec, Decoded};
use crate::crypto::{Keys, Revealing};
use crate::error::Result;
use crate::storage::Storage;

/// Storage and the keys its objects are read and written with.
#[derive(Clone)]
pub struct Objects {
    storage: Arc<dyn Storage>,
    keys: Keys,
}

impl Objects {
    /// The objects of `storage`, opened with `keys`.
    pub fn new(storage: Arc<dyn Storage>, keys: Keys) -> Objects {
        Objects { storage, keys }
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Opens object `key`, decrypted and decoded by its extension's codec.
    pub fn open(&self, key: &str) -> Result<Decoded> {
        let raw = self.storage.open(key)?;
        let url = format!("{}/{key}", self.storage.describe());
        Ok(decoded(raw, Codec::split(key).1, &url, &self.keys))
    }
}

/// Wraps `raw`, an object as stored (perhaps encrypted), in the streaming decoder of
/// `codec`: how every object is read, whatever brought its bytes (a whole GET, parts
/// over many connections, a file). `object` names it in errors.
pub fn decoded(raw: Box<dyn Read + Send>, codec: Codec, object: &str, keys: &Keys) -> Decoded {
    let revealing = Revealing::new(raw, codec, keys, object);
    let integrity = revealing.integrity();
    codec
        .decoder(Box::new(revealing), object)
        .explained_by(Box::new(move || integrity.check()))
}
