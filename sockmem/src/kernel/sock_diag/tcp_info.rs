//! The part of `struct tcp_info` sockmem uses, read field by field against the length the
//! kernel sent (the struct only ever grows).

use serde::{Deserialize, Serialize};

/// The part of `struct tcp_info` (`INET_DIAG_INFO`) later work needs. The struct is append-only;
/// a field the running kernel's struct does not reach yet is `None` (each is checked against
/// the attribute's length). Times are in microseconds, rates in bytes per second. Recorded in
/// snapshot frames as JSON (see [`super::SockMem`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpInfoSubset {
    /// Length of the kernel's `struct tcp_info` as sent (232 bytes on 5.4, 280 on 6.18).
    pub info_len: usize,
    /// `tcpi_snd_mss`, bytes.
    pub snd_mss: Option<u32>,
    /// `tcpi_unacked`: segments in flight (on a listener: the accept queue length).
    pub unacked: Option<u32>,
    /// `tcpi_rtt`, µs (`ss`: `rtt:` in ms).
    pub rtt: Option<u32>,
    /// `tcpi_rttvar`, µs.
    pub rttvar: Option<u32>,
    /// `tcpi_snd_cwnd`, segments.
    pub snd_cwnd: Option<u32>,
    /// `tcpi_pacing_rate`; `u64::MAX` means no pacing limit (`ss` then prints none).
    pub pacing_rate: Option<u64>,
    /// `tcpi_max_pacing_rate`: `SO_MAX_PACING_RATE`'s cap; `u64::MAX` when none. Not recorded
    /// (format 2 predates it): `None` when read back.
    #[serde(skip)]
    pub max_pacing_rate: Option<u64>,
    /// `tcpi_bytes_acked`: bytes the peer acknowledged since the connection began (4.1+). Not
    /// recorded, as `max_pacing_rate`.
    #[serde(skip)]
    pub bytes_acked: Option<u64>,
    /// `tcpi_notsent_bytes`: bytes in the write queue not sent yet (4.6+).
    pub notsent_bytes: Option<u32>,
    /// `tcpi_delivery_rate` (4.9+).
    pub delivery_rate: Option<u64>,
    /// `tcpi_busy_time`, µs busy sending data (4.10+; `ss`: `busy:` in ms).
    pub busy_time: Option<u64>,
    /// `tcpi_rwnd_limited`, µs limited by the receive window (4.10+).
    pub rwnd_limited: Option<u64>,
    /// `tcpi_sndbuf_limited`, µs limited by the send buffer (4.10+).
    pub sndbuf_limited: Option<u64>,
    /// `tcpi_snd_wnd`: the peer's advertised receive window after scaling, bytes (5.4+).
    pub snd_wnd: Option<u32>,
    /// The congestion control's name (`INET_DIAG_CONG`, `ss -i`'s `cubic`/`bbr`), where sent.
    pub congestion: Option<String>,
}

/// Byte offsets in `struct tcp_info` (include/uapi/linux/tcp.h), checked with `offsetof`.
pub(super) mod tcpi {
    pub const SND_MSS: usize = 16;
    pub const UNACKED: usize = 24;
    pub const RTT: usize = 68;
    pub const RTTVAR: usize = 72;
    pub const SND_CWND: usize = 80;
    pub const PACING_RATE: usize = 104;
    pub const MAX_PACING_RATE: usize = 112;
    pub const BYTES_ACKED: usize = 120;
    pub const NOTSENT_BYTES: usize = 144;
    pub const DELIVERY_RATE: usize = 160;
    pub const BUSY_TIME: usize = 168;
    pub const RWND_LIMITED: usize = 176;
    pub const SNDBUF_LIMITED: usize = 184;
    pub const SND_WND: usize = 228;
}

impl TcpInfoSubset {
    /// Decodes the `INET_DIAG_INFO` payload (native endian `struct tcp_info`, any length).
    pub fn parse(info: &[u8]) -> TcpInfoSubset {
        let u32_at = |off: usize| {
            info.get(off..off + 4)
                .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
        };
        let u64_at = |off: usize| {
            info.get(off..off + 8)
                .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
        };
        TcpInfoSubset {
            info_len: info.len(),
            snd_mss: u32_at(tcpi::SND_MSS),
            unacked: u32_at(tcpi::UNACKED),
            rtt: u32_at(tcpi::RTT),
            rttvar: u32_at(tcpi::RTTVAR),
            snd_cwnd: u32_at(tcpi::SND_CWND),
            pacing_rate: u64_at(tcpi::PACING_RATE),
            max_pacing_rate: u64_at(tcpi::MAX_PACING_RATE),
            bytes_acked: u64_at(tcpi::BYTES_ACKED),
            notsent_bytes: u32_at(tcpi::NOTSENT_BYTES),
            delivery_rate: u64_at(tcpi::DELIVERY_RATE),
            busy_time: u64_at(tcpi::BUSY_TIME),
            rwnd_limited: u64_at(tcpi::RWND_LIMITED),
            sndbuf_limited: u64_at(tcpi::SNDBUF_LIMITED),
            snd_wnd: u32_at(tcpi::SND_WND),
            congestion: None,
        }
    }
}
