//! Compression codecs, chosen by file extension exactly as wal-g writes them.
//!
//! | extension | framing |
//! |---|---|
//! | `.lz4` | LZ4 frame; any block or content checksum the frame carries is verified |
//! | `.zst` | zstd frame(s) |
//! | `.br` | raw brotli stream |
//! | `.lzma` | LZMA-alone (`.lzma`, not xz), end marker or known size |
//! | `.lzo` | lzop file (WAL-E), every announced checksum verified; read only |
//! | `.gz` | gzip (pgBackRest, barman-cloud); read only |
//! | `.bz2` | bzip2 (pgBackRest, barman-cloud); read only |
//! | `.xz` | xz (barman-cloud's WAL); read only |
//! | `.snappy` | Snappy's framing format, every chunk's CRC-32C checked (barman-cloud); read only |
//! | (zlib) | a zlib stream: pgBackRest's "raw" gz of bundled files and super blocks; read only, chosen by the format, never by an extension |
//! | none | uncompressed |
//!
//! Decoders stream; encoders write the framing wal-g writes (independent lz4 blocks,
//! 8 MiB lzma dictionary, brotli quality 3), with two lz4 differences every LZ4 frame
//! reader (wal-g's, walrus's, the `lz4` tool) takes:
//! - 256 KiB blocks where wal-g's are 4 MiB: a decoder holds two blocks (512 KiB
//!   instead of 8 MiB per partition in flight), and LZ4 matches reach back 64 KiB
//!   anyway, so the output grows by about 0.2 %;
//! - an xxh32 checksum per block over the compressed bytes instead of one over the
//!   whole decompressed content: any byte changed in storage or transit is still caught,
//!   while hashing costs a compression ratio less (restoring 920 MB of pgbench data
//!   spent more CPU on the content checksum than on decompressing).

use std::io::{self, BufReader, Read, Write};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::error::{Error, ErrorKind, Result};

mod lz4_guard;
pub mod lzop;
pub mod magic;

use lz4_guard::Lz4Stream;

/// A compression method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Stored as is, no extension.
    None,
    /// LZ4 frame format (`.lz4`), wal-g's default.
    Lz4,
    /// Zstandard (`.zst`).
    Zstd,
    /// Raw brotli stream (`.br`).
    Brotli,
    /// LZMA-alone (`.lzma`).
    Lzma,
    /// lzop file format (`.lzo`), read only: WAL-E's compression.
    Lzo,
    /// gzip (`.gz`), read only: pgBackRest's default, barman-cloud's.
    Gzip,
    /// bzip2 (`.bz2`), read only.
    Bzip2,
    /// A zlib stream (no extension of its own), read only: pgBackRest's "raw" gz.
    Zlib,
    /// xz (`.xz`), read only: barman-cloud's WAL.
    Xz,
    /// Snappy's framing format (`.snappy`), read only: barman-cloud's.
    Snappy,
}

/// Every codec of wal-g's layout, in the order a lookup probes them (most common first).
pub const ALL: [Codec; 8] = [
    Codec::Lz4,
    Codec::Zstd,
    Codec::Brotli,
    Codec::Lzma,
    Codec::Lzo,
    Codec::Gzip,
    Codec::Bzip2,
    Codec::None,
];

impl Codec {
    /// The file extension without a dot (empty for [`Codec::None`]).
    pub fn extension(self) -> &'static str {
        match self {
            Codec::None => "",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zst",
            Codec::Brotli => "br",
            Codec::Lzma => "lzma",
            Codec::Lzo => "lzo",
            Codec::Gzip => "gz",
            Codec::Bzip2 => "bz2",
            Codec::Zlib => "zlib",
            Codec::Xz => "xz",
            Codec::Snappy => "snappy",
        }
    }

    /// The codec for an extension (without the dot): wal-g's, and barman-cloud's `xz`
    /// and `snappy`.
    pub fn from_extension(ext: &str) -> Option<Codec> {
        ALL.into_iter()
            .chain([Codec::Xz, Codec::Snappy])
            .find(|c| *c != Codec::None && c.extension() == ext)
    }

    /// `name` with this codec's extension appended.
    pub fn file_name(self, name: &str) -> String {
        match self {
            Codec::None => name.to_string(),
            c => format!("{name}.{}", c.extension()),
        }
    }

    /// Splits `file.ext` into (`file`, codec) when `ext` is a known codec extension;
    /// otherwise the whole name is uncompressed.
    pub fn split(name: &str) -> (&str, Codec) {
        if let Some((stem, ext)) = name.rsplit_once('.') {
            if let Some(codec) = Codec::from_extension(ext) {
                return (stem, codec);
            }
        }
        (name, Codec::None)
    }

    /// Wraps `raw` (plain, compressed data) in a streaming decoder. `object` names the
    /// source for error messages.
    pub fn decoder(self, raw: Box<dyn Read + Send>, object: &str) -> Decoded {
        let tracker = ErrorSlot::default();
        let tracked = TrackErrors {
            inner: raw,
            slot: tracker.clone(),
        };
        let inner: Box<dyn Read + Send> = match self {
            Codec::None => Box::new(tracked),
            Codec::Lz4 => Box::new(Lz4Stream::new(tracked)),
            Codec::Zstd => match zstd::stream::read::Decoder::new(tracked) {
                Ok(d) => Box::new(d),
                Err(e) => Box::new(FailingReader(Some(e))),
            },
            Codec::Brotli => Box::new(brotli::Decompressor::new(tracked, 64 * 1024)),
            Codec::Lzo => Box::new(lzop::LzopReader::new(tracked)),
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(64 * 1024, tracked))),
            Codec::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(BufReader::with_capacity(64 * 1024, tracked))),
            Codec::Zlib => Box::new(flate2::read::ZlibDecoder::new(BufReader::with_capacity(64 * 1024, tracked))),
            Codec::Xz => match xz2::stream::Stream::new_stream_decoder(u64::MAX, xz2::stream::CONCATENATED) {
                Ok(stream) => Box::new(xz2::read::XzDecoder::new_stream(
                    BufReader::with_capacity(64 * 1024, tracked),
                    stream,
                )),
                Err(e) => Box::new(FailingReader(Some(io::Error::other(e)))),
            },
            // snap's frame decoder checks every chunk's masked CRC-32C.
            Codec::Snappy => Box::new(snap::read::FrameDecoder::new(tracked)),
            Codec::Lzma => match xz2::stream::Stream::new_lzma_decoder(u64::MAX) {
                Ok(stream) => Box::new(xz2::read::XzDecoder::new_stream(
                    BufReader::with_capacity(64 * 1024, tracked),
                    stream,
                )),
                Err(e) => Box::new(FailingReader(Some(io::Error::other(e)))),
            },
        };
        Decoded {
            inner,
            slot: tracker,
            object: object.to_string(),
            codec: self,
            explain: None,
        }
    }

    /// Wraps `out` in an encoder writing this codec's framing.
    pub fn encoder<W: Write>(self, out: W) -> Result<Encoder<W>> {
        Ok(match self {
            Codec::None => Encoder::None(out),
            Codec::Lz4 => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max256KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent)
                    .block_checksums(true);
                Encoder::Lz4(lz4_flex::frame::FrameEncoder::with_frame_info(info, out))
            }
            Codec::Zstd => Encoder::Zstd(
                zstd::stream::write::Encoder::new(out, 3).map_err(|e| Error::new(ErrorKind::LocalIo, format!("zstd encoder: {e}")))?,
            ),
            Codec::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(out, 64 * 1024, 3, 22))),
            Codec::Lzma => {
                let mut opts =
                    xz2::stream::LzmaOptions::new_preset(6).map_err(|e| Error::new(ErrorKind::LocalIo, format!("lzma options: {e}")))?;
                opts.dict_size(8 << 20);
                let stream = xz2::stream::Stream::new_lzma_encoder(&opts)
                    .map_err(|e| Error::new(ErrorKind::LocalIo, format!("lzma encoder: {e}")))?;
                Encoder::Lzma(xz2::write::XzEncoder::new_stream(out, stream))
            }
            Codec::Lzo | Codec::Gzip | Codec::Bzip2 | Codec::Zlib | Codec::Xz | Codec::Snappy => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "{} is read-only in walfetch (other tools' formats); push with lz4, zstd, brotli or lzma",
                        self.extension()
                    ),
                ))
            }
        })
    }
}

impl Codec {
    /// The codec to write with: the setting (`--compression`, `WALG_COMPRESSION_METHOD`)
    /// if given, else lz4 (wal-g's default).
    pub fn for_writing(setting: Option<&str>) -> Result<Codec> {
        setting.map_or(Ok(Codec::Lz4), str::parse)
    }
}

impl FromStr for Codec {
    type Err = Error;

    /// Parses a `WALG_COMPRESSION_METHOD` value.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lz4" => Ok(Codec::Lz4),
            "zstd" | "zst" => Ok(Codec::Zstd),
            "brotli" | "br" => Ok(Codec::Brotli),
            "lzma" => Ok(Codec::Lzma),
            "none" | "" => Ok(Codec::None),
            other => Err(Error::new(
                ErrorKind::Config,
                format!("unknown compression method '{other}' (use lz4, zstd, brotli, lzma or none)"),
            )),
        }
    }
}

/// The first storage error seen below a decoder, so a network failure is reported as
/// such and not as "corrupt data" after the decoder has wrapped it.
#[derive(Clone, Default)]
struct ErrorSlot(Arc<Mutex<Option<Error>>>);

struct TrackErrors {
    inner: Box<dyn Read + Send>,
    slot: ErrorSlot,
}

impl Read for TrackErrors {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            let err = Error::from_io_ref(e).unwrap_or_else(|| Error::new(ErrorKind::Unreachable, e.to_string()));
            let mut slot = self.slot.0.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(err);
        })
    }
}

struct FailingReader(Option<io::Error>);

impl Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(self.0.take().unwrap_or_else(|| io::Error::other("decoder unavailable")))
    }
}

/// A decoding reader whose errors are classified: storage failures keep their kind,
/// everything else is `Corrupt` and names the object and codec.
pub struct Decoded {
    inner: Box<dyn Read + Send>,
    slot: ErrorSlot,
    object: String,
    codec: Codec,
    /// Asked when decoding fails: a better explanation of the failure from below the
    /// decoder (an encrypted object's damaged ciphertext), if there is one.
    explain: Option<Explain>,
}

/// What [`Decoded`] asks for a better cause when decoding fails.
pub type Explain = Box<dyn Fn() -> Option<Error> + Send>;

impl Decoded {
    /// The same decoder, asking `explain` for a better cause when decoding fails.
    pub fn explained_by(self, explain: Explain) -> Decoded {
        Decoded {
            explain: Some(explain),
            ..self
        }
    }

    /// Classifies an I/O error that came out of this decoder.
    pub fn classify(&self, err: &io::Error) -> Error {
        if let Some(storage) = self.slot.0.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return storage;
        }
        if let Some(inner) = Error::from_io_ref(err) {
            return inner;
        }
        // Garbage from a damaged ciphertext: its integrity check says so.
        if let Some(damaged) = self.explain.as_ref().and_then(|explain| explain()) {
            return damaged;
        }
        let what = match self.codec {
            Codec::None => "reading".to_string(),
            c => format!("decompressing {}", c.extension()),
        };
        Error::new(ErrorKind::Corrupt, format!("{}: {what} failed: {err}", self.object))
    }
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| self.classify(&e).into_io())
    }
}

/// A streaming encoder; call [`Encoder::finish`] to write the trailer.
pub enum Encoder<W: Write> {
    /// Pass-through.
    None(W),
    /// LZ4 frame.
    Lz4(lz4_flex::frame::FrameEncoder<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
    /// brotli.
    Brotli(Box<brotli::CompressorWriter<W>>),
    /// LZMA-alone.
    Lzma(xz2::write::XzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// Writes the stream trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Lz4(e) => e.finish().map_err(io::Error::other),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Brotli(mut e) => {
                e.flush()?;
                Ok(e.into_inner())
            }
            Encoder::Lzma(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Lz4(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Brotli(e) => e.write(buf),
            Encoder::Lzma(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Lz4(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::Brotli(e) => e.flush(),
            Encoder::Lzma(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    fn round_trip(codec: Codec) -> Vec<u8> {
        // Read-only codecs are written as their own tools write them.
        match codec {
            Codec::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                e.write_all(&sample()).unwrap();
                e.finish().unwrap()
            }
            Codec::Zlib => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(1));
                e.write_all(&sample()).unwrap();
                e.finish().unwrap()
            }
            Codec::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(9));
                e.write_all(&sample()).unwrap();
                e.finish().unwrap()
            }
            Codec::Xz => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 3);
                e.write_all(&sample()).unwrap();
                e.finish().unwrap()
            }
            Codec::Snappy => {
                let mut e = snap::write::FrameEncoder::new(Vec::new());
                e.write_all(&sample()).unwrap();
                e.into_inner().unwrap()
            }
            _ => {
                let mut enc = codec.encoder(Vec::new()).unwrap();
                enc.write_all(&sample()).unwrap();
                enc.finish().unwrap()
            }
        }
    }

    fn decode(codec: Codec, data: Vec<u8>) -> Result<Vec<u8>> {
        let mut d = codec.decoder(Box::new(io::Cursor::new(data)), "obj");
        let mut out = Vec::new();
        d.read_to_end(&mut out).map_err(|e| d.classify(&e))?;
        Ok(out)
    }

    #[test]
    fn every_codec_round_trips() {
        for codec in ALL
            .into_iter()
            .chain([Codec::Zlib, Codec::Xz, Codec::Snappy])
            .filter(|c| *c != Codec::Lzo)
        {
            let packed = round_trip(codec);
            assert_eq!(decode(codec, packed).unwrap(), sample(), "{codec:?}");
        }
    }

    #[test]
    fn truncated_streams_are_corrupt() {
        for codec in [
            Codec::Lz4,
            Codec::Zstd,
            Codec::Brotli,
            Codec::Lzma,
            Codec::Gzip,
            Codec::Bzip2,
            Codec::Zlib,
        ] {
            let mut packed = round_trip(codec);
            packed.truncate(packed.len() / 2);
            let err = decode(codec, packed).expect_err(&format!("{codec:?} accepted a truncated stream"));
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{codec:?}: {err}");
            assert!(err.message().contains("obj"));
        }
    }

    /// An lz4 frame of `sample()` with the given checksums, the way other writers frame it.
    fn lz4_framed(block_checksums: bool, content_checksum: bool) -> Vec<u8> {
        let info = lz4_flex::frame::FrameInfo::new()
            .block_checksums(block_checksums)
            .content_checksum(content_checksum);
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(&sample()).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn lz4_block_and_content_checksums_are_verified() {
        // A literal byte of the first block changed, so that the block still decodes:
        // without a checksum the change goes through silently, which is what each
        // checksum is there to stop.
        let flip = |mut packed: Vec<u8>| {
            let literals = packed.windows(8).position(|w| w == &sample()[..8]).expect("leading literals");
            packed[literals + 5] ^= 0x01;
            packed
        };
        let unchecked = decode(Codec::Lz4, flip(lz4_framed(false, false))).expect("no checksum to catch it");
        assert_ne!(unchecked, sample());
        for (name, packed) in [
            ("walfetch's own framing", flip(round_trip(Codec::Lz4))),
            ("block checksums", flip(lz4_framed(true, false))),
            ("content checksum (wal-g)", flip(lz4_framed(false, true))),
        ] {
            let err = decode(Codec::Lz4, packed).expect_err(name);
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{name}: {err}");
        }
        assert_eq!(decode(Codec::Lz4, round_trip(Codec::Lz4)).unwrap(), sample());
    }

    #[test]
    fn extensions_split_and_join() {
        assert_eq!(
            Codec::split("000000010000000000000001.lz4"),
            ("000000010000000000000001", Codec::Lz4)
        );
        assert_eq!(Codec::split("part_001.tar.zst"), ("part_001.tar", Codec::Zstd));
        assert_eq!(Codec::split("part_001.tar"), ("part_001.tar", Codec::None));
        assert_eq!(Codec::split("00000002.history"), ("00000002.history", Codec::None));
        assert_eq!(Codec::Brotli.file_name("x"), "x.br");
        assert_eq!(Codec::None.file_name("x"), "x");
        assert_eq!("zstd".parse::<Codec>().unwrap(), Codec::Zstd);
        assert!("snappy".parse::<Codec>().is_err());
    }
}
