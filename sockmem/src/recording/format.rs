//! The bytes of a recording (see the module documentation for the layout), and the typed
//! metadata its header, snapshot and trailer frames carry (JSON, so a reader of the same format
//! version ignores fields it does not know).

use bytes::{Buf, BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use crate::{
    attach::stats::HookCost,
    cli::FilterArgs,
    kernel::sock_diag::SockMem,
    pipeline::snapshot::{Agreement, Snapshot},
    render::HookLine,
};

/// The first 8 bytes of every recording.
pub const MAGIC: [u8; 8] = *b"SOCKMEMR";
/// The last 8 bytes of a finished recording (after the trailer's offset).
pub const END_MAGIC: [u8; 8] = *b"SOCKMEND";
/// The format this sockmem writes, and the newest it reads. Bumped for any change an older
/// reader must not read past (a new frame kind, another event layout).
/// Version 2: events carry the sender's cgroup id and the socket's namespace inode (192 bytes).
pub const FORMAT_VERSION: u16 = 2;
/// Magic and format version.
pub const PREAMBLE_BYTES: usize = 10;
/// Kind (1 byte) and payload length (u32, little endian).
pub const FRAME_HEAD_BYTES: usize = 5;
/// The trailer's offset (u64, little endian) and [`END_MAGIC`].
pub const FOOTER_BYTES: usize = 16;
/// A header, snapshot or trailer frame larger than this is corrupt (a trailer naming every
/// enumerator and drop site is a few tens of KiB).
pub const MAX_META_BYTES: u32 = 16 << 20;

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// [`Header`] (JSON); the first frame.
    Header = 1,
    /// One raw `SockEvent`, as the ring buffer held it.
    Event = 2,
    /// [`RecordedSnapshot`] (JSON).
    Snapshot = 3,
    /// [`Trailer`] (JSON); the last frame, followed by the footer.
    Trailer = 4,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Header,
            2 => Kind::Event,
            3 => Kind::Snapshot,
            4 => Kind::Trailer,
            _ => return None,
        })
    }
}

pub fn preamble() -> [u8; PREAMBLE_BYTES] {
    let mut p = [0u8; PREAMBLE_BYTES];
    let mut b = &mut p[..];
    b.put_slice(&MAGIC);
    b.put_u16_le(FORMAT_VERSION);
    p
}

/// The magic and format version at the start of `p`; `None` unless it starts with [`MAGIC`].
pub fn parse_preamble(mut p: &[u8]) -> Option<u16> {
    if p.len() < PREAMBLE_BYTES || p[..MAGIC.len()] != MAGIC {
        return None;
    }
    p.advance(MAGIC.len());
    p.try_get_u16_le().ok()
}

/// Appends one frame to `buf`.
pub fn put_frame(buf: &mut BytesMut, kind: Kind, payload: &[u8]) {
    buf.reserve(FRAME_HEAD_BYTES + payload.len());
    buf.put_u8(kind as u8);
    buf.put_u32_le(payload.len() as u32);
    buf.put_slice(payload);
}

/// A frame's kind byte and payload length.
pub fn parse_frame_head(mut h: &[u8]) -> Option<(u8, u32)> {
    Some((h.try_get_u8().ok()?, h.try_get_u32_le().ok()?))
}

pub fn footer(trailer_offset: u64) -> [u8; FOOTER_BYTES] {
    let mut f = [0u8; FOOTER_BYTES];
    let mut b = &mut f[..];
    b.put_u64_le(trailer_offset);
    b.put_slice(&END_MAGIC);
    f
}

/// The trailer's offset, if `f` is a footer.
pub fn parse_footer(mut f: &[u8]) -> Option<u64> {
    if f.len() != FOOTER_BYTES || f[8..] != END_MAGIC {
        return None;
    }
    f.try_get_u64_le().ok()
}

/// CLOCK_REALTIME and CLOCK_MONOTONIC read together: an event's `ts_ns` (monotonic) is at wall
/// time `realtime_ns + (ts_ns - monotonic_ns)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockAnchor {
    pub realtime_ns: u64,
    pub monotonic_ns: u64,
}

impl ClockAnchor {
    /// Monotonic, wall, monotonic: the wall clock read between two monotonic readings, anchored
    /// at their middle (off by at most half their distance, well under a microsecond).
    pub fn now() -> ClockAnchor {
        let read = |clock| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid timespec to fill.
            unsafe { libc::clock_gettime(clock, &mut ts) };
            ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
        };
        let before = read(libc::CLOCK_MONOTONIC);
        let realtime_ns = read(libc::CLOCK_REALTIME);
        let after = read(libc::CLOCK_MONOTONIC);
        ClockAnchor {
            realtime_ns,
            monotonic_ns: before + (after - before) / 2,
        }
    }
}

/// One hook as attached at the start of the recorded run (`session::hook_lines`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedHook {
    pub hook: String,
    /// Empty when not attached.
    pub backend: String,
    pub attach: String,
    /// Why not attached; `None` when attached.
    pub unavailable: Option<String>,
}

impl From<&HookLine> for RecordedHook {
    fn from(h: &HookLine) -> RecordedHook {
        RecordedHook {
            hook: h.hook.to_owned(),
            backend: h.backend.clone(),
            attach: h.attach.clone(),
            unavailable: h.unavailable.clone(),
        }
    }
}

impl RecordedHook {
    pub fn to_line(&self) -> HookLine {
        // The registry's own name where there is one; a hook this sockmem does not know (a
        // newer writer's) keeps its name, leaked once per run.
        let hook = sockmem_common::registry::hooks()
            .map(|s| s.hook.name())
            .find(|n| *n == self.hook)
            .unwrap_or_else(|| Box::leak(self.hook.clone().into_boxed_str()));
        HookLine {
            hook,
            backend: self.backend.clone(),
            attach: self.attach.clone(),
            unavailable: self.unavailable.clone(),
        }
    }
}

/// The filters the recording was made with (applied in the kernel then).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedFilters {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub ports: Vec<u16>,
    /// `addr/prefix`.
    pub addrs: Vec<String>,
    pub iface: Option<String>,
    pub tcp: bool,
    pub udp: bool,
    /// `--cgroup` and `--netns` as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

impl From<&FilterArgs> for RecordedFilters {
    fn from(f: &FilterArgs) -> RecordedFilters {
        RecordedFilters {
            pid: f.pid,
            comm: f.comm.clone(),
            ports: f.port.clone(),
            addrs: f
                .addr
                .iter()
                .map(|n| format!("{}/{}", n.addr, n.prefix))
                .collect(),
            iface: f.iface.clone(),
            tcp: f.tcp,
            udp: f.udp,
            cgroup: f.cgroup.clone(),
            netns: f.netns.clone(),
        }
    }
}

/// The first frame: what the run was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The sockmem that wrote the recording.
    pub sockmem_version: String,
    /// The kernel release it ran on.
    pub kernel: String,
    pub ring_size: u32,
    pub hooks: Vec<RecordedHook>,
    pub filters: RecordedFilters,
    /// Bytes of each event frame's payload (`size_of::<SockEvent>()`).
    pub event_size: u32,
    /// Taken as the programs started: `trace`'s time 0.
    pub anchor: ClockAnchor,
    /// `--snapshot SECS`, if given (a snapshot is always taken at exit).
    pub snapshot_every_s: Option<f64>,
}

/// An enum hook value's names, as the live `Names` table has them (prefix removed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEnum {
    pub hook: String,
    pub values: Vec<(u64, String)>,
}

/// The last frame: totals, and what decoding needs that only the recording machine knew.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trailer {
    /// Event frames in the file.
    pub events: u64,
    /// Snapshot frames in the file.
    pub snapshots: u64,
    /// Events the programs could not put in the ring buffer (full), per CPU.
    pub lost_per_cpu: Vec<u64>,
    /// How long the recording ran.
    pub elapsed_s: f64,
    /// The kernel enumerators hook values are (BTF of the recording machine).
    pub enums: Vec<RecordedEnum>,
    /// `symbol+offset` of every code address in an `skb_drop` event (its `aux`).
    pub locations: Vec<(u64, String)>,
    /// `--stats`: the programs' cost per hook.
    pub bpf_stats: Option<Vec<HookCost>>,
    /// The cgroup paths and namespace names of the ids the events carry, as the recording
    /// machine named them.
    #[serde(default)]
    pub attribution: Option<RecordedAttribution>,
    /// Not in the file: the file had no trailer (its `record` was killed), this one stands in
    /// for it with what the readable frames tell (see `Reader::open`).
    #[serde(skip)]
    pub truncated: bool,
}

/// cgroup id → path and namespace inode → `ip netns` name, for the ids a recording's events
/// carry (an id missing here is shown as `id:N` / `ino:N`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedAttribution {
    pub cgroups: Vec<(u64, String)>,
    pub netns: Vec<(u64, String)>,
}

/// A snapshot frame: the kernel's view of one traced socket, and how it compared with the
/// socket's last event when taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedSnapshot {
    /// CLOCK_MONOTONIC when taken.
    pub time_ns: u64,
    pub sock_id: u64,
    pub netns: String,
    pub last: Option<(i32, i32)>,
    /// `agrees`, `explained` or `differs`.
    pub agreement: String,
    pub note: Option<String>,
    pub kernel: SockMem,
    /// `net.ipv4.tcp_limit_output_bytes` in the socket's namespace when taken (absent in
    /// recordings from before it was kept).
    #[serde(default)]
    pub limit_output_bytes: Option<u64>,
}

impl RecordedSnapshot {
    pub fn new(s: &Snapshot, time_ns: u64) -> RecordedSnapshot {
        RecordedSnapshot {
            time_ns,
            sock_id: s.sock_id,
            netns: s.netns.clone(),
            last: s.last,
            agreement: s.agreement.word().to_owned(),
            note: s.agreement.note().map(str::to_owned),
            limit_output_bytes: s.limit_output_bytes,
            kernel: s.kernel.clone(),
        }
    }

    /// Back to the live form; `Err` names the agreement if it is not one this sockmem knows.
    pub fn to_snapshot(&self) -> Result<Snapshot, String> {
        let note = || self.note.clone().unwrap_or_default();
        let agreement = match self.agreement.as_str() {
            "agrees" => Agreement::Same,
            "explained" => Agreement::Explained(note()),
            "differs" => Agreement::Differs(note()),
            other => return Err(format!("unknown agreement `{other}`")),
        };
        Ok(Snapshot {
            sock_id: self.sock_id,
            netns: self.netns.clone(),
            last: self.last,
            agreement,
            limit_output_bytes: self.limit_output_bytes,
            kernel: self.kernel.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshot frames as the sockmem before `SockMem` itself became the recorded form wrote
    /// them (a TCP sender under tbf, a UDP sender): the format is the field names and order, so
    /// a change to `SockMem` or `TcpInfoSubset` that changes these bytes changes format 2.
    const WRITTEN_BEFORE: [&str; 2] = [
        r#"{"time_ns":2537116091036,"sock_id":36352,"netns":"smdemo-31929-tx","last":[665096,209760],"agreement":"explained","note":"still moving: its last event was 0 ms before (w 591032 vs 665096 at the last event, t 200640 vs 209760)","kernel":{"ino":421139,"family":"ipv4","protocol":"tcp","local":"198.18.254.1:46060","remote":"198.18.254.2:5299","state":1,"rmem_alloc":0,"rcvbuf":131072,"wmem_alloc":200640,"sndbuf":658944,"fwd_alloc":2888,"wmem_queued":591032,"optmem":0,"backlog":0,"drops":0,"cookie":4432,"uid":0,"tcp":{"info_len":280,"snd_mss":1448,"unacked":88,"rtt":52409,"rttvar":5695,"snd_cwnd":143,"pacing_rate":4741030,"notsent_bytes":456120,"delivery_rate":1567559,"busy_time":232000,"rwnd_limited":0,"sndbuf_limited":0,"snd_wnd":1181696,"congestion":"cubic"}},"limit_output_bytes":4194304}"#,
        r#"{"time_ns":2544501978840,"sock_id":257,"netns":"smdemo-32186-tx","last":[0,34560],"agreement":"explained","note":"still moving: its last event was 0 ms before (w 0 vs 0 at the last event, t 65280 vs 34560)","kernel":{"ino":414380,"family":"ipv4","protocol":"udp","local":"198.18.254.1:40336","remote":"198.18.254.2:5299","state":1,"rmem_alloc":0,"rcvbuf":212992,"wmem_alloc":65280,"sndbuf":65536,"fwd_alloc":0,"wmem_queued":0,"optmem":0,"backlog":0,"drops":0,"cookie":4435,"uid":0,"tcp":null},"limit_output_bytes":null}"#,
    ];

    #[test]
    fn snapshot_frames_read_and_write_as_format_2_has_them() {
        for json in WRITTEN_BEFORE {
            let s: RecordedSnapshot = serde_json::from_str(json).unwrap();
            let live = s.to_snapshot().unwrap();
            assert_eq!(
                serde_json::to_string(&RecordedSnapshot::new(&live, s.time_ns)).unwrap(),
                json
            );
        }
        let tcp: RecordedSnapshot = serde_json::from_str(WRITTEN_BEFORE[0]).unwrap();
        let t = tcp.kernel.tcp.unwrap();
        assert_eq!((t.pacing_rate, t.max_pacing_rate), (Some(4741030), None));
        assert_eq!(tcp.kernel.family, crate::kernel::sock_diag::Family::Ipv4);
    }
}
