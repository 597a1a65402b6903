//! The log against its files: round trips, restarts, torn tails, damaged segments.

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn name(s: &str) -> Arc<str> {
    s.into()
}

fn message(room: u32, seq: u64, cid: &str) -> StoredMessage {
    StoredMessage {
        room: RoomId(room),
        seq: Seq(seq),
        ts: 1_000 + seq,
        from: "alice".into(),
        cid: cid.into(),
        frame: frames::msg(
            &format!("r{room}"),
            Seq(seq),
            "alice",
            cid,
            1_000 + seq,
            "{\"n\":1}",
        ),
    }
}

fn options() -> LogOptions {
    LogOptions {
        window: 4,
        segment_bytes: 4096,
        ..LogOptions::default()
    }
}

/// The test options with retention of `n` messages per room.
fn keeping(n: u64) -> LogOptions {
    LogOptions {
        max_per_room: n,
        ..options()
    }
}

fn open(dir: &Path, opts: LogOptions) -> Log {
    Log::open(dir, opts, 10_000).expect("log opens")
}

/// Appends `n` messages to each of `rooms` rooms, round robin, and waits until durable.
fn fill(log: &mut Log, rooms: u32, n: u64) {
    let mut lsn = 0;
    for seq in 1..=n {
        for room in 0..rooms {
            let room_name = name(&format!("r{room}"));
            let m = message(room, seq, &format!("c{seq}"));
            lsn = log
                .append(m, &name("acme"), &room_name, "{\"n\":1}")
                .unwrap();
        }
    }
    log.durability().wait(lsn, Duration::from_secs(10)).unwrap();
}

fn seqs(log: &Log, room: u32) -> Vec<u64> {
    log.range(RoomId(room), Seq(1), Seq(u64::MAX - 1))
        .iter()
        .map(|m| m.seq.0)
        .collect()
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    segment::path(dir, *segment::list(dir).unwrap().last().unwrap())
}

/// Offsets of the message records of a segment, from a scan.
fn record_offsets(path: &Path) -> Vec<u64> {
    let mut scanner = segment::Scanner::open(path).unwrap();
    let mut offsets = Vec::new();
    loop {
        let at = scanner.offset;
        match scanner.read_next().unwrap() {
            segment::Scanned::Record(r, len) => {
                if matches!(r, Record::Message { .. }) {
                    offsets.push(at);
                }
                scanner.advance(len);
            }
            _ => return offsets,
        }
    }
}

#[test]
fn messages_members_and_seqs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), options());
        log.member(RoomId(0), &name("acme"), &name("r0"), "bob", true)
            .unwrap();
        log.member(RoomId(0), &name("acme"), &name("r0"), "carol", true)
            .unwrap();
        log.member(RoomId(0), &name("acme"), &name("r0"), "carol", false)
            .unwrap();
        fill(&mut log, 3, 50);
        let bob = (&name("acme"), &name("r0"), "bob");
        log.cursor(RoomId(0), bob.0, bob.1, bob.2, (40, 30))
            .unwrap();
        let lsn = log
            .cursor(RoomId(0), bob.0, bob.1, bob.2, (20, 35))
            .unwrap();
        log.durability().wait(lsn, Duration::from_secs(10)).unwrap();
    }
    let mut log = open(dir.path(), options());
    assert!(log.report().cuts.is_empty());
    assert!(
        segment::list(dir.path()).unwrap().len() > 1,
        "rolled segments"
    );
    let rooms = log.recovered();
    assert_eq!(rooms.len(), 3);
    assert_eq!(rooms[0].last_seq, Seq(50));
    assert_eq!(
        rooms[0].members,
        vec![(name("bob"), 40, 35)],
        "cursors never go back"
    );
    // Replay reads the old part from disk and the newest from the window.
    assert_eq!(seqs(&log, 2), (1..=50).collect::<Vec<_>>());
    let m = &log.range(RoomId(1), Seq(7), Seq(7))[0];
    assert_eq!(m.frame, message(1, 7, "c7").frame);
    // The window holds the newest messages, encoded as they were sent.
    let window = &log.rooms[1].window;
    let in_window: Vec<u64> = window.iter().map(|m| m.seq.0).collect();
    assert_eq!(in_window, [47, 48, 49, 50]);
    for m in window {
        let sent = message(1, m.seq.0, &format!("c{}", m.seq.0));
        assert_eq!(
            (m.frame.clone(), m.ts, &*m.cid),
            (sent.frame, sent.ts, &*sent.cid)
        );
    }
    assert_eq!(
        log.find_cid(RoomId(1), "alice", "c7"),
        Some((Seq(7), 1_007))
    );
    assert_eq!(log.find_cid(RoomId(1), "bob", "c7"), None);
}

/// Every cut inside the last three records, and a flipped bit in the last one, recover
/// exactly the records before the damage.
#[test]
fn a_torn_tail_is_cut_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), LogOptions::default());
        fill(&mut log, 1, 10);
    }
    let path = last_segment(dir.path());
    let pristine = fs::read(&path).unwrap();
    let offsets = record_offsets(&path);
    assert_eq!(offsets.len(), 10);
    let first_cut = offsets[7] as usize;
    for cut in first_cut..pristine.len() {
        fs::write(&path, &pristine[..cut]).unwrap();
        let mut log = open(dir.path(), LogOptions::default());
        let kept = offsets.iter().filter(|&&o| o < cut as u64).count() as u64;
        let kept = if offsets.contains(&(cut as u64)) {
            kept
        } else {
            kept - 1
        };
        assert_eq!(
            seqs(&log, 0),
            (1..=kept).collect::<Vec<_>>(),
            "cut at {cut}"
        );
        assert_eq!(log.recovered()[0].last_seq, Seq(kept));
        let cut_reported = !log.report().cuts.is_empty();
        assert_eq!(
            cut_reported,
            !offsets.contains(&(cut as u64)),
            "cut at {cut}"
        );
        drop(log);
        // The damage is gone: the file ends at the last intact record.
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            offsets
                .get(kept as usize)
                .copied()
                .unwrap_or(pristine.len() as u64)
        );
    }
    let mut flipped = pristine.clone();
    let at = offsets[9] as usize + record::HEADER + 5;
    flipped[at] ^= 0x04;
    fs::write(&path, &flipped).unwrap();
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(seqs(&log, 0), (1..=9).collect::<Vec<_>>());
    assert!(
        log.report().cuts[0].contains("checksum"),
        "{:?}",
        log.report().cuts
    );
}

fn repairing() -> LogOptions {
    LogOptions {
        repair: true,
        ..options()
    }
}

/// Flips one bit in the middle message record of `path`; returns that message's seq
/// (the test fills one room, seq = order).
fn flip_middle(path: &Path) -> u64 {
    let offsets = record_offsets(path);
    let mut bytes = fs::read(path).unwrap();
    let at = offsets[offsets.len() / 2] as usize;
    let (record, _) = record::decode(&bytes[at..]).unwrap();
    let Record::Message { seq, .. } = record else {
        unreachable!()
    };
    bytes[at + record::HEADER + 3] ^= 0x80;
    fs::write(path, &bytes).unwrap();
    seq
}

/// What a repaired log must serve: every message but `lost`, at its seq, each retried
/// cid a duplicate of its original seq, and new seqs above every old one.
fn assert_repaired(log: &mut Log, n: u64, lost: &[u64]) {
    let kept: Vec<u64> = (1..=n).filter(|s| !lost.contains(s)).collect();
    assert_eq!(seqs(log, 0), kept, "every intact message at its seq");
    for &seq in &kept {
        assert_eq!(
            log.find_cid(RoomId(0), "alice", &format!("c{seq}")),
            Some((Seq(seq), 1_000 + seq)),
            "the dedupe entry of {seq} is kept"
        );
    }
    let last = log.recovered()[0].last_seq;
    assert!(
        last.0 >= n,
        "seqs up to {n} were acknowledged, the counter is at {last}"
    );
}

#[test]
fn damage_in_a_sealed_segment_stops_the_start_unless_repair() {
    let dir = tempfile::tempdir().unwrap();
    fill(&mut open(dir.path(), options()), 1, 200);
    let segments = segment::list(dir.path()).unwrap();
    assert!(segments.len() >= 3);
    let sealed = segment::path(dir.path(), segments[1]);
    let lost = flip_middle(&sealed);
    let bytes = fs::read(&sealed).unwrap();

    let err = Log::open(dir.path(), options(), 10_000)
        .err()
        .expect("refuses");
    let text = err.to_string();
    assert!(
        text.contains("--repair")
            && text.contains("damaged")
            && text.contains(&sealed.display().to_string()),
        "{text}"
    );
    assert_eq!(
        fs::read(&sealed).unwrap(),
        bytes,
        "nothing changed without repair"
    );

    let mut log = open(dir.path(), repairing());
    assert!(log.report().cuts.iter().any(|c| c.contains("--repair")));
    assert_repaired(&mut log, 200, &[lost]);
    drop(log);
    // The repaired log starts without --repair, serves the same, says nothing of a repair.
    let mut log = open(dir.path(), options());
    assert!(log.report().cuts.is_empty(), "{:?}", log.report().cuts);
    assert_repaired(&mut log, 200, &[lost]);
}

/// A flipped bit in a record in the middle of the newest segment is damage, not a torn
/// write: the intact records after it say so.
#[test]
fn damage_in_the_middle_of_the_newest_segment_is_not_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    fill(&mut open(dir.path(), LogOptions::default()), 1, 50);
    let newest = last_segment(dir.path());
    let lost = flip_middle(&newest);
    let err = Log::open(dir.path(), LogOptions::default(), 10_000)
        .err()
        .expect("refuses");
    let text = err.to_string();
    assert!(
        text.contains(&newest.display().to_string()) && text.contains("intact records follow"),
        "{text}"
    );
    let mut log = open(
        dir.path(),
        LogOptions {
            repair: true,
            ..LogOptions::default()
        },
    );
    assert_repaired(&mut log, 50, &[lost]);
    // New messages get seqs never given before.
    let m = message(0, 51, "new");
    assert!(log.recovered().is_empty(), "taken once");
    let last = log.rooms[0].last_seq;
    assert!(last.0 >= 50);
    let fresh = message(0, last.0 + 1, "fresh");
    let lsn = log.append(fresh, &name("acme"), &name("r0"), "{}").unwrap();
    log.durability().wait(lsn, Duration::from_secs(10)).unwrap();
    drop((log, m));
    let mut log = open(dir.path(), LogOptions::default());
    assert_eq!(log.recovered()[0].last_seq, last.next());
    assert_eq!(*seqs(&log, 0).last().unwrap(), last.0 + 1);
}

#[test]
fn a_missing_segment_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    fill(&mut open(dir.path(), options()), 1, 400);
    let segments = segment::list(dir.path()).unwrap();
    assert!(segments.len() >= 4);
    // A segment in the middle.
    let gone = segment::path(dir.path(), segments[2]);
    let lost: Vec<u64> = {
        let offsets = record_offsets(&gone);
        let bytes = fs::read(&gone).unwrap();
        offsets
            .iter()
            .map(|&o| match record::decode(&bytes[o as usize..]).unwrap().0 {
                Record::Message { seq, .. } => seq,
                _ => unreachable!(),
            })
            .collect()
    };
    let saved = fs::read(&gone).unwrap();
    fs::remove_file(&gone).unwrap();
    let err = Log::open(dir.path(), options(), 10_000)
        .err()
        .expect("refuses");
    assert!(
        err.to_string()
            .contains(&format!("segment {} is missing", segments[2])),
        "{err}"
    );
    let mut log = open(dir.path(), repairing());
    assert_repaired(&mut log, 400, &lost);
    drop(log);
    let mut log = open(dir.path(), options());
    assert_repaired(&mut log, 400, &lost);
    drop(log);

    // The newest segment: the seal of the one before says it existed.
    let dir = tempfile::tempdir().unwrap();
    fill(&mut open(dir.path(), options()), 1, 200);
    let newest = last_segment(dir.path());
    fs::remove_file(&newest).unwrap();
    let err = Log::open(dir.path(), options(), 10_000)
        .err()
        .expect("refuses");
    assert!(err.to_string().contains("is missing"), "{err}");
    // Nothing after it bounds the seqs it held: even --repair refuses.
    let err = Log::open(dir.path(), repairing(), 10_000)
        .err()
        .expect("refuses");
    assert!(matches!(err, RecoveryError::Unrepairable(_)), "{err}");

    // The first segment, with no retention record saying it went.
    let dir = tempfile::tempdir().unwrap();
    fill(&mut open(dir.path(), options()), 1, 200);
    fs::remove_file(segment::path(dir.path(), 1)).unwrap();
    let err = Log::open(dir.path(), options(), 10_000)
        .err()
        .expect("refuses");
    assert!(err.to_string().contains("segment 1 is missing"), "{err}");
    drop(saved);
}

/// A sealed segment cut at a record boundary looks whole but for its seal.
#[test]
fn a_cut_sealed_segment_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    fill(&mut open(dir.path(), options()), 1, 200);
    let segments = segment::list(dir.path()).unwrap();
    let sealed = segment::path(dir.path(), segments[1]);
    let offsets = record_offsets(&sealed);
    let cut = offsets[offsets.len() / 2];
    let bytes = fs::read(&sealed).unwrap();
    let lost: Vec<u64> = offsets
        .iter()
        .filter(|&&o| o >= cut)
        .map(|&o| match record::decode(&bytes[o as usize..]).unwrap().0 {
            Record::Message { seq, .. } => seq,
            _ => unreachable!(),
        })
        .collect();
    fs::write(&sealed, &bytes[..cut as usize]).unwrap();
    let err = Log::open(dir.path(), options(), 10_000)
        .err()
        .expect("refuses");
    assert!(err.to_string().contains("without its seal"), "{err}");
    let mut log = open(dir.path(), repairing());
    assert_repaired(&mut log, 200, &lost);
}

#[test]
fn retention_keeps_the_newest_and_dead_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let opts = keeping(20);
    {
        let mut log = open(dir.path(), opts.clone());
        log.member(RoomId(0), &name("acme"), &name("r0"), "bob", true)
            .unwrap();
        fill(&mut log, 1, 300);
        assert_eq!(log.first_seq(RoomId(0), Seq(300)), Seq(281));
        assert_eq!(
            log.find_cid(RoomId(0), "alice", "c1"),
            None,
            "dedupe follows retention"
        );
        let before = segment::list(dir.path()).unwrap().len();
        let members = |_| vec![(name("bob"), 7, 6)];
        log.maintain(0, &members).unwrap();
        log.durability()
            .wait(log.appender.last(), Duration::from_secs(10))
            .unwrap();
        log.maintain(0, &members).unwrap();
        let after = segment::list(dir.path()).unwrap().len();
        assert!(after < before, "{before} -> {after} segments");
    }
    let mut log = open(dir.path(), opts);
    let room = &log.recovered()[0];
    assert_eq!(
        (room.last_seq, room.members.clone()),
        (Seq(300), vec![(name("bob"), 7, 6)])
    );
    assert_eq!(seqs(&log, 0), (281..=300).collect::<Vec<_>>());
}

#[test]
fn a_failed_write_stops_writes_and_keeps_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), options());
    fill(&mut log, 1, 5);
    // Make the next segment impossible to create: a folder where its file would go.
    let next = log.appender.segment() + 1;
    fs::create_dir(segment::path(dir.path(), next)).unwrap();
    let mut failed = None;
    for seq in 6..=200 {
        match log.append(
            message(0, seq, &format!("c{seq}")),
            &name("acme"),
            &name("r0"),
            "{}",
        ) {
            Ok(lsn) => {
                if let Err(reason) = log.durability().wait(lsn, Duration::from_secs(10)) {
                    failed = Some(reason);
                    break;
                }
            }
            Err(e) => {
                failed = Some(e.to_string().into());
                break;
            }
        }
    }
    let reason = failed.expect("a write failed");
    assert!(log.durability().failed().is_some(), "{reason}");
    assert_eq!(
        log.append(message(0, 999, "x"), &name("acme"), &name("r0"), "{}")
            .unwrap_err()
            .code(),
        "internal"
    );
    assert_eq!(&seqs(&log, 0)[..5], &[1, 2, 3, 4, 5]);
    let _ = OpenOptions::new();
}

#[test]
fn control_plane_values_survive_restarts_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let opts = keeping(5);
    {
        let mut log = open(dir.path(), opts.clone());
        log.put_state("meetings", "m-1", Some("{\"v\":1}")).unwrap();
        log.put_state("meetings", "m-2", Some("{\"v\":2}")).unwrap();
        log.put_state("meetings", "m-2", None).unwrap();
        log.put_state("seats", "s-1", Some("x")).unwrap();
        fill(&mut log, 1, 300);
        let none = |_| Vec::new();
        log.maintain(0, &none).unwrap();
        log.durability()
            .wait(log.appender.last(), Duration::from_secs(10))
            .unwrap();
        log.maintain(0, &none).unwrap();
        assert!(
            !segment::path(dir.path(), 1).exists(),
            "the first segment went"
        );
    }
    let log = open(dir.path(), opts);
    assert_eq!(
        log.states("meetings"),
        vec![("m-1".to_owned(), "{\"v\":1}".to_owned())]
    );
    assert_eq!(
        log.states("seats"),
        vec![("s-1".to_owned(), "x".to_owned())]
    );
}

#[test]
fn a_room_keeping_fewer_messages_than_the_window_recovers_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let opts = keeping(2);
    fill(&mut open(dir.path(), opts.clone()), 1, 10);
    let log = open(dir.path(), opts);
    assert_eq!(seqs(&log, 0), [9, 10]);
    let in_window: Vec<u64> = log.rooms[0].window.iter().map(|m| m.seq.0).collect();
    assert_eq!(in_window, [9, 10]);
}
