//! What the bench needs around the tracers: tools (installed with apt when missing), tracefs,
//! BPF run-time statistics, and two network namespaces joined by a veth pair with the
//! workload's qdisc on the sender's end and an iperf3 server on the other. Every piece is a
//! guard that undoes itself when dropped.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _};
use clap::ValueEnum;
use serde::Serialize;

use crate::packages;
pub use crate::packages::find;

use super::{
    parse::{self, Iperf, Qdisc},
    process::{self, Proc},
};

/// What fills the sender's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// One TCP stream as fast as it goes, pfifo root qdisc (it bypasses while empty).
    Unlimited,
    /// One TCP stream through tbf at 500 Mbit/s: the qdisc really queues.
    Queued,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Unlimited => "unlimited",
            Workload::Queued => "queued",
        }
    }

    fn qdisc_args(self) -> &'static [&'static str] {
        match self {
            Workload::Unlimited => &["pfifo"],
            Workload::Queued => &[
                "tbf", "rate", "500mbit", "burst", "256kb", "latency", "50ms",
            ],
        }
    }

    pub fn qdisc_spec(self) -> String {
        self.qdisc_args().join(" ")
    }
}

/// The tools the bench found (after installing what was missing).
pub struct Tools {
    pub bpftool: Option<PathBuf>,
    pub bpftrace_version: Option<(u32, u32)>,
    /// Lines worth printing about what was done (installed, mounted).
    pub notes: Vec<String>,
}

/// iperf3 (and bpftrace when a bpftrace mode runs) must be there, installed if missing;
/// bpftool is used when it is there or can be installed, else /proc/PID/fdinfo is read.
pub fn ensure_tools(need_bpftrace: bool) -> anyhow::Result<Tools> {
    let mut notes = Vec::new();
    for tool in ["ip", "tc", "ss"] {
        if find(tool).is_none() {
            bail!("`{tool}` is missing: install iproute2");
        }
    }
    let mut required = vec![("iperf3", "iperf3")];
    if need_bpftrace {
        required.push(("bpftrace", "bpftrace"));
    }
    let installed = packages::ensure(&required, "bench")?;
    if !installed.is_empty() {
        notes.push(format!("installed {}", installed.join(", ")));
    }
    if find("bpftool").is_none() {
        match packages::apt_install(&["bpftool"]) {
            Ok(()) => notes.push("installed bpftool".into()),
            Err(e) => notes.push(format!(
                "bpftool unavailable ({e:#}): reading /proc/PID/fdinfo"
            )),
        }
    }
    let bpftrace_version =
        if need_bpftrace {
            let out = Command::new("bpftrace")
                .arg("--version")
                .output()
                .context("running `bpftrace --version`")?;
            let text = String::from_utf8_lossy(&out.stdout);
            Some(parse::bpftrace_version(&text).with_context(|| {
                format!("cannot read bpftrace's version from {:?}", text.trim())
            })?)
        } else {
            None
        };
    Ok(Tools {
        bpftool: find("bpftool"),
        bpftrace_version,
        notes,
    })
}

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// bpftrace needs tracefs at /sys/kernel/tracing: mounts it there if absent (and leaves it,
/// as other users may come to rely on it). Returns whether it mounted.
pub fn ensure_tracefs() -> anyhow::Result<bool> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(false);
    }
    crate::build::cmd(Command::new("mount").args(["-t", "tracefs", "tracefs", TRACEFS]))
        .context("mounting tracefs for bpftrace")?;
    if !Path::new(TRACEFS).join("events").is_dir() {
        bail!("tracefs mounted at {TRACEFS} but has no events/");
    }
    Ok(true)
}

/// Whether tracefs has this `category:name` tracepoint.
pub fn tracepoint_exists(tp: &str) -> bool {
    let (cat, name) = tp.split_once(':').unwrap_or((tp, ""));
    Path::new(TRACEFS)
        .join("events")
        .join(cat)
        .join(name)
        .is_dir()
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` while alive, the old value restored when dropped.
pub struct BpfStats {
    old: String,
}

impl BpfStats {
    pub fn enable() -> anyhow::Result<BpfStats> {
        let old = fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
        fs::write(BPF_STATS, "1").with_context(|| format!("writing 1 to {BPF_STATS}"))?;
        Ok(BpfStats {
            old: old.trim().to_string(),
        })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = fs::write(BPF_STATS, &self.old) {
            eprintln!("bench: restoring {BPF_STATS} to {}: {e}", self.old);
        }
    }
}

/// Two namespaces and a veth pair, named after the bench's pid; deleted when dropped.
pub struct Net {
    pub tx_ns: String,
    pub rx_ns: String,
    pub tx_if: String,
    pub rx_if: String,
    pub tx_addr: String,
    pub rx_addr: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    crate::build::cmd(Command::new("ip").args(args))
}

impl Net {
    pub fn create() -> anyhow::Result<Net> {
        let pid = std::process::id();
        // A /30 per pid inside 198.19.0.0/16 (RFC 2544 benchmarking space, 198.18.0.0/15).
        let n = (pid % 16384) * 4;
        let (a, b) = (n / 256, n % 256);
        let net = Net {
            tx_ns: format!("smb-{pid}-tx"),
            rx_ns: format!("smb-{pid}-rx"),
            tx_if: format!("smb{pid}t"),
            rx_if: format!("smb{pid}r"),
            tx_addr: format!("198.19.{a}.{}", b + 1),
            rx_addr: format!("198.19.{a}.{}", b + 2),
        };
        net.delete(); // leftovers of an earlier process with this pid
        ip(&["netns", "add", &net.tx_ns])?;
        ip(&["netns", "add", &net.rx_ns])?;
        ip(&[
            "link", "add", &net.tx_if, "netns", &net.tx_ns, "type", "veth", "peer", "name",
            &net.rx_if, "netns", &net.rx_ns,
        ])?;
        for (ns, dev, addr) in [
            (&net.tx_ns, &net.tx_if, &net.tx_addr),
            (&net.rx_ns, &net.rx_if, &net.rx_addr),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn delete(&self) {
        for ns in [&self.tx_ns, &self.rx_ns] {
            if Path::new("/run/netns").join(ns).exists() {
                let _ = Command::new("ip")
                    .args(["netns", "del", ns])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    /// The workload's root qdisc on the sender's veth.
    pub fn set_workload(&self, w: Workload) -> anyhow::Result<()> {
        // Delete first: `replace` by a qdisc of the same kind would keep the old statistics.
        let _ = Command::new("tc")
            .args([
                "-n",
                &self.tx_ns,
                "qdisc",
                "del",
                "dev",
                &self.tx_if,
                "root",
            ])
            .stderr(Stdio::null())
            .status();
        crate::build::cmd(
            Command::new("tc")
                .args([
                    "-n",
                    &self.tx_ns,
                    "qdisc",
                    "add",
                    "dev",
                    &self.tx_if,
                    "root",
                ])
                .args(w.qdisc_args()),
        )
        .with_context(|| format!("setting the {} qdisc", w.name()))
    }

    /// The sender's root qdisc statistics now.
    pub fn qdisc(&self) -> anyhow::Result<Qdisc> {
        let out = Command::new("tc")
            .args([
                "-n",
                &self.tx_ns,
                "-s",
                "-j",
                "qdisc",
                "show",
                "dev",
                &self.tx_if,
            ])
            .output()
            .context("running tc")?;
        parse::tc_root_qdisc(&String::from_utf8_lossy(&out.stdout))
    }

    /// `iperf3 -s` in the receiving namespace, once it listens.
    pub fn start_server(&self, dir: &Path) -> anyhow::Result<Proc> {
        let log = dir.join("iperf3-server.log");
        let server = Proc::spawn(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.rx_ns,
                    "iperf3",
                    "-s",
                    "-B",
                    &self.rx_addr,
                ])
                .stdin(Stdio::null())
                .stdout(fs::File::create(&log).context("creating the iperf3 server log")?)
                .stderr(Stdio::null()),
            "iperf3 server",
        )?;
        // iperf3 buffers its banner when writing to a file: ask the kernel instead.
        let listening = || {
            Command::new("ss")
                .args(["-N", &self.rx_ns, "-Hltn", "sport = :5201"])
                .output()
                .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
        };
        for _ in 0..500 {
            if listening() {
                return Ok(server);
            }
            if server.exited() {
                bail!(
                    "iperf3 server exited: {}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            process::sleep(Duration::from_millis(20))?;
        }
        bail!("iperf3 server did not listen within 10 s")
    }

    /// `iperf3 -c … -t SECS -J` from the sending namespace; `at_half` runs halfway through.
    pub fn run_client(
        &self,
        secs: u32,
        dir: &Path,
        at_half: impl FnOnce(),
    ) -> anyhow::Result<Iperf> {
        let out = dir.join("iperf3-client.json");
        let mut client = Proc::spawn(
            Command::new("ip")
                .args(["netns", "exec", &self.tx_ns, "iperf3", "-c", &self.rx_addr])
                .args(["-t", &secs.to_string(), "-J"])
                .stdin(Stdio::null())
                .stdout(fs::File::create(&out).context("creating the iperf3 output file")?)
                .stderr(Stdio::null()),
            "iperf3 client",
        )?;
        process::sleep(Duration::from_millis(u64::from(secs) * 500))?;
        at_half();
        let exit = client.wait(Duration::from_secs(u64::from(secs) + 30))?;
        let json = fs::read_to_string(&out).context("reading iperf3's output")?;
        let r = parse::iperf3(&json);
        if exit.code != 0 && r.is_ok() {
            bail!("iperf3 client exited with {}", exit.code);
        }
        r
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.delete();
    }
}
