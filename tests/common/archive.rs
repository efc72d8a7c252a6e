//! Archives built by hand for tests: objects written straight into a directory that is
//! both a file archive and (below an s3s-fs data directory) a bucket prefix.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use walfetch::codec::Codec;

use super::{give_to_postgres, Scratch, BUCKET};

/// An archive root in a scratch directory.
pub struct Archive {
    pub scratch: Scratch,
    /// The archive root: `<scratch>/s3/<bucket>/pg`, so an s3s-fs started on
    /// `<scratch>/s3` serves it as `s3://<bucket>/pg`.
    pub root: PathBuf,
}

impl Archive {
    pub fn new() -> Archive {
        let scratch = Scratch::new();
        let root = scratch.dir(&format!("s3/{BUCKET}/pg"));
        Archive { scratch, root }
    }

    /// The s3s-fs data directory that serves this archive.
    pub fn s3_data(&self) -> PathBuf {
        self.scratch.path().join("s3")
    }

    /// Settings for the archive as a directory.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("WALG_FILE_PREFIX".into(), self.root.display().to_string())]
    }

    /// Writes an object.
    pub fn put(&self, key: &str, data: &[u8]) {
        let path = self.root.join(key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        give_to_postgres(&self.scratch.path().join("s3"));
    }

    /// Deletes an object.
    pub fn remove(&self, key: &str) {
        fs::remove_file(self.root.join(key)).unwrap();
    }

    /// A data directory with pg_wal and a pg_control carrying `sysid`.
    pub fn datadir(&self, sysid: u64, standby: bool) -> PathBuf {
        let dir = self.scratch.dir("pgdata");
        fs::create_dir_all(dir.join("pg_wal")).unwrap();
        fs::create_dir_all(dir.join("global")).unwrap();
        let mut control = sysid.to_le_bytes().to_vec();
        control.resize(8192, 0);
        fs::write(dir.join("global/pg_control"), control).unwrap();
        if standby {
            fs::write(dir.join("standby.signal"), "").unwrap();
        }
        give_to_postgres(&dir);
        dir
    }
}

/// `data` compressed with `codec`.
pub fn encode(codec: Codec, data: &[u8]) -> Vec<u8> {
    let mut enc = codec.encoder(Vec::new()).unwrap();
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Name, contents, and symlink target (for link members) of a tar member.
pub type Member<'a> = (&'a str, &'a [u8], Option<&'a str>);

/// A tar with members written verbatim (hostile names are not normalised).
pub fn tar_of(members: &[Member]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, link) in members {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o600);
        if name.len() > 100 {
            b.append_data(&mut h, name, *data).unwrap();
            continue;
        }
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        match link {
            Some(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Name of the synthetic backup.
pub const BACKUP: &str = "base_000000010000000000000002";

/// The backup_label of [`synthetic_backup`]: its start and checkpoint agree with the sentinel.
pub const SYNTHETIC_LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-25 09:45:04 UTC\nLABEL: synthetic\nSTART TIMELINE: 1\n";

/// A synthetic wal-g backup: data parts (lz4), pg_control.tar, backup_label.tar, files
/// metadata, sentinel, and the one (16 MiB) WAL segment it needs to become consistent.
pub fn synthetic_backup(a: &Archive, parts: &[&[Member]], metadata: Option<&str>) {
    let dir = format!("basebackups_005/{BACKUP}");
    for (i, part) in parts.iter().enumerate() {
        a.put(
            &format!("{dir}/tar_partitions/part_{:03}.tar.lz4", i + 1),
            &encode(Codec::Lz4, &tar_of(part)),
        );
    }
    a.put(
        &format!("{dir}/tar_partitions/pg_control.tar.lz4"),
        &encode(Codec::Lz4, &tar_of(&[("/global/pg_control", &[1u8; 8192], None)])),
    );
    a.put(
        "wal_005/000000010000000000000002.lz4",
        &encode(Codec::Lz4, &super::fake_segment("000000010000000000000002", 16 << 20, 7)),
    );
    a.put(
        &format!("{dir}/tar_partitions/backup_label.tar.lz4"),
        &encode(Codec::Lz4, &tar_of(&[("backup_label", SYNTHETIC_LABEL.as_bytes(), None)])),
    );
    if let Some(m) = metadata {
        a.put(&format!("{dir}/files_metadata.json"), m.as_bytes());
    }
    a.put(
        &format!("basebackups_005/{BACKUP}_backup_stop_sentinel.json"),
        br#"{"LSN":33554472,"FinishLSN":33554688,"PgVersion":150018,"SystemIdentifier":7,"Version":2,"FinishTime":"2026-11-25T09:45:05Z"}"#,
    );
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Regular files in `dir` (not directories).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
