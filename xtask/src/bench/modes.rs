//! The tracers the bench compares: how each is started, known to be ready, stopped, and what
//! it says about itself at the end (events, lost events).

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::ValueEnum;
use serde::Serialize;

use super::{
    measure,
    parse::{self, TraceSummary},
    process::{self, Proc},
    scripts::Script,
};

/// The port iperf3 uses, and every tracer filters on.
pub const PORT: u16 = 5201;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// No tracer (the baseline).
    None,
    /// bpftrace with empty programs on sockmem's tracepoints (approximates the cost of being
    /// attached at all: bpftrace uses perf-event tracepoints, sockmem raw ones).
    Floor,
    /// `sockmem hist --port 5201`.
    Hist,
    /// `sockmem trace --json --port 5201 > /dev/null`.
    TraceJsonNull,
    /// `sockmem trace --json --port 5201 -o target/bench/trace.jsonl`.
    TraceJsonFile,
    /// `sockmem trace --port 5201 > /dev/null`.
    TraceText,
    /// `sockmem why --port 5201 --json -o target/bench/why.json` (trace's events, analysed,
    /// plus sock_diag samples every 20 ms; no bpftrace equivalent).
    Why,
    /// The same histograms in bpftrace.
    BpftraceHist,
    /// The same fields per event with bpftrace's printf.
    BpftracePrintf,
}

impl Mode {
    pub const ALL: [Mode; 9] = [
        Mode::None,
        Mode::Floor,
        Mode::Hist,
        Mode::TraceJsonNull,
        Mode::TraceJsonFile,
        Mode::TraceText,
        Mode::Why,
        Mode::BpftraceHist,
        Mode::BpftracePrintf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Floor => "floor",
            Mode::Hist => "hist",
            Mode::TraceJsonNull => "trace-json-null",
            Mode::TraceJsonFile => "trace-json-file",
            Mode::TraceText => "trace-text",
            Mode::Why => "why",
            Mode::BpftraceHist => "bpftrace-hist",
            Mode::BpftracePrintf => "bpftrace-printf",
        }
    }

    pub fn uses_bpftrace(self) -> bool {
        matches!(
            self,
            Mode::Floor | Mode::BpftraceHist | Mode::BpftracePrintf
        )
    }

    pub fn is_sockmem(self) -> bool {
        matches!(
            self,
            Mode::Hist | Mode::TraceJsonNull | Mode::TraceJsonFile | Mode::TraceText | Mode::Why
        )
    }

    /// The bpftrace program doing the same work.
    pub fn bpftrace_equivalent(self) -> Option<Mode> {
        match self {
            Mode::Hist => Some(Mode::BpftraceHist),
            Mode::TraceJsonNull | Mode::TraceJsonFile | Mode::TraceText => {
                Some(Mode::BpftracePrintf)
            }
            _ => None,
        }
    }
}

/// What starting a tracer needs.
pub struct Ctx<'a> {
    pub sockmem: &'a Path,
    pub dir: &'a Path,
    /// The traffic's length: sockmem's `-d` is longer, a safety net; the bench stops it.
    pub seconds: u32,
    /// The bpftrace program of each bpftrace mode.
    pub script: &'a dyn Fn(Mode) -> Option<&'a Script>,
    /// Every tracepoint a BPF program may stand for.
    pub tracepoints: &'a [String],
}

/// A tracer that is attached and ready.
pub struct Running {
    pub mode: Mode,
    proc: Proc,
    /// Launch to ready.
    pub ready_s: f64,
    /// Its CPU time when it became ready (the start-up cost is not counted per event).
    cpu_at_ready: f64,
    stdout: Option<JoinHandle<Captured>>,
    stderr: PathBuf,
    output: Option<PathBuf>,
}

/// What a tracer said about its run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Finished {
    pub ready_s: f64,
    /// Events the tracer handled (sockmem: its summary; hist: the counter samples; bpftrace:
    /// its event count or histogram samples).
    pub events: Option<u64>,
    pub lost: Option<u64>,
    /// User + system CPU from ready to exit.
    pub cpu_s: f64,
    /// Bytes written to the output file (trace-json-file).
    pub output_bytes: Option<u64>,
}

/// What bpftrace printed on stdout: the first lines (for "Attaching"), the last 256 KiB (maps
/// printed at exit), `Lost N events` lines anywhere.
#[derive(Default)]
struct Captured {
    tail: Vec<u8>,
    lost: u64,
}

const TAIL: usize = 256 * 1024;

/// Drains bpftrace's stdout without keeping it, noting when it says it attaches.
fn drain(
    mut r: impl std::io::Read + Send + 'static,
    attaching: Arc<AtomicBool>,
) -> JoinHandle<Captured> {
    thread::spawn(move || {
        let mut c = Captured::default();
        let mut buf = vec![0u8; 1 << 16];
        // Bytes after the last newline, so a line split across reads is still seen whole.
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            pending.extend_from_slice(chunk);
            if let Some(i) = pending.iter().rposition(|&b| b == b'\n') {
                let complete = String::from_utf8_lossy(&pending[..=i]);
                if !attaching.load(Ordering::Relaxed) && complete.contains("Attaching ") {
                    attaching.store(true, Ordering::Relaxed);
                }
                c.lost += parse::bpftrace_lost(&complete);
                pending.drain(..=i);
            }
            if pending.len() > 4096 {
                pending.clear();
            }
            c.tail.extend_from_slice(chunk);
            if c.tail.len() > 2 * TAIL {
                c.tail.drain(..c.tail.len() - TAIL);
            }
        }
        c
    })
}

pub fn start(mode: Mode, ctx: &Ctx) -> anyhow::Result<Option<Running>> {
    if mode == Mode::None {
        return Ok(None);
    }
    let stderr = ctx.dir.join(format!("{}.stderr", mode.name()));
    let err_file = fs::File::create(&stderr).context("creating the tracer's stderr file")?;
    let launched = Instant::now();
    if mode.is_sockmem() {
        let ready = ctx.dir.join("sockmem.ready");
        let _ = fs::remove_file(&ready);
        let mut c = Command::new(ctx.sockmem);
        c.arg(match mode {
            Mode::Hist => "hist",
            Mode::Why => "why",
            _ => "trace",
        });
        if matches!(mode, Mode::TraceJsonNull | Mode::TraceJsonFile) {
            c.arg("--json");
        }
        c.args([
            "--port",
            &PORT.to_string(),
            "-d",
            &(ctx.seconds + 120).to_string(),
        ]);
        c.arg("--ready-file").arg(&ready);
        let output = match mode {
            Mode::Hist => Some(ctx.dir.join("hist.txt")),
            Mode::Why => Some(ctx.dir.join("why.json")),
            Mode::TraceJsonFile => Some(ctx.dir.join("trace.jsonl")),
            _ => None,
        };
        match mode {
            Mode::Hist => {
                let f = fs::File::create(output.as_ref().unwrap()).context("creating hist.txt")?;
                c.stdout(f);
            }
            Mode::TraceJsonFile | Mode::Why => {
                if mode == Mode::Why {
                    c.arg("--json");
                }
                c.arg("-o")
                    .arg(output.as_ref().unwrap())
                    .stdout(Stdio::null());
            }
            _ => {
                c.stdout(Stdio::null());
            }
        }
        let proc = Proc::spawn(c.stdin(Stdio::null()).stderr(err_file), mode.name())?;
        wait_ready(&proc, mode, &stderr, || ready.exists())?;
        let _ = fs::remove_file(&ready);
        let ready_s = launched.elapsed().as_secs_f64();
        let cpu_at_ready = measure::cpu_seconds(proc.pid())?;
        return Ok(Some(Running {
            mode,
            proc,
            ready_s,
            cpu_at_ready,
            stdout: None,
            stderr,
            output,
        }));
    }
    let script =
        (ctx.script)(mode).with_context(|| format!("no bpftrace program for {}", mode.name()))?;
    let path = ctx.dir.join(format!("{}.bt", mode.name()));
    fs::write(&path, &script.text).with_context(|| format!("writing {}", path.display()))?;
    let mut proc = Proc::spawn(
        Command::new("bpftrace")
            .arg(&path)
            .env("BPFTRACE_MAP_KEYS_MAX", "65536")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err_file),
        mode.name(),
    )?;
    let attaching = Arc::new(AtomicBool::new(false));
    let out = proc
        .take_stdout()
        .context("bpftrace's stdout is not piped")?;
    let stdout = drain(out, attaching.clone());
    // "Attaching N probes..." comes before the probes are attached: ready once bpftrace also
    // holds a perf event per tracepoint besides its per-CPU output buffers.
    let want = script.probes + measure::online_cpus();
    let pid = proc.pid();
    wait_ready(&proc, mode, &stderr, || {
        attaching.load(Ordering::Relaxed) && measure::perf_event_fds(pid) >= want
    })?;
    let ready_s = launched.elapsed().as_secs_f64();
    let cpu_at_ready = measure::cpu_seconds(pid)?;
    Ok(Some(Running {
        mode,
        proc,
        ready_s,
        cpu_at_ready,
        stdout: Some(stdout),
        stderr,
        output: None,
    }))
}

fn wait_ready(
    proc: &Proc,
    mode: Mode,
    stderr: &Path,
    ready: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(120);
    while !ready() {
        if proc.exited() {
            bail!(
                "{} exited before it was ready: {}",
                mode.name(),
                tail(&fs::read_to_string(stderr).unwrap_or_default(), 5)
            );
        }
        if Instant::now() > end {
            bail!("{} not ready within 120 s", mode.name());
        }
        process::sleep(Duration::from_millis(2))?;
    }
    Ok(())
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Ends the tracer (SIGINT for bpftrace, SIGTERM for sockmem: both end cleanly) and reads
    /// what it says about the run.
    pub fn stop(mut self) -> anyhow::Result<Finished> {
        let sig = if self.mode.uses_bpftrace() {
            libc::SIGINT
        } else {
            libc::SIGTERM
        };
        self.proc.signal(sig);
        let exit = self.proc.wait(Duration::from_secs(120))?;
        let stderr = fs::read_to_string(&self.stderr).unwrap_or_default();
        let captured = match self.stdout.take() {
            Some(h) => Some(
                h.join()
                    .map_err(|_| anyhow::anyhow!("stdout reader panicked"))?,
            ),
            None => None,
        };
        // bpftrace ends with 0 on SIGINT; sockmem with 0 on SIGTERM.
        if exit.code != 0 {
            bail!(
                "{} exited with {}: {}",
                self.mode.name(),
                exit.code,
                tail(&stderr, 5)
            );
        }
        let mut f = Finished {
            ready_s: self.ready_s,
            cpu_s: (exit.cpu_s - self.cpu_at_ready).max(0.0),
            ..Default::default()
        };
        match self.mode {
            Mode::Hist => {
                let text = fs::read_to_string(self.output.as_ref().unwrap()).unwrap_or_default();
                f.events = parse::sockmem_hist_count(&text, "wmem_queued");
            }
            Mode::TraceJsonNull | Mode::TraceText | Mode::Why => {
                set_summary(&mut f, parse::sockmem_stderr_summary(&stderr));
            }
            Mode::TraceJsonFile => {
                let path = self.output.as_ref().unwrap();
                let (last, size) = last_line(path)?;
                let s = parse::sockmem_json_summary(&last)
                    .or_else(|| parse::sockmem_stderr_summary(&stderr));
                set_summary(&mut f, s);
                f.output_bytes = Some(size);
                // It can be gigabytes at full rate; the summary is all the bench needs.
                let _ = fs::remove_file(path);
            }
            Mode::BpftraceHist | Mode::BpftracePrintf => {
                let c = captured.unwrap_or_default();
                let text = String::from_utf8_lossy(&c.tail);
                f.events = if self.mode == Mode::BpftraceHist {
                    parse::bpftrace_hist_total(&text, "@wmem_queued")
                } else {
                    parse::bpftrace_scalar(&text, "@events")
                };
                f.lost = Some(c.lost);
            }
            Mode::Floor | Mode::None => {}
        }
        Ok(f)
    }
}

fn set_summary(f: &mut Finished, s: Option<TraceSummary>) {
    if let Some(s) = s {
        f.events = Some(s.events);
        f.lost = Some(s.lost);
    }
}

/// The last line of a file (read from its end) and its size.
fn last_line(path: &Path) -> anyhow::Result<(String, u64)> {
    use std::io::{Seek, SeekFrom};
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata()?.len();
    file.seek(SeekFrom::Start(size.saturating_sub(64 * 1024)))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let buf = String::from_utf8_lossy(&buf);
    let last = buf.trim_end().rsplit('\n').next().unwrap_or("").to_string();
    Ok((last, size))
}
