//! The initramfs: a static busybox, the modules needed to reach the host's root (uncompressed,
//! so that busybox's insmod takes them), and `/init`, which builds the guest's root and runs the
//! command.
//!
//! The guest's root is an overlay: the host's `/` (virtio-9p, read-only) under a tmpfs, so that
//! host-built binaries and host tools run unchanged at the same paths and can write anywhere
//! without touching the host. A second, writable 9p share (the run directory, mounted at its host
//! path) carries the command's output and exit code back.

use std::{collections::HashMap, fs, path::Path};

use anyhow::{bail, Context as _};

use super::{
    host,
    kernel::{decompress, Kernel},
};

/// Modules to reach the root, then the ones the tests use anyway (preloading saves a modprobe
/// round trip through 9p). Dependencies come from modules.dep; built-in ones are skipped.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "9pnet_virtio",
    "9p",
    "overlay",
    "veth",
    "sch_tbf",
    "sch_htb",
];

/// Busybox applets `/init` uses.
const APPLETS: &[&str] = &[
    "sh", "mount", "mkdir", "insmod", "chroot", "env", "ip", "reboot", "sync", "cat",
];

/// The init script; `@MODULES@`, `@RELEASE@` and `@MODULES_DIR@` are filled in per kernel.
/// The run directory comes from the kernel command line (`sockmem_vm_run=`), which the kernel
/// hands to init as an environment variable.
const INIT: &str = r#"#!/bin/sh
# PID 1 stays here, in the initramfs, so that it can always report and power off; the command
# runs chrooted into the overlay.
export PATH=/bin
fail() {
    echo "vm-init: $*" >&2
    reboot -f
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in @MODULES@; do
    insmod "/modules/$m.ko" || fail "insmod $m"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /mnt/host \
    || fail "mounting the host's root"
mount -t tmpfs -o mode=0755 tmpfs /mnt/rw || fail "mounting tmpfs"
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay /newroot \
    || fail "mounting the overlay"
R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=0755 tmpfs $R/run
# Not /tmp: the host's /tmp stays visible (writes go to the overlay's tmpfs), so a workspace
# cloned under /tmp is where the host has it.
mount -t bpf bpf $R/sys/fs/bpf
mount -t tracefs tracefs $R/sys/kernel/tracing
mount -t debugfs debugfs $R/sys/kernel/debug
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
# After the tmpfs mounts, so that a run directory under /run stays visible.
RUN="$sockmem_vm_run"
mkdir -p "$R$RUN"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 run "$R$RUN" \
    || fail "mounting the run directory '$RUN'"
# This kernel's modules where the guest's modprobe (the host's kmod) looks for them; the kernel's
# own module requests (tc qdiscs, ...) run it through /bin/modprobe-guest. Bound from the host's
# root itself, which no tmpfs hides.
mkdir -p "$R/lib/modules/@RELEASE@"
mount --bind "/mnt/host@MODULES_DIR@" "$R/lib/modules/@RELEASE@" || fail "binding the modules"
echo /bin/modprobe-guest > /proc/sys/kernel/modprobe
ip link set lo up
# The command's stdout and stderr: virtio serial ports named by the host (not ttys, so the bytes
# go through unchanged, and much faster than a UART).
port() {
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name")" = "$1" ] && echo "/dev/${p##*/}" && return
    done
    fail "no virtio port $1"
}
OUT=$(port stdout)
ERR=$(port stderr)
env -i chroot $R /bin/sh "$RUN/command.sh" </dev/null >"$OUT" 2>"$ERR"
echo $? > "$R$RUN/exit-code"
sync
reboot -f
"#;

const MODPROBE: &str = r#"#!/bin/sh
exec chroot /newroot /sbin/modprobe "$@"
"#;

/// Writes the kernel's initramfs to `path`. Built afresh for each run (it takes milliseconds),
/// so that runs of different xtask versions never share one.
pub fn build(kernel: &Kernel, path: &Path) -> anyhow::Result<()> {
    let modules = resolve_modules(&kernel.modules_dir(), MODULES)
        .with_context(|| format!("resolving the modules of {}", kernel.release))?;
    let mut cpio = Cpio::default();
    for dir in [
        "bin", "dev", "proc", "sys", "mnt", "mnt/host", "mnt/rw", "newroot", "modules",
    ] {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for init's stdio before anything is mounted.
    cpio.char_dev("dev/console", 0o600, 5, 1);
    let busybox = fs::read(host::BUSYBOX).context("reading the static busybox")?;
    cpio.file("bin/busybox", 0o755, &busybox);
    for applet in APPLETS {
        cpio.symlink(&format!("bin/{applet}"), "busybox");
    }
    cpio.file("bin/modprobe-guest", 0o755, MODPROBE.as_bytes());
    let mut names = Vec::new();
    for (name, path) in &modules {
        cpio.file(&format!("modules/{name}.ko"), 0o644, &read_module(path)?);
        names.push(name.as_str());
    }
    let modules_dir = kernel.modules_dir();
    let modules_dir = modules_dir
        .to_str()
        .filter(|p| !p.contains(char::is_whitespace) && !p.contains(['"', '$', '`', '\\']))
        .with_context(|| format!("`{}`: unusable path for the guest", modules_dir.display()))?;
    let init = INIT
        .replace("@MODULES@", &names.join(" "))
        .replace("@RELEASE@", &kernel.release)
        .replace("@MODULES_DIR@", modules_dir);
    cpio.file("init", 0o755, init.as_bytes());
    let data = cpio.finish();

    fs::write(path, data).with_context(|| format!("writing `{}`", path.display()))
}

/// Module name as the kernel spells it: file stem without `.ko[.xz|.zst|.gz]`, `-` as `_`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The loadable modules among `wanted` and their dependencies, dependencies first, as
/// (name, absolute path). Built-in modules are left out; unknown ones are an error.
fn resolve_modules(dir: &Path, wanted: &[&str]) -> anyhow::Result<Vec<(String, String)>> {
    let read = |f: &str| {
        fs::read_to_string(dir.join(f)).with_context(|| format!("reading {}/{f}", dir.display()))
    };
    let order = module_order(&read("modules.dep")?, &read("modules.builtin")?, wanted)?;
    Ok(order
        .into_iter()
        .map(|(name, path)| (name, format!("{}/{path}", dir.display())))
        .collect())
}

/// [`resolve_modules`] on the text of `modules.dep` (`path: dependency paths`, relative to the
/// modules directory) and `modules.builtin` (one path per line): (name, relative path).
fn module_order(
    modules_dep: &str,
    modules_builtin: &str,
    wanted: &[&str],
) -> anyhow::Result<Vec<(String, String)>> {
    let builtin: Vec<String> = modules_builtin.lines().map(module_name).collect();
    // name → (path, dependency names)
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in modules_dep.lines() {
        let Some((module, rest)) = line.split_once(':') else {
            continue;
        };
        let needs = rest.split_whitespace().map(module_name).collect();
        deps.insert(module_name(module), (module.to_owned(), needs));
    }
    let mut order = Vec::new();
    for name in wanted {
        visit(&module_name(name), &deps, &builtin, &mut order)?;
    }
    Ok(order
        .into_iter()
        .map(|name| {
            let path = deps[&name].0.clone();
            (name, path)
        })
        .collect())
}

fn visit(
    name: &str,
    deps: &HashMap<String, (String, Vec<String>)>,
    builtin: &[String],
    order: &mut Vec<String>,
) -> anyhow::Result<()> {
    if order.iter().any(|n| n == name) || builtin.iter().any(|n| n == name) {
        return Ok(());
    }
    let Some((_, needs)) = deps.get(name) else {
        bail!("module {name} is neither built in nor in modules.dep");
    };
    for dep in needs {
        visit(dep, deps, builtin, order)?;
    }
    order.push(name.to_owned());
    Ok(())
}

fn read_module(path: &str) -> anyhow::Result<Vec<u8>> {
    let data = fs::read(path).with_context(|| format!("reading `{path}`"))?;
    let unpacked = if path.ends_with(".ko.xz") {
        decompress("xz", "xz-utils", &data)
    } else if path.ends_with(".ko.zst") {
        decompress("zstd", "zstd", &data)
    } else if path.ends_with(".ko.gz") {
        decompress("gzip", "gzip", &data)
    } else {
        return Ok(data);
    };
    unpacked.with_context(|| format!("decompressing `{path}`"))
}

/// A cpio archive in the "newc" format the kernel unpacks.
#[derive(Default)]
struct Cpio {
    data: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, 2, (0, 0), b"");
    }

    fn file(&mut self, name: &str, perm: u32, content: &[u8]) {
        self.entry(name, 0o100000 | perm, 1, (0, 0), content);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, 1, (0, 0), target.as_bytes());
    }

    fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, 1, (major, minor), b"");
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), content: &[u8]) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            content.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(content);
        self.pad();
    }

    fn pad(&mut self) {
        self.data.resize(self.data.len().next_multiple_of(4), 0);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), b"");
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Excerpts of a Debian kernel's modules.dep and modules.builtin.
    const MODULES_DEP: &str = "\
kernel/fs/9p/9p.ko.xz: kernel/fs/netfs/netfs.ko.xz kernel/net/9p/9pnet.ko.xz
kernel/fs/netfs/netfs.ko.xz:
kernel/fs/overlayfs/overlay.ko.xz:
kernel/net/9p/9pnet.ko.xz:
kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz
kernel/drivers/char/virtio_console.ko.xz:
kernel/drivers/net/veth.ko.xz:
kernel/net/sched/sch_tbf.ko.xz:
";
    const MODULES_BUILTIN: &str = "\
kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko
";

    #[test]
    fn module_names() {
        assert_eq!(
            module_name("kernel/net/9p/9pnet_virtio.ko.xz"),
            "9pnet_virtio"
        );
        assert_eq!(module_name("kernel/fs/overlayfs/overlay.ko"), "overlay");
        assert_eq!(module_name("kernel/net/sched/sch-tbf.ko.zst"), "sch_tbf");
        assert_eq!(module_name("sch-htb"), "sch_htb");
    }

    #[test]
    fn dependencies_first_builtins_left_out() {
        let wanted = ["virtio_pci", "9pnet_virtio", "9p", "overlay", "veth"];
        let order = module_order(MODULES_DEP, MODULES_BUILTIN, &wanted).unwrap();
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["9pnet", "9pnet_virtio", "netfs", "9p", "overlay", "veth"]
        );
        assert_eq!(order[0].1, "kernel/net/9p/9pnet.ko.xz");
        let err = module_order(MODULES_DEP, MODULES_BUILTIN, &["sch_htb"]).unwrap_err();
        assert!(err.to_string().contains("sch_htb"), "{err}");
    }
}
