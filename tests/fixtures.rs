//! The committed walrus archive (fixtures/walrus-archive): real 1 MiB segments in every
//! codec, fetched and validated by wal-fetch without any server.

use std::fs;
use std::path::PathBuf;

use crate::common::archive::*;
use crate::common::*;
use sha2::{Digest, Sha256};

const SYSID: u64 = 7712055447769388223;
const SEGMENTS: [(&str, &str, &str); 4] = [
    (
        "000000010000000000000007",
        "lz4",
        "c912aceb35991a1960028247172c459af3369d709a1c7fdd0dae9d6bee123839",
    ),
    (
        "000000010000000000000008",
        "zst",
        "28b84631c4e33f9b06cedf8355b8f10f8c6d8b391cd6ee8f1267d4f1a33edc7e",
    ),
    (
        "000000010000000000000009",
        "br",
        "3fcf3122bd5e10ebe3bdb3fce9b265221101447775847e5eef3f7263658b2955",
    ),
    (
        "00000001000000000000000A",
        "lzma",
        "ac4066d9a6c6eec131517b8cc689879969ec08892fcd20ece0049c94fffec983",
    ),
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_codec_of_the_walrus_fixture_archive_restores_and_validates() {
    let a = Archive::new();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/walrus-archive/wal_005");
    for (seg, ext, _) in SEGMENTS {
        a.put(
            &format!("wal_005/{seg}.{ext}"),
            &fs::read(src.join(format!("{seg}.{ext}"))).unwrap(),
        );
    }
    let dir = a.datadir(SYSID, true);
    for (seg, ext, sha) in SEGMENTS {
        let out = walfetch_in(Some(&dir), &["wal-fetch", seg, "pg_wal/RECOVERYXLOG"], &a.env());
        assert_eq!(out.status.code(), Some(0), "{seg}.{ext}: {}", stderr(&out));
        let data = fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap();
        assert_eq!(hex(&Sha256::digest(&data)), sha, "{seg}.{ext}");
    }
    // Asked for under a name it does not have, a fixture segment is refused.
    fs::rename(
        a.root.join("wal_005/000000010000000000000007.lz4"),
        a.root.join("wal_005/00000001000000000000000B.lz4"),
    )
    .unwrap();
    let out = walfetch_in(
        Some(&dir),
        &["wal-fetch", "00000001000000000000000B", "pg_wal/RECOVERYXLOG"],
        &a.env(),
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    // And a data directory of another cluster refuses them all.
    let other = a.scratch.dir("other");
    fs::create_dir_all(other.join("pg_wal")).unwrap();
    fs::create_dir_all(other.join("global")).unwrap();
    fs::write(other.join("global/pg_control"), 42u64.to_le_bytes()).unwrap();
    fs::write(other.join("standby.signal"), "").unwrap();
    give_to_postgres(&other);
    let out = walfetch_in(
        Some(&other),
        &["wal-fetch", "000000010000000000000008", "pg_wal/RECOVERYXLOG"],
        &a.env(),
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("another cluster"));
}

/// Decodes a fixture segment.
fn fixture_segment(seg: &str, ext: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/walrus-archive/wal_005/{seg}.{ext}"));
    let (_, codec) = walfetch::codec::Codec::split(&format!("x.{ext}"));
    let mut d = codec.decoder(Box::new(fs::File::open(path).unwrap()), "fixture");
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut d, &mut out).unwrap();
    out
}

#[test]
fn flipped_bytes_in_a_record_under_an_lz4_frame_without_checksum_are_refused() {
    let seg = "000000010000000000000008";
    let mut data = fixture_segment(seg, "zst");
    // A few bytes in the middle of the WAL, inside a record (non-zero bytes, past the page header).
    let at = 5 * 8192 + 1000;
    assert!(data[at..at + 4].iter().any(|b| *b != 0));
    for b in &mut data[at..at + 4] {
        *b ^= 0xA5;
    }
    // walrus frames lz4 without a content checksum: the frame decodes without complaint.
    let info = lz4_flex::frame::FrameInfo::new()
        .block_size(lz4_flex::frame::BlockSize::Max256KB)
        .content_checksum(false);
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
    std::io::Write::write_all(&mut enc, &data).unwrap();
    let a = Archive::new();
    a.put(&format!("wal_005/{seg}.lz4"), &enc.finish().unwrap());
    let dir = a.datadir(SYSID, false);
    let out = walfetch_in(Some(&dir), &["wal-fetch", seg, "pg_wal/RECOVERYXLOG"], &a.env());
    assert_eq!(
        out.status.code(),
        Some(128 + 7),
        "archive recovery must stop, not promote: {}",
        stderr(&out)
    );
    let msg = stderr(&out);
    assert!(
        msg.contains(&format!("{seg}.lz4")) && msg.contains("CRC") && msg.contains("offset"),
        "{msg}"
    );
    assert!(files_in(&dir.join("pg_wal")).is_empty());
}
