//! Decompression on its own thread: a partition's decoder runs ahead of the tar
//! extraction and file writes, handing decoded bytes over in a few fixed buffers that
//! cycle between the two threads. CPU-bound decoding then overlaps with the kernel's
//! page-cache writes instead of alternating with them; memory stays at
//! `BUFFERS × CHUNK` per partition.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::Scope;

/// Bytes per buffer handed over.
const CHUNK: usize = 128 * 1024;
/// Buffers in circulation per partition.
const BUFFERS: usize = 4;

/// The extraction side: reads what the decoding thread produced.
pub struct Decoded {
    filled: Receiver<io::Result<Vec<u8>>>,
    empty: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    total: u64,
    done: bool,
}

impl Decoded {
    /// Decoded bytes handed over so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Starts decoding `source` on a thread of `scope`.
pub fn spawn<'scope, R: Read + Send + 'scope>(scope: &'scope Scope<'scope, '_>, mut source: R) -> Decoded {
    let (filled_tx, filled) = sync_channel::<io::Result<Vec<u8>>>(BUFFERS);
    let (empty, empty_rx) = sync_channel::<Vec<u8>>(BUFFERS);
    for _ in 0..BUFFERS {
        empty.send(vec![0u8; CHUNK]).expect("room for every buffer");
    }
    scope.spawn(move || {
        while let Ok(mut buf) = empty_rx.recv() {
            buf.resize(CHUNK, 0);
            let mut n = 0;
            let result = loop {
                if n == buf.len() {
                    break Ok(());
                }
                match source.read(&mut buf[n..]) {
                    Ok(0) => break Ok(()),
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(n);
            let end = n == 0;
            let sent = match result {
                Ok(()) => filled_tx.send(Ok(buf)),
                Err(e) => {
                    let _ = filled_tx.send(Err(e));
                    return;
                }
            };
            if end || sent.is_err() {
                return;
            }
        }
    });
    Decoded {
        filled,
        empty,
        current: Vec::new(),
        pos: 0,
        total: 0,
        done: false,
    }
}

impl Read for Decoded {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            let spent = std::mem::take(&mut self.current);
            self.pos = 0;
            if spent.capacity() > 0 {
                let _ = self.empty.send(spent);
            }
            match self.filled.recv() {
                Ok(Ok(buf)) if buf.is_empty() => self.done = true,
                Ok(Ok(buf)) => {
                    self.total += buf.len() as u64;
                    self.current = buf;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::other("the decoding thread ended unexpectedly"));
                }
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_over_everything_in_order_and_passes_errors() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::thread::scope(|s| {
            let mut d = spawn(s, &data[..]);
            let mut out = Vec::new();
            d.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
            assert_eq!(d.total(), data.len() as u64);
        });
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("boom"));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
        }
        std::thread::scope(|s| {
            let mut d = spawn(s, Failing(600_000));
            let mut out = Vec::new();
            assert_eq!(d.read_to_end(&mut out).unwrap_err().to_string(), "boom");
        });
        // Dropping the reader early ends the decoding thread (the scope would hang otherwise).
        std::thread::scope(|s| {
            let mut d = spawn(s, &data[..]);
            let mut first = [0u8; 10];
            d.read_exact(&mut first).unwrap();
        });
    }
}
