//! The hook registry as userspace uses it: the declarations live in
//! `sockmem_common::registry` (shared with the eBPF programs); this adds what needs `std`.

pub use sockmem_common::registry::{
    hooks, Attach, Attachment, Backend, HookSpec, Variant, CONTEXT,
};

/// A variant's attach points, each once, e.g. `tcp_sendmsg+udp_sendmsg%return`.
pub fn describe(variant: &Variant) -> String {
    let mut seen: Vec<String> = Vec::new();
    for a in variant.attachments {
        let s = a.attach.to_string();
        if !seen.contains(&s) {
            seen.push(s);
        }
    }
    seen.join("+")
}

/// The README's hook table: one row per hook, in the order of the data path.
#[cfg(test)]
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| hook | stage | fentry | kprobe | tracepoint | what it shows |\n|---|---|---|---|---|---|\n",
    );
    for spec in hooks() {
        let cell = |b: Backend| {
            spec.variant(b)
                .map(|v| format!("`{}`", describe(v).replace('+', "`, `")))
                .unwrap_or_else(|| "–".to_owned())
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            spec.hook.name(),
            spec.stage.name(),
            cell(Backend::Fentry),
            cell(Backend::Kprobe),
            cell(Backend::Tracepoint),
            spec.shows
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockmem_common::Hook;

    #[test]
    fn descriptions_name_each_attach_point_once() {
        let spec = Hook::SendmsgReturn.spec();
        assert_eq!(
            describe(spec.variant(Backend::Kprobe).unwrap()),
            "tcp_sendmsg+udp_sendmsg+udpv6_sendmsg+tcp_sendmsg%return+udp_sendmsg%return+udpv6_sendmsg%return"
        );
        assert_eq!(
            describe(spec.variant(Backend::Tracepoint).unwrap()),
            "sock:sock_send_length"
        );
    }

    /// The README's table is the registry's. `SOCKMEM_BLESS=1` rewrites it.
    #[test]
    fn readme_hook_table_is_generated_from_the_registry() {
        const BEGIN: &str =
            "<!-- hook table: generated from the registry, see attach/hooks.rs -->\n";
        const END: &str = "<!-- end of hook table -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md is readable");
        let start = readme
            .find(BEGIN)
            .expect("README has the hook table's start marker")
            + BEGIN.len();
        let end = start
            + readme[start..]
                .find(END)
                .expect("README has the hook table's end marker");
        let want = markdown_table();
        if readme[start..end] != want {
            if std::env::var_os("SOCKMEM_BLESS").is_some() {
                let updated = format!("{}{want}{}", &readme[..start], &readme[end..]);
                std::fs::write(path, updated).expect("README.md is writable");
            } else {
                panic!("README's hook table is out of date (rerun with SOCKMEM_BLESS=1):\n{want}");
            }
        }
    }

    /// Every program the registry names is in the built object with the program type its attach
    /// point needs, and the object has no program the registry does not know. Parsing needs no
    /// root and no BPF-capable kernel, so a misspelled kprobe/fentry name fails here even on a
    /// kernel that has neither.
    #[test]
    fn ebpf_object_matches_the_registry() {
        use std::collections::BTreeMap;

        use aya_obj::ProgramSection as S;

        let object = aya_obj::Object::parse(super::super::loader::EBPF_OBJECT)
            .expect("the embedded eBPF object parses");
        let mut wanted: BTreeMap<&str, Attach> = BTreeMap::new();
        let every = hooks()
            .flat_map(|s| s.variants.iter())
            .flat_map(|v| v.attachments.iter())
            .chain(CONTEXT.iter());
        for a in every {
            if let Some(prev) = wanted.insert(a.program, a.attach) {
                let same_kind = std::mem::discriminant(&prev) == std::mem::discriminant(&a.attach);
                assert!(
                    same_kind,
                    "`{}` is declared as {prev:?} and {:?}",
                    a.program, a.attach
                );
            }
        }
        for (program, attach) in &wanted {
            let p = object
                .programs
                .get(*program)
                .unwrap_or_else(|| panic!("registry program `{program}` is not in the object"));
            let ok = matches!(
                (attach, &p.section),
                (Attach::Tracepoint { .. }, S::RawTracePoint)
                    | (Attach::KProbe(_), S::KProbe)
                    | (Attach::KRetProbe(_), S::KRetProbe)
                    | (Attach::FEntry(_), S::FEntry { .. })
                    | (Attach::FExit(_), S::FExit { .. })
            );
            assert!(
                ok,
                "`{program}` is {:?} in the object, the registry attaches it as {attach:?}",
                p.section
            );
        }
        let unknown: Vec<&String> = object
            .programs
            .keys()
            .filter(|name| !wanted.contains_key(name.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "programs the registry does not know: {unknown:?}"
        );
    }
}
