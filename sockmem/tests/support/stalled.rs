//! TCP connections whose receiver never reads: the sender fills the socket's buffers
//! ([`StalledTcp`], nonblocking) or keeps blocking in `write` ([`BlockingStalledTcp`]).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::flows::{listen_accept, spawn_sender, FlowShared};
use super::kernel_views::{wait_ss_stable, SkMem};
use super::threads::{hold_until, join_ends, recv_setup};
use super::{spawn_in_netns, wait_until, NetnsPair, SchedStat, SockKey, ThreadInfo, HOLD_TIMEOUT};

/// A receiver on `port` that accepts one connection and never reads from it, until
/// `release(shared)` is set; returns once it listens.
pub(super) fn spawn_stalled_receiver<S: Send + Sync + 'static>(
    pair: &NetnsPair,
    port: u16,
    shared: &Arc<S>,
    release: fn(&S) -> &AtomicBool,
) -> Option<JoinHandle<()>> {
    let addr = pair.rx_sockaddr(port);
    let (ready_tx, ready_rx) = mpsc::channel();
    let sh = shared.clone();
    let mut rx = Some(spawn_in_netns(
        &format!("smrx-{port}"),
        &pair.rx_ns,
        move || {
            let s = listen_accept(addr, ready_tx);
            hold_until(release(&sh));
            drop(s);
        },
    ));
    recv_setup(
        &ready_rx,
        &mut rx,
        &format!("stalled receiver on port {port}"),
    );
    rx
}

/// A TCP connection whose receiver accepts and never reads; the sender writes (nonblocking)
/// until `WouldBlock` persists for 500 ms, then holds the socket open until released.
pub struct StalledTcp {
    pub port: u16,
    pub sender: ThreadInfo,
    pub key: SockKey,
    shared: Arc<FlowShared>,
    tx: Option<JoinHandle<u64>>,
    rx: Option<JoinHandle<()>>,
}

impl StalledTcp {
    pub fn start(pair: &NetnsPair, port: u16, sender_name: &str) -> StalledTcp {
        let shared = Arc::new(FlowShared::default());
        let addr = pair.rx_sockaddr(port);

        let rx = spawn_stalled_receiver(pair, port, &shared, |sh| &sh.release);

        let sh = shared.clone();
        let what = format!("stalled sender to port {port}");
        let (sender, key, tx) = spawn_sender(pair, addr, sender_name, &what, move |mut s| {
            s.set_nonblocking(true)
                .expect("the stalled sender's socket made nonblocking");
            let buf = vec![0xa5u8; 64 * 1024];
            let start = Instant::now();
            let mut last_progress = Instant::now();
            let mut sent = 0u64;
            loop {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                match s.write(&buf) {
                    Ok(n) => {
                        sent += n as u64;
                        sh.sent.store(sent, Ordering::SeqCst);
                        last_progress = Instant::now();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if last_progress.elapsed() >= Duration::from_millis(500) {
                            break;
                        }
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("stalled sender to {addr}: write after {sent} bytes: {e}"),
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "stalled sender to {addr}: still not blocked after 30 s and {sent} bytes"
                );
            }
            sh.sender_done.store(true, Ordering::SeqCst);
            hold_until(&sh.close_sender);
            drop(s);
            sent
        });
        StalledTcp {
            port,
            sender,
            key,
            shared,
            tx,
            rx,
        }
    }

    /// Waits until the sender's writes block for good; returns the bytes it wrote.
    pub fn wait_filled(&self, timeout: Duration) -> u64 {
        assert!(
            wait_until(timeout, || self.shared.sender_done.load(Ordering::SeqCst)),
            "stalled sender to port {}: writes did not block for good within {timeout:?} \
             ({} bytes written)",
            self.port,
            self.shared.sent.load(Ordering::SeqCst)
        );
        self.shared.sent.load(Ordering::SeqCst)
    }

    /// Waits until the sender's writes block for good (≤ 40 s) and `ss` in the sender's
    /// namespace shows its queued bytes (w > 0) unchanged in two reads 300 ms apart (≤ 20 s);
    /// returns the bytes written and that reading.
    pub fn wait_stable(&self, pair: &NetnsPair) -> (u64, SkMem) {
        let written = self.wait_filled(Duration::from_secs(40));
        assert!(
            written > 0,
            "expected the stalled sender to port {} to write something before it blocked, it \
             wrote {written} bytes",
            self.port
        );
        let m = wait_ss_stable(
            &pair.tx_ns,
            self.key.lport,
            self.port,
            Duration::from_millis(300),
            Duration::from_secs(20),
        );
        (written, m)
    }

    /// Closes the sender's socket, the receiver still not reading: the kernel keeps the
    /// socket, without a file, until the peer takes its bytes (FIN-WAIT-1, `ino:0`).
    pub fn close_sender(&self) {
        self.shared.close_sender.store(true, Ordering::SeqCst);
    }

    /// Closes both ends, joins both threads; returns the bytes the sender wrote.
    pub fn finish(mut self) -> u64 {
        self.shared.close_sender.store(true, Ordering::SeqCst);
        self.shared.release.store(true, Ordering::SeqCst);
        let what = format!("stalled TCP flow to port {}", self.port);
        let (sent, ()) = join_ends(&mut self.tx, &mut self.rx, &what);
        sent
    }
}

impl Drop for StalledTcp {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.close_sender.store(true, Ordering::SeqCst);
        self.shared.release.store(true, Ordering::SeqCst);
    }
}

/// One blocking `write` of a [`BlockingStalledTcp`] sender.
#[derive(Clone, Copy, Debug)]
pub struct WriteRecord {
    pub took: Duration,
    /// Bytes written, or `None` for `EAGAIN` (the send timeout expired with nothing written).
    pub wrote: Option<usize>,
    /// The sender thread's scheduler accounting over the call (CPU time, runnable time,
    /// context switches).
    pub sched: SchedStat,
}

#[derive(Default)]
struct BlockingShared {
    stop: AtomicBool,
    release: AtomicBool,
    /// The sender has made its last write.
    writes_done: AtomicBool,
    sent: AtomicU64,
    /// Writes that took at least `sndtimeo / 2`.
    blocked: AtomicU64,
    records: Mutex<Vec<WriteRecord>>,
}

/// A TCP connection whose receiver accepts and never reads, while the sender keeps making
/// BLOCKING writes of 64 KiB with `SO_SNDTIMEO` = `sndtimeo`: once the buffers are full each
/// write sleeps in the kernel for about `sndtimeo`, then returns `EAGAIN` (or a partial count).
/// Every write's duration and result are recorded. The sender stops writing on
/// [`BlockingStalledTcp::stop_writing`] (after the write in progress) and holds the socket open
/// until [`BlockingStalledTcp::finish`].
pub struct BlockingStalledTcp {
    pub port: u16,
    pub sndtimeo: Duration,
    pub sender: ThreadInfo,
    pub key: SockKey,
    shared: Arc<BlockingShared>,
    tx: Option<JoinHandle<()>>,
    rx: Option<JoinHandle<()>>,
}

impl BlockingStalledTcp {
    pub fn start(
        pair: &NetnsPair,
        port: u16,
        sender_name: &str,
        sndtimeo: Duration,
    ) -> BlockingStalledTcp {
        let shared = Arc::new(BlockingShared::default());
        let addr = pair.rx_sockaddr(port);

        let rx = spawn_stalled_receiver(pair, port, &shared, |sh| &sh.release);

        let sh = shared.clone();
        let what = format!("blocking stalled sender to port {port}");
        let (sender, key, tx) = spawn_sender(pair, addr, sender_name, &what, move |mut s| {
            s.set_write_timeout(Some(sndtimeo))
                .expect("SO_SNDTIMEO set on the blocking stalled sender's socket");
            let buf = vec![0xa5u8; 64 * 1024];
            let start = Instant::now();
            let mut sent = 0u64;
            while !sh.stop.load(Ordering::SeqCst) && start.elapsed() < HOLD_TIMEOUT {
                let before = SchedStat::before_call();
                let t0 = Instant::now();
                let r = s.write(&buf);
                let took = t0.elapsed();
                let sched = SchedStat::after_call().since(&before);
                let wrote = match r {
                    Ok(n) => Some(n),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        None
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        panic!("blocking stalled sender to {addr}: write after {sent} bytes: {e}")
                    }
                };
                sent += wrote.unwrap_or(0) as u64;
                sh.sent.store(sent, Ordering::SeqCst);
                if took >= sndtimeo / 2 {
                    sh.blocked.fetch_add(1, Ordering::SeqCst);
                }
                sh.records
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(WriteRecord { took, wrote, sched });
            }
            sh.writes_done.store(true, Ordering::SeqCst);
            hold_until(&sh.release);
            drop(s);
        });
        BlockingStalledTcp {
            port,
            sndtimeo,
            sender,
            key,
            shared,
            tx,
            rx,
        }
    }

    /// Writes so far that took at least `sndtimeo / 2` (slept for buffer space).
    pub fn blocked_writes(&self) -> u64 {
        self.shared.blocked.load(Ordering::SeqCst)
    }

    /// Waits until `n` writes have blocked.
    pub fn wait_blocked(&self, n: u64, timeout: Duration) {
        assert!(
            wait_until(timeout, || self.blocked_writes() >= n),
            "blocking stalled sender to port {}: expected {n} writes to block for ~{:?} within \
             {timeout:?}, got {} ({} bytes written)",
            self.port,
            self.sndtimeo,
            self.blocked_writes(),
            self.shared.sent.load(Ordering::SeqCst)
        );
    }

    /// Writes that have returned so far.
    pub fn writes_returned(&self) -> usize {
        self.shared
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Waits until /proc says the sender thread is asleep inside a send system call on a socket
    /// ([`asleep_in_send`]), the same call 500 ms later (no write returned meanwhile: while the
    /// buffers fill, writes sleep briefly and return); returns what it said.
    pub fn wait_asleep_in_send(&self, timeout: Duration) -> SendSleep {
        let mut last = None;
        assert!(
            wait_until(timeout, || {
                let returned = self.writes_returned();
                last = asleep_in_send(self.sender.tgid, self.sender.tid);
                thread::sleep(Duration::from_millis(500));
                last.is_some()
                    && asleep_in_send(self.sender.tgid, self.sender.tid) == last
                    && self.writes_returned() == returned
            }),
            "blocking stalled sender to port {}: /proc did not show its thread {} asleep in a \
             send call within {timeout:?} ({} bytes written, syscall {:?}, wchan {:?})",
            self.port,
            self.sender.tid,
            self.shared.sent.load(Ordering::SeqCst),
            std::fs::read_to_string(format!(
                "/proc/{}/task/{}/syscall",
                self.sender.tgid, self.sender.tid
            )),
            std::fs::read_to_string(format!(
                "/proc/{}/task/{}/wchan",
                self.sender.tgid, self.sender.tid
            )),
        );
        last.unwrap()
    }

    /// Ends the writing (after the write in progress, which may take up to `sndtimeo`) and
    /// returns every write's record; the socket stays open until [`Self::finish`].
    pub fn stop_writing(&self, timeout: Duration) -> Vec<WriteRecord> {
        self.shared.stop.store(true, Ordering::SeqCst);
        assert!(
            wait_until(timeout, || self.shared.writes_done.load(Ordering::SeqCst)),
            "blocking stalled sender to port {}: writes did not stop within {timeout:?}",
            self.port
        );
        self.shared
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Closes both ends and joins both threads.
    pub fn finish(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.release.store(true, Ordering::SeqCst);
        let what = format!("blocking stalled TCP flow to port {}", self.port);
        join_ends(&mut self.tx, &mut self.rx, &what);
    }
}

impl Drop for BlockingStalledTcp {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.release.store(true, Ordering::SeqCst);
    }
}

/// A thread asleep in a send system call, as /proc says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendSleep {
    /// The system call's number and its fd (first argument).
    pub syscall: i64,
    pub fd: u64,
    /// The socket's inode (the fd's link `socket:[N]`).
    pub ino: u64,
    /// `stat`'s state letter and `wchan` (where it sleeps).
    pub state: char,
    pub wchan: String,
}

/// Thread `tid` of process `pid`, if it is inside `write`/`sendto`/`sendmsg` on a socket and
/// asleep: `/proc/PID/task/TID/syscall` (number, then the arguments in hex), `stat` (state `S`
/// or `D`) and `wchan` (not `0`: running).
pub fn asleep_in_send(pid: u32, tid: u32) -> Option<SendSleep> {
    let dir = format!("/proc/{pid}/task/{tid}");
    let syscall = std::fs::read_to_string(format!("{dir}/syscall")).ok()?;
    let mut f = syscall.split_whitespace();
    let nr: i64 = f.next()?.parse().ok()?;
    if ![libc::SYS_write, libc::SYS_sendto, libc::SYS_sendmsg].contains(&nr) {
        return None;
    }
    let fd = u64::from_str_radix(f.next()?.strip_prefix("0x")?, 16).ok()?;
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let ino = link
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    let wchan = std::fs::read_to_string(format!("{dir}/wchan"))
        .ok()?
        .trim()
        .to_owned();
    (matches!(state, 'S' | 'D') && !wchan.is_empty() && wchan != "0").then_some(SendSleep {
        syscall: nr,
        fd,
        ino,
        state,
        wchan,
    })
}
