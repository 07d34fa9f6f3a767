//! `sockmem probe`: for the running kernel, which backend each hook can use, which one `trace`
//! would choose, and why the others cannot be used.

use std::io::{self, Write};

use anyhow::Context as _;
use serde::Serialize;
use sockmem_common::Filter;

use crate::{
    attach::{self, hooks::Backend, loader, AttachError, HookReport, Mode, Outcome},
    cli::ProbeArgs,
    kernel::features::Kernel,
    session,
};

pub fn run(args: ProbeArgs) -> anyhow::Result<()> {
    loader::check_privileges()?;
    let btf = session::kernel_btf(args.btf.as_deref())?;
    let mut config = loader::config(&btf, Filter::default())?;
    // Every backend really gets loaded and attached; the programs must not emit meanwhile.
    config.ready = 0;
    let mut ebpf = loader::load(&config, 4096, false)?;
    let kernel = Kernel::new(&btf, args.btf.as_deref());
    let reports = attach::attach_all(&mut ebpf, &kernel, Mode::ProbeAll)?;
    let softirq = attach::attach_context(&mut ebpf, &kernel).err();
    drop(ebpf);
    let facts = Facts {
        kernel: loader::kernel_release(),
        btf: args
            .btf
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/sys/kernel/btf/vmlinux".to_owned()),
        kprobes: kernel.kprobe_support().err(),
        softirq,
        stats: attach::stats::enable().err().map(|e| format!("{e:#}")),
    };
    let mut out = io::stdout().lock();
    if args.json {
        write_json(&mut out, &facts, &reports)?;
    } else {
        write_table(&mut out, &facts, &reports)?;
    }
    out.flush().context("writing the probe report")
}

struct Facts {
    kernel: String,
    btf: String,
    /// Why kprobes cannot be used, if they cannot.
    kprobes: Option<AttachError>,
    /// Why softirq cannot be told from process context, if it cannot.
    softirq: Option<AttachError>,
    /// Why `--stats` cannot work here, if it cannot.
    stats: Option<String>,
}

/// One hook × backend cell: status, reason code (when unavailable) and detail.
struct Cell {
    status: &'static str,
    code: Option<&'static str>,
    detail: String,
}

fn status(r: &HookReport, backend: Backend) -> Cell {
    let cell = |status, detail| Cell {
        status,
        code: None,
        detail,
    };
    match r.outcome(backend) {
        Outcome::Available { attach, missing } => {
            let mut detail = attach.clone();
            if !missing.is_empty() {
                detail.push_str(&format!(" (without {})", missing.join(", ")));
            }
            let s = if r.chosen == Some(backend) {
                "chosen"
            } else {
                "available"
            };
            cell(s, detail)
        }
        Outcome::Unavailable(why) => Cell {
            status: "unavailable",
            code: Some(why.code()),
            detail: why.explain(),
        },
        Outcome::NotTried => cell("not tried", String::new()),
        Outcome::NotApplicable => cell("n/a", format!("no {backend} attach point for this hook")),
    }
}

fn write_table(out: &mut impl Write, facts: &Facts, reports: &[HookReport]) -> io::Result<()> {
    writeln!(out, "kernel:  {}", facts.kernel)?;
    writeln!(out, "BTF:     {} (readable)", facts.btf)?;
    match &facts.kprobes {
        None => writeln!(out, "kprobes: supported")?,
        Some(why) => writeln!(out, "kprobes: no: {}", why.explain())?,
    }
    match &facts.softirq {
        None => writeln!(
            out,
            "softirq: tracked (irq:softirq_entry/exit): events of senders not yet seen are not \
             attributed to the interrupted task"
        )?,
        Some(why) => writeln!(
            out,
            "softirq: not tracked: {}; such events name the interrupted task",
            why.explain()
        )?,
    }
    match &facts.stats {
        None => writeln!(out, "stats:   available (--stats: BPF run time per hook)")?,
        Some(why) => writeln!(out, "stats:   no: {why}")?,
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<15} {:<11} {:<12} DETAIL",
        "HOOK", "BACKEND", "STATUS"
    )?;
    for r in reports {
        for b in Backend::ALL {
            let Cell {
                status: s, detail, ..
            } = status(r, b);
            // Multi-line details (verifier logs) stay readable under the row.
            let detail = detail.replace('\n', "\n                                        ");
            writeln!(
                out,
                "{:<15} {:<11} {:<12} {detail}",
                r.hook.name(),
                b.name(),
                s
            )?;
        }
    }
    let missing: Vec<&str> = reports
        .iter()
        .filter(|r| r.chosen.is_none())
        .map(|r| r.hook.name())
        .collect();
    if !missing.is_empty() {
        writeln!(
            out,
            "\nno backend on this kernel for: {}",
            missing.join(", ")
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct JsonBackend {
    backend: &'static str,
    status: &'static str,
    /// Stable reason code when `status` is "unavailable" (`AttachError::code`).
    code: Option<&'static str>,
    detail: String,
}

#[derive(Serialize)]
struct JsonHook {
    hook: &'static str,
    chosen: Option<&'static str>,
    backends: Vec<JsonBackend>,
}

#[derive(Serialize)]
struct JsonProbe<'a> {
    kernel: &'a str,
    btf: &'a str,
    kprobes: bool,
    kprobes_code: Option<&'static str>,
    kprobes_reason: Option<String>,
    softirq_tracked: bool,
    softirq_code: Option<&'static str>,
    softirq_reason: Option<String>,
    bpf_stats: bool,
    bpf_stats_reason: Option<&'a str>,
    hooks: Vec<JsonHook>,
}

fn write_json(out: &mut impl Write, facts: &Facts, reports: &[HookReport]) -> io::Result<()> {
    let hooks = reports
        .iter()
        .map(|r| JsonHook {
            hook: r.hook.name(),
            chosen: r.chosen.map(Backend::name),
            backends: Backend::ALL
                .iter()
                .map(|&b| {
                    let Cell {
                        status,
                        code,
                        detail,
                    } = status(r, b);
                    JsonBackend {
                        backend: b.name(),
                        status,
                        code,
                        detail,
                    }
                })
                .collect(),
        })
        .collect();
    serde_json::to_writer_pretty(
        &mut *out,
        &JsonProbe {
            kernel: &facts.kernel,
            btf: &facts.btf,
            kprobes: facts.kprobes.is_none(),
            kprobes_code: facts.kprobes.as_ref().map(AttachError::code),
            kprobes_reason: facts.kprobes.as_ref().map(AttachError::explain),
            softirq_tracked: facts.softirq.is_none(),
            softirq_code: facts.softirq.as_ref().map(AttachError::code),
            softirq_reason: facts.softirq.as_ref().map(AttachError::explain),
            bpf_stats: facts.stats.is_none(),
            bpf_stats_reason: facts.stats.as_deref(),
            hooks,
        },
    )?;
    writeln!(out)
}
