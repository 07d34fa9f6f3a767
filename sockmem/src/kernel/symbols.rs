//! Kernel symbols as `/proc/kallsyms` lists them: which names a kprobe can attach to. Pure
//! parsing; `features` reads the file once and caches the result.

use std::collections::BTreeSet;

/// Names of text (code) symbols in a `/proc/kallsyms` listing.
pub fn text_symbols(kallsyms: &str) -> BTreeSet<String> {
    kallsyms
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_addr, kind, name) = (f.next()?, f.next()?, f.next()?);
            matches!(kind, "t" | "T").then(|| name.to_owned())
        })
        .collect()
}

/// The symbol a probe on `func` attaches to: `func` itself, else a compiler-made clone of it.
pub fn resolve_symbol(syms: &BTreeSet<String>, func: &str) -> Option<String> {
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

/// Kernel text addresses → `symbol+0xoffset`, to say where in the kernel something happened
/// without printing an address.
#[derive(Debug, Default)]
pub struct SymbolTable {
    /// Sorted by address.
    text: Vec<(u64, String)>,
}

impl SymbolTable {
    /// From a `/proc/kallsyms` listing; empty when the addresses are hidden (all zero without
    /// CAP_SYSLOG under `kptr_restrict`).
    pub fn parse(kallsyms: &str) -> SymbolTable {
        let mut text: Vec<(u64, String)> = kallsyms
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (addr, kind, name) = (f.next()?, f.next()?, f.next()?);
                let addr = u64::from_str_radix(addr, 16).ok().filter(|&a| a != 0)?;
                matches!(kind, "t" | "T").then(|| (addr, name.to_owned()))
            })
            .collect();
        text.sort();
        SymbolTable { text }
    }

    /// `name+0xoff` of the function containing `addr` (a symbol's extent is up to the next).
    pub fn describe(&self, addr: u64) -> Option<String> {
        let i = self
            .text
            .partition_point(|(a, _)| *a <= addr)
            .checked_sub(1)?;
        let (start, name) = &self.text[i];
        Some(format!("{name}+{:#x}", addr - start))
    }
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
    fn addresses_are_named_by_the_function_containing_them() {
        let t = SymbolTable::parse(SAMPLE);
        assert_eq!(
            t.describe(0xffffffff81a00010).as_deref(),
            Some("tcp_wfree.isra.0+0x10")
        );
        assert_eq!(
            t.describe(0xffffffff81b00000).as_deref(),
            Some("__dev_queue_xmit+0x0")
        );
        assert_eq!(t.describe(0x1000), None, "below every symbol");
        let hidden = SymbolTable::parse("0000000000000000 T _stext\n");
        assert_eq!(hidden.describe(0xffffffff81000000), None);
    }

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
