//! What every tracing command does before its own work: check privileges, read BTF, load the
//! programs with their configuration, attach every hook, and say what was attached.

use std::{
    io::{self, BufWriter, Write},
    path::Path,
};

use anyhow::{bail, Context as _};
use aya::{
    maps::{Array, MapData},
    Ebpf,
};
use sockmem_common::{names, Config, Filter, Per};

use crate::{
    attach::{
        self,
        hooks::Backend,
        loader,
        stats::{self, HookCost, StatsGuard},
        HookReport, Mode,
    },
    cli::{FilterArgs, SessionArgs, UsageError},
    kernel::{btf::Btf, cgroups, features::Kernel, interfaces, netns, offsets},
    output::{self, OutputFile},
    pipeline::names::Names,
    render::{Finish, HookLine},
};

pub struct Options<'a> {
    pub filter: Filter,
    pub args: &'a SessionArgs,
    pub ring_size: u32,
    /// `MODE_TRACE`, `MODE_HIST` or `MODE_WHY`.
    pub mode: u32,
    pub per: Per,
}

mod debug_log {
    //! `--debug`: the programs' aya-log lines on stderr, as they come.

    use anyhow::Context as _;
    use aya::Ebpf;
    use aya_log::EbpfLogger;
    use tokio::{
        io::{unix::AsyncFd, Interest},
        sync::oneshot,
        task::JoinHandle,
    };

    /// Prints each record as one `sockmem: ebpf: …` line. Our own because all it does is this
    /// one format; a logging framework's configuration would add nothing here.
    struct StderrLog;

    impl log::Log for StderrLog {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            eprintln!("sockmem: ebpf: {}", record.args());
        }
        fn flush(&self) {}
    }

    /// The task that prints the programs' log lines.
    pub struct Forwarder {
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    impl Forwarder {
        /// Prints what the programs logged up to now, then stops: lines written just before
        /// the end would otherwise be lost with the runtime (seen in a loaded VM).
        pub async fn finish(self) {
            let _ = self.stop.send(());
            let _ = self.task.await;
        }
    }

    /// Reads the programs' log ring buffer on the tokio runtime the command runs on, until
    /// [`Forwarder::finish`].
    pub fn forward(ebpf: &mut Ebpf) -> anyhow::Result<Forwarder> {
        let logger = EbpfLogger::init_with_logger(ebpf, StderrLog)
            .context("opening the eBPF programs' log (aya-log)")?;
        // SAFETY: the logger owns its ring buffer's fd, which stays open and the same until the
        // AsyncFd (and with it the logger) is dropped.
        let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("waiting on the eBPF programs' log")?;
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                let last = tokio::select! {
                    ready = fd.readable_mut() => match ready {
                        Ok(mut ready) => {
                            ready.get_inner_mut().flush();
                            ready.clear_ready();
                            false
                        }
                        Err(_) => true,
                    },
                    _ = &mut stopped => true,
                };
                if last {
                    fd.get_mut().flush();
                    return;
                }
            }
        });
        Ok(Forwarder { stop, task })
    }
}

pub struct Session {
    pub ebpf: Ebpf,
    pub reports: Vec<HookReport>,
    /// Words for the kernel's numbers in events (from this kernel's BTF).
    pub names: Names,
    /// Keeps the kernel's BPF statistics on (`--stats`).
    stats: Option<StatsGuard>,
    /// `--debug`: prints the programs' log lines.
    debug_log: Option<debug_log::Forwarder>,
}

/// Loads the kernel's BTF from `path`, or from /sys/kernel/btf/vmlinux.
/// Checks the filters against the machine: an interface no namespace has is an error (listing
/// the real ones); a process id or command name that nothing running has is worth a warning
/// (it may start later).
pub fn check_filters(f: &FilterArgs) -> anyhow::Result<()> {
    if let Some(iface) = &f.iface {
        let all = interfaces::all();
        if !all.contains_key(iface) {
            let known: Vec<String> = all
                .iter()
                .map(|(name, ns)| match ns.contains("this") {
                    true => name.clone(),
                    false => format!("{name} ({})", ns.iter().next().cloned().unwrap_or_default()),
                })
                .collect();
            bail!(UsageError(format!(
                "--iface {iface}: no such interface in any network namespace; there are: {}",
                known.join(", ")
            )));
        }
    }
    if let Some(pid) = f.pid {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!(
                "sockmem: warning: no process {pid} is running; --pid {pid} matches nothing \
                 unless it starts"
            );
        }
    }
    if let Some(comm) = &f.comm {
        if !any_thread_named(comm) {
            eprintln!(
                "sockmem: warning: no running thread's command name starts with `{comm}` \
                 (see `ps -eLo comm`); --comm matches nothing until one does"
            );
        }
    }
    Ok(())
}

/// The filters as the programs take them, `--cgroup` and `--netns` resolved on this machine
/// (an unknown cgroup or namespace is a usage error here, before anything is loaded).
pub fn kernel_filter(f: &FilterArgs) -> anyhow::Result<Filter> {
    let mut k = f.to_kernel().map_err(UsageError)?;
    if let Some(spec) = &f.cgroup {
        let target = cgroups::resolve(spec)?;
        k.cgroup_id = target.id;
        k.cgroup_level = target.level;
    }
    if let Some(spec) = &f.netns {
        k.netns_ino = netns::resolve(spec)?;
    }
    Ok(k)
}

fn any_thread_named(prefix: &str) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    procs.flatten().any(|p| {
        std::fs::read_dir(p.path().join("task")).is_ok_and(|tasks| {
            tasks.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim_end_matches('\n').starts_with(prefix))
            })
        })
    })
}

/// A `--btf` file is read whole: anything far larger than a kernel's BTF (5–10 MB) is not one.
const BTF_MAX_BYTES: u64 = 256 << 20;

pub fn kernel_btf(path: Option<&Path>) -> anyhow::Result<Btf> {
    let Some(p) = path else {
        return Btf::from_sys_fs().context("reading the running kernel's BTF");
    };
    // Checked before reading: a FIFO would block forever, /dev/zero would never end.
    let meta =
        std::fs::metadata(p).with_context(|| format!("reading BTF from `{}`", p.display()))?;
    if !meta.is_file() {
        bail!(
            "`{}` is not a regular file; --btf takes a BTF file",
            p.display()
        );
    }
    if meta.len() > BTF_MAX_BYTES {
        bail!(
            "`{}` is {} MiB, far larger than any kernel's BTF; --btf takes a BTF file",
            p.display(),
            meta.len() >> 20
        );
    }
    let btf = Btf::from_path(p).with_context(|| format!("reading BTF from `{}`", p.display()))?;
    check_matches_running_kernel(p, &btf)?;
    Ok(btf)
}

/// A BTF file from another kernel gives wrong offsets, so garbage or no events. Where the running
/// kernel's own BTF can be read, the offsets sockmem needs must be the same in both.
fn check_matches_running_kernel(p: &Path, btf: &Btf) -> anyhow::Result<()> {
    let Ok(live) = Btf::from_sys_fs() else {
        return Ok(());
    };
    let theirs = offsets::resolve(btf)
        .with_context(|| format!("`{}` lacks what sockmem reads", p.display()))?;
    let ours = offsets::resolve(&live).context("resolving offsets from the running kernel")?;
    if theirs != ours {
        bail!(
            "`{}` does not match the running kernel ({}): the struct layouts sockmem reads \
             differ from /sys/kernel/btf/vmlinux",
            p.display(),
            loader::kernel_release()
        );
    }
    Ok(())
}

/// A thread's result, its panic passed on.
fn joined<T>(r: std::thread::Result<T>) -> T {
    r.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Loads and attaches; the programs start running when this returns.
pub fn start(o: &Options) -> anyhow::Result<Session> {
    loader::check_privileges()?;
    // The kernel's BTF is parsed three times, ~30–50 ms each: by us (offsets, tracepoints), by
    // aya's loader (relocations; `EbpfLoader::new` always does, and cannot be handed a parse),
    // and by aya for fentry loads. All at once, on their own threads.
    let (btf, ebpf_loader, aya_btf) = std::thread::scope(|s| {
        let ebpf_loader = s.spawn(aya::EbpfLoader::new);
        // fentry loads read `--btf` when given, else the running kernel's.
        let aya_btf = o
            .args
            .btf
            .is_none()
            .then(|| s.spawn(|| aya::Btf::from_sys_fs().ok()));
        let btf = kernel_btf(o.args.btf.as_deref());
        let ebpf_loader = joined(ebpf_loader.join());
        (btf, ebpf_loader, aya_btf.and_then(|t| joined(t.join())))
    });
    let btf = btf?;
    let config = Config {
        mode: o.mode,
        per: o.per as u32,
        ..loader::config(&btf, o.filter)?
    };
    let mut ebpf = loader::load_with(ebpf_loader, &config, o.ring_size, o.args.debug)?;
    let mut kernel = Kernel::new(&btf, o.args.btf.as_deref());
    if let Some(b) = aya_btf {
        kernel = kernel.with_aya_btf(b);
    }
    let mode = match o.args.backend {
        Some(b) => Mode::Forced(b),
        None => Mode::Auto,
    };
    let reports = attach::attach_all(&mut ebpf, &kernel, mode)?;
    let defects = attach::defects(&reports);
    for (hook, backend, why) in &defects {
        eprintln!(
            "sockmem: warning: hook `{}` did not load via {backend} although this kernel has its \
             attach point: {}",
            hook.name(),
            why.explain()
        );
    }
    if o.args.strict && !defects.is_empty() {
        bail!(
            "--strict: {} hook program(s) failed to load (warnings above)",
            defects.len()
        );
    }
    if let Err(why) = attach::attach_context(&mut ebpf, &kernel) {
        eprintln!(
            "sockmem: warning: cannot tell softirq from process context ({}); events in \
             softirq on sockets with no sendmsg seen name the interrupted task",
            why.explain()
        );
    }
    report_hooks(&reports, o.args.verbose);
    let debug_log = if o.args.debug {
        Some(debug_log::forward(&mut ebpf)?)
    } else {
        None
    };
    let names = Names::new(&btf);
    // On before the programs start, so every run of theirs is counted.
    let stats = if o.args.stats {
        Some(stats::enable()?)
    } else {
        None
    };
    let session = Session {
        ebpf,
        reports,
        names,
        stats,
        debug_log,
    };
    Ok(session)
}

impl Session {
    /// With `--stats`: the programs' cost so far, per hook; printed on stderr too.
    pub fn report_stats(&self) -> Option<Vec<HookCost>> {
        self.stats.as_ref()?;
        let costs = stats::read(&self.ebpf);
        eprint!(
            "sockmem: BPF cost of this run (--stats)\n{}",
            stats::table(&costs)
        );
        Some(costs)
    }

    /// With `--debug`: prints the programs' last log lines (call once they are switched off).
    pub async fn finish_debug_log(&mut self) {
        if let Some(log) = self.debug_log.take() {
            log.finish().await;
        }
    }

    /// Switches every program on or off at once (they stay attached).
    pub fn set_running(&mut self, on: bool) -> anyhow::Result<()> {
        let map = self.ebpf.map_mut(names::RUNNING).ok_or_else(|| {
            anyhow::anyhow!("map `{}` missing from the eBPF object", names::RUNNING)
        })?;
        let mut running: Array<&mut MapData, u32> =
            Array::try_from(map).context("opening the on/off switch")?;
        running
            .set(0, u32::from(on), 0)
            .context("switching the programs on or off")
    }
}

pub fn hook_lines(reports: &[HookReport]) -> Vec<HookLine> {
    reports
        .iter()
        .map(|r| HookLine {
            hook: r.hook.name(),
            backend: r.chosen.map(|b| b.to_string()).unwrap_or_default(),
            attach: r.chosen_attach().unwrap_or_default(),
            unavailable: r.chosen.is_none().then(|| r.why_unavailable()),
        })
        .collect()
}

/// Each hook as a JSON object (`hook`, `backend`, `attach`, `attached`, `reason`): the `hooks`
/// list of `hist --json` and `why --json`.
pub fn hooks_json(reports: &[HookReport]) -> Vec<serde_json::Value> {
    hook_lines(reports)
        .into_iter()
        .map(|h| {
            serde_json::json!({
                "hook": h.hook, "backend": h.backend, "attach": h.attach,
                "attached": h.unavailable.is_none(), "reason": h.unavailable,
            })
        })
        .collect()
}

/// Tells the user on stderr which backend each hook got, and what this kernel cannot give.
fn report_hooks(reports: &[HookReport], verbose: bool) {
    if verbose {
        for line in attach::describe_choices(reports) {
            eprintln!("sockmem: {line}");
        }
    } else {
        for r in reports.iter().filter(|r| r.chosen.is_none()) {
            eprintln!(
                "sockmem: hook `{}` unavailable: {}",
                r.hook.name(),
                r.why_unavailable()
            );
        }
    }
    let mut backends: Vec<String> = Vec::new();
    for b in Backend::ALL {
        let n = reports.iter().filter(|r| r.chosen == Some(b)).count();
        if n > 0 {
            backends.push(format!("{n} {b}"));
        }
    }
    eprintln!(
        "sockmem: {} of {} hooks attached ({}) on kernel {}",
        reports.iter().filter(|r| r.chosen.is_some()).count(),
        reports.len(),
        backends.join(", "),
        loader::kernel_release()
    );
}

/// SIGINT, SIGTERM and SIGHUP, each ending a run the same way (output kept). Made with the
/// runtime ([`runtime`]), before anything else: a script that signals while the programs load
/// or right after the ready file appears must not find the default action (death) in place.
pub struct Stops {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    /// `None` for a daemon, which handles SIGHUP itself and must not end on it.
    hup: Option<tokio::signal::unix::Signal>,
}

impl Stops {
    /// Needs the tokio runtime's context (`Runtime::enter`).
    fn new() -> anyhow::Result<Stops> {
        use tokio::signal::unix::{signal, SignalKind};
        let on = |k| signal(k).context("installing a signal handler");
        Ok(Stops {
            int: on(SignalKind::interrupt())?,
            term: on(SignalKind::terminate())?,
            hup: Some(on(SignalKind::hangup())?),
        })
    }

    /// SIGINT and SIGTERM only: for a daemon that gives SIGHUP a meaning of its own. SIGHUP
    /// stays caught (tokio never uninstalls a handler), so its default action never kills it.
    pub fn without_hangup(self) -> Stops {
        Stops { hup: None, ..self }
    }

    /// Until one of them arrives.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = async {
                match &mut self.hup {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
}

impl Session {
    /// Starts every program at once (none counts what the others missed), and tells a waiting
    /// script so right after: the ready file is prepared first and only renamed into place.
    pub fn go(&mut self, ready_file: Option<&Path>) -> anyhow::Result<()> {
        let ready = ready_file
            .map(|p| output::Prepared::new(p, b"ready\n"))
            .transpose()
            .context("writing the ready file")?;
        self.set_running(true)?;
        if let Some(r) = ready {
            r.put_in_place().context("writing the ready file")?;
        }
        Ok(())
    }
}

/// Where results go: standard output, or a file that is in place only once it is complete.
pub enum Output {
    Stdout(BufWriter<io::Stdout>),
    File(OutputFile),
}

/// Opens `path` (checked and created now, so a bad path fails before any program runs), or
/// standard output; buffered either way.
pub fn open_output(path: Option<&Path>) -> anyhow::Result<Output> {
    Ok(match path {
        Some(p) => Output::File(OutputFile::create(p).context("opening the output file")?),
        None => Output::Stdout(BufWriter::with_capacity(output::BUFFER_BYTES, io::stdout())),
    })
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Stdout(w) => w.write(buf),
            Output::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(w) => w.flush(),
            Output::File(f) => f.flush(),
        }
    }
}

impl Finish for Output {
    fn finish(self) -> io::Result<()> {
        match self {
            Output::Stdout(mut w) => w.flush(),
            Output::File(f) => f.commit().map_err(io::Error::other),
        }
    }
}

/// Whether standard output is a pipe whose reader has gone (`poll` reports an error on the
/// write end then), so a command with nothing to write can still notice.
pub fn stdout_reader_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n == 1 && fd.revents & libc::POLLERR != 0
}

/// The single-threaded tokio runtime every command waits in.
/// The runtime a command runs on, with the signals that end a run already caught: made first
/// thing, so a signal while the programs load (or checks run) ends the run as one after it does,
/// output complete, instead of killing it half-started.
pub fn runtime() -> anyhow::Result<(tokio::runtime::Runtime, Stops)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let stops = {
        let _context = runtime.enter();
        let _held = HeldSignals::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;
        Stops::new()?
    };
    Ok((runtime, stops))
}

/// Signals held pending on this thread (the only one yet) until dropped. signal-hook-registry,
/// under tokio's handlers, installs a signal's sigaction before it publishes what routes the
/// signal to tokio, and drops one that arrives in between: a run signalled right then never
/// ended (seen in a 6.1 VM under TCG, where that window is long). Held, the signal waits and is
/// delivered once every handler is in place.
struct HeldSignals(libc::sigset_t);

impl HeldSignals {
    fn block(signals: &[libc::c_int]) -> anyhow::Result<HeldSignals> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use; the masks are
        // this thread's own.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
            let mut old: libc::sigset_t = std::mem::zeroed();
            match libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) {
                0 => Ok(HeldSignals(old)),
                e => Err(io::Error::from_raw_os_error(e)).context("blocking signals"),
            }
        }
    }
}

impl Drop for HeldSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask `block` saved for this thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}
