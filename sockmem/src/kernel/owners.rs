//! Which process holds a socket: sock_diag names a socket by its inode only; each process's
//! `/proc/PID/fd` links (`socket:[INODE]`) say who has it open.

use std::collections::{BTreeSet, HashMap};

/// The process (tgid, comm) holding each of `inodes` open, the lowest pid where several share
/// it (a parent and the children it forked). Processes sockmem may not read are skipped.
pub fn socket_owners(inodes: &BTreeSet<u64>) -> HashMap<u64, (u32, String)> {
    let mut owners: HashMap<u64, (u32, String)> = HashMap::new();
    if inodes.is_empty() {
        return owners;
    }
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return owners;
    };
    let mut pids: Vec<u32> = proc_dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let mut comm = None;
        for fd in fds.flatten() {
            let Some(ino) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| socket_inode(l.to_str()?))
            else {
                continue;
            };
            if !inodes.contains(&ino) || owners.contains_key(&ino) {
                continue;
            }
            let name = comm.get_or_insert_with(|| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim_end().to_owned())
                    .unwrap_or_default()
            });
            owners.insert(ino, (pid, name.clone()));
        }
    }
    owners
}

/// The inode of an fd link `socket:[N]`.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn finds_its_own_socket() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ino = std::fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&s)
        ))
        .unwrap()
        .ino();
        let owners = super::socket_owners(&[ino].into_iter().collect());
        assert_eq!(owners.get(&ino).map(|o| o.0), Some(std::process::id()));
    }

    #[test]
    fn reads_socket_links_only() {
        assert_eq!(super::socket_inode("socket:[1234]"), Some(1234));
        assert_eq!(super::socket_inode("pipe:[1234]"), None);
        assert_eq!(super::socket_inode("/dev/null"), None);
    }
}
