//! `sockmem trace` filters against real traffic: one `#[test]` per filter, generated from a
//! table, so that one failing filter does not hide the others. Every case shares one setup:
//! its own namespace pairs (198.18.120-127.0/24, and 130-137 for a second pair), the tracer
//! attached before the case's flows start, flows the filter must keep and flows it must
//! exclude, all at once.

mod support;

use serde_json::Value;
use support::*;

const MIB: u64 = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

/// One flow of a filter case's traffic. Its sender thread is named `smtx-<name><pid>`.
#[derive(Clone, Copy, Debug)]
struct FlowSpec {
    /// How the case's expectations name it.
    name: &'static str,
    proto: Proto,
    /// The namespace pair that carries it: 0, or 1 for a second pair (other addresses, other
    /// interfaces).
    pair: usize,
    /// Its receiver's port; distinct within a case.
    port: u16,
}

const TCP_A: FlowSpec = FlowSpec {
    name: "a",
    proto: Proto::Tcp,
    pair: 0,
    port: 21302,
};
const TCP_B: FlowSpec = FlowSpec {
    name: "b",
    proto: Proto::Tcp,
    pair: 0,
    port: 21303,
};
/// Flow b on the second pair.
const TCP_B_ELSEWHERE: FlowSpec = FlowSpec { pair: 1, ..TCP_B };
const UDP_U: FlowSpec = FlowSpec {
    name: "u",
    proto: Proto::Udp,
    pair: 0,
    port: 21304,
};

/// Bytes of each TCP flow; datagrams (of 1000 bytes) of each UDP flow.
const FILTER_TCP_BYTES: u64 = 4 * MIB;
const FILTER_UDP_DATAGRAMS: u64 = 500;

struct FilterCase {
    /// Namespace tag (at most 5 characters: the pair's index is appended) and subnet of the
    /// case's first pair; a second pair gets subnet + 10.
    tag: &'static str,
    subnet: u8,
    /// Run all at once, once the tracer is attached.
    flows: &'static [FlowSpec],
    /// The filter arguments of `sockmem trace --json`. Placeholders: `{me}` (this process's
    /// pid), `{comm:X}`, `{port:X}` (flow X's sender comm, receiver port), `{rx_addr:N}`,
    /// `{tx_if:N}` (pair N's receiver address, sender veth).
    args: &'static [&'static str],
    /// Flows whose sender socket must show events.
    expect_kept: &'static [&'static str],
    /// Flows of which no event may show: none with the flow's port at either end.
    expect_excluded: &'static [&'static str],
    /// Checks particular to this filter.
    also: fn(&FilterRun),
}

/// A flow as it ran.
struct RanFlow {
    spec: FlowSpec,
    sender: ThreadInfo,
    /// The sender's socket.
    key: SockKey,
}

/// What a filter case saw: the setup, the flows as they ran, the tracer's output.
struct FilterRun {
    test: &'static str,
    args: Vec<String>,
    me: u32,
    pairs: Vec<NetnsPair>,
    flows: Vec<RanFlow>,
    trace: JsonTrace,
}

impl FilterRun {
    fn flow(&self, name: &str) -> &RanFlow {
        self.flows
            .iter()
            .find(|f| f.spec.name == name)
            .unwrap_or_else(|| panic!("{}: the case names flow {name:?}, it has none", self.test))
    }

    /// Asserts that no event is `what` (none for which `wrong` holds); the message shows the
    /// first few that are.
    fn assert_no_event(&self, what: &str, wrong: impl Fn(&Value) -> bool) {
        let bad: Vec<&Value> = self.trace.events.iter().filter(|e| wrong(e)).collect();
        assert_eq!(
            bad.len(),
            0,
            "{}: with {:?}, expected no event {what}; {} of {} events are:\n{}",
            self.test,
            self.args,
            bad.len(),
            self.trace.events.len(),
            first_few(&bad, 3)
        );
    }
}

fn comm_of(name: &str, me: u32) -> String {
    format!("smtx-{name}{me}")
}

/// Replaces the placeholders of a case's argument (see [`FilterCase::args`]).
fn expand_arg(arg: &str, me: u32, flows: &[FlowSpec], pairs: &[NetnsPair]) -> String {
    let Some(inner) = arg.strip_prefix('{').and_then(|a| a.strip_suffix('}')) else {
        return arg.to_string();
    };
    let flow = |name: &str| {
        *flows
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("argument {arg}: no flow {name:?} in the case"))
    };
    let pair = |n: &str| {
        &pairs[n
            .parse::<usize>()
            .unwrap_or_else(|e| panic!("argument {arg}: pair index {n:?}: {e}"))]
    };
    match inner.split_once(':') {
        None if inner == "me" => me.to_string(),
        Some(("comm", f)) => comm_of(f, me),
        Some(("port", f)) => flow(f).port.to_string(),
        Some(("rx_addr", n)) => pair(n).rx_addr.to_string(),
        Some(("tx_if", n)) => pair(n).tx_if.clone(),
        _ => panic!("unknown placeholder {arg}"),
    }
}

/// Starts every TCP flow, runs every UDP flow to its end meanwhile, then ends the TCP flows;
/// checks each delivered its traffic and each sender has the comm it was named.
fn run_flows(specs: &[FlowSpec], pairs: &[NetnsPair], me: u32) -> Vec<RanFlow> {
    let tcp: Vec<(FlowSpec, TcpFlow)> = specs
        .iter()
        .filter(|s| s.proto == Proto::Tcp)
        .map(|s| {
            let f = TcpFlow::start(
                &pairs[s.pair],
                s.port,
                &comm_of(s.name, me),
                TcpFlowOpts::bytes(FILTER_TCP_BYTES),
            );
            (*s, f)
        })
        .collect();
    let mut ran: Vec<RanFlow> = specs
        .iter()
        .filter(|s| s.proto == Proto::Udp)
        .map(|s| {
            let u = udp_flow(
                &pairs[s.pair],
                s.port,
                &comm_of(s.name, me),
                FILTER_UDP_DATAGRAMS,
                1000,
            );
            assert!(
                u.received > 0,
                "expected UDP flow {} to deliver datagrams on port {}, got {} of {}",
                s.name,
                s.port,
                u.received,
                u.sent
            );
            RanFlow {
                spec: *s,
                sender: u.sender,
                key: u.key,
            }
        })
        .collect();
    for (s, f) in tcp {
        let (sender, key) = (f.sender.clone(), f.key.clone());
        let r = f.finish();
        assert_eq!(
            r.received, FILTER_TCP_BYTES,
            "expected flow {} to deliver {FILTER_TCP_BYTES} bytes on port {}, got {}",
            s.name, s.port, r.received
        );
        ran.push(RanFlow {
            spec: s,
            sender,
            key,
        });
    }
    for f in &ran {
        assert_eq!(
            f.sender.comm,
            comm_of(f.spec.name, me),
            "premise: expected flow {}'s sender thread to have the comm it was named",
            f.spec.name
        );
    }
    ran
}

/// The setup every filter case shares: its namespace pairs (tbf on each sender veth),
/// `sockmem trace --json <args>` attached, then the case's flows, then the tracer stopped; then
/// the kept flows must show events, the excluded ones none, and the case's own checks hold.
fn filter_case(test: &'static str, case: &FilterCase) {
    let me = std::process::id();
    let n_pairs = case.flows.iter().map(|f| f.pair + 1).max().unwrap_or(1);
    let pairs: Vec<NetnsPair> = (0..n_pairs)
        .map(|i| NetnsPair::with_tbf(&format!("{}{i}", case.tag), case.subnet + 10 * i as u8))
        .collect();
    let args: Vec<String> = case
        .args
        .iter()
        .map(|a| expand_arg(a, me, case.flows, &pairs))
        .collect();
    let mut cmd = vec!["trace", "--json"];
    cmd.extend(args.iter().map(String::as_str));
    let (flows, out) = traced(&cmd, || run_flows(case.flows, &pairs, me));
    let trace = out.json();
    trace.assert_summary_counts_events();
    let run = FilterRun {
        test,
        args,
        me,
        pairs,
        flows,
        trace,
    };
    eprintln!(
        "{test}: {:?}: {} events; per flow: {}",
        run.args,
        run.trace.events.len(),
        run.flows
            .iter()
            .map(|f| format!(
                "{} {:?} {}: {}",
                f.spec.name,
                f.spec.proto,
                f.key,
                run.trace.events_for(&f.key).len()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for name in case.expect_kept {
        let f = run.flow(name);
        let n = run.trace.events_for(&f.key).len();
        assert!(
            n >= 1,
            "{test}: with {:?}, expected >= 1 event of flow {name}'s sender {} ({:?}, thread \
             {:?}), got {n} of {} events",
            run.args,
            f.key,
            f.spec.proto,
            f.sender.comm,
            run.trace.events.len()
        );
    }
    for name in case.expect_excluded {
        let port = run.flow(name).spec.port;
        run.assert_no_event(&format!("on flow {name}'s port {port}"), |e| {
            has_port(e, port)
        });
    }
    (case.also)(&run);
}

fn no_more_checks(_: &FilterRun) {}

/// `--pid` of this process: every event a sendmsg names is this process's.
fn sendmsg_owned_events_are_mine(run: &FilterRun) {
    let me = u64::from(run.me);
    run.assert_no_event(
        &format!("owned by a sendmsg of a tgid other than {me}"),
        |e| get_str(e, "owner") == "sendmsg" && get_u64(e, "tgid") != me,
    );
}

/// `--comm` of flow a's sender, flow b running alongside in the same namespaces.
fn only_flow_a_comm(run: &FilterRun) {
    let comm_a = comm_of("a", run.me);
    let b = run.flow("b");
    // Without a sendmsg hook, B's skbs sent in softirq under A's thread carry A's comm.
    if run.trace.is_attached("sendmsg_ret") {
        let of_b = run.trace.events_for(&b.key);
        assert_eq!(
            of_b.len(),
            0,
            "{}: expected 0 events of flow b's sender {} with --comm {comm_a}, got {}:\n{}",
            run.test,
            b.key,
            of_b.len(),
            first_few(&of_b, 3)
        );
    } else {
        eprintln!(
            "{}: no sendmsg hook on this kernel/backend: B's absence not checked",
            run.test
        );
    }
    let port_b = b.spec.port;
    run.assert_no_event(
        &format!("owned by a sendmsg on flow b's port {port_b}"),
        |e| has_port(e, port_b) && get_str(e, "owner") == "sendmsg",
    );
    run.assert_no_event(&format!("with a comm other than {comm_a:?}"), |e| {
        get_str(e, "comm") != comm_a
    });
}

/// `--port` of flow a: every event has that port at one end.
fn every_event_on_port_a(run: &FilterRun) {
    let port = run.flow("a").spec.port;
    run.assert_no_event(&format!("without port {port} at either end"), |e| {
        !has_port(e, port)
    });
}

/// `--addr` of pair 0's receiver: every event has that address at one end.
fn every_event_at_pair0_rx_addr(run: &FilterRun) {
    let addr = run.pairs[0].rx_addr.to_string();
    run.assert_no_event(&format!("without address {addr} at either end"), |e| {
        get_str(e, "laddr") != addr && get_str(e, "raddr") != addr
    });
}

/// `--iface` of pair 0's sender veth: every event on an interface is on that one.
fn every_iface_event_on_pair0_tx_if(run: &FilterRun) {
    let tx_if = run.pairs[0].tx_if.clone();
    run.assert_no_event(&format!("on an interface other than {tx_if:?}"), |e| {
        get_opt_str(e, "iface").is_some_and(|i| i != tx_if)
    });
}

fn every_event_tcp(run: &FilterRun) {
    run.assert_no_event("of a protocol other than tcp", |e| {
        get_str(e, "proto") != "tcp"
    });
}

fn every_event_udp(run: &FilterRun) {
    run.assert_no_event("of a protocol other than udp", |e| {
        get_str(e, "proto") != "udp"
    });
}

/// One `#[test]` per filter case.
macro_rules! filter_tests {
    ($($name:ident: $case:expr;)+) => {
        $(
            #[test]
            fn $name() {
                filter_case(stringify!($name), &$case);
            }
        )+
    };
}

filter_tests! {
    // Another process's pid sees none of our traffic.
    filter_pid_of_another_process: FilterCase {
        tag: "fpido",
        subnet: 120,
        flows: &[TCP_A],
        args: &["--pid", "1", "--port", "{port:a}"],
        expect_kept: &[],
        expect_excluded: &["a"],
        also: no_more_checks,
    };
    filter_pid_of_this_process: FilterCase {
        tag: "fpids",
        subnet: 121,
        flows: &[TCP_A],
        args: &["--pid", "{me}", "--port", "{port:a}"],
        expect_kept: &["a"],
        expect_excluded: &[],
        also: sendmsg_owned_events_are_mine,
    };
    // Flow b's absence is checked in `only_flow_a_comm`: whether its skbs can be told apart
    // from a's depends on the hooks this kernel offers.
    filter_comm: FilterCase {
        tag: "fcomm",
        subnet: 122,
        flows: &[TCP_A, TCP_B],
        args: &["--comm", "{comm:a}"],
        expect_kept: &["a"],
        expect_excluded: &[],
        also: only_flow_a_comm,
    };
    filter_port: FilterCase {
        tag: "fport",
        subnet: 123,
        flows: &[TCP_A, TCP_B],
        args: &["--port", "{port:a}"],
        expect_kept: &["a"],
        expect_excluded: &["b"],
        also: every_event_on_port_a,
    };
    filter_addr: FilterCase {
        tag: "faddr",
        subnet: 124,
        flows: &[TCP_A, TCP_B_ELSEWHERE],
        args: &["--addr", "{rx_addr:0}"],
        expect_kept: &["a"],
        expect_excluded: &["b"],
        also: every_event_at_pair0_rx_addr,
    };
    filter_iface: FilterCase {
        tag: "fif",
        subnet: 125,
        flows: &[TCP_A, TCP_B_ELSEWHERE],
        args: &["--iface", "{tx_if:0}"],
        expect_kept: &["a"],
        expect_excluded: &["b"],
        also: every_iface_event_on_pair0_tx_if,
    };
    filter_tcp: FilterCase {
        tag: "ftcp",
        subnet: 126,
        flows: &[TCP_A, UDP_U],
        args: &["--tcp"],
        expect_kept: &["a"],
        expect_excluded: &["u"],
        also: every_event_tcp,
    };
    filter_udp: FilterCase {
        tag: "fudp",
        subnet: 127,
        flows: &[TCP_A, UDP_U],
        args: &["--udp"],
        expect_kept: &["u"],
        expect_excluded: &["a"],
        also: every_event_udp,
    };
}
