//! Threads of the test process: their identity as the kernel reports it, starting them inside
//! a namespace, bounded joins and waits.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::netns::enter_netns;
use super::{HOLD_TIMEOUT, THREAD_TIMEOUT};

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

/// Keeps the calling thread on CPU `cpu` (no-op on a machine with fewer CPUs).
pub fn pin_to_cpu(cpu: usize) {
    let n = thread::available_parallelism().map_or(1, |n| n.get());
    if cpu >= n {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity(cpu {cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The calling thread's scheduler accounting, as the kernel keeps it: CPU time
/// (`CLOCK_THREAD_CPUTIME_ID`), time runnable but waiting for a CPU (`/proc/thread-self/schedstat`,
/// `None` without `CONFIG_SCHED_INFO`), and context switches (`/proc/thread-self/status`:
/// voluntary = the thread blocked, involuntary = it was preempted). Taken around one call, the
/// differences say how long the thread was on a CPU, how long runnable, how often it slept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedStat {
    pub cpu: Duration,
    pub run_delay: Option<Duration>,
    pub voluntary: u64,
    pub involuntary: u64,
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl SchedStat {
    /// To be taken just before the call measured: the CPU clock is read last.
    pub fn before_call() -> SchedStat {
        let mut s = SchedStat::files();
        s.cpu = thread_cpu_time();
        s
    }

    /// To be taken just after the call measured: the CPU clock is read first.
    pub fn after_call() -> SchedStat {
        let cpu = thread_cpu_time();
        SchedStat {
            cpu,
            ..SchedStat::files()
        }
    }

    fn files() -> SchedStat {
        let run_delay = fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(Duration::from_nanos);
        let status =
            fs::read_to_string("/proc/thread-self/status").expect("read /proc/thread-self/status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/thread-self/status"))
        };
        SchedStat {
            cpu: Duration::ZERO,
            run_delay,
            voluntary: field("voluntary_ctxt_switches:"),
            involuntary: field("nonvoluntary_ctxt_switches:"),
        }
    }

    /// Thread `tid` of this process as the kernel accounts it now, read from outside it
    /// (`/proc/self/task/<tid>/schedstat`: time on a CPU and runnable; `status`: context
    /// switches). `None` once the thread is gone or without `CONFIG_SCHED_INFO`.
    pub fn of_thread(tid: u32) -> Option<SchedStat> {
        let dir = format!("/proc/self/task/{tid}");
        let schedstat = fs::read_to_string(format!("{dir}/schedstat")).ok()?;
        let mut f = schedstat.split_whitespace().map(|v| v.parse::<u64>().ok());
        let cpu = Duration::from_nanos(f.next()??);
        let run_delay = Some(Duration::from_nanos(f.next()??));
        let status = fs::read_to_string(format!("{dir}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        Some(SchedStat {
            cpu,
            run_delay,
            voluntary: field("voluntary_ctxt_switches:")?,
            involuntary: field("nonvoluntary_ctxt_switches:")?,
        })
    }

    /// What changed since `earlier`.
    pub fn since(&self, earlier: &SchedStat) -> SchedStat {
        SchedStat {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            run_delay: match (self.run_delay, earlier.run_delay) {
                (Some(a), Some(b)) => Some(a.saturating_sub(b)),
                _ => None,
            },
            voluntary: self.voluntary - earlier.voluntary,
            involuntary: self.involuntary - earlier.involuntary,
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

pub(super) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
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

/// Joins a flow's two threads, sender first, each within [`THREAD_TIMEOUT`]; `what` names the
/// flow in messages (e.g. "TCP flow to port 5000").
pub(super) fn join_ends<S, R>(
    tx: &mut Option<JoinHandle<S>>,
    rx: &mut Option<JoinHandle<R>>,
    what: &str,
) -> (S, R) {
    let tx = tx.take().expect("the sender thread joined only once");
    let rx = rx.take().expect("the receiver thread joined only once");
    let sent = join_timeout(tx, THREAD_TIMEOUT, &format!("{what}: sender"));
    let received = join_timeout(rx, THREAD_TIMEOUT, &format!("{what}: receiver"));
    (sent, received)
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

/// Returns once `release` is set (or after [`HOLD_TIMEOUT`]): a socket held open meanwhile.
pub(super) fn hold_until(release: &AtomicBool) {
    let held = Instant::now();
    while !release.load(Ordering::SeqCst) && held.elapsed() < HOLD_TIMEOUT {
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for a value a helper thread sends once it is set up; if the thread died instead,
/// panics with its panic message.
pub(super) fn recv_setup<T, R>(
    rx: &mpsc::Receiver<T>,
    h: &mut Option<JoinHandle<R>>,
    what: &str,
) -> T {
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
