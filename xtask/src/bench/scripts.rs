//! The bpftrace programs the bench holds sockmem against, written for the perf-event
//! tracepoints bpftrace attaches (`tracepoint:cat:name`, fields as in
//! `/sys/kernel/tracing/events/cat/name/format`). bpftrace before 0.20 spells a tracepoint
//! field `args->field`, later ones `args.field`.

use std::fmt::Write as _;

/// Where a tracepoint's socket comes from.
#[derive(Clone, Copy)]
enum Sk {
    /// No socket in the perf tracepoint's fields (`tcp_sendmsg_locked` has only the skb being
    /// filled, whose `sk` is not set yet): the thread id stands in.
    None,
    /// A field holding the `struct sock *`.
    Field(&'static str),
    /// The `sk` of the `struct sk_buff *` in `skbaddr`.
    Skb,
}

/// One of sockmem's hooks as bpftrace sees it.
pub struct Hook {
    hook: &'static str,
    pub tracepoint: &'static str,
    sk: Sk,
}

/// sockmem's hooks that have a tracepoint (send_blocked left out: neither script times sleeps).
pub const HOOKS: &[Hook] = &[
    Hook {
        hook: "tcp_sendmsg",
        tracepoint: "tcp:tcp_sendmsg_locked",
        sk: Sk::None,
    },
    Hook {
        hook: "sendmsg_ret",
        tracepoint: "sock:sock_send_length",
        sk: Sk::Field("sk"),
    },
    Hook {
        hook: "dev_queue_xmit",
        tracepoint: "net:net_dev_queue",
        sk: Sk::Skb,
    },
    Hook {
        hook: "qdisc_enqueue",
        tracepoint: "qdisc:qdisc_enqueue",
        sk: Sk::Skb,
    },
    Hook {
        hook: "qdisc_dequeue",
        tracepoint: "qdisc:qdisc_dequeue",
        sk: Sk::Skb,
    },
    Hook {
        hook: "driver_xmit",
        tracepoint: "net:net_dev_start_xmit",
        sk: Sk::Skb,
    },
    Hook {
        hook: "driver_done",
        tracepoint: "net:net_dev_xmit",
        sk: Sk::Skb,
    },
    Hook {
        hook: "skb_free",
        tracepoint: "skb:consume_skb",
        sk: Sk::Skb,
    },
    Hook {
        hook: "skb_drop",
        tracepoint: "skb:kfree_skb",
        sk: Sk::Skb,
    },
    Hook {
        hook: "tcp_ack",
        tracepoint: "tcp:tcp_probe",
        sk: Sk::Field("skaddr"),
    },
    Hook {
        hook: "tcp_retransmit",
        tracepoint: "tcp:tcp_retransmit_skb",
        sk: Sk::Field("skaddr"),
    },
    Hook {
        hook: "sock_destroy",
        tracepoint: "tcp:tcp_destroy_sock",
        sk: Sk::Field("skaddr"),
    },
];

/// A generated program and how many tracepoints it attaches (for the ready check).
#[derive(Debug)]
pub struct Script {
    pub text: String,
    pub probes: usize,
    /// Tracepoints left out because this kernel does not have them.
    pub missing: Vec<String>,
}

/// How the program reaches a tracepoint's fields.
pub fn args_accessor(version: (u32, u32)) -> &'static str {
    if version >= (0, 20) {
        "args."
    } else {
        "args->"
    }
}

/// Empty programs on the given tracepoints: the cost of being attached at all.
pub fn floor(tracepoints: &[String], exists: impl Fn(&str) -> bool) -> Script {
    let mut s = Script {
        text: String::from("// sockmem's tracepoints with empty programs (bench floor)\n"),
        probes: 0,
        missing: Vec::new(),
    };
    for tp in tracepoints {
        if exists(tp) {
            s.probes += 1;
            let _ = writeln!(s.text, "tracepoint:{tp} {{ }}");
        } else {
            s.missing.push(tp.clone());
        }
    }
    s
}

/// Which of the two equivalents to write.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Histograms in maps, printed at exit: sendmsg time, qdisc sojourn, driver time, below TCP,
    /// and both counters sampled at every event.
    Hist,
    /// One `printf` line per event with the counters, as `sockmem trace` prints.
    Printf,
}

/// sockmem's hist or trace written in bpftrace for the sockets with `port` at either end.
pub fn equivalent(kind: Kind, args: &str, port: u16, exists: impl Fn(&str) -> bool) -> Script {
    let mut s = Script {
        text: format!(
            "// sockmem {} written in bpftrace (bench): sockets with port {port} at either end\n",
            if kind == Kind::Hist { "hist" } else { "trace" }
        ),
        probes: 0,
        missing: Vec::new(),
    };
    for h in HOOKS {
        if !exists(h.tracepoint) {
            s.missing.push(h.tracepoint.to_string());
            continue;
        }
        s.probes += 1;
        let _ = writeln!(s.text, "tracepoint:{}\n{{", h.tracepoint);
        s.text.push_str(&body(kind, h, args, port));
        s.text.push_str("}\n");
    }
    // Only the results are printed at exit, not the bookkeeping maps.
    s.text.push_str("END\n{\n");
    for m in ["@start", "@sender", "@below", "@enq", "@drv", "@follow"] {
        if s.text.contains(&format!("{m}[")) {
            let _ = writeln!(s.text, "  clear({m});");
        }
    }
    s.text.push_str("}\n");
    s
}

fn body(kind: Kind, h: &Hook, a: &str, port: u16) -> String {
    let mut b = String::new();
    let skb = format!("{a}skbaddr");
    // The port as `skc_dport` holds it (network byte order) read as a little-endian u16.
    let filter = format!(
        "$sk != 0 && ($sk->__sk_common.skc_num == {port} || $sk->__sk_common.skc_dport == {})",
        port.swap_bytes()
    );
    match h.sk {
        Sk::None => {}
        Sk::Field(f) => {
            let _ = writeln!(b, "  $sk = (struct sock *){a}{f};");
        }
        Sk::Skb => {
            let _ = writeln!(b, "  $sk = (struct sock *)((struct sk_buff *){skb})->sk;");
        }
    }
    // Unfiltered bookkeeping: matching an end to a start recorded for a traced socket.
    match (h.hook, kind) {
        ("tcp_sendmsg", Kind::Hist) => {
            b.push_str("  if (@start[tid] == 0) { @start[tid] = nsecs; }\n");
            return b;
        }
        ("tcp_sendmsg", Kind::Printf) => {
            // No socket here: threads that sent on a traced socket before.
            b.push_str("  if (@start[tid] == 0) { @start[tid] = nsecs; }\n");
            let _ = writeln!(
                b,
                "  if (@sender[tid]) {{\n    @events = count();\n    printf(\"%lu %u %u %s \
                 tcp_sendmsg 0 - - - - left=%d\\n\", nsecs, cpu, pid, comm, {a}msg_left);\n  }}"
            );
            return b;
        }
        ("sendmsg_ret", _) => b.push_str("  $t = @start[tid];\n  delete(@start[tid]);\n"),
        ("qdisc_dequeue", Kind::Hist) => {
            let _ = writeln!(
                b,
                "  $t = @enq[{skb}];\n  if ($t) {{ delete(@enq[{skb}]); }}"
            );
        }
        ("driver_done", Kind::Printf) => {
            let _ = writeln!(
                b,
                "  $t = @drv[{skb}];\n  if ($t) {{ delete(@drv[{skb}]); }}"
            );
        }
        ("skb_free" | "skb_drop", Kind::Hist) => {
            let _ = writeln!(
                b,
                "  $d = @drv[{skb}];\n  if ($d) {{ @driver_time = hist(nsecs - $d); \
                 delete(@drv[{skb}]); }}\n  $q = @below[{skb}];\n  if ($q) {{ @below_tcp = \
                 hist(nsecs - $q); delete(@below[{skb}]); }}"
            );
        }
        ("skb_free" | "skb_drop", Kind::Printf) => {
            // Like sockmem: only skbs followed from dev_queue_xmit, even once orphaned.
            let _ = writeln!(
                b,
                "  if (@follow[{skb}]) {{\n    delete(@follow[{skb}]);\n    delete(@drv[{skb}]);\n    \
                 @events = count();\n    printf(\"%lu %u %u %s {} %lx %d %d %d %u\\n\", nsecs, \
                 cpu, pid, comm, $sk, $sk->sk_wmem_queued, $sk->sk_wmem_alloc.refs.counter, \
                 $sk->sk_sndbuf, ((struct sk_buff *){skb})->len);\n  }}",
                h.hook
            );
            return b;
        }
        _ => {}
    }
    let _ = writeln!(b, "  if ({filter}) {{");
    match kind {
        Kind::Hist => {
            match h.hook {
                "sendmsg_ret" => b.push_str("    if ($t) { @sendmsg_time = hist(nsecs - $t); }\n"),
                "dev_queue_xmit" => {
                    let _ = writeln!(b, "    @below[{skb}] = nsecs;");
                }
                "qdisc_enqueue" => {
                    let _ = writeln!(b, "    @enq[{skb}] = nsecs;");
                }
                "qdisc_dequeue" => {
                    b.push_str("    if ($t) { @qdisc_sojourn = hist(nsecs - $t); }\n")
                }
                "driver_xmit" => {
                    let _ = writeln!(b, "    @drv[{skb}] = nsecs;");
                }
                _ => {}
            }
            b.push_str(
                "    @wmem_queued = hist($sk->sk_wmem_queued);\n    @wmem_alloc = \
                 hist($sk->sk_wmem_alloc.refs.counter);\n",
            );
        }
        Kind::Printf => {
            let (extra_fmt, extra_args) = match h.hook {
                "sendmsg_ret" => {
                    b.push_str("    @sender[tid] = 1;\n");
                    (" ret=%d took=%lu", format!(", {a}ret, $t ? nsecs - $t : 0"))
                }
                "dev_queue_xmit" => {
                    let _ = writeln!(b, "    @follow[{skb}] = 1;");
                    ("", String::new())
                }
                "driver_xmit" => {
                    let _ = writeln!(b, "    @drv[{skb}] = nsecs;");
                    ("", String::new())
                }
                "driver_done" => (
                    " rc=%d in_driver=%lu",
                    format!(", {a}rc, $t ? nsecs - $t : 0"),
                ),
                _ => ("", String::new()),
            };
            let len = match h.sk {
                Sk::Skb => format!("((struct sk_buff *){skb})->len"),
                _ => "0".into(),
            };
            let _ = writeln!(
                b,
                "    @events = count();\n    printf(\"%lu %u %u %s {} %lx %d %d %d %u{extra_fmt}\\n\", \
                 nsecs, cpu, pid, comm, $sk, $sk->sk_wmem_queued, \
                 $sk->sk_wmem_alloc.refs.counter, $sk->sk_sndbuf, {len}{extra_args});",
                h.hook
            );
        }
    }
    b.push_str("  }\n");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessor_by_version() {
        assert_eq!(args_accessor((0, 17)), "args->");
        assert_eq!(args_accessor((0, 20)), "args.");
        assert_eq!(args_accessor((1, 0)), "args.");
    }

    #[test]
    fn floor_skips_missing_tracepoints() {
        let tps = vec!["net:net_dev_queue".to_string(), "tcp:nope".to_string()];
        let s = floor(&tps, |tp| tp != "tcp:nope");
        assert_eq!(s.probes, 1);
        assert_eq!(s.missing, ["tcp:nope"]);
        assert!(
            s.text.contains("tracepoint:net:net_dev_queue { }\n"),
            "{}",
            s.text
        );
    }

    #[test]
    fn equivalents_cover_every_hook_with_balanced_braces() {
        for kind in [Kind::Hist, Kind::Printf] {
            let s = equivalent(kind, "args->", 5201, |_| true);
            assert_eq!(s.probes, HOOKS.len());
            let open = s.text.matches('{').count();
            assert_eq!(open, s.text.matches('}').count(), "{}", s.text);
            // 5201 = 0x1451; skc_dport holds 0x5114 read on a little-endian machine.
            assert!(s.text.contains("skc_dport == 20756"), "{}", s.text);
            assert!(!s.text.contains("args."), "{}", s.text);
        }
        let hist = equivalent(Kind::Hist, "args.", 5201, |tp| {
            tp != "tcp:tcp_sendmsg_locked"
        });
        assert_eq!(hist.missing, ["tcp:tcp_sendmsg_locked"]);
        for map in [
            "@sendmsg_time",
            "@qdisc_sojourn",
            "@driver_time",
            "@wmem_queued",
            "@wmem_alloc",
        ] {
            assert!(
                hist.text.contains(&format!("{map} = hist(")),
                "{map}: {}",
                hist.text
            );
        }
        let printf = equivalent(Kind::Printf, "args.", 5201, |_| true);
        assert_eq!(printf.text.matches("printf(").count(), HOOKS.len());
        assert!(printf.text.contains("args.skbaddr"));
    }
}
