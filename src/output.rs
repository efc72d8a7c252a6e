//! Standard output for reports, tables and JSON. When the reader goes away
//! (`walfetch wal-verify --json | head -1`), the rest of the output is dropped quietly and
//! the command still ends with its own exit code: a closed pipe is not a failure of the
//! archive, and must never be a panic.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorKind, Result};

/// Set once standard output has been closed by its reader.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to standard output, unless its reader has gone away.
pub fn write(text: &[u8]) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => CLOSED.store(true, Ordering::Relaxed),
        Err(e) => {
            CLOSED.store(true, Ordering::Relaxed);
            tracing::warn!(cause = %e, "standard output failed; the rest of the output is dropped");
        }
    }
}

/// Writes formatted text (see [`out!`](crate::out) and [`outln!`](crate::outln)).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(s) => write(s.as_bytes()),
        None => write(args.to_string().as_bytes()),
    }
}

/// Prints `value` as pretty JSON (the `--json` of every report).
pub fn json(value: &impl serde::Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::new(ErrorKind::LocalIo, format!("encoding JSON: {e}")))?;
    text.push('\n');
    write(text.as_bytes());
    Ok(())
}

/// `print!` to standard output through [`write_fmt`]: a closed pipe ends output quietly.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_fmt(format_args!($($arg)*)) };
}

/// `println!` to standard output through [`write_fmt`]: a closed pipe ends output quietly.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write(b"\n") };
    ($($arg:tt)*) => { $crate::output::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
