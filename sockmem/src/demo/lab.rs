//! The demos' network: two namespaces joined by a veth pair, a qdisc on the sender's side, and
//! threads that enter a namespace to send or receive. Everything is removed when the `Lab` is
//! dropped (also after an error or Ctrl-C: the demo checks [`stopped`] and returns).

use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context as _};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM end the demo early, cleanly: the traffic stops and everything built is
/// torn down. (The recorder, a child process, gets the terminal's SIGINT too and ends its file.)
pub fn catch_stops() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Whether Ctrl-C or SIGTERM came.
pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Two namespaces, `smdemo-<pid>-tx` and `-rx`, joined by a veth: 198.18.254.1 sends to
/// `rx_addr`, 198.18.254.2 (the benchmarking range, never routed outside).
pub struct Lab {
    pub tx_ns: String,
    pub rx_ns: String,
    pub tx_if: String,
    pub rx_addr: Ipv4Addr,
    created: Vec<String>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running `{cmd}` (iproute2 is needed for the demos)"))?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Lab {
    pub fn new() -> anyhow::Result<Lab> {
        let pid = std::process::id();
        let mut lab = Lab {
            tx_ns: format!("smdemo-{pid}-tx"),
            rx_ns: format!("smdemo-{pid}-rx"),
            tx_if: format!("smd{pid}t"),
            rx_addr: Ipv4Addr::new(198, 18, 254, 2),
            created: Vec::new(),
        };
        let rx_if = format!("smd{pid}r");
        for ns in [lab.tx_ns.clone(), lab.rx_ns.clone()] {
            ip(&["netns", "add", &ns])?;
            lab.created.push(ns);
        }
        let (tx, rx) = (lab.tx_ns.clone(), lab.rx_ns.clone());
        ip(&[
            "-n", &tx, "link", "add", &lab.tx_if, "type", "veth", "peer", "name", &rx_if, "netns",
            &rx,
        ])?;
        ip(&[
            "-n",
            &tx,
            "addr",
            "add",
            "198.18.254.1/30",
            "dev",
            &lab.tx_if,
        ])?;
        ip(&["-n", &rx, "addr", "add", "198.18.254.2/30", "dev", &rx_if])?;
        for (ns, dev) in [(&tx, &lab.tx_if), (&rx, &rx_if)] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    /// Replaces the sender's root qdisc (`tc qdisc replace … root <spec>`).
    pub fn qdisc(&self, spec: &[&str]) -> anyhow::Result<()> {
        let mut args = vec![
            "-n",
            &self.tx_ns,
            "qdisc",
            "replace",
            "dev",
            &self.tx_if,
            "root",
        ];
        args.extend_from_slice(spec);
        run("tc", &args)
    }

    /// The sender's qdisc's drop counter (`tc -s`).
    pub fn qdisc_drops(&self) -> anyhow::Result<u64> {
        let out = Command::new("tc")
            .args(["-n", &self.tx_ns, "-s", "qdisc", "show", "dev", &self.tx_if])
            .output()
            .context("running `tc`")?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "Sent … bytes … pkt (dropped N, overlimits …"
        Ok(text
            .split("dropped ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    pub fn tx_netns(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.tx_ns)
    }

    pub fn rx_netns(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.rx_ns)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.drain(..) {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

/// Moves the calling thread into the network namespace at `path` (a demo's traffic thread).
pub fn enter(path: &std::path::Path) -> anyhow::Result<()> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns on a valid open descriptor; only this thread moves.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "entering {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
