//! Hook-independent handlers: every entry point in `main.rs` is a one-line call into these.
//!
//! The path is always: identify the socket → resolve the sender → filter → write the event in
//! place in the ring buffer. Nothing is reserved before the filters pass.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
    },
};
use sockmem_common::{
    config::MODE_HIST,
    event::{
        FLAG_HAS_SKB, FLAG_OWNER_FROM_SEND, FLAG_OWNER_UNKNOWN, FLAG_SEND_START, FLAG_TSQ_REFERENCE,
    },
    hist::{counter, slot, Per},
    inflight::{SendStart, SkbTrack},
    HistKey, HistKind, Hook, SockEvent,
};

use crate::{
    filter,
    kernel::{self, SendMemory, SocketId},
    Owner, ACK_STASH, COUNTERS, EVENTS, HISTS, IN_SOFTIRQ, IN_TCP_WFREE, LOST, OWNERS, SCRATCH,
    SCRATCH_DEPTH, SENDS, SKBS, WAITS, ZERO_HIST,
};

#[inline(always)]
fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// The process an event is attributed to.
#[repr(C)]
pub struct Sender {
    tgid: u32,
    pid: u32,
    comm: [u8; 16],
    from_send: bool,
    iface_seen: bool,
    /// In softirq with no `sendmsg` seen: the current task is not the sender.
    unknown: bool,
}

#[inline(always)]
fn current_task(s: &mut Sender) {
    let pid_tgid = bpf_get_current_pid_tgid();
    s.tgid = (pid_tgid >> 32) as u32;
    s.pid = pid_tgid as u32;
    s.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    s.from_send = false;
    s.iface_seen = false;
    s.unknown = false;
}

/// In `sendmsg` (process context) the current task is the sender: remember it for the skb events
/// that fire later in softirq, where "current" is whoever happened to be running.
#[inline(always)]
fn record_sender(sk: u64, s: &mut Sender) {
    current_task(s);
    s.from_send = true;
    let mut iface_seen = 0;
    if let Some(prev) = unsafe { OWNERS.get(sk) } {
        iface_seen = prev.iface_seen;
    }
    s.iface_seen = iface_seen != 0;
    let owner = Owner {
        tgid: s.tgid,
        pid: s.pid,
        comm: s.comm,
        iface_seen,
        _pad: 0,
    };
    let _ = OWNERS.insert(sk, owner, BPF_ANY as u64);
}

#[inline(always)]
fn sender_of(sk: u64, hook: u8, s: &mut Sender) {
    match unsafe { OWNERS.get(sk) } {
        Some(o) => {
            s.tgid = o.tgid;
            s.pid = o.pid;
            s.comm = o.comm;
            s.from_send = true;
            s.iface_seen = o.iface_seen != 0;
            s.unknown = false;
        }
        // Above the qdisc, in process context, the current task is the socket's user. In
        // softirq it is whoever was interrupted, and below the qdisc whoever ran the qdisc
        // (often another socket's sender): name nobody rather than the wrong process.
        None if in_softirq() || below_qdisc(hook) => {
            s.tgid = 0;
            s.pid = 0;
            s.comm = [0; 16];
            s.from_send = false;
            s.iface_seen = false;
            s.unknown = true;
        }
        None => current_task(s),
    }
}

/// Hooks that run wherever the device queue is serviced (any socket's sender may be the
/// current task), not in the path of the socket's own transmit.
#[inline(always)]
fn below_qdisc(hook: u8) -> bool {
    hook == Hook::QdiscDequeue as u8
        || hook == Hook::DriverXmit as u8
        || hook == Hook::DriverDone as u8
        || hook == Hook::WmemRelease as u8
        || hook == Hook::SkbFree as u8
        || hook == Hook::SkbDrop as u8
}

/// Whether this CPU is running a softirq (tracked by the `irq:softirq_*` programs).
#[inline(always)]
fn in_softirq() -> bool {
    matches!(IN_SOFTIRQ.get(0), Some(&n) if n != 0)
}

/// `irq:softirq_entry` / `softirq_exit`. Softirqs do not nest on one CPU, so a flag suffices.
#[inline(always)]
pub fn softirq(entering: bool) {
    if let Some(f) = IN_SOFTIRQ.get_ptr_mut(0) {
        unsafe { *f = u32::from(entering) };
    }
}

#[inline(always)]
fn mark_iface_seen(sk: u64) {
    if let Some(o) = OWNERS.get_ptr_mut(sk) {
        unsafe { (*o).iface_seen = 1 };
    }
}

/// The skb part of an event.
#[repr(C)]
pub struct SkbView {
    skb: u64,
    len: u32,
    truesize: u32,
    ifindex: u32,
    ifname: [u8; 16],
}

/// What one hook observed, built in place in a per-CPU scratch slot (the BPF stack cannot hold
/// it next to the rest of the path).
#[repr(C)]
pub struct Observed {
    hook: u8,
    has_skb: bool,
    sk: u64,
    id: SocketId,
    sender: Sender,
    skb: SkbView,
    /// The histogram key being updated (`hist`).
    key: HistKey,
}

/// A scratch slot for one handler; slots stack per CPU, because a program can be interrupted
/// by a softirq that runs another one.
struct Scratch(*mut Observed);

impl Scratch {
    #[inline(always)]
    fn take() -> Option<Scratch> {
        let depth = SCRATCH_DEPTH.get_ptr_mut(0)?;
        let d = unsafe { *depth };
        let slot = SCRATCH.get_ptr_mut(d)?;
        unsafe { *depth = d + 1 };
        Some(Scratch(slot))
    }

    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    fn get(&self) -> &mut Observed {
        // SAFETY: a map value of this CPU, owned by this handler until `drop`.
        unsafe { &mut *self.0 }
    }
}

impl Drop for Scratch {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(depth) = SCRATCH_DEPTH.get_ptr_mut(0) {
            unsafe { *depth = (*depth).saturating_sub(1) };
        }
    }
}

/// A latency for a histogram: `(HistKind as u8, ns)`; kind 0 = none.
pub type Sample = (u8, u64);

/// The hook-specific part of an event.
#[derive(Clone, Copy)]
pub struct Extra {
    pub value: i64,
    pub duration_ns: u64,
    pub flags: u8,
    /// Added to the `sk_wmem_alloc` read, for hooks that run just before the change they report.
    pub alloc_adjust: i32,
    /// Latencies this event completes (histogram mode).
    pub samples: [Sample; 2],
}

impl Extra {
    #[inline(always)]
    pub const fn value(value: i64) -> Extra {
        Extra {
            value,
            duration_ns: 0,
            flags: 0,
            alloc_adjust: 0,
            samples: [(0, 0); 2],
        }
    }

    #[inline(always)]
    pub const fn timed(value: i64, duration_ns: u64) -> Extra {
        Extra {
            value,
            duration_ns,
            flags: 0,
            alloc_adjust: 0,
            samples: [(0, 0); 2],
        }
    }

    #[inline(always)]
    pub const fn with_sample(mut self, kind: HistKind, ns: u64) -> Extra {
        if self.samples[0].0 == 0 {
            self.samples[0] = (kind as u8, ns);
        } else {
            self.samples[1] = (kind as u8, ns);
        }
        self
    }
}

/// Fills the scratch record's histogram key for this event, as `--per` asks.
#[inline(always)]
fn hist_key(ob: &mut Observed) -> *mut HistKey {
    let (sk, id, sender) = (ob.sk, &ob.id, &ob.sender);
    let key: *mut HistKey = &mut ob.key;
    let per = unsafe { core::ptr::read_volatile(&kernel::config().per) };
    unsafe {
        (*key).kind = 0;
        (*key).protocol = 0;
        (*key).family = 0;
        (*key).lport = 0;
        (*key).rport = 0;
        (*key).id = 0;
        (*key).laddr = [0; 16];
        (*key).raddr = [0; 16];
        (*key).name = [0; 16];
        if per == Per::Socket as u32 {
            (*key).protocol = id.protocol;
            (*key).family = id.family;
            (*key).lport = id.lport;
            (*key).rport = id.rport;
            (*key).id = sk;
            (*key).laddr = id.laddr;
            (*key).raddr = id.raddr;
        } else if per == Per::Pid as u32 {
            (*key).id = sender.tgid as u64;
            (*key).name = sender.comm;
        } else if per == Per::Iface as u32 && ob.has_skb {
            (*key).name = ob.skb.ifname;
        }
    }
    key
}

/// Adds `value` to the histogram `kind` of `key`, creating it from a zeroed per-CPU template
/// (a 544-byte value cannot be built on the BPF stack either).
#[inline(always)]
fn record(kind: u8, key: *mut HistKey, value: u64) {
    // SAFETY: `key` points into this handler's own scratch slot.
    let key = unsafe {
        (*key).kind = kind;
        &*key
    };
    let hist = match HISTS.get_ptr_mut(key) {
        Some(h) => h,
        None => {
            let Some(zero) = ZERO_HIST.get_ptr(0) else {
                return;
            };
            // By reference: a copy of the 544-byte value would not fit on the BPF stack.
            #[allow(clippy::needless_borrows_for_generic_args)]
            let _ = HISTS.insert(key, unsafe { &*zero }, 0);
            match HISTS.get_ptr_mut(key) {
                Some(h) => h,
                None => {
                    count(counter::HIST_FULL);
                    return;
                }
            }
        }
    };
    unsafe {
        if let Some(c) = (*hist).slots.get_mut(slot(value)) {
            *c += 1;
        }
        (*hist).count += 1;
        (*hist).sum += value;
        if value > (*hist).max {
            (*hist).max = value;
        }
    }
}

/// Histogram mode: the event becomes samples of the value histograms and of the latencies it
/// completes. Not inlined: a BPF function of its own keeps its stack apart from the event path's.
#[inline(never)]
fn aggregate(ob: &mut Observed, x: &Extra) {
    let mem = kernel::send_memory(ob.sk);
    let key = hist_key(ob);
    record(
        HistKind::WmemQueued as u8,
        key,
        mem.wmem_queued.max(0) as u64,
    );
    let alloc = (mem.wmem_alloc + x.alloc_adjust).max(0) as u64;
    record(HistKind::WmemAlloc as u8, key, alloc);
    let mut i = 0;
    while i < 2 {
        let (kind, ns) = x.samples[i];
        if kind != 0 {
            record(kind, key, ns);
        }
        i += 1;
    }
}

/// Reserves, fills in place and submits one event (or, for `hist`, aggregates it); counts a
/// failed reserve as lost. Not inlined: its own BPF frame keeps each program's stack in bounds.
#[inline(never)]
fn emit(ob: &mut Observed, x: &Extra) {
    if unsafe { core::ptr::read_volatile(&kernel::config().mode) } == MODE_HIST {
        aggregate(ob, x);
        return;
    }
    let (sk, id, sender) = (ob.sk, &ob.id, &ob.sender);
    let Some(mut entry) = EVENTS.reserve::<SockEvent>(0) else {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            unsafe { *lost += 1 };
        }
        return;
    };
    let mem: SendMemory = kernel::send_memory(sk);
    let mut flags = x.flags;
    if sender.from_send {
        flags |= FLAG_OWNER_FROM_SEND;
    }
    if sender.unknown {
        flags |= FLAG_OWNER_UNKNOWN;
    }
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points at a reserved ring-buffer slot of the right size and alignment; every
    // field is written before submit.
    unsafe {
        (*e).ts_ns = bpf_ktime_get_ns();
        (*e).sk = sk;
        (*e).value = x.value;
        (*e).duration_ns = x.duration_ns;
        (*e).tgid = sender.tgid;
        (*e).pid = sender.pid;
        (*e).cpu = bpf_get_smp_processor_id();
        (*e).wmem_queued = mem.wmem_queued;
        (*e).wmem_alloc = mem.wmem_alloc + x.alloc_adjust;
        (*e).sndbuf = mem.sndbuf;
        (*e).lport = id.lport;
        (*e).rport = id.rport;
        (*e).family = id.family;
        (*e).protocol = id.protocol;
        (*e).hook = ob.hook;
        (*e)._pad = [0; 3];
        (*e).comm = sender.comm;
        (*e).laddr = id.laddr;
        (*e).raddr = id.raddr;
        if ob.has_skb {
            let s = &ob.skb;
            (*e).skb = s.skb;
            (*e).skb_len = s.len;
            (*e).skb_truesize = s.truesize;
            (*e).ifindex = s.ifindex;
            (*e).ifname = s.ifname;
            flags |= FLAG_HAS_SKB;
        } else {
            (*e).skb = 0;
            (*e).skb_len = 0;
            (*e).skb_truesize = 0;
            (*e).ifindex = 0;
            (*e).ifname = [0; 16];
        }
        (*e).flags = flags;
    }
    entry.submit(0);
}

/// Identifies a socket and its sender into `ob` and applies every filter but the interface's;
/// false if filtered out. `in_send` is true in the sender's `sendmsg` context (the sender is then
/// recorded).
#[inline(always)]
fn admit(ob: &mut Observed, sk: u64, in_send: bool) -> bool {
    ob.sk = sk;
    ob.has_skb = false;
    if !kernel::socket_id(sk, &mut ob.id) || !filter::socket_passes(&ob.id) {
        return false;
    }
    if in_send {
        record_sender(sk, &mut ob.sender);
    } else {
        sender_of(sk, ob.hook, &mut ob.sender);
    }
    filter::sender_passes(ob.sender.tgid, &ob.sender.comm)
}

/// Whether the filters keep a socket (recording its sender when `in_send`).
#[inline(always)]
fn socket_kept(sk: u64, in_send: bool) -> bool {
    if !kernel::ready() {
        return false;
    }
    let Some(scratch) = Scratch::take() else {
        return false;
    };
    let ob = scratch.get();
    ob.hook = 0;
    admit(ob, sk, in_send) && (!filter::has_iface_filter() || ob.sender.iface_seen)
}

/// A socket-level event (no skb); false if filtered out.
#[inline(always)]
pub fn socket_event(hook: Hook, sk: u64, in_send: bool, x: Extra) -> bool {
    if !kernel::ready() {
        return false;
    }
    let Some(scratch) = Scratch::take() else {
        return false;
    };
    let ob = scratch.get();
    ob.hook = hook as u8;
    if !admit(ob, sk, in_send) {
        return false;
    }
    // A socket event has no interface: with an interface filter, keep the sockets that have sent
    // through that interface.
    if filter::has_iface_filter() && !ob.sender.iface_seen {
        return false;
    }
    emit(ob, &x);
    true
}

/// Where an skb event's interface comes from.
pub enum Dev {
    /// Read `skb->dev`.
    FromSkb,
    /// The hook passes the device.
    Given(u64),
    /// The skb is not on a device yet (e.g. a write-queue skb).
    None,
}

/// An skb-level event; false if filtered out. `sk` is the owning socket; `read_skb` is false
/// when the skb may already be gone (its length then comes from `len`).
#[inline(always)]
fn skb_event(hook: Hook, skb: u64, sk: u64, dev: Dev, read_skb: bool, len: u32, x: Extra) -> bool {
    let Some(scratch) = Scratch::take() else {
        return false;
    };
    let ob = scratch.get();
    ob.hook = hook as u8;
    if !admit(ob, sk, false) {
        return false;
    }
    let dev = match dev {
        Dev::FromSkb => kernel::skb_dev(skb),
        Dev::Given(d) => d,
        Dev::None => 0,
    };
    let v = &mut ob.skb;
    kernel::device(dev, &mut v.ifindex, &mut v.ifname);
    if !filter::iface_passes(&v.ifname) {
        return false;
    }
    if filter::has_iface_filter() {
        mark_iface_seen(sk);
    }
    v.skb = skb;
    if read_skb {
        let (l, t) = kernel::skb_sizes(skb);
        v.len = l;
        v.truesize = t;
    } else {
        v.len = len;
        v.truesize = 0;
    }
    ob.has_skb = true;
    emit(ob, &x);
    true
}

// ---- per-hook logic shared by every attach mechanism ----

#[inline(always)]
pub fn tcp_sendmsg(sk: u64, msg: u64) {
    let starting = !send_ongoing(sk);
    let mut x = Extra::value(kernel::msg_left(msg));
    if starting {
        x.flags = FLAG_SEND_START;
    }
    if socket_event(Hook::TcpSendmsg, sk, true, x) && starting {
        send_started(sk);
    }
}

/// Whether this thread is already inside a `sendmsg` on `sk` (a later chunk of the same call).
#[inline(always)]
fn send_ongoing(sk: u64) -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    matches!(unsafe { SENDS.get(tid) }, Some(s) if s.sk == sk)
}

/// Remembers when this thread's `sendmsg` on `sk` started (only for sockets the filters keep).
#[inline(always)]
fn send_started(sk: u64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let start = SendStart { sk, ts_ns: now() };
    if SENDS.insert(tid, start, BPF_ANY as u64).is_ok() {
        count(counter::SEND_STARTED);
    }
}

/// Entry of any `*_sendmsg` (kprobe backend): only remembers the start for the return probe.
#[inline(always)]
pub fn sendmsg_enter(sk: u64) {
    if !send_ongoing(sk) && socket_kept(sk, true) {
        send_started(sk);
    }
}

/// Return of a `*_sendmsg` where only the return value is known (kretprobe).
#[inline(always)]
pub fn sendmsg_return_of_thread(ret: i64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(s) = unsafe { SENDS.get(tid) } {
        sendmsg_return(s.sk, ret as i32);
    }
}

#[inline(always)]
pub fn sendmsg_return(sk: u64, ret: i32) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let mut duration = 0;
    // Matched is not "took > 0": a coarse clock (some VMs) can give a real call 0 ns.
    let mut matched = false;
    if let Some(s) = unsafe { SENDS.get(tid) } {
        if s.sk == sk {
            duration = now().saturating_sub(s.ts_ns);
            matched = true;
        }
        let _ = SENDS.remove(tid);
    }
    let mut x = Extra::timed(ret as i64, duration);
    if matched {
        x = x.with_sample(HistKind::SendmsgTime, duration);
    }
    if socket_event(Hook::SendmsgReturn, sk, true, x) {
        count(if matched {
            counter::SEND_MATCHED
        } else {
            counter::SEND_UNMATCHED
        });
    }
}

/// Drops what is known about an skb address the filters do not keep: an entry left there by
/// an earlier skb freed unseen must not be taken for this one.
#[inline(always)]
fn forget(skb: u64) {
    let _ = SKBS.remove(skb);
}

/// Starts following an skb below the transport.
#[inline(always)]
fn track(skb: u64, sk: u64, queued_ns: u64, xmit_ns: u64) {
    let t = SkbTrack {
        sk,
        head: kernel::skb_head(skb),
        queued_ns,
        xmit_ns,
        xmit_dev: 0,
        enqueued_ns: 0,
        qdisc_seen: 0,
        _pad: 0,
    };
    if SKBS.insert(skb, t, BPF_ANY as u64).is_ok() {
        count(counter::SKB_TRACKED);
    }
}

#[inline(always)]
pub fn dev_queue_xmit(skb: u64) {
    if !kernel::ready() {
        return;
    }
    let sk = kernel::skb_sk(skb);
    let x = Extra::value(0);
    if sk != 0 && skb_event(Hook::DevQueueXmit, skb, sk, Dev::FromSkb, true, 0, x) {
        track(skb, sk, now(), 0);
    } else {
        forget(skb);
    }
}

#[inline(always)]
pub fn qdisc_enqueue(skb: u64) {
    if !kernel::ready() || skb == 0 {
        return;
    }
    let sk = kernel::skb_sk(skb);
    if sk != 0
        && skb_event(
            Hook::QdiscEnqueue,
            skb,
            sk,
            Dev::FromSkb,
            true,
            0,
            Extra::value(0),
        )
    {
        match SKBS.get_ptr_mut(skb) {
            Some(t) => unsafe {
                (*t).enqueued_ns = now();
                (*t).qdisc_seen = 1;
            },
            None => {
                track(skb, sk, 0, 0);
                if let Some(t) = SKBS.get_ptr_mut(skb) {
                    unsafe {
                        (*t).enqueued_ns = now();
                        (*t).qdisc_seen = 1;
                    }
                }
            }
        }
    }
}

/// The most skbs of one list the programs follow. Without BQL (veth, most virtual devices)
/// `dequeue_skb` bulks at most 8 skbs; with BQL the device's byte limit keeps lists short.
const SKB_LIST_MAX: u32 = 16;

/// Calls `each` for every skb of the list starting at `first`, at most `len` of them; a list
/// longer than [`SKB_LIST_MAX`] is counted as cut.
#[inline(always)]
fn for_each_in_list(first: u64, len: u32, each: impl Fn(u64)) {
    let mut skb = first;
    let mut i = 0;
    while i < SKB_LIST_MAX {
        if skb == 0 || i >= len {
            return;
        }
        // Read before the handler: the skb stays linked while its hook runs, but read it once.
        let next = kernel::skb_next(skb);
        each(skb);
        skb = next;
        i += 1;
    }
    if skb != 0 && i < len {
        count(counter::LIST_CUT);
    }
}

/// A dequeue handed out `packets` skbs linked from `first` (bulk dequeue); `u32::MAX` when the
/// hook does not say how many (the list then ends at a null `next`).
#[inline(always)]
pub fn qdisc_dequeue_list(first: u64, packets: u32) {
    for_each_in_list(first, packets, qdisc_dequeue);
}

/// The driver is handed the list starting at `first` (`dev_hard_start_xmit`).
#[inline(always)]
pub fn driver_xmit_list(first: u64, dev: u64) {
    for_each_in_list(first, u32::MAX, |skb| driver_xmit(skb, dev));
}

/// One skb leaves the qdisc. Not inlined: list walks call it once per skb.
#[inline(never)]
fn qdisc_dequeue(skb: u64) {
    if !kernel::ready() || skb == 0 {
        return;
    }
    let sk = kernel::skb_sk(skb);
    if sk == 0 {
        return;
    }
    let mut x = Extra::value(0);
    let mut matched = false;
    if let Some(t) = SKBS.get_ptr_mut(skb) {
        unsafe {
            if (*t).enqueued_ns != 0 {
                let sojourn = now().saturating_sub((*t).enqueued_ns);
                x = x.with_sample(HistKind::QdiscSojourn, sojourn);
                (*t).enqueued_ns = 0;
                matched = true;
            }
        }
    }
    if skb_event(Hook::QdiscDequeue, skb, sk, Dev::FromSkb, true, 0, x) && !matched {
        count(counter::QDISC_UNMATCHED);
    }
}

/// One skb is handed to the driver. Not inlined: list walks call it once per skb.
#[inline(never)]
pub fn driver_xmit(skb: u64, dev: u64) {
    if !kernel::ready() {
        return;
    }
    let sk = kernel::skb_sk(skb);
    let x = Extra::value(0);
    if sk == 0 || !skb_event(Hook::DriverXmit, skb, sk, Dev::Given(dev), true, 0, x) {
        forget(skb);
        return;
    }
    match SKBS.get_ptr_mut(skb) {
        Some(t) => unsafe {
            (*t).xmit_ns = now();
            (*t).xmit_dev = dev;
            // Seen at dev_queue_xmit but never enqueued: no qdisc, or the qdisc let it bypass.
            if (*t).queued_ns != 0 && (*t).qdisc_seen == 0 {
                count(counter::QDISC_BYPASS);
            }
        },
        // A segment made below dev_queue_xmit (e.g. a qdisc splitting a GSO skb): track it
        // from here so its driver return and free are seen too.
        None => {
            track(skb, sk, 0, now());
            if let Some(t) = SKBS.get_ptr_mut(skb) {
                unsafe { (*t).xmit_dev = dev };
            }
        }
    }
}

/// After `ndo_start_xmit` returns the skb may already be freed: only tracked skbs, and the skb
/// itself is not read.
#[inline(always)]
pub fn driver_done(skb: u64, rc: i32, dev: u64, len: u32) {
    if !kernel::ready() {
        return;
    }
    let Some(t) = (unsafe { SKBS.get(skb) }) else {
        return;
    };
    let (sk, xmit_ns) = (t.sk, t.xmit_ns);
    // Another device: an entry left by an skb freed unseen, not this transmission.
    if t.xmit_dev != dev {
        return;
    }
    let duration = if xmit_ns == 0 { 0 } else { now() - xmit_ns };
    let x = Extra::timed(rc as i64, duration);
    skb_event(Hook::DriverDone, skb, sk, Dev::Given(dev), false, len, x);
}

/// A tracked skb is freed (`SkbFree`, value: still charged to the socket) or dropped (`SkbDrop`,
/// value: drop reason).
#[inline(always)]
pub fn skb_freed(hook: Hook, skb: u64, reason: u32) {
    if !kernel::ready() {
        return;
    }
    let Some(t) = (unsafe { SKBS.get(skb) }) else {
        return;
    };
    let (sk, head, queued_ns, xmit_ns) = (t.sk, t.head, t.queued_ns, t.xmit_ns);
    let _ = SKBS.remove(skb);
    // Same address, other buffer: a later skb, not the one that was followed.
    if kernel::skb_head(skb) != head {
        return;
    }
    count(counter::SKB_FREED);
    let value = match hook {
        Hook::SkbDrop => reason as i64,
        _ => (kernel::skb_sk(skb) == sk) as i64,
    };
    let t_now = now();
    let since = if queued_ns != 0 { queued_ns } else { xmit_ns };
    let mut x = Extra::timed(value, t_now.saturating_sub(since));
    if xmit_ns != 0 {
        x = x.with_sample(HistKind::DriverTime, t_now.saturating_sub(xmit_ns));
    }
    if queued_ns != 0 {
        x = x.with_sample(HistKind::BelowTcp, t_now.saturating_sub(queued_ns));
    }
    skb_event(hook, skb, sk, Dev::FromSkb, true, 0, x);
}

#[inline(always)]
pub fn tcp_retransmit(sk: u64, skb: u64) {
    if !kernel::ready() {
        return;
    }
    skb_event(
        Hook::TcpRetransmit,
        skb,
        sk,
        Dev::None,
        true,
        0,
        Extra::value(0),
    );
}

#[inline(always)]
pub fn tcp_ack(sk: u64) {
    socket_event(Hook::TcpAck, sk, false, Extra::value(0));
}

#[inline(always)]
pub fn sock_destroy(sk: u64) {
    socket_event(Hook::SockDestroy, sk, false, Extra::value(0));
    let _ = OWNERS.remove(sk);
}

/// `sk_wmem_alloc` is about to grow by the skb's truesize (called at function entry, so the
/// reported counter is the value after the change).
#[inline(always)]
pub fn wmem_charge(sk: u64, skb: u64) {
    if !kernel::ready() || sk == 0 {
        return;
    }
    let (_, truesize) = kernel::skb_sizes(skb);
    let x = Extra {
        value: truesize as i64,
        duration_ns: 0,
        flags: 0,
        alloc_adjust: truesize as i32,
        samples: [(0, 0); 2],
    };
    skb_event(Hook::WmemCharge, skb, sk, Dev::None, true, 0, x);
}

/// The skb destructor is about to give its truesize back to the socket.
#[inline(always)]
pub fn wmem_release(skb: u64) {
    if !kernel::ready() {
        return;
    }
    let sk = kernel::skb_sk(skb);
    if sk == 0 {
        return;
    }
    let (_, truesize) = kernel::skb_sizes(skb);
    let x = Extra {
        value: -(truesize as i64),
        duration_ns: 0,
        flags: 0,
        alloc_adjust: -(truesize as i32),
        samples: [(0, 0); 2],
    };
    skb_event(Hook::WmemRelease, skb, sk, Dev::FromSkb, true, 0, x);
}

/// `tcp_wfree` gives back all of an skb's truesize but 1, and keeps that 1 as a reference on
/// `sk_wmem_alloc` (TCP Small Queues) that `sk_free` drops: right away, or later from the TSQ
/// tasklet/work when the socket was queued to send more. The release event above reports the
/// truesize; the deferred drop is reported by [`tsq_reference_released`], so that the counters
/// of the last event of a drained socket read 0 as they do in the kernel.
#[inline(always)]
pub fn tcp_wfree(skb: u64) {
    let sk = kernel::skb_sk(skb);
    if let Some(w) = IN_TCP_WFREE.get_ptr_mut(0) {
        unsafe { *w = sk };
    }
    wmem_release(skb);
}

/// `tcp_wfree` returned: its own `sk_free` call, if any, is behind us.
#[inline(always)]
pub fn tcp_wfree_done() {
    if let Some(w) = IN_TCP_WFREE.get_ptr_mut(0) {
        unsafe { *w = 0 };
    }
}

/// `sk_free` on a live TCP socket outside `tcp_wfree`: the TSQ reference is dropped.
/// (Inside `tcp_wfree` the release event already counted it; on a socket being destroyed
/// `sk_refcnt` is 0 and nothing is reported.)
#[inline(always)]
pub fn tsq_reference_released(sk: u64) {
    if !kernel::ready() || sk == 0 {
        return;
    }
    if matches!(IN_TCP_WFREE.get(0), Some(&w) if w == sk) {
        return;
    }
    if kernel::sk_protocol(sk) != kernel::IPPROTO_TCP
        || kernel::sk_refcnt(sk) == 0
        || kernel::wmem_alloc(sk) < 1
    {
        return;
    }
    let x = Extra {
        value: 0,
        duration_ns: 0,
        flags: FLAG_TSQ_REFERENCE,
        alloc_adjust: -1,
        samples: [(0, 0); 2],
    };
    socket_event(Hook::WmemRelease, sk, false, x);
}

/// `tcp_ack` entry: remember `sk_wmem_queued` to report what this ACK freed. Per CPU, because
/// ACK processing runs in softirq and does not nest on one CPU.
#[inline(always)]
pub fn ack_enter(sk: u64) {
    if !kernel::ready() {
        return;
    }
    if let Some(slot) = ACK_STASH.get_ptr_mut(0) {
        unsafe {
            (*slot).sk = sk;
            (*slot).wmem_queued = kernel::wmem_queued(sk) as i64;
        }
    }
}

#[inline(always)]
pub fn ack_exit() {
    let Some(slot) = ACK_STASH.get_ptr_mut(0) else {
        return;
    };
    let (sk, before) = unsafe { ((*slot).sk, (*slot).wmem_queued) };
    unsafe { (*slot).sk = 0 };
    if sk == 0 {
        return;
    }
    let change = kernel::wmem_queued(sk) as i64 - before;
    // An ACK that freed nothing changed nothing: not an event.
    if change != 0 {
        socket_event(Hook::TcpAckFreed, sk, false, Extra::value(change));
    }
}

/// `sk_stream_wait_memory` entry: the sender is about to sleep for send-buffer space.
#[inline(always)]
pub fn wait_enter(sk: u64) {
    if !kernel::ready() {
        return;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let start = SendStart {
        sk,
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    let _ = WAITS.insert(tid, start, BPF_ANY as u64);
}

#[inline(always)]
pub fn wait_exit(ret: i64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(s) = (unsafe { WAITS.get(tid) }) else {
        return;
    };
    let (sk, ts) = (s.sk, s.ts_ns);
    let _ = WAITS.remove(tid);
    let waited = now().saturating_sub(ts);
    let x = Extra::timed(ret, waited).with_sample(HistKind::SendBlocked, waited);
    socket_event(Hook::SendBlocked, sk, true, x);
}

/// Entry of `dev_qdisc_enqueue` with its result known (fexit): only successful enqueues count,
/// as with the tracepoint.
#[inline(always)]
pub fn qdisc_enqueue_result(skb: u64, ret: i32) {
    if ret == 0 {
        qdisc_enqueue(skb);
    }
}
