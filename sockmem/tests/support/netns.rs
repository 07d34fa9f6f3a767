//! Two network namespaces joined by a veth pair, the qdisc on the sender's veth, and moving a
//! thread into a namespace.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use super::kernel_views::{parse_proc_net_dev_tx, parse_qdisc_stats_json, qdisc_sent, QdiscStats};
use super::{ns_checked, run_checked, try_run_with_timeout, CMD_TIMEOUT};

/// Serialises `ip netns add/del`: the first `ip netns add` sets up the /run/netns mount.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Two network namespaces joined by a veth pair:
/// `tx_ns`/`tx_if`/`tx_addr` = 198.18.X.1/24 (sender), `rx_ns`/`rx_if`/`rx_addr` = 198.18.X.2/24.
/// Both namespaces (and so the veth) are deleted on drop, also when the test panics.
pub struct NetnsPair {
    pub tag: String,
    pub tx_ns: String,
    pub rx_ns: String,
    pub tx_if: String,
    pub rx_if: String,
    pub tx_addr: Ipv4Addr,
    pub rx_addr: Ipv4Addr,
    created: Vec<String>,
}

impl NetnsPair {
    /// Namespaces `smtx-<pid>-<tag>` / `smrx-<pid>-<tag>`, veth `s<pid><tag>t` / `s<pid><tag>r`,
    /// addresses 198.18.`subnet`.1 and .2. No qdisc (a fresh veth has `noqueue`).
    /// `tag`: 1..=6 ASCII alphanumerics, unique per test; `subnet` unique per test.
    pub fn new(tag: &str, subnet: u8) -> NetnsPair {
        assert!(
            !tag.is_empty() && tag.len() <= 6 && tag.chars().all(|c| c.is_ascii_alphanumeric()),
            "netns tag must be 1..=6 ASCII alphanumerics, got {tag:?}"
        );
        let pid = std::process::id();
        let tx_if = format!("s{pid}{tag}t");
        let rx_if = format!("s{pid}{tag}r");
        assert!(
            tx_if.len() <= 15,
            "interface name {tx_if:?} is {} bytes, more than 15",
            tx_if.len()
        );
        let mut pair = NetnsPair {
            tag: tag.to_string(),
            tx_ns: format!("smtx-{pid}-{tag}"),
            rx_ns: format!("smrx-{pid}-{tag}"),
            tx_if,
            rx_if,
            tx_addr: Ipv4Addr::new(198, 18, subnet, 1),
            rx_addr: Ipv4Addr::new(198, 18, subnet, 2),
            created: Vec::new(),
        };
        {
            let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            for ns in [pair.tx_ns.clone(), pair.rx_ns.clone()] {
                // A leftover of a killed earlier process with the same pid: ours by name.
                if Path::new("/run/netns").join(&ns).exists() {
                    let _ = try_run_with_timeout(
                        Command::new("ip").args(["netns", "del", &ns]),
                        CMD_TIMEOUT,
                    );
                }
                run_checked("ip", &["netns", "add", &ns]);
                pair.created.push(ns);
            }
        }
        let (tx_ns, rx_ns) = (pair.tx_ns.clone(), pair.rx_ns.clone());
        let (tx_if, rx_if) = (pair.tx_if.clone(), pair.rx_if.clone());
        run_checked(
            "ip",
            &[
                "-n", &tx_ns, "link", "add", &tx_if, "type", "veth", "peer", "name", &rx_if,
                "netns", &rx_ns,
            ],
        );
        let tx_cidr = format!("{}/24", pair.tx_addr);
        let rx_cidr = format!("{}/24", pair.rx_addr);
        run_checked(
            "ip",
            &["-n", &tx_ns, "addr", "add", &tx_cidr, "dev", &tx_if],
        );
        run_checked(
            "ip",
            &["-n", &rx_ns, "addr", "add", &rx_cidr, "dev", &rx_if],
        );
        for (ns, dev) in [
            (&tx_ns, "lo"),
            (&tx_ns, &tx_if[..]),
            (&rx_ns, "lo"),
            (&rx_ns, &rx_if[..]),
        ] {
            run_checked("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        pair
    }

    /// [`NetnsPair::new`] plus `tbf rate 200mbit burst 32kb latency 50ms` on the sender's veth.
    pub fn with_tbf(tag: &str, subnet: u8) -> NetnsPair {
        let pair = NetnsPair::new(tag, subnet);
        pair.add_tbf("200mbit");
        pair
    }

    /// Replaces the sender veth's root qdisc by `tbf rate <rate> burst 32kb latency 50ms`.
    pub fn add_tbf(&self, rate: &str) {
        self.set_tbf(rate, "32kb", "50ms");
    }

    pub fn rx_sockaddr(&self, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.rx_addr, port))
    }

    /// `tc -s qdisc show dev <tx_if>` inside the sender namespace: (bytes, packets) sent by
    /// the root qdisc.
    pub fn tx_qdisc_sent(&self) -> (u64, u64) {
        qdisc_sent(&self.tx_ns, &self.tx_if)
    }

    /// Replaces the sender veth's root qdisc by `tbf rate <rate> burst <burst> latency
    /// <latency>` (tc units: `40mbit`, `256kb` = 256 KiB, `200ms`).
    pub fn set_tbf(&self, rate: &str, burst: &str, latency: &str) {
        ns_checked(
            &self.tx_ns,
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                &self.tx_if,
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                burst,
                "latency",
                latency,
            ],
        );
    }

    /// `(tx_bytes, tx_packets)` of the sender veth (`/proc/net/dev` in the sender namespace);
    /// veth counts one packet per skb.
    pub fn tx_dev_stats(&self) -> (u64, u64) {
        let text = ns_checked(&self.tx_ns, "cat", &["/proc/net/dev"]);
        parse_proc_net_dev_tx(&text, &self.tx_if).unwrap_or_else(|e| panic!("{e}:\n{text}"))
    }

    /// `tc qdisc show dev <tx_if>` inside the sender namespace (text).
    pub fn tx_qdisc_show(&self) -> String {
        ns_checked(&self.tx_ns, "tc", &["qdisc", "show", "dev", &self.tx_if])
    }

    /// The root qdisc's counters on the sender veth (`tc -s -j qdisc show`).
    pub fn tx_qdisc_stats(&self) -> QdiscStats {
        let out = ns_checked(
            &self.tx_ns,
            "tc",
            &["-s", "-j", "qdisc", "show", "dev", &self.tx_if],
        );
        parse_qdisc_stats_json(&out).unwrap_or_else(|e| panic!("tc -s -j qdisc output: {e}\n{out}"))
    }

    /// Waits (at most 10 s) until the sender's root qdisc is empty (every skb dequeued).
    pub fn wait_tx_qdisc_empty(&self) {
        let mut last = QdiscStats::default();
        let ok = super::wait_until(std::time::Duration::from_secs(10), || {
            last = self.tx_qdisc_stats();
            last.qlen == 0
        });
        assert!(
            ok,
            "expected the sender's qdisc to drain within 10 s, last {last:?}"
        );
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for ns in self.created.drain(..) {
            match try_run_with_timeout(Command::new("ip").args(["netns", "del", &ns]), CMD_TIMEOUT)
            {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!("cleanup: {}", o.describe()),
                Err(o) => eprintln!("cleanup timed out: {}", o.describe()),
            }
        }
    }
}

/// Moves the calling thread (only it) into network namespace `/run/netns/<ns>`.
pub fn enter_netns(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let f = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns({path}, CLONE_NEWNET) failed: {}",
        io::Error::last_os_error()
    );
}

/// Lists the network namespaces (`ip netns list`, names only).
pub fn netns_list() -> Vec<String> {
    run_checked("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Whether `ip` address `a` (as printed) is one of ours (198.18.0.0/15).
pub fn is_test_addr(a: &str) -> bool {
    match a.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let o = v4.octets();
            o[0] == 198 && (o[1] & 0xfe) == 18
        }
        _ => false,
    }
}
