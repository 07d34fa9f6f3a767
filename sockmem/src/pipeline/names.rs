//! Words for numbers the kernel gives: the enumerators of a kernel `enum` a hook's value is one
//! of (read from BTF, per the registry's `Field::Enum`), and `symbol+offset` for a kernel code
//! address (read from `/proc/kallsyms` the first time one is needed).

use std::{
    cell::{OnceCell, RefCell},
    collections::HashMap,
};

use crate::recording::format::{RecordedAttribution, RecordedEnum};

use sockmem_common::{registry::Field, Hook};

use crate::{
    kernel::{btf::Btf, cgroups::CgroupNames, netns::NetnsNames, symbols::SymbolTable},
    pipeline::decode::Event,
};

pub struct Names {
    /// Per hook with an enum value: its enumerators by value, common prefix removed.
    enums: HashMap<Hook, HashMap<u64, String>>,
    symbols: OnceCell<SymbolTable>,
    /// Where code addresses point, as a recording's trailer says (then kallsyms is not read:
    /// it is another machine's, or another boot's).
    recorded: Option<HashMap<u64, String>>,
    /// cgroup ids → paths, namespace inodes → names: this machine's (looked up as events name
    /// them), or a recording's.
    pub cgroups: RefCell<CgroupNames>,
    pub netns: RefCell<NetnsNames>,
}

impl Names {
    /// What the registry asks to name, from this kernel's BTF; an enum BTF lacks stays numbers.
    pub fn new(btf: &Btf) -> Names {
        let mut enums = HashMap::new();
        for spec in sockmem_common::registry::hooks() {
            if let Field::Enum(_, kernel_enum, prefix) = spec.value {
                if let Ok(values) = btf.enum_values(kernel_enum) {
                    let names = values
                        .into_iter()
                        .map(|(n, v)| (v, n.strip_prefix(prefix).unwrap_or(&n).to_owned()))
                        .collect();
                    enums.insert(spec.hook, names);
                }
            }
        }
        Names {
            enums,
            symbols: OnceCell::new(),
            recorded: None,
            cgroups: RefCell::new(CgroupNames::live()),
            netns: RefCell::new(NetnsNames::live()),
        }
    }

    /// From a recording: its enumerators and the code locations its events name.
    pub fn recorded(
        enums: &[RecordedEnum],
        locations: &[(u64, String)],
        attribution: Option<&RecordedAttribution>,
    ) -> Names {
        let enums = enums
            .iter()
            .filter_map(|e| {
                let spec = sockmem_common::registry::hooks().find(|s| s.hook.name() == e.hook)?;
                Some((spec.hook, e.values.iter().cloned().collect()))
            })
            .collect();
        // A recording without the tables (written before them) is named from this machine.
        let (cgroups, netns) = match attribution {
            Some(a) => (CgroupNames::fixed(&a.cgroups), NetnsNames::fixed(&a.netns)),
            None => (CgroupNames::live(), NetnsNames::live()),
        };
        Names {
            enums,
            symbols: OnceCell::new(),
            recorded: Some(locations.iter().cloned().collect()),
            cgroups: RefCell::new(cgroups),
            netns: RefCell::new(netns),
        }
    }

    /// The enumerator tables, for a recording's trailer (sorted: the same file for the same run).
    pub fn enum_tables(&self) -> Vec<RecordedEnum> {
        let mut v: Vec<RecordedEnum> = self
            .enums
            .iter()
            .map(|(hook, names)| {
                let mut values: Vec<(u64, String)> =
                    names.iter().map(|(v, n)| (*v, n.clone())).collect();
                values.sort();
                RecordedEnum {
                    hook: hook.name().to_owned(),
                    values,
                }
            })
            .collect();
        v.sort_by(|a, b| a.hook.cmp(&b.hook));
        v
    }

    /// `symbol+offset` of a kernel code address.
    pub fn location(&self, addr: u64) -> Option<String> {
        if let Some(map) = &self.recorded {
            return map.get(&addr).cloned();
        }
        let table = self.symbols.get_or_init(|| {
            std::fs::read_to_string("/proc/kallsyms")
                .map(|s| SymbolTable::parse(&s))
                .unwrap_or_default()
        });
        table.describe(addr)
    }

    /// Names nothing (numbers stay numbers).
    pub fn empty() -> Names {
        Names {
            enums: HashMap::new(),
            symbols: OnceCell::new(),
            recorded: None,
            cgroups: RefCell::new(CgroupNames::fixed(&[])),
            netns: RefCell::new(NetnsNames::fixed(&[])),
        }
    }

    /// Fills the event's words: its value's enumerator, and where a code address points.
    pub fn fill(&self, e: &mut Event) {
        self.fill_value(e);
        if e.hook == Hook::SkbDrop && e.aux != 0 {
            e.location = self.location(e.aux);
        }
        e.cgroup = Some(self.cgroups.borrow_mut().name(e.cgroup_id));
        e.netns = self.netns.borrow_mut().named(e.netns_ino as u64);
    }

    /// Only the enumerator of `value` (a drop's reason): for a consumer that names cgroups
    /// itself, in bounded tables (`serve`).
    pub fn fill_value(&self, e: &mut Event) {
        if let Some(names) = self.enums.get(&e.hook) {
            e.value_name = names.get(&(e.value as u64)).cloned();
        }
    }
}
