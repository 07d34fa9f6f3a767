//! What the running kernel offers, checked once and cached: kprobe support, kernel symbols, and
//! aya's view of BTF (needed to load fentry programs).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use crate::{
    attach::AttachError,
    kernel::{
        btf::Btf,
        symbols::{resolve_symbol, text_symbols},
    },
};

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";
const KALLSYMS: &str = "/proc/kallsyms";

pub struct Kernel<'a> {
    pub btf: &'a Btf,
    btf_path: Option<PathBuf>,
    aya_btf: OnceLock<Result<aya::Btf, AttachError>>,
    kallsyms: OnceLock<Result<BTreeSet<String>, AttachError>>,
    kprobes: OnceLock<Result<(), AttachError>>,
}

impl<'a> Kernel<'a> {
    pub fn new(btf: &'a Btf, btf_path: Option<&Path>) -> Kernel<'a> {
        Kernel {
            btf,
            btf_path: btf_path.map(Path::to_path_buf),
            aya_btf: OnceLock::new(),
            kallsyms: OnceLock::new(),
            kprobes: OnceLock::new(),
        }
    }

    /// With aya's parse of the running kernel's BTF already made (see `session::start`).
    pub fn with_aya_btf(self, btf: aya::Btf) -> Kernel<'a> {
        let _ = self.aya_btf.set(Ok(btf));
        self
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
