//! One VM run: qemu (TCG) boots the kernel with the initramfs, runs the command, powers off.
//!
//! The kernel console goes to a file (ttyS0, shown on failure); the command's stdout and stderr
//! to two virtio serial ports backed by files that we follow while qemu runs. The exit code comes
//! back as a file in the run directory: qemu's own exit status says nothing about the guest.

use std::{
    fs::{self, File},
    io::{Read as _, Seek as _, SeekFrom, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{host, initramfs, kernel::Kernel};

pub struct Spec<'a> {
    pub kernel: &'a Kernel,
    /// Shell script the guest runs (as root, `/bin/sh` from the host's root).
    pub script: String,
    pub timeout: Duration,
    /// Where to put the run directory; it is removed after a run that worked.
    pub run_dir: PathBuf,
    /// Copy the command's output to ours as it comes; else return it in [`Run`].
    pub stream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command ran and exited with this code.
    Exited(i32),
    /// The command did not finish in time; qemu was killed.
    TimedOut,
    /// The VM stopped without the command's exit code (guest panic, init failure, qemu error).
    Failed,
}

/// How many console lines to show when something went wrong.
const CONSOLE_LINES: usize = 60;

pub struct Run {
    pub outcome: Outcome,
    /// The command's output, when not streamed.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// What went wrong with the VM or the guest kernel, for the user (the run directory is kept).
    pub report: Option<String>,
}

pub fn run(spec: &Spec) -> anyhow::Result<Run> {
    let run_dir = &spec.run_dir;
    let _ = fs::remove_dir_all(run_dir);
    fs::create_dir_all(run_dir).with_context(|| format!("creating `{}`", run_dir.display()))?;
    let run_path = run_dir
        .to_str()
        // Spaces would split the kernel command line, commas qemu's options.
        .filter(|p| !p.contains(char::is_whitespace) && !p.contains(','))
        .with_context(|| {
            format!(
                "`{}`: the VM needs a path without spaces or commas",
                run_dir.display()
            )
        })?;
    fs::write(run_dir.join("command.sh"), &spec.script).context("writing the command")?;
    let initrd = run_dir.join("initramfs.cpio");
    initramfs::build(spec.kernel, &initrd)?;
    let kernel = spec.kernel.vmlinux()?;

    let console = run_dir.join("console.log");
    let stdout = run_dir.join("stdout");
    let stderr = run_dir.join("stderr");
    let qemu_log = File::create(run_dir.join("qemu.log")).context("creating qemu.log")?;
    let cmdline = [
        "console=ttyS0",
        // Without ACPI qboot boots faster; the guest stops with reboot, which -no-reboot turns
        // into qemu exiting, and so does a panic, at once.
        "acpi=off",
        "panic=-1",
        "reboot=t",
        // TCG makes the speculation mitigations costly and they protect nothing here.
        "mitigations=off",
        // Attaching and detaching eBPF programs waits for RCU grace periods: shorten them.
        "rcupdate.rcu_expedited=1",
        &format!("sockmem_vm_run={run_path}"),
    ]
    .join(" ");
    let mut qemu = Command::new(host::QEMU);
    qemu.args(["-nodefaults", "-no-user-config", "-display", "none"])
        // No KVM: this machine's /dev/kvm cannot run stock kernels.
        // thread=single: with one host thread per vCPU (MTTCG), a vCPU can run stale code while
        // another patches kernel text (static keys, as when a tracepoint or kprobe is enabled),
        // and the guest oopses on a stray int3 (6.12) or livelocks in it (6.1). One thread
        // for both vCPUs keeps two guest CPUs and a correct kernel; a VM then uses one core.
        .args(["-accel", "tcg,thread=single"])
        .args(["-machine", "pc", "-cpu", "max"])
        .args(["-smp", "2", "-m", "1G", "-no-reboot"])
        .args(["-bios", host::QBOOT])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", &cmdline])
        .args(["-serial", &format!("file:{}", console.display())])
        .args(["-device", "virtio-serial-pci,id=ports"])
        .arg("-chardev")
        .arg(format!("file,id=stdout,path={}", stdout.display()))
        .args([
            "-device",
            "virtserialport,bus=ports.0,chardev=stdout,name=stdout",
        ])
        .arg("-chardev")
        .arg(format!("file,id=stderr,path={}", stderr.display()))
        .args([
            "-device",
            "virtserialport,bus=ports.0,chardev=stderr,name=stderr",
        ])
        // multidevs=remap: the host's / spans several file systems whose inode numbers collide.
        .args([
            "-fsdev",
            "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        ])
        .args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"])
        .arg("-fsdev")
        .arg(format!("local,id=run,path={run_path},security_model=none"))
        .args(["-device", "virtio-9p-pci,fsdev=run,mount_tag=run"])
        .stdin(Stdio::null())
        .stdout(qemu_log.try_clone().context("qemu.log")?)
        .stderr(qemu_log);
    let child = qemu
        .spawn()
        .with_context(|| format!("starting {}", host::QEMU))?;
    let finished = supervise(child, spec, &stdout, &stderr)?;

    let exit_code = fs::read_to_string(run_dir.join("exit-code")).ok();
    let outcome = outcome(finished, exit_code.as_deref());
    let console = fs::read_to_string(run_dir.join("console.log")).unwrap_or_default();
    let report = match outcome {
        Outcome::Exited(_) => splat_report(&console),
        Outcome::TimedOut | Outcome::Failed => Some(failure_report(outcome, spec, &console)),
    };
    let (stdout, stderr) = match spec.stream {
        true => Default::default(),
        false => (
            fs::read(&stdout).unwrap_or_default(),
            fs::read(&stderr).unwrap_or_default(),
        ),
    };
    let report = match report {
        Some(r) => Some(format!("{r}xtask: kept `{}`\n", run_dir.display())),
        None => {
            let _ = fs::remove_dir_all(run_dir);
            None
        }
    };
    Ok(Run {
        outcome,
        stdout,
        stderr,
        report,
    })
}

/// How the run ended: `finished` is false when qemu was killed at the deadline, `exit_code` the
/// exit-code file's text (`$?` and a newline), if the guest's init wrote one.
fn outcome(finished: bool, exit_code: Option<&str>) -> Outcome {
    match exit_code.and_then(|c| c.trim().parse().ok()) {
        _ if !finished => Outcome::TimedOut,
        Some(code) => Outcome::Exited(code),
        None => Outcome::Failed,
    }
}

/// Copies the guest's output to ours as it comes (when streaming), until qemu exits (true) or
/// the time is up (false: qemu killed).
fn supervise(mut child: Child, spec: &Spec, stdout: &Path, stderr: &Path) -> anyhow::Result<bool> {
    let deadline = Instant::now() + spec.timeout;
    let mut out = Follow::new(stdout);
    let mut err = Follow::new(stderr);
    loop {
        let exited = child.try_wait().context("waiting for qemu")?.is_some();
        if spec.stream {
            // After qemu exited, one last copy catches what it wrote just before.
            out.copy_to(&mut std::io::stdout());
            err.copy_to(&mut std::io::stderr());
        }
        if exited {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Follows a file that another process appends to.
struct Follow<'a> {
    path: &'a Path,
    offset: u64,
}

impl<'a> Follow<'a> {
    fn new(path: &'a Path) -> Self {
        Follow { path, offset: 0 }
    }

    fn copy_to(&mut self, to: &mut impl Write) {
        let Ok(mut f) = File::open(self.path) else {
            return;
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_ok() && f.read_to_end(&mut buf).is_ok() {
            self.offset += buf.len() as u64;
            let _ = to.write_all(&buf);
            let _ = to.flush();
        }
    }
}

/// Console lines that mean the kernel itself hit a problem (eBPF programs can make it do so).
const SPLATS: &[&str] = &[
    "BUG:",
    "WARNING:",
    "Oops",
    "general protection fault",
    "UBSAN:",
    "Call Trace:",
];

/// Where the first kernel warning or bug starts in the console, if any, with two lines of
/// context (what triggered it, e.g. "sysrq: Trigger a crash").
fn first_splat(lines: &[&str]) -> Option<usize> {
    let first = lines
        .iter()
        .position(|l| SPLATS.iter().any(|s| l.contains(s)))?;
    Some(first.saturating_sub(2))
}

/// The console from the first kernel warning or bug on, if any: worth showing even when the
/// command succeeded.
fn splat_report(console: &str) -> Option<String> {
    let lines: Vec<&str> = console.lines().collect();
    let first = first_splat(&lines)?;
    let shown = &lines[first..lines.len().min(first + CONSOLE_LINES)];
    Some(format!(
        "xtask: the guest kernel reported a problem:\n{}",
        quote(shown)
    ))
}

fn failure_report(outcome: Outcome, spec: &Spec, console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    let panic = lines
        .iter()
        .find(|l| l.contains("Kernel panic - not syncing"));
    let what = match (outcome, panic) {
        (Outcome::TimedOut, _) => format!("timed out after {} s", spec.timeout.as_secs()),
        (_, Some(panic)) => format!("panicked ({})", panic.trim()),
        _ => "stopped without the command's exit code".to_owned(),
    };
    // The first oops or warning says most; else the end of the console does.
    let (from, which) = match first_splat(&lines) {
        Some(first) => (first, "from the first kernel problem"),
        None => (lines.len().saturating_sub(CONSOLE_LINES), "last"),
    };
    let shown = &lines[from..lines.len().min(from + CONSOLE_LINES)];
    let mut report = format!(
        "xtask: the VM ({}) {what}; console, {which} ({} lines):\n{}",
        spec.kernel.release,
        shown.len(),
        quote(shown)
    );
    if from + shown.len() < lines.len() {
        report += &format!(
            "  | [... {} more lines in console.log]\n",
            lines.len() - from - shown.len()
        );
    }
    let qemu_log = fs::read_to_string(spec.run_dir.join("qemu.log")).unwrap_or_default();
    if !qemu_log.trim().is_empty() {
        report += &format!("xtask: qemu said: {}\n", qemu_log.trim());
    }
    report
}

fn quote(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| format!("  | {}\n", l.trim_end_matches('\r')))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 6.12 guest's console around a warning, as qemu's serial file has it (CRLF).
    const CONSOLE: &str = "\
[    2.981234] Run /init as init process\r
[    3.412345] 9pnet: Installing 9P2000 support\r
[   41.100000] sockmem[412]: attaching 16 programs\r
[   41.200001] ------------[ cut here ]------------\r
[   41.200002] WARNING: CPU: 1 PID: 412 at kernel/bpf/trampoline.c:250 bpf_trampoline_update+0x4f/0x600\r
[   41.200003] Modules linked in: sch_tbf veth overlay 9p 9pnet_virtio\r
[   41.200004] Call Trace:\r
[   41.200005]  <TASK>\r
[   52.000000] reboot: Restarting system\r
";

    #[test]
    fn outcomes() {
        assert_eq!(outcome(true, Some("0\n")), Outcome::Exited(0));
        assert_eq!(outcome(true, Some("101\n")), Outcome::Exited(101));
        assert_eq!(outcome(true, None), Outcome::Failed);
        assert_eq!(outcome(true, Some("")), Outcome::Failed);
        assert_eq!(outcome(false, Some("0\n")), Outcome::TimedOut);
        assert_eq!(outcome(false, None), Outcome::TimedOut);
    }

    #[test]
    fn kernel_problems_in_the_console() {
        let lines: Vec<&str> = CONSOLE.lines().collect();
        // Two lines before the warning: what led to it.
        assert_eq!(first_splat(&lines), Some(2));
        let report = splat_report(CONSOLE).unwrap();
        assert!(report.starts_with("xtask: the guest kernel reported a problem:\n"));
        assert!(report.contains("  | [   41.200002] WARNING: CPU: 1 PID: 412"));
        assert!(!report.contains("Run /init"));
        assert!(!report.contains('\r'));

        let clean = "[    2.9] Run /init as init process\n[    9.1] reboot: Power down\n";
        assert_eq!(splat_report(clean), None);
        assert_eq!(
            first_splat(&["BUG: kernel NULL pointer dereference"]),
            Some(0)
        );
    }
}
