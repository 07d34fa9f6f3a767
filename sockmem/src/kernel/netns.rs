//! Every network namespace on the machine, once each. Traffic sockmem sees runs in any of them
//! (containers, test namespaces); per-namespace views (interfaces, sock_diag) must visit all.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::cli::UsageError;

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

/// Where `ip netns` keeps its bind mounts, one per named namespace.
const NAMED: &str = "/run/netns";
/// A miss rereads the names at most this often.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// Resolves `--netns`: a name from `ip netns`, a path to a namespace file (`/proc/PID/ns/net`,
/// `/run/netns/NAME`), or an inode number (as `ls -iL /proc/PID/ns/net` shows it).
pub fn resolve(spec: &str) -> anyhow::Result<u32> {
    let own = std::fs::metadata("/proc/self/ns/net").context("reading /proc/self/ns/net")?;
    let ino = if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        let ino: u64 = spec
            .parse()
            .map_err(|_| UsageError(format!("--netns {spec}: not a namespace inode number")))?;
        if !all().iter().any(|n| n.inode == ino) {
            bail!(UsageError(format!(
                "--netns {ino}: no network namespace has inode {ino} (none of /run/netns and \
                 no process's /proc/PID/ns/net)"
            )));
        }
        ino
    } else {
        let path = if spec.contains('/') {
            PathBuf::from(spec)
        } else {
            Path::new(NAMED).join(spec)
        };
        let meta = std::fs::metadata(&path).map_err(|e| {
            let named = names().into_values().collect::<Vec<_>>().join(", ");
            UsageError(format!(
                "--netns {spec}: no network namespace at {} ({e}); named ones (ip netns): {}",
                path.display(),
                if named.is_empty() { "none" } else { &named }
            ))
        })?;
        // Every namespace file lives on the nsfs device.
        if meta.dev() != own.dev() {
            bail!(UsageError(format!(
                "--netns {spec}: {} is not a namespace file",
                path.display()
            )));
        }
        meta.ino()
    };
    u32::try_from(ino)
        .map_err(|_| UsageError(format!("--netns {spec}: inode {ino} out of range")).into())
}

/// Named namespaces (`ip netns`): inode → name.
fn names() -> BTreeMap<u64, String> {
    let Ok(dir) = std::fs::read_dir(NAMED) else {
        return BTreeMap::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let ino = inode(&e.path())?;
            Some((ino, e.file_name().to_string_lossy().into_owned()))
        })
        .collect()
}

/// Namespace inode → how it is shown: its `ip netns` name, else `ino:N`. Cached; a miss
/// rereads the names (rate-limited).
pub struct NetnsNames {
    names: BTreeMap<u64, Arc<str>>,
    last_scan: Option<Instant>,
    fixed: bool,
}

impl NetnsNames {
    pub fn live() -> NetnsNames {
        let mut n = NetnsNames {
            names: BTreeMap::new(),
            last_scan: None,
            fixed: false,
        };
        n.scan();
        n
    }

    /// A recording's table (another machine's namespaces): never rescanned.
    pub fn fixed(table: &[(u64, String)]) -> NetnsNames {
        NetnsNames {
            names: table
                .iter()
                .map(|(i, n)| (*i, Arc::from(n.as_str())))
                .collect(),
            last_scan: None,
            fixed: true,
        }
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        for (ino, name) in names() {
            self.names.insert(ino, Arc::from(name));
        }
    }

    /// The `ip netns` name of a namespace, if it has one.
    pub fn named(&mut self, ino: u64) -> Option<Arc<str>> {
        if let Some(n) = self.names.get(&ino) {
            return Some(n.clone());
        }
        let due = self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY);
        if !self.fixed && due {
            self.scan();
        }
        self.names.get(&ino).cloned()
    }

    pub fn name(&mut self, ino: u64) -> Arc<str> {
        self.named(ino)
            .unwrap_or_else(|| Arc::from(format!("ino:{ino}")))
    }

    /// The names of these inodes that have one (for a recording's trailer), sorted.
    pub fn table(&self, inos: impl IntoIterator<Item = u64>) -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = inos
            .into_iter()
            .filter_map(|i| Some((i, self.names.get(&i)?.to_string())))
            .collect();
        v.sort();
        v.dedup();
        v
    }
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

    #[test]
    fn resolves_own_namespace_by_path_and_inode() {
        use std::os::unix::fs::MetadataExt;
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        assert_eq!(super::resolve("/proc/self/ns/net").unwrap(), own);
        assert_eq!(super::resolve(&own.to_string()).unwrap(), own);
        assert!(super::resolve("no-such-namespace-here").is_err());
        assert!(
            super::resolve("/etc/hostname").is_err(),
            "not a namespace file"
        );
        assert!(super::resolve("1").is_err());
    }
}
