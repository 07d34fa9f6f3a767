//! Running the sockmem binary: to completion, or as a [`Tracer`] that is waited for until its
//! ready file exists (every program attached) and stopped with SIGTERM.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::process::{join_reader, kill_group, spawn_captured, wait_child, Captured};
use super::{run_with_timeout, CmdOutput, EXIT_TIMEOUT, READY_TIMEOUT, SETTLE};

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
    /// The last poll that did not find the ready file, and the first that did.
    ready_between: (Instant, Instant),
}

impl Tracer {
    /// Starts `sockmem <args> --ready-file <tmp>` and waits (≤ 20 s) for the ready file.
    /// `args` starts with the subcommand, e.g. `["trace", "--json", "--port", "5000"]`.
    /// Under `cargo xtask vm-test` the backend of the run ([`test_backend`]) is added.
    pub fn start(args: &[&str]) -> Tracer {
        Tracer::start_on(args, test_backend().as_deref())
    }

    /// [`Tracer::start`] with `--backend <backend>` (none if `None`).
    pub fn start_on(args: &[&str], backend: Option<&str>) -> Tracer {
        let ready_file = tmp_path("ready");
        let mut cmd = Command::new(sockmem_bin());
        cmd.args(args).arg("--ready-file").arg(&ready_file);
        if let Some(b) = backend {
            cmd.arg("--backend").arg(b);
        }
        Tracer::spawn(cmd, ready_file)
    }

    /// Starts `cmd` (which must make something write `ready_file`) and waits for the file.
    pub fn spawn(mut cmd: Command, ready_file: PathBuf) -> Tracer {
        let Captured {
            what,
            child,
            out,
            err,
        } = spawn_captured(&mut cmd);
        let mut t = Tracer {
            what,
            child: Some(child),
            ready_file,
            out: Some(out),
            err: Some(err),
            ready_between: (Instant::now(), Instant::now()),
        };
        t.wait_ready();
        t
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let polled = Instant::now();
            if self.ready_file.exists() {
                self.ready_between.1 = polled;
                return;
            }
            self.ready_between.0 = polled;
            let exited = self
                .child
                .as_mut()
                .expect("a tracer not yet reaped")
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

    /// When the ready file appeared: after the first of these instants (the last poll that did
    /// not find it), before the second (the poll that did), however late the polls ran.
    pub fn ready_between(&self) -> (Instant, Instant) {
        self.ready_between
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a tracer not yet reaped").id()
    }

    /// Sends `sig` to the process itself (not its group).
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(
            self.child
                .as_mut()
                .expect("a tracer not yet reaped")
                .try_wait(),
            Ok(None)
        )
    }

    /// SIGTERM, then waits (≤ 20 s) for the exit and returns status and output.
    pub fn stop(mut self) -> CmdOutput {
        self.signal(libc::SIGTERM);
        self.wait_exit(EXIT_TIMEOUT, "after SIGTERM")
    }

    /// [`Tracer::stop`], then checks that it exited 0 without a panic.
    pub fn stop_checked(self) -> CmdOutput {
        self.signal(libc::SIGTERM);
        self.exit_checked()
    }

    /// Waits (≤ 20 s) for the exit a SIGTERM already sent asks for, and checks that it exited
    /// 0 without a panic.
    pub fn exit_checked(mut self) -> CmdOutput {
        let out = self.wait_exit(EXIT_TIMEOUT, "after SIGTERM");
        out.assert_no_panic();
        out.assert_success();
        out
    }

    /// Waits (≤ `timeout`) for the process to exit by itself (e.g. `--duration`).
    pub fn wait(mut self, timeout: Duration) -> CmdOutput {
        self.wait_exit(timeout, "by itself")
    }

    fn wait_exit(&mut self, timeout: Duration, how: &str) -> CmdOutput {
        match wait_child(
            self.child.as_mut().expect("a tracer not yet reaped"),
            timeout,
        ) {
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
        let child = self.child.as_mut().expect("a tracer not yet reaped");
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

/// The opening most tests share, in the one order that survives a slow machine: every tracer
/// in `tracers` started and attached (its ready file exists: loading can take over a minute in
/// an emulated VM), only then `traffic`, then [`SETTLE`] for the last skbs and ACKs, then
/// SIGTERM to every tracer at once (tracers compared with each other must stop at the same
/// moment: signalled one after the other's exit, the later one saw a late ACK the first did
/// not), each checked to exit 0 without a panic.
/// Each entry of `tracers` is a sockmem command line, e.g. `["trace", "--json", "-P", "5000"]`.
pub fn traced_by<T>(tracers: &[&[&str]], traffic: impl FnOnce() -> T) -> (T, Vec<CmdOutput>) {
    let running: Vec<Tracer> = tracers.iter().map(|args| Tracer::start(args)).collect();
    let t = traffic();
    thread::sleep(SETTLE);
    for r in &running {
        r.signal(libc::SIGTERM);
    }
    (t, running.into_iter().map(Tracer::exit_checked).collect())
}

/// [`traced_by`] with one tracer.
pub fn traced<T>(args: &[&str], traffic: impl FnOnce() -> T) -> (T, CmdOutput) {
    let (t, mut outs) = traced_by(&[args], traffic);
    (t, outs.pop().expect("one tracer, one output"))
}
