//! Child processes the bench owns, and Ctrl-C: a child is always signalled and reaped by its
//! guard, and SIGINT/SIGTERM/SIGHUP only set a flag that every wait checks, so an interrupted
//! bench unwinds through its guards (tracers stopped, namespaces deleted, sysctl restored).

use std::{
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT, SIGTERM and SIGHUP into [`interrupted`]. Children get the default handlers
/// back at exec.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// An error once a signal asked the bench to stop.
pub fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, waking early (with an error) when interrupted.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// The exit code, or 128 + the signal that killed it.
    pub code: i32,
    /// Its user + system CPU time over its whole life (`wait4`'s rusage).
    pub cpu_s: f64,
}

/// A running child, signalled (SIGTERM, then SIGKILL) and reaped when dropped unless it was
/// reaped already.
pub struct Proc {
    child: Option<Child>,
    what: String,
}

impl Proc {
    pub fn spawn(c: &mut Command, what: &str) -> anyhow::Result<Proc> {
        let child = c
            .spawn()
            .with_context(|| format!("starting {what}: {c:?}"))?;
        Ok(Proc {
            child: Some(child),
            what: what.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    pub fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: the child is not reaped yet, so its pid cannot have been reused.
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        }
    }

    /// Whether the child has exited (without reaping it: its /proc entry stays readable).
    pub fn exited(&self) -> bool {
        let Some(c) = &self.child else { return true };
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: WNOWAIT leaves the child waitable; info is a valid out-pointer.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                c.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        r == 0 && unsafe { info.si_pid() } != 0
    }

    /// Waits up to `timeout` for the child to exit and reaps it; on timeout or interrupt the
    /// child is killed (and the error says so).
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<Exit> {
        let end = Instant::now() + timeout;
        while !self.exited() {
            if let Err(e) = check_interrupted() {
                self.kill();
                return Err(e);
            }
            if Instant::now() >= end {
                self.kill();
                bail!("{} did not end within {timeout:?}", self.what);
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.reap()
    }

    /// Reaps an exited child with its resource usage.
    fn reap(&mut self) -> anyhow::Result<Exit> {
        let child = self.child.take().context("child already reaped")?;
        let mut status = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointers; the pid is our unreaped child.
        let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
        if r < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("waiting for {}", self.what));
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        Ok(Exit {
            code,
            cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
        })
    }

    /// SIGTERM, a moment to end cleanly, then SIGKILL; reaps.
    fn kill(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal(libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(3);
        while !self.exited() && Instant::now() < end {
            thread::sleep(Duration::from_millis(10));
        }
        if !self.exited() {
            self.signal(libc::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
