//! A streaming reader for lzop files (`.lzo`), the format WAL-E writes with `lzop -c`.
//!
//! ```text
//! magic      89 4C 5A 4F 00 0D 0A 1A 0A
//! header     version u16, lib version u16, [version needed u16 if version >= 0x0940],
//!            method u8, [level u8 if >= 0x0940], flags u32, [filter u32 if F_H_FILTER],
//!            mode u32, mtime low u32, [mtime high u32 if >= 0x0940], name len u8, name,
//!            checksum u32 (Adler-32, or CRC-32 with F_H_CRC32, over the header after the magic)
//!            [extra field: len u32, data, checksum u32, if F_H_EXTRA_FIELD]
//! blocks     uncompressed len u32 (0 ends the stream), compressed len u32,
//!            [Adler-32 / CRC-32 of the uncompressed bytes, per F_ADLER32_D / F_CRC32_D],
//!            [Adler-32 / CRC-32 of the compressed bytes, per F_ADLER32_C / F_CRC32_C,
//!             only when compressed < uncompressed], data (stored raw when the lengths match)
//! ```
//!
//! All integers are big-endian. Every checksum the flags announce is verified; a
//! mismatch, a truncated block or a malformed LZO1X block is an error, never output.
//! (WAL-E's GPG encryption is undone before this reader: see `crate::crypto`; a file
//! that still starts like an OpenPGP packet is reported as such.)

use super::magic::{openpgp_packet_start, LZOP as MAGIC};
use crate::fsutil::read_up_to;
use std::io::{self, Read};

const F_ADLER32_D: u32 = 0x1;
const F_ADLER32_C: u32 = 0x2;
const F_H_EXTRA_FIELD: u32 = 0x40;
const F_CRC32_D: u32 = 0x100;
const F_CRC32_C: u32 = 0x200;
const F_MULTIPART: u32 = 0x400;
const F_H_FILTER: u32 = 0x800;
const F_H_CRC32: u32 = 0x1000;
/// lzop's own limit on a block ("DO NOT CHANGE"); bounds memory on hostile input.
const MAX_BLOCK_SIZE: u32 = 64 << 20;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Adler-32 (zlib's), as lzop uses it.
pub fn adler32(seed: u32, data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (seed & 0xFFFF, seed >> 16);
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += byte as u32;
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

fn crc32(data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(data);
    h.finalize()
}

/// Reads exactly `buf.len()` bytes; end of input is "truncated".
fn read_full(r: &mut impl Read, buf: &mut [u8], what: &str) -> io::Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => invalid(format!("lzop stream truncated in {what}")),
        _ => e,
    })
}

/// Decodes an lzop stream.
pub struct LzopReader<R> {
    inner: R,
    flags: u32,
    started: bool,
    done: bool,
    block: Vec<u8>,
    pos: usize,
    compressed: Vec<u8>,
}

impl<R: Read> LzopReader<R> {
    /// Decodes `inner`; the header is read on first use.
    pub fn new(inner: R) -> Self {
        LzopReader {
            inner,
            flags: 0,
            started: false,
            done: false,
            block: Vec::new(),
            pos: 0,
            compressed: Vec::new(),
        }
    }

    fn u8(&mut self, header: &mut Vec<u8>) -> io::Result<u8> {
        let mut b = [0u8; 1];
        read_full(&mut self.inner, &mut b, "the header")?;
        header.extend_from_slice(&b);
        Ok(b[0])
    }

    fn u16(&mut self, header: &mut Vec<u8>) -> io::Result<u16> {
        let mut b = [0u8; 2];
        read_full(&mut self.inner, &mut b, "the header")?;
        header.extend_from_slice(&b);
        Ok(u16::from_be_bytes(b))
    }

    fn u32h(&mut self, header: &mut Vec<u8>) -> io::Result<u32> {
        let mut b = [0u8; 4];
        read_full(&mut self.inner, &mut b, "the header")?;
        header.extend_from_slice(&b);
        Ok(u32::from_be_bytes(b))
    }

    fn u32(&mut self, what: &str) -> io::Result<u32> {
        let mut b = [0u8; 4];
        read_full(&mut self.inner, &mut b, what)?;
        Ok(u32::from_be_bytes(b))
    }

    fn read_header(&mut self) -> io::Result<()> {
        let mut magic = [0u8; 9];
        let n = read_up_to(&mut self.inner, &mut magic)?;
        if magic[..n] != MAGIC[..n.min(9)] || n < 9 {
            if openpgp_packet_start(&magic[..n]) {
                return Err(invalid(
                    "not an lzop file: it starts like an OpenPGP packet (encrypted twice, or in a form walfetch does not recognise as encrypted)",
                ));
            }
            return Err(invalid("not an lzop file (bad magic)"));
        }
        let mut h = Vec::with_capacity(64);
        let version = self.u16(&mut h)?;
        if version < 0x0900 {
            return Err(invalid(format!("lzop version {version:#06x} is too old")));
        }
        self.u16(&mut h)?; // library version
        if version >= 0x0940 {
            self.u16(&mut h)?; // version needed to extract
        }
        let method = self.u8(&mut h)?;
        if !matches!(method, 1..=3) {
            return Err(invalid(format!("lzop method {method} is not LZO1X")));
        }
        if version >= 0x0940 {
            self.u8(&mut h)?; // level
        }
        self.flags = self.u32h(&mut h)?;
        if self.flags & F_MULTIPART != 0 {
            return Err(invalid("multipart lzop files are not supported"));
        }
        if self.flags & F_H_FILTER != 0 {
            self.u32h(&mut h)?;
        }
        self.u32h(&mut h)?; // mode
        self.u32h(&mut h)?; // mtime low
        if version >= 0x0940 {
            self.u32h(&mut h)?; // mtime high
        }
        let name_len = self.u8(&mut h)? as usize;
        let mut name = vec![0u8; name_len];
        read_full(&mut self.inner, &mut name, "the header")?;
        h.extend_from_slice(&name);
        let stored = self.u32("the header checksum")?;
        let computed = if self.flags & F_H_CRC32 != 0 { crc32(&h) } else { adler32(1, &h) };
        if stored != computed {
            return Err(invalid(format!(
                "lzop header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            )));
        }
        if self.flags & F_H_EXTRA_FIELD != 0 {
            let len = self.u32("the extra field")?;
            if len > 1 << 20 {
                return Err(invalid("lzop extra field too large"));
            }
            let mut extra = vec![0u8; len as usize];
            read_full(&mut self.inner, &mut extra, "the extra field")?;
            let stored = self.u32("the extra field checksum")?;
            let mut covered = len.to_be_bytes().to_vec();
            covered.extend_from_slice(&extra);
            let computed = if self.flags & F_H_CRC32 != 0 {
                crc32(&covered)
            } else {
                adler32(1, &covered)
            };
            if stored != computed {
                return Err(invalid("lzop extra field checksum mismatch"));
            }
        }
        Ok(())
    }

    /// Reads the next block into `self.block`; false at the end of the stream.
    fn next_block(&mut self) -> io::Result<bool> {
        let dst_len = self.u32("a block header")?;
        if dst_len == 0 {
            return Ok(false);
        }
        let src_len = self.u32("a block header")?;
        if dst_len > MAX_BLOCK_SIZE {
            return Err(invalid(format!("lzop block of {dst_len} bytes exceeds the format's limit")));
        }
        if src_len == 0 || src_len > dst_len {
            return Err(invalid(format!(
                "lzop block sizes are inconsistent ({src_len} compressed, {dst_len} uncompressed)"
            )));
        }
        let adler_d = if self.flags & F_ADLER32_D != 0 {
            Some(self.u32("a block checksum")?)
        } else {
            None
        };
        let crc_d = if self.flags & F_CRC32_D != 0 {
            Some(self.u32("a block checksum")?)
        } else {
            None
        };
        let stored = src_len == dst_len;
        let adler_c = if !stored && self.flags & F_ADLER32_C != 0 {
            Some(self.u32("a block checksum")?)
        } else {
            None
        };
        let crc_c = if !stored && self.flags & F_CRC32_C != 0 {
            Some(self.u32("a block checksum")?)
        } else {
            None
        };

        self.compressed.resize(src_len as usize, 0);
        read_full(&mut self.inner, &mut self.compressed, "block data")?;
        if let Some(sum) = adler_c {
            if adler32(1, &self.compressed) != sum {
                return Err(invalid("lzop Adler-32 checksum of compressed data does not match"));
            }
        }
        if let Some(sum) = crc_c {
            if crc32(&self.compressed) != sum {
                return Err(invalid("lzop CRC-32 checksum of compressed data does not match"));
            }
        }
        self.block.resize(dst_len as usize, 0);
        if stored {
            self.block.copy_from_slice(&self.compressed);
        } else {
            let n = lzo::decompress_into(&self.compressed, &mut self.block).map_err(|e| invalid(format!("corrupt LZO1X block: {e:?}")))?;
            if n != dst_len as usize {
                return Err(invalid(format!("LZO1X block decoded to {n} bytes, header says {dst_len}")));
            }
        }
        if let Some(sum) = adler_d {
            if adler32(1, &self.block) != sum {
                return Err(invalid("lzop Adler-32 checksum of uncompressed data does not match"));
            }
        }
        if let Some(sum) = crc_d {
            if crc32(&self.block) != sum {
                return Err(invalid("lzop CRC-32 checksum of uncompressed data does not match"));
            }
        }
        self.pos = 0;
        Ok(true)
    }
}

impl<R: Read> Read for LzopReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.started {
            self.read_header()?;
            self.started = true;
        }
        while self.pos == self.block.len() {
            if self.done || !self.next_block()? {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/lzop").join(name)).unwrap()
    }

    fn decode(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        LzopReader::new(data).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn adler32_matches_zlib() {
        assert_eq!(adler32(1, b""), 1);
        assert_eq!(adler32(1, b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn decodes_every_lzop_flavour() {
        let expected = fixture("sample.raw");
        for name in [
            "sample-default.lzo",
            "sample-crc32.lzo",
            "sample-no-checksum.lzo",
            "sample-1.lzo",
            "sample-9.lzo",
            "sample-stdin.lzo",
            "random.lzo",
        ] {
            let want = if name == "random.lzo" {
                fixture("random.raw")
            } else {
                expected.clone()
            };
            assert_eq!(decode(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}")), want, "{name}");
        }
    }

    #[test]
    fn refuses_flipped_bytes_and_truncation() {
        for name in ["sample-default.lzo", "sample-crc32.lzo", "random.lzo"] {
            let data = fixture(name);
            for at in [12, data.len() / 3, data.len() / 2, data.len() - 6] {
                let mut bad = data.clone();
                bad[at] ^= 0x41;
                assert!(decode(&bad).is_err(), "{name}: flipped byte {at} accepted");
            }
            for cut in [1, 4, 5, data.len() / 2] {
                assert!(decode(&data[..data.len() - cut]).is_err(), "{name}: cut {cut} accepted");
            }
        }
    }

    /// Re-frames an lzop file with every checksum flag (Adler-32 and CRC-32 of both the
    /// compressed and the uncompressed data), which the lzop CLI does not offer.
    fn with_all_checksums(data: &[u8]) -> Vec<u8> {
        // Header of a stdin-compressed file from lzop 1.04: fixed layout, no name.
        let flags_at = 9 + 2 + 2 + 2 + 1 + 1;
        let header_end = flags_at + 4 + 4 + 4 + 4 + 1;
        let flags = u32::from_be_bytes(data[flags_at..flags_at + 4].try_into().unwrap());
        let mut header = data[9..header_end].to_vec();
        let all = flags | F_ADLER32_D | F_CRC32_D | F_ADLER32_C | F_CRC32_C;
        header[flags_at - 9..flags_at - 9 + 4].copy_from_slice(&all.to_be_bytes());
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&adler32(1, &header).to_be_bytes());
        let mut pos = header_end + 4;
        let mut raw = Vec::new();
        LzopReader::new(data).read_to_end(&mut raw).unwrap();
        let mut raw_pos = 0;
        loop {
            let dst = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap());
            if dst == 0 {
                out.extend_from_slice(&0u32.to_be_bytes());
                return out;
            }
            let src = u32::from_be_bytes(data[pos + 4..pos + 8].try_into().unwrap());
            let c_sums = if src < dst {
                (flags & F_ADLER32_C != 0) as usize + (flags & F_CRC32_C != 0) as usize
            } else {
                0
            };
            let skip = 4 * ((flags & F_ADLER32_D != 0) as usize + (flags & F_CRC32_D != 0) as usize + c_sums);
            let body = &data[pos + 8 + skip..pos + 8 + skip + src as usize];
            let plain = &raw[raw_pos..raw_pos + dst as usize];
            out.extend_from_slice(&dst.to_be_bytes());
            out.extend_from_slice(&src.to_be_bytes());
            out.extend_from_slice(&adler32(1, plain).to_be_bytes());
            out.extend_from_slice(&crc32(plain).to_be_bytes());
            if src < dst {
                out.extend_from_slice(&adler32(1, body).to_be_bytes());
                out.extend_from_slice(&crc32(body).to_be_bytes());
            }
            out.extend_from_slice(body);
            pos += 8 + skip + src as usize;
            raw_pos += dst as usize;
        }
    }

    #[test]
    fn verifies_checksums_of_compressed_data_too() {
        let framed = with_all_checksums(&fixture("sample-stdin.lzo"));
        assert_eq!(decode(&framed).unwrap(), fixture("sample.raw"));
        // A flipped byte inside the first block's compressed data: caught by the C checksums
        // before the LZO1X decoder even runs.
        let mut bad = framed.clone();
        let first_data = 9 + 25 + 4 + 8 + 16 + 10;
        bad[first_data] ^= 0x10;
        let err = decode(&bad).unwrap_err().to_string();
        assert!(err.contains("compressed data"), "{err}");
    }

    #[test]
    fn recognises_gpg() {
        let err = decode(&[0x85, 0x01, 0x0C, 0x03, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert!(err.to_string().contains("starts like an OpenPGP packet"), "{err}");
        let err = decode(&[0xC1, 0x01, 0x0C, 0x03, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert!(err.to_string().contains("starts like an OpenPGP packet"), "{err}");
        assert!(decode(b"plain text, not lzop").unwrap_err().to_string().contains("bad magic"));
    }
}
