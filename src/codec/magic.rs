//! The first bytes of every stream format walfetch meets, in one place: what a decoder
//! checks before it reads, and what sniffing an object (which codec wrote it? is it
//! encrypted?) compares against ([`crate::crypto`]).

/// An LZ4 frame's magic number (0x184D2204, little-endian).
pub const LZ4_FRAME: [u8; 4] = [0x04, 0x22, 0x4D, 0x18];

/// A skippable frame's magic number (LZ4's and zstd's alike), little-endian, with its
/// low four bits free ([`SKIPPABLE_MASK`]).
pub const SKIPPABLE_FRAME: u32 = 0x184D_2A50;

/// The bits of a magic number that make it a skippable frame's.
pub const SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;

/// A zstd frame's magic number (0xFD2FB528, little-endian).
pub const ZSTD_FRAME: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// The lzop file signature (WAL-E's `.lzo`).
pub const LZOP: [u8; 9] = [0x89, 0x4C, 0x5A, 0x4F, 0x00, 0x0D, 0x0A, 0x1A, 0x0A];

/// gzip's magic number and deflate method.
pub const GZIP: [u8; 3] = [0x1F, 0x8B, 0x08];

/// bzip2's signature (then the block size digit).
pub const BZIP2: [u8; 3] = *b"BZh";

/// Snappy's framing format: its stream identifier chunk.
pub const SNAPPY_FRAMED: [u8; 10] = [0xFF, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'];

/// xz's stream header magic.
pub const XZ: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0];

/// The properties byte LZMA-alone streams start with as wal-g, walrus and walfetch
/// write them (lc=3 lp=0 pb=2; others are possible).
pub const LZMA_ALONE_PROPERTIES: u8 = 0x5D;

/// Whether `p` starts with a skippable frame (of LZ4 or zstd).
pub fn skippable(p: &[u8]) -> bool {
    p.len() >= 4 && u32::from_le_bytes([p[0], p[1], p[2], p[3]]) & SKIPPABLE_MASK == SKIPPABLE_FRAME
}

/// Whether `first` starts like an OpenPGP packet header of tag 1 or 3 (a public- or
/// symmetric-key encrypted session key), old or new format: the loose test, for a
/// hint in an error about data that is not what it should be.
pub fn openpgp_packet_start(first: &[u8]) -> bool {
    let Some(&b) = first.first() else {
        return false;
    };
    if b & 0x80 == 0 {
        return false;
    }
    let tag = if b & 0x40 != 0 { b & 0x3F } else { (b >> 2) & 0x0F };
    matches!(tag, 1 | 3)
}

/// Whether `p` starts with an OpenPGP encrypted session key packet (tag 1 or 3, old or
/// new format) whose first fields are plausible: how an encrypted OpenPGP message
/// begins. (A libsodium header is random; the fields checked make a chance match about
/// one in 10^5.)
pub fn openpgp_message(p: &[u8]) -> bool {
    let Some(&first) = p.first() else { return false };
    if first & 0x80 == 0 {
        return false;
    }
    let (tag, body) = if first & 0x40 != 0 {
        // New format: one length byte below 192, two from 192 to 223, five at 255.
        let len_bytes = match p.get(1) {
            Some(&l) if l < 192 => 1,
            Some(&l) if l < 224 => 2,
            Some(&255) => 5,
            _ => return false,
        };
        (first & 0x3F, 2 + len_bytes - 1)
    } else {
        let len_bytes = [1, 2, 4, 0][(first & 0x03) as usize];
        ((first >> 2) & 0x0F, 1 + len_bytes)
    };
    match (tag, p.get(body)) {
        // PKESK v3: the recipient's key id (8 bytes), then its public-key algorithm
        // (RSA, Elgamal, ECDH, X25519, X448).
        (1, Some(3)) => matches!(p.get(body + 9), Some(1 | 2 | 16 | 18 | 20 | 25 | 26)),
        // SKESK v4: a symmetric algorithm, then an S2K type.
        (3, Some(4)) => matches!(p.get(body + 1), Some(1..=13)) && matches!(p.get(body + 2), Some(0 | 1 | 3 | 4 | 101)),
        (1, Some(6)) | (3, Some(5 | 6)) => true,
        _ => false,
    }
}
