//! The set of hooks and the ways each one can attach, best first.
//!
//! A hook ([`Hook`]) is a point in the stack with one event meaning. Each has up to three
//! [`Variant`]s, one per [`Backend`], and a variant is the list of programs and kernel attach
//! points that together implement it. The event path does not know which variant ran.

use std::fmt;

use clap::ValueEnum;
use sockmem_common::Hook;

/// How a program reaches the kernel, best (cheapest) first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum Backend {
    /// fentry/fexit: BTF trampolines, the lowest overhead.
    Fentry,
    /// kprobe/kretprobe: works on any function not inlined, needs CONFIG_KPROBES.
    Kprobe,
    /// Raw tracepoints: a stable ABI, but only where the kernel has a tracepoint.
    Tracepoint,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One kernel attach point.
#[derive(Clone, Copy, Debug)]
pub enum Attach {
    /// Raw tracepoint `category:name`; `args` are the argument positions the program reads, with
    /// a substring of the C type the kernel must declare there.
    Tracepoint {
        category: &'static str,
        name: &'static str,
        args: &'static [(usize, &'static str)],
    },
    KProbe(&'static str),
    KRetProbe(&'static str),
    FEntry(&'static str),
    FExit(&'static str),
}

impl fmt::Display for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attach::Tracepoint { category, name, .. } => write!(f, "{category}:{name}"),
            Attach::KProbe(func) | Attach::FEntry(func) => write!(f, "{func}"),
            Attach::KRetProbe(func) | Attach::FExit(func) => write!(f, "{func}%return"),
        }
    }
}

/// A program of the eBPF object at one attach point.
#[derive(Clone, Copy, Debug)]
pub struct Attachment {
    pub program: &'static str,
    pub attach: Attach,
    /// The hook still works without it (e.g. the IPv6 half of a pair).
    pub optional: bool,
}

#[derive(Debug)]
pub struct Variant {
    pub backend: Backend,
    pub attachments: &'static [Attachment],
}

#[derive(Debug)]
pub struct HookDef {
    pub hook: Hook,
    /// Best first; a backend missing here has no attach point for this hook.
    pub variants: &'static [Variant],
}

const SK: &str = "struct sock *";
const SKB: &str = "struct sk_buff *";
const DEV: &str = "struct net_device *";

const fn at(program: &'static str, attach: Attach) -> Attachment {
    Attachment {
        program,
        attach,
        optional: false,
    }
}

const fn opt(program: &'static str, attach: Attach) -> Attachment {
    Attachment {
        program,
        attach,
        optional: true,
    }
}

const fn tp(
    program: &'static str,
    category: &'static str,
    name: &'static str,
    args: &'static [(usize, &'static str)],
) -> Attachment {
    at(
        program,
        Attach::Tracepoint {
            category,
            name,
            args,
        },
    )
}

use Attach::{FEntry, FExit, KProbe, KRetProbe};
use Backend::{Fentry as F, Kprobe as K, Tracepoint as T};

const fn v(backend: Backend, attachments: &'static [Attachment]) -> Variant {
    Variant {
        backend,
        attachments,
    }
}

/// Every hook sockmem knows, in the order of the data path.
#[rustfmt::skip]
pub const HOOKS: &[HookDef] = &[
    HookDef { hook: Hook::TcpSendmsg, variants: &[
        v(F, &[at("fentry_tcp_sendmsg", FEntry("tcp_sendmsg"))]),
        v(K, &[at("kprobe_tcp_sendmsg", KProbe("tcp_sendmsg"))]),
        v(T, &[tp("tp_tcp_sendmsg_locked", "tcp", "tcp_sendmsg_locked", &[(0, SK), (1, "struct msghdr *")])]),
    ]},
    HookDef { hook: Hook::SendBlocked, variants: &[
        v(F, &[at("fentry_sk_stream_wait_memory", FEntry("sk_stream_wait_memory")),
               at("fexit_sk_stream_wait_memory", FExit("sk_stream_wait_memory"))]),
        v(K, &[at("kprobe_sk_stream_wait_memory", KProbe("sk_stream_wait_memory")),
               at("kretprobe_sk_stream_wait_memory", KRetProbe("sk_stream_wait_memory"))]),
    ]},
    HookDef { hook: Hook::SendmsgReturn, variants: &[
        v(F, &[at("fexit_tcp_sendmsg", FExit("tcp_sendmsg")),
               at("fexit_udp_sendmsg", FExit("udp_sendmsg")),
               opt("fexit_udpv6_sendmsg", FExit("udpv6_sendmsg"))]),
        v(K, &[at("kprobe_sendmsg_enter", KProbe("tcp_sendmsg")),
               at("kprobe_sendmsg_enter", KProbe("udp_sendmsg")),
               opt("kprobe_sendmsg_enter", KProbe("udpv6_sendmsg")),
               at("kretprobe_sendmsg", KRetProbe("tcp_sendmsg")),
               at("kretprobe_sendmsg", KRetProbe("udp_sendmsg")),
               opt("kretprobe_sendmsg", KRetProbe("udpv6_sendmsg"))]),
        v(T, &[tp("tp_sock_send_length", "sock", "sock_send_length", &[(0, SK), (1, "int")])]),
    ]},
    HookDef { hook: Hook::WmemCharge, variants: &[
        v(F, &[at("fentry_tcp_transmit_skb", FEntry("__tcp_transmit_skb")),
               opt("fentry_skb_set_owner_w", FEntry("skb_set_owner_w"))]),
        v(K, &[at("kprobe_tcp_transmit_skb", KProbe("__tcp_transmit_skb")),
               opt("kprobe_skb_set_owner_w", KProbe("skb_set_owner_w"))]),
    ]},
    HookDef { hook: Hook::DevQueueXmit, variants: &[
        v(F, &[at("fentry_dev_queue_xmit", FEntry("__dev_queue_xmit"))]),
        v(K, &[at("kprobe_dev_queue_xmit", KProbe("__dev_queue_xmit"))]),
        v(T, &[tp("tp_net_dev_queue", "net", "net_dev_queue", &[(0, SKB)])]),
    ]},
    HookDef { hook: Hook::QdiscEnqueue, variants: &[
        v(F, &[at("fexit_dev_qdisc_enqueue", FExit("dev_qdisc_enqueue"))]),
        v(K, &[at("kprobe_dev_qdisc_enqueue", KProbe("dev_qdisc_enqueue"))]),
        v(T, &[tp("tp_qdisc_enqueue", "qdisc", "qdisc_enqueue", &[(2, SKB)])]),
    ]},
    HookDef { hook: Hook::QdiscDequeue, variants: &[
        v(F, &[at("fentry_sch_direct_xmit", FEntry("sch_direct_xmit"))]),
        v(K, &[at("kprobe_sch_direct_xmit", KProbe("sch_direct_xmit"))]),
        v(T, &[tp("tp_qdisc_dequeue", "qdisc", "qdisc_dequeue", &[(3, SKB)])]),
    ]},
    HookDef { hook: Hook::DriverXmit, variants: &[
        v(F, &[at("fentry_dev_hard_start_xmit", FEntry("dev_hard_start_xmit"))]),
        v(K, &[at("kprobe_dev_hard_start_xmit", KProbe("dev_hard_start_xmit"))]),
        v(T, &[tp("tp_net_dev_start_xmit", "net", "net_dev_start_xmit", &[(0, SKB), (1, DEV)])]),
    ]},
    HookDef { hook: Hook::DriverDone, variants: &[
        v(T, &[tp("tp_net_dev_xmit", "net", "net_dev_xmit", &[(0, SKB), (1, "int"), (2, DEV), (3, "int")])]),
    ]},
    HookDef { hook: Hook::WmemRelease, variants: &[
        v(F, &[at("fentry_tcp_wfree", FEntry("tcp_wfree")),
               at("fexit_tcp_wfree", FExit("tcp_wfree")),
               at("fentry_sock_wfree", FEntry("sock_wfree")),
               opt("fentry_sock_wfree_inner", FEntry("__sock_wfree")),
               at("fentry_sk_free", FEntry("sk_free"))]),
        v(K, &[at("kprobe_tcp_wfree", KProbe("tcp_wfree")),
               at("kretprobe_tcp_wfree", KRetProbe("tcp_wfree")),
               at("kprobe_wfree", KProbe("sock_wfree")),
               opt("kprobe_wfree", KProbe("__sock_wfree")),
               at("kprobe_sk_free", KProbe("sk_free"))]),
    ]},
    HookDef { hook: Hook::SkbFree, variants: &[
        v(T, &[tp("tp_consume_skb", "skb", "consume_skb", &[(0, SKB)])]),
    ]},
    HookDef { hook: Hook::SkbDrop, variants: &[
        v(T, &[tp("tp_kfree_skb", "skb", "kfree_skb", &[(0, SKB), (2, "skb_drop_reason")])]),
    ]},
    HookDef { hook: Hook::TcpAck, variants: &[
        v(F, &[at("fentry_tcp_rcv_established", FEntry("tcp_rcv_established"))]),
        v(K, &[at("kprobe_tcp_rcv_established", KProbe("tcp_rcv_established"))]),
        v(T, &[tp("tp_tcp_probe", "tcp", "tcp_probe", &[(0, SK)])]),
    ]},
    HookDef { hook: Hook::TcpAckFreed, variants: &[
        v(F, &[at("fentry_tcp_ack", FEntry("tcp_ack")), at("fexit_tcp_ack", FExit("tcp_ack"))]),
        v(K, &[at("kprobe_tcp_ack", KProbe("tcp_ack")), at("kretprobe_tcp_ack", KRetProbe("tcp_ack"))]),
    ]},
    HookDef { hook: Hook::TcpRetransmit, variants: &[
        v(F, &[at("fentry_tcp_retransmit_skb", FEntry("__tcp_retransmit_skb"))]),
        v(K, &[at("kprobe_tcp_retransmit_skb", KProbe("__tcp_retransmit_skb"))]),
        v(T, &[tp("tp_tcp_retransmit_skb", "tcp", "tcp_retransmit_skb", &[(0, SK), (1, SKB)])]),
    ]},
    HookDef { hook: Hook::SockDestroy, variants: &[
        v(F, &[at("fentry_tcp_v4_destroy_sock", FEntry("tcp_v4_destroy_sock"))]),
        v(K, &[at("kprobe_tcp_v4_destroy_sock", KProbe("tcp_v4_destroy_sock"))]),
        v(T, &[tp("tp_tcp_destroy_sock", "tcp", "tcp_destroy_sock", &[(0, SK)])]),
    ]},
];

/// Programs that are not hooks but keep state the hooks read: whether a CPU is in softirq,
/// where the current task is not the sender. Raw tracepoints every kernel has.
pub const CONTEXT: &[Attachment] = &[
    tp("tp_softirq_entry", "irq", "softirq_entry", &[]),
    tp("tp_softirq_exit", "irq", "softirq_exit", &[]),
];

impl HookDef {
    pub fn variant(&self, backend: Backend) -> Option<&'static Variant> {
        // `HOOKS` is 'static, so are its variants.
        let variants: &'static [Variant] = self.variants;
        variants.iter().find(|v| v.backend == backend)
    }
}

impl Variant {
    /// e.g. `tcp_sendmsg+udp_sendmsg%return`, each attach point once.
    pub fn describe(&self) -> String {
        let mut seen: Vec<String> = Vec::new();
        for a in self.attachments {
            let s = a.attach.to_string();
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        seen.join("+")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_is_defined_once_with_backends_best_first() {
        for h in Hook::ALL {
            let defs: Vec<_> = HOOKS.iter().filter(|d| d.hook == h).collect();
            assert_eq!(defs.len(), 1, "hook {h:?}");
        }
        assert_eq!(HOOKS.len(), Hook::ALL.len());
        for d in HOOKS {
            assert!(!d.variants.is_empty(), "{:?}", d.hook);
            let order: Vec<usize> = d
                .variants
                .iter()
                .map(|v| Backend::ALL.iter().position(|b| *b == v.backend).unwrap())
                .collect();
            assert!(
                order.windows(2).all(|w| w[0] < w[1]),
                "{:?}: {order:?}",
                d.hook
            );
        }
    }

    #[test]
    fn program_kinds_match_attach_kinds() {
        for d in HOOKS {
            for v in d.variants {
                for a in v.attachments {
                    let prefix = match (v.backend, a.attach) {
                        (Backend::Tracepoint, Attach::Tracepoint { .. }) => "tp_",
                        (Backend::Kprobe, Attach::KProbe(_)) => "kprobe_",
                        (Backend::Kprobe, Attach::KRetProbe(_)) => "kretprobe_",
                        (Backend::Fentry, Attach::FEntry(_)) => "fentry_",
                        (Backend::Fentry, Attach::FExit(_)) => "fexit_",
                        other => panic!("{:?}: {other:?} mixes backends", d.hook),
                    };
                    assert!(a.program.starts_with(prefix), "{}", a.program);
                }
            }
        }
    }

    #[test]
    fn descriptions_name_each_attach_point_once() {
        let d = HOOKS
            .iter()
            .find(|d| d.hook == Hook::SendmsgReturn)
            .unwrap();
        assert_eq!(
            d.variant(Backend::Kprobe).unwrap().describe(),
            "tcp_sendmsg+udp_sendmsg+udpv6_sendmsg+tcp_sendmsg%return+udp_sendmsg%return+udpv6_sendmsg%return"
        );
        assert_eq!(
            d.variant(Backend::Tracepoint).unwrap().describe(),
            "sock:sock_send_length"
        );
    }
}
