//! The declaration of every hook (see the parent module for its grammar). Adding a hook: a
//! block here, and its handler in `sockmem-ebpf/src/hooks/`.

/// Calls `$callback! { … }` with the declaration of every hook (see the module docs).
#[macro_export]
macro_rules! hook_registry {
    ($callback:ident) => {
        $callback! {
            hooks {
                TcpSendmsg = 1 {
                    name: "tcp_sendmsg",
                    stage: Send,
                    runs: SenderPath,
                    value: Named("left"),
                    duration: Hidden,
                    skb: false,
                    shows: "`sendmsg` is about to copy data (`start`; `value` = bytes left to copy). The tracepoint fires per chunk, the others per call",
                    fentry: [
                        fentry fentry_tcp_sendmsg("tcp_sendmsg") => send::tcp_sendmsg(0, 1);
                    ],
                    kprobe: [
                        kprobe kprobe_tcp_sendmsg("tcp_sendmsg") => send::tcp_sendmsg(0, 1);
                    ],
                    tracepoint: [
                        tracepoint tp_tcp_sendmsg_locked("tcp":"tcp_sendmsg_locked" [0: "struct sock *", 1: "struct msghdr *"]) => send::tcp_sendmsg(0, 1);
                    ],
                }
                SendBlocked = 16 {
                    name: "send_blocked",
                    stage: Send,
                    runs: SenderPath,
                    value: Named("sleeps"),
                    duration: Named("took"),
                    skb: false,
                    shows: "the sending task slept inside a send system call (`write`, `writev`, `sendto`, `sendmsg`, `sendmmsg`), TCP and UDP alike: `took` = time asleep from entering the call to `sendmsg` returning, `sleeps` = how often. Reported when `sendmsg_ret` fires, so it needs that hook",
                    fentry: [],
                    kprobe: [],
                    tracepoint: [
                        tracepoint tp_sys_enter("raw_syscalls":"sys_enter" [1: "long"]) => send::syscall_enter(1);
                        tracepoint tp_sched_switch("sched":"sched_switch" [2: "struct task_struct *", 3: "unsigned int"]) => send::sched_switch(2, 3);
                    ],
                }
                SendmsgReturn = 2 {
                    name: "sendmsg_ret",
                    stage: Send,
                    runs: SenderPath,
                    value: Named("ret"),
                    duration: NamedIfNonzero("took"),
                    skb: false,
                    shows: "`sendmsg` returned (TCP and UDP): `ret`, and `took` since the start",
                    fentry: [
                        fexit fexit_tcp_sendmsg("tcp_sendmsg") => send::sendmsg_return(0, ret);
                        fexit fexit_udp_sendmsg("udp_sendmsg") => send::sendmsg_return(0, ret);
                        fexit fexit_udpv6_sendmsg(; optional "udpv6_sendmsg") => send::sendmsg_return(0, ret);
                    ],
                    kprobe: [
                        kprobe kprobe_sendmsg_enter("tcp_sendmsg", "udp_sendmsg"; optional "udpv6_sendmsg") => send::sendmsg_enter(0);
                        kretprobe kretprobe_sendmsg("tcp_sendmsg", "udp_sendmsg"; optional "udpv6_sendmsg") => send::sendmsg_return_of_thread(ret);
                    ],
                    tracepoint: [
                        tracepoint tp_sock_send_length("sock":"sock_send_length" [0: "struct sock *", 1: "int"]) => send::sendmsg_return(0, 1);
                    ],
                }
                WmemCharge = 13 {
                    name: "wmem_charge",
                    stage: Wmem,
                    runs: SenderPath,
                    value: Hidden,
                    duration: Hidden,
                    skb: true,
                    shows: "`sk_wmem_alloc` grows by the skb's truesize (`value`); counters shown after the change",
                    fentry: [
                        fentry fentry_tcp_transmit_skb("__tcp_transmit_skb") => wmem::charge(0, 1);
                        fentry fentry_skb_set_owner_w(; optional "skb_set_owner_w") => wmem::charge(1, 0);
                    ],
                    kprobe: [
                        kprobe kprobe_tcp_transmit_skb("__tcp_transmit_skb") => wmem::charge(0, 1);
                        kprobe kprobe_skb_set_owner_w(; optional "skb_set_owner_w") => wmem::charge(1, 0);
                    ],
                    tracepoint: [],
                }
                DevQueueXmit = 3 {
                    name: "dev_queue_xmit",
                    stage: Qdisc,
                    runs: SenderPath,
                    value: Hidden,
                    duration: Hidden,
                    skb: true,
                    shows: "the transport handed an skb to the device layer",
                    fentry: [
                        fentry fentry_dev_queue_xmit("__dev_queue_xmit") => qdisc::dev_queue_xmit(0);
                    ],
                    kprobe: [
                        kprobe kprobe_dev_queue_xmit("__dev_queue_xmit") => qdisc::dev_queue_xmit(0);
                    ],
                    tracepoint: [
                        tracepoint tp_net_dev_queue("net":"net_dev_queue" [0: "struct sk_buff *"]) => qdisc::dev_queue_xmit(0);
                    ],
                }
                QdiscEnqueue = 4 {
                    name: "qdisc_enqueue",
                    stage: Qdisc,
                    runs: SenderPath,
                    value: Hidden,
                    duration: Hidden,
                    skb: true,
                    shows: "the skb entered the qdisc (fexit: successful enqueues only, as the tracepoint; kprobe: every attempt, at entry)",
                    fentry: [
                        fexit fexit_dev_qdisc_enqueue("dev_qdisc_enqueue") => qdisc::enqueue_result(0, ret);
                    ],
                    kprobe: [
                        kprobe kprobe_dev_qdisc_enqueue("dev_qdisc_enqueue") => qdisc::enqueue(0);
                    ],
                    tracepoint: [
                        tracepoint tp_qdisc_enqueue("qdisc":"qdisc_enqueue" [2: "struct sk_buff *"]) => qdisc::enqueue(2);
                    ],
                }
                QdiscDequeue = 5 {
                    name: "qdisc_dequeue",
                    stage: Qdisc,
                    runs: BelowQdisc,
                    value: Hidden,
                    duration: Hidden,
                    skb: true,
                    shows: "the skb left the qdisc (fentry/kprobe also see bypassing skbs here). One dequeue can hand out a list of skbs (bulk dequeue: up to 8 without BQL, e.g. on veth with several TX queues); every skb of it is reported",
                    fentry: [
                        fentry fentry_sch_direct_xmit("sch_direct_xmit") => qdisc::dequeue_list_to_end(0);
                    ],
                    kprobe: [
                        kprobe kprobe_sch_direct_xmit("sch_direct_xmit") => qdisc::dequeue_list_to_end(0);
                    ],
                    tracepoint: [
                        // qdisc_dequeue(qdisc, txq, packets, skb): `skb` heads a list of `packets`.
                        tracepoint tp_qdisc_dequeue("qdisc":"qdisc_dequeue" [3: "struct sk_buff *"]) => qdisc::dequeue_list(3, 2);
                    ],
                }
                DriverXmit = 6 {
                    name: "driver_xmit",
                    stage: Driver,
                    runs: BelowQdisc,
                    value: Hidden,
                    duration: Hidden,
                    skb: true,
                    shows: "hand-off to the driver (fentry/kprobe: every skb of the list `dev_hard_start_xmit` gets)",
                    fentry: [
                        fentry fentry_dev_hard_start_xmit("dev_hard_start_xmit") => driver::xmit_list(0, 1);
                    ],
                    kprobe: [
                        kprobe kprobe_dev_hard_start_xmit("dev_hard_start_xmit") => driver::xmit_list(0, 1);
                    ],
                    tracepoint: [
                        tracepoint tp_net_dev_start_xmit("net":"net_dev_start_xmit" [0: "struct sk_buff *", 1: "struct net_device *"]) => driver::xmit(0, 1);
                    ],
                }
                DriverDone = 7 {
                    name: "driver_done",
                    stage: Driver,
                    runs: BelowQdisc,
                    value: Named("rc"),
                    duration: Named("in_driver"),
                    skb: true,
                    shows: "the driver returned (`rc`, time in the driver)",
                    fentry: [],
                    kprobe: [],
                    tracepoint: [
                        tracepoint tp_net_dev_xmit("net":"net_dev_xmit" [0: "struct sk_buff *", 1: "int", 2: "struct net_device *", 3: "int"]) => driver::done(0, 1, 2, 3);
                    ],
                }
                SkbReceived = 17 {
                    name: "skb_received",
                    stage: Driver,
                    runs: BelowQdisc,
                    value: Hidden,
                    duration: Named("after"),
                    skb: true,
                    shows: "a followed skb reached a receiving stack on this machine (the peer of a veth, loopback; `after`: since `dev_queue_xmit`). Its transmit side ends here: the receiving IP layer orphans it right after, and the socket gets its bytes back then, not when the receiver frees the skb",
                    fentry: [],
                    kprobe: [],
                    tracepoint: [
                        tracepoint tp_netif_receive_skb("net":"netif_receive_skb" [0: "struct sk_buff *"]) => driver::received(0);
                    ],
                }
                WmemRelease = 14 {
                    name: "wmem_release",
                    stage: Wmem,
                    runs: BelowQdisc,
                    value: Hidden,
                    duration: Hidden,
                    skb: true,
                    shows: "the skb destructor gives truesize back to `sk_wmem_alloc` (`value` < 0). `tcp_wfree` keeps 1 as a reference for TCP Small Queues when it queues the socket to send more, and drops it later from the TSQ tasklet: that drop is its own event (`value` 0, no skb, `tsq reference dropped`), so a drained socket's last event reads 0 as `ss` does",
                    fentry: [
                        fentry fentry_tcp_wfree("tcp_wfree") => wmem::tcp_wfree(0);
                        fexit fexit_tcp_wfree("tcp_wfree") => wmem::tcp_wfree_done();
                        fentry fentry_sock_wfree("sock_wfree") => wmem::release(0);
                        fentry fentry_sock_wfree_inner(; optional "__sock_wfree") => wmem::release(0);
                        fentry fentry_sk_free("sk_free") => wmem::tsq_reference_released(0);
                    ],
                    kprobe: [
                        kprobe kprobe_tcp_wfree("tcp_wfree") => wmem::tcp_wfree(0);
                        kretprobe kretprobe_tcp_wfree("tcp_wfree") => wmem::tcp_wfree_done();
                        kprobe kprobe_wfree("sock_wfree"; optional "__sock_wfree") => wmem::release(0);
                        kprobe kprobe_sk_free("sk_free") => wmem::tsq_reference_released(0);
                    ],
                    tracepoint: [],
                }
                SkbFree = 8 {
                    name: "skb_free",
                    stage: Driver,
                    runs: BelowQdisc,
                    value: Choice("charged", "orphaned"),
                    duration: Named("after"),
                    skb: true,
                    shows: "a followed skb was freed (`charged`: still counted in `sk_wmem_alloc`; `orphaned`: given back earlier)",
                    fentry: [],
                    kprobe: [],
                    tracepoint: [
                        tracepoint tp_consume_skb("skb":"consume_skb" [0: "struct sk_buff *"]) => driver::skb_free(0);
                    ],
                }
                SkbDrop = 12 {
                    name: "skb_drop",
                    stage: Driver,
                    runs: BelowQdisc,
                    value: Enum("reason", "skb_drop_reason", "SKB_DROP_REASON_"),
                    duration: Named("after"),
                    skb: true,
                    shows: "a followed skb was dropped: `reason` (the kernel's `enum skb_drop_reason`, named from BTF) and `at`, the kernel function that dropped it (on a veth, a drop in the receiver's stack shows the receiving side's function)",
                    fentry: [],
                    kprobe: [],
                    tracepoint: [
                        tracepoint tp_kfree_skb("skb":"kfree_skb" [0: "struct sk_buff *", 1: "void *", 2: "skb_drop_reason"]) => driver::skb_drop(0, 2, 1);
                    ],
                }
                SockExceedBufLimit = 18 {
                    name: "sock_exceed_buf_limit",
                    stage: Wmem,
                    runs: SenderPath,
                    value: Choice("recv", "send"),
                    duration: Hidden,
                    skb: false,
                    shows: "the protocol's memory limit (`net.ipv4.tcp_mem`, `udp_mem`; for sends also the socket's memory cgroup) refused the socket memory to send (`send`) or receive (`recv`): `allocated` = the protocol's pages in use. TCP sends wait or shrink the send buffer, receives drop",
                    fentry: [],
                    kprobe: [],
                    tracepoint: [
                        tracepoint tp_sock_exceed_buf_limit("sock":"sock_exceed_buf_limit" [0: "struct sock *", 2: "long", 3: "int"]) => wmem::exceed_buf_limit(0, 2, 3);
                    ],
                }
                TcpAck = 9 {
                    name: "tcp_ack",
                    stage: Tcp,
                    runs: SenderPath,
                    value: Hidden,
                    duration: Hidden,
                    skb: false,
                    shows: "a segment arrived on an established socket (counters *as it arrives*)",
                    fentry: [
                        fentry fentry_tcp_rcv_established("tcp_rcv_established") => tcp::ack(0);
                    ],
                    kprobe: [
                        kprobe kprobe_tcp_rcv_established("tcp_rcv_established") => tcp::ack(0);
                    ],
                    tracepoint: [
                        tracepoint tp_tcp_probe("tcp":"tcp_probe" [0: "struct sock *"]) => tcp::ack(0);
                    ],
                }
                TcpAckFreed = 15 {
                    name: "tcp_ack_freed",
                    stage: Tcp,
                    runs: SenderPath,
                    value: Hidden,
                    duration: Hidden,
                    skb: false,
                    shows: "an ACK freed write-queue skbs: `value` = change of `sk_wmem_queued`",
                    fentry: [
                        fentry fentry_tcp_ack("tcp_ack") => tcp::ack_enter(0);
                        fexit fexit_tcp_ack("tcp_ack") => tcp::ack_exit();
                    ],
                    kprobe: [
                        kprobe kprobe_tcp_ack("tcp_ack") => tcp::ack_enter(0);
                        kretprobe kretprobe_tcp_ack("tcp_ack") => tcp::ack_exit();
                    ],
                    tracepoint: [],
                }
                TcpRetransmit = 10 {
                    name: "tcp_retransmit",
                    stage: Tcp,
                    runs: SenderPath,
                    value: Hidden,
                    duration: Hidden,
                    skb: true,
                    shows: "an skb was retransmitted",
                    fentry: [
                        fentry fentry_tcp_retransmit_skb("__tcp_retransmit_skb") => tcp::retransmit(0, 1);
                    ],
                    kprobe: [
                        kprobe kprobe_tcp_retransmit_skb("__tcp_retransmit_skb") => tcp::retransmit(0, 1);
                    ],
                    tracepoint: [
                        tracepoint tp_tcp_retransmit_skb("tcp":"tcp_retransmit_skb" [0: "struct sock *", 1: "struct sk_buff *"]) => tcp::retransmit(0, 1);
                    ],
                }
                SockDestroy = 11 {
                    name: "sock_destroy",
                    stage: Tcp,
                    runs: SenderPath,
                    value: Hidden,
                    duration: Hidden,
                    skb: false,
                    shows: "the socket is destroyed",
                    fentry: [
                        fentry fentry_tcp_v4_destroy_sock("tcp_v4_destroy_sock") => tcp::destroy(0);
                    ],
                    kprobe: [
                        kprobe kprobe_tcp_v4_destroy_sock("tcp_v4_destroy_sock") => tcp::destroy(0);
                    ],
                    tracepoint: [
                        tracepoint tp_tcp_destroy_sock("tcp":"tcp_destroy_sock" [0: "struct sock *"]) => tcp::destroy(0);
                    ],
                }
            }
            // Not hooks: programs that keep state the hooks read (whether this CPU runs a
            // softirq, where the current task is not the sender). Tracepoints every kernel has.
            context [
                tracepoint tp_softirq_entry("irq":"softirq_entry" []) => sender::softirq_entry();
                tracepoint tp_softirq_exit("irq":"softirq_exit" []) => sender::softirq_exit();
            ]
        }
    };
}
