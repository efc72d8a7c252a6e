//! pgBackRest's repository encryption, `aes-256-cbc`, decrypted as a stream.
//!
//! OpenSSL's `enc` format: `Salted__`, an 8-byte salt, then the ciphertext (the "raw"
//! form of bundled files' super blocks and block maps drops the magic: salt, then
//! ciphertext). Key and IV come from `EVP_BytesToKey` with SHA-1 and one iteration:
//! `D1 = SHA1(pass ‖ salt)`, `Dn = SHA1(Dn-1 ‖ pass ‖ salt)`, key = the first 32 bytes
//! of `D1 ‖ D2 ‖ D3`, IV the next 16. Padding is PKCS#7. The passphrase is the text
//! itself: `repo1-cipher-pass` for the info files, then the `cipher-pass` each info file
//! holds for what depends on it.
//!
//! A wrong passphrase almost always shows as bad padding at the end: it is reported as
//! "wrong passphrase or damaged object", never as data.

use std::io::{self, Read};

use aes::cipher::{BlockDecryptMut, KeyIvInit};
use sha1::{Digest, Sha1};

use crate::error::{Error, ErrorKind};
use crate::fsutil::read_up_to;

type Decryptor = cbc::Decryptor<aes::Aes256>;

/// The magic of the normal form.
const MAGIC: &[u8; 8] = b"Salted__";
/// AES block size.
const BLOCK: usize = 16;
/// Ciphertext decrypted per refill.
const CHUNK: usize = 64 * 1024;

/// Key and IV for `pass` and `salt` (EVP_BytesToKey, SHA-1, one iteration).
pub fn key_iv(pass: &[u8], salt: &[u8]) -> ([u8; 32], [u8; 16]) {
    let mut material = Vec::with_capacity(60);
    let mut last: Vec<u8> = Vec::new();
    while material.len() < 48 {
        let mut h = Sha1::new();
        h.update(&last);
        h.update(pass);
        h.update(salt);
        last = h.finalize().to_vec();
        material.extend_from_slice(&last);
    }
    let mut key = [0u8; 32];
    let mut iv = [0u8; 16];
    key.copy_from_slice(&material[..32]);
    iv.copy_from_slice(&material[32..48]);
    (key, iv)
}

/// A stream of ciphertext read as plaintext.
pub struct Decrypting<R> {
    inner: R,
    pass: Vec<u8>,
    raw: bool,
    object: String,
    cipher: Option<Decryptor>,
    /// Ciphertext read and not yet decrypted (always a whole number of blocks but the last).
    pending: Vec<u8>,
    /// Plaintext ready to hand out, from `start`.
    plain: Vec<u8>,
    start: usize,
    done: bool,
}

impl<R: Read> Decrypting<R> {
    /// Decrypts `inner` with `pass`; `raw` for the form without the `Salted__` magic.
    /// `object` names the object in errors.
    pub fn new(inner: R, pass: &str, raw: bool, object: &str) -> Decrypting<R> {
        Decrypting {
            inner,
            pass: pass.as_bytes().to_vec(),
            raw,
            object: object.to_string(),
            cipher: None,
            pending: Vec::new(),
            plain: Vec::new(),
            start: 0,
            done: false,
        }
    }

    fn error(&self, why: &str) -> io::Error {
        Error::new(ErrorKind::Corrupt, format!("{}: {why}", self.object)).into_io()
    }

    fn header(&mut self) -> io::Result<()> {
        let want = if self.raw { 8 } else { 16 };
        let mut head = vec![0u8; want];
        let got = read_up_to(&mut self.inner, &mut head)?;
        if got < want || (!self.raw && &head[..8] != MAGIC) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{}: not encrypted the way the repository's cipher says (no aes-256-cbc header): is repo1-cipher-type right for this repository?",
                    self.object
                ),
            )
            .into_io());
        }
        let salt = &head[want - 8..];
        let (key, iv) = key_iv(&self.pass, salt);
        self.cipher = Some(Decryptor::new(&key.into(), &iv.into()));
        Ok(())
    }

    /// Decrypts the next chunk into `plain`; at the end, strips the padding.
    fn refill(&mut self) -> io::Result<()> {
        if self.cipher.is_none() {
            self.header()?;
        }
        let mut buf = vec![0u8; CHUNK];
        let n = read_up_to(&mut self.inner, &mut buf)?;
        self.pending.extend_from_slice(&buf[..n]);
        let end = n < CHUNK;
        if end && self.pending.len() % BLOCK != 0 {
            return Err(self.error("the ciphertext is cut short (not whole AES blocks)"));
        }
        // Keep the last block back until the end: it holds the padding.
        let take = if end {
            self.pending.len()
        } else {
            (self.pending.len() / BLOCK).saturating_sub(1) * BLOCK
        };
        let mut blocks: Vec<u8> = self.pending.drain(..take).collect();
        if let Some(cipher) = self.cipher.as_mut() {
            for chunk in blocks.chunks_exact_mut(BLOCK) {
                cipher.decrypt_block_mut(chunk.into());
            }
        }
        if end {
            let pad = blocks.last().copied().unwrap_or(0) as usize;
            let valid =
                (1..=BLOCK).contains(&pad) && blocks.len() >= pad && blocks[blocks.len() - pad..].iter().all(|b| *b as usize == pad);
            if !valid {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{}: decryption failed: wrong passphrase or damaged object (bad padding)",
                        self.object
                    ),
                )
                .into_io());
            }
            blocks.truncate(blocks.len() - pad);
            self.done = true;
        }
        self.plain = blocks;
        self.start = 0;
        Ok(())
    }
}

impl<R: Read> Read for Decrypting<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.start >= self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = out.len().min(self.plain.len() - self.start);
        out[..n].copy_from_slice(&self.plain[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::{BlockEncryptMut, KeyIvInit};

    /// Encrypts as pgBackRest (and `openssl enc -aes-256-cbc -md sha1`) does.
    pub fn encrypt(plain: &[u8], pass: &str, salt: [u8; 8], raw: bool) -> Vec<u8> {
        let (key, iv) = key_iv(pass.as_bytes(), &salt);
        let mut enc = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into());
        let pad = BLOCK - plain.len() % BLOCK;
        let mut data = plain.to_vec();
        data.extend(std::iter::repeat_n(pad as u8, pad));
        for chunk in data.chunks_exact_mut(BLOCK) {
            enc.encrypt_block_mut(chunk.into());
        }
        let mut out = if raw { Vec::new() } else { MAGIC.to_vec() };
        out.extend_from_slice(&salt);
        out.extend(data);
        out
    }

    fn decrypt(data: &[u8], pass: &str, raw: bool) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Decrypting::new(data, pass, raw, "obj").read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn openssls_vector() {
        // openssl enc -aes-256-cbc -md sha1 -S 0001020304050607 -pass pass:secret <<< hello
        let (key, iv) = key_iv(b"secret", &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(crate::pgbackrest::ini::hex(&iv), "3990de19fb5a258d449bff4755449d32");
        assert!(crate::pgbackrest::ini::hex(&key).starts_with("72a55b86"));
        let sealed = encrypt(b"hello", "secret", [0, 1, 2, 3, 4, 5, 6, 7], false);
        assert_eq!(crate::pgbackrest::ini::hex(&sealed[16..]), "b522612c4066e545b3aa26cbc5a98a45");
    }

    #[test]
    fn round_trips_at_every_length_and_refuses_a_wrong_pass() {
        for len in [0, 1, 15, 16, 17, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for raw in [false, true] {
                let sealed = encrypt(&plain, "pw", [9; 8], raw);
                assert_eq!(decrypt(&sealed, "pw", raw).unwrap(), plain, "len {len} raw {raw}");
            }
        }
        let sealed = encrypt(&[7u8; 1000], "pw", [1; 8], false);
        let e = decrypt(&sealed, "other", false).unwrap_err();
        let e = Error::from_io_ref(&e).unwrap();
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
        let e = Error::from_io_ref(&decrypt(b"plain text that is not encrypted", "pw", false).unwrap_err()).unwrap();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        let e = Error::from_io_ref(&decrypt(&sealed[..sealed.len() - 3], "pw", false).unwrap_err()).unwrap();
        assert!(e.to_string().contains("cut short"), "{e}");
    }
}
