//! The set of hooks and how each one attaches.
//!
//! Every hook is a [`HookPoint`]: which eBPF program implements it and which kernel attach point
//! it needs. The event path does not know how a hook was attached, so more attach mechanisms
//! (kprobe, fentry) are new rows here, not changes elsewhere.

use std::fmt;

use anyhow::{anyhow, Context as _};
use aya::{
    programs::{ProgramError, RawTracePoint},
    Ebpf,
};
use sockmem_common::Hook;

use crate::btf::Btf;

/// How a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A raw tracepoint: arguments are the tracepoint's `TP_PROTO`.
    Tracepoint,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Tracepoint => "tracepoint",
        })
    }
}

/// One way to observe one hook.
pub struct HookPoint {
    pub hook: Hook,
    pub backend: Backend,
    /// Name of the eBPF program in the object.
    pub program: &'static str,
    /// Tracepoint category and name.
    pub category: &'static str,
    pub name: &'static str,
    /// Argument positions the program relies on, with a substring of the expected C type.
    pub args: &'static [(usize, &'static str)],
}

impl HookPoint {
    pub fn attach_point(&self) -> String {
        format!("{}:{}", self.category, self.name)
    }
}

const SK: &str = "struct sock *";
const SKB: &str = "struct sk_buff *";
const DEV: &str = "struct net_device *";

#[rustfmt::skip]
pub const HOOK_POINTS: &[HookPoint] = &[
    tp(Hook::TcpSendmsg, "tp_tcp_sendmsg_locked", "tcp", "tcp_sendmsg_locked", &[(0, SK), (3, "int")]),
    tp(Hook::SendmsgReturn, "tp_sock_send_length", "sock", "sock_send_length", &[(0, SK), (1, "int")]),
    tp(Hook::DevQueueXmit, "tp_net_dev_queue", "net", "net_dev_queue", &[(0, SKB)]),
    tp(Hook::QdiscEnqueue, "tp_qdisc_enqueue", "qdisc", "qdisc_enqueue", &[(2, SKB)]),
    tp(Hook::QdiscDequeue, "tp_qdisc_dequeue", "qdisc", "qdisc_dequeue", &[(3, SKB)]),
    tp(Hook::DriverXmit, "tp_net_dev_start_xmit", "net", "net_dev_start_xmit", &[(0, SKB), (1, DEV)]),
    tp(Hook::DriverDone, "tp_net_dev_xmit", "net", "net_dev_xmit", &[(0, SKB), (1, "int"), (2, DEV), (3, "int")]),
    tp(Hook::SkbFree, "tp_consume_skb", "skb", "consume_skb", &[(0, SKB)]),
    tp(Hook::SkbDrop, "tp_kfree_skb", "skb", "kfree_skb", &[(0, SKB), (2, "skb_drop_reason")]),
    tp(Hook::TcpAck, "tp_tcp_probe", "tcp", "tcp_probe", &[(0, SK)]),
    tp(Hook::TcpRetransmit, "tp_tcp_retransmit_skb", "tcp", "tcp_retransmit_skb", &[(0, SK), (1, SKB)]),
    tp(Hook::SockDestroy, "tp_tcp_destroy_sock", "tcp", "tcp_destroy_sock", &[(0, SK)]),
];

const fn tp(
    hook: Hook,
    program: &'static str,
    category: &'static str,
    name: &'static str,
    args: &'static [(usize, &'static str)],
) -> HookPoint {
    HookPoint {
        hook,
        backend: Backend::Tracepoint,
        program,
        category,
        name,
        args,
    }
}

/// What happened to one hook at start-up.
pub enum HookStatus {
    Attached,
    /// The kernel cannot provide this hook; the reason says what was tried.
    Unavailable(String),
}

pub struct HookReport {
    pub point: &'static HookPoint,
    pub status: HookStatus,
}

/// Why this kernel cannot give us `point`, or `None` if it can (judged from BTF, no syscalls).
pub fn unavailable_reason(btf: &Btf, point: &HookPoint) -> Option<String> {
    let params = match btf.tracepoint_params(point.name) {
        Ok(p) => p,
        Err(_) => {
            return Some(format!(
                "tracepoint `{}` does not exist in this kernel (tried: raw tracepoint)",
                point.attach_point()
            ))
        }
    };
    for &(index, want) in point.args {
        let have = params.get(index).map(|(_, ty)| ty.as_str());
        if !have.is_some_and(|ty| ty.contains(want)) {
            return Some(format!(
                "tracepoint `{}` argument {index} is `{}` in this kernel, sockmem expects `{want}`",
                point.attach_point(),
                have.unwrap_or("missing"),
            ));
        }
    }
    None
}

/// Loads and attaches every hook the kernel offers. A hook the kernel lacks is reported, not
/// fatal; a program the verifier rejects is fatal (that is a sockmem bug, shown with the log).
pub fn attach_all(ebpf: &mut Ebpf, btf: &Btf) -> anyhow::Result<Vec<HookReport>> {
    let mut reports = Vec::new();
    for point in HOOK_POINTS {
        let status = match unavailable_reason(btf, point) {
            Some(why) => HookStatus::Unavailable(why),
            None => {
                attach(ebpf, point).with_context(|| {
                    format!(
                        "attaching hook `{}` to {} `{}`",
                        point.hook.name(),
                        point.backend,
                        point.attach_point()
                    )
                })?;
                HookStatus::Attached
            }
        };
        reports.push(HookReport { point, status });
    }
    if !reports
        .iter()
        .any(|r| matches!(r.status, HookStatus::Attached))
    {
        return Err(anyhow!("none of sockmem's hooks exist in this kernel"));
    }
    Ok(reports)
}

fn attach(ebpf: &mut Ebpf, point: &HookPoint) -> anyhow::Result<()> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(point.program)
        .ok_or_else(|| anyhow!("program `{}` missing from the eBPF object", point.program))?
        .try_into()?;
    program.load().map_err(verifier_error)?;
    program.attach(point.name)?;
    Ok(())
}

/// Keeps the tail of the verifier log (the part that says what failed) in the error text.
fn verifier_error(err: ProgramError) -> anyhow::Error {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            anyhow!(
                "the kernel's verifier rejected the program ({io_error}); end of its log:\n{tail}"
            )
        }
        other => other.into(),
    }
}
