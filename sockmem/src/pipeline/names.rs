//! Words for numbers the kernel gives: the enumerators of a kernel `enum` a hook's value is one
//! of (read from BTF, per the registry's `Field::Enum`), and `symbol+offset` for a kernel code
//! address (read from `/proc/kallsyms` the first time one is needed).

use std::{cell::OnceCell, collections::HashMap};

use sockmem_common::{registry::Field, Hook};

use crate::{
    kernel::{btf::Btf, symbols::SymbolTable},
    pipeline::decode::Event,
};

pub struct Names {
    /// Per hook with an enum value: its enumerators by value, common prefix removed.
    enums: HashMap<Hook, HashMap<u64, String>>,
    symbols: OnceCell<SymbolTable>,
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
        }
    }

    /// Names nothing (numbers stay numbers).
    pub fn empty() -> Names {
        Names {
            enums: HashMap::new(),
            symbols: OnceCell::new(),
        }
    }

    /// Fills the event's words: its value's enumerator, and where a code address points.
    pub fn fill(&self, e: &mut Event) {
        if let Some(names) = self.enums.get(&e.hook) {
            e.value_name = names.get(&(e.value as u64)).cloned();
        }
        if e.hook == Hook::SkbDrop && e.aux != 0 {
            let table = self.symbols.get_or_init(|| {
                std::fs::read_to_string("/proc/kallsyms")
                    .map(|s| SymbolTable::parse(&s))
                    .unwrap_or_default()
            });
            e.location = table.describe(e.aux);
        }
    }
}
