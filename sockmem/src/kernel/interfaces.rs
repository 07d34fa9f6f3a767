//! Interface names in every network namespace on the machine. Traffic often runs in other
//! namespaces than sockmem's (containers, test namespaces), and the programs see every one, so an
//! `--iface` is only wrong when no namespace has it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// Interface names, each with the namespaces that have one of that name (`"this"`, a name from
/// `/run/netns`, or `pid N`).
pub fn all() -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in names_here() {
        found.entry(name).or_default().insert("this".to_owned());
    }
    let own = inode(Path::new("/proc/self/ns/net"));
    let mut seen: BTreeSet<u64> = own.into_iter().collect();
    for (label, path) in namespaces() {
        let Some(ino) = inode(&path) else { continue };
        if !seen.insert(ino) {
            continue;
        }
        for name in names_in(&path) {
            found.entry(name).or_default().insert(label.clone());
        }
    }
    found
}

/// Named namespaces first (their names are what users know), then every process's.
fn namespaces() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.bytes().all(|b| b.is_ascii_digit()) {
                out.push((format!("pid {name}"), e.path().join("ns/net")));
            }
        }
    }
    out
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
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
