//! Real WAL for the record checks: archived segments whose first record began in the
//! previous segment, and a byte of such a continuation changed so that each segment
//! still passes every check of its own.

use std::fs;
use std::path::Path;

use walfetch::codec::Codec;

/// The name of segment `n` on timeline 1 (any segment size below 4 GB).
pub fn seg_name(n: u32) -> String {
    format!("0000000100000000{n:08X}")
}

/// The decoded contents of the archived lz4 segment `name` under `root`.
pub fn decode(root: &Path, name: &str) -> Vec<u8> {
    let file = fs::File::open(root.join(format!("wal_005/{name}.lz4"))).unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut Codec::Lz4.decoder(Box::new(file), name), &mut out).unwrap();
    out
}

/// The first segment numbered `from` or later whose first page continues a record of at
/// least 64 bytes begun in the previous segment, with the two segments before it archived.
pub fn continuation_victim(root: &Path, from: u32) -> u32 {
    (from.max(2)..400u32)
        .find(|n| {
            [n - 2, n - 1, *n]
                .iter()
                .all(|k| root.join(format!("wal_005/{}.lz4", seg_name(*k))).exists())
                && {
                    let d = decode(root, &seg_name(*n));
                    let info = u16::from_le_bytes([d[2], d[3]]);
                    let rem = u32::from_le_bytes(d[16..20].try_into().unwrap());
                    info & 1 == 1 && rem >= 64
                }
        })
        .expect("a record that crosses a segment boundary")
}

/// Flips a byte of the continuation at the start of archived segment `n`, and stores it
/// again under an lz4 frame without checksums (as walrus writes): the segment passes every
/// check of its own, only the record's CRC over both segments can catch it.
pub fn damage_continuation(root: &Path, n: u32) {
    let name = seg_name(n);
    let mut data = decode(root, &name);
    data[40 + 16] ^= 0x5A;
    let info = lz4_flex::frame::FrameInfo::new().content_checksum(false);
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
    std::io::Write::write_all(&mut enc, &data).unwrap();
    fs::write(root.join(format!("wal_005/{name}.lz4")), enc.finish().unwrap()).unwrap();
}
