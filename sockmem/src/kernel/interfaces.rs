//! Interface names in every network namespace on the machine. Traffic often runs in other
//! namespaces than sockmem's (containers, test namespaces), and the programs see every one, so an
//! `--iface` is only wrong when no namespace has it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    os::fd::AsRawFd,
    path::Path,
};

use super::netns;

/// Interface names, each with the namespaces that have one of that name (`"this"`, a name from
/// `/run/netns`, or `pid N`).
pub fn all() -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ns in netns::all() {
        let names = if ns.label == "this" {
            names_here()
        } else {
            names_in(&ns.path)
        };
        for name in names {
            found.entry(name).or_default().insert(ns.label.clone());
        }
    }
    found
}

fn names_here() -> Vec<String> {
    // SAFETY: if_nameindex returns a list ended by a zero entry, freed with if_freenameindex.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Vec::new();
        }
        let mut names = Vec::new();
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            names.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        names
    }
}

/// The names in the namespace at `path`, from a thread that enters it (and ends with it).
fn names_in(path: &Path) -> Vec<String> {
    let Ok(ns) = File::open(path) else {
        return Vec::new();
    };
    std::thread::spawn(move || {
        // SAFETY: setns on a namespace fd only changes this short-lived thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Vec::new();
        }
        names_here()
    })
    .join()
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_found_here() {
        let all = super::all();
        assert!(
            all.get("lo").is_some_and(|ns| ns.contains("this")),
            "{all:?}"
        );
    }
}
