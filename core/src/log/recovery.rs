//! Recovery at start: read every segment, verify every checksum, cut a torn tail, and
//! hand each record to the log's state in order.
//!
//! Only the newest segment can end in a torn write (a segment is synced before the next
//! one is created), so damage there is cut and reported. Damage in a sealed segment means
//! acknowledged data is gone or unreadable: the start stops with a clear message unless
//! the operator asked for `repair`, which cuts the damaged segment there and says so.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

use super::record::Record;
use super::segment::{self, Loc, Scanned, Scanner};

/// Why the log cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The data folder cannot be read or written.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A sealed segment is damaged and `repair` was not given.
    #[error(
        "segment {path} is damaged at byte {offset} ({reason}); {lost} bytes after it \
         cannot be read. Acknowledged messages may be there, so nothing was changed. Start \
         with --repair to cut the segment at that byte, losing those bytes."
    )]
    Damaged {
        path: String,
        offset: u64,
        reason: &'static str,
        lost: u64,
    },
}

/// What recovery did, for the log at start.
#[derive(Debug, Default)]
pub struct Report {
    /// Segments read.
    pub segments: usize,
    /// Intact records read.
    pub records: u64,
    /// One line per cut: what was removed and why.
    pub cuts: Vec<String>,
    /// The newest segment and its length after recovery (0 when there is none).
    pub tail: (u32, u32),
}

/// Reads every segment of `dir` in order, calling `apply` for each intact record.
///
/// # Errors
/// [`RecoveryError::Damaged`] for damage inside a sealed segment without `repair`.
pub fn recover(
    dir: &Path,
    repair: bool,
    mut apply: impl FnMut(Record<'_>, Loc),
) -> Result<Report, RecoveryError> {
    let numbers = segment::list(dir)?;
    let mut report = Report {
        segments: numbers.len(),
        ..Report::default()
    };
    for (i, &n) in numbers.iter().enumerate() {
        let path = segment::path(dir, n);
        let mut scanner = Scanner::open(&path)?;
        let mut kept = 0u64;
        let bad = loop {
            let offset = scanner.offset as u32;
            match scanner.read_next()? {
                Scanned::Record(record, len) => {
                    apply(record, Loc::new(n, offset));
                    kept += 1;
                    scanner.advance(len);
                }
                Scanned::End => break None,
                Scanned::Bad(bad) => break Some(bad),
            }
        };
        report.records += kept;
        let is_tail = i + 1 == numbers.len();
        if let Some(bad) = bad {
            let lost = scanner.len - scanner.offset;
            if !is_tail && !repair {
                return Err(RecoveryError::Damaged {
                    path: path.display().to_string(),
                    offset: scanner.offset,
                    reason: bad.reason(),
                    lost,
                });
            }
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(scanner.offset)?;
            file.sync_all()?;
            report.cuts.push(format!(
                "cut {lost} bytes at byte {} of {} ({}; {kept} records before it kept{})",
                scanner.offset,
                path.display(),
                bad.reason(),
                if is_tail {
                    ", a torn write"
                } else {
                    ", --repair"
                },
            ));
        }
        if is_tail {
            report.tail = (n, scanner.offset as u32);
        }
    }
    if !report.cuts.is_empty() {
        segment::sync_dir(dir)?;
    }
    Ok(report)
}
