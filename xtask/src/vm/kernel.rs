//! Debian distribution kernels: download, unpack (never into the host's /boot or /lib), index
//! the modules, extract the uncompressed vmlinux.
//!
//! Cache: `debs/<package>_<version>_amd64.deb`, `kernels/<package>/` (the unpacked package plus
//! `vmlinux`). An unpacked kernel is reused without asking apt: delete it to move to a newer
//! package.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

use super::host;
use crate::build::cmd;

/// Marks a fully unpacked and indexed kernel directory.
const READY: &str = ".ready";

pub struct Kernel {
    /// The Debian package, e.g. `linux-image-6.1.0-56-amd64`.
    pub package: String,
    /// `uname -r` inside the guest, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// Where the package is unpacked.
    pub root: PathBuf,
}

impl Kernel {
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    pub fn bzimage(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    /// The uncompressed kernel, extracted from the bzImage once: booted directly through its
    /// PVH entry point it skips the real-mode setup and the decompression, which TCG makes slow.
    pub fn vmlinux(&self) -> anyhow::Result<PathBuf> {
        let out = self.root.join("vmlinux");
        if !out.is_file() {
            let elf = extract_vmlinux(&self.bzimage())?;
            write_atomic(&out, &elf)?;
        }
        Ok(out)
    }
}

/// The newest Debian kernel of `series` ("6.1", "6.12"): the cached one if any, else from apt.
pub fn prepare(vm_dir: &Path, series: &str) -> anyhow::Result<Kernel> {
    let wanted = parse_series(series)?;
    let kernels = vm_dir.join("kernels");
    let cached = fs::read_dir(&kernels)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(READY).is_file())
        .filter_map(|e| e.file_name().into_string().ok());
    let package = match newest(cached, wanted) {
        Some(name) => name,
        None => newest_package(wanted)?,
    };
    let root = kernels.join(&package);
    if !root.join(READY).is_file() {
        let deb = download(&vm_dir.join("debs"), &package)?;
        unpack(&deb, &root)?;
    }
    let release = release_of(&root)?;
    let kernel = Kernel {
        package,
        release,
        root,
    };
    // Now, once: the VMs that boot it may start at the same time.
    kernel.vmlinux()?;
    Ok(kernel)
}

/// "6.12" → (6, 12).
fn parse_series(series: &str) -> anyhow::Result<(u64, u64)> {
    let parsed = series
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    parsed.with_context(|| format!("kernel series `{series}`: expected MAJOR.MINOR, e.g. 6.1"))
}

/// The version numbers of a generic amd64 kernel image package of the wanted series:
/// `linux-image-6.1.0-56-amd64` → [6, 1, 0, 56], `linux-image-6.12.117+deb12-amd64` →
/// [6, 12, 117]. None for other flavours (cloud, rt, dbg, unsigned) and other series.
fn package_version(name: &str, (major, minor): (u64, u64)) -> Option<Vec<u64>> {
    let version = name.strip_prefix("linux-image-")?.strip_suffix("-amd64")?;
    let (numbers, suffix) = version.split_once('+').unwrap_or((version, "deb0"));
    let suffix_ok = suffix
        .strip_prefix("deb")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !suffix_ok {
        return None;
    }
    let parts: Vec<u64> = numbers
        .split(['.', '-'])
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (parts.len() >= 3 && parts[0] == major && parts[1] == minor).then_some(parts)
}

/// The package of the highest version among `names` (package or directory names) that is a
/// generic amd64 image of `series`.
fn newest(names: impl IntoIterator<Item = String>, series: (u64, u64)) -> Option<String> {
    names
        .into_iter()
        .filter_map(|name| Some((package_version(&name, series)?, name)))
        .max()
        .map(|(_, name)| name)
}

fn newest_package(series: (u64, u64)) -> anyhow::Result<String> {
    let regex = format!("^linux-image-{}\\.{}\\.", series.0, series.1);
    newest(host::apt_search(&regex)?, series).with_context(|| {
        format!(
            "apt knows no generic amd64 kernel package of series {}.{} (searched `{regex}`)",
            series.0, series.1
        )
    })
}

fn find_deb(debs: &Path, package: &str) -> Option<PathBuf> {
    fs::read_dir(debs)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| is_deb_of(&e.file_name().to_string_lossy(), package))
        .map(|e| e.path())
}

/// Whether `file` is a package file of `package` (`<package>_<version>_<arch>.deb`): the `_`
/// keeps `linux-image-6.1.0-5-amd64` from matching `linux-image-6.1.0-56-amd64_…`.
fn is_deb_of(file: &str, package: &str) -> bool {
    file.strip_prefix(package)
        .is_some_and(|rest| rest.starts_with('_') && rest.ends_with(".deb"))
}

fn download(debs: &Path, package: &str) -> anyhow::Result<PathBuf> {
    if let Some(deb) = find_deb(debs, package) {
        return Ok(deb);
    }
    fs::create_dir_all(debs).with_context(|| format!("creating `{}`", debs.display()))?;
    eprintln!("xtask: downloading {package}");
    // apt-get download writes into its current directory, under the package file's own name.
    let tmp = debs.join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("creating `{}`", tmp.display()))?;
    let result = host::apt_get_in(Some(&tmp), &["download"], &[package]).and_then(|()| {
        let deb = find_deb(&tmp, package).context("apt-get download left no .deb")?;
        let dest = debs.join(deb.file_name().context("file name")?);
        fs::rename(&deb, &dest).with_context(|| format!("moving `{}`", deb.display()))?;
        Ok(dest)
    });
    let _ = fs::remove_dir_all(&tmp);
    result.with_context(|| format!("downloading {package}"))
}

fn unpack(deb: &Path, root: &Path) -> anyhow::Result<()> {
    eprintln!("xtask: unpacking {}", deb.display());
    let name = root.file_name().context("kernel directory name")?;
    let tmp = root.with_file_name(format!(
        ".unpack-{}-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("creating `{}`", tmp.display()))?;
    cmd(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))?;
    // Newer packages ship usr/lib/modules; depmod -b and our paths expect lib/modules.
    if !tmp.join("lib/modules").is_dir() && tmp.join("usr/lib/modules").is_dir() {
        std::os::unix::fs::symlink("usr/lib", tmp.join("lib")).context("linking lib → usr/lib")?;
    }
    let release = release_of(&tmp)?;
    // The package leaves modules.dep and friends to the postinst; the guest's modprobe needs them.
    cmd(Command::new("depmod").arg("-b").arg(&tmp).arg(&release))
        .context("indexing the kernel modules")?;
    fs::write(tmp.join(READY), "").context("marking the kernel unpacked")?;
    if root.join(READY).is_file() {
        // Another xtask unpacked it meanwhile, and may be using it.
        let _ = fs::remove_dir_all(&tmp);
        return Ok(());
    }
    let _ = fs::remove_dir_all(root); // a half-unpacked leftover
    fs::rename(&tmp, root).with_context(|| format!("moving the kernel to `{}`", root.display()))
}

/// The one directory under lib/modules/ is the kernel release.
fn release_of(root: &Path) -> anyhow::Result<String> {
    let dir = root.join("lib/modules");
    let mut releases: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("listing `{}`", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    match releases.len() {
        1 => Ok(releases.remove(0)),
        n => bail!(
            "expected one kernel release in `{}`, found {n}",
            dir.display()
        ),
    }
}

/// Compressions a bzImage payload may use: magic, tool (which reads stdin), its package.
const COMPRESSIONS: &[(&[u8], &str, &str)] = &[
    (b"\xfd7zXZ\x00", "xz", "xz-utils"),
    (b"\x28\xb5\x2f\xfd", "zstd", "zstd"),
    (b"\x1f\x8b", "gzip", "gzip"),
    (b"\x02\x21\x4c\x18", "lz4", "lz4"),
    (b"BZh", "bzip2", "bzip2"),
];

/// The ELF vmlinux inside a bzImage. The boot protocol header (2.08+) says where the
/// compressed payload sits; the build appends the uncompressed size as 4 bytes after it.
fn extract_vmlinux(bzimage: &Path) -> anyhow::Result<Vec<u8>> {
    let image = fs::read(bzimage).with_context(|| format!("reading `{}`", bzimage.display()))?;
    let (compressed, size) =
        bzimage_payload(&image).with_context(|| format!("`{}`", bzimage.display()))?;
    let &(_, tool, package) = COMPRESSIONS
        .iter()
        .find(|(magic, ..)| compressed.starts_with(magic))
        .with_context(|| format!("`{}`: unknown payload compression", bzimage.display()))?;
    let elf = decompress(tool, package, compressed)
        .with_context(|| format!("decompressing the kernel in `{}`", bzimage.display()))?;
    if !elf.starts_with(b"\x7fELF") || elf.len() != size {
        bail!(
            "`{}`: the {tool} payload did not decompress to an ELF of {size} bytes",
            bzimage.display()
        );
    }
    Ok(elf)
}

/// The compressed kernel inside a bzImage, and the size it decompresses to.
fn bzimage_payload(image: &[u8]) -> anyhow::Result<(&[u8], usize)> {
    let u16_at = |o: usize| {
        image
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        image
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if image.get(0x202..0x206) != Some(b"HdrS") || u16_at(0x206).unwrap_or(0) < 0x208 {
        bail!("not a bzImage of boot protocol 2.08+");
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248).unwrap_or(0);
    let len = u32_at(0x24c).unwrap_or(0);
    let payload = image
        .get(start..start + len)
        .filter(|p| p.len() > 4)
        .context("payload out of bounds")?;
    let (compressed, size) = payload.split_at(payload.len() - 4);
    let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
    Ok((compressed, size))
}

/// Decompresses with `tool -dc`, installing its package if needed.
pub fn decompress(tool: &str, package: &str, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    if Command::new(tool).arg("--version").output().is_err() {
        host::apt_get(&["install", "-y", "--no-install-recommends"], &[package])?;
    }
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {tool}"))?;
    // Feed stdin from a thread: the output is larger than a pipe buffer.
    let mut stdin = child.stdin.take().context("stdin")?;
    let out = std::thread::scope(|s| {
        s.spawn(move || stdin.write_all(data));
        child.wait_with_output()
    })
    .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} -dc failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Writes through a temporary file and a rename, so that concurrent runs never see half a file.
pub fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    // Unique per call: VMs start from several threads at once.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
    fs::write(&tmp, data).with_context(|| format!("writing `{}`", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apt-cache search --names-only '^linux-image-6\.1\.'` and `'^linux-image-6\.12\.'` on
    /// Debian 12, names only, as apt lists them (not sorted by version).
    const APT_NAMES: &[&str] = &[
        "linux-image-6.1.0-9-amd64",
        "linux-image-6.1.0-47-amd64-dbg",
        "linux-image-6.1.0-47-amd64-unsigned",
        "linux-image-6.1.0-47-cloud-amd64",
        "linux-image-6.1.0-47-rt-amd64",
        "linux-image-6.1.0-56-amd64",
        "linux-image-6.1.0-50-amd64",
        "linux-image-6.1.0-57-cloud-amd64-dbg",
        "linux-image-6.12.111+deb12-amd64-dbg",
        "linux-image-6.12.111+deb12-amd64-unsigned",
        "linux-image-6.12.9+deb12-amd64",
        "linux-image-6.12.107+deb12-amd64",
        "linux-image-6.12.111+deb12-cloud-amd64",
        "linux-image-6.12.111+deb12-rt-amd64",
        "linux-image-6.12.117+bpo-amd64",
        "linux-image-amd64",
    ];

    fn names() -> Vec<String> {
        APT_NAMES.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn series() {
        assert_eq!(parse_series("6.1").unwrap(), (6, 1));
        assert_eq!(parse_series("6.12").unwrap(), (6, 12));
        assert!(parse_series("6").is_err());
        assert!(parse_series("6.x").is_err());
        assert!(parse_series("").is_err());
    }

    #[test]
    fn package_versions() {
        assert_eq!(
            package_version("linux-image-6.1.0-56-amd64", (6, 1)),
            Some(vec![6, 1, 0, 56])
        );
        assert_eq!(
            package_version("linux-image-6.12.117+deb12-amd64", (6, 12)),
            Some(vec![6, 12, 117])
        );
        for other in [
            "linux-image-6.1.0-56-amd64",           // other series
            "linux-image-6.12.111+deb12-amd64-dbg", // debug symbols
            "linux-image-6.12.111+deb12-amd64-unsigned",
            "linux-image-6.12.111+deb12-cloud-amd64", // flavours
            "linux-image-6.12.111+deb12-rt-amd64",
            "linux-image-6.12.117+bpo-amd64", // suffix other than deb<N>
            "linux-image-6.12+deb12-amd64",   // too few numbers
            "linux-image-amd64",              // the metapackage
            "linux-headers-6.12.117+deb12-amd64",
        ] {
            assert_eq!(package_version(other, (6, 12)), None, "{other}");
        }
    }

    #[test]
    fn newest_generic_package_by_number() {
        // 56 > 50 > 9 as numbers, not as text.
        assert_eq!(
            newest(names(), (6, 1)).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            newest(names(), (6, 12)).as_deref(),
            Some("linux-image-6.12.107+deb12-amd64")
        );
        assert_eq!(newest(names(), (5, 10)), None);
        assert_eq!(newest(Vec::new(), (6, 1)), None);
    }

    #[test]
    fn deb_file_names() {
        let package = "linux-image-6.1.0-5-amd64";
        assert!(is_deb_of(
            "linux-image-6.1.0-5-amd64_6.1.15-1_amd64.deb",
            package
        ));
        assert!(!is_deb_of(
            "linux-image-6.1.0-56-amd64_6.1.158-1_amd64.deb",
            package
        ));
        assert!(!is_deb_of(
            "linux-image-6.1.0-5-amd64_6.1.15-1_amd64.deb.part",
            package
        ));
        assert!(!is_deb_of("linux-image-6.1.0-5-amd64", package));
    }

    /// A bzImage header as the boot protocol lays it out: `setup_sects` at 0x1f1, "HdrS" and
    /// the version at 0x202, `payload_offset`/`payload_length` at 0x248 (from the protected-mode
    /// code, which starts after the setup sectors), and the uncompressed size after the payload.
    fn bzimage(setup_sects: u8, version: u16, payload: &[u8], size: u32) -> Vec<u8> {
        let code = (usize::from(setup_sects.max(1)) + 1) * 512;
        let offset = 0x100;
        let mut image = vec![0; code + offset];
        image[0x1f1] = setup_sects;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        let len = payload.len() as u32 + 4;
        image[0x248..0x24c].copy_from_slice(&(offset as u32).to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&len.to_le_bytes());
        image.extend_from_slice(payload);
        image.extend_from_slice(&size.to_le_bytes());
        image.extend_from_slice(&[0; 64]); // what follows the payload (the setup's tail, ...)
        image
    }

    #[test]
    fn bzimage_payloads() {
        let xz = b"\xfd7zXZ\x00compressed kernel";
        let image = bzimage(27, 0x020f, xz, 41_943_040);
        let (payload, size) = bzimage_payload(&image).unwrap();
        assert_eq!((payload, size), (&xz[..], 41_943_040));
        let tool = COMPRESSIONS
            .iter()
            .find(|(magic, ..)| payload.starts_with(magic))
            .map(|(_, tool, _)| *tool);
        assert_eq!(tool, Some("xz"));

        assert!(bzimage_payload(&bzimage(27, 0x0207, xz, 1)).is_err()); // too old a protocol
        let mut not_bzimage = image.clone();
        not_bzimage[0x202] = b'X';
        assert!(bzimage_payload(&not_bzimage).is_err());
        let truncated = &image[..image.len() - 70];
        assert!(bzimage_payload(truncated).is_err());
        assert!(bzimage_payload(&image[..0x100]).is_err());
    }
}
