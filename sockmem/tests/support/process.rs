//! Child processes: run with a timeout, capture output, kill a process group.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{JsonTrace, CMD_TIMEOUT};

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

pub(super) fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

pub(super) fn join_reader(h: Option<JoinHandle<Vec<u8>>>) -> String {
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
pub(super) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
pub(super) fn kill_group(child: &Child, sig: i32) {
    unsafe {
        libc::kill(-(child.id() as i32), sig);
    }
}

/// A child started by [`spawn_captured`]: its output read by two threads until it closes.
pub(super) struct Captured {
    /// What was run (for messages).
    pub what: String,
    pub child: Child,
    pub out: JoinHandle<Vec<u8>>,
    pub err: JoinHandle<Vec<u8>>,
}

/// Starts `cmd` with stdin null, stdout and stderr captured, in its own process group (so that
/// it can be killed with its children).
pub(super) fn spawn_captured(cmd: &mut Command) -> Captured {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
    let out = spawn_reader(child.stdout.take().expect("stdout piped"));
    let err = spawn_reader(child.stderr.take().expect("stderr piped"));
    Captured {
        what,
        child,
        out,
        err,
    }
}

/// Runs `cmd` (stdin null, stdout/stderr captured, own process group). On timeout the whole
/// group is killed and `Err` carries what was captured.
pub fn try_run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput, CmdOutput> {
    let Captured {
        what,
        mut child,
        out,
        err,
    } = spawn_captured(cmd);
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

/// Writes `s` to a file (used for small scripts).
pub fn write_file(p: &Path, s: &str) {
    let mut f = File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    f.write_all(s.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}
