//! The per-event record written into the ring buffer.

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
/// `flags` bit: the socket was being freed when read (`sk_wmem_alloc` at 0): the counters are
/// not reported.
pub const FLAG_SOCK_FREED: u8 = 32;
/// `flags` bit: a `wmem_release` of the 1 that TCP Small Queues keeps on `sk_wmem_alloc` after
/// `tcp_wfree` and drops later (`value` 0: no skb bytes).
pub const FLAG_TSQ_REFERENCE: u8 = 16;

/// `driver_xmit` in `why` mode carries the TX queue it hands the skb to, packed into `value`
/// and `aux` (which that hook leaves free), as read just before `ndo_start_xmit`:
/// - `value` bits: [`TXQ_READ`] (the queue was read), [`TXQ_DRV_XOFF`] / [`TXQ_STACK_XOFF`]
///   (stopped by the driver / by BQL), [`TXQ_BQL_READ`] (the kernel has BQL and its counters
///   were read), [`TXQ_BQL_USED`] (the driver has queued bytes through BQL: `num_queued` != 0);
/// - `aux`: BQL's `limit` in the high 32 bits, inflight (`num_queued - num_completed`) in the
///   low 32, both valid only with [`TXQ_BQL_READ`].
pub const TXQ_READ: i64 = 1;
pub const TXQ_DRV_XOFF: i64 = 2;
pub const TXQ_STACK_XOFF: i64 = 4;
pub const TXQ_BQL_READ: i64 = 8;
pub const TXQ_BQL_USED: i64 = 16;

/// One observation of a socket's send-side memory at a hook.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockEvent {
    /// `bpf_ktime_get_ns()`, CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// Kernel address of `struct sock` (shown only on request: it reveals the kernel's layout,
    /// and addresses are reused).
    pub sk: u64,
    /// The socket's identity: stamped when sockmem first sees the socket, unique for as long as
    /// sockmem runs, also across address reuse (see `SockIdent`).
    pub sock_id: u64,
    /// The socket's inode number (`ss -e` `ino:`, sock_diag `idiag_inode`); 0 when the socket
    /// has no file (not yet accepted, or closed).
    pub ino: u64,
    /// Kernel address of the skb (0 for socket-level events).
    pub skb: u64,
    /// Hook-specific value (see [`Hook`]).
    pub value: i64,
    /// Hook-specific second value: for `skb_drop`, the kernel address of the code that dropped
    /// the skb (shown as `symbol+offset`, never as a number).
    pub aux: u64,
    /// Hook-specific duration in ns: for `SendmsgReturn`, time since the call's first chunk; for
    /// `DriverDone`, time in the driver; for `SkbFree`/`SkbDrop`, time since `dev_queue_xmit`.
    pub duration_ns: u64,
    /// The sender's cgroup v2 id (the inode number of its cgroup directory), taken at `sendmsg`
    /// and carried like pid/comm to the socket's later events; 0 when the sender is unknown
    /// (never the root cgroup, whose id is 1).
    pub cgroup_id: u64,
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
    /// The inode number of the socket's network namespace (`ls -l /proc/<pid>/ns/net`,
    /// `ip netns identify`); 0 when it could not be read.
    pub netns_ino: u32,
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
    pub _pad: [u8; 7],
    pub comm: [u8; 16],
    pub ifname: [u8; 16],
    /// IPv4 in the first 4 bytes, or IPv6; network byte order.
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<SockEvent>() == 192);
const _: () = assert!(core::mem::align_of::<SockEvent>() == 8);

#[cfg(feature = "user")]
unsafe impl aya::Pod for SockEvent {}
