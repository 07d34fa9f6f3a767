//! Every network namespace on the machine, once each. Traffic sockmem sees runs in any of them
//! (containers, test namespaces); per-namespace views (interfaces, sock_diag) must visit all.

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// A network namespace: how users know it, and a file that opens it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    /// `this` (sockmem's own), a name from `/run/netns`, or `pid N`.
    pub label: String,
    pub path: PathBuf,
    pub inode: u64,
}

/// Sockmem's own namespace first, then named ones (their names are what users know), then
/// every process's; each namespace once.
pub fn all() -> Vec<Netns> {
    let mut candidates = vec![("this".to_owned(), PathBuf::from("/proc/self/ns/net"))];
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        let mut named: Vec<_> = dir
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        named.sort();
        candidates.extend(named);
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.bytes().all(|b| b.is_ascii_digit()) {
                candidates.push((format!("pid {name}"), e.path().join("ns/net")));
            }
        }
    }
    let mut seen = BTreeSet::new();
    candidates
        .into_iter()
        .filter_map(|(label, path)| {
            let inode = inode(&path)?;
            seen.insert(inode).then_some(Netns { label, path, inode })
        })
        .collect()
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_namespace_comes_first_and_each_once() {
        let all = super::all();
        assert_eq!(all.first().map(|n| n.label.as_str()), Some("this"));
        let mut inodes: Vec<u64> = all.iter().map(|n| n.inode).collect();
        inodes.sort();
        inodes.dedup();
        assert_eq!(inodes.len(), all.len(), "{all:?}");
    }
}
