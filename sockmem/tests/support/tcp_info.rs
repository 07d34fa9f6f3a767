//! The kernel's `tcp_info` of one socket as `ss -tin` prints it (the chrono timers `busy`,
//! `rwnd_limited`, `sndbuf_limited`, the pacing rate, cwnd), read at known instants; and the
//! per-namespace knobs the `why` tests set: the congestion control of a route, a `tbf` with a
//! byte limit, a sysctl, IPv6 off.

use std::time::Instant;

use super::{ns_checked, NetnsPair, SkMem};

/// One `ss -tinm` reading of one socket: the `tcp_info` fields the tests compare against.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TcpInfo {
    /// `busy:` (ms): `tcpi_busy_time`, every chrono state (busy, rwnd- and sndbuf-limited).
    pub busy_ms: u64,
    /// `rwnd_limited:` (ms; absent = 0): `tcpi_rwnd_limited`.
    pub rwnd_limited_ms: u64,
    /// `sndbuf_limited:` (ms; absent = 0): `tcpi_sndbuf_limited`.
    pub sndbuf_limited_ms: u64,
    /// `pacing_rate` in bytes/s (`ss -n` prints bits/s, exact).
    pub pacing_rate: Option<u64>,
    pub cwnd: Option<u64>,
    pub unacked: Option<u64>,
    /// `snd_wnd:` (bytes; newer `ss` only).
    pub snd_wnd: Option<u64>,
    /// The congestion control's name (the first word after `skmem:(..)`).
    pub cc: String,
    pub skmem: SkMem,
}

/// The number right after `key` (`"busy:"` → `1004` of `busy:1004ms`), if `key` occurs as a
/// word.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let mut from = 0;
    while let Some(i) = text[from..].find(key) {
        let at = from + i;
        let word_start = at == 0 || text[..at].ends_with(char::is_whitespace);
        let rest = &text[at + key.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if word_start && !digits.is_empty() {
            return digits.parse().ok();
        }
        from = at + key.len();
    }
    None
}

/// Parses the `ss -tinm` lines of ONE socket.
pub fn parse_tcp_info(text: &str) -> Result<TcpInfo, String> {
    let skmem = super::parse_skmem(text)?;
    let after_skmem = &text[text.find("skmem:(").unwrap_or(0)..];
    let after_skmem = &after_skmem[after_skmem.find(')').map_or(0, |i| i + 1)..];
    let cc = after_skmem
        .split_whitespace()
        .next()
        .ok_or_else(|| format!("no congestion control name after skmem in {text:?}"))?
        .to_string();
    let busy_ms = number_after(text, "busy:").unwrap_or(0);
    Ok(TcpInfo {
        busy_ms,
        rwnd_limited_ms: number_after(text, "rwnd_limited:").unwrap_or(0),
        sndbuf_limited_ms: number_after(text, "sndbuf_limited:").unwrap_or(0),
        pacing_rate: number_after(text, "pacing_rate ").map(|bits| bits / 8),
        cwnd: number_after(text, "cwnd:"),
        unacked: number_after(text, "unacked:"),
        snd_wnd: number_after(text, "snd_wnd:"),
        cc,
        skmem,
    })
}

/// `ss -tinmH state established '( sport = :L and dport = :R )'` in namespace `ns`, parsed;
/// panics unless exactly one socket matches.
pub fn ss_tcp_info(ns: &str, lport: u16, rport: u16) -> TcpInfo {
    let filter = format!("( sport = :{lport} and dport = :{rport} )");
    let out = ns_checked(ns, "ss", &["-tinmH", "state", "established", &filter]);
    let n = out.matches("skmem:(").count();
    assert_eq!(
        n, 1,
        "expected exactly 1 socket {lport}->{rport} in `ss -tinm` of {ns}, found {n}:\n{out}"
    );
    parse_tcp_info(&out).unwrap_or_else(|e| panic!("ss -tinm output: {e}\n{out}"))
}

/// A [`TcpInfo`] and when it was read: somewhere between `asked` (before `ss` started) and
/// `at` (after it returned). On a loaded machine `ip netns exec ss` takes hundreds of ms.
#[derive(Clone, Debug)]
pub struct TcpInfoAt {
    pub asked: Instant,
    pub at: Instant,
    pub info: TcpInfo,
}

/// [`ss_tcp_info`], timed.
pub fn ss_tcp_info_at(ns: &str, lport: u16, rport: u16) -> TcpInfoAt {
    let asked = Instant::now();
    let info = ss_tcp_info(ns, lport, rport);
    TcpInfoAt {
        asked,
        at: Instant::now(),
        info,
    }
}

impl NetnsPair {
    /// Every TCP connection the sender namespace opens to the receiver's /24 uses congestion
    /// control `cc` (`ip route replace <net>/24 dev <tx_if> congctl <cc>`): a per-route
    /// setting, unlike `net.ipv4.tcp_congestion_control`, which a namespace other than the
    /// first may only set to one of `tcp_allowed_congestion_control`. Applies to processes
    /// started in the namespace too.
    pub fn tx_congctl(&self, cc: &str) {
        let o = self.rx_addr.octets();
        let net = format!("{}.{}.{}.0/24", o[0], o[1], o[2]);
        ns_checked(
            &self.tx_ns,
            "ip",
            &["route", "replace", &net, "dev", &self.tx_if, "congctl", cc],
        );
    }

    /// Replaces the sender veth's root qdisc by `tbf rate <rate> burst <burst> limit <limit>`
    /// (`limit`: bytes the queue may hold, tc units: `30kb` = 30 KiB).
    pub fn set_tbf_limit(&self, rate: &str, burst: &str, limit: &str) {
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
                "limit",
                limit,
            ],
        );
    }

    /// `sysctl -w name=value` in the sender namespace.
    pub fn tx_sysctl_set(&self, name: &str, value: &str) {
        ns_checked(&self.tx_ns, "sysctl", &["-qw", &format!("{name}={value}")]);
    }

    /// `sysctl -n name` in the sender namespace.
    pub fn tx_sysctl(&self, name: &str) -> String {
        ns_checked(&self.tx_ns, "sysctl", &["-n", name])
            .trim()
            .to_string()
    }

    /// No IPv6 on either veth end: no router solicitations or MLD reports share the qdisc
    /// with the test's traffic (its counters are then the test's alone).
    pub fn disable_ipv6(&self) {
        for (ns, dev) in [(&self.tx_ns, &self.tx_if), (&self.rx_ns, &self.rx_if)] {
            ns_checked(
                ns,
                "sysctl",
                &["-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")],
            );
        }
    }
}
