//! Loads and attaches each hook through the best backend the kernel accepts, falling back in
//! order, and remembers why each backend that was tried did not work.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use anyhow::{bail, Context as _};
use aya::{
    programs::{Program, ProgramError},
    Ebpf,
};
use sockmem_common::Hook;

pub mod error;
pub mod hooks;
pub mod loader;
pub mod stats;

use crate::kernel::features::Kernel;
pub use error::AttachError;
use hooks::{Attach, Attachment, Backend, HookSpec, Variant, CONTEXT};

/// Which backends to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Best first; keep the first that attaches.
    Auto,
    /// Only this backend for the hooks that have it (others keep what they have).
    Forced(Backend),
    /// Try every backend of every hook (for `sockmem probe`); keep the best.
    ProbeAll,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    /// Attached at these points; optional points that were missing are listed.
    Available {
        attach: String,
        missing: Vec<String>,
    },
    Unavailable(AttachError),
    /// A better backend was chosen before this one was tried.
    NotTried,
    /// This hook has no attach point for this backend.
    NotApplicable,
}

pub struct HookReport {
    pub hook: Hook,
    pub chosen: Option<Backend>,
    pub outcomes: Vec<(Backend, Outcome)>,
}

impl HookReport {
    pub fn outcome(&self, backend: Backend) -> &Outcome {
        self.outcomes
            .iter()
            .find(|(b, _)| *b == backend)
            .map(|(_, o)| o)
            .unwrap_or(&Outcome::NotApplicable)
    }

    /// The attach points of the chosen backend.
    pub fn chosen_attach(&self) -> Option<String> {
        match self.outcome(self.chosen?) {
            Outcome::Available { attach, .. } => Some(attach.clone()),
            _ => None,
        }
    }

    /// Why no backend worked, one clause per backend tried.
    pub fn why_unavailable(&self) -> String {
        self.outcomes
            .iter()
            .filter_map(|(b, o)| match o {
                Outcome::Unavailable(why) => Some(format!("{b}: {}", why.explain())),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Attaches every hook. Fails only when nothing at all attached, or when a forced backend
/// attached nowhere.
pub fn attach_hooks(
    ebpf: &mut Ebpf,
    kernel: &Kernel,
    mode: Mode,
) -> anyhow::Result<Vec<HookReport>> {
    let reports = attach_in_parallel(ebpf, kernel, mode);
    if let Mode::Forced(backend) = mode {
        // A forced backend that works for no hook at all is an error; one that works for some
        // leaves the others reported as unavailable, as in auto mode.
        let applicable: Vec<&HookReport> = reports
            .iter()
            .filter(|r| !matches!(r.outcome(backend), Outcome::NotApplicable))
            .collect();
        if applicable.iter().all(|r| r.chosen != Some(backend)) {
            let why: Vec<String> = applicable
                .iter()
                .map(|r| match r.outcome(backend) {
                    Outcome::Unavailable(why) => format!("  {}: {}", r.hook.name(), why.explain()),
                    _ => format!("  {}: not attached", r.hook.name()),
                })
                .collect();
            bail!(
                "backend `{backend}` is not available on this kernel for any hook \
                 (`sockmem probe` shows every choice):\n{}",
                why.join("\n")
            );
        }
    }
    if reports.iter().all(|r| r.chosen.is_none()) {
        let why: Vec<String> = reports
            .iter()
            .map(|r| format!("  {}: {}", r.hook.name(), r.why_unavailable()))
            .collect();
        bail!(
            "no hook could be attached on this kernel:\n{}",
            why.join("\n")
        );
    }
    Ok(reports)
}

/// The programs of one hook, by name: hooks share none, so each can be loaded on its own thread.
type Programs<'a> = HashMap<&'a str, &'a mut Program>;

/// Attaches every hook, in registry order, with the hooks spread over one thread per core: the
/// verifier runs in the loading thread, and its time (hundreds of ms in `hist` mode) is most of
/// the start-up.
fn attach_in_parallel(ebpf: &mut Ebpf, kernel: &Kernel, mode: Mode) -> Vec<HookReport> {
    let mut all: Programs = ebpf.programs_mut().collect();
    let jobs: Vec<(usize, &HookSpec, Programs)> = hooks::hooks()
        .enumerate()
        .map(|(i, spec)| {
            let mut mine = Programs::new();
            for a in spec.variants.iter().flat_map(|v| v.attachments) {
                if let Some((name, p)) = all.remove_entry(a.program) {
                    mine.insert(name, p);
                }
            }
            (i, spec, mine)
        })
        .collect();
    let n = jobs.len();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(n.max(1));
    let queue = Mutex::new(jobs.into_iter().rev().collect::<Vec<_>>());
    let done = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let Some((i, spec, mut programs)) = queue.lock().expect("not poisoned").pop()
                else {
                    break;
                };
                let report = attach_hook(&mut programs, kernel, spec, mode);
                done.lock().expect("not poisoned").push((i, report));
            });
        }
    });
    let mut done = done.into_inner().expect("not poisoned");
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

fn attach_hook(ebpf: &mut Programs, kernel: &Kernel, def: &HookSpec, mode: Mode) -> HookReport {
    let mut report = HookReport {
        hook: def.hook,
        chosen: None,
        outcomes: Vec::new(),
    };
    // A forced backend replaces the list only for hooks that have it.
    let forced = match mode {
        Mode::Forced(b) => def.variant(b),
        _ => None,
    };
    for backend in Backend::ALL {
        let Some(variant) = def.variant(backend) else {
            report.outcomes.push((backend, Outcome::NotApplicable));
            continue;
        };
        let skip = match forced {
            Some(f) => !std::ptr::eq(f, variant),
            None => report.chosen.is_some() && mode != Mode::ProbeAll,
        };
        if skip {
            report.outcomes.push((backend, Outcome::NotTried));
            continue;
        }
        let outcome = match try_variant(ebpf, kernel, variant) {
            Ok(missing) => Outcome::Available {
                attach: hooks::describe(variant),
                missing,
            },
            Err(why) => {
                unload_variant(ebpf, variant);
                Outcome::Unavailable(why)
            }
        };
        if matches!(outcome, Outcome::Available { .. }) {
            if report.chosen.is_none() {
                report.chosen = Some(backend);
            } else {
                // Probing only: one backend per hook stays attached.
                unload_variant(ebpf, variant);
            }
        }
        report.outcomes.push((backend, outcome));
    }
    report
}

/// Attaches every point of a variant; returns the optional points that are missing.
fn try_variant(
    ebpf: &mut Programs,
    kernel: &Kernel,
    variant: &Variant,
) -> Result<Vec<String>, AttachError> {
    let mut loaded = HashSet::new();
    let mut missing = Vec::new();
    for a in variant.attachments {
        match attach_one(ebpf, kernel, a, &mut loaded) {
            Ok(()) => {}
            Err(why) if a.optional => missing.push(format!("{}: {}", a.attach, why.explain())),
            Err(why) => return Err(why),
        }
    }
    Ok(missing)
}

fn attach_one(
    ebpf: &mut Programs,
    kernel: &Kernel,
    a: &Attachment,
    loaded: &mut HashSet<&'static str>,
) -> Result<(), AttachError> {
    // Checks that need no syscall come first, so the reason names the real cause.
    let symbol = match a.attach {
        Attach::Tracepoint {
            category,
            name,
            args,
        } => {
            check_tracepoint(kernel, category, name, args)?;
            name.to_owned()
        }
        Attach::KProbe(f) | Attach::KRetProbe(f) => kernel.kprobe_symbol(f)?,
        Attach::FEntry(f) | Attach::FExit(f) => {
            kernel.fentry_target(f)?;
            f.to_owned()
        }
    };
    let first = loaded.insert(a.program);
    let program = ebpf
        .get_mut(a.program)
        .map(|p| &mut **p)
        .ok_or(AttachError::ProgramMissing { program: a.program })?;
    let result: Result<(), ProgramError> = match (a.attach, program) {
        (Attach::Tracepoint { .. }, Program::RawTracePoint(p)) => {
            if first {
                p.load().map_err(AttachError::from_load)?;
            }
            p.attach(&symbol).map(drop)
        }
        (Attach::KProbe(_) | Attach::KRetProbe(_), Program::KProbe(p)) => {
            if first {
                p.load().map_err(AttachError::from_load)?;
            }
            p.attach(&symbol, 0).map(drop)
        }
        (Attach::FEntry(_), Program::FEntry(p)) => {
            p.load(&symbol, kernel.aya_btf()?)
                .map_err(AttachError::from_load)?;
            p.attach().map(drop)
        }
        (Attach::FExit(_), Program::FExit(p)) => {
            p.load(&symbol, kernel.aya_btf()?)
                .map_err(AttachError::from_load)?;
            p.attach().map(drop)
        }
        (attach, _) => {
            return Err(AttachError::ProgramKind {
                program: a.program,
                attach: attach.to_string(),
            })
        }
    };
    result.map_err(|e| AttachError::Attach {
        attach: a.attach.to_string(),
        source: std::sync::Arc::new(e),
    })
}

fn check_tracepoint(
    kernel: &Kernel,
    category: &str,
    name: &str,
    args: &[(usize, &'static str)],
) -> Result<(), AttachError> {
    let tracepoint = || format!("{category}:{name}");
    let params =
        kernel
            .btf
            .tracepoint_params(name)
            .map_err(|_| AttachError::TracepointMissing {
                tracepoint: tracepoint(),
            })?;
    for &(index, want) in args {
        let have = params.get(index).map(|(_, ty)| ty.as_str());
        if !have.is_some_and(|ty| ty.contains(want)) {
            return Err(AttachError::TracepointSignature {
                tracepoint: tracepoint(),
                index,
                have: have.unwrap_or("missing").to_owned(),
                want,
            });
        }
    }
    Ok(())
}

/// Unloads (and so detaches) every program of a variant; used when it did not fully attach.
fn unload_variant(ebpf: &mut Programs, variant: &Variant) {
    for a in variant.attachments {
        // Errors only mean "was not loaded", which is the state we want.
        let _ = match ebpf.get_mut(a.program).map(|p| &mut **p) {
            Some(Program::RawTracePoint(p)) => p.unload(),
            Some(Program::KProbe(p)) => p.unload(),
            Some(Program::FEntry(p)) => p.unload(),
            Some(Program::FExit(p)) => p.unload(),
            _ => Ok(()),
        };
    }
}

/// Load failures of hooks whose attach point the kernel has: `(hook, backend, why)`.
pub fn defects(reports: &[HookReport]) -> Vec<(Hook, Backend, &AttachError)> {
    reports
        .iter()
        .flat_map(|r| {
            r.outcomes.iter().filter_map(move |(b, o)| match o {
                Outcome::Unavailable(e) if e.is_defect() => Some((r.hook, *b, e)),
                _ => None,
            })
        })
        .collect()
}

/// `sockmem trace -v`: which backend each hook got and why the better ones did not work.
pub fn describe_choices(reports: &[HookReport]) -> Vec<String> {
    let mut lines = Vec::new();
    for r in reports {
        match r.chosen {
            Some(b) => lines.push(format!(
                "hook `{}` via {b} `{}`",
                r.hook.name(),
                r.chosen_attach().unwrap_or_default()
            )),
            None => lines.push(format!(
                "hook `{}` unavailable: {}",
                r.hook.name(),
                r.why_unavailable()
            )),
        }
        for (b, o) in &r.outcomes {
            match o {
                Outcome::Unavailable(why) if r.chosen.is_some() => {
                    lines.push(format!("  {b} not used: {}", why.explain()))
                }
                Outcome::Available { missing, .. } if !missing.is_empty() => {
                    lines.push(format!("  {b} without {}", missing.join(", ")))
                }
                _ => {}
            }
        }
    }
    lines
}

/// Attaches the [`CONTEXT`] programs. Without them events in softirq on sockets with no
/// `sendmsg` seen are attributed to the interrupted task, so a failure is worth a warning only.
pub fn attach_context(ebpf: &mut Ebpf, kernel: &Kernel) -> Result<(), AttachError> {
    let mut ebpf: Programs = ebpf.programs_mut().collect();
    let ebpf = &mut ebpf;
    let mut loaded = HashSet::new();
    for a in CONTEXT {
        attach_one(ebpf, kernel, a, &mut loaded)?;
    }
    Ok(())
}

/// Context for errors of the whole attach step.
pub fn attach_all(ebpf: &mut Ebpf, kernel: &Kernel, mode: Mode) -> anyhow::Result<Vec<HookReport>> {
    attach_hooks(ebpf, kernel, mode).context("attaching sockmem's hooks")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn only_failures_at_existing_attach_points_are_defects() {
        let eperm = || Arc::new(std::io::Error::from_raw_os_error(libc::EPERM));
        let report = HookReport {
            hook: Hook::QdiscDequeue,
            chosen: Some(Backend::Tracepoint),
            outcomes: vec![
                (
                    Backend::Fentry,
                    Outcome::Unavailable(AttachError::LoadRefused { source: eperm() }),
                ),
                (
                    Backend::Kprobe,
                    Outcome::Unavailable(AttachError::KprobesUnsupported { pmu: "x" }),
                ),
                (
                    Backend::Tracepoint,
                    Outcome::Unavailable(AttachError::VerifierRejected {
                        log_tail: "BPF program is too large".into(),
                        source: eperm(),
                    }),
                ),
            ],
        };
        let d = defects(std::slice::from_ref(&report));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].0, d[0].1), (Hook::QdiscDequeue, Backend::Tracepoint));
        assert_eq!(d[0].2.code(), "verifier_rejected");
    }
}
