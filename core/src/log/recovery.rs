//! Recovery at start: read every segment, verify every checksum, tell a torn tail from
//! damage, and hand each intact record to the log's state in order.
//!
//! A crash of the process leaves a prefix of what was written, so only the newest
//! segment can end in a torn write, and nothing intact follows it: that tail is cut.
//! Everything else is damage, which means acknowledged data may be gone:
//! - a bad record followed by an intact one (found by scanning on for the next record
//!   whose length, kind and checksum hold), in any segment;
//! - a bad tail of a sealed segment, or a sealed segment (format 2) that does not end
//!   with its seal record (it was cut);
//! - a missing segment number: in the middle, after a sealed newest segment (the seal
//!   is written only once the next segment exists), or before the first one when no
//!   retention record says they were removed.
//!
//! Without `repair` the start then stops with a message naming the damage, and nothing
//! is changed. With `repair`, every intact record on both sides of each hole is kept
//! (a damaged segment is rewritten without the unreadable bytes, the original kept next
//! to it as `.damaged`), and the holes are handed to the log, which bounds the seqs
//! that may have been lost there so that none is given again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::record::Record;
use super::segment::{self, Loc, Scanned, Scanner, MAGIC};

/// Why the log cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The data folder cannot be read or written.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The log is damaged and `repair` was not given.
    #[error(
        "the log is damaged: {what}. Acknowledged messages may be lost there, so nothing \
         was changed. Start with --repair to keep every intact record on both sides of \
         the damage (seqs that may have been used there are never given again)."
    )]
    Damaged {
        /// The damage found, one clause per hole.
        what: String,
    },
    /// `repair` cannot keep its promise that no seq is given twice.
    #[error("the log cannot be repaired: {0}")]
    Unrepairable(String),
}

/// Unreadable or missing log data that `repair` stepped over.
#[derive(Clone, Debug)]
pub struct Hole {
    /// Where it lies in the log's order (its segment, and the offset in the repaired file).
    pub at: Loc,
    /// How many bytes were lost there; None when unknown (a missing or cut segment).
    pub bytes: Option<u64>,
    /// What it is, for the report.
    pub what: String,
}

/// What recovery did, for the log at start.
#[derive(Debug, Default)]
pub struct Report {
    /// Segments read.
    pub segments: usize,
    /// Intact records read.
    pub records: u64,
    /// One line per change made: what was cut, skipped or rewritten, and why.
    pub cuts: Vec<String>,
    /// The segment to append to and its length after recovery (0: not created yet).
    pub tail: (u32, u32),
    /// With `repair`, the holes kept around (empty otherwise).
    pub holes: Vec<Hole>,
    /// With `repair`, the first segment when older ones were missing: recorded so that
    /// the next start does not find them missing again.
    pub first: Option<u32>,
}

/// One segment as the scan found it.
struct Scan {
    n: u32,
    path: PathBuf,
    len: u64,
    sealed_format: bool,
    /// The last intact record was a seal naming this segment.
    seal: Option<u32>,
    records: u64,
    /// Byte ranges of intact records (original offsets), in order.
    kept: Vec<(u64, u64)>,
    /// Length of the segment once rewritten without the damage.
    out_len: u64,
    /// Unreadable runs followed by intact records: (from, to, reason, the offset of the
    /// next intact record once rewritten).
    damage: Vec<(u64, u64, &'static str, u64)>,
    /// A bad tail with nothing intact after it: (from, reason).
    bad_tail: Option<(u64, &'static str)>,
}

impl Scan {
    fn changed(&self) -> bool {
        !self.damage.is_empty()
    }
}

fn scan(
    dir: &Path,
    n: u32,
    first_seen: &mut Option<u32>,
    apply: &mut impl FnMut(Record<'_>, Loc),
) -> io::Result<Scan> {
    let path = segment::path(dir, n);
    let mut scanner = Scanner::open(&path)?;
    let mut s = Scan {
        n,
        path,
        len: scanner.len,
        sealed_format: scanner.sealed_format,
        seal: None,
        records: 0,
        kept: Vec::new(),
        out_len: scanner.offset,
        damage: Vec::new(),
        bad_tail: None,
    };
    let mut run = scanner.offset;
    loop {
        let offset = scanner.offset;
        match scanner.read_next()? {
            Scanned::Record(record, len) => {
                s.seal = match record {
                    Record::Seal { next } => Some(next),
                    _ => None,
                };
                if let Record::First { segment } = record {
                    *first_seen = Some(first_seen.map_or(segment, |f| f.max(segment)));
                }
                apply(record, Loc::new(n, s.out_len as u32));
                s.out_len += len as u64;
                s.records += 1;
                scanner.advance(len);
            }
            Scanned::End => {
                s.kept.push((run, offset));
                return Ok(s);
            }
            Scanned::Bad(bad) => {
                s.kept.push((run, offset));
                let file = File::open(&s.path)?;
                match segment::resync(&file, offset, s.len)? {
                    Some(next) => {
                        s.damage.push((offset, next, bad.reason(), s.out_len));
                        s.seal = None;
                        scanner.seek(next)?;
                        run = next;
                    }
                    None => {
                        s.bad_tail = Some((offset, bad.reason()));
                        return Ok(s);
                    }
                }
            }
        }
    }
}

fn range_text(from: u32, to: u32) -> String {
    if from == to {
        format!("segment {from} is missing")
    } else {
        format!("segments {from} to {to} are missing")
    }
}

/// Reads every segment of `dir` in order, calling `apply` for each intact record.
///
/// # Errors
/// [`RecoveryError::Damaged`] for damage without `repair`; I/O errors.
pub fn recover(
    dir: &Path,
    repair: bool,
    mut apply: impl FnMut(Record<'_>, Loc),
) -> Result<Report, RecoveryError> {
    let numbers = segment::list(dir)?;
    let mut first_seen = None;
    let mut scans = Vec::with_capacity(numbers.len());
    for &n in &numbers {
        scans.push(scan(dir, n, &mut first_seen, &mut apply)?);
    }
    let mut report = Report {
        segments: scans.len(),
        records: scans.iter().map(|s| s.records).sum(),
        ..Report::default()
    };
    // A rollover that did not finish: the new segment exists (it is created first) but
    // the seal of the one before was never written, so nothing was written to it.
    let mut unfinished = None;
    if let [.., prev, last] = &scans[..] {
        if last.records == 0
            && last.damage.is_empty()
            && prev.seal.is_none()
            && prev.damage.is_empty()
            && prev.bad_tail.is_none()
        {
            unfinished = scans.pop();
        }
    }
    let mut holes = Vec::new();
    let mut missing = Vec::new(); // Segment numbers to recreate empty and sealed.
                                  // Without a retention record, a format-2 log starts at segment 1; an older one may
                                  // have lost its first segments to retention unrecorded.
    let expected = scans.first().map_or(0, |first| {
        first_seen.unwrap_or(if first.sealed_format { 1 } else { first.n })
    });
    let live = |s: &Scan| s.n >= expected;
    if let Some(first) = scans.first() {
        if first.n > expected {
            holes.push(Hole {
                at: Loc::new(expected, 0),
                bytes: None,
                what: format!(
                    "{} (no retention removed them)",
                    range_text(expected, first.n - 1)
                ),
            });
            report.first = Some(first.n);
        }
        let count = scans.len();
        for (i, s) in scans.iter().enumerate() {
            let path = s.path.display();
            for &(from, to, reason, out) in &s.damage {
                holes.push(Hole {
                    at: Loc::new(s.n, out as u32),
                    bytes: Some(to - from),
                    what: format!(
                        "segment {path} is damaged at byte {from} ({reason}): {} bytes \
                         up to byte {to} cannot be read, and intact records follow",
                        to - from
                    ),
                });
            }
            let end = Loc::new(s.n, s.out_len as u32);
            if i + 1 < count {
                let next = scans[i + 1].n;
                if let Some((from, reason)) = s.bad_tail {
                    holes.push(Hole {
                        at: end,
                        // Without its seal, a cut as well as the damage cannot be ruled out.
                        bytes: (!s.sealed_format || s.seal.is_some()).then_some(s.len - from),
                        what: format!(
                            "sealed segment {path} is damaged at byte {from} ({reason}): \
                             the {} bytes after it cannot be read",
                            s.len - from
                        ),
                    });
                } else if s.sealed_format && s.seal.is_none() && live(s) {
                    holes.push(Hole {
                        at: end,
                        bytes: None,
                        what: format!(
                            "sealed segment {path} ends at byte {} without its seal \
                             record: it was cut",
                            s.len
                        ),
                    });
                }
                let lo = (s.n + 1).max(expected);
                if next > lo {
                    holes.push(Hole {
                        at: Loc::new(lo, 0),
                        bytes: None,
                        what: range_text(lo, next - 1),
                    });
                    missing.extend(lo..next);
                }
            } else if let Some(next) = s.seal.filter(|_| s.bad_tail.is_none()) {
                holes.push(Hole {
                    at: Loc::new(next, 0),
                    bytes: None,
                    what: format!(
                        "{} (segment {} was sealed, which happens only once the next \
                         one exists)",
                        range_text(next, next),
                        s.n
                    ),
                });
            }
        }
    }
    if !holes.is_empty() && !repair {
        let what: Vec<&str> = holes.iter().map(|h| h.what.as_str()).collect();
        return Err(RecoveryError::Damaged {
            what: what.join("; "),
        });
    }

    // Decided: change the files.
    if let Some(empty) = &unfinished {
        fs::remove_file(&empty.path)?;
        report.cuts.push(format!(
            "removed {}: a new segment with no records, created by a rollover that did \
             not finish",
            empty.path.display()
        ));
    }
    let count = scans.len();
    for (i, s) in scans.iter().enumerate() {
        let sealed = i + 1 < count;
        let reseal = sealed && s.sealed_format && s.seal.is_none() && live(s);
        if s.changed() || (sealed && (s.bad_tail.is_some() || reseal)) {
            let kept_as = rewrite(s, reseal.then_some(s.n + 1))?;
            report.cuts.push(format!(
                "--repair: rewrote {} keeping its {} intact records ({} bytes) and \
                 skipping the rest; the damaged file is kept as {}",
                s.path.display(),
                s.records,
                s.out_len,
                kept_as.display()
            ));
        } else if let Some((from, reason)) = s.bad_tail {
            // The torn write of the newest segment (damage elsewhere was refused above).
            let file = OpenOptions::new().write(true).open(&s.path)?;
            file.set_len(from)?;
            file.sync_all()?;
            report.cuts.push(format!(
                "cut {} bytes at byte {from} of {} ({reason}; {} records before it \
                 kept, a torn write)",
                s.len - from,
                s.path.display(),
                s.records
            ));
        }
    }
    for &n in &missing {
        let mut bytes = MAGIC.to_vec();
        Record::Seal { next: n + 1 }.encode(&mut bytes);
        write_synced(&segment::path(dir, n), &bytes)?;
    }
    for h in &holes {
        report.cuts.push(format!("--repair: {}", h.what));
    }
    if !report.cuts.is_empty() {
        segment::sync_dir(dir)?;
    }
    report.tail = match scans.last() {
        Some(s) => match s.seal {
            Some(next) if s.bad_tail.is_none() => (next, 0),
            _ => (s.n, s.out_len as u32),
        },
        None => (0, 0),
    };
    report.holes = holes;
    Ok(report)
}

/// Writes `s` again without its damage (and with a seal naming `seal`), keeping the
/// original next to it; returns where the original went.
fn rewrite(s: &Scan, seal: Option<u32>) -> io::Result<PathBuf> {
    let original = fs::read(&s.path)?;
    let start = s.kept.first().map_or(0, |k| k.0) as usize;
    let mut bytes = original[..start.min(original.len())].to_vec();
    for &(from, to) in &s.kept {
        bytes.extend_from_slice(&original[from as usize..to as usize]);
    }
    if let Some(next) = seal {
        Record::Seal { next }.encode(&mut bytes);
    }
    let mut kept_as = s.path.with_extension("log.damaged");
    let mut k = 1;
    while kept_as.exists() {
        k += 1;
        kept_as = s.path.with_extension(format!("log.damaged.{k}"));
    }
    let tmp = s.path.with_extension("log.repairing");
    write_synced(&tmp, &bytes)?;
    fs::rename(&s.path, &kept_as)?;
    fs::rename(&tmp, &s.path)?;
    Ok(kept_as)
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
