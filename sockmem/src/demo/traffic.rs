//! The demos' senders and receivers: threads in the lab's namespaces, each ending by its
//! deadline or at Ctrl-C.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::PathBuf,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::lab::{enter, stopped};

/// What a sender did, in its own counts.
#[derive(Clone, Debug, Default)]
pub struct Sent {
    pub calls: u64,
    pub bytes: u64,
    /// Calls that took over a millisecond (waited for buffer space).
    pub slow_calls: u64,
}

/// A thread with a name: its comm, which sockmem's events show as the sender.
fn named<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawning a demo thread")
}

fn setsockopt<T>(fd: &impl AsRawFd, level: i32, name: i32, v: &T) {
    // SAFETY: a valid socket and a value of the option's size. A failure keeps the default,
    // which the demo's verdict shows.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        );
    }
}

/// A TCP receiver on `port`: accepts one connection and reads it, or never reads (`read`
/// false) until the deadline.
pub fn tcp_receiver(
    ns: PathBuf,
    addr: Ipv4Addr,
    port: u16,
    read: bool,
    until: Instant,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = named("demo-receiver", move || -> anyhow::Result<()> {
        enter(&ns)?;
        let listener = TcpListener::bind((addr, port)).context("listening")?;
        listener.set_nonblocking(true)?;
        let _ = ready_tx.send(());
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(_) if Instant::now() < until && !stopped() => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(e).context("waiting for the sender"),
            }
        };
        conn.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut buf = vec![0u8; 1 << 16];
        while Instant::now() < until && !stopped() {
            if read {
                if let Ok(0) = conn.read(&mut buf) {
                    break;
                }
            } else {
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the receiver did not start")?;
    Ok(h)
}

/// A TCP sender writing `chunk`-byte blocks to `to` until `until` (cubic: BBR would pace it,
/// which is another demo's subject), with `sndbuf` if given.
pub fn tcp_sender(
    ns: PathBuf,
    to: SocketAddr,
    chunk: usize,
    sndbuf: Option<i32>,
    until: Instant,
) -> JoinHandle<anyhow::Result<Sent>> {
    named("demo-sender", move || -> anyhow::Result<Sent> {
        enter(&ns)?;
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_secs(5)).context("connecting")?;
        let cubic = *b"cubic\0";
        setsockopt(&s, libc::IPPROTO_TCP, libc::TCP_CONGESTION, &cubic);
        if let Some(b) = sndbuf {
            setsockopt(&s, libc::SOL_SOCKET, libc::SO_SNDBUF, &b);
        }
        // Wakes a send blocked on a full buffer, to check the deadline.
        s.set_write_timeout(Some(Duration::from_millis(100)))?;
        let block = vec![b'x'; chunk];
        let mut sent = Sent::default();
        while Instant::now() < until && !stopped() {
            let t = Instant::now();
            match s.write(&block) {
                Ok(n) => {
                    sent.calls += 1;
                    sent.bytes += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                // The receiver closed (at the end, with unread data: a reset).
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e).context("sending"),
            }
            if t.elapsed() > Duration::from_millis(1) {
                sent.slow_calls += 1;
            }
        }
        Ok(sent)
    })
}

/// A UDP receiver bound on `port` (so datagrams are not refused), reading until `until`.
pub fn udp_receiver(
    ns: PathBuf,
    addr: Ipv4Addr,
    port: u16,
    until: Instant,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = named("demo-receiver", move || -> anyhow::Result<()> {
        enter(&ns)?;
        let s = UdpSocket::bind((addr, port)).context("binding")?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        let _ = ready_tx.send(());
        let mut buf = vec![0u8; 1 << 16];
        while Instant::now() < until && !stopped() {
            let _ = s.recv(&mut buf);
        }
        Ok(())
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the receiver did not start")?;
    Ok(h)
}

/// A UDP sender: `(size, until, gap)` phases of datagrams, each `gap` apart (back to back
/// when zero), with `sndbuf`.
pub fn udp_sender(
    ns: PathBuf,
    to: SocketAddr,
    sndbuf: i32,
    phases: Vec<(usize, Instant, Duration)>,
) -> JoinHandle<anyhow::Result<Sent>> {
    named("demo-sender", move || -> anyhow::Result<Sent> {
        enter(&ns)?;
        let s = UdpSocket::bind(("0.0.0.0", 0)).context("binding")?;
        s.connect(to).context("connecting")?;
        setsockopt(&s, libc::SOL_SOCKET, libc::SO_SNDBUF, &sndbuf);
        s.set_write_timeout(Some(Duration::from_millis(100)))?;
        let mut sent = Sent::default();
        for (size, until, gap) in phases {
            let d = vec![b'u'; size];
            while Instant::now() < until && !stopped() {
                if !gap.is_zero() {
                    thread::sleep(gap);
                }
                let t = Instant::now();
                if let Ok(n) = s.send(&d) {
                    sent.calls += 1;
                    sent.bytes += n as u64;
                }
                if t.elapsed() > Duration::from_millis(1) {
                    sent.slow_calls += 1;
                }
            }
        }
        Ok(sent)
    })
}
