//! Reads of kernel structs through the offsets the loader resolved from BTF.
//!
//! Every read goes through `bpf_probe_read_kernel`, so a stale pointer yields `None` rather than a
//! fault. Offsets are read with `read_volatile` so the compiler cannot fold the (zeroed at
//! compile time) global into constants.

use core::ptr::read_volatile;

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use sockmem_common::{
    event::{TXQ_BQL_READ, TXQ_BQL_USED, TXQ_DRV_XOFF, TXQ_READ, TXQ_STACK_XOFF},
    Config,
};

use crate::maps::{CONFIG, RUNNING};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// CLOCK_MONOTONIC, ns.
#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn config() -> &'static Config {
    // SAFETY: a plain read-only global; the loader fills it before any program runs.
    unsafe { &*core::ptr::addr_of!(CONFIG) }
}

/// The loader filled the configuration, and userspace has switched the programs on (after
/// attaching every hook, so that all hooks start together).
#[inline(always)]
pub fn ready() -> bool {
    let configured = unsafe { read_volatile(&config().ready) } == 1;
    configured && unsafe { read_volatile(core::ptr::addr_of!(RUNNING)) } == 1
}

#[inline(always)]
fn offset(field: &u32) -> u64 {
    unsafe { read_volatile(field) as u64 }
}

#[inline(always)]
fn read<T>(base: u64, field: &u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + offset(field)) as *const T).ok() }
}

/// How many bytes of `sock_common`'s head one read takes: the IPv4 addresses, the ports and the
/// family sit within a few bytes of each other there (`skc_addrpair`, `skc_portpair`,
/// `skc_family`). Each `bpf_probe_read_kernel` costs about 50 ns on the 6.18 host whatever its
/// size (measured: four 2-byte reads of one cache line 220 ns, two 16-byte reads 88 ns), so one
/// read of the span replaces five.
const HEAD: u64 = 24;

/// Who a socket is and what it carries: everything the filters look at.
#[repr(C)]
pub struct SocketId {
    pub family: u16,
    pub protocol: u8,
    pub lport: u16,
    pub rport: u16,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    /// `laddr`/`raddr` were read (they are read only where something uses them).
    pub has_addrs: bool,
    /// `sock_common`'s head as read, from offset `head_start` (`head_len` 0: read field by field,
    /// the fields being too far apart on this kernel).
    pub head: [u8; HEAD as usize],
    pub head_start: u64,
    pub head_len: u64,
}

/// `N` bytes of `buf` at `at`, zeros past its end.
#[inline(always)]
fn bytes_at<const N: usize>(buf: &[u8; HEAD as usize], at: u64) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        if let Some(b) = buf.get(at as usize + i) {
            out[i] = *b;
        }
        i += 1;
    }
    out
}

/// Fills `id` with the identity of an IPv4/IPv6 socket, addresses left zero (see
/// [`socket_addrs`]) and the protocol to `ident::identify`; false for another family. In place, because the BPF stack is too small for
/// copies of it.
#[inline(always)]
pub fn socket_id(sk: u64, id: &mut SocketId) -> bool {
    let o = &config().offsets;
    if sk == 0 {
        return false;
    }
    let (fam, num, dport) = (offset(&o.sk_family), offset(&o.sk_num), offset(&o.sk_dport));
    let (saddr, daddr) = (offset(&o.sk_rcv_saddr), offset(&o.sk_daddr));
    let start = fam.min(num).min(dport).min(saddr).min(daddr);
    let end = (fam + 2)
        .max(num + 2)
        .max(dport + 2)
        .max(saddr + 4)
        .max(daddr + 4);
    id.head_len = 0;
    let (family, lport, rport) = if end - start <= HEAD {
        let src = (sk + start) as *const u8;
        if unsafe { bpf_probe_read_kernel_buf(src, &mut id.head) }.is_err() {
            return false;
        }
        id.head_start = start;
        id.head_len = HEAD;
        (
            u16::from_ne_bytes(bytes_at(&id.head, fam - start)),
            u16::from_ne_bytes(bytes_at(&id.head, num - start)),
            u16::from_be_bytes(bytes_at(&id.head, dport - start)),
        )
    } else {
        let Some(family) = read::<u16>(sk, &o.sk_family) else {
            return false;
        };
        (
            family,
            read(sk, &o.sk_num).unwrap_or(0),
            u16::from_be(read(sk, &o.sk_dport).unwrap_or(0)),
        )
    };
    if family != AF_INET && family != AF_INET6 {
        return false;
    }
    id.family = family;
    // Left to `ident::identify`, which reads `sk_protocol` only for a socket it does not know.
    id.protocol = 0;
    id.lport = lport;
    id.rport = rport;
    id.laddr = [0; 16];
    id.raddr = [0; 16];
    id.has_addrs = false;
    true
}

/// Reads the socket's local and remote addresses into `id` (once).
#[inline(always)]
pub fn socket_addrs(sk: u64, id: &mut SocketId) {
    if id.has_addrs {
        return;
    }
    id.has_addrs = true;
    let o = &config().offsets;
    if id.family == AF_INET {
        let (l, r): ([u8; 4], [u8; 4]) = if id.head_len != 0 {
            let start = id.head_start;
            (
                bytes_at(&id.head, offset(&o.sk_rcv_saddr).saturating_sub(start)),
                bytes_at(&id.head, offset(&o.sk_daddr).saturating_sub(start)),
            )
        } else {
            (
                read(sk, &o.sk_rcv_saddr).unwrap_or([0; 4]),
                read(sk, &o.sk_daddr).unwrap_or([0; 4]),
            )
        };
        id.laddr[..4].copy_from_slice(&l);
        id.raddr[..4].copy_from_slice(&r);
    } else {
        id.laddr = read(sk, &o.sk_v6_rcv_saddr).unwrap_or([0; 16]);
        id.raddr = read(sk, &o.sk_v6_daddr).unwrap_or([0; 16]);
    }
}

/// The two send-side counters and the send buffer, as read right now.
pub struct SendMemory {
    pub wmem_queued: i32,
    pub wmem_alloc: i32,
    pub sndbuf: i32,
}

impl SendMemory {
    /// The socket's own reference on `sk_wmem_alloc` is gone: it is being freed, and what is
    /// read is not its counters.
    #[inline(always)]
    pub fn freed(&self) -> bool {
        self.wmem_alloc < 0
    }
}

#[inline(always)]
pub fn send_memory(sk: u64) -> SendMemory {
    let mut m = counters(sk);
    m.sndbuf = read(sk, &config().offsets.sk_sndbuf).unwrap_or(0);
    m
}

/// The two counters alone (`sndbuf` left 0), where the send buffer is not shown. Adjacent in
/// `struct sock` on the kernels seen (`sk_wmem_queued`, then `sk_wmem_alloc`): one read then.
#[inline(always)]
pub fn counters(sk: u64) -> SendMemory {
    let o = &config().offsets;
    let (q, a) = (offset(&o.sk_wmem_queued), offset(&o.sk_wmem_alloc));
    if a == q + 4 && sk != 0 {
        let both: u64 = read_at(sk + q).unwrap_or(1 << 32);
        // Little-endian (bpfel): the lower half is the first field.
        return SendMemory {
            wmem_queued: both as u32 as i32,
            wmem_alloc: (both >> 32) as u32 as i32 - 1,
            sndbuf: 0,
        };
    }
    SendMemory {
        wmem_queued: wmem_queued(sk),
        wmem_alloc: wmem_alloc(sk),
        sndbuf: 0,
    }
}

/// Whether sockmem follows sockets of this protocol (TCP and UDP).
#[inline(always)]
pub fn followed_protocol(protocol: u8) -> bool {
    protocol == IPPROTO_TCP || protocol == IPPROTO_UDP
}

#[inline(always)]
pub fn sk_protocol(sk: u64) -> u8 {
    read::<u16>(sk, &config().offsets.sk_protocol).unwrap_or(0) as u8
}

/// `sk_refcnt`: 0 once the socket is being destroyed.
#[inline(always)]
pub fn sk_refcnt(sk: u64) -> u32 {
    read(sk, &config().offsets.sk_refcnt).unwrap_or(0)
}

/// `sk_wmem_alloc` as ss and sock_diag show it: the refcount starts at 1 for the socket itself,
/// and drops to 0 only when the socket is freed (then this is -1: see `SendMemory::freed`).
#[inline(always)]
pub fn wmem_alloc(sk: u64) -> i32 {
    read::<i32>(sk, &config().offsets.sk_wmem_alloc).unwrap_or(1) - 1
}

/// Fills `id`'s addresses and ports from a UDP datagram's IP and UDP headers (an unconnected
/// socket's destination is only there); false when they cannot be read.
#[inline(always)]
pub fn datagram_endpoints(skb: u64, id: &mut SocketId) -> bool {
    let o = &config().offsets;
    let head: u64 = read(skb, &o.skb_head).unwrap_or(0);
    let nh: u16 = read(skb, &o.skb_network_header).unwrap_or(u16::MAX);
    let th: u16 = read(skb, &o.skb_transport_header).unwrap_or(u16::MAX);
    // `~0` marks a header that is not set.
    if head == 0 || nh == u16::MAX || th == u16::MAX {
        return false;
    }
    let ip = head + nh as u64;
    let udp = head + th as u64;
    let Some(first) = read_at::<u8>(ip) else {
        return false;
    };
    id.laddr = [0; 16];
    id.raddr = [0; 16];
    // Read straight into `id`: a copy through a stack array made 6.1's verifier reject the
    // program ("pointer arithmetic with >>= operator prohibited").
    let (family, saddr, daddr, len) = match first >> 4 {
        4 => (AF_INET, ip + 12, ip + 16, 4),
        6 => (AF_INET6, ip + 8, ip + 24, 16),
        _ => return false,
    };
    id.family = family;
    id.has_addrs = true;
    let ok = unsafe {
        bpf_probe_read_kernel_buf(saddr as *const u8, &mut id.laddr[..len]).is_ok()
            && bpf_probe_read_kernel_buf(daddr as *const u8, &mut id.raddr[..len]).is_ok()
    };
    if !ok {
        return false;
    }
    let (Some(sport), Some(dport)) = (read_at::<u16>(udp), read_at::<u16>(udp + 2)) else {
        return false;
    };
    id.lport = u16::from_be(sport);
    id.rport = u16::from_be(dport);
    true
}

#[inline(always)]
fn read_at<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_kernel(addr as *const T).ok() }
}

/// Whether `id` is one of the system calls that send on a socket.
#[inline(always)]
pub fn is_send_syscall(id: u32) -> bool {
    let c = config();
    let n = unsafe { read_volatile(&c.n_send_syscalls) } as usize;
    let mut i = 0;
    while i < 6 {
        if i < n && unsafe { read_volatile(&c.send_syscalls[i]) } == id {
            return true;
        }
        i += 1;
    }
    false
}

/// A task's thread id (`task_struct.pid`).
#[inline(always)]
pub fn task_pid(task: u64) -> u32 {
    read(task, &config().offsets.task_pid).unwrap_or(0)
}

/// The inode number of the socket's file (`sock_i_ino`); 0 when it has none (orphaned).
#[inline(always)]
pub fn sock_ino(sk: u64) -> u64 {
    let o = &config().offsets;
    let socket: u64 = read(sk, &o.sk_socket).unwrap_or(0);
    read(socket, &o.socket_ino).unwrap_or(0)
}

/// The inode number of the socket's network namespace (`sk_net(sk)->ns.inum`); 0 when it
/// cannot be read.
#[inline(always)]
pub fn sock_netns(sk: u64) -> u32 {
    let o = &config().offsets;
    let net: u64 = read(sk, &o.sk_net).unwrap_or(0);
    read(net, &o.net_ns_inum).unwrap_or(0)
}

#[inline(always)]
pub fn skb_sk(skb: u64) -> u64 {
    read(skb, &config().offsets.skb_sk).unwrap_or(0)
}

#[inline(always)]
pub fn skb_head(skb: u64) -> u64 {
    read(skb, &config().offsets.skb_head).unwrap_or(0)
}

/// The next skb of a list (a bulk dequeue, a list handed to the driver); 0 at the end.
#[inline(always)]
pub fn skb_next(skb: u64) -> u64 {
    read(skb, &config().offsets.skb_next).unwrap_or(0)
}

#[inline(always)]
pub fn skb_dev(skb: u64) -> u64 {
    read(skb, &config().offsets.skb_dev).unwrap_or(0)
}

/// `(len, truesize)` of an skb.
#[inline(always)]
pub fn skb_sizes(skb: u64) -> (u32, u32) {
    let o = &config().offsets;
    (
        read(skb, &o.skb_len).unwrap_or(0),
        read(skb, &o.skb_truesize).unwrap_or(0),
    )
}

/// Interface index and name of a net_device; zeros when `dev` is 0 or unreadable.
#[inline(always)]
pub fn device(dev: u64, ifindex: &mut u32, name: &mut [u8; 16]) {
    let o = &config().offsets;
    *ifindex = read(dev, &o.dev_ifindex).unwrap_or(0);
    *name = read(dev, &o.dev_name).unwrap_or([0; 16]);
}

/// `msg_data_left(msg)`: bytes a `sendmsg` call still has to copy.
#[inline(always)]
pub fn msg_left(msg: u64) -> i64 {
    read::<u64>(msg, &config().offsets.msg_iter_count).unwrap_or(0) as i64
}

#[inline(always)]
pub fn wmem_queued(sk: u64) -> i32 {
    read(sk, &config().offsets.sk_wmem_queued).unwrap_or(0)
}

/// The TX queue `skb` is handed to on `dev`, packed as `SockEvent` documents for `driver_xmit`
/// (`TXQ_*` bits, and BQL's limit and inflight): `(0, 0)` where the kernel's BTF has no queue.
#[inline(always)]
pub fn tx_queue(skb: u64, dev: u64) -> (i64, u64) {
    let o = &config().offsets;
    let size = offset(&o.txq_size);
    if size == 0 {
        return (0, 0);
    }
    let Some(tx) = read::<u64>(dev, &o.dev_tx) else {
        return (0, 0);
    };
    let Some(index) = read::<u16>(skb, &o.skb_queue_mapping) else {
        return (0, 0);
    };
    if tx == 0 {
        return (0, 0);
    }
    let txq = tx + u64::from(index) * size;
    let Some(state) = read::<u64>(txq, &o.txq_state) else {
        return (0, 0);
    };
    let mut bits = TXQ_READ;
    if state & (1u64 << (offset(&o.txq_drv_xoff_bit) & 63)) != 0 {
        bits |= TXQ_DRV_XOFF;
    }
    if state & (1u64 << (offset(&o.txq_stack_xoff_bit) & 63)) != 0 {
        bits |= TXQ_STACK_XOFF;
    }
    if offset(&o.txq_has_bql) == 0 {
        return (bits, 0);
    }
    let limit = read::<u32>(txq, &o.txq_dql_limit);
    let queued = read::<u32>(txq, &o.txq_dql_num_queued);
    let completed = read::<u32>(txq, &o.txq_dql_num_completed);
    let (Some(limit), Some(queued), Some(completed)) = (limit, queued, completed) else {
        return (bits, 0);
    };
    bits |= TXQ_BQL_READ;
    if queued != 0 {
        bits |= TXQ_BQL_USED;
    }
    let inflight = queued.wrapping_sub(completed);
    (bits, (u64::from(limit) << 32) | u64::from(inflight))
}
