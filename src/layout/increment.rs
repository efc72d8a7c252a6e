//! wal-g's page increment (`wi1`): how a delta backup carries a relation file's changed
//! pages. A 16-byte header (the magic, the file's size as u64, the number of pages as
//! u32), the pages' block numbers (u32 each), then the pages in that order; all
//! little-endian. Written by [`crate::push::delta`], applied by [`crate::restore::delta`].

/// The magic an increment starts with.
pub const MAGIC: [u8; 4] = *b"wi1\x55";

/// Bytes of the header.
pub const HEADER_LEN: usize = 16;

/// The header of an increment of a file of `size` bytes carrying `count` pages.
pub fn header(size: u64, count: u32) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4..12].copy_from_slice(&size.to_le_bytes());
    out[12..].copy_from_slice(&count.to_le_bytes());
    out
}

/// The file's size and the number of pages a header gives; `None`: not a `wi1` header.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Option<(u64, u32)> {
    if header[..4] != MAGIC {
        return None;
    }
    let size = u64::from_le_bytes([
        header[4], header[5], header[6], header[7], header[8], header[9], header[10], header[11],
    ]);
    let count = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    Some((size, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back() {
        let h = header(3 * 8192, 2);
        assert_eq!(&h[..4], b"wi1\x55");
        assert_eq!(parse_header(&h), Some((3 * 8192, 2)));
        let mut other = h;
        other[2] = b'2';
        assert_eq!(parse_header(&other), None);
    }
}
