//! Reads a recording back: checks the preamble, header and trailer when opened, then hands out
//! the events and snapshots in the order they were written. Every malformed input is a
//! [`ReadError`], never a panic: lengths are checked against the file before anything is read
//! or allocated.

use std::io::{self, Read, Seek, SeekFrom};

use super::format::{
    self, Header, Kind, RecordedSnapshot, Trailer, FOOTER_BYTES, FORMAT_VERSION, FRAME_HEAD_BYTES,
    MAX_META_BYTES, PREAMBLE_BYTES,
};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not a sockmem recording ({0})")]
    NotARecording(&'static str),
    #[error(
        "written by a newer sockmem: recording format version {found}, while this sockmem \
         reads format version {supported} and older; read it with a newer sockmem"
    )]
    NewerVersion { found: u16, supported: u16 },
    #[error(
        "written by an older sockmem: recording format version {found}, whose events carry no \
         cgroup or network namespace; this sockmem reads format version {supported}; read it \
         with the sockmem that wrote it"
    )]
    OlderVersion { found: u16, supported: u16 },
    /// Cut before its header ended: nothing in it can be read. (A file cut later is read up
    /// to where it ends: see [`Reader::open`].)
    #[error(
        "the recording is truncated before its header ended ({events} events): the `record` \
         writing it was killed as it started, nothing in it is readable"
    )]
    Truncated { events: u64 },
    #[error("corrupt recording at byte {offset}: {what}")]
    Corrupt { offset: u64, what: String },
    #[error("reading the recording")]
    Io(#[from] io::Error),
}

/// What a recording holds between its header and trailer.
#[derive(Debug)]
pub enum Item<'a> {
    /// A raw `SockEvent` record.
    Event(&'a [u8]),
    Snapshot(Box<RecordedSnapshot>),
}

pub struct Reader<R: Read + Seek> {
    src: R,
    header: Header,
    trailer: Trailer,
    /// Where the next frame starts.
    pos: u64,
    /// Where the trailer frame starts: the frames before it are the items.
    end: u64,
    events: u64,
    snapshots: u64,
    payload: Vec<u8>,
}

fn corrupt(offset: u64, what: impl Into<String>) -> ReadError {
    ReadError::Corrupt {
        offset,
        what: what.into(),
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` when the source ends first.
fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match src.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// A JSON frame's payload as `T`.
fn parse_json<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    offset: u64,
    what: &str,
) -> Result<T, ReadError> {
    serde_json::from_slice(payload).map_err(|e| corrupt(offset, format!("bad {what}: {e}")))
}

impl<R: Read + Seek> Reader<R> {
    /// Checks that `src` is a recording of a format this sockmem reads, and reads its header
    /// and trailer. A recording is a flight recorder: one without its trailer (the `record`
    /// writing it was killed, or is still running) is read up to its last whole frame, with a
    /// trailer made up of what those frames tell (counts, the run's length up to its last
    /// event) and `truncated` set; what only the trailer knew is missing (events lost to a
    /// full ring buffer, names of drop reasons and sites): see [`Reader::truncation_warning`].
    /// One cut inside its header is [`ReadError::Truncated`].
    pub fn open(mut src: R) -> Result<Reader<R>, ReadError> {
        let len = src.seek(SeekFrom::End(0))?;
        src.seek(SeekFrom::Start(0))?;
        let mut pre = Vec::with_capacity(PREAMBLE_BYTES);
        (&mut src)
            .take(PREAMBLE_BYTES as u64)
            .read_to_end(&mut pre)?;
        if len == 0 {
            return Err(ReadError::NotARecording("the file is empty"));
        }
        if !pre.starts_with(&format::MAGIC) {
            return Err(ReadError::NotARecording(
                "it does not start with a recording's magic bytes",
            ));
        }
        if pre.len() < PREAMBLE_BYTES {
            return Err(ReadError::Truncated { events: 0 });
        }
        let version =
            format::parse_preamble(&pre).ok_or(ReadError::NotARecording("no format version"))?;
        if version > FORMAT_VERSION {
            return Err(ReadError::NewerVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(corrupt(8, "format version 0"));
        }
        // Version 1's events are 176 bytes, without the attribution fields: refused by name
        // rather than read with made-up zeros for them.
        if version < FORMAT_VERSION {
            return Err(ReadError::OlderVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let mut payload = Vec::new();
        let mut pos = PREAMBLE_BYTES as u64;
        let header: Header = match read_frame(&mut src, pos, len, &mut payload)? {
            Some(Kind::Header) => parse_json(&payload, pos, "header")?,
            Some(k) => {
                return Err(corrupt(
                    pos,
                    format!("the first frame is {k:?}, not Header"),
                ))
            }
            None => return Err(ReadError::Truncated { events: 0 }),
        };
        pos += (FRAME_HEAD_BYTES + payload.len()) as u64;
        let want = std::mem::size_of::<sockmem_common::SockEvent>() as u32;
        if header.event_size != want {
            return Err(corrupt(
                PREAMBLE_BYTES as u64,
                format!(
                    "its events are {} bytes, this sockmem's are {want} (format version \
                     {version} has {want})",
                    header.event_size
                ),
            ));
        }
        let (end, trailer) = match read_trailer(&mut src, pos, len, &mut payload)? {
            Some(found) => found,
            None => {
                let prefix = readable_prefix(&mut src, pos, len, header.event_size, &mut payload)?;
                let last_ns = prefix.last_ns.unwrap_or(header.anchor.monotonic_ns);
                let trailer = Trailer {
                    events: prefix.events,
                    snapshots: prefix.snapshots,
                    elapsed_s: last_ns.saturating_sub(header.anchor.monotonic_ns) as f64 / 1e9,
                    truncated: true,
                    ..Trailer::default()
                };
                (prefix.end, trailer)
            }
        };
        src.seek(SeekFrom::Start(pos))?;
        Ok(Reader {
            src,
            header,
            trailer,
            pos,
            end,
            events: 0,
            snapshots: 0,
            payload,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn trailer(&self) -> &Trailer {
        &self.trailer
    }

    /// For a recording without its trailer: what is read, and what is missing.
    pub fn truncation_warning(&self, path: &std::path::Path) -> Option<String> {
        let t = &self.trailer;
        t.truncated.then(|| {
            format!(
                "`{}` is truncated (its `record` was killed, or is still running): reading its \
                 {} events and {} snapshots up to where it ends ({:.1} s); its trailer is \
                 missing, so events lost to a full ring buffer are NOT known (figures may \
                 undercount), drop reasons and sites are shown as numbers, and `--stats` \
                 costs are absent",
                path.display(),
                t.events,
                t.snapshots,
                t.elapsed_s
            )
        })
    }

    /// The next event or snapshot; `None` after the last (when their numbers are checked
    /// against the trailer's).
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, ReadError> {
        if self.pos >= self.end {
            if (self.events, self.snapshots) != (self.trailer.events, self.trailer.snapshots) {
                return Err(corrupt(
                    self.end,
                    format!(
                        "the trailer counts {} events and {} snapshots, the file has {} and {}",
                        self.trailer.events, self.trailer.snapshots, self.events, self.snapshots
                    ),
                ));
            }
            return Ok(None);
        }
        let at = self.pos;
        let kind = match read_frame(&mut self.src, at, self.end, &mut self.payload)? {
            Some(k) => k,
            None => return Err(corrupt(at, "a frame runs past the trailer")),
        };
        self.pos += (FRAME_HEAD_BYTES + self.payload.len()) as u64;
        match kind {
            Kind::Event => {
                if self.payload.len() != self.header.event_size as usize {
                    return Err(corrupt(
                        at,
                        format!(
                            "an event frame of {} bytes (events are {})",
                            self.payload.len(),
                            self.header.event_size
                        ),
                    ));
                }
                self.events += 1;
                Ok(Some(Item::Event(&self.payload)))
            }
            Kind::Snapshot => {
                let s: RecordedSnapshot = parse_json(&self.payload, at, "snapshot")?;
                self.snapshots += 1;
                Ok(Some(Item::Snapshot(Box::new(s))))
            }
            k => Err(corrupt(at, format!("a {k:?} frame among the events"))),
        }
    }
}

/// Reads the frame at `pos` (which must end by `limit`) into `payload`; `None` if the source
/// ends, or the frame would end, past `limit`.
fn read_frame(
    src: &mut impl Read,
    pos: u64,
    limit: u64,
    payload: &mut Vec<u8>,
) -> Result<Option<Kind>, ReadError> {
    let mut head = [0u8; FRAME_HEAD_BYTES];
    if pos + FRAME_HEAD_BYTES as u64 > limit || !read_full(src, &mut head)? {
        return Ok(None);
    }
    let (kind, n) = format::parse_frame_head(&head).ok_or_else(|| corrupt(pos, "frame head"))?;
    let kind =
        Kind::from_u8(kind).ok_or_else(|| corrupt(pos, format!("unknown frame kind {kind}")))?;
    if kind != Kind::Event && n > MAX_META_BYTES {
        return Err(corrupt(pos, format!("a {kind:?} frame of {n} bytes")));
    }
    if pos + (FRAME_HEAD_BYTES as u64) + u64::from(n) > limit {
        return Ok(None);
    }
    payload.clear();
    payload.resize(n as usize, 0);
    if !read_full(src, payload)? {
        return Ok(None);
    }
    Ok(Some(kind))
}

/// The trailer (and where it starts) from the footer; `None` when there is no footer.
fn read_trailer(
    src: &mut (impl Read + Seek),
    data_start: u64,
    len: u64,
    payload: &mut Vec<u8>,
) -> Result<Option<(u64, Trailer)>, ReadError> {
    if len < data_start + FOOTER_BYTES as u64 {
        return Ok(None);
    }
    let footer_at = len - FOOTER_BYTES as u64;
    src.seek(SeekFrom::Start(footer_at))?;
    let mut footer = [0u8; FOOTER_BYTES];
    if !read_full(src, &mut footer)? {
        return Ok(None);
    }
    let Some(at) = format::parse_footer(&footer) else {
        return Ok(None);
    };
    if at < data_start || at > footer_at {
        return Err(corrupt(
            footer_at,
            format!("the footer points at byte {at}"),
        ));
    }
    src.seek(SeekFrom::Start(at))?;
    match read_frame(src, at, footer_at, payload)? {
        Some(Kind::Trailer) if at + (FRAME_HEAD_BYTES + payload.len()) as u64 == footer_at => {
            Ok(Some((at, parse_json(payload, at, "trailer")?)))
        }
        _ => Err(corrupt(at, "no trailer frame where the footer points")),
    }
}

/// The whole frames of a recording without its trailer.
struct Prefix {
    events: u64,
    snapshots: u64,
    /// Where the first frame that is cut or malformed starts.
    end: u64,
    /// The last event's timestamp.
    last_ns: Option<u64>,
}

/// The whole event and snapshot frames from `pos`, up to the first that is cut or malformed.
fn readable_prefix(
    src: &mut (impl Read + Seek),
    mut pos: u64,
    len: u64,
    event_size: u32,
    payload: &mut Vec<u8>,
) -> Result<Prefix, ReadError> {
    src.seek(SeekFrom::Start(pos))?;
    let (mut events, mut snapshots, mut last_ns) = (0, 0, None);
    loop {
        match read_frame(src, pos, len, payload) {
            Ok(Some(Kind::Event)) if payload.len() == event_size as usize => {
                events += 1;
                if let Ok(e) = crate::pipeline::decode::Event::decode(payload) {
                    last_ns = last_ns.max(Some(e.ts_ns));
                }
            }
            Ok(Some(Kind::Snapshot))
                if serde_json::from_slice::<RecordedSnapshot>(payload).is_ok() =>
            {
                snapshots += 1
            }
            Ok(_) | Err(ReadError::Corrupt { .. }) => {
                return Ok(Prefix {
                    events,
                    snapshots,
                    end: pos,
                    last_ns,
                })
            }
            Err(e) => return Err(e),
        }
        pos += (FRAME_HEAD_BYTES + payload.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::{
        kernel::sock_diag::{Family, Protocol, SockMem},
        recording::{
            format::{ClockAnchor, RecordedEnum, RecordedFilters, RecordedHook},
            writer::Writer,
        },
    };

    fn header() -> Header {
        Header {
            sockmem_version: "0.1.0".into(),
            kernel: "6.18.0-test".into(),
            ring_size: 1 << 22,
            hooks: vec![RecordedHook {
                hook: "tcp_sendmsg".into(),
                backend: "fentry".into(),
                attach: "tcp_sendmsg_locked".into(),
                unavailable: None,
            }],
            filters: RecordedFilters {
                ports: vec![5201],
                ..RecordedFilters::default()
            },
            event_size: std::mem::size_of::<sockmem_common::SockEvent>() as u32,
            anchor: ClockAnchor {
                realtime_ns: 1_700_000_000_000_000_000,
                monotonic_ns: 1_000_000_000,
            },
            snapshot_every_s: None,
        }
    }

    fn snapshot(i: u64) -> RecordedSnapshot {
        RecordedSnapshot {
            time_ns: 2_000_000_000 + i,
            sock_id: 0x301,
            netns: "this".into(),
            last: Some((100, 200)),
            agreement: "explained".into(),
            note: Some("still moving".into()),
            limit_output_bytes: Some(4 << 20),
            kernel: SockMem {
                ino: 7,
                family: Family::Ipv4,
                protocol: Protocol::Tcp,
                local: "198.18.0.1:4000".parse().unwrap(),
                remote: "198.18.0.2:5201".parse().unwrap(),
                state: 1,
                rmem_alloc: 0,
                rcvbuf: 0,
                wmem_alloc: 200,
                sndbuf: 87040,
                fwd_alloc: 0,
                wmem_queued: 100,
                optmem: 0,
                backlog: 0,
                drops: 0,
                cookie: 9,
                uid: 0,
                tcp: None,
            },
        }
    }

    fn event_bytes(i: u8) -> Vec<u8> {
        vec![i; std::mem::size_of::<sockmem_common::SockEvent>()]
    }

    /// A finished recording: `n` events, a snapshot after every tenth.
    fn recording(n: u8) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        for i in 0..n {
            w.event(&event_bytes(i)).unwrap();
            if i % 10 == 9 {
                w.snapshot(&snapshot(i as u64)).unwrap();
            }
        }
        w.finish(Trailer {
            lost_per_cpu: vec![0, 3],
            elapsed_s: 1.5,
            enums: vec![RecordedEnum {
                hook: "skb_drop".into(),
                values: vec![(2, "NOT_SPECIFIED".into())],
            }],
            locations: vec![(0xffff_ffff_8100_0000, "tcp_v4_rcv+0x12".into())],
            ..Trailer::default()
        })
        .unwrap()
    }

    /// Everything a reader gives for `bytes`: the items, or the first error.
    fn read_all(bytes: &[u8]) -> Result<(Vec<Vec<u8>>, usize), ReadError> {
        let mut r = Reader::open(Cursor::new(bytes))?;
        let (mut events, mut snapshots) = (Vec::new(), 0);
        while let Some(item) = r.next_item()? {
            match item {
                Item::Event(b) => events.push(b.to_vec()),
                Item::Snapshot(_) => snapshots += 1,
            }
        }
        Ok((events, snapshots))
    }

    #[test]
    fn what_is_written_is_read_back() {
        let bytes = recording(25);
        let mut r = Reader::open(Cursor::new(&bytes[..])).unwrap();
        assert_eq!(r.header(), &header());
        assert_eq!(r.trailer().events, 25);
        assert_eq!(r.trailer().snapshots, 2);
        assert_eq!(r.trailer().lost_per_cpu, vec![0, 3]);
        assert_eq!(r.trailer().locations[0].1, "tcp_v4_rcv+0x12");
        let mut seen = Vec::new();
        while let Some(item) = r.next_item().unwrap() {
            match item {
                Item::Event(b) => seen.push(b[0]),
                Item::Snapshot(s) => {
                    assert_eq!(*s, snapshot(seen.len() as u64 - 1));
                    let live = s.to_snapshot().unwrap();
                    assert_eq!(live.kernel.wmem_queued, 100);
                    assert_eq!(live.agreement.note(), Some("still moving"));
                }
            }
        }
        assert_eq!(seen, (0..25).collect::<Vec<u8>>());
        // An empty recording is a recording.
        assert_eq!(read_all(&recording(0)).unwrap(), (vec![], 0));
    }

    #[test]
    fn each_kind_of_damage_has_its_error() {
        let good = recording(25);
        let err = read_all(b"{\"type\":\"header\"}\n").unwrap_err();
        assert!(matches!(err, ReadError::NotARecording(_)), "{err}");
        assert!(matches!(
            read_all(b"").unwrap_err(),
            ReadError::NotARecording(_)
        ));
        let mut newer = good.clone();
        newer[8..10].copy_from_slice(&7u16.to_le_bytes());
        let err = read_all(&newer).unwrap_err();
        assert!(
            matches!(
                err,
                ReadError::NewerVersion {
                    found: 7,
                    supported: 2
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("version 7") && text.contains("version 2"),
            "{text}"
        );
        let mut older = good.clone();
        older[8..10].copy_from_slice(&1u16.to_le_bytes());
        let err = read_all(&older).unwrap_err();
        assert!(
            matches!(
                err,
                ReadError::OlderVersion {
                    found: 1,
                    supported: 2
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("older sockmem"), "{err}");
        // Cut inside the 13th event frame: 12 whole events before it.
        let header_end =
            PREAMBLE_BYTES + FRAME_HEAD_BYTES + serde_json::to_vec(&header()).unwrap().len();
        let event_frame = FRAME_HEAD_BYTES + event_bytes(0).len();
        let snapshot_frame = FRAME_HEAD_BYTES + serde_json::to_vec(&snapshot(9)).unwrap().len();
        let cut = header_end + 12 * event_frame + snapshot_frame + 7;
        let (events, snapshots) = read_all(&good[..cut]).expect("the readable prefix");
        assert_eq!((events.len(), snapshots), (12, 1));
        let r = Reader::open(Cursor::new(&good[..cut])).unwrap();
        assert!(r.trailer().truncated && r.trailer().lost_per_cpu.is_empty());
        let warning = r
            .truncation_warning(std::path::Path::new("c5.smrec"))
            .unwrap();
        assert!(
            warning.contains("12 events and 1 snapshots") && warning.contains("NOT known"),
            "{warning}"
        );
        // Cut inside the header: nothing to read.
        let err = read_all(&good[..header_end - 3]).unwrap_err();
        assert!(matches!(err, ReadError::Truncated { events: 0 }), "{err}");
        // An event frame's length changed: corrupt, where it is.
        let mut bad = good.clone();
        bad[header_end + 1] ^= 0x01;
        let err = read_all(&bad).unwrap_err();
        assert!(
            matches!(err, ReadError::Corrupt { offset, .. } if offset == header_end as u64),
            "{err}"
        );
        let mut bad = good.clone();
        bad[header_end + event_frame] = 99;
        let err = read_all(&bad).unwrap_err();
        assert!(err.to_string().contains("unknown frame kind 99"), "{err}");
    }

    /// A tiny xorshift generator: the same cases on every run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn no_input_makes_the_reader_panic() {
        let good = recording(40);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut cases = 0;
        // Every truncation.
        for n in 0..good.len() {
            let _ = read_all(&good[..n]);
            cases += 1;
        }
        for _ in 0..4000 {
            let mut b = good.clone();
            match rng.below(4) {
                // Bit flips anywhere.
                0 => {
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(b.len());
                        b[i] ^= 1 << rng.below(8);
                    }
                }
                // Random bytes over a stretch (lengths, kinds, JSON).
                1 => {
                    let at = rng.below(b.len());
                    for x in b.iter_mut().skip(at).take(1 + rng.below(16)) {
                        *x = rng.next() as u8;
                    }
                }
                // Random bytes after a valid preamble (or none).
                2 => {
                    let n = rng.below(2000);
                    b.truncate(if rng.below(2) == 0 { PREAMBLE_BYTES } else { 0 });
                    b.extend((0..n).map(|_| rng.next() as u8));
                }
                // A valid footer pointing anywhere.
                _ => {
                    let at = rng.next() % (b.len() as u64 + 100);
                    let n = b.len();
                    b[n - FOOTER_BYTES..].copy_from_slice(&format::footer(at));
                }
            }
            let _ = read_all(&b);
            cases += 1;
        }
        assert!(cases > 4000);
    }
}
