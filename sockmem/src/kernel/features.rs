//! What the running kernel offers, checked once and cached: kprobe support, kernel symbols, and
//! aya's view of BTF (needed to load fentry programs).

use std::{
    cell::OnceCell,
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use crate::{attach::AttachError, kernel::btf::Btf};

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";
const KALLSYMS: &str = "/proc/kallsyms";

pub struct Kernel<'a> {
    pub btf: &'a Btf,
    btf_path: Option<PathBuf>,
    aya_btf: OnceCell<Result<aya::Btf, AttachError>>,
    kallsyms: OnceCell<Result<BTreeSet<String>, AttachError>>,
    kprobes: OnceCell<Result<(), AttachError>>,
}

impl<'a> Kernel<'a> {
    pub fn new(btf: &'a Btf, btf_path: Option<&Path>) -> Kernel<'a> {
        Kernel {
            btf,
            btf_path: btf_path.map(Path::to_path_buf),
            aya_btf: OnceCell::new(),
            kallsyms: OnceCell::new(),
            kprobes: OnceCell::new(),
        }
    }

    /// Whether kprobes can be created at all.
    pub fn kprobe_support(&self) -> Result<(), AttachError> {
        self.kprobes
            .get_or_init(|| {
                if Path::new(KPROBE_PMU).exists() {
                    Ok(())
                } else {
                    Err(AttachError::KprobesUnsupported { pmu: KPROBE_PMU })
                }
            })
            .clone()
    }

    /// The symbol a kprobe on `func` attaches to: the name itself, or a compiler-made clone of
    /// it such as `func.isra.0` when only that exists.
    pub fn kprobe_symbol(&self, func: &str) -> Result<String, AttachError> {
        self.kprobe_support()?;
        let syms = self
            .kallsyms
            .get_or_init(|| {
                std::fs::read_to_string(KALLSYMS)
                    .map(|s| text_symbols(&s))
                    .map_err(|e| AttachError::KallsymsUnreadable {
                        path: KALLSYMS,
                        source: e.into(),
                    })
            })
            .as_ref()
            .map_err(Clone::clone)?;
        resolve_symbol(syms, func).ok_or_else(|| AttachError::SymbolMissing {
            func: func.to_owned(),
            path: KALLSYMS,
        })
    }

    /// aya's parse of the kernel BTF, for fentry/fexit loads.
    pub fn aya_btf(&self) -> Result<&aya::Btf, AttachError> {
        self.aya_btf
            .get_or_init(|| {
                match &self.btf_path {
                    Some(p) => aya::Btf::parse_file(p, aya::Endianness::default()),
                    None => aya::Btf::from_sys_fs(),
                }
                .map_err(|e| AttachError::BtfUnavailable { source: e.into() })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Whether fentry could target `func`: it needs the function in BTF.
    pub fn fentry_target(&self, func: &str) -> Result<(), AttachError> {
        if self.btf.has_function(func) {
            Ok(())
        } else {
            Err(AttachError::NoBtfFunction {
                func: func.to_owned(),
            })
        }
    }
}

/// Names of text (code) symbols in a `/proc/kallsyms` listing.
fn text_symbols(kallsyms: &str) -> BTreeSet<String> {
    kallsyms
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_addr, kind, name) = (f.next()?, f.next()?, f.next()?);
            matches!(kind, "t" | "T").then(|| name.to_owned())
        })
        .collect()
}

fn resolve_symbol(syms: &BTreeSet<String>, func: &str) -> Option<String> {
    if syms.contains(func) {
        return Some(func.to_owned());
    }
    // `func.isra.0`, `func.constprop.0`, `func.part.0`: sorted, so the choice is stable.
    let prefix = format!("{func}.");
    syms.range(prefix.clone()..)
        .take_while(|s| s.starts_with(&prefix))
        .find(|s| !s.ends_with(".cold"))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81a00000 t tcp_wfree.isra.0
ffffffff81a00100 t tcp_wfree.cold
ffffffff81b00000 T __dev_queue_xmit
ffffffff81c00000 D some_data
ffffffff81d00000 t sch_direct_xmit.constprop.0 [sch_x]
";

    #[test]
    fn resolves_exact_names_and_compiler_clones() {
        let syms = text_symbols(SAMPLE);
        assert!(
            !syms.contains("some_data"),
            "data symbols are not probe targets"
        );
        assert_eq!(
            resolve_symbol(&syms, "__dev_queue_xmit").as_deref(),
            Some("__dev_queue_xmit")
        );
        assert_eq!(
            resolve_symbol(&syms, "tcp_wfree").as_deref(),
            Some("tcp_wfree.isra.0")
        );
        assert_eq!(
            resolve_symbol(&syms, "sch_direct_xmit").as_deref(),
            Some("sch_direct_xmit.constprop.0")
        );
        assert_eq!(resolve_symbol(&syms, "tcp"), None);
        assert_eq!(resolve_symbol(&syms, "dev_queue_xmit"), None);
    }
}
