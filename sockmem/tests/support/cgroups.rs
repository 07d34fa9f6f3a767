//! cgroup v2 directories made by a test, and a TCP sender in a process of its own that moves
//! itself into one before it connects ([`CgroupSender`]). Only `cgroup.procs` is written: no
//! controller (cpu, memory) is enabled or needed to move a process.

use std::ffi::CString;
use std::fs;
use std::net::SocketAddrV4;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where cgroup2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid system),
/// from /proc/self/mountinfo; the mount of the hierarchy's root preferred.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut any = None;
    for line in info.lines() {
        let Some((head, tail)) = line.split_once(" - ") else {
            continue;
        };
        if tail.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let f: Vec<&str> = head.split_whitespace().collect();
        let point = PathBuf::from(f.get(4)?);
        if f.get(3) == Some(&"/") {
            return Some(point);
        }
        any.get_or_insert(point);
    }
    any
}

/// The cgroup v2 path of a process, as its `/proc/<pid>/cgroup` says (`0::/a/b`).
pub fn proc_cgroup(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// A cgroup directory `<mount><path>`, made by the test; removed on drop (its children first:
/// drop them before it), once the processes in it are gone.
pub struct CgroupDir {
    /// Relative to the cgroup2 root, `/`-prefixed.
    pub path: String,
    pub dir: PathBuf,
    /// Its id: the directory's inode number.
    pub id: u64,
}

impl CgroupDir {
    /// Makes `<mount><path>` (its parent must exist).
    pub fn create(path: &str) -> CgroupDir {
        let mount = cgroup2_mount().expect("a cgroup2 mount (cgroup v2 is needed)");
        let dir = mount.join(path.trim_start_matches('/'));
        if dir.exists() {
            // A leftover of a killed earlier run with the same pid: ours by name.
            let _ = fs::remove_dir(&dir);
        }
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let id = fs::metadata(&dir).expect("stat the new cgroup").ino();
        CgroupDir {
            path: path.to_owned(),
            dir,
            id,
        }
    }

    /// Its path as absolute under the mount.
    pub fn absolute(&self) -> String {
        self.dir.display().to_string()
    }
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        // A process that just exited leaves its cgroup a moment later.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    eprintln!("cleanup: rmdir {}: {e}", self.dir.display());
                    return;
                }
            }
        }
    }
}

/// What a [`CgroupSender`] child reports when it is done.
#[derive(Clone, Copy, Debug)]
pub struct SenderReport {
    /// `send()` calls that sent something.
    pub sends: u64,
    pub bytes: u64,
    /// Its socket's local port.
    pub lport: u16,
    /// CLOCK_MONOTONIC (the clock of events' `ts_ns`) when it was done sending, just before it
    /// exited (and its socket was closed).
    pub exit_ns: u64,
}

/// A TCP sender in a forked child process: it writes itself into `cgroup.procs` of a cgroup,
/// enters a network namespace, connects, then (when told) makes `count` `send()` calls of
/// `chunk` bytes and reports how many it made. Between moving and sending it waits, so that its
/// `/proc/<pid>/cgroup` and `/proc/<pid>/ns/net` can be read while it runs (the witnesses).
///
/// The child only makes system calls on buffers prepared before the fork (the test process has
/// other threads: no allocation or lock after `fork`).
pub struct CgroupSender {
    pub pid: u32,
    /// Parent → child: one byte = go.
    go: libc::c_int,
    /// Child → parent: `b'm'` once moved and connected, then the report.
    from_child: libc::c_int,
    reaped: bool,
}

/// The child's report on its pipe: sends, bytes, exit time, local port.
const REPORT_BYTES: usize = 8 + 8 + 8 + 2;

impl CgroupSender {
    /// Forks the sender; returns once it is in `cgroup` (`cgroup.procs` written), in the
    /// namespace `/run/netns/<netns>`, and connected to `to`.
    pub fn start(
        cgroup: &CgroupDir,
        netns: &str,
        to: SocketAddrV4,
        chunk: usize,
        count: u64,
    ) -> CgroupSender {
        let procs = CString::new(cgroup.dir.join("cgroup.procs").display().to_string()).unwrap();
        let ns_path = CString::new(format!("/run/netns/{netns}")).unwrap();
        let buf = vec![0x5au8; chunk];
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = to.port().to_be();
        sa.sin_addr.s_addr = u32::from_ne_bytes(to.ip().octets());
        let (mut go, mut from_child) = ([0; 2], [0; 2]);
        unsafe {
            assert_eq!(libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe");
            assert_eq!(
                libc::pipe2(from_child.as_mut_ptr(), libc::O_CLOEXEC),
                0,
                "pipe"
            );
        }
        let ns_fd = unsafe { libc::open(ns_path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        assert!(ns_fd >= 0, "open /run/netns/{netns}");
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // The child: system calls only.
            unsafe { child(&procs, ns_fd, &sa, &buf, count, go[0], from_child[1]) }
        }
        unsafe {
            libc::close(ns_fd);
            libc::close(go[0]);
            libc::close(from_child[1]);
        }
        let mut s = CgroupSender {
            pid: pid as u32,
            go: go[1],
            from_child: from_child[0],
            reaped: false,
        };
        let mut b = [0u8; 1];
        let n = s.read_exact(&mut b, Duration::from_secs(20));
        assert!(
            n && b[0] == b'm',
            "expected the sender (pid {pid}) to move into {} and connect to {to}; it did not \
             (exit status {:?})",
            cgroup.path,
            s.reap()
        );
        s
    }

    /// Tells it to send.
    pub fn go(&self) {
        let one = [b'g'];
        let w = unsafe { libc::write(self.go, one.as_ptr().cast(), 1) };
        assert_eq!(w, 1, "tell the sender to go");
    }

    /// Waits for it to have sent and exited; its report.
    pub fn report(mut self, timeout: Duration) -> SenderReport {
        let mut r = [0u8; REPORT_BYTES];
        let ok = self.read_exact(&mut r, timeout);
        let status = self.reap();
        assert!(
            ok && status == Some(0),
            "expected the sender (pid {}) to send and report within {timeout:?}; exit status \
             {status:?}",
            self.pid
        );
        SenderReport {
            sends: u64::from_ne_bytes(r[0..8].try_into().unwrap()),
            bytes: u64::from_ne_bytes(r[8..16].try_into().unwrap()),
            exit_ns: u64::from_ne_bytes(r[16..24].try_into().unwrap()),
            lport: u16::from_ne_bytes(r[24..26].try_into().unwrap()),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut p = libc::pollfd {
                fd: self.from_child,
                events: libc::POLLIN,
                revents: 0,
            };
            let r = unsafe { libc::poll(&mut p, 1, left.as_millis().min(1000) as i32) };
            if r <= 0 {
                continue;
            }
            let n = unsafe {
                libc::read(
                    self.from_child,
                    buf[got..].as_mut_ptr().cast(),
                    buf.len() - got,
                )
            };
            if n <= 0 {
                return false;
            }
            got += n as usize;
        }
        true
    }

    /// Waits for the child (≤ 20 s, else kills it); its exit code.
    fn reap(&mut self) -> Option<i32> {
        if self.reaped {
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut status = 0;
        loop {
            let r = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
            if r == self.pid as i32 {
                self.reaped = true;
                return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            }
            if r < 0 || Instant::now() >= deadline {
                unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
                unsafe { libc::waitpid(self.pid as i32, &mut status, 0) };
                self.reaped = true;
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for CgroupSender {
    fn drop(&mut self) {
        if !self.reaped {
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
            let _ = self.reap();
        }
        unsafe {
            libc::close(self.go);
            libc::close(self.from_child);
        }
    }
}

/// The forked sender's whole life; never returns.
#[allow(clippy::too_many_arguments)]
unsafe fn child(
    procs: &CString,
    ns_fd: libc::c_int,
    sa: &libc::sockaddr_in,
    buf: &[u8],
    count: u64,
    go: libc::c_int,
    to_parent: libc::c_int,
) -> ! {
    let fail = |code: i32| -> ! { libc::_exit(code) };
    // Every other descriptor of the test process (its receivers' sockets among them) closed:
    // the child's exit must not be what closes them.
    let mut keep = [ns_fd, go, to_parent];
    keep.sort_unstable();
    let mut lo = 3;
    for fd in keep {
        if fd > lo {
            libc::syscall(libc::SYS_close_range, lo as u32, (fd - 1) as u32, 0u32);
        }
        lo = lo.max(fd + 1);
    }
    libc::syscall(libc::SYS_close_range, lo as u32, u32::MAX, 0u32);
    // "0": the writing process itself.
    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
        fail(10);
    }
    libc::close(fd);
    if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
        fail(11);
    }
    let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
    if s < 0 {
        fail(12);
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    if libc::connect(s, (sa as *const libc::sockaddr_in).cast(), len) != 0 {
        fail(13);
    }
    if libc::write(to_parent, b"m".as_ptr().cast(), 1) != 1 {
        fail(14);
    }
    let mut g = [0u8; 1];
    if libc::read(go, g.as_mut_ptr().cast(), 1) != 1 {
        fail(15);
    }
    let (mut sends, mut bytes) = (0u64, 0u64);
    for _ in 0..count {
        let n = libc::send(s, buf.as_ptr().cast(), buf.len(), 0);
        if n <= 0 {
            fail(16);
        }
        sends += 1;
        bytes += n as u64;
    }
    let mut local: libc::sockaddr_in = std::mem::zeroed();
    let mut llen = len;
    libc::getsockname(s, (&mut local as *mut libc::sockaddr_in).cast(), &mut llen);
    let mut report = [0u8; REPORT_BYTES];
    report[0..8].copy_from_slice(&sends.to_ne_bytes());
    report[8..16].copy_from_slice(&bytes.to_ne_bytes());
    let mut ts: libc::timespec = std::mem::zeroed();
    libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    let exit_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    report[16..24].copy_from_slice(&exit_ns.to_ne_bytes());
    report[24..26].copy_from_slice(&u16::from_be(local.sin_port).to_ne_bytes());
    if libc::write(to_parent, report.as_ptr().cast(), REPORT_BYTES) != REPORT_BYTES as isize {
        fail(17);
    }
    // The socket closes with the process: its last skbs are sent, and freed, after the sender
    // is gone (events on other tasks, with nobody current to name).
    libc::_exit(0)
}
