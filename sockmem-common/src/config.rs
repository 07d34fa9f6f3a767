//! The single global handed to the programs at load time: kernel field offsets and filters.

/// Byte offsets of every kernel field the programs read, resolved from the running kernel's BTF.
///
/// Rust eBPF has no CO-RE relocations yet, so these replace them. Offsets are from the start of
/// the named struct (nested members and anonymous unions already folded in).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldOffsets {
    /// `sock.__sk_common.skc_family` (u16).
    pub sk_family: u32,
    /// `sock.sk_protocol` (u16).
    pub sk_protocol: u32,
    /// `sock.__sk_common.skc_num` (u16, host order).
    pub sk_num: u32,
    /// `sock.__sk_common.skc_dport` (u16, network order).
    pub sk_dport: u32,
    /// `sock.__sk_common.skc_rcv_saddr` (IPv4, network order).
    pub sk_rcv_saddr: u32,
    /// `sock.__sk_common.skc_daddr`.
    pub sk_daddr: u32,
    /// `sock.__sk_common.skc_v6_rcv_saddr` (16 bytes).
    pub sk_v6_rcv_saddr: u32,
    /// `sock.__sk_common.skc_v6_daddr`.
    pub sk_v6_daddr: u32,
    /// `sock.sk_wmem_queued` (int).
    pub sk_wmem_queued: u32,
    /// `sock.sk_wmem_alloc` (`refcount_t`, read as its int counter).
    pub sk_wmem_alloc: u32,
    /// `sock.sk_sndbuf` (int).
    pub sk_sndbuf: u32,
    /// `sk_buff.sk`.
    pub skb_sk: u32,
    /// `sk_buff.len`.
    pub skb_len: u32,
    /// `sk_buff.truesize`.
    pub skb_truesize: u32,
    /// `sk_buff.dev`.
    pub skb_dev: u32,
    /// `net_device.ifindex`.
    pub dev_ifindex: u32,
    /// `net_device.name` (16 bytes).
    pub dev_name: u32,
    /// `msghdr.msg_iter.count` (size_t): bytes `sendmsg` still has to copy.
    pub msg_iter_count: u32,
    /// `sk_buff.head`: tells a followed skb from a later one at the same address.
    pub skb_head: u32,
    /// `sk_buff.next`: qdiscs dequeue and drivers are handed lists of skbs.
    pub skb_next: u32,
    /// `sock.__sk_common.skc_refcnt` (`refcount_t`): 0 while the socket is being destroyed.
    pub sk_refcnt: u32,
    /// `sock.sk_socket` (`struct socket *`, NULL once the socket is orphaned).
    pub sk_socket: u32,
    /// `sk_buff.network_header` and `transport_header` (u16, from `head`): the addresses and
    /// ports of a datagram sent on an unconnected UDP socket are only in its headers.
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    /// `task_struct.pid` (the thread id): whom `sched_switch` switches in.
    pub task_pid: u32,
    /// From a `struct socket` to its inode's `i_ino`: the socket lives in a `socket_alloc` next
    /// to its `vfs_inode`, so this is `socket_alloc.vfs_inode + inode.i_ino - socket_alloc.socket`.
    pub socket_ino: u32,
    /// `sock.__sk_common.skc_net.net` (`struct net *`): the socket's network namespace.
    pub sk_net: u32,
    /// `net.ns.inum`: the namespace's inode number.
    pub net_ns_inum: u32,
    /// The TX queue an skb is handed to the driver on (`why` only): `net_device._tx` (`struct
    /// netdev_queue *`), `sk_buff.queue_mapping` (u16) and `sizeof(struct netdev_queue)`;
    /// `txq_size` is 0 where the kernel's BTF lacks any of them (the queue is then not read).
    pub dev_tx: u32,
    pub skb_queue_mapping: u32,
    pub txq_size: u32,
    /// `netdev_queue.state` (unsigned long) and the bits of `netdev_queue_state_t` in it:
    /// `__QUEUE_STATE_DRV_XOFF` (the driver stopped the queue) and `__QUEUE_STATE_STACK_XOFF`
    /// (BQL stopped it).
    pub txq_state: u32,
    pub txq_drv_xoff_bit: u32,
    pub txq_stack_xoff_bit: u32,
    /// `netdev_queue.dql.{limit,num_queued,num_completed}` (unsigned int each); `txq_has_bql`
    /// is 0 in a kernel built without BQL (no `dql` member), and these are then not read.
    pub txq_dql_limit: u32,
    pub txq_dql_num_queued: u32,
    pub txq_dql_num_completed: u32,
    pub txq_has_bql: u32,
}

/// How many `--port`s and `--addr`s the programs take.
pub const FILTER_PORTS: usize = 8;
pub const FILTER_NETS: usize = 8;

/// An address range: `(address & mask) == addr`, compared as two 64-bit words of the 16 address
/// bytes (IPv4 in the first 4), so a check costs no loop in the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Net {
    /// The network's bytes, already masked, as `u64::from_le_bytes` of each half.
    pub addr: [u64; 2],
    pub mask: [u64; 2],
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    pub _pad: [u16; 3],
}

impl Net {
    /// Whether 16 address bytes of this family fall in the range.
    #[inline(always)]
    pub fn contains(&self, family: u16, bytes: &[u8; 16]) -> bool {
        let (lo, hi) = words(bytes);
        family == self.family
            && lo & self.mask[0] == self.addr[0]
            && hi & self.mask[1] == self.addr[1]
    }
}

/// The two little-endian words of 16 address bytes.
#[inline(always)]
pub fn words(b: &[u8; 16]) -> (u64, u64) {
    (
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
    )
}

/// In-kernel filters; a zero count or field means "any".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Process id (tgid) of the socket's sender.
    pub tgid: u32,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u8,
    /// How many of `ports` are set: a socket passes with any of them at either end.
    pub n_ports: u8,
    /// How many of `nets` are set: a socket passes with an address in any at either end.
    pub n_nets: u8,
    /// How many leading bytes of `comm` the sender's command name must have (a prefix).
    pub comm_len: u8,
    /// Ports, host order.
    pub ports: [u16; FILTER_PORTS],
    pub nets: [Net; FILTER_NETS],
    /// Sender's comm prefix, NUL-padded.
    pub comm: [u8; 16],
    /// Interface name, NUL-padded; `ifname[0] == 0` = any.
    pub ifname: [u8; 16],
    /// The sender's cgroup (or a descendant): its cgroup v2 id; 0 = any.
    pub cgroup_id: u64,
    /// The depth of `cgroup_id` below the cgroup2 root (root 0): a sender's ancestor at this
    /// level must be `cgroup_id`.
    pub cgroup_level: u32,
    /// The socket's network namespace inode; 0 = any.
    pub netns_ino: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub offsets: FieldOffsets,
    pub filter: Filter,
    /// Set by the loader; the programs do nothing until it is 1 (guards against an unset global).
    pub ready: u32,
    /// [`MODE_TRACE`], [`MODE_HIST`], [`MODE_WHY`] or [`MODE_SERVE`].
    pub mode: u32,
    /// A [`crate::Per`] as `u32`: how histograms are keyed.
    pub per: u32,
    /// How many of `send_syscalls` are set.
    pub n_send_syscalls: u32,
    /// This architecture's numbers of the system calls that send on a socket (`write`, `writev`,
    /// `sendto`, `sendmsg`, `sendmmsg`, `pwritev2`): `send_blocked` measures sleeps inside them.
    pub send_syscalls: [u32; 6],
}

/// Every event goes to the ring buffer.
pub const MODE_TRACE: u32 = 0;
/// Events are aggregated into histograms in the kernel; nothing goes to the ring buffer.
pub const MODE_HIST: u32 = 1;
/// Both: events are aggregated into histograms in the kernel (read on demand, `serve`'s scrapes)
/// and also go to the ring buffer (`serve`'s gauges of bytes waiting, and its drops by reason).
pub const MODE_SERVE: u32 = 3;
/// As [`MODE_TRACE`], and the qdisc events (enqueue, dequeue, drop) of every socket pass the
/// socket and sender filters: `why` needs to know whose bytes are ahead in a qdisc.
pub const MODE_WHY: u32 = 2;

const _: () = assert!(core::mem::size_of::<FieldOffsets>() == 152);
const _: () = assert!(core::mem::size_of::<Net>() == 40);
const _: () = assert!(core::mem::size_of::<Filter>() == 392);
const _: () = assert!(core::mem::size_of::<Config>() == 584);

#[cfg(feature = "user")]
unsafe impl aya::Pod for Config {}
