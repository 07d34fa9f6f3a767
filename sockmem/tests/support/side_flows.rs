//! Flows the `why` tests need beside [`TcpFlow`](super::TcpFlow): a bulk TCP sender in a
//! process of its own ([`ChildTcpSender`]: another pid and command name than the test's
//! threads), and a UDP sender whose every `send` is timed and checked for a sleep
//! ([`udp_phases`]).

use std::io::{self, Read};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::flows::{force_rcvbuf, listen_accept, set_sndbuf};
use super::threads::recv_setup;
use super::{
    join_timeout, ns_checked, spawn_in_netns, wait_until, NetnsPair, SchedStat, HOLD_TIMEOUT,
    IO_TIMEOUT, THREAD_TIMEOUT,
};

/// A TCP receiver thread (`smrx-<port>` in `rx_ns`) that accepts one connection and reads
/// everything until EOF or [`TcpReader::finish`].
pub struct TcpReader {
    pub port: u16,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    h: Option<JoinHandle<u64>>,
}

impl TcpReader {
    /// Listens on rx_addr:`port`; returns once listening.
    pub fn start(pair: &NetnsPair, port: u16) -> TcpReader {
        let addr = pair.rx_sockaddr(port);
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (rc, st) = (received.clone(), stop.clone());
        let mut h = Some(spawn_in_netns(
            &format!("smrx-{port}"),
            &pair.rx_ns,
            move || {
                let mut s = listen_accept(addr, ready_tx);
                let deadline = Instant::now() + HOLD_TIMEOUT;
                let mut buf = vec![0u8; 256 * 1024];
                while !st.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            rc.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock
                                    | io::ErrorKind::TimedOut
                                    | io::ErrorKind::Interrupted
                            ) => {}
                        // The child sender was killed: a reset is how its flow ends.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                        Err(e) => panic!("receiver on {addr}: read: {e}"),
                    }
                }
                rc.load(Ordering::SeqCst)
            },
        ));
        recv_setup(&ready_rx, &mut h, &format!("TCP reader on port {port}"));
        TcpReader {
            port,
            received,
            stop,
            h,
        }
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// Stops reading (within the 1 s read timeout) and joins the thread; returns bytes read.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        join_timeout(
            self.h.take().expect("the reader joined only once"),
            THREAD_TIMEOUT,
            &format!("TCP reader on port {}", self.port),
        )
    }
}

impl Drop for TcpReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A bulk TCP sender in a process of its own: `ip netns exec <tx_ns> bash -c 'exec cat
/// /dev/zero > /dev/tcp/<rx_addr>/<port>'`. `ip netns exec` and bash both exec, so the
/// process keeps one pid throughout, and once `cat` runs its command name is `cat`: bash opened
/// the connection, `cat` does every write. A [`TcpReader`] in `rx_ns` reads. Killed on drop.
pub struct ChildTcpSender {
    pub port: u16,
    /// The sender's pid (the process started).
    pub pid: u32,
    /// The sender socket's local port.
    pub lport: u16,
    child: Option<Child>,
    reader: Option<TcpReader>,
}

impl ChildTcpSender {
    /// Starts the reader, then the child; returns once the child is `cat` and its connection
    /// is established (≤ 20 s).
    pub fn start(pair: &NetnsPair, port: u16) -> ChildTcpSender {
        let reader = TcpReader::start(pair, port);
        let script = format!("exec cat /dev/zero > /dev/tcp/{}/{port}", pair.rx_addr);
        let child = Command::new("ip")
            .args(["netns", "exec", &pair.tx_ns, "bash", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start the child sender ({script}): {e}"));
        let pid = child.id();
        let mut me = ChildTcpSender {
            port,
            pid,
            lport: 0,
            child: Some(child),
            reader: Some(reader),
        };
        let comm_is_cat = || {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "cat")
        };
        let mut lport = None;
        let ok = wait_until(Duration::from_secs(20), || {
            if !comm_is_cat() {
                return false;
            }
            let filter = format!("( dport = :{port} )");
            let out = ns_checked(
                &pair.tx_ns,
                "ss",
                &["-tnH", "state", "established", &filter],
            );
            lport = out.lines().find_map(|l| {
                let local = l.split_whitespace().nth(2)?;
                local.rsplit_once(':')?.1.parse::<u16>().ok()
            });
            lport.is_some()
        });
        assert!(
            ok,
            "expected the child sender (pid {pid}) to run `cat` with a connection to port \
             {port} within 20 s; comm {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default()
        );
        me.lport = lport.expect("set when ok");
        me
    }

    pub fn received(&self) -> u64 {
        self.reader.as_ref().map_or(0, TcpReader::received)
    }

    /// Kills the child, joins the reader; returns the bytes read.
    pub fn finish(mut self) -> u64 {
        self.kill();
        self.reader.take().map_or(0, TcpReader::finish)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildTcpSender {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What [`udp_phases`] did: sends made, bytes, how many of them slept (a voluntary context
/// switch during the call: the thread waited for send-buffer memory), datagrams received.
#[derive(Clone, Debug, Default)]
pub struct UdpPhasesResult {
    pub lport: u16,
    pub sends: u64,
    pub bytes: u64,
    pub slept: u64,
    /// Time spent in sends that slept, by the sender's clock.
    pub slept_time: Duration,
    pub received: u64,
    /// Per phase: (sends, sends that slept).
    pub per_phase: Vec<(u64, u64)>,
}

/// A connected UDP socket in `tx_ns` with `SO_SNDBUF` = `sndbuf` sends to rx_addr:`port` as
/// fast as it can, phase after phase: datagrams of `size` bytes for `duration` each. Every send
/// is bracketed by the thread's scheduler counts ([`SchedStat`]). Returns when the receiver
/// (which drains into an 8 MiB buffer) has seen nothing for 1 s after the last send.
pub fn udp_phases(
    pair: &NetnsPair,
    port: u16,
    sender_name: &str,
    sndbuf: usize,
    phases: &[(usize, Duration)],
) -> UdpPhasesResult {
    let addr = pair.rx_sockaddr(port);
    let local = SocketAddr::V4(SocketAddrV4::new(pair.tx_addr, 0));
    let done = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let d = done.clone();
    let mut rx = Some(spawn_in_netns(
        &format!("smrx-{port}"),
        &pair.rx_ns,
        move || {
            let s =
                UdpSocket::bind(addr).unwrap_or_else(|e| panic!("UDP receiver: bind {addr}: {e}"));
            force_rcvbuf(&s, 8 << 20);
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("a read timeout set on the socket");
            let _ = ready_tx.send(());
            let deadline = Instant::now() + HOLD_TIMEOUT;
            let mut buf = vec![0u8; 65536];
            let (mut got, mut last) = (0u64, Instant::now());
            while Instant::now() < deadline {
                match s.recv_from(&mut buf) {
                    Ok(_) => {
                        got += 1;
                        last = Instant::now();
                    }
                    Err(_) => {
                        if d.load(Ordering::SeqCst) && last.elapsed() > Duration::from_secs(1) {
                            break;
                        }
                    }
                }
            }
            got
        },
    ));
    recv_setup(&ready_rx, &mut rx, &format!("UDP receiver on port {port}"));
    let phases = phases.to_vec();
    let d = done.clone();
    let tx = spawn_in_netns(sender_name, &pair.tx_ns, move || {
        let s = UdpSocket::bind(local).unwrap_or_else(|e| panic!("UDP sender: bind {local}: {e}"));
        s.connect(addr)
            .unwrap_or_else(|e| panic!("UDP sender: connect {addr}: {e}"));
        s.set_write_timeout(Some(IO_TIMEOUT))
            .expect("a write timeout set on the socket");
        set_sndbuf(&s, sndbuf);
        let mut r = UdpPhasesResult {
            lport: s.local_addr().expect("a local address").port(),
            ..Default::default()
        };
        for (size, duration) in phases {
            let buf = vec![0x77u8; size];
            let (mut n, mut slept) = (0u64, 0u64);
            let start = Instant::now();
            while start.elapsed() < duration {
                let before = SchedStat::before_call();
                let t0 = Instant::now();
                let res = s.send(&buf);
                let took = t0.elapsed();
                let sched = SchedStat::after_call().since(&before);
                match res {
                    Ok(k) => assert_eq!(k, size, "expected whole datagrams sent"),
                    Err(e) => {
                        d.store(true, Ordering::SeqCst);
                        panic!(
                            "UDP sender to {addr}: send after {} datagrams: {e}",
                            r.sends
                        );
                    }
                }
                n += 1;
                r.bytes += size as u64;
                if sched.voluntary > 0 {
                    slept += 1;
                    r.slept_time += took;
                }
            }
            r.sends += n;
            r.slept += slept;
            r.per_phase.push((n, slept));
        }
        d.store(true, Ordering::SeqCst);
        r
    });
    let mut r = join_timeout(tx, THREAD_TIMEOUT, "UDP phases sender");
    r.received = join_timeout(
        rx.take().expect("the receiver joined only once"),
        THREAD_TIMEOUT,
        "UDP phases receiver",
    );
    r
}

/// How a [`UdpSender`] waits for room in its send buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpWait {
    /// Blocking `send` (asleep inside the call).
    InSend,
    /// `poll(POLLOUT)`, then a nonblocking `send` (event loops, socat).
    InPoll,
}

/// A connected UDP socket in `tx_ns` sending `size`-byte datagrams (default `SO_SNDBUF`) to
/// rx_addr:`port` as fast as its buffer lets it, waiting as [`UdpWait`] says, until
/// [`UdpSender::finish`]; a receiver in `rx_ns` reads them all.
pub struct UdpSender {
    pub lport: u16,
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// Set once the sender is done: a receiver gone first would refuse its last datagrams.
    rx_stop: Arc<AtomicBool>,
    sends: Arc<AtomicU64>,
    tx: Option<JoinHandle<(u64, u64)>>,
    rx: Option<JoinHandle<u64>>,
}

impl UdpSender {
    pub fn start(
        pair: &NetnsPair,
        port: u16,
        sender_name: &str,
        size: usize,
        wait: UdpWait,
    ) -> UdpSender {
        let addr = pair.rx_sockaddr(port);
        let local = SocketAddr::V4(SocketAddrV4::new(pair.tx_addr, 0));
        let stop = Arc::new(AtomicBool::new(false));
        let sends = Arc::new(AtomicU64::new(0));
        let rx_stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let st = rx_stop.clone();
        let mut rx = Some(spawn_in_netns(
            &format!("smrx-{port}"),
            &pair.rx_ns,
            move || {
                let s = UdpSocket::bind(addr)
                    .unwrap_or_else(|e| panic!("UDP receiver: bind {addr}: {e}"));
                force_rcvbuf(&s, 8 << 20);
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .expect("a read timeout set on the socket");
                let _ = ready_tx.send(());
                let deadline = Instant::now() + HOLD_TIMEOUT;
                let mut buf = vec![0u8; 65536];
                let mut got = 0u64;
                while Instant::now() < deadline && !st.load(Ordering::SeqCst) {
                    if s.recv_from(&mut buf).is_ok() {
                        got += 1;
                    }
                }
                got
            },
        ));
        recv_setup(&ready_rx, &mut rx, &format!("UDP receiver on port {port}"));
        let (lport_tx, lport_rx) = mpsc::channel();
        let (st, n) = (stop.clone(), sends.clone());
        let tx = spawn_in_netns(sender_name, &pair.tx_ns, move || {
            let s =
                UdpSocket::bind(local).unwrap_or_else(|e| panic!("UDP sender: bind {local}: {e}"));
            s.connect(addr)
                .unwrap_or_else(|e| panic!("UDP sender: connect {addr}: {e}"));
            s.set_write_timeout(Some(IO_TIMEOUT))
                .expect("a write timeout set on the socket");
            s.set_nonblocking(wait == UdpWait::InPoll)
                .expect("the socket's blocking mode set");
            let _ = lport_tx.send(s.local_addr().expect("a local address").port());
            let buf = vec![0x55u8; size];
            let mut would_block = 0u64;
            let deadline = Instant::now() + HOLD_TIMEOUT;
            while !st.load(Ordering::SeqCst) && Instant::now() < deadline {
                if wait == UdpWait::InPoll {
                    let mut p = libc::pollfd {
                        fd: std::os::fd::AsRawFd::as_raw_fd(&s),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the duration of the call.
                    unsafe { libc::poll(&mut p, 1, 100) };
                }
                match s.send(&buf) {
                    Ok(k) => {
                        assert_eq!(k, size, "expected whole datagrams sent");
                        n.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => would_block += 1,
                    Err(e) => panic!("UDP sender to {addr}: send: {e}"),
                }
            }
            (n.load(Ordering::SeqCst), would_block)
        });
        let lport = lport_rx
            .recv_timeout(THREAD_TIMEOUT)
            .expect("the UDP sender's local port");
        UdpSender {
            lport,
            port,
            stop,
            rx_stop,
            sends,
            tx: Some(tx),
            rx,
        }
    }

    /// Datagrams sent so far.
    pub fn sends(&self) -> u64 {
        self.sends.load(Ordering::SeqCst)
    }

    /// Stops both ends: (datagrams sent, sends refused for want of room, datagrams received).
    pub fn finish(mut self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let what = format!("UDP sender to port {}", self.port);
        let (sent, would_block) =
            join_timeout(self.tx.take().expect("joined once"), THREAD_TIMEOUT, &what);
        self.rx_stop.store(true, Ordering::SeqCst);
        let got = join_timeout(self.rx.take().expect("joined once"), THREAD_TIMEOUT, &what);
        (sent, would_block, got)
    }
}

impl Drop for UdpSender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.rx_stop.store(true, Ordering::SeqCst);
    }
}
