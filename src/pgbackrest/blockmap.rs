//! pgBackRest's block map (block incremental, final format of 2.46 and later): for every
//! block of a file, in file order, where its bytes are stored.
//!
//! A file of `size` bytes is cut into blocks of `B = bi x 8192` bytes (the last shorter).
//! A backup stores the blocks that changed, packed in order into super blocks (each one
//! compressed and encrypted on its own, "raw"), followed by the map, which lists every
//! block of the file as it is now: the backup holding it (an index into the manifest's
//! `backup-reference` list), the bundle, the super block's offset and stored size, its
//! uncompressed size, the block's place in it, and a checksum of the block.
//!
//! Encoding (unsigned LEB128 varints; "zigzag" for signed deltas): a version varint (0),
//! then references. A reference varint is `ref << 3 | flags`: bit 0 the last reference;
//! the first time a reference appears bit 1 says a bundle id follows and bit 2 an offset;
//! later, bit 1 means "continue the last super block of this reference" (bit 2 then
//! marks it the last) and, otherwise, bit 2 means a gap varint follows. A super block
//! varint is `size << 3 | flags` (the size as is for the first super block of the map,
//! then a zigzag delta from the previous one): bit 0 last super block of the reference,
//! bit 1 the super block size changes (a varint `n << 1 | more`: `n x B`, plus a
//! remainder varint when `more`), bit 2 a count of blocks follows (`(t >> 1) + 1`, and a
//! block offset varint when `t & 1`); without it the super block holds all its blocks.
//! Then one checksum of `bic` bytes per block.

use std::collections::BTreeMap;

use crate::error::{Error, ErrorKind, Result};

/// Where one block of a file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Index into the manifest's `backup-reference` list: the backup holding it.
    pub reference: u64,
    /// The bundle holding it (0: the file's own `.pgbi` object).
    pub bundle: u64,
    /// Offset of its super block in that object.
    pub offset: u64,
    /// The super block's stored (compressed, encrypted) size.
    pub size: u64,
    /// The super block's uncompressed size.
    pub super_size: u64,
    /// The block's index inside the super block.
    pub index: u64,
}

/// Per-reference state while decoding.
#[derive(Debug, Clone, Default)]
struct RefState {
    super_size: u64,
    bundle: u64,
    offset: u64,
    size: u64,
    block: u64,
}

/// Reads varints from a byte slice.
struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
    object: &'a str,
}

impl Bytes<'_> {
    fn err(&self, why: &str) -> Error {
        Error::new(ErrorKind::Corrupt, format!("{}: block map: {why}", self.object))
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.at).ok_or_else(|| self.err("ends in the middle of a number"))?;
            self.at += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.err("a number longer than 64 bits"))
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        if self.at + n > self.data.len() {
            return Err(self.err("ends in the middle of a checksum"));
        }
        self.at += n;
        Ok(())
    }
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Decodes a block map (`block_size` = `bi x 8192`, `checksum_size` = `bic`): every
/// block of the file, in order. `object` names the map in errors.
pub fn decode(map: &[u8], block_size: u64, checksum_size: usize, object: &str) -> Result<Vec<Block>> {
    let mut d = Decoder {
        r: Bytes { data: map, at: 0, object },
        refs: BTreeMap::new(),
        size_last: 0,
        block_size,
        checksum_size,
        out: Vec::new(),
    };
    if block_size == 0 {
        return Err(d.r.err("block size 0"));
    }
    if d.r.varint()? & 1 != 0 {
        return Err(d.r.err("version is not 0 (a format this walfetch does not know)"));
    }
    loop {
        let enc = d.r.varint()?;
        let reference = enc >> 3;
        let (continuation, continue_last, mut offset) = d.reference(enc)?;
        let mut first_super = true;
        loop {
            let (last_super, total_offset) = if continuation && first_super {
                let state = d.refs.get(&reference).cloned().unwrap_or_default();
                d.size_last = state.size;
                (continue_last, true)
            } else {
                let (last, total_offset, at) = d.super_block(reference, first_super)?;
                offset = at;
                (last, total_offset)
            };
            first_super = false;
            d.blocks(reference, offset, total_offset)?;
            if last_super {
                break;
            }
        }
        if enc & 1 != 0 {
            break;
        }
    }
    if d.r.at != map.len() {
        return Err(d.r.err("bytes left after the last reference"));
    }
    Ok(d.out)
}

/// A block map being decoded: the bytes, what each reference has reached, the blocks so far.
struct Decoder<'a> {
    r: Bytes<'a>,
    refs: BTreeMap<u64, RefState>,
    size_last: u64,
    block_size: u64,
    checksum_size: usize,
    out: Vec<Block>,
}

impl Decoder<'_> {
    /// A reference's header (`enc` read): whether it continues a super block, that
    /// super block's implied LAST flag, and the offset of the super block.
    fn reference(&mut self, enc: u64) -> Result<(bool, bool, u64)> {
        let reference = enc >> 3;
        Ok(match self.refs.get_mut(&reference) {
            None => {
                let bundle = if enc & 2 != 0 { self.r.varint()? } else { 0 };
                let offset = if enc & 4 != 0 { self.r.varint()? } else { 0 };
                let state = RefState {
                    super_size: self.block_size,
                    bundle,
                    offset,
                    ..RefState::default()
                };
                self.refs.insert(reference, state);
                (false, false, offset)
            }
            Some(state) if enc & 2 != 0 => (true, enc & 4 != 0, state.offset),
            Some(state) => {
                let mut off = state.offset + state.size;
                if enc & 4 != 0 {
                    off += self.r.varint()?;
                }
                state.offset = off;
                (false, false, off)
            }
        })
    }

    /// A super block's header: whether it is the reference's last, whether a block
    /// total follows, and its offset.
    fn super_block(&mut self, reference: u64, first_super: bool) -> Result<(bool, bool, u64)> {
        let sb = self.r.varint()?;
        let v = sb >> 3;
        let size = if self.size_last == 0 {
            v
        } else {
            u64::try_from(i64::try_from(self.size_last).unwrap_or(i64::MAX) + unzigzag(v))
                .map_err(|_| self.r.err("a super block of negative size"))?
        };
        let change = if sb & 2 != 0 {
            let e = self.r.varint()?;
            let mut s = (e >> 1) * self.block_size;
            if e & 1 != 0 {
                s += self.r.varint()?;
            }
            Some(s)
        } else {
            None
        };
        let state = self
            .refs
            .get_mut(&reference)
            .ok_or_else(|| self.r.err("internal: lost a reference"))?;
        if let Some(s) = change {
            state.super_size = s;
        }
        if !first_super {
            state.offset += self.size_last;
        }
        let offset = state.offset;
        state.size = size;
        state.block = 0;
        self.size_last = size;
        Ok((sb & 1 != 0, sb & 4 != 0, offset))
    }

    /// The blocks of the current super block of `reference`, at `offset`.
    fn blocks(&mut self, reference: u64, offset: u64, total_offset: bool) -> Result<()> {
        let block_size = self.block_size;
        let state = self
            .refs
            .get_mut(&reference)
            .ok_or_else(|| self.r.err("internal: lost a reference"))?;
        let total = if total_offset {
            let t = self.r.varint()?;
            if t & 1 != 0 {
                state.block += self.r.varint()?;
            }
            (t >> 1) + 1
        } else {
            state.super_size.div_ceil(block_size)
        };
        for k in 0..total {
            self.r.skip(self.checksum_size)?;
            self.out.push(Block {
                reference,
                bundle: state.bundle,
                offset,
                size: state.size,
                super_size: state.super_size,
                index: state.block + k,
            });
        }
        state.block += total;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn short(b: &[Block]) -> Vec<(u64, u64, u64, u64, u64)> {
        b.iter().map(|b| (b.reference, b.offset, b.size, b.super_size, b.index)).collect()
    }

    #[test]
    fn pgbackrests_first_map() {
        // backupTest.c, block size 1, checksums of 5 bytes.
        let map =
            hex("00 8008 18 eeee01ffff 21 eeee02ffff 06 01 01 01 eeee03ffff 8008 e10b eeee04ffff 04 01 01 eeee05ffff 21 a90b eeee88ffff");
        let blocks = decode(&map, 1, 5, "m").unwrap();
        assert_eq!(
            blocks.iter().map(|b| (b.reference, b.bundle, b.offset, b.size)).collect::<Vec<_>>(),
            [
                (128, 0, 0, 3),
                (128, 0, 3, 5),
                (0, 1, 1, 5),
                (128, 0, 8, 99),
                (0, 1, 7, 99),
                (4, 0, 0, 8)
            ]
        );
    }

    #[test]
    fn pgbackrests_second_map_with_continuations() {
        // backupTest.c, block size 3, checksums of 8 bytes (checksum bytes zeroed here).
        let c = "0000000000000000";
        let map = hex(&format!(
            "00 00 22 04 {c}{c} 15 00 {c} 08 e10b {c} 06 01 02 {c} 10 3b 01 02 {c} 02 01 01 {c} 13 01 02 {c} 09 4d 01 01 {c}"
        ));
        let blocks = decode(&map, 3, 8, "m").unwrap();
        assert_eq!(
            short(&blocks),
            [
                (0, 0, 4, 6, 0),
                (0, 0, 4, 6, 1),
                (0, 4, 5, 6, 0),
                (1, 0, 99, 3, 0),
                (0, 4, 5, 6, 3),
                (2, 0, 1, 2, 0),
                (0, 4, 5, 6, 5),
                (0, 9, 6, 2, 0),
                (1, 99, 1, 3, 1),
            ]
        );
    }

    #[test]
    fn a_whole_stored_file_and_damaged_maps() {
        // restoreTest.c's file: two super blocks of 6 bytes (two 3-byte blocks each).
        let map = hex("00 01 72 04 0e45f72b02 a3844243ac 01 49091a9fe3 9e947f00ec");
        let blocks = decode(&map, 3, 5, "m").unwrap();
        assert_eq!(
            short(&blocks),
            [(0, 0, 14, 6, 0), (0, 0, 14, 6, 1), (0, 14, 14, 6, 0), (0, 14, 14, 6, 1)]
        );
        assert!(decode(&map[..map.len() - 1], 3, 5, "m").is_err(), "cut short");
        assert!(decode(&hex("01 01 18"), 3, 5, "m").unwrap_err().to_string().contains("version"));
        let mut extra = map.clone();
        extra.push(0);
        assert!(decode(&extra, 3, 5, "m").is_err(), "trailing bytes");
    }
}
