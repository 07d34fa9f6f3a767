//! The causes a socket's send bytes wait for, and how one sampled interval of a TCP socket is
//! put under one of them.

use super::tsq::TsqLimit;

/// Why the socket is not sending faster, for a stretch of time. Every stretch of a socket's
/// window is under exactly one, so a socket's shares add up to its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// Nothing queued to send: the sender is not writing (TCP: the kernel's chrono timers are
    /// not busy; UDP: not asleep in a send call).
    Application,
    /// `sendmsg` waits for send-buffer memory, and no limit further down holds the bytes.
    SendBuffer,
    /// The peer's advertised window is closed or full.
    ReceiverWindow,
    /// Packets in flight fill the congestion window.
    CongestionWindow,
    /// `sk_wmem_alloc` at TCP Small Queues' limit with most of those bytes in the qdisc.
    Qdisc,
    /// `sk_wmem_alloc` at the TSQ limit (UDP: the send buffer) with most bytes past the qdisc,
    /// in the device's hands.
    Device,
    /// `sk_wmem_alloc` at the TSQ limit, where sockmem cannot see where the bytes are (no qdisc
    /// hooks).
    Tsq,
    /// Held back by its pacing rate: capped by `SO_MAX_PACING_RATE` (tcp_info's pacing rate
    /// at its max), with bytes not sent yet waiting in the write queue.
    Paced,
    /// Busy with none of the limits above binding when sampled: data flows as fast as the path
    /// lets it (or a pacing sockmem cannot tell: BBR's own, or fq's below the cap).
    Sending,
}

impl Cause {
    pub const ALL: [Cause; 9] = [
        Cause::Application,
        Cause::SendBuffer,
        Cause::ReceiverWindow,
        Cause::CongestionWindow,
        Cause::Qdisc,
        Cause::Device,
        Cause::Tsq,
        Cause::Paced,
        Cause::Sending,
    ];

    /// The causes a UDP socket's window is split into (no write queue, no windows, no TSQ).
    pub const UDP: [Cause; 4] = [
        Cause::Application,
        Cause::SendBuffer,
        Cause::Qdisc,
        Cause::Device,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cause::Application => "application",
            Cause::SendBuffer => "send_buffer",
            Cause::ReceiverWindow => "receiver_window",
            Cause::CongestionWindow => "congestion_window",
            Cause::Qdisc => "qdisc",
            Cause::Device => "device",
            Cause::Tsq => "tsq",
            Cause::Paced => "paced",
            Cause::Sending => "sending",
        }
    }

    pub fn index(self) -> usize {
        Cause::ALL.iter().position(|&c| c == self).unwrap_or(0)
    }
}

/// What one sock_diag sample says about a TCP socket (with sockmem's own count of its bytes in
/// the qdisc).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpState {
    pub wmem_alloc: u64,
    /// Segments sent and not acknowledged (`tcpi_unacked`).
    pub unacked: u32,
    pub cwnd: u32,
    pub mss: u32,
    /// The peer's window (`tcpi_snd_wnd`); `None` where tcp_info lacks it (before 5.4).
    pub snd_wnd: Option<u32>,
    /// The kernel's rwnd-limited timer moved during the interval.
    pub rwnd_limited_moved: bool,
    /// The kernel's sndbuf-limited timer moved during the interval.
    pub sndbuf_limited_moved: bool,
    /// This socket's bytes sockmem counts in a qdisc (truesize of its queued skbs).
    pub in_qdisc: u64,
    /// Whether sockmem follows skbs through qdiscs (its qdisc hooks attached).
    pub qdisc_seen: bool,
    /// The pacing rate is at `SO_MAX_PACING_RATE`'s cap with unsent bytes in the write queue.
    pub pacing_capped_with_data: bool,
}

/// The cause of a busy interval of a TCP socket, judged from the state at its end. From the
/// bottom of the path up: what stops the next byte from leaving is the cause, so a sender
/// blocked on a full buffer *because* the peer's window is closed waits for the receiver.
pub fn classify_busy(s: &TcpState, tsq: Option<&TsqLimit>) -> Cause {
    let in_flight = u64::from(s.unacked) * u64::from(s.mss.max(1));
    let window_full = match s.snd_wnd {
        Some(w) => w == 0 || in_flight + u64::from(s.mss) > u64::from(w),
        None => false,
    };
    if window_full || s.rwnd_limited_moved {
        return Cause::ReceiverWindow;
    }
    // Most of what TCP counts in flight sits in a qdisc on this machine: whatever limit binds
    // (cwnd, TSQ), the bytes wait there.
    if s.qdisc_seen && s.in_qdisc > 0 && s.in_qdisc * 2 >= in_flight.max(s.wmem_alloc) {
        return Cause::Qdisc;
    }
    if tsq.is_some_and(|t| t.binds(s.wmem_alloc)) {
        if !s.qdisc_seen {
            return Cause::Tsq;
        }
        return if s.in_qdisc * 2 >= s.wmem_alloc {
            Cause::Qdisc
        } else {
            Cause::Device
        };
    }
    if s.cwnd > 0 && s.unacked >= s.cwnd {
        return Cause::CongestionWindow;
    }
    // Pacing releases the next segment later: the bytes wait in the write queue, and a sender
    // asleep on the full buffer waits for the pacing.
    if s.pacing_capped_with_data {
        return Cause::Paced;
    }
    if s.sndbuf_limited_moved {
        return Cause::SendBuffer;
    }
    Cause::Sending
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> TcpState {
        TcpState {
            mss: 1448,
            cwnd: 10,
            snd_wnd: Some(1 << 20),
            qdisc_seen: true,
            ..TcpState::default()
        }
    }

    #[test]
    fn a_closed_window_comes_before_a_full_buffer() {
        let s = TcpState {
            snd_wnd: Some(0),
            sndbuf_limited_moved: true,
            ..state()
        };
        assert_eq!(classify_busy(&s, None), Cause::ReceiverWindow);
    }

    #[test]
    fn tsq_bytes_in_the_qdisc_or_the_device() {
        let tsq = TsqLimit::new(1 << 20, 2_500_000, 65_000, true);
        let mut s = TcpState {
            wmem_alloc: 130_000,
            in_qdisc: 100_000,
            unacked: 3,
            ..state()
        };
        assert_eq!(classify_busy(&s, Some(&tsq)), Cause::Qdisc);
        s.in_qdisc = 10_000;
        assert_eq!(classify_busy(&s, Some(&tsq)), Cause::Device);
        s.in_qdisc = 0;
        assert_eq!(classify_busy(&s, Some(&tsq)), Cause::Device);
        s.qdisc_seen = false;
        assert_eq!(classify_busy(&s, Some(&tsq)), Cause::Tsq);
    }

    #[test]
    fn a_full_cwnd_whose_packets_sit_in_the_qdisc_waits_for_the_qdisc() {
        let s = TcpState {
            unacked: 10,
            in_qdisc: 10_000,
            ..state()
        };
        assert_eq!(classify_busy(&s, None), Cause::Qdisc);
    }

    #[test]
    fn cwnd_then_send_buffer_then_sending() {
        let mut s = TcpState {
            unacked: 10,
            sndbuf_limited_moved: true,
            ..state()
        };
        assert_eq!(classify_busy(&s, None), Cause::CongestionWindow);
        s.unacked = 4;
        s.pacing_capped_with_data = true;
        assert_eq!(classify_busy(&s, None), Cause::Paced);
        s.pacing_capped_with_data = false;
        assert_eq!(classify_busy(&s, None), Cause::SendBuffer);
        s.sndbuf_limited_moved = false;
        assert_eq!(classify_busy(&s, None), Cause::Sending);
    }
}
