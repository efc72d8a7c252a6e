//! Structural check of LZ4 frames as their bytes stream past, without decompressing.
//!
//! `lz4_flex`'s frame decoder takes an end of input at a block boundary for the end of
//! the frame, so an object cut short there (missing the end mark and content checksum)
//! would decode "successfully" into a short output. This guard follows the framing
//! (header, block sizes, end mark, optional checksums, skippable frames) and fails at
//! end of input unless the last frame was complete.

use std::io::{self, Read};

const LZ4_MAGIC: u32 = u32::from_le_bytes(super::magic::LZ4_FRAME);
const FLG_CONTENT_SIZE: u8 = 0x08;
const FLG_CONTENT_CHECKSUM: u8 = 0x04;
const FLG_BLOCK_CHECKSUM: u8 = 0x10;
const FLG_DICT_ID: u8 = 0x01;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Magic,
    Descriptor,
    DescriptorRest,
    SkippableSize,
    BlockSize,
    ContentChecksum,
}

/// Wraps the raw (compressed) stream of an `.lz4` object.
pub struct Lz4Guard<R> {
    inner: R,
    /// A byte read to look past the end of a frame, served again before `inner`.
    pushback: Option<u8>,
    item: Item,
    want: usize,
    collected: Vec<u8>,
    skip: u64,
    flags: u8,
    frames: u64,
}

impl<R: Read> Lz4Guard<R> {
    /// Guards `inner`.
    pub fn new(inner: R) -> Self {
        Lz4Guard {
            inner,
            pushback: None,
            item: Item::Magic,
            want: 4,
            collected: Vec::with_capacity(16),
            skip: 0,
            flags: 0,
            frames: 0,
        }
    }

    fn expect(&mut self, item: Item, want: usize) {
        self.item = item;
        self.want = want;
        self.collected.clear();
    }

    fn complete(&mut self) -> io::Result<()> {
        let v = &self.collected;
        let word = || u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
        match self.item {
            Item::Magic => {
                let magic = word();
                if magic == LZ4_MAGIC {
                    self.expect(Item::Descriptor, 2);
                } else if magic & super::magic::SKIPPABLE_MASK == super::magic::SKIPPABLE_FRAME {
                    self.expect(Item::SkippableSize, 4);
                } else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("not an LZ4 frame (magic {magic:#010x})"),
                    ));
                }
            }
            Item::Descriptor => {
                self.flags = v[0];
                let rest = 1 + if self.flags & FLG_CONTENT_SIZE != 0 { 8 } else { 0 } + if self.flags & FLG_DICT_ID != 0 { 4 } else { 0 };
                self.expect(Item::DescriptorRest, rest);
            }
            Item::DescriptorRest => self.expect(Item::BlockSize, 4),
            Item::SkippableSize => {
                self.skip = word() as u64;
                self.expect(Item::Magic, 4);
            }
            Item::BlockSize => {
                let size = word();
                if size == 0 {
                    if self.flags & FLG_CONTENT_CHECKSUM != 0 {
                        self.expect(Item::ContentChecksum, 4);
                    } else {
                        self.frames += 1;
                        self.expect(Item::Magic, 4);
                    }
                } else {
                    self.skip = (size & 0x7FFF_FFFF) as u64 + if self.flags & FLG_BLOCK_CHECKSUM != 0 { 4 } else { 0 };
                    self.expect(Item::BlockSize, 4);
                }
            }
            Item::ContentChecksum => {
                self.frames += 1;
                self.expect(Item::Magic, 4);
            }
        }
        Ok(())
    }

    fn follow(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = (self.skip.min(bytes.len() as u64)) as usize;
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (self.want - self.collected.len()).min(bytes.len());
            self.collected.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.collected.len() == self.want {
                self.complete()?;
            }
        }
        Ok(())
    }

    fn at_end(&self) -> io::Result<()> {
        let between_frames = self.item == Item::Magic && self.collected.is_empty() && self.skip == 0;
        if between_frames && self.frames > 0 {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "LZ4 frame truncated: the object ends inside a frame",
            ))
        }
    }
}

impl<R: Read> Read for Lz4Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let (Some(b), Some(first)) = (self.pushback, buf.first_mut()) {
            *first = b;
            self.pushback = None;
            return Ok(1);
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.at_end()?;
        } else {
            self.follow(&buf[..n])?;
        }
        Ok(n)
    }
}

/// A whole `.lz4` object: every frame decoded in turn, and the end of input checked by
/// the guard, so nothing truncated or trailing goes unnoticed.
pub struct Lz4Stream<R: Read> {
    decoder: Option<lz4_flex::frame::FrameDecoder<Lz4Guard<R>>>,
}

impl<R: Read> Lz4Stream<R> {
    /// Decodes `inner`.
    pub fn new(inner: R) -> Self {
        Lz4Stream {
            decoder: Some(lz4_flex::frame::FrameDecoder::new(Lz4Guard::new(inner))),
        }
    }
}

impl<R: Read> Read for Lz4Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let n = decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // The decoder saw the end of a frame: look at what follows it.
            let mut guard = self.decoder.take().expect("decoder present").into_inner();
            let mut probe = [0u8; 1];
            if guard.read(&mut probe)? == 0 {
                return Ok(0);
            }
            guard.pushback = Some(probe[0]);
            self.decoder = Some(lz4_flex::frame::FrameDecoder::new(guard));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn frame(data: &[u8], checksum: bool, block_checksum: bool) -> Vec<u8> {
        let info = lz4_flex::frame::FrameInfo::new()
            .block_size(lz4_flex::frame::BlockSize::Max64KB)
            .content_checksum(checksum)
            .block_checksums(block_checksum);
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn guarded_len(bytes: &[u8]) -> io::Result<usize> {
        let mut out = Vec::new();
        Lz4Stream::new(bytes).read_to_end(&mut out)
    }

    #[test]
    fn accepts_whole_frames_in_every_flavour() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8).collect();
        for (c, b) in [(true, false), (false, false), (true, true), (false, true)] {
            assert_eq!(guarded_len(&frame(&data, c, b)).unwrap(), data.len());
        }
        let mut two = frame(&data, true, false);
        two.extend(frame(&data, false, false));
        assert_eq!(guarded_len(&two).unwrap(), 2 * data.len());
    }

    #[test]
    fn refuses_every_truncation() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for checksum in [true, false] {
            let whole = frame(&data, checksum, false);
            for cut in 1..whole.len() {
                assert!(
                    guarded_len(&whole[..whole.len() - cut]).is_err(),
                    "cut {cut} of {} accepted",
                    whole.len()
                );
            }
        }
        assert!(guarded_len(&[]).is_err(), "an empty object is not an lz4 frame");
    }
}
