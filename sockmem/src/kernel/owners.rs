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

/// The threads of process `pid` asleep right now inside a send system call (`SEND_SYSCALLS`:
/// `write`, `sendto`, `sendmsg`...) on a socket, with that socket's inode: `task/TID/syscall`
/// gives the call and its first argument (the fd), `task/TID/stat` the state (`S` or `D`:
/// asleep) and `wchan`, where readable, where (`0`: it is running after all). Such a call began
/// before sockmem attached, so no event will tell of its sleep until it returns.
pub fn asleep_in_send(pid: u32) -> Vec<(u32, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut asleep = Vec::new();
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = task.path();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let Some(fd) = read("syscall").and_then(|s| send_call_fd(&s)) else {
            continue;
        };
        let Some(state) = read("stat").and_then(|s| task_state(&s)) else {
            continue;
        };
        let woke = read("wchan").is_some_and(|w| w.trim() == "0");
        if !matches!(state, 'S' | 'D') || woke {
            continue;
        }
        let ino = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .ok()
            .and_then(|l| socket_inode(l.to_str()?));
        if let Some(ino) = ino {
            asleep.push((tid, ino));
        }
    }
    asleep
}

/// The fd a thread's system call (`/proc/PID/task/TID/syscall`: the number, then the arguments
/// in hex) sends on, where it is a send call.
fn send_call_fd(syscall: &str) -> Option<u64> {
    let mut fields = syscall.split_whitespace();
    let nr: libc::c_long = fields.next()?.parse().ok()?;
    if !crate::attach::loader::SEND_SYSCALLS.contains(&nr) {
        return None;
    }
    u64::from_str_radix(fields.next()?.strip_prefix("0x")?, 16).ok()
}

/// A task's state letter in its `stat` line (after the parenthesised comm, which may hold
/// spaces and parentheses).
fn task_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
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

    #[test]
    fn reads_a_send_call_and_a_task_state() {
        let sendto = format!(
            "{} 0x5 0x7f00 0x10000 0x0 0x0 0x0 0x7ffc 0x7f01",
            libc::SYS_sendto
        );
        assert_eq!(super::send_call_fd(&sendto), Some(5));
        let read = format!(
            "{} 0x5 0x7f00 0x10000 0x0 0x0 0x0 0x7ffc 0x7f01",
            libc::SYS_read
        );
        assert_eq!(super::send_call_fd(&read), None);
        assert_eq!(super::send_call_fd("running"), None);
        assert_eq!(super::send_call_fd("-1 0x7ffc 0x7f01"), None);
        assert_eq!(super::task_state("77 (a) b)) S 1 77"), Some('S'));
    }

    #[test]
    fn a_thread_asleep_in_a_send_is_found() {
        // A blocking UNIX stream pair whose reader never reads: the writer fills the buffer
        // and sleeps in `write`.
        let (mut w, r) = std::os::unix::net::UnixStream::pair().unwrap();
        let ino = std::fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&w)
        ))
        .unwrap()
        .ino();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            tid_tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let buf = vec![0u8; 1 << 20];
            let _ = std::io::Write::write_all(&mut w, &buf);
        });
        let tid = tid_rx.recv().unwrap();
        let mut found = false;
        for _ in 0..200 {
            found = super::asleep_in_send(std::process::id()).contains(&(tid, ino));
            if found {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(r);
        writer.join().unwrap();
        assert!(found, "the writer asleep in write on its socket within 2 s");
    }
}
