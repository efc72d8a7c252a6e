//! Encrypted archives, object by object.
//!
//! wal-g encrypts WAL files, history files and backup partitions (never the JSON
//! files), and nothing in an object's name or metadata says so; builds have shipped
//! that silently wrote plaintext while users believed they encrypted, so one bucket can
//! hold both. So every object is judged by its first bytes ([`Revealing`]):
//! - with a key, an object whose first chunk authenticates under the key is encrypted,
//!   and decrypted as it streams (a plaintext passes with probability 2^-128);
//! - an object that starts as its codec's stream does (lz4, zstd and lzop have magic
//!   numbers, wal-g's lzma its properties byte), or as another known format does (then
//!   its decoder reports the mismatch as corrupt), is read as it is;
//! - an OpenPGP message is reported as such (exit 3; inside `.lzo`, WAL-E's GPG, the
//!   lzop reader says it);
//! - anything else where the codec always starts with a magic number looks random, as
//!   encrypted data does: with a key, "decryption failed: wrong key or damaged object"
//!   (exit 7); without, the error names the setting to set (exit 3).
//!
//! Brotli streams and uncompressed objects have no magic: with a key they are
//! decrypted when they authenticate and read as plaintext otherwise; without a key a
//! damaged or encrypted one fails in its decoder.

pub mod libsodium;
pub mod openpgp;

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use crate::codec::{magic, Codec};
use crate::error::{Error, ErrorKind, Result};
use libsodium::{Decrypting, Key};
use openpgp::Pgp;

/// The keys an archive is read and written with (`WALG_LIBSODIUM_KEY`, `WALG_PGP_KEY`,
/// …). Never printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// libsodium secretstream key.
    pub libsodium: Option<Key>,
    /// OpenPGP key (wal-g's PGP mode, WAL-E's GPG).
    pub openpgp: Option<Pgp>,
}

/// No keys: plaintext archives.
pub static NO_KEYS: Keys = Keys {
    libsodium: None,
    openpgp: None,
};

impl Keys {
    /// The keys the settings give: `WALG_LIBSODIUM_KEY` (the value as is) or
    /// `WALG_LIBSODIUM_KEY_PATH` (a file, whitespace around it trimmed), through
    /// `WALG_LIBSODIUM_KEY_TRANSFORM`.
    pub fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Result<Keys> {
        let transform = env("WALG_LIBSODIUM_KEY_TRANSFORM").unwrap_or_default();
        let libsodium = match (env("WALG_LIBSODIUM_KEY").filter(|k| !k.is_empty()), env("WALG_LIBSODIUM_KEY_PATH")) {
            (Some(key), _) => Some(Key::from_setting(key.as_bytes(), &transform, "WALG_LIBSODIUM_KEY")?),
            (None, Some(path)) if !path.trim().is_empty() => {
                let text = std::fs::read(path.trim()).map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        format!("WALG_LIBSODIUM_KEY_PATH={}: cannot read the key file: {e}", path.trim()),
                    )
                })?;
                Some(Key::from_setting(text.trim_ascii(), &transform, "WALG_LIBSODIUM_KEY_PATH")?)
            }
            _ => None,
        };
        Ok(Keys {
            libsodium,
            openpgp: Pgp::resolve(env)?,
        })
    }

    /// Whether any key is set (objects written are encrypted).
    pub fn any(&self) -> bool {
        self.libsodium.is_some() || self.openpgp.is_some()
    }

    /// The settings a reader of this archive needs in its environment (for notes).
    pub fn reader_settings(&self) -> String {
        let mut names = Vec::new();
        if self.libsodium.is_some() {
            names.push("WALG_LIBSODIUM_KEY_PATH (and WALG_LIBSODIUM_KEY_TRANSFORM)");
        }
        match &self.openpgp {
            Some(Pgp::Key(_)) => names.push("WALG_PGP_KEY_PATH (and WALG_PGP_KEY_PASSPHRASE)"),
            Some(Pgp::KeyRing { .. }) => names.push("WALE_GPG_KEY_ID and GNUPGHOME"),
            None => {}
        }
        names.join(", ")
    }
}

/// Where an object being written goes: through the archive's encryption when a key is
/// set (OpenPGP before libsodium, as wal-g chooses), as it is otherwise. Call
/// [`Sealing::finish`].
pub enum Sealing<W: Write> {
    /// No key: plaintext.
    Plain(W),
    /// libsodium secretstream.
    Libsodium(libsodium::Encrypting<W>),
    /// OpenPGP: the data is spooled to an anonymous file, then encrypted from it into
    /// `out` at [`Sealing::finish`] (the OpenPGP writer pulls from a reader).
    OpenPgp {
        /// The plaintext so far.
        spool: io::BufWriter<std::fs::File>,
        /// Where the message goes.
        out: W,
        /// The key.
        pgp: Pgp,
    },
}

impl<W: Write> Sealing<W> {
    /// Starts writing to `out` with `keys`.
    pub fn new(out: W, keys: &Keys) -> io::Result<Sealing<W>> {
        Ok(match (&keys.openpgp, &keys.libsodium) {
            (Some(pgp), _) => Sealing::OpenPgp {
                spool: io::BufWriter::with_capacity(
                    crate::constants::COPY_BUFFER_SIZE,
                    crate::fsutil::anonymous_file(&std::env::temp_dir()).map_err(Error::into_io)?,
                ),
                out,
                pgp: pgp.clone(),
            },
            (None, Some(key)) => Sealing::Libsodium(libsodium::Encrypting::new(out, key)?),
            (None, None) => Sealing::Plain(out),
        })
    }

    /// Ends the stream (the final chunk, or the whole OpenPGP message) and returns `out`.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Sealing::Plain(w) => Ok(w),
            Sealing::Libsodium(e) => e.finish(),
            Sealing::OpenPgp { spool, mut out, pgp } => {
                use std::io::Seek;
                let mut plain = spool.into_inner().map_err(|e| e.into_error())?;
                plain.seek(io::SeekFrom::Start(0))?;
                pgp.seal(
                    &mut io::BufReader::with_capacity(crate::constants::COPY_BUFFER_SIZE, plain),
                    &mut out,
                )?;
                Ok(out)
            }
        }
    }
}

impl<W: Write> Write for Sealing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealing::Plain(w) => w.write(buf),
            Sealing::Libsodium(e) => e.write(buf),
            Sealing::OpenPgp { spool, .. } => spool.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealing::Plain(w) => w.flush(),
            Sealing::Libsodium(e) => e.flush(),
            Sealing::OpenPgp { spool, .. } => spool.flush(),
        }
    }
}

/// What the first bytes of an object are, for a reader of `codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Looks {
    /// The codec's own stream.
    Plain,
    /// Another known format (another codec, a tar, WAL): not encrypted, just not what its
    /// name says; its decoder reports it.
    Other,
    /// An OpenPGP message (a public- or symmetric-key encrypted session key first).
    OpenPgp,
    /// Nothing known, where the codec's streams always start with a magic number: data
    /// that looks random, as encrypted data does.
    Opaque,
    /// The codec has no magic number to tell by (brotli, uncompressed, other lzma).
    Unknown,
}

fn looks(codec: Codec, prefix: &[u8]) -> Looks {
    let lz4 = prefix.starts_with(&magic::LZ4_FRAME) || magic::skippable(prefix);
    let zstd = prefix.starts_with(&magic::ZSTD_FRAME) || magic::skippable(prefix);
    let lzo = prefix.starts_with(&magic::LZOP);
    let own = match codec {
        Codec::Lz4 => lz4,
        Codec::Zstd => zstd,
        Codec::Lzo => lzo,
        // wal-g, walrus and walfetch write lc=3 lp=0 pb=2; other properties are possible.
        Codec::Lzma => prefix.first() == Some(&magic::LZMA_ALONE_PROPERTIES),
        Codec::Gzip => prefix.starts_with(&magic::GZIP),
        Codec::Bzip2 => prefix.starts_with(&magic::BZIP2),
        Codec::Xz => prefix.starts_with(&magic::XZ),
        Codec::Snappy => prefix.starts_with(&magic::SNAPPY_FRAMED),
        Codec::Zlib => {
            prefix.first().is_some_and(|b| b & 0x0F == 8)
                && prefix.len() >= 2
                && (u16::from(prefix[0]) << 8 | u16::from(prefix[1])) % 31 == 0
        }
        Codec::Brotli | Codec::None => false,
    };
    let other = lz4
        || zstd
        || lzo
        || prefix.starts_with(&magic::GZIP)
        || prefix.starts_with(&magic::XZ)
        || prefix.starts_with(&magic::SNAPPY_FRAMED)
        || prefix.get(257..262) == Some(b"ustar")
        || prefix.get(1) == Some(&0xD1) && prefix.get(2..4) == Some(&[2, 0]);
    if own {
        Looks::Plain
    } else if other {
        Looks::Other
    } else if magic::openpgp_message(prefix) {
        Looks::OpenPgp
    } else if matches!(
        codec,
        Codec::Lz4 | Codec::Zstd | Codec::Lzo | Codec::Gzip | Codec::Bzip2 | Codec::Xz | Codec::Snappy
    ) {
        Looks::Opaque
    } else {
        Looks::Unknown
    }
}

/// What the first bytes of an object say about its encryption (for `check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Plain data (its codec's stream, or another known format).
    Plain,
    /// Encrypted (this way: "libsodium", "OpenPGP"), and the key opens it.
    Opened(&'static str),
    /// Looks encrypted (not OpenPGP); the libsodium key set does not open it (`true`),
    /// or none is set.
    Sealed {
        /// Whether a libsodium key is set.
        key_set: bool,
    },
    /// An OpenPGP message, and no OpenPGP key is set.
    OpenPgp,
    /// An OpenPGP message the OpenPGP key set does not open: why.
    OpenPgpRefused(String),
    /// The codec has no magic number, and no key opens it: cannot tell.
    Unknown,
}

/// Reads the first bytes of `raw` (an object stored with `codec`) and says what they are.
pub fn sample(mut raw: Box<dyn Read + Send>, codec: Codec, keys: &Keys, object: &str) -> Result<Found> {
    let mut prefix = vec![0u8; libsodium::HEADER_BYTES + libsodium::SEALED];
    let n = crate::fsutil::read_up_to(&mut raw, &mut prefix)
        .map_err(|e| Error::from_io_ref(&e).unwrap_or_else(|| Error::new(ErrorKind::Unreachable, format!("{object}: {e}"))))?;
    prefix.truncate(n);
    if let Some(key) = &keys.libsodium {
        if libsodium::open_first(&prefix, key).is_some() {
            return Ok(Found::Opened("libsodium"));
        }
    }
    Ok(match looks(codec, &prefix) {
        Looks::Plain | Looks::Other => Found::Plain,
        Looks::OpenPgp => match &keys.openpgp {
            None => Found::OpenPgp,
            Some(pgp) => {
                // Opening needs the session key and the first plaintext bytes.
                let whole: Box<dyn Read + Send> = Box::new(io::Cursor::new(prefix).chain(raw));
                let mut first = [0u8; 1];
                match pgp.open(whole, object).and_then(|mut r| {
                    r.read(&mut first)
                        .map_err(|e| Error::from_io_ref(&e).unwrap_or_else(|| Error::new(ErrorKind::Corrupt, e.to_string())))
                }) {
                    Ok(_) => Found::Opened("OpenPGP"),
                    // A setting to fix (a passphrase that does not unlock the key) keeps its kind.
                    Err(e) if e.kind() == ErrorKind::Corrupt => Found::OpenPgpRefused(e.message().to_string()),
                    Err(e) => return Err(e),
                }
            }
        },
        Looks::Opaque => Found::Sealed {
            key_set: keys.libsodium.is_some(),
        },
        Looks::Unknown => Found::Unknown,
    })
}

/// An object's bytes as its codec should read them: decrypted when it is encrypted
/// (decided at the first read, see the module doc), as they are otherwise.
pub struct Revealing {
    state: State,
    integrity: Integrity,
}

/// A decrypted OpenPGP stream, shared with the [`Integrity`] that may drain it.
type Shared = Arc<Mutex<Box<dyn Read + Send>>>;

/// Whether an OpenPGP object's ciphertext was intact, asked when its decoder fails.
///
/// SEIPD v1 is read as it streams and its integrity check (the MDC) comes at the end,
/// so a damaged ciphertext shows first as garbage to the decompressor. When the decoder
/// fails, [`Integrity::check`] reads the rest of the message: if the MDC fails, or
/// the object's bytes do, that is the error to report (a damaged object, "decryption
/// failed", or the network), not the decompressor's.
#[derive(Clone, Default)]
pub struct Integrity(Arc<Mutex<IntegrityState>>);

#[derive(Default)]
struct IntegrityState {
    stream: Option<Shared>,
    verdict: Option<Option<Error>>,
}

impl Integrity {
    /// The error the rest of the encrypted stream gives, if the object was OpenPGP
    /// (`None`: intact, or not OpenPGP).
    pub fn check(&self) -> Option<Error> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(verdict) = &state.verdict {
            return verdict.clone();
        }
        let stream = state.stream.clone()?;
        let mut reader = stream.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = vec![0u8; 64 * 1024];
        let verdict = loop {
            match reader.read(&mut buf) {
                Ok(0) => break None,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(Error::from_io_ref(&e).unwrap_or_else(|| Error::new(ErrorKind::Corrupt, e.to_string()))),
            }
        };
        state.verdict = Some(verdict.clone());
        verdict
    }
}

enum State {
    Undecided {
        raw: Box<dyn Read + Send>,
        codec: Codec,
        keys: Keys,
        object: String,
    },
    Plain(io::Chain<io::Cursor<Vec<u8>>, Box<dyn Read + Send>>),
    Encrypted(Box<Decrypting<Box<dyn Read + Send>>>),
    OpenPgp(Shared),
    Failed,
}

impl Revealing {
    /// Wraps `raw`, the bytes of `object` stored with `codec`.
    pub fn new(raw: Box<dyn Read + Send>, codec: Codec, keys: &Keys, object: &str) -> Revealing {
        Revealing {
            state: State::Undecided {
                raw,
                codec,
                keys: keys.clone(),
                object: object.to_string(),
            },
            integrity: Integrity::default(),
        }
    }

    /// What tells, when the decoder fails, whether an OpenPGP ciphertext was damaged.
    pub fn integrity(&self) -> Integrity {
        self.integrity.clone()
    }

    fn decide(raw: Box<dyn Read + Send>, codec: Codec, keys: &Keys, object: &str) -> Result<State> {
        let mut raw = raw;
        let mut prefix = vec![0u8; libsodium::HEADER_BYTES + libsodium::SEALED];
        let n = crate::fsutil::read_up_to(&mut raw, &mut prefix)
            .map_err(|e| Error::from_io_ref(&e).unwrap_or_else(|| Error::new(ErrorKind::Unreachable, format!("{object}: {e}"))))?;
        prefix.truncate(n);
        if prefix.is_empty() {
            // Nothing to judge: the codec's decoder says what an empty object is.
            return Ok(State::Plain(io::Cursor::new(prefix).chain(raw)));
        }
        let looks = looks(codec, &prefix);
        if let Some(key) = &keys.libsodium {
            if let Some((state, first, finished)) = libsodium::open_first(&prefix, key) {
                tracing::trace!(object, "encrypted (libsodium)");
                let rest = io::Cursor::new(Vec::new()).chain(raw);
                let boxed: Box<dyn Read + Send> = Box::new(rest);
                return Ok(State::Encrypted(Box::new(Decrypting::resume(
                    boxed, state, first, finished, object,
                ))));
            }
            if looks == Looks::Opaque {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{object}: decryption failed: wrong key or damaged object (and it is not a plain {} stream either)",
                        codec_name(codec)
                    ),
                ));
            }
        }
        match looks {
            Looks::OpenPgp => match &keys.openpgp {
                Some(pgp) => {
                    tracing::trace!(object, "encrypted (OpenPGP)");
                    let whole: Box<dyn Read + Send> = Box::new(io::Cursor::new(prefix).chain(raw));
                    Ok(State::OpenPgp(Arc::new(Mutex::new(pgp.open(whole, object)?))))
                }
                None => Err(Error::new(
                    ErrorKind::Config,
                    format!("{object}: the object is OpenPGP-encrypted; set WALG_PGP_KEY_PATH (or WALG_PGP_KEY) to the secret key, with WALG_PGP_KEY_PASSPHRASE if it has one, or WALE_GPG_KEY_ID to use gpg and its key ring (GNUPGHOME)"),
                )),
            },
            Looks::Opaque => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{object}: not a {} stream: the object looks encrypted; set WALG_LIBSODIUM_KEY or WALG_LIBSODIUM_KEY_PATH (and WALG_LIBSODIUM_KEY_TRANSFORM) to the archive's libsodium key",
                    codec_name(codec)
                ),
            )),
            _ => Ok(State::Plain(io::Cursor::new(prefix).chain(raw))),
        }
    }
}

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::None => "uncompressed",
        c => c.extension(),
    }
}

impl Read for Revealing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match &mut self.state {
                State::Plain(r) => return r.read(buf),
                State::Encrypted(r) => return r.read(buf),
                State::OpenPgp(r) => return r.lock().unwrap_or_else(|p| p.into_inner()).read(buf),
                State::Failed => return Err(io::Error::other("read after a failure")),
                State::Undecided { .. } => {
                    let State::Undecided { raw, codec, keys, object } = std::mem::replace(&mut self.state, State::Failed) else {
                        unreachable!("matched above");
                    };
                    self.state = Revealing::decide(raw, codec, &keys, &object).map_err(Error::into_io)?;
                    if let State::OpenPgp(stream) = &self.state {
                        self.integrity.0.lock().unwrap_or_else(|p| p.into_inner()).stream = Some(stream.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::magic::openpgp_message as openpgp;

    fn keys() -> Keys {
        Keys {
            libsodium: Some(Key::from_setting(b"an archive key of 32 bytes, yes", "none", "k").unwrap()),
            openpgp: None,
        }
    }

    fn reveal(data: Vec<u8>, codec: Codec, keys: &Keys) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        Revealing::new(Box::new(io::Cursor::new(data)), codec, keys, "s3://b/wal_005/x")
            .read_to_end(&mut out)
            .map_err(|e| Error::from_io_ref(&e).unwrap())?;
        Ok(out)
    }

    fn lz4(data: &[u8]) -> Vec<u8> {
        let mut e = Codec::Lz4.encoder(Vec::new()).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn seal(data: &[u8], keys: &Keys) -> Vec<u8> {
        let mut e = libsodium::Encrypting::new(Vec::new(), keys.libsodium.as_ref().unwrap()).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_mixed_archive_reads_both_kinds_with_the_key() {
        let k = keys();
        let plain = lz4(&vec![3u8; 100_000]);
        assert_eq!(reveal(plain.clone(), Codec::Lz4, &k).unwrap(), plain);
        assert_eq!(reveal(seal(&plain, &k), Codec::Lz4, &k).unwrap(), plain);
        // Without a magic number to tell (brotli, none): encrypted when it authenticates.
        let raw = b"no magic here".repeat(1000);
        assert_eq!(reveal(seal(&raw, &k), Codec::None, &k).unwrap(), raw);
        assert_eq!(reveal(raw.clone(), Codec::None, &k).unwrap(), raw);
        assert_eq!(reveal(Vec::new(), Codec::Lz4, &k).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn encrypted_objects_without_the_right_key_say_so() {
        let k = keys();
        let sealed = seal(&lz4(b"data"), &k);
        let e = reveal(sealed.clone(), Codec::Lz4, &NO_KEYS).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("looks encrypted; set WALG_LIBSODIUM_KEY"), "{e}");
        let other = Keys {
            libsodium: Some(Key::from_setting(b"some other key, 25+ bytes long", "none", "k").unwrap()),
            openpgp: None,
        };
        let e = reveal(sealed, Codec::Lz4, &other).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(
            e.to_string()
                .contains("s3://b/wal_005/x: decryption failed: wrong key or damaged object"),
            "{e}"
        );
    }

    #[test]
    fn other_formats_and_openpgp_are_told_apart_from_encrypted_data() {
        let mut zstd = Codec::Zstd.encoder(Vec::new()).unwrap();
        zstd.write_all(b"zstd data").unwrap();
        let zstd = zstd.finish().unwrap();
        // zstd under an .lz4 name: not encrypted, corrupt (its decoder says so).
        for k in [&NO_KEYS, &keys()] {
            assert_eq!(reveal(zstd.clone(), Codec::Lz4, k).unwrap(), zstd);
        }
        // An old-format PKESK packet (tag 1, two length bytes, version 3, a key id,
        // RSA), as gpg writes.
        let mut pgp = vec![0x85, 0x01, 0x0C, 0x03, 1, 2, 3, 4, 5, 6, 7, 8, 0x01];
        pgp.extend(vec![7u8; 300]);
        for codec in [Codec::Lz4, Codec::Lzo, Codec::None] {
            let e = reveal(pgp.clone(), codec, &NO_KEYS).unwrap_err();
            assert!(e.to_string().contains("OpenPGP-encrypted; set WALG_PGP_KEY_PATH"), "{e}");
            assert_eq!(e.kind(), ErrorKind::Config);
        }
        // New format (0xC1), one length byte, version 3, X25519; an SKESK v4 (AES-256,
        // iterated S2K).
        assert!(openpgp(&[0xC1, 0x5E, 0x03, 1, 2, 3, 4, 5, 6, 7, 8, 25]));
        assert!(openpgp(&[0xC3, 0x0D, 0x04, 9, 3]));
        // Random-looking bytes that only start like a packet are not taken for one.
        assert!(!openpgp(&[0xC1, 0x5E, 0x03, 1, 2, 3, 4, 5, 6, 7, 8, 99]));
        assert!(!openpgp(&[0xC1, 0x5E, 0x09]) && !openpgp(&[0x04, 0x22]) && !openpgp(&[0xC3, 0x0D, 0x04, 9, 77]));
    }

    #[test]
    fn keys_come_from_the_value_or_a_trimmed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "  an archive key of 32 bytes, yes\n").unwrap();
        let p = path.display().to_string();
        let from_file = Keys::resolve(&|n| (n == "WALG_LIBSODIUM_KEY_PATH").then(|| p.clone())).unwrap();
        assert_eq!(from_file, keys());
        let inline = Keys::resolve(&|n| (n == "WALG_LIBSODIUM_KEY").then(|| "an archive key of 32 bytes, yes".into())).unwrap();
        assert_eq!(inline, keys());
        assert!(!Keys::resolve(&|_| None).unwrap().any());
        let missing = Keys::resolve(&|n| (n == "WALG_LIBSODIUM_KEY_PATH").then(|| "/nonexistent/key".into())).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::Config);
    }
}
