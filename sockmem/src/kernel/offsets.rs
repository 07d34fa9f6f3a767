//! Resolves [`FieldOffsets`] from the running kernel's BTF: the replacement for CO-RE.

use sockmem_common::FieldOffsets;

use crate::kernel::btf::{Btf, BtfError};

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error("cannot locate `{strukt}.{path}` in the kernel's BTF")]
    Missing {
        strukt: &'static str,
        path: &'static str,
        #[source]
        source: BtfError,
    },
    #[error("unexpected layout in this kernel: {what}")]
    Layout { what: &'static str },
    #[error("`{strukt}.{path}` is {actual} bytes in this kernel; sockmem reads it as {expected}")]
    Size {
        strukt: &'static str,
        path: &'static str,
        expected: u32,
        actual: u32,
    },
}

/// One field the programs read: where it is looked up, its expected size, and its slot.
struct Field {
    strukt: &'static str,
    path: &'static str,
    size: u32,
    slot: fn(&mut FieldOffsets) -> &mut u32,
}

#[rustfmt::skip]
const FIELDS: &[Field] = &[
    Field { strukt: "sock", path: "__sk_common.skc_family", size: 2, slot: |o| &mut o.sk_family },
    Field { strukt: "sock", path: "sk_protocol", size: 2, slot: |o| &mut o.sk_protocol },
    Field { strukt: "sock", path: "__sk_common.skc_num", size: 2, slot: |o| &mut o.sk_num },
    Field { strukt: "sock", path: "__sk_common.skc_dport", size: 2, slot: |o| &mut o.sk_dport },
    Field { strukt: "sock", path: "__sk_common.skc_rcv_saddr", size: 4, slot: |o| &mut o.sk_rcv_saddr },
    Field { strukt: "sock", path: "__sk_common.skc_daddr", size: 4, slot: |o| &mut o.sk_daddr },
    Field { strukt: "sock", path: "__sk_common.skc_v6_rcv_saddr", size: 16, slot: |o| &mut o.sk_v6_rcv_saddr },
    Field { strukt: "sock", path: "__sk_common.skc_v6_daddr", size: 16, slot: |o| &mut o.sk_v6_daddr },
    Field { strukt: "sock", path: "sk_wmem_queued", size: 4, slot: |o| &mut o.sk_wmem_queued },
    Field { strukt: "sock", path: "sk_wmem_alloc", size: 4, slot: |o| &mut o.sk_wmem_alloc },
    Field { strukt: "sock", path: "sk_sndbuf", size: 4, slot: |o| &mut o.sk_sndbuf },
    Field { strukt: "sk_buff", path: "sk", size: 8, slot: |o| &mut o.skb_sk },
    Field { strukt: "sk_buff", path: "len", size: 4, slot: |o| &mut o.skb_len },
    Field { strukt: "sk_buff", path: "truesize", size: 4, slot: |o| &mut o.skb_truesize },
    Field { strukt: "sk_buff", path: "dev", size: 8, slot: |o| &mut o.skb_dev },
    Field { strukt: "net_device", path: "ifindex", size: 4, slot: |o| &mut o.dev_ifindex },
    Field { strukt: "net_device", path: "name", size: 16, slot: |o| &mut o.dev_name },
    Field { strukt: "msghdr", path: "msg_iter.count", size: 8, slot: |o| &mut o.msg_iter_count },
    Field { strukt: "sk_buff", path: "head", size: 8, slot: |o| &mut o.skb_head },
    Field { strukt: "sk_buff", path: "next", size: 8, slot: |o| &mut o.skb_next },
    Field { strukt: "sock", path: "__sk_common.skc_refcnt", size: 4, slot: |o| &mut o.sk_refcnt },
    Field { strukt: "sock", path: "sk_socket", size: 8, slot: |o| &mut o.sk_socket },
    Field { strukt: "sk_buff", path: "network_header", size: 2, slot: |o| &mut o.skb_network_header },
    Field { strukt: "sk_buff", path: "transport_header", size: 2, slot: |o| &mut o.skb_transport_header },
    Field { strukt: "task_struct", path: "pid", size: 4, slot: |o| &mut o.task_pid },
    Field { strukt: "sock", path: "__sk_common.skc_net.net", size: 8, slot: |o| &mut o.sk_net },
    Field { strukt: "net", path: "ns.inum", size: 4, slot: |o| &mut o.net_ns_inum },
];

/// The three locations `FieldOffsets::socket_ino` is computed from.
const SOCKET_INO: [(&str, &str, u32); 3] = [
    ("socket_alloc", "socket", 0),
    ("socket_alloc", "vfs_inode", 0),
    ("inode", "i_ino", 8),
];

/// The TX queue `why` reads at the hand-off to the driver: optional, as a kernel without one of
/// them (BQL is `CONFIG_BQL`) leaves that input named missing rather than failing the load.
#[rustfmt::skip]
const TX_QUEUE: &[Field] = &[
    Field { strukt: "net_device", path: "_tx", size: 8, slot: |o| &mut o.dev_tx },
    Field { strukt: "sk_buff", path: "queue_mapping", size: 2, slot: |o| &mut o.skb_queue_mapping },
    Field { strukt: "netdev_queue", path: "state", size: 8, slot: |o| &mut o.txq_state },
];
#[rustfmt::skip]
const BQL: &[Field] = &[
    Field { strukt: "netdev_queue", path: "dql.limit", size: 4, slot: |o| &mut o.txq_dql_limit },
    Field { strukt: "netdev_queue", path: "dql.num_queued", size: 4, slot: |o| &mut o.txq_dql_num_queued },
    Field { strukt: "netdev_queue", path: "dql.num_completed", size: 4, slot: |o| &mut o.txq_dql_num_completed },
];

/// Every (struct, field path) [`resolve`] looks up: the BTF test fixture keeps these.
#[cfg(test)]
pub(crate) fn looked_up() -> impl Iterator<Item = (&'static str, &'static str)> {
    let socket_ino = SOCKET_INO.iter().map(|&(strukt, path, _)| (strukt, path));
    let optional = TX_QUEUE.iter().chain(BQL).map(|f| (f.strukt, f.path));
    FIELDS
        .iter()
        .map(|f| (f.strukt, f.path))
        .chain(socket_ino)
        .chain(optional)
}

/// Fills `fields` into `offsets` if every one of them is in `btf` with its expected size.
fn resolve_all(btf: &Btf, fields: &[Field], offsets: &mut FieldOffsets) -> bool {
    let mut found = *offsets;
    for f in fields {
        match btf.member_offset(f.strukt, f.path) {
            Ok(loc) if loc.size == f.size => *(f.slot)(&mut found) = loc.offset,
            _ => return false,
        }
    }
    *offsets = found;
    true
}

/// The TX queue's offsets, its size and the state bits from `netdev_queue_state_t`; left at 0
/// (`txq_size` 0: not read) where this kernel's BTF lacks one.
fn resolve_tx_queue(btf: &Btf, offsets: &mut FieldOffsets) {
    let Ok(size) = btf.struct_size("netdev_queue") else {
        return;
    };
    let Ok(states) = btf.enum_values("netdev_queue_state_t") else {
        return;
    };
    let bit = |name: &str| states.iter().find(|(n, _)| n == name).map(|&(_, v)| v);
    let (Some(drv), Some(stack)) = (
        bit("__QUEUE_STATE_DRV_XOFF"),
        bit("__QUEUE_STATE_STACK_XOFF"),
    ) else {
        return;
    };
    if drv >= 64 || stack >= 64 || size == 0 || !resolve_all(btf, TX_QUEUE, offsets) {
        return;
    }
    (offsets.txq_drv_xoff_bit, offsets.txq_stack_xoff_bit) = (drv as u32, stack as u32);
    offsets.txq_has_bql = u32::from(resolve_all(btf, BQL, offsets));
    offsets.txq_size = size;
}

/// Every offset the programs need, or the first field this kernel lacks.
pub fn resolve(btf: &Btf) -> Result<FieldOffsets, OffsetError> {
    let mut offsets = FieldOffsets::default();
    for f in FIELDS {
        let loc = btf
            .member_offset(f.strukt, f.path)
            .map_err(|source| OffsetError::Missing {
                strukt: f.strukt,
                path: f.path,
                source,
            })?;
        if loc.size != f.size {
            return Err(OffsetError::Size {
                strukt: f.strukt,
                path: f.path,
                expected: f.size,
                actual: loc.size,
            });
        }
        *(f.slot)(&mut offsets) = loc.offset;
    }
    let mut at = [0u32; 3];
    for (slot, &(strukt, path, size)) in at.iter_mut().zip(&SOCKET_INO) {
        let loc = btf
            .member_offset(strukt, path)
            .map_err(|source| OffsetError::Missing {
                strukt,
                path,
                source,
            })?;
        if size != 0 && loc.size != size {
            return Err(OffsetError::Size {
                strukt,
                path,
                expected: size,
                actual: loc.size,
            });
        }
        *slot = loc.offset;
    }
    // `socket` comes first in `socket_alloc` in every kernel; a layout where it does not would
    // need a signed offset.
    offsets.socket_ino = (at[1] + at[2])
        .checked_sub(at[0])
        .ok_or(OffsetError::Layout {
            what: "`socket_alloc.socket` after `socket_alloc.vfs_inode`",
        })?;
    resolve_tx_queue(btf, &mut offsets);
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::fixture;

    /// Layout facts that hold in every kernel sockmem supports.
    fn assert_plausible(o: &FieldOffsets) {
        // sock_common sits at the start of sock: its fields are in the first 128 bytes, the
        // send-side counters beyond it.
        assert!(
            o.sk_family < 128 && o.sk_dport < 128 && o.sk_num < 128,
            "{o:?}"
        );
        assert_eq!(
            o.sk_num,
            o.sk_dport + 2,
            "skc_num follows skc_dport in skc_portpair"
        );
        assert!(o.sk_wmem_queued > 128 && o.sk_wmem_alloc > 128 && o.sk_sndbuf > 128);
        assert!(o.sk_net < 128, "skc_net is in sock_common: {o:?}");
        let distinct: std::collections::HashSet<u32> = [
            o.sk_wmem_queued,
            o.sk_wmem_alloc,
            o.sk_sndbuf,
            o.sk_protocol,
        ]
        .into();
        assert_eq!(distinct.len(), 4, "{o:?}");
        assert_ne!(o.skb_len, o.skb_truesize);
    }

    #[test]
    fn fixture_offsets_resolve_and_are_plausible() {
        let o = resolve(fixture::btf()).expect("every field sockmem reads is in the fixture");
        assert_plausible(&o);
        // The fixture's kernel (see btf/testdata/sockmem-structs.txt): a fixture cut from
        // another kernel changes these.
        let want = FieldOffsets {
            sk_family: 16,
            sk_protocol: 532,
            sk_num: 14,
            sk_dport: 12,
            sk_rcv_saddr: 4,
            sk_daddr: 0,
            sk_v6_rcv_saddr: 72,
            sk_v6_daddr: 56,
            sk_wmem_queued: 376,
            sk_wmem_alloc: 380,
            sk_sndbuf: 568,
            skb_sk: 24,
            skb_len: 112,
            skb_truesize: 208,
            skb_dev: 16,
            dev_ifindex: 224,
            dev_name: 280,
            msg_iter_count: 40,
            skb_head: 192,
            skb_next: 0,
            sk_refcnt: 128,
            sk_socket: 288,
            // In sk_buff's order: transport, then network header.
            skb_transport_header: 178,
            skb_network_header: 180,
            task_pid: 1264,
            socket_ino: 192,
            sk_net: 48,
            net_ns_inum: 176,
            dev_tx: 24,
            skb_queue_mapping: 124,
            txq_size: 320,
            txq_state: 272,
            txq_drv_xoff_bit: 0,
            txq_stack_xoff_bit: 1,
            // `dql` at 128 in netdev_queue; num_queued is its first member.
            txq_dql_limit: 192,
            txq_dql_num_queued: 128,
            txq_dql_num_completed: 196,
            txq_has_bql: 1,
        };
        assert_eq!(o, want);
    }

    #[test]
    fn fixture_offsets_are_the_live_kernels() {
        let Some(live) = fixture::live_same_kernel() else {
            return;
        };
        let live = resolve(live).expect("every field sockmem reads exists in the running kernel");
        assert_eq!(resolve(fixture::btf()).unwrap(), live);
    }

    #[test]
    fn live_kernel_offsets_resolve_and_are_plausible() {
        let Some(live) = fixture::live() else {
            return;
        };
        let o = resolve(live).expect("every field sockmem reads exists in the running kernel");
        assert_plausible(&o);
    }
}
