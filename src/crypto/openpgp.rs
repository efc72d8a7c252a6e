//! OpenPGP-encrypted archives: wal-g's PGP mode and WAL-E's GPG.
//!
//! Two ways to hold the key, as the archivers offer them:
//! - **a key as data** (`WALG_PGP_KEY`, the armored key itself, or `WALG_PGP_KEY_PATH`, a
//!   file, armored or binary; `WALG_PGP_KEY_PASSPHRASE` unlocks it): decrypted in process
//!   with rPGP. A secret key reads and writes; a public key only writes.
//! - **the user's GnuPG key ring** (`WALE_GPG_KEY_ID`, with `GNUPGHOME`): the `gpg`
//!   program decrypts (`gpg --decrypt`) and encrypts (`gpg --encrypt -z 0 -r ID`), as
//!   WAL-E does. GnuPG 2.1 and later keep secret keys in gpg-agent's own store
//!   (`private-keys-v1.d`, S-expressions under the agent's protection, perhaps on a
//!   smartcard), not as OpenPGP packets; only gpg reads that store, so the key ring is
//!   used through gpg (see docs/DESIGN.md).
//!
//! Both stream: rPGP reads SEIPD v1 in its streaming mode (the integrity check, the MDC,
//! comes at the end of the message, so a damaged object fails at its last read, before
//! any file made from it is installed), and gpg's output is read as it comes, its exit
//! status checked at the end. A failure of the object's own bytes (network, credentials)
//! is reported as itself, never as a decryption failure.

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use pgp::composed::{DecryptionOptions, Message, MessageBuilder, PublicOrSecret, SignedPublicKey, SignedSecretKey, TheRing};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{KeyDetails, Password, Seipdv1ReadMode};

use crate::error::{Error, ErrorKind, Result};

/// Read size for the object under decryption.
const READ_BUFFER: usize = 64 * 1024;

/// How much of gpg's standard error is kept for the error message.
const STDERR_KEPT: usize = 4096;

/// An OpenPGP key an archive is read or written with. Never printed.
#[derive(Clone)]
pub enum Pgp {
    /// A key given as data (`WALG_PGP_KEY`, `WALG_PGP_KEY_PATH`).
    Key(Arc<KeyData>),
    /// WAL-E's `WALE_GPG_KEY_ID`: the gpg program and the user's key ring.
    KeyRing {
        /// The key (id, fingerprint or user id) objects are encrypted to.
        key_id: String,
        /// The gpg program (`WALFETCH_GPG`, else `gpg` from `PATH`).
        program: String,
    },
}

/// A key given as data: every key in it (wal-g encrypts to each, and any secret one
/// may open an object).
pub struct KeyData {
    /// The secret keys (needed to read).
    secrets: Vec<SignedSecretKey>,
    /// The public keys (what objects are encrypted to).
    publics: Vec<SignedPublicKey>,
    /// Unlocks the secret keys (`WALG_PGP_KEY_PASSPHRASE`; empty when unset).
    passphrase: Password,
    /// Whether a passphrase was given.
    passphrase_given: bool,
    /// Whether the passphrase unlocks the keys (see [`KeyData::unlocks`]).
    unlocked: OnceLock<Result<()>>,
    /// The primary keys' fingerprints, for comparisons and messages.
    fingerprint: String,
    /// The setting the key came from, for messages.
    setting: &'static str,
}

impl fmt::Debug for Pgp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pgp::Key(k) => write!(f, "Pgp::Key({} {})", k.setting, k.fingerprint),
            Pgp::KeyRing { key_id, .. } => write!(f, "Pgp::KeyRing({key_id})"),
        }
    }
}

impl PartialEq for Pgp {
    fn eq(&self, other: &Pgp) -> bool {
        match (self, other) {
            (Pgp::Key(a), Pgp::Key(b)) => a.fingerprint == b.fingerprint && a.secrets.len() == b.secrets.len(),
            (Pgp::KeyRing { key_id: a, program: pa }, Pgp::KeyRing { key_id: b, program: pb }) => a == b && pa == pb,
            _ => false,
        }
    }
}

impl Eq for Pgp {}

impl Pgp {
    /// The OpenPGP key the settings give, if any: `WALG_PGP_KEY` (the key itself),
    /// `WALG_PGP_KEY_PATH` (a file) with `WALG_PGP_KEY_PASSPHRASE`, else
    /// `WALG_GPG_KEY_ID` or `WALE_GPG_KEY_ID` (the gpg key ring), in wal-g's order.
    pub fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Pgp>> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let passphrase = set("WALG_PGP_KEY_PASSPHRASE").unwrap_or_default();
        if let Some(text) = set("WALG_PGP_KEY") {
            // As wal-g reads it: the armored key, with literal "\\n" standing for newlines.
            let text = text.replace("\\n", "\n");
            return KeyData::parse(text.as_bytes(), &passphrase, "WALG_PGP_KEY").map(|k| Some(Pgp::Key(Arc::new(k))));
        }
        if let Some(path) = set("WALG_PGP_KEY_PATH") {
            let path = path.trim();
            let data = std::fs::read(path).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("WALG_PGP_KEY_PATH={path}: cannot read the key file: {e}"),
                )
            })?;
            return KeyData::parse(&data, &passphrase, "WALG_PGP_KEY_PATH").map(|k| Some(Pgp::Key(Arc::new(k))));
        }
        let key_id = set("WALG_GPG_KEY_ID").or_else(|| set("WALE_GPG_KEY_ID"));
        let program = set("WALFETCH_GPG").unwrap_or_else(|| "gpg".to_string());
        Ok(key_id.map(|id| Pgp::KeyRing {
            key_id: id.trim().to_string(),
            program,
        }))
    }

    /// The setting this key came from (for messages).
    pub fn setting(&self) -> &'static str {
        match self {
            Pgp::Key(k) => k.setting,
            Pgp::KeyRing { .. } => "WALE_GPG_KEY_ID",
        }
    }

    /// The plaintext of `raw`, an OpenPGP message stored as `object`, as it streams.
    /// A failure of `raw` itself comes out as that failure; anything else that goes
    /// wrong is "decryption failed: wrong key or damaged object" (corrupt).
    pub fn open(&self, raw: Box<dyn Read + Send>, object: &str) -> Result<Box<dyn Read + Send>> {
        let slot = Slot::default();
        let watched = Watched {
            inner: raw,
            slot: slot.clone(),
        };
        match self {
            Pgp::Key(key) => key.open(watched, object, slot),
            Pgp::KeyRing { program, .. } => GpgReader::start(program, watched, object, slot).map(|r| Box::new(r) as Box<dyn Read + Send>),
        }
    }

    /// Encrypts everything `plain` yields into `out` as one binary OpenPGP message to
    /// this key (no compression inside: the data is compressed already).
    pub fn seal(&self, plain: &mut (dyn Read + Send), out: &mut dyn Write) -> io::Result<()> {
        match self {
            Pgp::Key(key) => key.seal(plain, out),
            Pgp::KeyRing { key_id, program } => gpg_encrypt(program, key_id, plain, out),
        }
    }
}

impl KeyData {
    /// Parses armored or binary keys (secret, or public only).
    fn parse(data: &[u8], passphrase: &str, setting: &'static str) -> Result<KeyData> {
        let bad = |e: &dyn fmt::Display| Error::new(ErrorKind::Config, format!("{setting}: not an OpenPGP key (armored or binary): {e}"));
        let (keys, _) = PublicOrSecret::from_reader_many(data).map_err(|e| bad(&e))?;
        let mut secrets = Vec::new();
        let mut publics = Vec::new();
        for key in keys {
            match key.map_err(|e| bad(&e))? {
                PublicOrSecret::Secret(secret) => {
                    publics.push(secret.to_public_key());
                    secrets.push(secret);
                }
                PublicOrSecret::Public(public) => publics.push(public),
            }
        }
        if publics.is_empty() {
            return Err(bad(&"no key in it"));
        }
        let fingerprint = publics.iter().map(|p| p.fingerprint().to_string()).collect::<Vec<_>>().join(",");
        let given = !passphrase.is_empty();
        let passphrase = Password::from(passphrase);
        Ok(KeyData {
            secrets,
            publics,
            passphrase,
            passphrase_given: given,
            fingerprint,
            setting,
            unlocked: OnceLock::new(),
        })
    }

    /// Whether the passphrase unlocks the secret keys, found once per process at the
    /// first object to decrypt (not at start-up: unlocking runs the key's S2K, costly
    /// on every restore_command call, and most archives hold no OpenPGP object). A
    /// wrong passphrase is a setting to fix (exit 3), not a decryption failure. Only
    /// keys that can decrypt are tried (a primary key kept offline, as a stub, need not
    /// open).
    fn unlocks(&self) -> Result<()> {
        self.unlocked
            .get_or_init(|| {
                for secret in &self.secrets {
                    let (mut locked, mut opened) = (0, 0);
                    if secret.primary_key.algorithm().can_encrypt() && secret.primary_key.secret_params().is_encrypted() {
                        locked += 1;
                        opened += usize::from(secret.primary_key.unlock(&self.passphrase, |_, _| Ok(())).is_ok());
                    }
                    for sub in secret
                        .secret_subkeys
                        .iter()
                        .filter(|s| s.key.algorithm().can_encrypt() && s.key.secret_params().is_encrypted())
                    {
                        locked += 1;
                        opened += usize::from(sub.key.unlock(&self.passphrase, |_, _| Ok(())).is_ok());
                    }
                    if locked > 0 && opened == 0 {
                        let what = if self.passphrase_given {
                            "does not unlock it"
                        } else {
                            "is not set"
                        };
                        return Err(Error::new(
                            ErrorKind::Config,
                            format!(
                                "{}: the secret key {} is protected by a passphrase and WALG_PGP_KEY_PASSPHRASE {what}",
                                self.setting,
                                secret.fingerprint()
                            ),
                        ));
                    }
                }
                Ok(())
            })
            .clone()
    }

    fn open(&self, watched: Watched, object: &str, slot: Slot) -> Result<Box<dyn Read + Send>> {
        let failed = |e: &dyn fmt::Display| slot.take().unwrap_or_else(|| decryption_failed(object, e));
        if self.secrets.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{object}: the object is OpenPGP-encrypted and {} holds a public key only; give the secret key to read",
                    self.setting
                ),
            ));
        }
        self.unlocks()?;
        let message = Message::from_bytes(BufReader::with_capacity(READ_BUFFER, watched)).map_err(|e| failed(&e))?;
        if !message.is_encrypted() {
            return Err(failed(&"an OpenPGP message, but not an encrypted one"));
        }
        let ring = TheRing {
            secret_keys: self.secrets.iter().collect(),
            key_passwords: vec![&self.passphrase; self.secrets.len()],
            // Streaming: the MDC is checked at the end (see the module doc). GnuPG's
            // OCB packets (gpg 2.3+ with keys that announce AEAD) and, for old archives,
            // packets without an MDC are read too: what follows (lzop checksums, tar
            // structure, WAL record CRCs) checks the plaintext.
            decrypt_options: DecryptionOptions::new()
                .set_seipdv1_read_mode(Seipdv1ReadMode::Streaming)
                .enable_gnupg_aead()
                .enable_legacy(),
            ..TheRing::default()
        };
        let (mut message, _) = message.decrypt_the_ring(ring, true).map_err(|e| failed(&e))?;
        if message.is_compressed() {
            message = message.decompress().map_err(|e| failed(&e))?;
        }
        Ok(Box::new(Plaintext {
            inner: message,
            slot,
            object: object.to_string(),
        }))
    }

    fn seal(&self, plain: &mut (dyn Read + Send), out: &mut dyn Write) -> io::Result<()> {
        let mut rng = rand::thread_rng();
        let mut builder = MessageBuilder::from_reader("", plain).seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
        let encrypt_to = |e: pgp::errors::Error| io::Error::other(format!("{}: cannot encrypt to this key: {e}", self.setting));
        for public in &self.publics {
            let subkey = public
                .public_subkeys
                .iter()
                .find(|s| s.key.algorithm().can_encrypt() && s.signatures.iter().all(|sig| encrypts(sig.key_flags())));
            match subkey {
                Some(subkey) => builder.encrypt_to_key(&mut rng, &subkey.key).map_err(encrypt_to)?,
                None if public.primary_key.algorithm().can_encrypt() => {
                    builder.encrypt_to_key(&mut rng, &public.primary_key).map_err(encrypt_to)?
                }
                None => {
                    return Err(io::Error::other(format!(
                        "{}: the key {} has no encryption key",
                        self.setting,
                        public.fingerprint()
                    )))
                }
            };
        }
        builder.to_writer(&mut rng, out).map_err(|e| match e {
            pgp::errors::Error::IO { source, .. } => source,
            e => io::Error::other(e.to_string()),
        })
    }
}

/// Whether key flags allow encryption (no flags at all: nothing said, allowed).
fn encrypts(flags: pgp::packet::KeyFlags) -> bool {
    flags.encrypt_comms() || flags.encrypt_storage() || !(flags.sign() || flags.certify() || flags.authentication())
}

fn decryption_failed(object: &str, cause: &dyn fmt::Display) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("{object}: decryption failed: wrong key or damaged object (OpenPGP: {cause})"),
    )
}

/// The first failure of the object's own bytes.
#[derive(Clone, Default)]
struct Slot(Arc<Mutex<Option<Error>>>);

impl Slot {
    fn put(&self, e: &io::Error) {
        let err = Error::from_io_ref(e).unwrap_or_else(|| Error::new(ErrorKind::Unreachable, e.to_string()));
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(err);
    }

    fn take(&self) -> Option<Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The object's bytes, failures noted in the slot.
struct Watched {
    inner: Box<dyn Read + Send>,
    slot: Slot,
}

impl fmt::Debug for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Watched")
    }
}

impl Read for Watched {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| self.slot.put(e))
    }
}

/// rPGP's plaintext, its errors told apart: the object's own failure, or decryption.
struct Plaintext {
    inner: Message<'static>,
    slot: Slot,
    object: String,
}

impl Read for Plaintext {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| self.slot.take().unwrap_or_else(|| decryption_failed(&self.object, &e)).into_io())
    }
}

/// `gpg --decrypt` over the object: fed by a thread, its output read as it comes, its
/// exit status checked at the end.
struct GpgReader {
    child: Child,
    stdout: ChildStdout,
    feeder: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    slot: Slot,
    object: String,
    done: bool,
}

fn spawn_gpg(program: &str, args: &[&str], what: &str) -> Result<Child> {
    Command::new(program)
        .args(["--batch", "--no-tty", "--quiet"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("WALE_GPG_KEY_ID is set, so {what} needs the gpg program ({program}), which did not start: {e}; install GnuPG or give the key as a file with WALG_PGP_KEY_PATH"),
            )
        })
}

/// Keeps the first [`STDERR_KEPT`] bytes of a child's standard error, reading it to the end.
fn collect(mut stderr: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = STDERR_KEPT.saturating_sub(kept.len()).min(n);
            kept.extend_from_slice(&buf[..room]);
        }
        kept
    })
}

/// The last non-empty line gpg wrote on its standard error.
fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_string()
}

impl GpgReader {
    fn start(program: &str, mut watched: Watched, object: &str, slot: Slot) -> Result<GpgReader> {
        let mut child = spawn_gpg(program, &["--decrypt"], "reading an OpenPGP-encrypted object")?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            return Err(Error::new(ErrorKind::Config, "gpg started without its pipes"));
        };
        let feeder = std::thread::spawn(move || {
            // A failure of the object's bytes is noted in the slot by Watched; gpg
            // closing its input early shows in its exit status.
            let _ = io::copy(&mut watched, &mut stdin);
        });
        Ok(GpgReader {
            child,
            stdout,
            feeder: Some(feeder),
            stderr: Some(collect(stderr)),
            slot,
            object: object.to_string(),
            done: false,
        })
    }

    /// At the end of gpg's output: the object's failure, or gpg's.
    fn finish(&mut self) -> Result<()> {
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
        let status = self
            .child
            .wait()
            .map_err(|e| Error::new(ErrorKind::Unreachable, format!("{}: waiting for gpg: {e}", self.object)))?;
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        if let Some(e) = self.slot.take() {
            return Err(e);
        }
        if status.success() {
            return Ok(());
        }
        Err(decryption_failed(
            &self.object,
            &format!("gpg exited with {status}: {}", last_line(&stderr)),
        ))
    }
}

impl Read for GpgReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        match self.stdout.read(buf) {
            Ok(0) => {
                self.done = true;
                self.finish().map_err(Error::into_io)?;
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0).and(Err(e)),
            Err(e) => {
                self.done = true;
                let _ = self.child.kill();
                let err = self.finish().err().unwrap_or_else(|| decryption_failed(&self.object, &e));
                Err(err.into_io())
            }
        }
    }
}

impl Drop for GpgReader {
    fn drop(&mut self) {
        if !self.done {
            // Read no further: stop gpg, which ends the feeder (its pipe breaks).
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `gpg --encrypt -z 0 -r ID` from `plain` into `out`, as WAL-E encrypts.
fn gpg_encrypt(program: &str, key_id: &str, plain: &mut (dyn Read + Send), out: &mut dyn Write) -> io::Result<()> {
    let mut child = spawn_gpg(
        program,
        &["--encrypt", "-z", "0", "--trust-model", "always", "-r", key_id],
        "writing with a gpg key",
    )
    .map_err(Error::into_io)?;
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        return Err(io::Error::other("gpg started without its pipes"));
    };
    let stderr = collect(stderr);
    let copied = std::thread::scope(|s| {
        let feeder = s.spawn(move || {
            let fed = io::copy(plain, &mut stdin);
            drop(stdin);
            fed
        });
        let read = io::copy(&mut stdout, out);
        let fed = feeder.join().unwrap_or_else(|_| Err(io::Error::other("gpg input feeder panicked")));
        fed.and(read)
    });
    let status = child.wait()?;
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(io::Error::other(format!(
            "gpg --encrypt -r {key_id} exited with {status}: {}",
            last_line(&stderr)
        )));
    }
    copied.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_of_gpg_says_why() {
        assert_eq!(
            last_line(b"gpg: encrypted with RSA key\ngpg: decryption failed: No secret key\n\n"),
            "gpg: decryption failed: No secret key"
        );
        assert_eq!(last_line(b""), "no message");
    }

    #[test]
    fn flags_that_say_nothing_allow_encryption() {
        assert!(encrypts(pgp::packet::KeyFlags::default()));
    }
}
