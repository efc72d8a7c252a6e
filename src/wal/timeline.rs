//! Timeline history files (`TTTTTTTT.history`) and the timeline chain they describe.
//!
//! A history file of timeline T lists every ancestor with the LSN where it ended:
//!
//! ```text
//! 1    0/5000000    no recovery target specified
//! 2    0/9000000    before 2026-01-01 00:00:00
//! ```
//!
//! so timeline 1 ran until 0/5000000, timeline 2 from there until 0/9000000, and T after
//! that. The segment holding a switch point belongs to the child timeline (it starts
//! with the parent's WAL); the segments before it belong to the parent.

use crate::error::{Error, ErrorKind, Result};
use crate::wal::name::Lsn;

/// One timeline's span in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Timeline ID.
    pub timeline: u32,
    /// Where it starts (the parent's switch point; 0 for the first).
    pub begin: Lsn,
    /// Where it ended (switched to the next), `None` for the last of the chain.
    pub end: Option<Lsn>,
}

/// Parses a history file's text; `object` names it in errors.
pub fn parse_history(text: &str, object: &str) -> Result<Vec<(u32, Lsn)>> {
    let mut out: Vec<(u32, Lsn)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let bad = || {
            Error::new(
                ErrorKind::Corrupt,
                format!("{object}: line {}: not 'timeline<TAB>LSN<TAB>reason': {line:?}", i + 1),
            )
        };
        let tli: u32 = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        let lsn = fields.next().and_then(Lsn::parse).ok_or_else(bad)?;
        if let Some((prev_tli, prev_lsn)) = out.last() {
            if tli <= *prev_tli || lsn < *prev_lsn {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("{object}: line {}: timelines or LSNs go backwards", i + 1),
                ));
            }
        }
        out.push((tli, lsn));
    }
    Ok(out)
}

/// The chain ending at `timeline`, from its history records (empty for timeline 1).
pub fn chain(timeline: u32, history: &[(u32, Lsn)]) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut begin = Lsn(0);
    for (tli, end) in history {
        spans.push(Span {
            timeline: *tli,
            begin,
            end: Some(*end),
        });
        begin = *end;
    }
    spans.push(Span {
        timeline,
        begin,
        end: None,
    });
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_chains() {
        let text = "1\t0/5000000\tno recovery target specified\n\n# comment\n2\t0/90000A8\tbefore 2026-01-01\n";
        let h = parse_history(text, "00000003.history").unwrap();
        assert_eq!(h, [(1, Lsn(0x500_0000)), (2, Lsn(0x900_00A8))]);
        let c = chain(3, &h);
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[1],
            Span {
                timeline: 2,
                begin: Lsn(0x500_0000),
                end: Some(Lsn(0x900_00A8))
            }
        );
        assert_eq!(
            c[2],
            Span {
                timeline: 3,
                begin: Lsn(0x900_00A8),
                end: None
            }
        );
        assert_eq!(
            chain(1, &[]),
            [Span {
                timeline: 1,
                begin: Lsn(0),
                end: None
            }]
        );
    }

    #[test]
    fn refuses_garbage_and_backwards_history() {
        assert!(parse_history("x\t0/1\n", "h").is_err());
        assert!(parse_history("1\tzz\n", "h").is_err());
        assert!(parse_history("2\t0/5\n1\t0/9\n", "h").is_err());
        assert!(parse_history("1\t0/9\n2\t0/5\n", "h").is_err());
    }
}
