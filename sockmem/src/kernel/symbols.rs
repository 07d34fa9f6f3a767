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
