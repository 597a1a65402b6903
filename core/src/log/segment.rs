//! Segment files: `<number>.log` in the data folder, each a magic header followed by
//! records. Only the newest segment is written; the others are sealed.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Bad, HEADER};

/// The first bytes of every segment: format name and version. Version 2: a sealed
/// segment ends with a [`record::Record::Seal`].
pub const MAGIC: &[u8; 8] = b"RHLOG02\n";
/// The first bytes of a version 1 segment (no seal records), still read.
pub const MAGIC_V1: &[u8; 8] = b"RHLOG01\n";

/// Where a record lives: segment number and byte offset, packed into one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Loc(u64);

impl Loc {
    /// The record at `offset` of segment `segment`.
    pub fn new(segment: u32, offset: u32) -> Loc {
        Loc((u64::from(segment) << 32) | u64::from(offset))
    }

    /// The segment number.
    pub fn segment(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The byte offset in the segment.
    pub fn offset(self) -> u32 {
        self.0 as u32
    }
}

/// The path of segment `n` in `dir`.
pub fn path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:010}.log"))
}

/// The segment numbers in `dir`, ascending. Other files are ignored.
///
/// # Errors
/// When the folder cannot be read.
pub fn list(dir: &Path) -> io::Result<Vec<u32>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if stem.len() == 10 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = stem.parse() {
                numbers.push(n);
            }
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Fsyncs a folder, so that files created or removed in it survive a crash.
///
/// # Errors
/// As `fsync(2)`.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads one record at `offset` of `file` into `buf` (which it resizes), without
/// reading anything else of the segment.
///
/// # Errors
/// An I/O error, or `InvalidData` when the bytes there are not an intact record.
pub fn read_at(file: &File, offset: u32, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.resize(HEADER, 0);
    file.read_exact_at(buf, u64::from(offset))?;
    let len = record::payload_len(buf).map_err(invalid)?;
    buf.resize(HEADER + len, 0);
    file.read_exact_at(&mut buf[HEADER..], u64::from(offset) + HEADER as u64)?;
    record::decode(buf).map_err(invalid)?;
    Ok(())
}

fn invalid(bad: Bad) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, bad.reason())
}

/// Reads a segment's records front to back, streaming.
pub struct Scanner {
    reader: BufReader<File>,
    /// Offset of the next record.
    pub offset: u64,
    /// The segment's length on disk.
    pub len: u64,
    buf: Vec<u8>,
    /// Version 2 or later: a sealed segment must end with a seal record.
    pub sealed_format: bool,
}

/// What the scanner found at its offset.
pub enum Scanned<'a> {
    /// An intact record and its length.
    Record(record::Record<'a>, usize),
    /// The clean end of the segment.
    End,
    /// Damage at the offset.
    Bad(Bad),
}

impl Scanner {
    /// Opens a segment and checks its magic. A file shorter than the magic (created, then
    /// a crash before the header reached the disk) has no records.
    ///
    /// # Errors
    /// An I/O error; `InvalidData` for a file that is not a segment.
    pub fn open(path: &Path) -> io::Result<Scanner> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(256 << 10, file);
        let mut magic = [0; MAGIC.len()];
        let got = read_full(&mut reader, &mut magic)?;
        let v1 = magic[..got] == MAGIC_V1[..got] && (got == magic.len() || got > 6);
        if !v1 && magic[..got] != MAGIC[..got] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a rushhour log segment", path.display()),
            ));
        }
        Ok(Scanner {
            reader,
            offset: got as u64,
            len,
            buf: Vec::new(),
            sealed_format: !v1,
        })
    }

    /// Moves to `offset` (a record found by [`resync`]).
    ///
    /// # Errors
    /// As `lseek(2)`.
    pub fn seek(&mut self, offset: u64) -> io::Result<()> {
        self.reader.seek(SeekFrom::Start(offset))?;
        self.offset = offset;
        Ok(())
    }

    /// The record at the current offset; [`Scanner::advance`] moves past it.
    ///
    /// # Errors
    /// An I/O error while reading.
    pub fn read_next(&mut self) -> io::Result<Scanned<'_>> {
        if self.offset < MAGIC.len() as u64 {
            return Ok(Scanned::End);
        }
        self.buf.resize(HEADER, 0);
        let got = read_full(&mut self.reader, &mut self.buf)?;
        if got == 0 {
            return Ok(Scanned::End);
        }
        if got < HEADER {
            return Ok(Scanned::Bad(Bad::Incomplete));
        }
        let len = match record::payload_len(&self.buf) {
            Ok(len) if self.offset + (HEADER + len) as u64 <= self.len => len,
            Ok(_) => return Ok(Scanned::Bad(Bad::Incomplete)),
            Err(bad) => return Ok(Scanned::Bad(bad)),
        };
        self.buf.resize(HEADER + len, 0);
        if read_full(&mut self.reader, &mut self.buf[HEADER..])? < len {
            return Ok(Scanned::Bad(Bad::Incomplete));
        }
        Ok(match record::decode(&self.buf) {
            Ok((r, n)) => Scanned::Record(r, n),
            Err(bad) => Scanned::Bad(bad),
        })
    }

    /// Moves past a record of `len` bytes returned by [`Scanner::read_next`].
    pub fn advance(&mut self, len: usize) {
        self.offset += len as u64;
    }
}

/// The offset of the first intact record that starts after `bad` in `file` (`len`
/// bytes long), if any: a checksum that matches over a plausible length and kind, and
/// fields that parse. Intact records after damage mean the damage is not a torn write.
///
/// # Errors
/// As `pread(2)`.
pub fn resync(file: &File, bad: u64, len: u64) -> io::Result<Option<u64>> {
    let from = bad + 1;
    let mut buf = vec![0; len.saturating_sub(from) as usize];
    file.read_exact_at(&mut buf, from)?;
    Ok(find_record(&buf).map(|at| from + at as u64))
}

/// The offset of the first intact record in `buf`, if any.
pub fn find_record(buf: &[u8]) -> Option<usize> {
    (0..buf.len().saturating_sub(HEADER)).find(|&at| {
        let rest = &buf[at..];
        // Cheap checks first: most offsets fail them, and only the rest pay a checksum.
        record::payload_len(rest).is_ok_and(|n| {
            HEADER + n <= rest.len() && (1..=record::MAX_KIND).contains(&rest[HEADER])
        }) && record::decode(rest).is_ok()
    })
}

/// Reads until `buf` is full or the end; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loc_packs_segment_and_offset() {
        let loc = Loc::new(7, 123_456);
        assert_eq!((loc.segment(), loc.offset()), (7, 123_456));
        assert!(Loc::new(1, u32::MAX) < Loc::new(2, 0));
    }

    #[test]
    fn list_sorts_segments_and_skips_other_files() {
        let dir = tempfile::tempdir().unwrap();
        for n in [3, 1, 20] {
            File::create(path(dir.path(), n)).unwrap();
        }
        File::create(dir.path().join("notes.txt")).unwrap();
        File::create(dir.path().join("12.log")).unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![1, 3, 20]);
    }
}
