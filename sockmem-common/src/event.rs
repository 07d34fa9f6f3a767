//! The per-event record written into the ring buffer.

/// Where in the stack an event was observed. Stored as `u8` in [`SockEvent::hook`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `tcp_sendmsg` is about to copy user data into the write queue (`sk_wmem_queued` grows);
    /// `value` = bytes still to copy. The tracepoint backend fires once per chunk, the others once
    /// per call.
    TcpSendmsg = 1,
    /// `sendmsg` returned (TCP and UDP); `value` is its return value.
    SendmsgReturn = 2,
    /// `dev_queue_xmit`: the transport handed an skb to the device layer.
    DevQueueXmit = 3,
    /// The skb was enqueued on a qdisc.
    QdiscEnqueue = 4,
    /// The skb left the qdisc.
    QdiscDequeue = 5,
    /// Hand-off to the driver (`ndo_start_xmit`).
    DriverXmit = 6,
    /// The driver's `ndo_start_xmit` returned; `value` is its return code.
    DriverDone = 7,
    /// A tracked skb was freed; `value` is 1 if it still charged the socket when freed.
    SkbFree = 8,
    /// An ACK (any segment on an established socket) arrived; counters as it arrives.
    TcpAck = 9,
    /// TCP retransmitted an skb.
    TcpRetransmit = 10,
    /// The socket is being destroyed.
    SockDestroy = 11,
    /// A tracked skb was dropped (`kfree_skb`); `value` is the kernel's drop reason.
    SkbDrop = 12,
    /// `sk_wmem_alloc` grows: TCP hands a clone to IP (`__tcp_transmit_skb`) or an skb is charged
    /// to its socket (`skb_set_owner_w`, e.g. UDP). `value` = +truesize; counters after it.
    WmemCharge = 13,
    /// `sk_wmem_alloc` shrinks: the skb destructor (`tcp_wfree`, `sock_wfree`) gives bytes back.
    /// `value` = -truesize; counters after it.
    WmemRelease = 14,
    /// An ACK was processed and freed write-queue skbs: `value` = change of `sk_wmem_queued`.
    TcpAckFreed = 15,
    /// `sendmsg` slept waiting for send-buffer space (`sk_stream_wait_memory`): `duration_ns`.
    SendBlocked = 16,
}

impl Hook {
    pub const ALL: [Hook; 16] = [
        Hook::TcpSendmsg,
        Hook::SendmsgReturn,
        Hook::DevQueueXmit,
        Hook::QdiscEnqueue,
        Hook::QdiscDequeue,
        Hook::DriverXmit,
        Hook::DriverDone,
        Hook::SkbFree,
        Hook::TcpAck,
        Hook::TcpRetransmit,
        Hook::SockDestroy,
        Hook::SkbDrop,
        Hook::WmemCharge,
        Hook::WmemRelease,
        Hook::TcpAckFreed,
        Hook::SendBlocked,
    ];

    pub fn from_u8(v: u8) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| *h as u8 == v)
    }

    /// The short name shown to users.
    pub fn name(self) -> &'static str {
        match self {
            Hook::TcpSendmsg => "tcp_sendmsg",
            Hook::SendmsgReturn => "sendmsg_ret",
            Hook::DevQueueXmit => "dev_queue_xmit",
            Hook::QdiscEnqueue => "qdisc_enqueue",
            Hook::QdiscDequeue => "qdisc_dequeue",
            Hook::DriverXmit => "driver_xmit",
            Hook::DriverDone => "driver_done",
            Hook::SkbFree => "skb_free",
            Hook::TcpAck => "tcp_ack",
            Hook::TcpRetransmit => "tcp_retransmit",
            Hook::SockDestroy => "sock_destroy",
            Hook::SkbDrop => "skb_drop",
            Hook::WmemCharge => "wmem_charge",
            Hook::WmemRelease => "wmem_release",
            Hook::TcpAckFreed => "tcp_ack_freed",
            Hook::SendBlocked => "send_blocked",
        }
    }
}

/// `flags` bit: pid/tgid/comm are those of the last process that called `sendmsg` on the socket
/// (not whatever task happened to be running, e.g. in softirq).
pub const FLAG_OWNER_FROM_SEND: u8 = 1;
/// `flags` bit: the skb fields (`skb_len`, `skb_truesize`, interface) are valid.
pub const FLAG_HAS_SKB: u8 = 2;
/// `flags` bit: first `tcp_sendmsg` chunk of one `sendmsg` call.
pub const FLAG_SEND_START: u8 = 4;
/// `flags` bit: the event ran in softirq on a socket whose sender is not known yet (no
/// `sendmsg` seen): pid/tgid are 0 and comm is empty rather than the interrupted task's.
pub const FLAG_OWNER_UNKNOWN: u8 = 8;
/// `flags` bit: a `wmem_release` of the 1 that TCP Small Queues keeps on `sk_wmem_alloc` after
/// `tcp_wfree` and drops later (`value` 0: no skb bytes).
pub const FLAG_TSQ_REFERENCE: u8 = 16;

/// One observation of a socket's send-side memory at a hook.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockEvent {
    /// `bpf_ktime_get_ns()`, CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// Socket identity: the kernel address of `struct sock`.
    pub sk: u64,
    /// Kernel address of the skb (0 for socket-level events).
    pub skb: u64,
    /// Hook-specific value (see [`Hook`]).
    pub value: i64,
    /// Hook-specific duration in ns: for `SendmsgReturn`, time since the call's first chunk; for
    /// `DriverDone`, time in the driver; for `SkbFree`/`SkbDrop`, time since `dev_queue_xmit`.
    pub duration_ns: u64,
    pub tgid: u32,
    pub pid: u32,
    pub cpu: u32,
    pub ifindex: u32,
    /// `sk->sk_wmem_queued`.
    pub wmem_queued: i32,
    /// `sk_wmem_alloc_get(sk)`: the refcount minus its initial 1, as `ss` shows it.
    pub wmem_alloc: i32,
    /// `sk->sk_sndbuf`.
    pub sndbuf: i32,
    pub skb_len: u32,
    pub skb_truesize: u32,
    /// Local port, host byte order.
    pub lport: u16,
    /// Remote port, host byte order.
    pub rport: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u8,
    /// A [`Hook`] as `u8`.
    pub hook: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    pub _pad: [u8; 3],
    pub comm: [u8; 16],
    pub ifname: [u8; 16],
    /// IPv4 in the first 4 bytes, or IPv6; network byte order.
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<SockEvent>() == 152);
const _: () = assert!(core::mem::align_of::<SockEvent>() == 8);

#[cfg(feature = "user")]
unsafe impl aya::Pod for SockEvent {}
