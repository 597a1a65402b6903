//! Log records: length-framed and checksummed, one per durable state change.
//!
//! Layout: `len: u32 LE | crc32c: u32 LE | kind: u8 | fields…`, where `len` counts the
//! kind and the fields and the CRC32C covers the same bytes. Strings are `u16 len | UTF-8`,
//! the message body `u32 len | JSON text`. Every record names its tenant and room, so a
//! segment can be read on its own.

/// Bytes before a record's kind: its length and checksum.
pub const HEADER: usize = 8;
/// Largest record accepted on reading: anything longer is a corrupt length.
pub const MAX_RECORD: usize = 4 << 20;

const KIND_MESSAGE: u8 = 1;
const KIND_MEMBER: u8 = 2;
const KIND_ROOM: u8 = 3;
const KIND_CURSOR: u8 = 4;
const KIND_STATE: u8 = 5;
const KIND_LEASE: u8 = 6;
const KIND_SEAL: u8 = 7;
const KIND_FIRST: u8 = 8;
/// The highest record kind: a resynchronising scan checks it before the checksum.
pub const MAX_KIND: u8 = KIND_FIRST;

/// The fewest bytes a message record can take (every string empty): a run of `n`
/// unreadable bytes held at most `n / MIN_MESSAGE` messages.
pub const MIN_MESSAGE: u64 = (HEADER + 1 + 2 + 2 + 8 + 8 + 2 + 2 + 4) as u64;

/// One state change of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A message stored at its seq.
    Message {
        tenant: &'a str,
        room: &'a str,
        seq: u64,
        ts: u64,
        from: &'a str,
        cid: &'a str,
        body: &'a str,
    },
    /// A user joined (subscribed or sent) or left a room.
    Member {
        tenant: &'a str,
        room: &'a str,
        user: &'a str,
        joined: bool,
    },
    /// A room's newest seq, carried forward when the segments holding its messages go,
    /// so that seqs never restart.
    Room {
        tenant: &'a str,
        room: &'a str,
        last_seq: u64,
    },
    /// A control-plane value (a meeting, a seat…) set, or deleted when `value` is None.
    /// Its "room" is the key space, its tenant empty.
    State {
        space: &'a str,
        key: &'a str,
        value: Option<&'a str>,
    },
    /// No room's seq is above `up_to` until a later lease: written before the first
    /// message that would pass it, and again in every new segment, so that recovery
    /// can bound the seqs of messages it cannot read.
    Lease { up_to: u64 },
    /// The last record of a sealed segment: segment `next` was created (and synced)
    /// before this record was written, so a missing `next` or a sealed segment that does
    /// not end with this record is damage, not a crash.
    Seal { next: u32 },
    /// Retention removed the segments before `segment` (written before they go).
    First { segment: u32 },
    /// A member's receipt cursors (delivered up to, read up to).
    Cursor {
        tenant: &'a str,
        room: &'a str,
        user: &'a str,
        delivered: u64,
        read: u64,
    },
}

/// Why bytes are not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    /// The bytes end before the record does (a torn write at the tail).
    Incomplete,
    /// The length is impossible.
    Length,
    /// The checksum does not match.
    Checksum,
    /// The checksum matches but the fields do not parse (a bug, or a format change).
    Fields,
}

impl Bad {
    /// A short reason for logs.
    pub fn reason(self) -> &'static str {
        match self {
            Bad::Incomplete => "incomplete record",
            Bad::Length => "impossible record length",
            Bad::Checksum => "checksum mismatch",
            Bad::Fields => "unreadable record fields",
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Ids and cids are at most 128 bytes; the protocol checked them before.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

impl Record<'_> {
    /// Appends the framed record to `out`; returns its length with the header.
    pub fn encode(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        match *self {
            Record::Message {
                tenant,
                room,
                seq,
                ts,
                from,
                cid,
                body,
            } => {
                out.push(KIND_MESSAGE);
                put_str(out, tenant);
                put_str(out, room);
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&ts.to_le_bytes());
                put_str(out, from);
                put_str(out, cid);
                out.extend_from_slice(&(body.len() as u32).to_le_bytes());
                out.extend_from_slice(body.as_bytes());
            }
            Record::Member {
                tenant,
                room,
                user,
                joined,
            } => {
                out.push(KIND_MEMBER);
                put_str(out, tenant);
                put_str(out, room);
                put_str(out, user);
                out.push(u8::from(joined));
            }
            Record::Room {
                tenant,
                room,
                last_seq,
            } => {
                out.push(KIND_ROOM);
                put_str(out, tenant);
                put_str(out, room);
                out.extend_from_slice(&last_seq.to_le_bytes());
            }
            Record::State { space, key, value } => {
                out.push(KIND_STATE);
                put_str(out, space);
                put_str(out, key);
                out.push(u8::from(value.is_some()));
                let value = value.unwrap_or("");
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value.as_bytes());
            }
            Record::Lease { up_to } => {
                out.push(KIND_LEASE);
                out.extend_from_slice(&up_to.to_le_bytes());
            }
            Record::Seal { next } => {
                out.push(KIND_SEAL);
                out.extend_from_slice(&next.to_le_bytes());
            }
            Record::First { segment } => {
                out.push(KIND_FIRST);
                out.extend_from_slice(&segment.to_le_bytes());
            }
            Record::Cursor {
                tenant,
                room,
                user,
                delivered,
                read,
            } => {
                out.push(KIND_CURSOR);
                put_str(out, tenant);
                put_str(out, room);
                put_str(out, user);
                out.extend_from_slice(&delivered.to_le_bytes());
                out.extend_from_slice(&read.to_le_bytes());
            }
        }
        let len = (out.len() - start - HEADER) as u32;
        let crc = crc32c::crc32c(&out[start + HEADER..]);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
        out.len() - start
    }

    /// The record's tenant and room; None for the log's own records.
    pub fn room(&self) -> Option<(&str, &str)> {
        match *self {
            Record::Message { tenant, room, .. }
            | Record::Member { tenant, room, .. }
            | Record::Room { tenant, room, .. }
            | Record::Cursor { tenant, room, .. } => Some((tenant, room)),
            Record::State { space, .. } => Some(("", space)),
            Record::Lease { .. } | Record::Seal { .. } | Record::First { .. } => None,
        }
    }
}

/// The payload length a header announces, checked against [`MAX_RECORD`].
///
/// # Errors
/// [`Bad::Incomplete`] for fewer than [`HEADER`] bytes, [`Bad::Length`] for an impossible length.
pub fn payload_len(header: &[u8]) -> Result<usize, Bad> {
    let len = header
        .get(..4)
        .ok_or(Bad::Incomplete)?
        .try_into()
        .map(u32::from_le_bytes)
        .map_err(|_| Bad::Incomplete)? as usize;
    if len == 0 || len > MAX_RECORD {
        return Err(Bad::Length);
    }
    Ok(len)
}

/// Parses the record at the start of `buf` (header included); returns it and its
/// length with the header.
///
/// # Errors
/// Why the bytes are not a whole, intact record.
pub fn decode(buf: &[u8]) -> Result<(Record<'_>, usize), Bad> {
    if buf.len() < HEADER {
        return Err(Bad::Incomplete);
    }
    let len = payload_len(buf)?;
    let payload = buf.get(HEADER..HEADER + len).ok_or(Bad::Incomplete)?;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if crc32c::crc32c(payload) != crc {
        return Err(Bad::Checksum);
    }
    let record = Fields(payload).record().ok_or(Bad::Fields)?;
    Ok((record, HEADER + len))
}

/// A cursor over a payload's fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }

    fn str_of(&mut self, len: usize) -> Option<&'a str> {
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
        self.str_of(usize::from(len))
    }

    fn record(mut self) -> Option<Record<'a>> {
        let record = match self.u8()? {
            KIND_MESSAGE => Record::Message {
                tenant: self.str()?,
                room: self.str()?,
                seq: self.u64()?,
                ts: self.u64()?,
                from: self.str()?,
                cid: self.str()?,
                body: {
                    let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
                    self.str_of(len as usize)?
                },
            },
            KIND_MEMBER => Record::Member {
                tenant: self.str()?,
                room: self.str()?,
                user: self.str()?,
                joined: self.u8()? != 0,
            },
            KIND_ROOM => Record::Room {
                tenant: self.str()?,
                room: self.str()?,
                last_seq: self.u64()?,
            },
            KIND_STATE => {
                let (space, key) = (self.str()?, self.str()?);
                let present = self.u8()? != 0;
                let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
                let value = self.str_of(len as usize)?;
                Record::State {
                    space,
                    key,
                    value: present.then_some(value),
                }
            }
            KIND_LEASE => Record::Lease { up_to: self.u64()? },
            KIND_SEAL => Record::Seal { next: self.u32()? },
            KIND_FIRST => Record::First {
                segment: self.u32()?,
            },
            KIND_CURSOR => Record::Cursor {
                tenant: self.str()?,
                room: self.str()?,
                user: self.str()?,
                delivered: self.u64()?,
                read: self.u64()?,
            },
            _ => return None,
        };
        self.0.is_empty().then_some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message<'a>(body: &'a str, cid: &'a str) -> Record<'a> {
        Record::Message {
            tenant: "acme",
            room: "general",
            seq: 42,
            ts: 1_700_000_000_000,
            from: "alice",
            cid,
            body,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let records = [
            message("{\"text\":\"hi\"}", "c-1"),
            Record::Member {
                tenant: "acme",
                room: "general",
                user: "bob",
                joined: true,
            },
            Record::Room {
                tenant: "acme",
                room: "general",
                last_seq: 7,
            },
            Record::Cursor {
                tenant: "acme",
                room: "general",
                user: "bob",
                delivered: 9,
                read: 8,
            },
            Record::State {
                space: "meetings",
                key: "m-1",
                value: Some("{\"title\":\"Stand-up\"}"),
            },
            Record::State {
                space: "meetings",
                key: "m-1",
                value: None,
            },
            Record::Lease { up_to: 65_536 },
            Record::Seal { next: 4 },
            Record::First { segment: 3 },
        ];
        let mut buf = Vec::new();
        for r in &records {
            r.encode(&mut buf);
        }
        let mut at = 0;
        for r in &records {
            let (got, len) = decode(&buf[at..]).unwrap();
            assert_eq!(&got, r);
            at += len;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn damage_is_detected() {
        let mut buf = Vec::new();
        let len = message("{}", "c").encode(&mut buf);
        for cut in 0..len {
            assert_eq!(
                decode(&buf[..cut]).unwrap_err(),
                Bad::Incomplete,
                "cut {cut}"
            );
        }
        buf[HEADER + 3] ^= 0x10;
        assert_eq!(decode(&buf).unwrap_err(), Bad::Checksum);
        assert_eq!(decode(&[0; 16]).unwrap_err(), Bad::Length);
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_is_caught(body in "[ -~]{0,200}", bit in 0usize..4096) {
            let mut buf = Vec::new();
            let len = message(&body, "c-9").encode(&mut buf);
            let bit = bit % (len * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            // A flipped length bit may make the record look longer (incomplete) or
            // shorter (checksum or length); it never parses.
            prop_assert!(decode(&buf).is_err());
        }
    }
}
