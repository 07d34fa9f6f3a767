//! The bytes of a recording (see the module documentation for the layout), and the typed
//! metadata its header, snapshot and trailer frames carry (JSON, so a reader of the same format
//! version ignores fields it does not know).

use std::net::SocketAddr;

use bytes::{Buf, BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use crate::{
    attach::stats::HookCost,
    cli::FilterArgs,
    kernel::sock_diag::{Family, Protocol, SockMem, TcpInfoSubset},
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

/// `struct tcp_info`'s part sockmem reads, as sock_diag gave it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedTcpInfo {
    pub info_len: usize,
    pub snd_mss: Option<u32>,
    pub unacked: Option<u32>,
    pub rtt: Option<u32>,
    pub rttvar: Option<u32>,
    pub snd_cwnd: Option<u32>,
    pub pacing_rate: Option<u64>,
    pub notsent_bytes: Option<u32>,
    pub delivery_rate: Option<u64>,
    pub busy_time: Option<u64>,
    pub rwnd_limited: Option<u64>,
    pub sndbuf_limited: Option<u64>,
    pub snd_wnd: Option<u32>,
    pub congestion: Option<String>,
}

/// One socket as sock_diag reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedSockMem {
    pub ino: u64,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub rmem_alloc: u32,
    pub rcvbuf: u32,
    pub wmem_alloc: u32,
    pub sndbuf: u32,
    pub fwd_alloc: u32,
    pub wmem_queued: u32,
    pub optmem: u32,
    pub backlog: u32,
    pub drops: u32,
    pub cookie: u64,
    pub uid: u32,
    pub tcp: Option<RecordedTcpInfo>,
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
    pub kernel: RecordedSockMem,
    /// `net.ipv4.tcp_limit_output_bytes` in the socket's namespace when taken (absent in
    /// recordings from before it was kept).
    #[serde(default)]
    pub limit_output_bytes: Option<u64>,
}

impl RecordedSnapshot {
    pub fn new(s: &Snapshot, time_ns: u64) -> RecordedSnapshot {
        let k = &s.kernel;
        RecordedSnapshot {
            time_ns,
            sock_id: s.sock_id,
            netns: s.netns.clone(),
            last: s.last,
            agreement: s.agreement.word().to_owned(),
            note: s.agreement.note().map(str::to_owned),
            limit_output_bytes: s.limit_output_bytes,
            kernel: RecordedSockMem {
                ino: k.ino,
                family: k.family.to_string(),
                protocol: k.protocol.to_string(),
                local: k.local,
                remote: k.remote,
                state: k.state,
                rmem_alloc: k.rmem_alloc,
                rcvbuf: k.rcvbuf,
                wmem_alloc: k.wmem_alloc,
                sndbuf: k.sndbuf,
                fwd_alloc: k.fwd_alloc,
                wmem_queued: k.wmem_queued,
                optmem: k.optmem,
                backlog: k.backlog,
                drops: k.drops,
                cookie: k.cookie,
                uid: k.uid,
                tcp: k.tcp.as_ref().map(|t| RecordedTcpInfo {
                    info_len: t.info_len,
                    snd_mss: t.snd_mss,
                    unacked: t.unacked,
                    rtt: t.rtt,
                    rttvar: t.rttvar,
                    snd_cwnd: t.snd_cwnd,
                    pacing_rate: t.pacing_rate,
                    notsent_bytes: t.notsent_bytes,
                    delivery_rate: t.delivery_rate,
                    busy_time: t.busy_time,
                    rwnd_limited: t.rwnd_limited,
                    sndbuf_limited: t.sndbuf_limited,
                    snd_wnd: t.snd_wnd,
                    congestion: t.congestion.clone(),
                }),
            },
        }
    }

    /// Back to the live form; `Err` names the field that is not one this sockmem knows.
    pub fn to_snapshot(&self) -> Result<Snapshot, String> {
        let k = &self.kernel;
        let family = match k.family.as_str() {
            "ipv4" => Family::Ipv4,
            "ipv6" => Family::Ipv6,
            other => return Err(format!("unknown address family `{other}`")),
        };
        let protocol = match k.protocol.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(format!("unknown protocol `{other}`")),
        };
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
            kernel: SockMem {
                ino: k.ino,
                family,
                protocol,
                local: k.local,
                remote: k.remote,
                state: k.state,
                rmem_alloc: k.rmem_alloc,
                rcvbuf: k.rcvbuf,
                wmem_alloc: k.wmem_alloc,
                sndbuf: k.sndbuf,
                fwd_alloc: k.fwd_alloc,
                wmem_queued: k.wmem_queued,
                optmem: k.optmem,
                backlog: k.backlog,
                drops: k.drops,
                cookie: k.cookie,
                uid: k.uid,
                tcp: k.tcp.as_ref().map(|t| TcpInfoSubset {
                    // Not recorded (the recording's format predates them).
                    max_pacing_rate: None,
                    bytes_acked: None,
                    info_len: t.info_len,
                    snd_mss: t.snd_mss,
                    unacked: t.unacked,
                    rtt: t.rtt,
                    rttvar: t.rttvar,
                    snd_cwnd: t.snd_cwnd,
                    pacing_rate: t.pacing_rate,
                    notsent_bytes: t.notsent_bytes,
                    delivery_rate: t.delivery_rate,
                    busy_time: t.busy_time,
                    rwnd_limited: t.rwnd_limited,
                    sndbuf_limited: t.sndbuf_limited,
                    snd_wnd: t.snd_wnd,
                    congestion: t.congestion.clone(),
                }),
            },
        })
    }
}
