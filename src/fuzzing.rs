//! Entry points of the fuzz targets (`fuzz/`), shared with the test that replays their
//! checked-in corpus in CI (`tests/fuzz_corpus.rs`). Each must return normally on any
//! input: errors are fine, panics, hangs and unbounded memory are bugs.

use std::io::Read;

use crate::codec::Codec;
use crate::layout::backup::BackupName;
use crate::layout::files_metadata;
use crate::layout::sentinel::Sentinel;
use crate::restore::extract::sanitize;
use crate::wal::name::{Segment, WalFile};
use crate::wal::records::{check_continuation, check_segment, Checked};
use crate::wal::timeline::parse_history;

/// Segment, WAL file and backup names, and history files.
pub fn names_and_history(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines() {
            let _ = WalFile::parse(line);
            let _ = BackupName::parse(line);
            if let Some(seg) = Segment::parse(line) {
                for size in [1u64 << 20, 16 << 20, 1 << 30] {
                    if let Some(next) = seg.next(size) {
                        assert!(next.number(size) > seg.number(size));
                    }
                }
            }
        }
        let _ = parse_history(text, "fuzz");
    }
}

/// Sentinel JSON and streamed files metadata.
pub fn sentinel_json(data: &[u8]) {
    if let Ok(s) = Sentinel::read(data, "fuzz") {
        let _ = s.finish();
        let _ = s.finished_at();
    }
    let _ = files_metadata::read(data, "fuzz", &mut |_, _| Ok(()));
}

/// The LZ4 frame and lzop containers, decoded to the end (output capped).
pub fn containers(data: &[u8]) {
    for codec in [Codec::Lz4, Codec::Lzo] {
        let mut d = codec.decoder(Box::new(std::io::Cursor::new(data.to_vec())), "fuzz");
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        while let Ok(n) = d.read(&mut buf) {
            if n == 0 || total > 256 << 20 {
                break;
            }
            total += n;
        }
    }
}

/// Tar member name sanitising: whatever is accepted stays inside the target.
pub fn tar_paths(data: &[u8]) {
    if let Ok(parts) = sanitize(data, "fuzz") {
        for p in &parts {
            assert!(!p.is_empty() && p != "." && p != ".." && !p.contains('/'), "unsafe component {p:?}");
        }
    }
}

/// Record-level WAL validation on arbitrary bytes (as a 1 MiB segment when long enough).
pub fn wal_records(data: &[u8]) {
    let seg = Segment::parse("000000010000000000000001").expect("valid name");
    let _ = check_segment(data, seg, "fuzz");
    // The same bytes as two consecutive segments: a record left open by the first is
    // finished over the second.
    let (first, second) = data.split_at(data.len() / 2);
    if let Ok(Checked { open: Some(open), .. }) = check_segment(first, seg, "fuzz") {
        let next = Segment::parse("000000010000000000000002").expect("valid name");
        let _ = check_continuation(&second[..first.len().min(second.len())], next, "fuzz", &open);
    }
}

/// PostgreSQL configuration text, restore_command lines (wrappers, quoting, envdir
/// names), secret redaction, and archive locations and endpoints.
pub fn configuration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for name in ["restore_command", "standby_mode", "archive_mode"] {
        let _ = crate::pg::conf::setting(text, name);
    }
    for line in text.lines() {
        let redacted = crate::pg::conf::redact(line);
        assert!(redacted.len() <= line.len() + 8 * line.matches('=').count());
        if let Some(cmd) = crate::pg::conf::RestoreCommand::parse(line) {
            assert!(!cmd.program.is_empty());
        }
        let _ = crate::pg::conf::is_true(line);
        let _ = crate::config::parse_location(line);
        let _ = crate::config::parse_endpoint(line);
    }
}

/// libsodium decryption framing: any bytes revealed with a key (and without) end in data
/// or an error; and any data sealed, then damaged at one place, never reads back as
/// something else. The first byte picks the mode.
pub fn decryption(data: &[u8]) {
    use crate::crypto::libsodium::{Encrypting, Key};
    use crate::crypto::{Keys, Revealing, NO_KEYS};
    use std::io::Write;
    let Some((&mode, rest)) = data.split_first() else { return };
    let key = Key::from_setting(b"the fuzzing key, 32 bytes long!!", "none", "fuzz").unwrap_or_else(|_| unreachable!("a valid key"));
    let keys = Keys {
        libsodium: Some(key.clone()),
        openpgp: None,
    };
    let read_all = |bytes: Vec<u8>, keys: &Keys| -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut r = Revealing::new(Box::new(std::io::Cursor::new(bytes)), Codec::Lz4, keys, "fuzz");
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf)? {
                0 => return Ok(out),
                n if out.len() < 64 << 20 => out.extend_from_slice(&buf[..n]),
                _ => return Ok(out),
            }
        }
    };
    if mode % 2 == 0 {
        let _ = read_all(rest.to_vec(), &keys);
        let _ = read_all(rest.to_vec(), &NO_KEYS);
        return;
    }
    // Sealed data reads back exactly; one flipped bit anywhere is an error, never other data.
    let mut sealed = match Encrypting::new(Vec::new(), &key)
        .and_then(|mut e| e.write_all(rest).map(|_| e))
        .and_then(|e| e.finish())
    {
        Ok(s) => s,
        Err(_) => return,
    };
    match read_all(sealed.clone(), &keys) {
        Ok(back) => assert!(back == rest, "sealed data read back differently"),
        Err(e) => panic!("sealed data did not read back: {e}"),
    }
    let at = (usize::from(mode) * 131 + rest.len()) % sealed.len();
    sealed[at] ^= 1 << (mode % 8);
    if let Ok(back) = read_all(sealed, &keys) {
        // A damaged header or first chunk makes the object "not encrypted": then it is
        // read as it is, and is never the original data.
        assert!(back != rest || rest.is_empty(), "damaged data read back as the original");
    }
}

/// wi1 increments applied to a file: any bytes end in an applied increment or an error,
/// never a panic, a huge allocation or a file past the format's bound.
pub fn wi1(data: &[u8]) {
    let Ok(dir) = std::env::temp_dir().canonicalize() else { return };
    let path = dir.join(format!("walfetch-fuzz-wi1-{}", std::process::id()));
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
    else {
        return;
    };
    let mut buf = vec![0u8; crate::restore::delta::PAGE as usize];
    if let Ok(size) = crate::restore::delta::apply_wi1(&mut std::io::Cursor::new(data), &file, "fuzz", "fuzz", &mut buf) {
        assert_eq!(
            file.metadata().map(|m| m.len()).unwrap_or(size),
            size,
            "the file has the size the increment gives"
        );
    }
    let _ = std::fs::remove_file(&path);
}
