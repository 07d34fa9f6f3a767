//! `sockmem top`: on a terminal (a tmux pane, read with `capture-pane`) and as plain lines, with
//! a stalled-receiver TCP flow (its queued bytes climb to the send buffer and stay: a number
//! `ss -tmi` can confirm) and a bulk flow beside it.
//!
//! Needs tmux (the VM images may lack it): host only.
mod support;

use std::{
    net::SocketAddrV4,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use support::*;

/// One refresh (1 s by default) and room for a slow machine.
const REFRESH_WAIT: Duration = Duration::from_secs(15);

/// A tmux server of our own (`-L`), one 200×50 session running a plain shell; killed on drop.
struct Tmux {
    server: String,
}

impl Tmux {
    fn start(tag: &str) -> Tmux {
        Tmux::start_sized(tag, 200)
    }

    /// A session `columns` wide (50 lines).
    fn start_sized(tag: &str, columns: u16) -> Tmux {
        let columns = columns.to_string();
        let t = Tmux {
            server: format!("sockmem-top-{}-{tag}", std::process::id()),
        };
        t.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &columns,
            "-y",
            "50",
            "env PS1='top-test$ ' bash --norc --noprofile",
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = run_with_timeout(
            Command::new("tmux").arg("-L").arg(&self.server).args(args),
            CMD_TIMEOUT,
        );
        out.assert_success();
        out.stdout.clone()
    }

    /// Types `text` literally, then Enter.
    fn line(&self, text: &str) {
        self.run(&["send-keys", "-t", "top", "-l", text]);
        self.run(&["send-keys", "-t", "top", "Enter"]);
    }

    /// Literal characters.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "top", "-l", text]);
    }

    /// A key by tmux's name (`q`, `C-c`, `Enter`).
    fn key(&self, k: &str) {
        self.run(&["send-keys", "-t", "top", k]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    fn alternate_on(&self) -> bool {
        self.run(&["display", "-p", "-t", "top", "#{alternate_on}"])
            .trim()
            == "1"
    }

    /// The shell's child (sockmem while it runs).
    fn foreground_pid(&self) -> Option<i32> {
        let shell = self.run(&["display", "-p", "-t", "top", "#{pane_pid}"]);
        let shell = shell.trim();
        let children =
            std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Captures until `ok` holds (≤ `timeout`); panics with the last screen otherwise.
    fn wait_screen(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "expected {what} within {timeout:?}; the screen:\n{s}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `sockmem top <args>` in the shell, then prints its exit status; returns once its
    /// ready file exists and the first refresh is on the screen.
    fn start_top(&self, args: &[&str]) {
        let ready = tmp_path("top-ready");
        let mut cmd = vec![sockmem_bin().to_owned(), "top".to_owned()];
        cmd.extend(args.iter().map(|a| a.to_string()));
        cmd.extend(["--ready-file".to_owned(), ready.display().to_string()]);
        self.line(&format!("clear; {}; echo top-exit=$?", cmd.join(" ")));
        wait_file(&ready);
        self.wait_screen("top's first refresh", REFRESH_WAIT, |s| {
            s.contains("sockmem top  t=")
        });
        let _ = std::fs::remove_file(&ready);
    }

    /// After top ended: the main screen back, the exit status 0 printed by the shell, and the
    /// terminal out of raw mode (`stty` says `icanon echo`) with a prompt that runs commands.
    fn assert_restored(&self, how: &str) {
        let s = self.wait_screen(
            &format!("top's exit status after {how}"),
            EXIT_TIMEOUT,
            |s| s.contains("top-exit="),
        );
        assert!(
            s.contains("top-exit=0"),
            "expected top to exit 0 after {how}; the screen:\n{s}"
        );
        assert!(
            !self.alternate_on(),
            "expected the alternate screen off after {how}"
        );
        self.line("stty -a | tr ' ' '\\n' | grep -xE -- '-?(icanon|echo)' | tr '\\n' ' '; echo; echo alive-$((6*7))");
        let s = self.wait_screen(&format!("a working prompt after {how}"), CMD_TIMEOUT, |s| {
            s.contains("alive-42")
        });
        let modes = s
            .lines()
            .rev()
            .find(|l| l.contains("icanon"))
            .unwrap_or_default();
        assert_eq!(
            modes.split_whitespace().collect::<Vec<_>>(),
            ["icanon", "echo"],
            "expected the terminal back in canonical mode with echo after {how}; the screen:\n{s}"
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.server, "kill-server"])
            .status();
    }
}

fn wait_file(p: &Path) {
    assert!(
        wait_until(READY_TIMEOUT, || p.exists()),
        "expected the ready file {} within {READY_TIMEOUT:?}",
        p.display()
    );
}

/// One socket's row as `top` shows it: `LOCAL > REMOTE PROTO PID COMM CGROUP IFACE QUEUED ALLOC
/// SNDBUF QUEUED/S ALLOC/S BLOCKED QDISC_P99 DROPS`.
#[derive(Debug)]
struct ScreenRow {
    local_port: u16,
    remote_port: u16,
    pid: String,
    comm: String,
    cgroup: String,
    queued: u64,
    sndbuf: u64,
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn screen_rows(screen: &str) -> Vec<ScreenRow> {
    screen
        .lines()
        .filter_map(|l| {
            // A closed socket's first column ends with `(closed)`.
            let w: Vec<&str> = l.split_whitespace().filter(|w| *w != "(closed)").collect();
            if w.len() < 15 || w[1] != ">" {
                return None;
            }
            let number = |i: usize, what: &str| -> u64 {
                w[i].parse().unwrap_or_else(|e| {
                    panic!("{what} {:?} in {l:?}: {e}; the screen:\n{screen}", w[i])
                })
            };
            Some(ScreenRow {
                local_port: port_of(w[0]),
                remote_port: port_of(w[2]),
                pid: w[4].to_owned(),
                comm: w[5].to_owned(),
                cgroup: w[6].to_owned(),
                queued: number(8, "QUEUED"),
                sndbuf: number(10, "SNDBUF"),
            })
        })
        .collect()
}

fn header_time(screen: &str) -> String {
    let h = screen
        .lines()
        .find(|l| l.contains("sockmem top  t="))
        .expect("a header");
    h.split_whitespace().nth(2).unwrap().to_owned()
}

/// The remote ports of the senders' rows (to `ports`), top to bottom.
fn order(screen: &str, ports: &[u16]) -> Vec<u16> {
    screen_rows(screen)
        .iter()
        .map(|r| r.remote_port)
        .filter(|p| ports.contains(p))
        .collect()
}

#[test]
fn the_table_shows_both_flows_agrees_with_ss_and_its_keys_work() {
    let pair = NetnsPair::new("top", 231);
    let (stall_port, bulk_port) = (23101u16, 23102u16);
    let tmux = Tmux::start("tty");
    let ports = ["-P", "23101", "-P", "23102", "--sort", "port"];
    tmux.start_top(&ports);

    let stalled = StalledTcp::start(&pair, stall_port, "smtop-stall");
    let bulk = TcpFlow::start(
        &pair,
        bulk_port,
        "smtop-bulk",
        // A steady 6.5 MB/s, not as fast as it can: a debug build on a loaded machine keeps up.
        TcpFlowOpts::until_stopped()
            .write_gap(Duration::from_millis(10))
            .for_at_most(Duration::from_secs(120)),
    );
    let (_, ss) = stalled.wait_stable(&pair);

    // (a) Both flows, with their sender; (b) the stalled one's queued and sndbuf as ss says.
    let both = |s: &str| {
        let rows = screen_rows(s);
        [stall_port, bulk_port]
            .iter()
            .all(|p| rows.iter().any(|r| r.remote_port == *p))
    };
    let stalled_agrees = |s: &str| {
        screen_rows(s)
            .iter()
            .any(|r| r.remote_port == stall_port && r.queued == ss.w && r.sndbuf == ss.tb)
    };
    let first = tmux.wait_screen(
        "both flows, the stalled one at ss's queued and sndbuf",
        REFRESH_WAIT,
        |s| both(s) && stalled_agrees(s),
    );
    let rows = screen_rows(&first);
    for (port, flow_key, sender) in [
        (stall_port, &stalled.key, &stalled.sender),
        (bulk_port, &bulk.key, &bulk.sender),
    ] {
        let r = rows.iter().find(|r| r.remote_port == port).unwrap();
        assert_eq!(r.local_port, flow_key.lport, "{r:?}");
        assert_eq!(r.pid, sender.tgid.to_string(), "{r:?}");
        assert_eq!(r.comm, sender.comm, "{r:?}");
        assert_eq!(Some(&r.cgroup), proc_cgroup(sender.tgid).as_ref(), "{r:?}");
    }
    let ss_now = ss_skmem(&pair.tx_ns, stalled.key.lport, stall_port);
    assert_eq!(ss_now, ss, "the stalled socket stayed as it was");
    // It updates: the next refresh has another time.
    let t0 = header_time(&first);
    let second = tmux.wait_screen("a later refresh", REFRESH_WAIT, |s| {
        both(s) && header_time(s) != t0
    });
    eprintln!("first screen:\n{first}\nsecond screen:\n{second}");

    // (c) Sorted by local port, smallest first; `r` reverses; `s` moves to the next key.
    let mut by_port = [(stalled.key.lport, stall_port), (bulk.key.lport, bulk_port)];
    by_port.sort();
    let ascending: Vec<u16> = by_port.iter().map(|p| p.1).collect();
    assert_eq!(
        order(&second, &ascending),
        ascending,
        "sorted by local port:\n{second}"
    );
    tmux.key("r");
    let descending: Vec<u16> = ascending.iter().rev().copied().collect();
    tmux.wait_screen("rows reversed", REFRESH_WAIT, |s| {
        s.contains("(reversed)") && order(s, &ascending) == descending
    });
    tmux.key("s");
    tmux.wait_screen("the next sort key", REFRESH_WAIT, |s| {
        s.contains("sort pid")
    });
    // The filter key keeps the rows that match.
    tmux.key("/");
    tmux.type_text("smtop-stall");
    tmux.key("Enter");
    let filtered = tmux.wait_screen("only the stalled flow", REFRESH_WAIT, |s| {
        s.contains("filter \"smtop-stall\"") && order(s, &ascending) == [stall_port]
    });
    assert!(filtered.contains("(shown 1)"), "{filtered}");

    // (d) `q` ends it; the terminal is as it was.
    tmux.key("q");
    tmux.assert_restored("q");

    // Ctrl-C (a key in raw mode) likewise, and SIGTERM.
    tmux.start_top(&ports);
    tmux.key("C-c");
    tmux.assert_restored("Ctrl-C");
    tmux.start_top(&ports);
    let pid = tmux
        .foreground_pid()
        .expect("sockmem running under the shell");
    unsafe { libc::kill(pid, libc::SIGTERM) };
    tmux.assert_restored("SIGTERM");

    bulk.stop();
    bulk.finish();
    stalled.finish();
}

/// A block of plain lines: `top key=value ...`, the column names, one line per socket.
struct Block {
    fields: Vec<(String, String)>,
    rows: Vec<Vec<String>>,
}

impl Block {
    fn get(&self, k: &str) -> &str {
        &self.fields.iter().find(|f| f.0 == k).expect(k).1
    }
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let Some(rest) = l.strip_prefix("top ") else {
            panic!("expected a `top` line, got {l:?}");
        };
        let fields = rest
            .split_whitespace()
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("key=value");
                (k.to_owned(), v.to_owned())
            })
            .collect();
        assert!(lines.next().unwrap().starts_with("LOCAL REMOTE PROTO"));
        let mut rows = Vec::new();
        for l in lines.by_ref() {
            if l.is_empty() {
                break;
            }
            rows.push(l.split_whitespace().map(str::to_owned).collect());
        }
        out.push(Block { fields, rows });
    }
    out
}

#[test]
fn without_a_terminal_it_prints_blocks_a_script_can_check_against_ss() {
    let pair = NetnsPair::new("topl", 232);
    let (stall_port, bulk_port, cgroup_port, blocking_port) = (23201u16, 23202, 23203, 23204);
    let args = [
        "top",
        "-P",
        "23201",
        "-P",
        "23202",
        "-P",
        "23203",
        "-P",
        "23204",
        "--interval",
        "0.5",
    ];
    let text = Tracer::start(&args);
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let json = Tracer::start(&json_args);
    let stalled = StalledTcp::start(&pair, stall_port, "smtopl-stall");
    let bulk = TcpFlow::start(
        &pair,
        bulk_port,
        "smtopl-bulk",
        // A steady 6.5 MB/s, not as fast as it can: a debug build on a loaded machine keeps up.
        TcpFlowOpts::until_stopped()
            .write_gap(Duration::from_millis(10))
            .for_at_most(Duration::from_secs(120)),
    );
    let (_, ss) = stalled.wait_stable(&pair);
    // A sender asleep in blocking writes (2 s each, then EAGAIN and the next one) all along.
    let sndtimeo = Duration::from_secs(2);
    let blocking = BlockingStalledTcp::start(&pair, blocking_port, "smtopl-block", sndtimeo);
    blocking.wait_blocked(1, Duration::from_secs(40));
    // A sender process of its own in a cgroup made here: the column names that cgroup.
    let group = CgroupDir::create(&format!("/sockmem-test-{}-top", std::process::id()));
    let reader = TcpReader::start(&pair, cgroup_port);
    let child = CgroupSender::start(
        &group,
        &pair.tx_ns,
        SocketAddrV4::new(pair.rx_addr, cgroup_port),
        64 * 1024,
        16,
    );
    let (child_pid, child_cgroup) = (child.pid, proc_cgroup(child.pid));
    assert_eq!(child_cgroup.as_deref(), Some(group.path.as_str()));
    child.go();
    let report = child.report(Duration::from_secs(90));
    assert!(wait_until(Duration::from_secs(90), || reader.received()
        >= report.bytes));
    reader.finish();
    // A few refreshes with the stalled socket settled.
    thread::sleep(Duration::from_secs(2));
    let ss_after = ss_skmem(&pair.tx_ns, stalled.key.lport, stall_port);
    let text = text.stop_checked();
    let json = json.stop_checked();
    let writes = blocking.stop_writing(Duration::from_secs(20));
    blocking.finish();
    let (stalled_sender, stalled_lport) = (stalled.sender.clone(), stalled.key.lport);
    let bulk_comm = bulk.sender.comm.clone();
    bulk.stop();
    bulk.finish();
    stalled.finish();
    assert_eq!(ss_after, ss, "the stalled socket stayed as it was");

    let bs = blocks(&text.stdout);
    assert!(
        bs.len() >= 4,
        "expected a block every 0.5 s, got {}: {}",
        bs.len(),
        text.stdout
    );
    // Periodic: each block's time about an interval after the previous one.
    let times: Vec<f64> = bs
        .iter()
        .map(|b| b.get("time_s").parse().unwrap())
        .collect();
    // Most gaps are the interval; a loaded machine (two VMs and builds beside it) delayed one
    // refresh by 2.07 s: single gaps up to 5 s, the median near the interval.
    let mut gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| (0.3..=5.0).contains(g)),
        "expected blocks about 0.5 s apart: {times:?}"
    );
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    assert!(
        (0.4..=0.8).contains(&median),
        "expected blocks 0.5 s apart as a rule (median gap {median:.3} s): {times:?}"
    );
    let last = bs.last().unwrap();
    let row = |port: u16| {
        last.rows
            .iter()
            .find(|r| port_of(&r[1]) == port)
            .unwrap_or_else(|| panic!("no row for port {port} in the last block: {:?}", last.rows))
    };
    let s = row(stall_port);
    assert_eq!(port_of(&s[0]), stalled_lport);
    assert_eq!(
        (s[3].as_str(), s[4].as_str()),
        (
            stalled_sender.tgid.to_string().as_str(),
            stalled_sender.comm.as_str()
        )
    );
    assert_eq!(Some(&s[5]), proc_cgroup(stalled_sender.tgid).as_ref());
    let (queued, sndbuf): (u64, u64) = (s[7].parse().unwrap(), s[9].parse().unwrap());
    assert_eq!(
        (queued, sndbuf),
        (ss.w, ss.tb),
        "the stalled socket against ss: {s:?}"
    );
    assert_eq!(s[10], "0", "a stalled queue does not move: {s:?}");
    // The cgroup sender's socket, in some block (it closed when the child exited: it stays a
    // few seconds): its pid and cgroup as /proc said while it ran.
    let child_row = bs
        .iter()
        .flat_map(|b| &b.rows)
        .find(|r| port_of(&r[0]) == report.lport && port_of(&r[1]) == cgroup_port)
        .expect("the cgroup sender's socket in some block");
    assert_eq!(child_row[3], child_pid.to_string(), "{child_row:?}");
    assert_eq!(Some(&child_row[5]), child_cgroup.as_ref(), "{child_row:?}");
    // The blocking sender: by its own clock its writes after the buffer filled, back to back,
    // each slept about its timeout or returned at once (a few bytes the peer's window let in:
    // 28 us seen), so in each of the last blocks (within the 2 s after its first such write) top
    // says it was asleep nearly the whole interval.
    let first_blocked = writes
        .iter()
        .position(|w| w.took >= sndtimeo / 2)
        .expect("a blocked write");
    let slept: Vec<Duration> = writes[first_blocked..].iter().map(|w| w.took).collect();
    assert!(
        slept
            .iter()
            .all(|t| *t >= sndtimeo * 9 / 10 || *t < Duration::from_millis(1)),
        "expected every write after the first blocked one to sleep ~{sndtimeo:?} or return at \
         once: {slept:?}"
    );
    for b in &bs[bs.len() - 3..] {
        let r = b
            .rows
            .iter()
            .find(|r| port_of(&r[1]) == blocking_port)
            .expect("the blocking sender's row");
        let blocked_ns: f64 = r[12].parse().unwrap();
        let interval_ns = b.get("interval_s").parse::<f64>().unwrap() * 1e9;
        eprintln!(
            "blocking sender asleep {:.4} of a {interval_ns} ns interval",
            blocked_ns / interval_ns
        );
        assert!(
            blocked_ns >= 0.9 * interval_ns && blocked_ns <= interval_ns * 1.001,
            "expected the blocking sender asleep ~all of the {interval_ns} ns interval: {r:?}"
        );
    }
    let b = row(bulk_port);
    assert_eq!(b[4], bulk_comm);
    assert_eq!(last.get("sockets"), last.rows.len().to_string());
    let total: i64 = last.rows.iter().map(|r| r[7].parse::<i64>().unwrap()).sum();
    assert_eq!(last.get("queued"), total.to_string());
    assert_eq!(last.get("lost"), "0");

    // JSON lines: the same, one object per refresh.
    let docs: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(docs.len() >= 4);
    let last = docs.last().unwrap();
    let sock = last["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["remote"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{stall_port}"))
        })
        .expect("the stalled socket in the last JSON refresh");
    assert_eq!(sock["queued"].as_u64(), Some(ss.w));
    assert_eq!(sock["sndbuf"].as_u64(), Some(ss.tb));
    assert_eq!(sock["comm"].as_str(), Some(stalled_sender.comm.as_str()));
}

/// A sender stalled by a receiver that stopped reading, its queue full and stable (`ss`) and its
/// next zero-window probe further away than the whole `top` run, so that it makes no event
/// while `top` runs: `top` must still show it from its first block (sock_diag names every socket
/// there is), at `ss`'s `w` and `tb`, held by this process (the holder stands in for the
/// sender: no `sendmsg` is seen). The filters hold for it: `-p` with this pid keeps it; another
/// `--comm`, another port, an `--iface` (no skb of it is seen, so it cannot be known) leave it
/// out.
#[test]
fn a_sender_stalled_before_top_starts_is_in_its_first_block() {
    let pair = NetnsPair::new("topsd", 233);
    let port = 23301u16;
    let stalled = StalledTcp::start(&pair, port, "smtops-stall");
    let lport = stalled.key.lport;
    let (_, ss) = stalled.wait_stable(&pair);
    // Probes back off (0.2, 0.4, ... 6.4, 12.8 s): wait for one further away than the runs
    // below (five `top`s loading their programs at once took 4.9 s).
    let quiet = Duration::from_secs(10);
    let mut left = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            left = persist_timer_left(&pair.tx_ns, lport, port);
            left.is_some_and(|l| l >= quiet)
        }),
        "premise: expected the stalled sender's persist timer to reach {quiet:?} within 60 s, \
         last {left:?}"
    );
    let quiet_since = Instant::now();
    let p = port.to_string();
    let other_port = (port + 1).to_string();
    let me = std::process::id();
    let my_pid = me.to_string();
    let base = ["top", "--interval", "0.5", "-d", "1.2", "-P"];
    // (what, arguments after -P, the socket shown)
    let runs: Vec<(&str, Vec<&str>, bool)> = vec![
        ("-P only", vec![&p], true),
        ("this pid", vec![&p, "-p", &my_pid], true),
        ("another comm", vec![&p, "-c", "smtops-nobody"], false),
        ("another port", vec![&other_port], false),
        ("an interface", vec![&p, "--iface", &pair.tx_if], false),
    ];
    let tracers: Vec<Tracer> = runs
        .iter()
        .map(|(_, extra, _)| {
            let mut args = base.to_vec();
            args.extend(extra.iter().copied());
            Tracer::start(&args)
        })
        .collect();
    let outputs: Vec<_> = tracers
        .into_iter()
        .map(|t| t.wait(Duration::from_secs(30)))
        .collect();
    let run_took = quiet_since.elapsed();
    let ss_after = ss_skmem(&pair.tx_ns, lport, port);
    let left_after = persist_timer_left(&pair.tx_ns, lport, port);
    stalled.finish();
    assert!(
        run_took < left.unwrap(),
        "premise: expected the runs ({run_took:?}) over before the next zero-window probe \
         ({left:?} away as they started)"
    );
    assert_eq!(ss_after, ss, "premise: the stalled socket stayed as it was");
    eprintln!("persist timer {left:?} before the runs, {left_after:?} after ({run_took:?})");

    let my_comm = std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim_end()
        .to_owned();
    let my_cgroup = proc_cgroup(me);
    for ((what, _, shown), out) in runs.iter().zip(&outputs) {
        out.assert_no_panic();
        out.assert_success();
        let bs = blocks(&out.stdout);
        assert!(!bs.is_empty(), "{what}: no block: {}", out.describe());
        let first = &bs[0];
        let row = first
            .rows
            .iter()
            .find(|r| port_of(&r[0]) == lport && port_of(&r[1]) == port);
        if !shown {
            assert!(
                row.is_none(),
                "{what}: expected the stalled socket left out, got {row:?}"
            );
            continue;
        }
        eprintln!("{what}: first block: {:?}", first.rows);
        let row = row.unwrap_or_else(|| {
            panic!(
                "expected the socket stalled before top started in its first block (ss {ss:?}), \
                 got {:?}",
                first.rows
            )
        });
        let (queued, sndbuf): (u64, u64) = (row[7].parse().unwrap(), row[9].parse().unwrap());
        assert_eq!(
            (queued, sndbuf),
            (ss.w, ss.tb),
            "QUEUED and SNDBUF against ss's w and tb: {row:?}"
        );
        assert_eq!(
            (row[3].as_str(), row[4].as_str()),
            (me.to_string().as_str(), my_comm.as_str()),
            "the process holding it (this one): {row:?}"
        );
        assert_eq!(Some(&row[5]), my_cgroup.as_ref(), "{row:?}");
        // It stays in every block, as it was.
        for b in &bs {
            let r = b
                .rows
                .iter()
                .find(|r| port_of(&r[0]) == lport && port_of(&r[1]) == port)
                .expect("the stalled socket in every block");
            assert_eq!(r[7].parse::<u64>().unwrap(), ss.w, "{r:?}");
        }
    }
}

/// A blocking sender asleep in one long write (`SO_SNDTIMEO` longer than the run) behind a
/// receiver that stopped reading, from before `top` starts until after it ends: /proc says its
/// thread is in the send call on the socket, asleep (`wchan`), before and after, and the sender's
/// own count of returned writes does not move over the run. That call began before sockmem
/// attached, so no event tells of its sleep while `top` runs; `top` must still show it asleep
/// about all of every interval from the first block (the socket and its holder from sock_diag
/// and /proc).
#[test]
fn a_sender_asleep_in_send_before_top_starts_is_blocked_from_the_first_block() {
    const T: &str = "a_sender_asleep_in_send_before_top_starts_is_blocked_from_the_first_block";
    let pair = NetnsPair::new("topas", 234);
    let port = 23401u16;
    // Longer than loading the programs and the run (an emulated VM takes a minute to attach).
    let sndtimeo = Duration::from_secs(if emulated() { 110 } else { 20 });
    let flow = BlockingStalledTcp::start(&pair, port, "smtopas-block", sndtimeo);
    let asleep = flow.wait_asleep_in_send(Duration::from_secs(40));
    let returned = flow.writes_returned();
    let since = Instant::now();
    let p = port.to_string();
    let out = Tracer::start(&["top", "-P", &p, "--interval", "0.5", "-d", "3"])
        .wait(Duration::from_secs(150));
    let still = asleep_in_send(flow.sender.tgid, flow.sender.tid);
    let (returned_after, took) = (flow.writes_returned(), since.elapsed());
    let lport = flow.key.lport;
    flow.stop_writing(sndtimeo + Duration::from_secs(20));
    flow.finish();
    eprintln!("{T}: asleep {asleep:?} before, {still:?} after ({took:?})");
    assert!(
        still.as_ref() == Some(&asleep) && returned_after == returned,
        "premise: expected the sender asleep in the same send call all along ({asleep:?}), got \
         {still:?} after, {} write(s) returned meanwhile",
        returned_after - returned
    );
    out.assert_no_panic();
    out.assert_success();
    let bs = blocks(&out.stdout);
    assert!(
        bs.len() >= 4,
        "expected a block every 0.5 s: {}",
        out.describe()
    );
    for (i, b) in bs.iter().enumerate() {
        let r = b
            .rows
            .iter()
            .find(|r| port_of(&r[0]) == lport && port_of(&r[1]) == port)
            .unwrap_or_else(|| panic!("block {i}: no row for the asleep sender: {:?}", b.rows));
        let blocked_ns: f64 = r[12].parse().unwrap();
        let interval_ns = b.get("interval_s").parse::<f64>().unwrap() * 1e9;
        eprintln!(
            "{T}: block {i}: asleep {:.4} of a {interval_ns} ns interval",
            blocked_ns / interval_ns
        );
        // Asleep the whole interval, which the block prints to the ms (measured: 0.9991 to
        // 1.0007 of it, half-second intervals): 1 ms either way.
        assert!(
            (blocked_ns - interval_ns).abs() <= 1e6,
            "block {i}: expected the sender asleep all of the {interval_ns} ns interval: {r:?}"
        );
    }
}

/// The screen's table: the column names in its header row, and each socket's cells (the
/// socket's four words, `LOCAL > REMOTE PROTO`, then one per column after `SOCKET`).
fn screen_table(screen: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let names = screen
        .lines()
        .map(words)
        .find(|w| w.first().is_some_and(|w| w == "SOCKET"))
        .unwrap_or_default();
    let rows = screen
        .lines()
        .map(words)
        .filter(|w| w.len() >= 4 && w[1] == ">")
        .collect();
    (names, rows)
}

/// `+0B/s`, `-1.5KiB/s`: a rate as top shows it, whole (its unit and `/s` there).
fn is_whole_rate(v: &str) -> bool {
    let Some(n) = v
        .strip_prefix(['+', '-'])
        .and_then(|v| v.strip_suffix("/s"))
    else {
        return false;
    };
    ["GiB", "MiB", "KiB", "B"]
        .iter()
        .find_map(|u| n.strip_suffix(u))
        .is_some_and(|n| n.parse::<f64>().is_ok())
}

/// `641ns`, `9.6ms`: a duration as top shows it, whole.
fn is_whole_duration(v: &str) -> bool {
    ["ns", "us", "ms", "s"]
        .iter()
        .find_map(|u| v.strip_suffix(u))
        .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok())
}

/// A text cell: `want` whole, or its beginning and a visible `…`.
fn is_whole_or_marked(cell: &str, want: &str) -> bool {
    cell == want
        || cell
            .strip_suffix('…')
            .is_some_and(|head| !head.is_empty() && want.starts_with(head))
}

/// On a terminal too narrow for every column, `top` leaves whole columns out (and says so)
/// rather than cutting them: at 80 and 120 columns, every value shown of a stalled sender is
/// ss's value (or the sender's own pid, comm, cgroup) in full, or a rate, duration or `-` with
/// its unit, never a prefix; text is cut only with a visible `…`.
#[test]
fn on_a_narrow_terminal_whole_columns_are_hidden_never_cut() {
    const ALL_COLUMNS: [&str; 13] = [
        "SOCKET",
        "PID",
        "COMM",
        "CGROUP",
        "IFACE",
        "QUEUED",
        "ALLOC",
        "SNDBUF",
        "QUEUED/S",
        "ALLOC/S",
        "BLOCKED",
        "QDISC_P99",
        "DROPS",
    ];
    let pair = NetnsPair::new("topw", 234);
    let me = std::process::id();
    let my_cgroup = proc_cgroup(me).expect("this process's cgroup");
    for (columns, port) in [(80u16, 23401u16), (120, 23402)] {
        let tmux = Tmux::start_sized(&format!("w{columns}"), columns);
        let p = port.to_string();
        tmux.start_top(&["-P", &p]);
        let stalled = StalledTcp::start(&pair, port, &format!("smtopw-{columns}"));
        let (_, ss) = stalled.wait_stable(&pair);
        let row_of = |screen: &str| {
            let (names, rows) = screen_table(screen);
            let row = rows
                .into_iter()
                .find(|r| port_of(&r[0]) == stalled.key.lport && port_of(&r[2]) == port);
            (names, row)
        };
        let screen = tmux.wait_screen(
            &format!(
                "at {columns} columns, the stalled sender at ss's queued {}",
                ss.w
            ),
            REFRESH_WAIT,
            |s| {
                let (names, row) = row_of(s);
                let queued = names.iter().position(|n| n == "QUEUED");
                row.zip(queued)
                    .is_some_and(|(r, q)| r.get(q + 3) == Some(&ss.w.to_string()))
            },
        );
        eprintln!("{columns} columns:\n{screen}");
        let (names, row) = row_of(&screen);
        let row = row.unwrap();
        // The columns shown are the table's, in its order, the socket's first.
        let mut order = ALL_COLUMNS.iter();
        assert!(
            names.iter().all(|n| order.any(|c| *c == n.as_str())) && names[0] == "SOCKET",
            "expected columns of the table in its order, got {names:?}"
        );
        let hidden = ALL_COLUMNS.len() - names.len();
        assert!(
            hidden > 0,
            "premise: expected {columns} columns too narrow for all, got {names:?}"
        );
        let note = format!(
            "{hidden} column{} hidden: widen the terminal",
            if hidden == 1 { "" } else { "s" }
        );
        assert!(
            screen.contains(&note),
            "expected {note:?} on the screen:\n{screen}"
        );
        assert_eq!(
            row.len(),
            names.len() + 3,
            "one word per column shown (the socket's four): {row:?} for {names:?}"
        );
        assert_eq!(row[3], "tcp");
        let ss_now = ss_skmem(&pair.tx_ns, stalled.key.lport, port);
        assert_eq!(ss_now, ss, "premise: the stalled socket stayed as it was");
        for (name, cell) in names[1..].iter().zip(&row[4..]) {
            let ok = match name.as_str() {
                "PID" => *cell == me.to_string(),
                "COMM" => is_whole_or_marked(cell, &stalled.sender.comm),
                "CGROUP" => is_whole_or_marked(cell, &my_cgroup),
                "IFACE" => cell == "-" || is_whole_or_marked(cell, &pair.tx_if),
                "QUEUED" => *cell == ss.w.to_string(),
                "SNDBUF" => *cell == ss.tb.to_string(),
                "ALLOC" => *cell == ss.t.to_string(),
                "QUEUED/S" | "ALLOC/S" => cell == "-" || is_whole_rate(cell),
                "BLOCKED" | "QDISC_P99" => cell == "-" || is_whole_duration(cell),
                // The sender's own skbs freed as drops (old data, probes): ss has no count of
                // them, so only its form is checked.
                "DROPS" => !cell.is_empty() && cell.bytes().all(|b| b.is_ascii_digit()),
                other => panic!("an unexpected column {other:?}"),
            };
            assert!(
                ok,
                "at {columns} columns, {name} shows {cell:?} (ss {ss:?}, sender {:?}, cgroup \
                 {my_cgroup}):\n{screen}",
                stalled.sender.comm
            );
        }
        tmux.key("q");
        tmux.assert_restored("q");
        stalled.finish();
    }
}

/// `-d N` shows the run's last interval too: the end of the run raced its last refresh, and
/// `top -d 5` printed 4 blocks (a new user's run). With no traffic asked for, a block per
/// interval still comes (the header: totals and lost events).
#[test]
fn a_run_of_a_duration_ends_with_its_last_interval() {
    const D: f64 = 3.0;
    let out = run_sockmem(
        &["top", "-P", "1", "--interval", "1", "-d", "3"],
        CMD_TIMEOUT,
    );
    out.assert_success();
    let times: Vec<f64> = blocks(&out.stdout)
        .iter()
        .map(|b| b.get("time_s").parse().unwrap())
        .collect();
    // A loaded machine can delay a refresh: the count may fall short, never the last block.
    assert!(
        times.len() >= 2 && times.last().is_some_and(|&t| t >= D - 0.5),
        "expected blocks about a second apart, the last at the end of the {D} s run (not an \
         interval before it), got times {times:?}\n{}",
        out.stdout
    );
}
