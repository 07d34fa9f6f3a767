//! cgroup v2 ids → paths. The programs record the sender's cgroup id
//! (`bpf_get_current_cgroup_id`): the inode number of its directory in the cgroup2 file system.
//! Paths are shown relative to the cgroup2 root, as `/proc/<pid>/cgroup` shows them (`/` is the
//! root, `/system.slice/ssh.service` a service).

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::cli::UsageError;

/// How deep a cgroup tree is walked (the kernel's default limit is far deeper than any real
/// hierarchy; this bounds a walk of a pathological one).
const MAX_DEPTH: usize = 32;
/// A miss of an id already looked for rescans the tree at most this often: ids of short-lived
/// cgroups not seen in time are shown as `id:N` rather than walking the tree at every event.
const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// A new id's first miss rescans at once (a cgroup made after the last scan); beyond this many
/// such ids, new ones wait for [`RESCAN_EVERY`] too (a churn of short-lived cgroups).
const FIRST_MISSES: usize = 4096;

/// Where cgroup2 is mounted, from `/proc/self/mountinfo` (the mount of its root preferred).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_in(&info)
}

/// The cgroup2 mount point in mountinfo text: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS... -
/// FSTYPE SOURCE SUPEROPTS`.
fn mount_in(info: &str) -> Option<PathBuf> {
    let mut found: Option<PathBuf> = None;
    for line in info.lines() {
        let Some((head, tail)) = line.split_once(" - ") else {
            continue;
        };
        if tail.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let fields: Vec<&str> = head.split_whitespace().collect();
        let (Some(root), Some(point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        if *root == "/" {
            return Some(point);
        }
        found.get_or_insert(point);
    }
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("0");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 of process `pid` as `/proc/<pid>/cgroup` says it (`0::/a/b`), and its id (the
/// inode of its directory under `mount`, what events carry; 0 when it cannot be read).
pub fn of_process(mount: Option<&Path>, pid: u32) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?.to_owned();
    let id = mount
        .and_then(|m| std::fs::metadata(m.join(path.trim_start_matches('/'))).ok())
        .map_or(0, |meta| meta.ino());
    Some((id, path))
}

/// A `--cgroup` target: the cgroup and everything below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupTarget {
    pub id: u64,
    /// Depth below the root (the root is 0): the level its descendants' ancestor is taken at.
    pub level: u32,
    /// Relative to the cgroup2 root, `/`-prefixed.
    pub path: String,
}

impl CgroupTarget {
    /// Whether a cgroup path (as [`CgroupNames`] names it) is this one or below it.
    pub fn holds(&self, path: &str) -> bool {
        self.path == "/"
            || path == self.path
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Resolves `--cgroup PATH`: relative to the cgroup2 root (`/a/b` or `a/b`, as
/// `/proc/<pid>/cgroup` shows it), or absolute under the cgroup2 mount.
pub fn resolve(spec: &str) -> anyhow::Result<CgroupTarget> {
    let mount = cgroup2_mount().context(
        "--cgroup: no cgroup2 file system is mounted (see /proc/self/mountinfo); cgroup v2 is \
         needed for cgroup attribution",
    )?;
    resolve_under(&mount, spec)
}

fn resolve_under(mount: &Path, spec: &str) -> anyhow::Result<CgroupTarget> {
    let given = Path::new(spec);
    let rel = match given.strip_prefix(mount) {
        Ok(rel) if given.is_absolute() => rel.to_path_buf(),
        _ => given.strip_prefix("/").unwrap_or(given).to_path_buf(),
    };
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => bail!(UsageError(format!(
                "--cgroup {spec}: `..` is not allowed in a cgroup path"
            ))),
        }
    }
    let dir = parts.iter().fold(mount.to_path_buf(), |d, p| d.join(p));
    // A directory elsewhere on the file system (a cgroup v1 hierarchy, a mistyped mount) is
    // named as such, rather than looked for under the cgroup2 root.
    if given.is_absolute() && !given.starts_with(mount) && !dir.exists() && given.is_dir() {
        bail!(UsageError(format!(
            "--cgroup {spec}: a directory outside the cgroup2 mount {} (a cgroup v1 \
             hierarchy?); give a cgroup under {}, or its path as /proc/<pid>/cgroup's `0::` line \
             shows it",
            mount.display(),
            mount.display()
        )));
    }
    let meta = std::fs::metadata(&dir).map_err(|e| {
        UsageError(format!(
            "--cgroup {spec}: no cgroup {} ({e}); paths are relative to the cgroup2 root \
             (as in /proc/<pid>/cgroup) or absolute under {}",
            dir.display(),
            mount.display()
        ))
    })?;
    if !meta.is_dir() || !dir.join("cgroup.procs").exists() {
        bail!(UsageError(format!(
            "--cgroup {spec}: {} is not a cgroup directory",
            dir.display()
        )));
    }
    Ok(CgroupTarget {
        id: meta.ino(),
        level: parts.len() as u32,
        path: format!("/{}", parts.join("/")),
    })
}

/// cgroup id → path, cached; a miss rescans the tree (rate-limited). A cgroup removed after its
/// events keeps the path it was last seen with; one never seen is `id:N`.
pub struct CgroupNames {
    mount: Option<PathBuf>,
    paths: HashMap<u64, Arc<str>>,
    last_scan: Option<Instant>,
    /// Ids looked for and not found: a second miss waits for the rate limit.
    missed: HashSet<u64>,
    /// A table given whole (a recording's): never rescanned.
    fixed: bool,
}

impl CgroupNames {
    /// This machine's cgroup2 tree, scanned now.
    pub fn live() -> CgroupNames {
        let mut n = CgroupNames {
            mount: cgroup2_mount(),
            paths: HashMap::new(),
            last_scan: None,
            missed: HashSet::new(),
            fixed: false,
        };
        n.scan();
        n
    }

    /// A fixed table (a recording's: the ids are another machine's, or another boot's).
    pub fn fixed(table: &[(u64, String)]) -> CgroupNames {
        CgroupNames {
            mount: None,
            paths: table
                .iter()
                .map(|(id, p)| (*id, Arc::from(p.as_str())))
                .collect(),
            last_scan: None,
            missed: HashSet::new(),
            fixed: true,
        }
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(mount) = self.mount.clone() else {
            return;
        };
        let mut stack = vec![(mount, String::from("/"), 0usize)];
        while let Some((dir, path, depth)) = stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            self.paths.insert(meta.ino(), Arc::from(path.as_str()));
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                let child = if path == "/" {
                    format!("/{name}")
                } else {
                    format!("{path}/{name}")
                };
                stack.push((e.path(), child, depth + 1));
            }
        }
    }

    /// The path of a cgroup id, `None` for an unknown sender (id 0) or an id not found.
    pub fn path(&mut self, id: u64) -> Option<Arc<str>> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        // A cgroup made since the last scan is found at its first event (a rate limit shared by
        // all ids showed a new cgroup as `id:N` for up to a second when another id had just
        // missed: half a flow's events under emulation).
        let first_miss = self.missed.len() < FIRST_MISSES && self.missed.insert(id);
        let due = first_miss || self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY);
        if !self.fixed && due {
            self.scan();
        }
        let found = self.paths.get(&id).cloned();
        if found.is_some() {
            self.missed.remove(&id);
        }
        found
    }

    /// How an id is shown: its path, `id:N` when not found, `(unknown)` for 0.
    pub fn name(&mut self, id: u64) -> Arc<str> {
        match self.path(id) {
            Some(p) => p,
            None if id == 0 => Arc::from(UNKNOWN),
            None => Arc::from(format!("id:{id}")),
        }
    }

    /// The ids named so far (for a recording's trailer), sorted.
    pub fn table(&self, ids: impl IntoIterator<Item = u64>) -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = ids
            .into_iter()
            .filter_map(|id| Some((id, self.paths.get(&id)?.to_string())))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// The cgroup of an event whose sender is not known (no `sendmsg` seen on its socket).
pub const UNKNOWN: &str = "(unknown)";

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's cgroup, by its `/proc` file, is the one the tree scan names by that id.
    #[test]
    fn a_process_cgroup_has_the_id_the_tree_names() {
        let Some(mount) = cgroup2_mount() else {
            eprintln!("skipped: no cgroup2 mounted");
            return;
        };
        let (id, path) = of_process(Some(&mount), std::process::id()).expect("our own cgroup");
        assert!(path.starts_with('/'), "{path}");
        assert_ne!(id, 0);
        assert_eq!(CgroupNames::live().path(id).as_deref(), Some(path.as_str()));
    }

    #[test]
    fn finds_the_cgroup2_mount_of_its_root() {
        let info = "\
24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
31 24 0:27 /sub /mnt/sub rw - cgroup2 cgroup2 rw
32 24 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
33 24 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu";
        assert_eq!(mount_in(info), Some(PathBuf::from("/sys/fs/cgroup")));
        let escaped = "32 24 0:27 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw";
        assert_eq!(mount_in(escaped), Some(PathBuf::from("/mnt/cg two")));
        assert_eq!(mount_in("24 30 0:22 / /sys rw - sysfs sysfs rw"), None);
    }

    #[test]
    fn targets_hold_themselves_and_descendants_only() {
        let t = CgroupTarget {
            id: 7,
            level: 1,
            path: "/a".into(),
        };
        assert!(t.holds("/a"));
        assert!(t.holds("/a/b"));
        assert!(!t.holds("/ab"));
        assert!(!t.holds("/"));
        let root = CgroupTarget {
            id: 1,
            level: 0,
            path: "/".into(),
        };
        assert!(root.holds("/x/y"));
    }

    /// A cgroup made after the last scan is named at its first lookup, even right after
    /// another id missed (the rate limit used to hold the rescan back for a second).
    #[test]
    fn a_cgroup_made_after_a_miss_is_named_at_once() {
        use std::os::unix::fs::MetadataExt;
        let Some(mount) = cgroup2_mount() else {
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        let mut names = CgroupNames::live();
        assert_eq!(names.path(u64::MAX), None, "an id no cgroup has");
        let name = format!("sockmem-unit-{}", std::process::id());
        let dir = mount.join(&name);
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!("skipped: cannot make a cgroup ({e}): not root?");
            return;
        }
        let id = std::fs::metadata(&dir).map(|m| m.ino());
        let found = id.as_ref().ok().and_then(|&id| names.path(id));
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(found.as_deref(), Some(format!("/{name}").as_str()));
    }

    #[test]
    fn live_tree_names_this_process_cgroup() {
        let Some(mount) = cgroup2_mount() else {
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        // `0::/path` in /proc/self/cgroup on a cgroup v2 system.
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
            eprintln!("skipped: no cgroup v2 line in /proc/self/cgroup");
            return;
        };
        let target = resolve_under(&mount, path).expect("this process's cgroup resolves");
        let abs = format!("{}{}", mount.display(), path);
        assert_eq!(resolve_under(&mount, &abs).unwrap(), target);
        let mut names = CgroupNames::live();
        assert_eq!(names.name(target.id).as_ref(), path);
        assert_eq!(names.name(0).as_ref(), UNKNOWN);
        assert!(resolve_under(&mount, "/no/such/cgroup/here").is_err());
        assert!(resolve_under(&mount, "../etc").is_err());
        let elsewhere = std::env::temp_dir().join(format!("sockmem-v1-{}", std::process::id()));
        std::fs::create_dir_all(&elsewhere).unwrap();
        let err = resolve_under(&mount, &elsewhere.display().to_string()).unwrap_err();
        std::fs::remove_dir(&elsewhere).unwrap();
        assert!(
            format!("{err:#}").contains("outside the cgroup2 mount"),
            "{err:#}"
        );
    }
}
