//! Shared pieces of the `sockmem` integration tests.
//!
//! - [`NetnsPair`]: two network namespaces joined by a veth pair (198.18.X.1 sender side,
//!   198.18.X.2 receiver side), optionally with a `tbf` qdisc on the sender's veth; removed on drop.
//! - Traffic generators running on named threads of the test process itself, each thread moved
//!   into a namespace with `setns(CLONE_NEWNET)`: [`TcpFlow`] (bulk or continuous),
//!   [`StalledTcp`] (receiver never reads), [`udp_flow`].
//! - [`Tracer`]: runs `sockmem trace ... --ready-file F`, waits for F, stops it with SIGTERM (or
//!   waits for `--duration`), returns its exit status and output.
//! - [`JsonTrace`]: the `--json` output split into header, events and summary, with field helpers.
//! - The kernel's own view: [`ss_skmem`] (`ss -tm`'s `skmem:(...)`) and [`qdisc_sent`]
//!   (`tc -s qdisc`).
//!
//! Every wait is bounded; on timeout the helpers panic with a message saying what did not happen.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long `sockmem trace` may take to attach everything and write its ready file.
/// Attaching every program takes seconds under an emulated (TCG) VM.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `sockmem` may take to exit after SIGTERM (or after its `--duration`).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Read/write timeout given to every socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Timeout for short helper commands (`ip`, `tc`, `ss`, usage-error runs of `sockmem`).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long joining a traffic thread may take.
pub const THREAD_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a socket may be held open (stalled or hold-open flows) before its thread gives up.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// Exit status and captured output of a finished process.
#[derive(Debug)]
pub struct CmdOutput {
    /// What was run (for messages).
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// One-paragraph description for assertion messages (stderr tail included, stdout not).
    pub fn describe(&self) -> String {
        format!(
            "{} exited with {}; stdout {} bytes; stderr:\n{}",
            self.what,
            describe_status(&self.status),
            self.stdout.len(),
            tail(&self.stderr, 4000)
        )
    }

    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "expected exit status 0, got {}",
            self.describe()
        );
    }

    pub fn assert_code(&self, expected: i32) {
        assert_eq!(
            self.status.code(),
            Some(expected),
            "expected exit code {expected}, got {}",
            self.describe()
        );
    }

    /// A usage error: no panic, exit code 2, a message on stderr (`args` names the case).
    pub fn assert_usage_error(&self, args: &[&str]) {
        self.assert_no_panic();
        assert_eq!(
            self.code(),
            Some(2),
            "expected exit code 2 for {args:?}, got {}",
            self.describe()
        );
        assert!(
            !self.stderr.trim().is_empty(),
            "expected a message on stderr for {args:?}"
        );
    }

    pub fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked at") && !self.stdout.contains("panicked at"),
            "output contains a Rust panic: {}",
            self.describe()
        );
    }

    /// Parses stdout as `--json` output.
    pub fn json(&self) -> JsonTrace {
        JsonTrace::parse(&self.stdout)
            .unwrap_or_else(|e| panic!("bad JSON output of {}: {e}", self.what))
    }
}

pub fn describe_status(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => format!("{status:?}"),
    }
}

/// The last `max` bytes of `s` (on a char boundary).
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn join_reader(h: Option<JoinHandle<Vec<u8>>>) -> String {
    match h {
        Some(h) => {
            // The pipe closes when the process (group) is gone; bound the wait anyway.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if !h.is_finished() {
                return "<output pipe still open 10 s after exit (held by a child process?)>"
                    .to_string();
            }
            String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
        }
        None => String::new(),
    }
}

/// Polls `child` until it exits or `timeout` passes.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(e) => panic!("waiting for child {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to the process group led by `child` (all our children are group leaders).
fn kill_group(child: &Child, sig: i32) {
    unsafe {
        libc::kill(-(child.id() as i32), sig);
    }
}

/// Runs `cmd` (stdin null, stdout/stderr captured, own process group). On timeout the whole
/// group is killed and `Err` carries what was captured.
pub fn try_run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput, CmdOutput> {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
    let out = spawn_reader(child.stdout.take().unwrap());
    let err = spawn_reader(child.stderr.take().unwrap());
    let (status, timed_out) = match wait_child(&mut child, timeout) {
        Some(st) => (st, false),
        None => {
            kill_group(&child, libc::SIGKILL);
            (child.wait().expect("wait after SIGKILL"), true)
        }
    };
    let output = CmdOutput {
        what,
        status,
        stdout: join_reader(Some(out)),
        stderr: join_reader(Some(err)),
    };
    if timed_out {
        Err(output)
    } else {
        Ok(output)
    }
}

/// [`try_run_with_timeout`] that panics on timeout.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> CmdOutput {
    try_run_with_timeout(cmd, timeout)
        .unwrap_or_else(|o| panic!("timed out after {timeout:?} and killed: {}", o.describe()))
}

/// Runs `program args...` and panics with a clear message unless it exits 0; returns stdout.
pub fn run_checked(program: &str, args: &[&str]) -> String {
    let out = run_with_timeout(Command::new(program).args(args), CMD_TIMEOUT);
    assert!(
        out.status.success(),
        "command failed: {}\nstdout:\n{}",
        out.describe(),
        tail(&out.stdout, 2000)
    );
    out.stdout
}

/// Runs `program args...` inside network namespace `ns` (`ip netns exec`), checked.
pub fn ns_checked(ns: &str, program: &str, args: &[&str]) -> String {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run_checked("ip", &full)
}

// ---------------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------------

/// Serialises `ip netns add/del`: the first `ip netns add` sets up the /run/netns mount.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Two network namespaces joined by a veth pair:
/// `tx_ns`/`tx_if`/`tx_addr` = 198.18.X.1/24 (sender), `rx_ns`/`rx_if`/`rx_addr` = 198.18.X.2/24.
/// Both namespaces (and so the veth) are deleted on drop, also when the test panics.
pub struct NetnsPair {
    pub tag: String,
    pub tx_ns: String,
    pub rx_ns: String,
    pub tx_if: String,
    pub rx_if: String,
    pub tx_addr: Ipv4Addr,
    pub rx_addr: Ipv4Addr,
    created: Vec<String>,
}

impl NetnsPair {
    /// Namespaces `smtx-<pid>-<tag>` / `smrx-<pid>-<tag>`, veth `s<pid><tag>t` / `s<pid><tag>r`,
    /// addresses 198.18.`subnet`.1 and .2. No qdisc (a fresh veth has `noqueue`).
    /// `tag`: 1..=6 ASCII alphanumerics, unique per test; `subnet` unique per test.
    pub fn new(tag: &str, subnet: u8) -> NetnsPair {
        assert!(
            !tag.is_empty() && tag.len() <= 6 && tag.chars().all(|c| c.is_ascii_alphanumeric()),
            "netns tag must be 1..=6 ASCII alphanumerics, got {tag:?}"
        );
        let pid = std::process::id();
        let tx_if = format!("s{pid}{tag}t");
        let rx_if = format!("s{pid}{tag}r");
        assert!(
            tx_if.len() <= 15,
            "interface name {tx_if:?} is {} bytes, more than 15",
            tx_if.len()
        );
        let mut pair = NetnsPair {
            tag: tag.to_string(),
            tx_ns: format!("smtx-{pid}-{tag}"),
            rx_ns: format!("smrx-{pid}-{tag}"),
            tx_if,
            rx_if,
            tx_addr: Ipv4Addr::new(198, 18, subnet, 1),
            rx_addr: Ipv4Addr::new(198, 18, subnet, 2),
            created: Vec::new(),
        };
        {
            let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            for ns in [pair.tx_ns.clone(), pair.rx_ns.clone()] {
                // A leftover of a killed earlier process with the same pid: ours by name.
                if Path::new("/run/netns").join(&ns).exists() {
                    let _ = try_run_with_timeout(
                        Command::new("ip").args(["netns", "del", &ns]),
                        CMD_TIMEOUT,
                    );
                }
                run_checked("ip", &["netns", "add", &ns]);
                pair.created.push(ns);
            }
        }
        let (tx_ns, rx_ns) = (pair.tx_ns.clone(), pair.rx_ns.clone());
        let (tx_if, rx_if) = (pair.tx_if.clone(), pair.rx_if.clone());
        run_checked(
            "ip",
            &[
                "-n", &tx_ns, "link", "add", &tx_if, "type", "veth", "peer", "name", &rx_if,
                "netns", &rx_ns,
            ],
        );
        let tx_cidr = format!("{}/24", pair.tx_addr);
        let rx_cidr = format!("{}/24", pair.rx_addr);
        run_checked(
            "ip",
            &["-n", &tx_ns, "addr", "add", &tx_cidr, "dev", &tx_if],
        );
        run_checked(
            "ip",
            &["-n", &rx_ns, "addr", "add", &rx_cidr, "dev", &rx_if],
        );
        for (ns, dev) in [
            (&tx_ns, "lo"),
            (&tx_ns, &tx_if[..]),
            (&rx_ns, "lo"),
            (&rx_ns, &rx_if[..]),
        ] {
            run_checked("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        pair
    }

    /// [`NetnsPair::new`] plus `tbf rate 200mbit burst 32kb latency 50ms` on the sender's veth.
    pub fn with_tbf(tag: &str, subnet: u8) -> NetnsPair {
        let pair = NetnsPair::new(tag, subnet);
        pair.add_tbf("200mbit");
        pair
    }

    /// Replaces the sender veth's root qdisc by `tbf rate <rate> burst 32kb latency 50ms`.
    pub fn add_tbf(&self, rate: &str) {
        self.set_tbf(rate, "32kb", "50ms");
    }

    pub fn rx_sockaddr(&self, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.rx_addr, port))
    }

    /// `tc -s qdisc show dev <tx_if>` inside the sender namespace: (bytes, packets) sent by
    /// the root qdisc.
    pub fn tx_qdisc_sent(&self) -> (u64, u64) {
        qdisc_sent(&self.tx_ns, &self.tx_if)
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for ns in self.created.drain(..) {
            match try_run_with_timeout(Command::new("ip").args(["netns", "del", &ns]), CMD_TIMEOUT)
            {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!("cleanup: {}", o.describe()),
                Err(o) => eprintln!("cleanup timed out: {}", o.describe()),
            }
        }
    }
}

/// Moves the calling thread (only it) into network namespace `/run/netns/<ns>`.
pub fn enter_netns(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let f = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns({path}, CLONE_NEWNET) failed: {}",
        io::Error::last_os_error()
    );
}

// ---------------------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------------------

/// Identity of a traffic thread, as the kernel (and so sockmem) should report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadInfo {
    /// The name given to `thread::Builder`.
    pub name: String,
    /// `/proc/thread-self/comm` read inside the thread (the name cut to 15 bytes).
    pub comm: String,
    /// `gettid()`.
    pub tid: u32,
    /// `getpid()` == `std::process::id()`.
    pub tgid: u32,
}

impl ThreadInfo {
    /// Must be called on the thread it describes.
    pub fn current() -> ThreadInfo {
        let comm = fs::read_to_string("/proc/thread-self/comm")
            .expect("read /proc/thread-self/comm")
            .trim_end_matches('\n')
            .to_string();
        ThreadInfo {
            name: thread::current().name().unwrap_or("").to_string(),
            comm,
            tid: unsafe { libc::gettid() } as u32,
            tgid: std::process::id(),
        }
    }
}

/// Spawns a thread named `name` that first enters namespace `ns`, then runs `f`.
pub fn spawn_in_netns<T, F>(name: &str, ns: &str, f: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = ns.to_string();
    thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            enter_netns(&ns);
            f()
        })
        .unwrap_or_else(|e| panic!("spawn thread {name}: {e}"))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Joins `h`, waiting at most `timeout`; re-panics with the thread's panic message.
pub fn join_timeout<T>(h: JoinHandle<T>, timeout: Duration, what: &str) -> T {
    let deadline = Instant::now() + timeout;
    while !h.is_finished() {
        if Instant::now() >= deadline {
            panic!("{what} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    match h.join() {
        Ok(v) => v,
        Err(p) => panic!("{what} panicked: {}", panic_message(&*p)),
    }
}

/// Polls `cond` every 10 ms until it is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for a value a helper thread sends once it is set up; if the thread died instead,
/// panics with its panic message.
/// Returns once `release` is set (or after [`HOLD_TIMEOUT`]): a socket held open meanwhile.
fn hold_until(release: &AtomicBool) {
    let held = Instant::now();
    while !release.load(Ordering::SeqCst) && held.elapsed() < HOLD_TIMEOUT {
        thread::sleep(Duration::from_millis(10));
    }
}

/// A receiver on `port` that accepts one connection and never reads from it, until
/// `release(shared)` is set; returns once it listens.
fn spawn_stalled_receiver<S: Send + Sync + 'static>(
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

fn recv_setup<T, R>(rx: &mpsc::Receiver<T>, h: &mut Option<JoinHandle<R>>, what: &str) -> T {
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(v) => v,
        Err(e) => {
            if let Some(handle) = h.take() {
                // A thread that died drops its sender: give it a moment to finish unwinding.
                let deadline = Instant::now() + Duration::from_secs(2);
                while !handle.is_finished() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(10));
                }
                if handle.is_finished() {
                    if let Err(p) = handle.join() {
                        panic!("{what} panicked during setup: {}", panic_message(&*p));
                    }
                }
            }
            panic!("{what} was not set up within 20 s ({e})");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Socket identity in events
// ---------------------------------------------------------------------------------------------

/// A socket's 4-tuple as sockmem prints it (local end first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SockKey {
    pub laddr: String,
    pub lport: u16,
    pub raddr: String,
    pub rport: u16,
}

impl SockKey {
    pub fn new(local: SocketAddr, remote: SocketAddr) -> SockKey {
        SockKey {
            laddr: local.ip().to_string(),
            lport: local.port(),
            raddr: remote.ip().to_string(),
            rport: remote.port(),
        }
    }

    /// Whether `ev` is an event of this socket (same local and remote address and port).
    pub fn matches(&self, ev: &Value) -> bool {
        ev.get("laddr").and_then(Value::as_str) == Some(self.laddr.as_str())
            && ev.get("lport").and_then(Value::as_u64) == Some(u64::from(self.lport))
            && ev.get("raddr").and_then(Value::as_str) == Some(self.raddr.as_str())
            && ev.get("rport").and_then(Value::as_u64) == Some(u64::from(self.rport))
    }
}

impl fmt::Display for SockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} -> {}:{}",
            self.laddr, self.lport, self.raddr, self.rport
        )
    }
}

// ---------------------------------------------------------------------------------------------
// TCP traffic
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
pub enum Amount {
    /// Write exactly this many bytes.
    Bytes(u64),
    /// Write until [`TcpFlow::stop`] (or `max_duration`).
    UntilStopped,
}

#[derive(Clone, Debug)]
pub struct TcpFlowOpts {
    pub amount: Amount,
    /// Size of each `write` call.
    pub chunk: usize,
    /// After the last write, keep the socket open (no FIN) until [`TcpFlow::release`].
    pub hold_open: bool,
    /// Upper bound on the writing phase.
    pub max_duration: Duration,
}

impl TcpFlowOpts {
    pub fn bytes(n: u64) -> TcpFlowOpts {
        TcpFlowOpts {
            amount: Amount::Bytes(n),
            chunk: 64 * 1024,
            hold_open: false,
            max_duration: Duration::from_secs(60),
        }
    }

    pub fn until_stopped() -> TcpFlowOpts {
        TcpFlowOpts {
            amount: Amount::UntilStopped,
            ..TcpFlowOpts::bytes(0)
        }
    }

    pub fn hold_open(mut self) -> TcpFlowOpts {
        self.hold_open = true;
        self
    }
}

#[derive(Default)]
struct FlowShared {
    sent: AtomicU64,
    received: AtomicU64,
    sender_done: AtomicBool,
    stop: AtomicBool,
    release: AtomicBool,
}

/// Bytes written by the sender and read by the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowResult {
    pub sent: u64,
    pub received: u64,
}

/// A TCP transfer from a thread in `tx_ns` (named as asked) to a thread in `rx_ns` that
/// reads everything until EOF. Returned once connected; the transfer runs in the background.
pub struct TcpFlow {
    pub port: u16,
    pub sender: ThreadInfo,
    /// The sender's socket.
    pub key: SockKey,
    pub opts: TcpFlowOpts,
    shared: Arc<FlowShared>,
    tx: Option<JoinHandle<u64>>,
    rx: Option<JoinHandle<u64>>,
}

/// Binds a listener in the calling thread's namespace, signals `ready`, accepts one connection
/// (bounded by 20 s).
fn listen_accept(addr: SocketAddr, ready: mpsc::Sender<()>) -> TcpStream {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("receiver: bind {addr}: {e}"));
    listener
        .set_nonblocking(true)
        .expect("listener nonblocking");
    let _ = ready.send(());
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "receiver on {addr}: no connection within 20 s"
                );
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("receiver on {addr}: accept: {e}"),
        }
    };
    stream.set_nonblocking(false).expect("stream blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("set_read_timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set_write_timeout");
    stream
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("sender: connect to {addr}: {e}"));
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("set_write_timeout");
    s.set_read_timeout(Some(IO_TIMEOUT))
        .expect("set_read_timeout");
    s
}

fn key_of(s: &TcpStream) -> SockKey {
    SockKey::new(
        s.local_addr().expect("local_addr"),
        s.peer_addr().expect("peer_addr"),
    )
}

impl TcpFlow {
    /// Starts the receiver (thread `smrx-<port>` in `rx_ns`, listening on rx_addr:`port`) and
    /// the sender (thread `sender_name` in `tx_ns`); returns once the sender is connected.
    pub fn start(pair: &NetnsPair, port: u16, sender_name: &str, opts: TcpFlowOpts) -> TcpFlow {
        let shared = Arc::new(FlowShared::default());
        let addr = pair.rx_sockaddr(port);
        let max_duration = opts.max_duration;

        let (ready_tx, ready_rx) = mpsc::channel();
        let sh = shared.clone();
        let mut rx = Some(spawn_in_netns(
            &format!("smrx-{port}"),
            &pair.rx_ns,
            move || {
                let mut s = listen_accept(addr, ready_tx);
                let deadline = Instant::now() + max_duration + HOLD_TIMEOUT;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            sh.received.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock
                                    | io::ErrorKind::TimedOut
                                    | io::ErrorKind::Interrupted
                            ) =>
                        {
                            assert!(
                                Instant::now() < deadline,
                                "receiver on {addr}: no EOF after {} bytes",
                                sh.received.load(Ordering::SeqCst)
                            );
                        }
                        Err(e) => panic!("receiver on {addr}: read: {e}"),
                    }
                }
                sh.received.load(Ordering::SeqCst)
            },
        ));
        recv_setup(&ready_rx, &mut rx, &format!("TCP receiver on port {port}"));

        let (info_tx, info_rx) = mpsc::channel();
        let sh = shared.clone();
        let o = opts.clone();
        let mut tx = Some(spawn_in_netns(sender_name, &pair.tx_ns, move || {
            let mut s = connect(addr);
            let _ = info_tx.send((ThreadInfo::current(), key_of(&s)));
            let start = Instant::now();
            let buf = vec![0x5au8; o.chunk];
            let mut sent = 0u64;
            loop {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let want = match o.amount {
                    Amount::Bytes(n) if sent >= n => break,
                    Amount::Bytes(n) => (n - sent).min(o.chunk as u64) as usize,
                    Amount::UntilStopped => o.chunk,
                };
                if start.elapsed() > o.max_duration {
                    match o.amount {
                        Amount::Bytes(n) => panic!(
                            "sender to {addr}: only {sent} of {n} bytes written within {:?}",
                            o.max_duration
                        ),
                        Amount::UntilStopped => break,
                    }
                }
                s.write_all(&buf[..want])
                    .unwrap_or_else(|e| panic!("sender to {addr}: write after {sent} bytes: {e}"));
                sent += want as u64;
                sh.sent.store(sent, Ordering::SeqCst);
            }
            sh.sender_done.store(true, Ordering::SeqCst);
            if o.hold_open {
                hold_until(&sh.release);
            }
            drop(s);
            sent
        }));
        let (sender, key) = recv_setup(&info_rx, &mut tx, &format!("TCP sender to port {port}"));
        TcpFlow {
            port,
            sender,
            key,
            opts,
            shared,
            tx,
            rx,
        }
    }

    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::SeqCst)
    }

    /// Waits until the receiver has read `n` bytes.
    pub fn wait_received(&self, n: u64, timeout: Duration) {
        assert!(
            wait_until(timeout, || self.received() >= n),
            "receiver on port {}: expected {n} bytes within {timeout:?}, got {}",
            self.port,
            self.received()
        );
    }

    /// Waits until the sender has made its last write.
    pub fn wait_sender_done(&self, timeout: Duration) {
        assert!(
            wait_until(timeout, || self.shared.sender_done.load(Ordering::SeqCst)),
            "sender to port {}: not done within {timeout:?} ({} bytes written)",
            self.port,
            self.sent()
        );
    }

    /// Ends an [`Amount::UntilStopped`] flow's writing.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    /// Lets a `hold_open` sender close its socket.
    pub fn release(&self) {
        self.shared.release.store(true, Ordering::SeqCst);
    }

    /// Waits for the transfer to end (stopping an `UntilStopped` flow, releasing a held one),
    /// joins both threads.
    pub fn finish(mut self) -> FlowResult {
        if matches!(self.opts.amount, Amount::UntilStopped) {
            self.stop();
        }
        self.release();
        let what = format!("TCP sender to port {}", self.port);
        let sent = join_timeout(self.tx.take().unwrap(), THREAD_TIMEOUT, &what);
        let what = format!("TCP receiver on port {}", self.port);
        let received = join_timeout(self.rx.take().unwrap(), THREAD_TIMEOUT, &what);
        FlowResult { sent, received }
    }
}

impl Drop for TcpFlow {
    fn drop(&mut self) {
        // On a panic path: let the threads end by themselves (all their waits are bounded).
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.release.store(true, Ordering::SeqCst);
    }
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

        let (info_tx, info_rx) = mpsc::channel();
        let sh = shared.clone();
        let mut tx = Some(spawn_in_netns(sender_name, &pair.tx_ns, move || {
            let mut s = connect(addr);
            let _ = info_tx.send((ThreadInfo::current(), key_of(&s)));
            s.set_nonblocking(true).expect("sender nonblocking");
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
            hold_until(&sh.release);
            drop(s);
            sent
        }));
        let (sender, key) =
            recv_setup(&info_rx, &mut tx, &format!("stalled sender to port {port}"));
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

    /// Closes both ends, joins both threads; returns the bytes the sender wrote.
    pub fn finish(mut self) -> u64 {
        self.shared.release.store(true, Ordering::SeqCst);
        let what = format!("stalled sender to port {}", self.port);
        let sent = join_timeout(self.tx.take().unwrap(), THREAD_TIMEOUT, &what);
        let what = format!("stalled receiver on port {}", self.port);
        join_timeout(self.rx.take().unwrap(), THREAD_TIMEOUT, &what);
        sent
    }
}

impl Drop for StalledTcp {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.release.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// UDP traffic
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct UdpFlowResult {
    pub sender: ThreadInfo,
    /// The sender's (connected) socket.
    pub key: SockKey,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams the receiver got.
    pub received: u64,
}

/// Sends `count` datagrams of `size` bytes from a connected UDP socket bound to tx_addr
/// (thread `sender_name` in `tx_ns`) to rx_addr:`port`, where thread `smrx-<port>` counts
/// them. Returns when both are done (the receiver stops 1 s after the last datagram).
pub fn udp_flow(
    pair: &NetnsPair,
    port: u16,
    sender_name: &str,
    count: u64,
    size: usize,
) -> UdpFlowResult {
    let shared = Arc::new(FlowShared::default());
    let addr = pair.rx_sockaddr(port);
    let local = SocketAddr::V4(SocketAddrV4::new(pair.tx_addr, 0));

    let (ready_tx, ready_rx) = mpsc::channel();
    let sh = shared.clone();
    let mut rx = Some(spawn_in_netns(
        &format!("smrx-{port}"),
        &pair.rx_ns,
        move || {
            let s =
                UdpSocket::bind(addr).unwrap_or_else(|e| panic!("UDP receiver: bind {addr}: {e}"));
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("set_read_timeout");
            let _ = ready_tx.send(());
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut buf = vec![0u8; 65536];
            let mut got = 0u64;
            let mut last = Instant::now();
            while got < count && Instant::now() < deadline {
                match s.recv_from(&mut buf) {
                    Ok(_) => {
                        got += 1;
                        last = Instant::now();
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        if sh.sender_done.load(Ordering::SeqCst)
                            && last.elapsed() > Duration::from_secs(1)
                        {
                            break;
                        }
                    }
                    Err(e) => panic!("UDP receiver on {addr}: {e}"),
                }
            }
            got
        },
    ));
    recv_setup(&ready_rx, &mut rx, &format!("UDP receiver on port {port}"));

    let sh = shared.clone();
    let tx = spawn_in_netns(sender_name, &pair.tx_ns, move || {
        let s = UdpSocket::bind(local).unwrap_or_else(|e| panic!("UDP sender: bind {local}: {e}"));
        s.connect(addr)
            .unwrap_or_else(|e| panic!("UDP sender: connect {addr}: {e}"));
        s.set_write_timeout(Some(IO_TIMEOUT))
            .expect("set_write_timeout");
        let info = ThreadInfo::current();
        let key = SockKey::new(s.local_addr().expect("local_addr"), addr);
        let buf = vec![0x33u8; size];
        let mut sent = 0u64;
        for _ in 0..count {
            match s.send(&buf) {
                Ok(n) => assert_eq!(n, size, "UDP sender: short send"),
                Err(e) => {
                    sh.sender_done.store(true, Ordering::SeqCst);
                    panic!("UDP sender to {addr}: send after {sent} datagrams: {e}");
                }
            }
            sent += 1;
        }
        sh.sender_done.store(true, Ordering::SeqCst);
        (info, key, sent)
    });
    let (sender, key, sent) = join_timeout(tx, THREAD_TIMEOUT, "UDP sender");
    let received = join_timeout(rx.take().unwrap(), THREAD_TIMEOUT, "UDP receiver");
    UdpFlowResult {
        sender,
        key,
        sent,
        received,
    }
}

// ---------------------------------------------------------------------------------------------
// Running sockmem
// ---------------------------------------------------------------------------------------------

pub fn sockmem_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sockmem")
}

/// The backend the whole run is forced to (`SOCKMEM_TEST_BACKEND`, set by `cargo xtask
/// vm-test`), or `None` for sockmem's own choice.
pub fn test_backend() -> Option<String> {
    std::env::var("SOCKMEM_TEST_BACKEND")
        .ok()
        .filter(|b| !b.is_empty() && b != "auto")
}

/// A fresh path in cargo's per-test-target temporary directory (file removed if present).
pub fn tmp_path(what: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sockmem-{}-{n}-{what}", std::process::id()));
    let _ = fs::remove_file(&p);
    p
}

/// Runs the sockmem binary with `args` to completion (usage errors and the like).
pub fn run_sockmem(args: &[&str], timeout: Duration) -> CmdOutput {
    run_with_timeout(Command::new(sockmem_bin()).args(args), timeout)
}

/// A running `sockmem` with all its programs attached (its ready file exists).
/// Killed (SIGKILL) on drop if still running.
pub struct Tracer {
    what: String,
    child: Option<Child>,
    ready_file: PathBuf,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
}

impl Tracer {
    /// Starts `sockmem <args> --ready-file <tmp>` and waits (≤ 20 s) for the ready file.
    /// `args` starts with the subcommand, e.g. `["trace", "--json", "--port", "5000"]`.
    pub fn start(args: &[&str]) -> Tracer {
        let ready_file = tmp_path("ready");
        let mut cmd = Command::new(sockmem_bin());
        cmd.args(args).arg("--ready-file").arg(&ready_file);
        if let Some(b) = test_backend() {
            cmd.arg("--backend").arg(b);
        }
        Tracer::spawn(cmd, ready_file)
    }

    /// Starts `cmd` (which must make something write `ready_file`) and waits for the file.
    pub fn spawn(mut cmd: Command, ready_file: PathBuf) -> Tracer {
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
        let out = Some(spawn_reader(child.stdout.take().unwrap()));
        let err = Some(spawn_reader(child.stderr.take().unwrap()));
        let mut t = Tracer {
            what,
            child: Some(child),
            ready_file,
            out,
            err,
        };
        t.wait_ready();
        t
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.ready_file.exists() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .unwrap()
                .try_wait()
                .expect("try_wait sockmem");
            if let Some(status) = exited {
                let out = self.collect(status);
                panic!(
                    "expected the ready file {} to appear; the process exited first: {}",
                    self.ready_file.display(),
                    out.describe()
                );
            }
            if Instant::now() >= deadline {
                let out = self.kill();
                panic!(
                    "expected the ready file {} within {READY_TIMEOUT:?}; it did not appear \
                     (process killed): {}",
                    self.ready_file.display(),
                    out.describe()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `sig` to the process itself (not its group).
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }

    /// SIGTERM, then waits (≤ 20 s) for the exit and returns status and output.
    pub fn stop(mut self) -> CmdOutput {
        self.signal(libc::SIGTERM);
        self.wait_exit(EXIT_TIMEOUT, "after SIGTERM")
    }

    /// Waits (≤ `timeout`) for the process to exit by itself (e.g. `--duration`).
    pub fn wait(mut self, timeout: Duration) -> CmdOutput {
        self.wait_exit(timeout, "by itself")
    }

    fn wait_exit(&mut self, timeout: Duration, how: &str) -> CmdOutput {
        match wait_child(self.child.as_mut().unwrap(), timeout) {
            Some(status) => self.collect(status),
            None => {
                let out = self.kill();
                panic!(
                    "expected the process to exit within {timeout:?} {how}; it did not \
                     (killed): {}",
                    out.describe()
                );
            }
        }
    }

    fn kill(&mut self) -> CmdOutput {
        let child = self.child.as_mut().unwrap();
        kill_group(child, libc::SIGKILL);
        let status = child.wait().expect("wait after SIGKILL");
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> CmdOutput {
        // Already reaped: its pid may be reused, so no more signals to it or its group.
        self.child = None;
        let _ = fs::remove_file(&self.ready_file);
        CmdOutput {
            what: self.what.clone(),
            status,
            stdout: join_reader(self.out.take()),
            stderr: join_reader(self.err.take()),
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child, libc::SIGKILL);
            let _ = child.wait();
        }
        let _ = fs::remove_file(&self.ready_file);
    }
}

// ---------------------------------------------------------------------------------------------
// JSON output
// ---------------------------------------------------------------------------------------------

/// `sockmem trace --json` output: the header line, the event lines (in output order) and the
/// summary line.
#[derive(Debug)]
pub struct JsonTrace {
    pub header: Value,
    pub events: Vec<Value>,
    pub summary: Value,
}

fn short(line: &str) -> &str {
    match line.char_indices().nth(300) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

impl JsonTrace {
    /// Every non-empty line must be a JSON object with a string `type`: first `header`, last
    /// `summary`, all others `event`.
    pub fn parse(text: &str) -> Result<JsonTrace, String> {
        let mut lines = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .map_err(|e| format!("line {}: not JSON ({e}): {}", i + 1, short(line)))?;
            let ty = v
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("line {}: no string \"type\": {}", i + 1, short(line)))?
                .to_string();
            lines.push((i + 1, ty, v));
        }
        if lines.len() < 2 {
            return Err(format!(
                "expected at least a header and a summary line, got {} JSON lines; output:\n{}",
                lines.len(),
                tail(text, 2000)
            ));
        }
        let (_, first_ty, header) = lines.remove(0);
        if first_ty != "header" {
            return Err(format!(
                "first line has type {first_ty:?}, expected \"header\""
            ));
        }
        let (n, last_ty, summary) = lines.pop().unwrap();
        if last_ty != "summary" {
            return Err(format!(
                "last line ({n}) has type {last_ty:?}, expected \"summary\" (did sockmem exit \
                 cleanly?)"
            ));
        }
        let mut events = Vec::with_capacity(lines.len());
        for (n, ty, v) in lines {
            if ty != "event" {
                return Err(format!("line {n} has type {ty:?}, expected \"event\": {v}"));
            }
            events.push(v);
        }
        Ok(JsonTrace {
            header,
            events,
            summary,
        })
    }

    /// Events of one socket, in output order.
    pub fn events_for(&self, key: &SockKey) -> Vec<&Value> {
        self.events.iter().filter(|e| key.matches(e)).collect()
    }

    /// Events whose local or remote port is `port`.
    pub fn with_port(&self, port: u16) -> Vec<&Value> {
        self.events.iter().filter(|e| has_port(e, port)).collect()
    }

    /// Hook names listed in the header's `hooks` array.
    pub fn header_hooks(&self) -> Vec<String> {
        self.header
            .get("hooks")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("header has no \"hooks\" array: {}", self.header))
            .iter()
            .map(|h| {
                h.get("hook")
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("header hook entry without \"hook\": {h}"))
                    .to_string()
            })
            .collect()
    }

    /// Hooks the header says are attached, with the backend each got.
    pub fn attached_hooks(&self) -> Vec<(String, String)> {
        self.header
            .get("hooks")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("header has no \"hooks\" array: {}", self.header))
            .iter()
            .filter(|h| h.get("attached").and_then(Value::as_bool) == Some(true))
            .map(|h| {
                let field = |f: &str| h.get(f).and_then(Value::as_str).unwrap_or("").to_string();
                (field("hook"), field("backend"))
            })
            .collect()
    }

    pub fn is_attached(&self, hook: &str) -> bool {
        self.attached_hooks().iter().any(|(h, _)| h == hook)
    }

    pub fn summary_u64(&self, field: &str) -> u64 {
        self.summary
            .get(field)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| {
                panic!(
                    "summary field {field:?} missing or not a u64: {}",
                    self.summary
                )
            })
    }

    /// Asserts the summary's `events` equals the number of event lines.
    pub fn assert_summary_counts_events(&self) {
        let n = self.summary_u64("events");
        assert_eq!(
            n,
            self.events.len() as u64,
            "summary says {n} events, expected the {} event lines printed",
            self.events.len()
        );
    }
}

pub fn has_port(ev: &Value, port: u16) -> bool {
    let p = Some(u64::from(port));
    ev.get("lport").and_then(Value::as_u64) == p || ev.get("rport").and_then(Value::as_u64) == p
}

pub fn hook(ev: &Value) -> &str {
    get_str(ev, "hook")
}

pub fn get_str<'a>(ev: &'a Value, field: &str) -> &'a str {
    ev.get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("field {field:?} missing or not a string in {ev}"))
}

/// A string field that may be `null`.
pub fn get_opt_str<'a>(ev: &'a Value, field: &str) -> Option<&'a str> {
    match ev.get(field) {
        Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        _ => panic!("field {field:?} missing or neither string nor null in {ev}"),
    }
}

pub fn get_u64(ev: &Value, field: &str) -> u64 {
    ev.get(field)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("field {field:?} missing or not an unsigned integer in {ev}"))
}

/// An unsigned field that may be `null`.
pub fn get_opt_u64(ev: &Value, field: &str) -> Option<u64> {
    match ev.get(field) {
        Some(Value::Null) => None,
        Some(v) if v.as_u64().is_some() => v.as_u64(),
        _ => panic!("field {field:?} missing or neither unsigned integer nor null in {ev}"),
    }
}

pub fn get_i64(ev: &Value, field: &str) -> i64 {
    ev.get(field)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("field {field:?} missing or not an integer in {ev}"))
}

/// Number of events per hook name.
pub fn hook_counts<'a, I: IntoIterator<Item = &'a Value>>(events: I) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(hook(e).to_string()).or_insert(0) += 1;
    }
    m
}

/// Checks, in output order and per socket (`sk`), that `delta_field` equals `value_field` minus
/// the previous event's `value_field` (the first event of a socket: the value itself). Returns
/// the number of events checked, or the first mismatch.
pub fn check_deltas(
    events: &[&Value],
    value_field: &str,
    delta_field: &str,
) -> Result<usize, String> {
    let mut prev: HashMap<String, i64> = HashMap::new();
    for (i, ev) in events.iter().enumerate() {
        let sk = get_str(ev, "sk").to_string();
        let value = get_i64(ev, value_field);
        let delta = get_i64(ev, delta_field);
        let expected = value - prev.get(&sk).copied().unwrap_or(0);
        if delta != expected {
            return Err(format!(
                "event #{i} (hook {}, sk {sk}): expected {delta_field} == {expected} \
                 ({value_field} {value} minus previous {}), got {delta}; event: {ev}",
                hook(ev),
                prev.get(&sk)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "none (first event)".to_string())
            ));
        }
        prev.insert(sk, value);
    }
    Ok(events.len())
}

// ---------------------------------------------------------------------------------------------
// The kernel's own view: ss and tc
// ---------------------------------------------------------------------------------------------

/// `ss -m`'s `skmem:(r..,rb..,t..,tb..,f..,w..,o..,bl..,d..)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkMem {
    /// sk_rmem_alloc
    pub r: u64,
    /// sk_rcvbuf
    pub rb: u64,
    /// sk_wmem_alloc minus 1
    pub t: u64,
    /// sk_sndbuf
    pub tb: u64,
    /// sk_forward_alloc
    pub f: u64,
    /// sk_wmem_queued
    pub w: u64,
    /// sk_omem_alloc
    pub o: u64,
    /// backlog length
    pub bl: u64,
    /// drops
    pub d: u64,
}

/// Parses the first `skmem:(...)` in `text`.
pub fn parse_skmem(text: &str) -> Result<SkMem, String> {
    let start = text
        .find("skmem:(")
        .ok_or_else(|| format!("no \"skmem:(\" in {text:?}"))?
        + "skmem:(".len();
    let end = text[start..]
        .find(')')
        .ok_or_else(|| format!("unterminated skmem in {text:?}"))?
        + start;
    let mut m = SkMem::default();
    let mut seen = 0;
    for item in text[start..end].split(',') {
        let split = item
            .find(|c: char| c.is_ascii_digit())
            .ok_or_else(|| format!("skmem item {item:?} has no number"))?;
        let (k, v) = item.split_at(split);
        let v: u64 = v
            .parse()
            .map_err(|e| format!("skmem item {item:?}: bad number: {e}"))?;
        let slot = match k {
            "r" => &mut m.r,
            "rb" => &mut m.rb,
            "t" => &mut m.t,
            "tb" => &mut m.tb,
            "f" => &mut m.f,
            "w" => &mut m.w,
            "o" => &mut m.o,
            "bl" => &mut m.bl,
            "d" => &mut m.d,
            _ => continue, // fields of newer ss versions
        };
        *slot = v;
        seen += 1;
    }
    if seen < 9 {
        return Err(format!(
            "expected the 9 skmem fields r,rb,t,tb,f,w,o,bl,d, found {seen} in {:?}",
            &text[start..end]
        ));
    }
    Ok(m)
}

/// The kernel's memory counters of the established TCP socket with local port `lport` and
/// remote port `rport` in namespace `ns`
/// (`ss -tmnH state established '( sport = :L and dport = :R )'`). Panics unless exactly one
/// socket matches.
pub fn ss_skmem(ns: &str, lport: u16, rport: u16) -> SkMem {
    let filter = format!("( sport = :{lport} and dport = :{rport} )");
    let out = ns_checked(ns, "ss", &["-tmnH", "state", "established", &filter]);
    let n = out.matches("skmem:(").count();
    assert_eq!(
        n, 1,
        "expected exactly 1 socket {lport}->{rport} in ss output, found {n}:\n{out}"
    );
    parse_skmem(&out).unwrap_or_else(|e| panic!("ss output: {e}"))
}

/// Reads `ss` every `interval` until `w` is > 0 and equal in two consecutive reads; panics after
/// `timeout`.
pub fn wait_ss_stable(
    ns: &str,
    lport: u16,
    rport: u16,
    interval: Duration,
    timeout: Duration,
) -> SkMem {
    let deadline = Instant::now() + timeout;
    let mut prev = ss_skmem(ns, lport, rport);
    loop {
        thread::sleep(interval);
        let cur = ss_skmem(ns, lport, rport);
        if cur.w > 0 && cur.w == prev.w {
            return cur;
        }
        assert!(
            Instant::now() < deadline,
            "expected ss w of {lport}->{rport} to be > 0 and stable within {timeout:?}; last two \
             reads w={} then w={}",
            prev.w,
            cur.w
        );
        prev = cur;
    }
}

/// `tc -s qdisc show dev <dev>` in namespace `ns`: (bytes, packets) of the first (root) qdisc's
/// `Sent N bytes M pkt`.
pub fn qdisc_sent(ns: &str, dev: &str) -> (u64, u64) {
    let out = ns_checked(ns, "tc", &["-s", "qdisc", "show", "dev", dev]);
    parse_qdisc_sent(&out).unwrap_or_else(|e| panic!("tc -s qdisc output: {e}\n{out}"))
}

pub fn parse_qdisc_sent(text: &str) -> Result<(u64, u64), String> {
    let i = text.find("Sent ").ok_or("no \"Sent \"")?;
    let words: Vec<&str> = text[i..].split_whitespace().take(5).collect();
    if words.len() < 5 || words[2] != "bytes" || words[4] != "pkt" {
        return Err(format!("unexpected stats format: {words:?}"));
    }
    let bytes = words[1]
        .parse()
        .map_err(|e| format!("bytes {:?}: {e}", words[1]))?;
    let pkts = words[3]
        .parse()
        .map_err(|e| format!("pkts {:?}: {e}", words[3]))?;
    Ok((bytes, pkts))
}

/// Lists the network namespaces (`ip netns list`, names only).
pub fn netns_list() -> Vec<String> {
    run_checked("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Whether `ip` address `a` (as printed) is one of ours (198.18.0.0/15).
pub fn is_test_addr(a: &str) -> bool {
    match a.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let o = v4.octets();
            o[0] == 198 && (o[1] & 0xfe) == 18
        }
        _ => false,
    }
}

/// Writes `s` to a file (used for small scripts).
pub fn write_file(p: &Path, s: &str) {
    let mut f = File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    f.write_all(s.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

// ---------------------------------------------------------------------------------------------
// Additions for the `sockmem hist` tests
// ---------------------------------------------------------------------------------------------

impl NetnsPair {
    /// Replaces the sender veth's root qdisc by `tbf rate <rate> burst <burst> latency
    /// <latency>` (tc units: `40mbit`, `256kb` = 256 KiB, `200ms`).
    pub fn set_tbf(&self, rate: &str, burst: &str, latency: &str) {
        ns_checked(
            &self.tx_ns,
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                &self.tx_if,
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                burst,
                "latency",
                latency,
            ],
        );
    }

    /// `(tx_bytes, tx_packets)` of the sender veth (`/proc/net/dev` in the sender namespace);
    /// veth counts one packet per skb.
    pub fn tx_dev_stats(&self) -> (u64, u64) {
        let text = ns_checked(&self.tx_ns, "cat", &["/proc/net/dev"]);
        parse_proc_net_dev_tx(&text, &self.tx_if).unwrap_or_else(|e| panic!("{e}:\n{text}"))
    }

    /// `tc qdisc show dev <tx_if>` inside the sender namespace (text).
    pub fn tx_qdisc_show(&self) -> String {
        ns_checked(&self.tx_ns, "tc", &["qdisc", "show", "dev", &self.tx_if])
    }

    /// The root qdisc's counters on the sender veth (`tc -s -j qdisc show`).
    pub fn tx_qdisc_stats(&self) -> QdiscStats {
        let out = ns_checked(
            &self.tx_ns,
            "tc",
            &["-s", "-j", "qdisc", "show", "dev", &self.tx_if],
        );
        parse_qdisc_stats_json(&out).unwrap_or_else(|e| panic!("tc -s -j qdisc output: {e}\n{out}"))
    }
}

/// The root qdisc's statistics as `tc -s -j qdisc show` reports them. Units as the kernel
/// keeps them: `sent_pkts` counts GSO segments (`gso_segs` per skb), `qlen` counts skbs, bytes
/// are `qdisc_pkt_len` (GSO headers of every segment included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QdiscStats {
    pub kind_is_noqueue: bool,
    pub sent_bytes: u64,
    pub sent_pkts: u64,
    pub drops: u64,
    pub overlimits: u64,
    pub requeues: u64,
    /// Bytes waiting in the qdisc.
    pub backlog: u64,
    /// skbs waiting in the qdisc.
    pub qlen: u64,
}

/// Parses the root qdisc (the first entry with `"root": true`, else the first) of
/// `tc -s -j qdisc show dev X`.
pub fn parse_qdisc_stats_json(text: &str) -> Result<QdiscStats, String> {
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| format!("not JSON: {e}"))?;
    let arr = v.as_array().ok_or("not a JSON array")?;
    let q = arr
        .iter()
        .find(|q| q.get("root").and_then(Value::as_bool) == Some(true))
        .or_else(|| arr.first())
        .ok_or("no qdisc in the array")?;
    let n = |f: &str| -> Result<u64, String> {
        q.get(f)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("qdisc field {f:?} missing or not a u64 in {q}"))
    };
    Ok(QdiscStats {
        kind_is_noqueue: q.get("kind").and_then(Value::as_str) == Some("noqueue"),
        sent_bytes: n("bytes")?,
        sent_pkts: n("packets")?,
        drops: n("drops")?,
        overlimits: n("overlimits")?,
        requeues: n("requeues")?,
        backlog: n("backlog")?,
        qlen: n("qlen")?,
    })
}

/// `(tx_bytes, tx_packets)` of `dev` in a `/proc/net/dev` text. veth counts one packet per
/// skb handed to it (a GSO skb is one packet here, unlike the qdisc's `Sent .. pkt`).
pub fn parse_proc_net_dev_tx(text: &str, dev: &str) -> Result<(u64, u64), String> {
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() != dev {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 10 {
            return Err(format!("short /proc/net/dev line for {dev}: {line:?}"));
        }
        let p = |i: usize| -> Result<u64, String> {
            f[i].parse()
                .map_err(|e| format!("/proc/net/dev field {i} {:?}: {e}", f[i]))
        };
        return Ok((p(8)?, p(9)?));
    }
    Err(format!("no line for {dev} in /proc/net/dev"))
}

/// One reading of a qdisc and of its device's transmit counters, taken by [`QdiscSampler`].
#[derive(Clone, Copy, Debug)]
pub struct QdiscSample {
    pub at: Instant,
    pub q: QdiscStats,
    /// The device's `tx_bytes` / `tx_packets` (`/proc/net/dev` of the namespace).
    pub dev_tx_bytes: u64,
    pub dev_tx_packets: u64,
}

/// Reads the qdisc's statistics and the device's `/proc/net/dev` line every `interval` from a
/// thread inside the namespace. One long-lived `tc -s -j -batch -` started from that thread
/// (so it inherits the namespace) answers a `qdisc show dev X` per reading: no process is
/// started per reading, which would disturb what is measured; `/proc/thread-self/net/dev` is
/// the thread's own namespace's.
pub struct QdiscSampler {
    stop: Arc<AtomicBool>,
    h: Option<JoinHandle<Vec<QdiscSample>>>,
    what: String,
}

impl QdiscSampler {
    /// Starts sampling; the first reading is taken before this returns.
    pub fn start(ns: &str, dev: &str, interval: Duration) -> QdiscSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let dev_s = dev.to_string();
        let (first_tx, first_rx) = mpsc::channel();
        let what = format!("qdisc sampler of {dev} in {ns}");
        let mut h = Some(spawn_in_netns("smqdisc-sample", ns, move || {
            let mut child = Command::new("tc")
                .args(["-s", "-j", "-batch", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("could not start tc -batch: {e}"));
            // Killed (and reaped) however this thread ends.
            struct Reap(Child);
            impl Drop for Reap {
                fn drop(&mut self) {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                }
            }
            let mut stdin = child.stdin.take().unwrap();
            let mut stdout = io::BufReader::new(child.stdout.take().unwrap());
            let _reap = Reap(child);
            let command = format!("qdisc show dev {dev_s}\n");
            let mut read = || -> QdiscSample {
                use io::BufRead;
                stdin
                    .write_all(command.as_bytes())
                    .and_then(|_| stdin.flush())
                    .unwrap_or_else(|e| panic!("writing to tc -batch: {e}"));
                let mut line = String::new();
                let n = stdout
                    .read_line(&mut line)
                    .unwrap_or_else(|e| panic!("reading from tc -batch: {e}"));
                assert!(n > 0, "tc -batch ended its output");
                let at = Instant::now();
                let q = parse_qdisc_stats_json(&line)
                    .unwrap_or_else(|e| panic!("tc -s -j qdisc output: {e}\n{line}"));
                let net_dev = fs::read_to_string("/proc/thread-self/net/dev")
                    .expect("read /proc/thread-self/net/dev");
                let (dev_tx_bytes, dev_tx_packets) = parse_proc_net_dev_tx(&net_dev, &dev_s)
                    .unwrap_or_else(|e| panic!("{e}:\n{net_dev}"));
                QdiscSample {
                    at,
                    q,
                    dev_tx_bytes,
                    dev_tx_packets,
                }
            };
            let mut samples = vec![read()];
            let _ = first_tx.send(());
            let start = Instant::now();
            let deadline = start + HOLD_TIMEOUT;
            let mut k: u32 = 1;
            while !st.load(Ordering::SeqCst) && Instant::now() < deadline {
                let next = start + interval * k;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    // Behind schedule: skip the missed ticks.
                    k = ((now - start).as_nanos() / interval.as_nanos().max(1)) as u32;
                }
                k += 1;
                samples.push(read());
            }
            // One reading taken after the stop was asked for.
            samples.push(read());
            samples
        }));
        recv_setup(&first_rx, &mut h, &what);
        QdiscSampler { stop, h, what }
    }

    /// Stops sampling (after one last reading) and returns every reading, in time order.
    pub fn finish(mut self) -> Vec<QdiscSample> {
        self.stop.store(true, Ordering::SeqCst);
        join_timeout(self.h.take().unwrap(), THREAD_TIMEOUT, &self.what)
    }
}

impl Drop for QdiscSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One blocking `write` of a [`BlockingStalledTcp`] sender.
#[derive(Clone, Copy, Debug)]
pub struct WriteRecord {
    pub took: Duration,
    /// Bytes written, or `None` for `EAGAIN` (the send timeout expired with nothing written).
    pub wrote: Option<usize>,
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

        let (info_tx, info_rx) = mpsc::channel();
        let sh = shared.clone();
        let mut tx = Some(spawn_in_netns(sender_name, &pair.tx_ns, move || {
            let mut s = connect(addr);
            s.set_write_timeout(Some(sndtimeo))
                .expect("set_write_timeout (SO_SNDTIMEO)");
            let _ = info_tx.send((ThreadInfo::current(), key_of(&s)));
            let buf = vec![0xa5u8; 64 * 1024];
            let start = Instant::now();
            let mut sent = 0u64;
            while !sh.stop.load(Ordering::SeqCst) && start.elapsed() < HOLD_TIMEOUT {
                let t0 = Instant::now();
                let r = s.write(&buf);
                let took = t0.elapsed();
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
                    .push(WriteRecord { took, wrote });
            }
            sh.writes_done.store(true, Ordering::SeqCst);
            hold_until(&sh.release);
            drop(s);
        }));
        let (sender, key) = recv_setup(
            &info_rx,
            &mut tx,
            &format!("blocking stalled sender to port {port}"),
        );
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
        let what = format!("blocking stalled sender to port {}", self.port);
        join_timeout(self.tx.take().unwrap(), THREAD_TIMEOUT, &what);
        let what = format!("stalled receiver on port {}", self.port);
        join_timeout(self.rx.take().unwrap(), THREAD_TIMEOUT, &what);
    }
}

impl Drop for BlockingStalledTcp {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.release.store(true, Ordering::SeqCst);
    }
}

/// `sockmem hist --json` output: one pretty-printed JSON document.
#[derive(Debug)]
pub struct HistDoc {
    pub doc: Value,
}

/// The kinds every `totals` array must hold, in order.
pub const HIST_KINDS: [&str; 7] = [
    "sendmsg_time",
    "send_blocked",
    "qdisc_sojourn",
    "driver_time",
    "below_tcp",
    "wmem_queued",
    "wmem_alloc",
];

impl HistDoc {
    /// Parses the document and checks its shape: `type` "hist", the `per` asked for, one total
    /// per kind in [`HIST_KINDS`] order, a `completeness` object, a `hooks` array.
    pub fn parse(text: &str, per: &str) -> Result<HistDoc, String> {
        let doc: Value = serde_json::from_str(text.trim()).map_err(|e| {
            format!(
                "not one JSON document ({e}); output ends:\n{}",
                tail(text, 2000)
            )
        })?;
        let field = |f: &str| {
            doc.get(f)
                .ok_or_else(|| format!("no {f:?} in the document"))
        };
        if field("type")?.as_str() != Some("hist") {
            return Err(format!("\"type\" is {}, expected \"hist\"", field("type")?));
        }
        if field("per")?.as_str() != Some(per) {
            return Err(format!("\"per\" is {}, expected {per:?}", field("per")?));
        }
        let names: Vec<&str> = field("totals")?
            .as_array()
            .ok_or("\"totals\" is not an array")?
            .iter()
            .map(|h| h.get("name").and_then(Value::as_str).unwrap_or("?"))
            .collect();
        if names != HIST_KINDS {
            return Err(format!(
                "expected totals named {HIST_KINDS:?} in that order, got {names:?}"
            ));
        }
        field("histograms")?
            .as_array()
            .ok_or("\"histograms\" is not an array")?;
        field("completeness")?
            .as_object()
            .ok_or("\"completeness\" is not an object")?;
        field("hooks")?
            .as_array()
            .ok_or("\"hooks\" is not an array")?;
        Ok(HistDoc { doc })
    }

    /// The total histogram of kind `name`.
    pub fn total(&self, name: &str) -> &Value {
        self.doc["totals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("no total named {name:?}"))
    }

    /// The keyed histograms of kind `name`.
    pub fn keyed(&self, name: &str) -> Vec<&Value> {
        self.doc["histograms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["name"] == name)
            .collect()
    }

    /// The keyed histogram of kind `name` with key `key`, if any.
    pub fn keyed_one(&self, name: &str, key: &str) -> Option<&Value> {
        self.keyed(name).into_iter().find(|h| h["key"] == key)
    }

    /// The keys of the keyed histograms of kind `name`.
    pub fn keys(&self, name: &str) -> Vec<String> {
        self.keyed(name)
            .iter()
            .map(|h| get_str(h, "key").to_string())
            .collect()
    }

    pub fn completeness(&self, field: &str) -> u64 {
        get_u64(&self.doc["completeness"], field)
    }

    /// The `hooks` entry of `hook`.
    pub fn hook(&self, hook: &str) -> &Value {
        self.doc["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["hook"] == hook)
            .unwrap_or_else(|| panic!("no hook {hook:?} in the hooks list: {}", self.doc["hooks"]))
    }

    pub fn hook_attached(&self, hook: &str) -> bool {
        self.hook(hook).get("attached").and_then(Value::as_bool) == Some(true)
    }

    /// Why `hook` is not attached (empty if it is, or if no reason was given).
    pub fn hook_reason(&self, hook: &str) -> String {
        self.hook(hook)
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    pub fn completeness_line(&self) -> String {
        self.doc["completeness"].to_string()
    }
}

/// `count`, `sum`, `max`, ... of a histogram object.
pub fn hist_u64(h: &Value, field: &str) -> u64 {
    get_u64(h, field)
}

pub fn hist_f64(h: &Value, field: &str) -> f64 {
    h.get(field)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("field {field:?} missing or not a number in {h}"))
}

/// One line for messages: `name[key]: count N mean .. p50 .. p90 .. p99 .. max ..` (ns or bytes).
pub fn hist_brief(h: &Value) -> String {
    format!(
        "{}[{}]: count {} sum {} mean {:.0} p50 {} p90 {} p99 {} max {} ({})",
        get_str(h, "name"),
        get_str(h, "key"),
        get_u64(h, "count"),
        get_u64(h, "sum"),
        hist_f64(h, "mean"),
        get_u64(h, "p50"),
        get_u64(h, "p90"),
        get_u64(h, "p99"),
        get_u64(h, "max"),
        get_str(h, "unit"),
    )
}
