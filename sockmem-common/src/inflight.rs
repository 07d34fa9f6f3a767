//! State the programs keep about work in flight (map values), shared so that userspace can
//! count what was left unfinished.

/// An skb followed below the transport, keyed by its address.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SkbTrack {
    pub sk: u64,
    /// `skb->head` when first seen: an entry whose skb no longer has it is stale (the skb was
    /// freed where no hook sees it and its memory reused).
    pub head: u64,
    /// When seen at `dev_queue_xmit` (0: not seen there).
    pub queued_ns: u64,
    /// When handed to the driver (0: not yet).
    pub xmit_ns: u64,
    /// The device it was handed to: the driver's return must name the same one.
    pub xmit_dev: u64,
    /// When enqueued on a qdisc, until dequeued (0: not in a qdisc).
    pub enqueued_ns: u64,
    /// 1 once enqueued on a qdisc.
    pub qdisc_seen: u32,
    /// 1 once the socket got the skb's truesize back (its destructor ran, e.g. a veth orphaning
    /// it on the way to the peer): the transmit side's times (`driver_time`, `below_tcp`) ended
    /// there, and the skb's later free does not end them again.
    pub given_back: u32,
}

/// A call in progress (`sendmsg`, a wait for memory), keyed by thread id.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SendStart {
    pub sk: u64,
    pub ts_ns: u64,
}

/// What sockmem knows of a socket, keyed by the address of its `struct sock`. The address is
/// reused once a socket is freed, so an entry belongs to one socket only while what is seen at
/// the address stays consistent with it: another protocol, another (nonzero) inode number, or
/// another local or remote port (where both are known) is a new socket with a new `id`. (A
/// listener or a closed socket has no file, so the inode alone cannot tell.)
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockIdent {
    /// Unique while sockmem runs: a per-CPU counter with the CPU in the low byte.
    pub id: u64,
    /// The inode number when the socket had a file; 0 if never seen with one.
    pub ino: u64,
    /// The last nonzero local port: TCP clears it before `tcp_destroy_sock` fires.
    pub lport: u16,
    /// The last nonzero remote port.
    pub rport: u16,
    /// The ports the verdict was decided with (`lport << 16 | rport`): a socket that binds or
    /// connects later is judged again.
    pub verdict_ports: u32,
    pub protocol: u8,
    /// The socket filters' verdict: 0 not decided yet, [`VERDICT_PASS`] or [`VERDICT_FAIL`].
    pub verdict: u8,
    /// 1 once a datagram of this unconnected UDP socket passed the filters by its headers.
    pub datagram_passed: u8,
    pub _pad: [u8; 1],
    /// The socket's network namespace inode, read once when the entry is made (a socket
    /// never changes namespace).
    pub netns_ino: u32,
}

/// A send system call in progress on a thread (`send_blocked`), keyed by thread id. Entries of
/// calls that were not on a socket (a `write` to a file) stay until the thread's next send call
/// resets them; they only accumulate while `start_ns` is set.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SendCall {
    /// When the thread entered the call (0: consumed by its `sendmsg` return).
    pub start_ns: u64,
    /// When it went to sleep, while asleep (0: running).
    pub sleep_start_ns: u64,
    /// Time asleep so far in this call.
    pub blocked_ns: u64,
    pub sleeps: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<SendCall>() == 32);

pub const VERDICT_PASS: u8 = 1;
pub const VERDICT_FAIL: u8 = 2;

const _: () = assert!(core::mem::size_of::<SkbTrack>() == 56);
const _: () = assert!(core::mem::size_of::<SockIdent>() == 32);
const _: () = assert!(core::mem::size_of::<SendStart>() == 16);

#[cfg(feature = "user")]
unsafe impl aya::Pod for SkbTrack {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for SendStart {}
