//! Traffic from named threads of the test process: a TCP transfer ([`TcpFlow`]) and UDP
//! datagrams ([`udp_flow`]), each end on its own thread in its own namespace.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream, UdpSocket};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::threads::{hold_until, join_ends, pin_to_cpu, recv_setup};
use super::{
    join_timeout, spawn_in_netns, wait_until, NetnsPair, SockKey, ThreadInfo, HOLD_TIMEOUT,
    IO_TIMEOUT, THREAD_TIMEOUT,
};

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
    /// The sender is an AF_INET6 socket connected to `::ffff:<rx_addr>` (a dual-stack socket
    /// talking IPv4); the receiver still listens on its IPv4 address.
    pub mapped_v6: bool,
    /// The receiver accepts, then waits this long before its first read: what arrives in the
    /// meantime sits in its receive queue.
    pub reader_waits: Duration,
    /// Pin the sender and the receiver to these CPUs.
    pub cpus: Option<(usize, usize)>,
    /// `SO_SNDBUF` of the sender's socket (the kernel doubles it and stops autotuning it).
    pub sndbuf: Option<usize>,
    /// The sender sleeps this long after each write.
    pub write_gap: Duration,
    /// `TCP_NODELAY` on the sender's socket (no Nagle: each small write leaves at once).
    pub nodelay: bool,
    /// `SO_MAX_PACING_RATE` of the sender's socket, bytes per second.
    pub max_pacing_rate: Option<u64>,
}

impl TcpFlowOpts {
    pub fn bytes(n: u64) -> TcpFlowOpts {
        TcpFlowOpts {
            amount: Amount::Bytes(n),
            chunk: 64 * 1024,
            hold_open: false,
            max_duration: Duration::from_secs(60),
            mapped_v6: false,
            reader_waits: Duration::ZERO,
            cpus: None,
            sndbuf: None,
            write_gap: Duration::ZERO,
            nodelay: false,
            max_pacing_rate: None,
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

    /// The sender connects an AF_INET6 socket to the receiver's IPv4-mapped address.
    pub fn mapped_v6(mut self) -> TcpFlowOpts {
        self.mapped_v6 = true;
        self
    }

    /// The receiver starts reading only `wait` after it accepted.
    pub fn reader_waits(mut self, wait: Duration) -> TcpFlowOpts {
        self.reader_waits = wait;
        self
    }

    /// Pins the sender to CPU `sender` and the receiver to CPU `receiver`.
    pub fn on_cpus(mut self, sender: usize, receiver: usize) -> TcpFlowOpts {
        self.cpus = Some((sender, receiver));
        self
    }

    /// Sets the upper bound on the writing phase (default 60 s).
    pub fn for_at_most(mut self, max_duration: Duration) -> TcpFlowOpts {
        self.max_duration = max_duration;
        self
    }

    /// Writes of `bytes` each (default 64 KiB).
    pub fn chunk(mut self, bytes: usize) -> TcpFlowOpts {
        self.chunk = bytes;
        self
    }

    /// Sets `SO_SNDBUF` to `bytes` on the sender's socket once connected.
    pub fn sndbuf(mut self, bytes: usize) -> TcpFlowOpts {
        self.sndbuf = Some(bytes);
        self
    }

    /// The sender sleeps `gap` after each write.
    pub fn write_gap(mut self, gap: Duration) -> TcpFlowOpts {
        self.write_gap = gap;
        self
    }

    /// `TCP_NODELAY` on the sender's socket.
    pub fn nodelay(mut self) -> TcpFlowOpts {
        self.nodelay = true;
        self
    }

    /// `SO_MAX_PACING_RATE` on the sender's socket (bytes per second): TCP paces itself to it.
    pub fn max_pacing_rate(mut self, bytes_per_s: u64) -> TcpFlowOpts {
        self.max_pacing_rate = Some(bytes_per_s);
        self
    }
}

#[derive(Default)]
pub(super) struct FlowShared {
    pub(super) sent: AtomicU64,
    /// `write_all` calls completed by the sender.
    pub(super) writes: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) sender_done: AtomicBool,
    pub(super) stop: AtomicBool,
    pub(super) release: AtomicBool,
    /// [`StalledTcp`](super::stalled::StalledTcp)'s sender closes its socket alone.
    pub(super) close_sender: AtomicBool,
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
pub(super) fn listen_accept(addr: SocketAddr, ready: mpsc::Sender<()>) -> TcpStream {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("receiver: bind {addr}: {e}"));
    listener
        .set_nonblocking(true)
        .expect("the listener made nonblocking");
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
    stream
        .set_nonblocking(false)
        .expect("the accepted socket made blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("a read timeout set on the socket");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("a write timeout set on the socket");
    stream
}

pub(super) fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("sender: connect to {addr}: {e}"));
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("a write timeout set on the socket");
    s.set_read_timeout(Some(IO_TIMEOUT))
        .expect("a read timeout set on the socket");
    s
}

/// Whether a socket call's error only means "nothing yet" (timeout, interrupted).
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Starts thread `sender_name` in the sender namespace: it connects to `addr`, hands back its
/// identity and its socket's, then runs `body` on the socket. Returns once it is connected
/// (`what` names it if it is not).
pub(super) fn spawn_sender<R: Send + 'static>(
    pair: &NetnsPair,
    addr: SocketAddr,
    sender_name: &str,
    what: &str,
    body: impl FnOnce(TcpStream) -> R + Send + 'static,
) -> (ThreadInfo, SockKey, Option<JoinHandle<R>>) {
    let (info_tx, info_rx) = mpsc::channel();
    let mut tx = Some(spawn_in_netns(sender_name, &pair.tx_ns, move || {
        let s = connect(addr);
        let _ = info_tx.send((ThreadInfo::current(), key_of(&s)));
        body(s)
    }));
    let (sender, key) = recv_setup(&info_rx, &mut tx, what);
    (sender, key, tx)
}

pub(super) fn key_of(s: &TcpStream) -> SockKey {
    SockKey::new(
        s.local_addr().expect("the socket to have a local address"),
        s.peer_addr()
            .expect("the connected socket to have a peer address"),
    )
}

impl TcpFlow {
    /// Starts the receiver (thread `smrx-<port>` in `rx_ns`, listening on rx_addr:`port`) and
    /// the sender (thread `sender_name` in `tx_ns`); returns once the sender is connected.
    pub fn start(pair: &NetnsPair, port: u16, sender_name: &str, opts: TcpFlowOpts) -> TcpFlow {
        let shared = Arc::new(FlowShared::default());
        let addr = pair.rx_sockaddr(port);
        let connect_to = if opts.mapped_v6 {
            SocketAddr::V6(SocketAddrV6::new(pair.rx_addr.to_ipv6_mapped(), port, 0, 0))
        } else {
            addr
        };
        let max_duration = opts.max_duration;
        let reader_waits = opts.reader_waits;
        let cpus = opts.cpus;

        let (ready_tx, ready_rx) = mpsc::channel();
        let sh = shared.clone();
        let mut rx = Some(spawn_in_netns(
            &format!("smrx-{port}"),
            &pair.rx_ns,
            move || {
                if let Some((_, cpu)) = cpus {
                    pin_to_cpu(cpu);
                }
                let mut s = listen_accept(addr, ready_tx);
                thread::sleep(reader_waits);
                let deadline = Instant::now() + max_duration + HOLD_TIMEOUT;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            sh.received.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        Err(e) if is_transient(&e) => {
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

        let sh = shared.clone();
        let o = opts.clone();
        let what = format!("TCP sender to port {port}");
        let (sender, key, tx) = spawn_sender(pair, connect_to, sender_name, &what, move |mut s| {
            if let Some((cpu, _)) = o.cpus {
                pin_to_cpu(cpu);
            }
            if let Some(bytes) = o.sndbuf {
                set_sndbuf(&s, bytes);
            }
            if o.nodelay {
                s.set_nodelay(true)
                    .expect("TCP_NODELAY set on the sender's socket");
            }
            if let Some(rate) = o.max_pacing_rate {
                set_max_pacing_rate(&s, rate);
            }
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
                sh.writes.fetch_add(1, Ordering::SeqCst);
                if !o.write_gap.is_zero() {
                    thread::sleep(o.write_gap);
                }
            }
            sh.sender_done.store(true, Ordering::SeqCst);
            if o.hold_open {
                hold_until(&sh.release);
            }
            drop(s);
            sent
        });
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

    /// `write_all` calls the sender has completed so far.
    pub fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::SeqCst)
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
        let what = format!("TCP flow to port {}", self.port);
        let (sent, received) = join_ends(&mut self.tx, &mut self.rx, &what);
        FlowResult { sent, received }
    }

    /// [`TcpFlow::finish`] for a flow of [`Amount::Bytes`]: panics unless the receiver read
    /// every byte.
    pub fn finish_transfer(self) -> Transfer {
        let Amount::Bytes(bytes) = self.opts.amount else {
            panic!(
                "finish_transfer: the flow to port {} has no fixed size ({:?})",
                self.port, self.opts.amount
            )
        };
        let (port, sender, key) = (self.port, self.sender.clone(), self.key.clone());
        let r = self.finish();
        assert_eq!(
            r,
            FlowResult {
                sent: bytes,
                received: bytes
            },
            "expected {bytes} bytes written and read on port {port}, got {} written, {} read",
            r.sent,
            r.received
        );
        Transfer { sender, key, bytes }
    }
}

impl Drop for TcpFlow {
    fn drop(&mut self) {
        // On a panic path: let the threads end by themselves (all their waits are bounded).
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.release.store(true, Ordering::SeqCst);
    }
}

/// A finished TCP transfer of a known size: who sent it, from which socket.
#[derive(Clone, Debug)]
pub struct Transfer {
    pub sender: ThreadInfo,
    /// The sender's socket.
    pub key: SockKey,
    pub bytes: u64,
}

/// A [`TcpFlow`] of `bytes` from thread `sender_name` to rx_addr:`port`, run to its end; panics
/// unless the receiver read every byte.
pub fn tcp_transfer(pair: &NetnsPair, port: u16, sender_name: &str, bytes: u64) -> Transfer {
    TcpFlow::start(pair, port, sender_name, TcpFlowOpts::bytes(bytes)).finish_transfer()
}

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
    udp_datagrams(pair, port, sender_name, count, size, true)
}

/// [`udp_flow`] from an UNCONNECTED socket: each datagram is a `sendto()` naming rx_addr:`port`;
/// the socket's own 4-tuple has no remote end. `key` is the 4-tuple of its datagrams (its
/// local address and ephemeral port, the destination).
pub fn udp_sendto_flow(
    pair: &NetnsPair,
    port: u16,
    sender_name: &str,
    count: u64,
    size: usize,
) -> UdpFlowResult {
    udp_datagrams(pair, port, sender_name, count, size, false)
}

/// What [`udp_sendto_alternating`] did: per destination port, the 4-tuple of its datagrams,
/// datagrams sent and received.
#[derive(Clone, Debug)]
pub struct UdpAlternating {
    pub sender: ThreadInfo,
    pub to: Vec<(SockKey, u64, u64)>,
}

/// One UNCONNECTED UDP socket (thread `sender_name` in `tx_ns`) sends `count` datagrams of
/// `size` bytes in turn to rx_addr:`ports[0]`, rx_addr:`ports[1]`, ... (a `sendto()` each),
/// where a thread per port counts them.
pub fn udp_sendto_alternating(
    pair: &NetnsPair,
    ports: &[u16],
    sender_name: &str,
    count: u64,
    size: usize,
) -> UdpAlternating {
    let shared = Arc::new(FlowShared::default());
    let local = SocketAddr::V4(SocketAddrV4::new(pair.tx_addr, 0));
    let per_port = |i: usize| {
        let n = ports.len() as u64;
        count / n + u64::from((i as u64) < count % n)
    };
    let mut receivers = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let addr = pair.rx_sockaddr(port);
        let expected = per_port(i);
        let (ready_tx, ready_rx) = mpsc::channel();
        let sh = shared.clone();
        let mut rx = Some(spawn_in_netns(
            &format!("smrx-{port}"),
            &pair.rx_ns,
            move || {
                let s = UdpSocket::bind(addr)
                    .unwrap_or_else(|e| panic!("UDP receiver: bind {addr}: {e}"));
                force_rcvbuf(&s, UDP_RCVBUF);
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .expect("a read timeout set on the socket");
                let _ = ready_tx.send(());
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut buf = vec![0u8; 65536];
                let (mut got, mut last) = (0u64, Instant::now());
                while got < expected && Instant::now() < deadline {
                    match s.recv_from(&mut buf) {
                        Ok(_) => {
                            got += 1;
                            last = Instant::now();
                        }
                        Err(e) if is_transient(&e) => {
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
        receivers.push(rx);
    }
    let sh = shared.clone();
    let dests: Vec<SocketAddr> = ports.iter().map(|&p| pair.rx_sockaddr(p)).collect();
    let tx = spawn_in_netns(sender_name, &pair.tx_ns, move || {
        let s = UdpSocket::bind(local).unwrap_or_else(|e| panic!("UDP sender: bind {local}: {e}"));
        s.set_write_timeout(Some(IO_TIMEOUT))
            .expect("a write timeout set on the socket");
        let me = s.local_addr().expect("the socket to have a local address");
        let buf = vec![0x44u8; size];
        let mut sent = vec![0u64; dests.len()];
        for i in 0..count as usize {
            let d = i % dests.len();
            if let Err(e) = s.send_to(&buf, dests[d]) {
                sh.sender_done.store(true, Ordering::SeqCst);
                panic!("UDP sender to {}: datagram {i}: {e}", dests[d]);
            }
            sent[d] += 1;
        }
        sh.sender_done.store(true, Ordering::SeqCst);
        let keys: Vec<SockKey> = dests.iter().map(|d| SockKey::new(me, *d)).collect();
        (ThreadInfo::current(), keys, sent)
    });
    let (sender, keys, sent) = join_timeout(tx, THREAD_TIMEOUT, "UDP sender");
    let to = receivers
        .into_iter()
        .zip(keys)
        .zip(sent)
        .map(|((mut rx, key), sent)| {
            let got = join_timeout(
                rx.take().expect("the receiver thread joined only once"),
                THREAD_TIMEOUT,
                "UDP receiver",
            );
            (key, sent, got)
        })
        .collect();
    UdpAlternating { sender, to }
}

/// Receive buffer given to UDP receivers (`SO_RCVBUFFORCE`, past `rmem_max`): room for every
/// datagram a test sends even if the receiving thread is slow to be scheduled.
const UDP_RCVBUF: i32 = 8 << 20;

/// Sets `SO_SNDBUF` to `bytes` (the kernel doubles it, within `wmem_max`, and no longer
/// autotunes it); panics on failure.
pub fn set_sndbuf(s: &impl AsRawFd, bytes: usize) {
    let v = bytes as i32;
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_SNDBUF, {bytes}): {}",
        io::Error::last_os_error()
    );
}

/// Sets `SO_MAX_PACING_RATE` to `bytes_per_s` (a 64-bit value since 4.20; 32 bits are
/// enough here); panics on failure.
pub fn set_max_pacing_rate(s: &impl AsRawFd, bytes_per_s: u64) {
    let v = u32::try_from(bytes_per_s).expect("a pacing rate below 4 GB/s");
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&v as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_MAX_PACING_RATE, {bytes_per_s}): {}",
        io::Error::last_os_error()
    );
}

/// Sets `SO_RCVBUFFORCE` (root only; a failure leaves the default, which the counts show).
pub fn force_rcvbuf(s: &impl AsRawFd, bytes: i32) {
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        eprintln!(
            "SO_RCVBUFFORCE {bytes} failed: {}; keeping the default receive buffer",
            io::Error::last_os_error()
        );
    }
}

fn udp_datagrams(
    pair: &NetnsPair,
    port: u16,
    sender_name: &str,
    count: u64,
    size: usize,
    connected: bool,
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
            force_rcvbuf(&s, UDP_RCVBUF);
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("a read timeout set on the socket");
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
                    Err(e) if is_transient(&e) => {
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
        if connected {
            s.connect(addr)
                .unwrap_or_else(|e| panic!("UDP sender: connect {addr}: {e}"));
        }
        s.set_write_timeout(Some(IO_TIMEOUT))
            .expect("a write timeout set on the socket");
        let info = ThreadInfo::current();
        let key = SockKey::new(
            s.local_addr().expect("the socket to have a local address"),
            addr,
        );
        let buf = vec![0x33u8; size];
        let mut sent = 0u64;
        for _ in 0..count {
            let r = if connected {
                s.send(&buf)
            } else {
                s.send_to(&buf, addr)
            };
            match r {
                Ok(n) => assert_eq!(n, size, "expected the UDP sender to send whole datagrams"),
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
    let received = join_timeout(
        rx.take().expect("the receiver thread joined only once"),
        THREAD_TIMEOUT,
        "UDP receiver",
    );
    UdpFlowResult {
        sender,
        key,
        sent,
        received,
    }
}
