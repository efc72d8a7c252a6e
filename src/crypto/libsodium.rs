//! wal-g's libsodium encryption: `crypto_secretstream_xchacha20poly1305` (from `dryoc`,
//! never hand-written), as wal-g writes it.
//!
//! Format: a 24-byte header, then the plaintext in chunks of [`CHUNK`] bytes, each sealed
//! to `CHUNK + 17` bytes with the tag "message", the last one (0 to `CHUNK - 1` bytes,
//! so empty after a plaintext of whole chunks) with the tag "final"; no associated data.
//! Reading requires the final tag and nothing after it: a stream cut at a chunk boundary
//! is an error here (wal-g's reader lets it pass, leaving it to the decompressor).
//!
//! Key: 32 bytes from `WALG_LIBSODIUM_KEY` (the value as is) or `WALG_LIBSODIUM_KEY_PATH`
//! (the file, surrounding whitespace trimmed), through `WALG_LIBSODIUM_KEY_TRANSFORM`:
//! `none` (wal-g's default: at least 25 bytes, zero-padded or cut to 32), `base64` or
//! `hex` (exactly 32 bytes once decoded).

use std::fmt;
use std::io::{self, Read, Write};

use base64::Engine as _;
use dryoc::classic::crypto_secretstream_xchacha20poly1305 as ss;
use dryoc::constants::{
    CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_ABYTES as ABYTES, CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_HEADERBYTES as HEADER,
    CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_FINAL as TAG_FINAL, CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_MESSAGE as TAG_MESSAGE,
};

use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::read_up_to;

/// Plaintext bytes per sealed chunk (wal-g's).
pub const CHUNK: usize = 8192;

/// Bytes of one sealed full chunk.
pub const SEALED: usize = CHUNK + ABYTES;

/// Bytes of the stream header.
pub const HEADER_BYTES: usize = HEADER;

/// The shortest key `none` accepts, as wal-g.
const MIN_RAW_KEY: usize = 25;

/// A 32-byte secretstream key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(redacted)")
    }
}

impl Key {
    /// The key `text` gives through `transform` (`none`, `base64`, `hex`; any case, empty
    /// = none). `source` names the setting in errors; the key itself is never shown.
    pub fn from_setting(text: &[u8], transform: &str, source: &str) -> Result<Key> {
        let bad = |why: String| Error::new(ErrorKind::Config, format!("{source}: {why}"));
        let decoded = match transform.trim().to_ascii_lowercase().as_str() {
            "" | "none" => {
                if text.len() < MIN_RAW_KEY {
                    return Err(bad(format!(
                        "the key has {} bytes; with WALG_LIBSODIUM_KEY_TRANSFORM=none it needs at least {MIN_RAW_KEY} (32 are used)",
                        text.len()
                    )));
                }
                let mut key = [0u8; 32];
                let n = text.len().min(32);
                key[..n].copy_from_slice(&text[..n]);
                return Ok(Key(key));
            }
            "base64" => {
                let clean: Vec<u8> = text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(&clean)
                    .map_err(|_| bad("not base64".to_string()))?
            }
            "hex" => {
                let clean: Vec<u8> = text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
                hex_decode(&clean).ok_or_else(|| bad("not hexadecimal".to_string()))?
            }
            other => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("WALG_LIBSODIUM_KEY_TRANSFORM='{other}' is not one of none, base64, hex"),
                ))
            }
        };
        let key: [u8; 32] = decoded
            .try_into()
            .map_err(|d: Vec<u8>| bad(format!("the key decodes to {} bytes; it must be exactly 32", d.len())))?;
        Ok(Key(key))
    }
}

fn hex_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// Whether `prefix` (the first bytes of an object, at most `HEADER_BYTES + SEALED`, all
/// of it when the object is shorter) is a secretstream under `key`: its first chunk
/// authenticates. Returns the state after that chunk, its plaintext and whether it was
/// the last one; `None` when it does not authenticate (another key, or not encrypted:
/// a forgery passes with probability 2^-128).
pub fn open_first(prefix: &[u8], key: &Key) -> Option<(ss::State, Vec<u8>, bool)> {
    if prefix.len() < HEADER + ABYTES {
        return None;
    }
    let (header, rest) = prefix.split_at(HEADER);
    let chunk = &rest[..rest.len().min(SEALED)];
    let mut state = ss::State::new();
    let header: &[u8; HEADER] = header.try_into().ok()?;
    ss::crypto_secretstream_xchacha20poly1305_init_pull(&mut state, header, &key.0);
    let mut plain = vec![0u8; chunk.len() - ABYTES];
    let mut tag = 0u8;
    ss::crypto_secretstream_xchacha20poly1305_pull(&mut state, &mut plain, &mut tag, chunk, None).ok()?;
    Some((state, plain, tag == TAG_FINAL))
}

/// The plaintext of a secretstream, read chunk by chunk (memory: two chunks).
pub struct Decrypting<R> {
    inner: R,
    state: ss::State,
    sealed: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
    finished: bool,
    object: String,
}

impl<R: Read> Decrypting<R> {
    /// Continues a stream whose first chunk [`open_first`] opened; `inner` is positioned
    /// just after that chunk.
    pub fn resume(inner: R, state: ss::State, first: Vec<u8>, finished: bool, object: &str) -> Self {
        Decrypting {
            inner,
            state,
            sealed: vec![0u8; SEALED],
            plain: first,
            pos: 0,
            finished,
            object: object.to_string(),
        }
    }

    fn corrupt(&self, why: &str) -> io::Error {
        Error::new(ErrorKind::Corrupt, format!("{}: decryption failed: {why}", self.object)).into_io()
    }

    /// Reads the next sealed chunk into `plain`.
    fn next_chunk(&mut self) -> io::Result<()> {
        let n = read_up_to(&mut self.inner, &mut self.sealed)?;
        if n == 0 {
            return Err(self.corrupt("the object ends without its final chunk (cut short?)"));
        }
        if n < ABYTES {
            return Err(self.corrupt("a chunk shorter than its authentication tag (cut short?)"));
        }
        self.plain.resize(n - ABYTES, 0);
        let mut tag = 0u8;
        if ss::crypto_secretstream_xchacha20poly1305_pull(&mut self.state, &mut self.plain, &mut tag, &self.sealed[..n], None).is_err() {
            return Err(self.corrupt("wrong key or damaged object"));
        }
        self.pos = 0;
        if tag == TAG_FINAL {
            self.finished = true;
        } else if n < SEALED {
            return Err(self.corrupt("the object ends without its final chunk (cut short?)"));
        }
        Ok(())
    }
}

impl<R: Read> Read for Decrypting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.finished {
                let mut probe = [0u8; 1];
                return match read_up_to(&mut self.inner, &mut probe)? {
                    0 => Ok(0),
                    _ => Err(self.corrupt("data after the final chunk")),
                };
            }
            self.next_chunk()?;
        }
        let n = buf.len().min(self.plain.len() - self.pos);
        buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Seals what is written to it into `out` as a secretstream; [`Encrypting::finish`]
/// writes the final chunk.
pub struct Encrypting<W: Write> {
    out: W,
    state: ss::State,
    pending: Vec<u8>,
    sealed: Vec<u8>,
}

impl<W: Write> Encrypting<W> {
    /// Writes the header to `out`.
    pub fn new(mut out: W, key: &Key) -> io::Result<Self> {
        let mut state = ss::State::new();
        let mut header = [0u8; HEADER];
        ss::crypto_secretstream_xchacha20poly1305_init_push(&mut state, &mut header, &key.0);
        out.write_all(&header)?;
        Ok(Encrypting {
            out,
            state,
            pending: Vec::with_capacity(CHUNK),
            sealed: vec![0u8; SEALED],
        })
    }

    fn seal(&mut self, tag: u8) -> io::Result<()> {
        let n = self.pending.len() + ABYTES;
        ss::crypto_secretstream_xchacha20poly1305_push(&mut self.state, &mut self.sealed[..n], &self.pending, None, tag)
            .map_err(|e| io::Error::other(format!("libsodium: {e:?}")))?;
        self.out.write_all(&self.sealed[..n])?;
        self.pending.clear();
        Ok(())
    }

    /// Seals the rest (possibly nothing) as the final chunk; returns `out`.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal(TAG_FINAL)?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Encrypting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == CHUNK {
            self.seal(TAG_MESSAGE)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_setting(b"0123456789abcdef0123456789abcdef", "none", "test").unwrap()
    }

    fn seal(data: &[u8], key: &Key) -> Vec<u8> {
        let mut e = Encrypting::new(Vec::new(), key).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn open(sealed: &[u8], key: &Key) -> io::Result<Vec<u8>> {
        let prefix = &sealed[..sealed.len().min(HEADER_BYTES + SEALED)];
        let (state, first, fin) = open_first(prefix, key).ok_or_else(|| io::Error::other("first chunk"))?;
        let mut out = Vec::new();
        Decrypting::resume(&sealed[prefix.len()..], state, first, fin, "obj").read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_chunk_boundary() {
        let k = key();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 77] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let sealed = seal(&data, &k);
            // Header, whole chunks, and always a final chunk (empty after whole chunks).
            assert_eq!(sealed.len(), HEADER_BYTES + len / CHUNK * SEALED + len % CHUNK + ABYTES, "{len}");
            assert_eq!(open(&sealed, &k).unwrap(), data, "{len}");
        }
    }

    #[test]
    fn wrong_key_cut_short_or_extended_streams_fail() {
        let k = key();
        let data = vec![5u8; 3 * CHUNK + 10];
        let sealed = seal(&data, &k);
        let other = Key::from_setting(b"another key of at least 25 bytes", "none", "t").unwrap();
        assert!(open_first(&sealed[..HEADER_BYTES + SEALED], &other).is_none());
        // Cut at a chunk boundary: no final chunk.
        let cut = &sealed[..HEADER_BYTES + 2 * SEALED];
        let err = open(cut, &k).unwrap_err();
        assert!(err.to_string().contains("without its final chunk"), "{err}");
        // A flipped byte in a later chunk.
        let mut damaged = sealed.clone();
        damaged[HEADER_BYTES + SEALED + 100] ^= 1;
        let err = open(&damaged, &k).unwrap_err();
        assert!(err.to_string().contains("wrong key or damaged object"), "{err}");
        // Bytes after the final chunk: in the same read as the final chunk, they fail
        // its authentication; after a full final chunk, they are reported as such.
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(open(&longer, &k).is_err());
        // A final tag on a full chunk, as walrus may write: sealed by hand here.
        let mut state = ss::State::new();
        let mut header = [0u8; HEADER];
        ss::crypto_secretstream_xchacha20poly1305_init_push(&mut state, &mut header, &k.0);
        let mut full_final = header.to_vec();
        let mut sealed_chunk = vec![0u8; SEALED];
        ss::crypto_secretstream_xchacha20poly1305_push(&mut state, &mut sealed_chunk, &[1u8; CHUNK], None, TAG_FINAL).unwrap();
        full_final.extend_from_slice(&sealed_chunk);
        assert_eq!(open(&full_final, &k).unwrap(), vec![1u8; CHUNK]);
        full_final.push(9);
        assert!(open(&full_final, &k).unwrap_err().to_string().contains("after the final chunk"));
    }

    #[test]
    fn keys_follow_wal_g_transforms() {
        let raw = b"0123456789012345678901234";
        let padded = Key::from_setting(raw, "none", "k").unwrap();
        let mut expect = [0u8; 32];
        expect[..25].copy_from_slice(raw);
        assert_eq!(padded, Key(expect));
        assert!(Key::from_setting(b"too short", "none", "k")
            .unwrap_err()
            .to_string()
            .contains("at least 25"));
        let long = Key::from_setting(&[b'x'; 40], "NONE", "k").unwrap();
        assert_eq!(long, Key([b'x'; 32]));
        let bytes: Vec<u8> = (0..32).collect();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            Key::from_setting(hex.as_bytes(), "hex", "k").unwrap(),
            Key(bytes.clone().try_into().unwrap())
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert_eq!(
            Key::from_setting(format!("{b64}\n").as_bytes(), "base64", "k").unwrap().0.to_vec(),
            bytes
        );
        let e = Key::from_setting(b"00ff", "hex", "WALG_LIBSODIUM_KEY").unwrap_err();
        assert!(e.to_string().contains("decodes to 2 bytes"), "{e}");
        assert!(!e.to_string().contains("00ff"), "the key is never shown: {e}");
        assert!(Key::from_setting(raw, "rot13", "k").unwrap_err().to_string().contains("rot13"));
        assert_eq!(format!("{padded:?}"), "Key(redacted)");
    }
}
