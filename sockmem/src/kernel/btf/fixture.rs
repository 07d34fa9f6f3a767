//! The BTF the unit tests run on, `testdata/sockmem-structs.btf`: a real kernel's BTF cut
//! down to what sockmem looks up, so the tests need no `/sys/kernel/btf/vmlinux`. The kernel
//! it came from is in `testdata/sockmem-structs.txt`.
//!
//! It holds the structs of every field `kernel::offsets` resolves and of [`TEST_FIELDS`],
//! pruned to those members (and the anonymous members on the way to them) at their original
//! bit offsets and with their full sizes; every other struct or union reached keeps its name
//! and size but no members, and enums keep no values but those of [`KEPT_ENUMS`]. It also holds the `btf_trace_*` typedefs
//! of the registry's tracepoints and the FUNC entries of its fentry/kprobe targets, with their
//! prototypes. So every lookup sockmem makes answers as on the full BTF (checked by
//! `fixture_answers_like_live`), in a few KB. It is valid BTF (the kernel's BPF_BTF_LOAD
//! accepted it), so `bpftool btf dump file <it>` shows what is in it.
//!
//! Regenerate it from the running kernel (writes the `.btf` and its `.txt` note; a relative
//! path is relative to `sockmem/`, the default is the file in the tree):
//!
//! ```text
//! SOCKMEM_BTF_FIXTURE_OUT=path cargo test -p sockmem --bins regenerate_btf_fixture -- --ignored
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use super::types::{Body, Type, TypeId};
use super::write::{encode, Builder};
use super::{Btf, BtfError, VISIT_BUDGET};
use crate::attach::hooks::{hooks, Attach, Attachment, CONTEXT};

pub const BTF: &[u8] = include_bytes!("testdata/sockmem-structs.btf");
const NOTE: &str = include_str!("testdata/sockmem-structs.txt");
const FIXTURE_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/kernel/btf/testdata/sockmem-structs.btf"
);
const RELEASE_PATH: &str = "/proc/sys/kernel/osrelease";

/// Fields the tests look up beyond those `kernel::offsets` resolves.
pub const TEST_FIELDS: &[(&str, &str)] = &[
    ("sock", "sk_wmem_alloc.refs.counter"),
    ("sk_buff", "cloned"), // a bitfield
];

/// Enums the fixture keeps with their values (`kernel::offsets` reads bit numbers from them).
pub const KEPT_ENUMS: &[&str] = &["netdev_queue_state_t"];

/// The fixture, parsed.
pub fn btf() -> &'static Btf {
    static FIXTURE: OnceLock<Btf> = OnceLock::new();
    FIXTURE.get_or_init(|| Btf::from_bytes(BTF).expect("the BTF fixture parses"))
}

/// `uname -r` of the kernel the fixture was cut from.
pub fn kernel_release() -> &'static str {
    NOTE.lines()
        .find_map(|l| l.strip_prefix("kernel release: "))
        .expect("the fixture's note names its kernel")
}

/// The running kernel's BTF, or `None`, saying why, on a kernel without it.
pub fn live() -> Option<&'static Btf> {
    static LIVE: OnceLock<Result<Btf, String>> = OnceLock::new();
    let live = LIVE.get_or_init(|| Btf::from_sys_fs().map_err(|e| e.to_string()));
    live.as_ref()
        .inspect_err(|e| eprintln!("skipped: no live BTF: {e}"))
        .ok()
}

/// The running kernel's BTF when it is the kernel the fixture was cut from: only then must
/// the two agree.
pub fn live_same_kernel() -> Option<&'static Btf> {
    let release = std::fs::read_to_string(RELEASE_PATH).unwrap_or_default();
    if release.trim() != kernel_release() {
        let (running, fixture) = (release.trim(), kernel_release());
        eprintln!("skipped: running kernel `{running}` is not the fixture's `{fixture}`");
        return None;
    }
    live()
}

/// Every attach point of the registry and the context programs.
fn attach_points() -> impl Iterator<Item = &'static Attachment> {
    let hook_points = hooks()
        .flat_map(|h| h.variants.iter())
        .flat_map(|v| v.attachments.iter());
    hook_points.chain(CONTEXT)
}

/// Names of the registry's tracepoints and of its fentry/kprobe target functions.
pub fn tracepoints_and_functions() -> (BTreeSet<&'static str>, BTreeSet<&'static str>) {
    let (mut tracepoints, mut functions) = (BTreeSet::new(), BTreeSet::new());
    for a in attach_points() {
        match a.attach {
            Attach::Tracepoint { name, .. } => tracepoints.insert(name),
            Attach::KProbe(f) | Attach::KRetProbe(f) | Attach::FEntry(f) | Attach::FExit(f) => {
                functions.insert(f)
            }
        };
    }
    (tracepoints, functions)
}

/// Every (struct, path) the fixture keeps.
pub fn fields() -> impl Iterator<Item = (&'static str, &'static str)> {
    crate::kernel::offsets::looked_up().chain(TEST_FIELDS.iter().copied())
}

/// The fixture cut from `full`, as described in the module doc.
pub fn generate(full: &Btf) -> Result<Vec<u8>, String> {
    let mut keep: BTreeMap<TypeId, BTreeSet<usize>> = BTreeMap::new();
    let mut roots = Vec::new();
    for (strukt, path) in fields() {
        let err = |e: BtfError| format!("{strukt}.{path}: {e}");
        let mut cur = full.find_composite(strukt).map_err(err)?;
        roots.push(cur);
        for part in path.split('.') {
            let id = full.strip(cur).map_err(err)?;
            let steps = full.find_member(id, part, 0, &mut VISIT_BUDGET.clone());
            let steps = steps
                .map_err(err)?
                .ok_or(format!("{strukt}.{path}: no `{part}`"))?;
            for step in &steps {
                keep.entry(step.container).or_default().insert(step.index);
            }
            let last = steps.last().copied().ok_or("empty member path")?;
            cur = full.step(last).map_err(err)?.1.ty;
        }
    }
    let mut kept_enums = BTreeSet::new();
    for name in KEPT_ENUMS {
        let ids = full
            .named(name)
            .filter(|(_, t)| matches!(t.body, Body::Enum(_) | Body::Enum64(_)));
        for (id, _) in ids {
            kept_enums.insert(id);
            roots.push(id);
        }
    }
    // What this kernel lacks, the fixture lacks too.
    let (tracepoints, functions) = tracepoints_and_functions();
    roots.extend(
        tracepoints
            .iter()
            .filter_map(|tp| full.tracepoint_typedef(tp)),
    );
    for f in functions {
        let funcs = full
            .named(f)
            .filter(|(_, t)| matches!(t.body, Body::Func { .. }));
        roots.extend(funcs.map(|(id, _)| id));
    }

    let pruned = |id: TypeId| -> Result<Type, String> {
        let mut ty = full.get(id).map_err(|e| e.to_string())?.clone();
        match &mut ty.body {
            Body::Struct(c) | Body::Union(c) => {
                let kept = keep.get(&id).cloned().unwrap_or_default();
                let members = std::mem::take(&mut c.members).into_iter().enumerate();
                let members = members.filter(|(index, _)| kept.contains(index));
                c.members = members.map(|(_, member)| member).collect();
            }
            Body::Enum(e) | Body::Enum64(e) if !kept_enums.contains(&id) => e.values.clear(),
            _ => {}
        }
        Ok(ty)
    };
    let mut reached = BTreeSet::new();
    while let Some(id) = roots.pop() {
        if id != TypeId::VOID && reached.insert(id) {
            roots.extend(references(&pruned(id)?.body));
        }
    }

    // Ids renumbered densely, in the full BTF's order.
    let new_ids: BTreeMap<TypeId, u32> = reached.iter().zip(1..).map(|(&id, n)| (id, n)).collect();
    let new_id = |id: TypeId| new_ids.get(&id).copied().unwrap_or(0);
    let mut out = Builder::new();
    for &id in &reached {
        let ty = pruned(id)?;
        let mut name = |n| Ok(out.string(full.name(n)?));
        let words = encode(&ty, &mut name, &new_id).map_err(|e| e.to_string())?;
        out.push(&words);
    }
    Ok(out.build_standard())
}

/// The types `body` refers to.
fn references(body: &Body) -> Vec<TypeId> {
    match body {
        Body::Void | Body::Int(_) | Body::Enum(_) | Body::Enum64(_) => vec![],
        Body::Fwd { .. } | Body::Float { .. } => vec![],
        Body::Ptr(t)
        | Body::Typedef(t)
        | Body::Volatile(t)
        | Body::Const(t)
        | Body::Restrict(t) => {
            vec![*t]
        }
        Body::TypeTag { target, .. } | Body::DeclTag { target, .. } => vec![*target],
        Body::Array(a) => vec![a.elem, a.index],
        Body::Struct(c) | Body::Union(c) => c.members.iter().map(|m| m.ty).collect(),
        Body::Func { proto, .. } => vec![*proto],
        Body::FuncProto(p) => std::iter::once(p.ret)
            .chain(p.params.iter().map(|p| p.ty))
            .collect(),
        Body::Var { ty, .. } => vec![*ty],
        Body::Datasec { vars, .. } => vars.iter().map(|v| v.ty).collect(),
    }
}

fn note(release: &str) -> String {
    format!(
        "kernel release: {release}\n\
         BTF cut from this kernel's /sys/kernel/btf/vmlinux by sockmem/src/kernel/btf/fixture.rs\n\
         (see there for what it keeps); regenerate with:\n\
         cargo test -p sockmem --bins regenerate_btf_fixture -- --ignored\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the fixture's own kernel, every lookup sockmem makes answers as on the full BTF.
    #[test]
    fn fixture_answers_like_live() {
        let Some(live) = live_same_kernel() else {
            return;
        };
        let fixture = btf();
        for (strukt, path) in fields() {
            let [a, b] =
                [fixture, live].map(|b| b.member_offset(strukt, path).map_err(|e| e.to_string()));
            assert_eq!(a, b, "{strukt}.{path}");
        }
        let (tracepoints, functions) = tracepoints_and_functions();
        for tp in tracepoints {
            let [a, b] =
                [fixture, live].map(|b| b.tracepoint_params(tp).map_err(|e| e.to_string()));
            assert_eq!(a, b, "tracepoint {tp}");
        }
        for f in functions {
            assert_eq!(
                fixture.has_function(f),
                live.has_function(f),
                "function {f}"
            );
        }
    }

    /// The fixture is what the generator makes today: a new field in `kernel::offsets`, a new
    /// hook or a generator change shows here (on the fixture's kernel) until it is regenerated.
    #[test]
    fn fixture_is_current() {
        let Some(live) = live_same_kernel() else {
            return;
        };
        let fresh = generate(live).unwrap();
        assert!(
            fresh == BTF,
            "the BTF fixture is stale: regenerate it (see kernel/btf/fixture.rs)"
        );
    }

    #[test]
    #[ignore = "writes the BTF fixture from the running kernel's BTF"]
    fn regenerate_btf_fixture() {
        let full = Btf::from_sys_fs().expect("the running kernel has BTF");
        let blob = generate(&full).unwrap();
        let out = std::env::var_os("SOCKMEM_BTF_FIXTURE_OUT")
            .map_or_else(|| PathBuf::from(FIXTURE_PATH), PathBuf::from);
        let release = std::fs::read_to_string(RELEASE_PATH).unwrap();
        std::fs::write(&out, &blob).unwrap();
        std::fs::write(out.with_extension("txt"), note(release.trim())).unwrap();
        eprintln!("wrote {} bytes to {}", blob.len(), out.display());
    }
}
