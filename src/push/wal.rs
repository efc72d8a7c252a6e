//! Archiving one WAL file (PostgreSQL's `archive_command`), in the layout wal-g writes.
//!
//! The file is compressed into an anonymous spool file (never twice in memory), then
//! stored atomically at `wal_005/<name>.<ext>`. Pushing a file that is already archived
//! with the same content succeeds (PostgreSQL retries after crashes); a different
//! content under the same name is refused, never overwritten.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::codec::Codec;
use crate::constants::COPY_BUFFER_SIZE;
use crate::crypto::{Keys, Sealing};
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil;
use crate::layout::wal_key;
use crate::objects::Objects;

/// SHA-256 of everything `reader` yields; `describe` classifies read errors.
fn digest(mut reader: impl Read, describe: &dyn Fn(io::Error) -> Error) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUFFER_SIZE];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(describe(e)),
        }
    }
}

/// Compresses (and, with a key, encrypts) `source` into an anonymous spool file.
pub fn spool_compressed(source: &mut File, codec: Codec, keys: &Keys, what: &str) -> Result<File> {
    let spool = fsutil::anonymous_file(&std::env::temp_dir())?;
    let sink = io::BufWriter::with_capacity(COPY_BUFFER_SIZE, fsutil::reread(&spool).map_err(|e| Error::local_io("spool", &e))?);
    let mut encoder = codec.encoder(Sealing::new(sink, keys).map_err(|e| Error::local_io("spool", &e))?)?;
    let mut buf = vec![0u8; COPY_BUFFER_SIZE];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::local_io(what, &e)),
        };
        encoder.write_all(&buf[..n]).map_err(|e| Error::local_io("spool", &e))?;
    }
    let sealed = encoder.finish().map_err(|e| Error::local_io("spool", &e))?;
    let mut inner = sealed.finish().map_err(|e| Error::local_io("spool", &e))?;
    inner.flush().map_err(|e| Error::local_io("spool", &e))?;
    Ok(spool)
}

/// What [`push`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Stored as this object.
    Stored(String),
    /// Already archived with identical content at this object.
    AlreadyThere(String),
}

/// Archives the WAL file at `path` with `codec`.
pub fn push(objects: &Objects, path: &Path, codec: Codec) -> Result<Pushed> {
    let storage = objects.storage();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::new(ErrorKind::Config, format!("{}: not a file name", path.display())))?
        .to_string();
    let shown = path.display().to_string();
    let mut source = File::open(path).map_err(|e| Error::local_io(&shown, &e))?;
    let key = wal_key(&name, codec);
    let url = format!("{}/{key}", storage.describe());

    if storage.stat(&key)?.is_some() {
        let local = digest(&mut source, &|e| Error::local_io(&shown, &e))?;
        let mut existing = objects.open(&key)?;
        let remote = digest(&mut existing, &|e| existing_error(&url, e))?;
        if local == remote {
            return Ok(Pushed::AlreadyThere(url));
        }
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "{url}: already archived with different content; refusing to overwrite (another cluster archiving to the same prefix?)"
            ),
        ));
    }
    let spool = spool_compressed(&mut source, codec, objects.keys(), &shown)?;
    storage.put(&key, &spool)?;
    Ok(Pushed::Stored(url))
}

fn existing_error(url: &str, e: io::Error) -> Error {
    Error::from_io_ref(&e).unwrap_or_else(|| Error::new(ErrorKind::Corrupt, format!("{url}: {e}")))
}
