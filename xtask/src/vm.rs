//! Running commands, and the integration tests, as root inside a VM that boots a Debian
//! distribution kernel under qemu (TCG), with the host's root visible read-only under a tmpfs
//! overlay: host-built binaries and host tools run unchanged, at the same paths.
//!
//! Everything lives under `target/vm/`: `debs/` (kernel packages), `kernels/<package>/` (unpacked,
//! plus `vmlinux`), `run-<pid>-<n>/` (one VM run: initramfs, command, output, console log, exit
//! code; removed after the run unless the VM failed or the guest kernel warned).

mod host;
mod initramfs;
mod kernel;
mod qemu;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU32, AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::Deserialize;

use crate::{build::workspace_root, setup};
use qemu::Outcome;

/// The kernel series `--kernel all` stands for.
const ALL_KERNELS: &[&str] = &["6.1", "6.12"];
/// Backends `vm-test` runs when `SOCKMEM_TEST_BACKENDS` is unset.
const DEFAULT_BACKENDS: &str = "tracepoint kprobe fentry";
/// Host variables passed into the guest, by prefix.
const PASS_ENV_PREFIXES: &[&str] = &["SOCKMEM_", "RUST_"];
/// Exit codes of `vm-run` when the command did not run to its end (as `timeout` and
/// `git bisect run` use them).
const EXIT_TIMEOUT: i32 = 124;
const EXIT_VM_FAILED: i32 = 125;

fn vm_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("vm")
}

/// A fresh run directory name: several VMs may run at once, from one xtask or several.
fn run_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    vm_dir().join(format!("run-{}-{n}", std::process::id()))
}

/// `cargo xtask vm-run`: exits with the command's exit code, 124 on timeout, 125 when the VM
/// could not run it.
pub fn run_cli(series: &str, timeout: u64, env: &[String], command: &[String]) -> ! {
    let code = match run_command(series, timeout, env, command) {
        Ok(Outcome::Exited(code)) => code,
        Ok(Outcome::TimedOut) => EXIT_TIMEOUT,
        Ok(Outcome::Failed) => EXIT_VM_FAILED,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            EXIT_VM_FAILED
        }
    };
    std::process::exit(code)
}

fn run_command(
    series: &str,
    timeout: u64,
    env: &[String],
    command: &[String],
) -> anyhow::Result<Outcome> {
    if command.is_empty() {
        bail!("no command: `cargo xtask vm-run --kernel 6.1 -- uname -r`");
    }
    let mut vars = guest_env();
    for kv in env {
        vars.push(parse_env(kv)?);
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let exec = command.iter().map(|a| sh_quote(a)).collect::<Vec<_>>();
    let script = script(&cwd, &vars, &format!("exec {}", exec.join(" ")))?;
    host::ensure_packages()?;
    let kernel = kernel::prepare(&vm_dir(), series)?;
    let run = qemu::run(&qemu::Spec {
        kernel: &kernel,
        script,
        timeout: Duration::from_secs(timeout),
        run_dir: run_dir(),
        stream: true,
    })?;
    if let Some(report) = run.report {
        eprint!("{report}");
    }
    Ok(run.outcome)
}

/// The guest command's environment: a clean one like a root login's, plus pass-through.
fn guest_env() -> Vec<(String, String)> {
    // The host's PATH, so that the same tools are found (e.g. ~/.cargo/bin).
    let path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut vars = vec![
        ("PATH".to_owned(), path),
        ("HOME".to_owned(), "/root".to_owned()),
        ("USER".to_owned(), "root".to_owned()),
        ("LOGNAME".to_owned(), "root".to_owned()),
    ];
    // vars_os: std::env::vars panics on a variable that is not UTF-8.
    vars.extend(std::env::vars_os().filter_map(|(k, v)| {
        let (k, v) = (k.into_string().ok()?, v.into_string().ok()?);
        let pass = PASS_ENV_PREFIXES.iter().any(|p| k.starts_with(p)) && valid_name(&k);
        pass.then_some((k, v))
    }));
    vars
}

/// `--env NAME=VALUE` → (NAME, VALUE); the value may contain `=`.
fn parse_env(kv: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = kv
        .split_once('=')
        .with_context(|| format!("--env `{kv}`: expected NAME=VALUE"))?;
    if !valid_name(k) {
        bail!("--env: `{k}` is not a valid environment variable name");
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn valid_name(k: &str) -> bool {
    k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A guest script that enters `cwd`, sets `vars`, then runs `body`.
fn script(cwd: &Path, vars: &[(String, String)], body: &str) -> anyhow::Result<String> {
    let cwd = cwd
        .to_str()
        .with_context(|| format!("`{}` is not UTF-8", cwd.display()))?;
    let mut s = format!("cd {} || exit {EXIT_VM_FAILED}\n", sh_quote(cwd));
    for (k, v) in vars {
        s += &format!("export {k}={}\n", sh_quote(v));
    }
    s += body;
    s.push('\n');
    Ok(s)
}

/// Quotes for sh: `it's` → `'it'\''s'`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// An integration test executable of package sockmem.
struct TestExe {
    name: String,
    path: String,
}

pub struct TestOptions<'a> {
    /// "all", or comma-separated series.
    pub kernels: &'a str,
    /// Seconds for one VM (one kernel × backend).
    pub timeout: u64,
    /// Build the tests optimized: debug builds run markedly slower under TCG.
    pub release: bool,
    /// How many VMs at once; default: one per host core.
    pub jobs: Option<usize>,
    /// Only these test executables (host-only ones included); empty: all but the host-only.
    pub only: &'a [String],
    /// Extra arguments for the test executables.
    pub extra: &'a [String],
}

/// One kernel × backend run.
struct Cell<'a> {
    series: &'a str,
    kernel: &'a kernel::Kernel,
    backend: &'a str,
}

/// `cargo xtask vm-test`: every integration test executable, on each kernel × backend.
pub fn test_cli(opts: &TestOptions) -> anyhow::Result<()> {
    let series = kernel_series(opts.kernels);
    if series.is_empty() {
        bail!("--kernel names no kernel series");
    }
    let backends_var = std::env::var("SOCKMEM_TEST_BACKENDS");
    let backends = backends(backends_var.as_deref().unwrap_or(DEFAULT_BACKENDS));
    if backends.is_empty() {
        bail!("SOCKMEM_TEST_BACKENDS names no backend");
    }
    host::ensure_packages()?;
    let kernels = series
        .iter()
        .map(|k| kernel::prepare(&vm_dir(), k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut tests = build_tests(opts.release)?;
    if opts.only.is_empty() {
        tests.retain(|t| !HOST_ONLY_EXECUTABLES.iter().any(|(n, _)| *n == t.name));
        for (name, why) in HOST_ONLY_EXECUTABLES {
            eprintln!("xtask: not in VMs yet: tests/{name}.rs: {why}");
        }
        for (name, why) in ONE_BACKEND_EXECUTABLES {
            eprintln!("xtask: tests/{name}.rs runs in the VMs under {ONE_BACKEND} only: {why}");
        }
    } else {
        if let Some(unknown) = opts
            .only
            .iter()
            .find(|n| !tests.iter().any(|t| &t.name == *n))
        {
            let known: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
            bail!(
                "--tests: no test executable {unknown:?} (there are: {})",
                known.join(", ")
            );
        }
        tests.retain(|t| opts.only.contains(&t.name));
    }
    if opts.only.is_empty() {
        for (name, why) in HOST_ONLY_TESTS {
            eprintln!("xtask: not in VMs yet: {name}: {why}");
        }
    }
    let names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
    eprintln!("xtask: test executables: {}", names.join(", "));

    let cells: Vec<Cell> = series
        .iter()
        .zip(&kernels)
        .flat_map(|(series, kernel)| {
            backends.iter().map(move |backend| Cell {
                series,
                kernel,
                backend,
            })
        })
        .collect();
    let start = Instant::now();
    // One VM keeps about one host core busy (TCG), hence one VM per core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = opts.jobs.unwrap_or(cores).clamp(1, cells.len().max(1));
    // With several VMs at once each cell's output is printed whole when it ends.
    let stream = jobs == 1;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<(Outcome, Duration)>>> = Mutex::new(vec![None; cells.len()]);
    let run_cells = || -> anyhow::Result<()> {
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(cell) = cells.get(i) else {
                return Ok(());
            };
            let header = format!(
                "xtask: ==== kernel {} ({}), backend {} ====",
                cell.series, cell.kernel.package, cell.backend
            );
            if stream {
                eprintln!("{header}");
            }
            let cell_start = Instant::now();
            let run = run_tests(cell, &tests, opts, stream)?;
            let took = cell_start.elapsed();
            if !stream {
                // Whole, under the locks, so that cells running at once do not interleave.
                let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
                let _ = writeln!(err, "{header}");
                let _ = out.write_all(&run.stdout);
                let _ = out.flush();
                let _ = err.write_all(&run.stderr);
                let _ = writeln!(
                    err,
                    "xtask: ==== ended after {:.0} s ====",
                    took.as_secs_f64()
                );
            }
            if let Some(report) = &run.report {
                eprint!("{report}");
            }
            results.lock().expect("no thread panics holding it")[i] = Some((run.outcome, took));
        }
    };
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs).map(|_| s.spawn(run_cells)).collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| bail!("a VM worker panicked")))
            .collect::<anyhow::Result<Vec<()>>>()
    })?;
    let results = results.into_inner().expect("no thread panics holding it");

    println!(
        "\n{:<8} {:<24} {:<12} {:<10} time",
        "kernel", "release", "backend", "result"
    );
    let mut failed = 0;
    for (cell, result) in cells.iter().zip(&results) {
        let Some((outcome, took)) = result else {
            continue;
        };
        let result = match outcome {
            Outcome::Exited(0) => "pass".to_owned(),
            Outcome::Exited(code) => format!("FAIL ({code})"),
            Outcome::TimedOut => "TIMEOUT".to_owned(),
            Outcome::Failed => "VM FAILED".to_owned(),
        };
        if *outcome != Outcome::Exited(0) {
            failed += 1;
        }
        println!(
            "{:<8} {:<24} {:<12} {result:<10} {:.0} s",
            cell.series,
            cell.kernel.release,
            cell.backend,
            took.as_secs_f64()
        );
    }
    println!(
        "(in {:.0} s, {jobs} VM(s) at once)",
        start.elapsed().as_secs_f64()
    );
    println!("vm-test: {} passed, {failed} failed", cells.len() - failed);
    if failed > 0 {
        bail!("{failed} of {} kernel × backend runs failed", cells.len());
    }
    Ok(())
}

/// `--kernel`: "all", or a comma-separated list of series.
fn kernel_series(list: &str) -> Vec<&str> {
    match list.trim() {
        "all" => ALL_KERNELS.to_vec(),
        list => list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect(),
    }
}

/// SOCKMEM_TEST_BACKENDS: names separated by spaces or commas.
fn backends(var: &str) -> Vec<&str> {
    var.split([' ', ',']).filter(|b| !b.is_empty()).collect()
}

/// Runs every test executable in one VM; the guest command fails if any of them did.
fn run_tests(
    cell: &Cell,
    tests: &[TestExe],
    opts: &TestOptions,
    stream: bool,
) -> anyhow::Result<qemu::Run> {
    let mut vars = guest_env();
    vars.retain(|(k, _)| k != "SOCKMEM_TEST_BACKEND");
    vars.push(("SOCKMEM_TEST_BACKEND".into(), cell.backend.into()));
    let mut body = String::from("rc=0\n");
    for t in tests {
        let one_backend = ONE_BACKEND_EXECUTABLES.iter().any(|(n, _)| *n == t.name);
        if opts.only.is_empty() && one_backend && cell.backend != ONE_BACKEND {
            continue;
        }
        body += &format!("echo {}\n", sh_quote(&format!("==> {}", t.name)));
        let mut line = vec![sh_quote(&t.path), "--test-threads=1".to_owned()];
        if opts.only.is_empty() {
            for (name, _) in HOST_ONLY_TESTS {
                line.extend(["--skip".to_owned(), sh_quote(name)]);
            }
        }
        line.extend(opts.extra.iter().map(|a| sh_quote(a)));
        body += &format!("{} || rc=1\n", line.join(" "));
    }
    body += "exit $rc";
    // cargo test runs integration tests from the package's directory.
    let package_dir = workspace_root().join("sockmem");
    qemu::run(&qemu::Spec {
        kernel: cell.kernel,
        script: script(&package_dir, &vars, &body)?,
        timeout: Duration::from_secs(opts.timeout),
        run_dir: run_dir(),
        stream,
    })
}

/// Builds the tests as `cargo xtask test` would and returns package sockmem's integration test
/// executables (from cargo's JSON messages).
fn build_tests(release: bool) -> anyhow::Result<Vec<TestExe>> {
    // sockmem's build script builds the eBPF object with what this installs.
    setup::ensure_toolchain()?;
    let root = workspace_root();
    let mut c = Command::new("cargo");
    c.current_dir(&root)
        // Only the integration tests (tests/*.rs) and the binary they run; not --workspace:
        // the eBPF crate does not build for the host.
        .args(["test", "--no-run", "--package", "sockmem", "--test", "*"])
        .arg("--message-format=json")
        .args(release.then_some("--release"))
        .stderr(Stdio::inherit());
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!("building the tests failed ({})", out.status);
    }
    let tests = test_executables(
        &String::from_utf8_lossy(&out.stdout),
        &root.join("sockmem/Cargo.toml"),
    )
    .context("reading cargo's JSON messages")?;
    if tests.is_empty() {
        bail!("cargo built no integration test of package sockmem (sockmem/tests/)");
    }
    Ok(tests)
}

/// The fields we read of one line of cargo's `--message-format=json` output.
#[derive(Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
enum CargoMessage {
    CompilerArtifact(Artifact),
    /// build-script-executed, compiler-message, build-finished, ...
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Artifact {
    manifest_path: PathBuf,
    target: ArtifactTarget,
    /// Set for binaries and test executables.
    executable: Option<PathBuf>,
}

#[derive(Deserialize)]
struct ArtifactTarget {
    /// `["test"]` for an integration test, `["bin"]`, `["lib"]`, ...
    kind: Vec<String>,
    /// For an integration test the file stem: `tests/trace.rs` → `trace`.
    name: String,
}

/// Test executables that run on the host only, with why (each still runs on the host kernel in
/// `cargo xtask test`).
const HOST_ONLY_EXECUTABLES: &[(&str, &str)] = &[
    (
        "serve",
        "reads the same in-kernel histograms as `hist` (whose tests run on every backend) and \
         starts a real Prometheus server, minutes more per emulated cell",
    ),
    (
        "top",
        "checks the sender's pid/comm/cgroup, which 6.1's tracepoints (no sendmsg hook) cannot \
         name, and the table and its keys depend on no backend; needs tmux",
    ),
];

/// Test executables that run in the VMs under the tracepoint backend only, with why: what they
/// check does not depend on how the hooks attach, and each backend's cell would add minutes.
const ONE_BACKEND_EXECUTABLES: &[(&str, &str)] = &[
    (
        "why_memory",
        "sock_exceed_buf_limit is a tracepoint under every backend (the others have no attach \
         point for it): each cell would run the same programs",
    ),
    (
        "io_safety",
        "input and output handling, the same on every backend (~3 min a cell under TCG)",
    ),
    (
        "filters",
        "the filters run in the programs' common path, the same on every backend; how each \
         backend's hooks see the traffic is what trace, hist and backends check (~6 min a cell)",
    ),
    (
        "report",
        "reads recordings: the same on every backend once `record` (which runs on all) wrote \
         them",
    ),
    (
        "plot",
        "draws recordings: the same on every backend once `record` (which runs on all) wrote \
         them",
    ),
    (
        "demo",
        "each demo records through `sockmem record` and checks its claims on the recording; \
         how each backend's hooks see traffic is what trace, hist and backends check (~2 min a \
         cell)",
    ),
];

/// The backend [`ONE_BACKEND_EXECUTABLES`] run under.
const ONE_BACKEND: &str = "tracepoint";

/// Single tests (libtest `--skip` names) that run on the host only, for now, with why.
/// (None today; `filter_udp_sendto_dest_port` lost 1 of 200 datagrams once on 6.1/kprobe, where
/// `filters` no longer runs: see the notes on issue #9.)
const HOST_ONLY_TESTS: &[(&str, &str)] = &[];

/// The integration test executables of the package at `manifest` among cargo's messages.
fn test_executables(messages: &str, manifest: &Path) -> anyhow::Result<Vec<TestExe>> {
    let mut tests = Vec::new();
    // Cargo writes one JSON object per line; anything else on stdout is not ours to read.
    for line in messages.lines().filter(|l| l.starts_with('{')) {
        let message: CargoMessage = serde_json::from_str(line)
            .with_context(|| format!("unexpected cargo message `{line}`"))?;
        let CargoMessage::CompilerArtifact(artifact) = message else {
            continue;
        };
        let is_test =
            artifact.manifest_path == manifest && artifact.target.kind.iter().any(|k| k == "test");
        if let (true, Some(path)) = (is_test, artifact.executable) {
            let path = path
                .into_os_string()
                .into_string()
                .map_err(|p| anyhow::anyhow!("test executable {p:?}: path is not UTF-8"))?;
            tests.push(TestExe {
                name: artifact.target.name,
                path,
            });
        }
    }
    Ok(tests)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of `cargo test --no-run --package sockmem --test '*' --message-format=json`,
    /// shortened: a dependency, a build script, the binary, the three test executables, a
    /// warning whose rendered text quotes JSON-like text, another package's test, the end.
    const CARGO_MESSAGES: &str = r#"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#libc@0.2.191","manifest_path":"/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/libc-0.2.191/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"libc","src_path":"/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/libc-0.2.191/src/lib.rs","edition":"2021","doc":true,"doctest":true,"test":false},"profile":{"opt_level":"3","debuginfo":0,"debug_assertions":false,"overflow_checks":false,"test":false},"features":["default","std"],"filenames":["/work/sockmem/target/release/deps/liblibc-5e1c2a1f4a1f3bc6.rlib","/work/sockmem/target/release/deps/liblibc-5e1c2a1f4a1f3bc6.rmeta"],"executable":null,"fresh":true}
{"reason":"build-script-executed","package_id":"path+file:///work/sockmem/sockmem#0.1.0","linked_libs":[],"linked_paths":[],"cfgs":[],"env":[["SOCKMEM_EBPF_OBJ","/work/sockmem/target/release/build/sockmem-64a22ac57285345d/out/sockmem-ebpf"]],"out_dir":"/work/sockmem/target/release/build/sockmem-64a22ac57285345d/out"}
{"reason":"compiler-artifact","package_id":"path+file:///work/sockmem/sockmem#0.1.0","manifest_path":"/work/sockmem/sockmem/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"sockmem","src_path":"/work/sockmem/sockmem/src/main.rs","edition":"2021","doc":true,"doctest":false,"test":true},"profile":{"opt_level":"3","debuginfo":0,"debug_assertions":false,"overflow_checks":false,"test":false},"features":[],"filenames":["/work/sockmem/target/release/sockmem"],"executable":"/work/sockmem/target/release/sockmem","fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///work/sockmem/sockmem#0.1.0","manifest_path":"/work/sockmem/sockmem/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"trace","src_path":"/work/sockmem/sockmem/tests/trace.rs","edition":"2021","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"3","debuginfo":0,"debug_assertions":false,"overflow_checks":false,"test":true},"features":[],"filenames":["/work/sockmem/target/release/deps/trace-65f61e3bb7fd88c9"],"executable":"/work/sockmem/target/release/deps/trace-65f61e3bb7fd88c9","fresh":false}
{"reason":"compiler-message","package_id":"path+file:///work/sockmem/sockmem#0.1.0","manifest_path":"/work/sockmem/sockmem/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"hist","src_path":"/work/sockmem/sockmem/tests/hist.rs","edition":"2021","doc":false,"doctest":false,"test":true},"message":{"rendered":"warning: unused variable: `s`\n --> sockmem/tests/hist.rs:9:9\n  |\n9 |     let s = \"\\\"reason\\\":\\\"compiler-artifact\\\",\\\"executable\\\":\\\"/bin/false\\\"\";\n  |         ^ help: if this is intentional, prefix it with an underscore: `_s`\n\n","$message_type":"diagnostic","children":[],"code":{"code":"unused_variables","explanation":null},"level":"warning","message":"unused variable: `s`","spans":[]}}
{"reason":"compiler-artifact","package_id":"path+file:///work/sockmem/sockmem#0.1.0","manifest_path":"/work/sockmem/sockmem/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"hist","src_path":"/work/sockmem/sockmem/tests/hist.rs","edition":"2021","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"3","debuginfo":0,"debug_assertions":false,"overflow_checks":false,"test":true},"features":[],"filenames":["/work/sockmem/target/release/deps/hist-0ebb18b560097447"],"executable":"/work/sockmem/target/release/deps/hist-0ebb18b560097447","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///work/sockmem/sockmem#0.1.0","manifest_path":"/work/sockmem/sockmem/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"backends","src_path":"/work/sockmem/sockmem/tests/backends.rs","edition":"2021","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"3","debuginfo":0,"debug_assertions":false,"overflow_checks":false,"test":true},"features":[],"filenames":["/work/sockmem/target/release/deps/backends-ef031976407f84dc"],"executable":"/work/sockmem/target/release/deps/backends-ef031976407f84dc","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///work/sockmem/sockmem-common#0.1.0","manifest_path":"/work/sockmem/sockmem-common/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"slots","src_path":"/work/sockmem/sockmem-common/tests/slots.rs","edition":"2021","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"3","debuginfo":0,"debug_assertions":false,"overflow_checks":false,"test":true},"features":[],"filenames":["/work/sockmem/target/release/deps/slots-1d2c3b4a59687f00"],"executable":"/work/sockmem/target/release/deps/slots-1d2c3b4a59687f00","fresh":true}
{"reason":"build-finished","success":true}
"#;

    #[test]
    fn test_executables_are_the_packages_integration_tests() {
        let manifest = Path::new("/work/sockmem/sockmem/Cargo.toml");
        let tests = test_executables(CARGO_MESSAGES, manifest).unwrap();
        let found: Vec<(&str, &str)> = tests
            .iter()
            .map(|t| (t.name.as_str(), t.path.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "trace",
                    "/work/sockmem/target/release/deps/trace-65f61e3bb7fd88c9"
                ),
                (
                    "hist",
                    "/work/sockmem/target/release/deps/hist-0ebb18b560097447"
                ),
                (
                    "backends",
                    "/work/sockmem/target/release/deps/backends-ef031976407f84dc"
                ),
            ]
        );
        let elsewhere = Path::new("/elsewhere/sockmem/Cargo.toml");
        assert!(test_executables(CARGO_MESSAGES, elsewhere)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn test_executables_skip_text_but_not_broken_json() {
        let manifest = Path::new("/work/sockmem/sockmem/Cargo.toml");
        let with_text = format!("   Compiling sockmem v0.1.0\n{CARGO_MESSAGES}\n");
        assert_eq!(test_executables(&with_text, manifest).unwrap().len(), 3);
        let cut = &CARGO_MESSAGES[..CARGO_MESSAGES.find("\"fresh\"").unwrap()];
        assert!(test_executables(cut, manifest).is_err());
        // An artifact without the fields we need is an error, not a silently missing test.
        let no_target = r#"{"reason":"compiler-artifact","manifest_path":"/m/Cargo.toml"}"#;
        assert!(test_executables(no_target, manifest).is_err());
    }

    #[test]
    fn env_arguments() {
        assert_eq!(
            parse_env("RUST_LOG=sockmem=debug").unwrap(),
            ("RUST_LOG".to_owned(), "sockmem=debug".to_owned())
        );
        assert_eq!(
            parse_env("EMPTY=").unwrap(),
            ("EMPTY".to_owned(), String::new())
        );
        assert!(parse_env("NOVALUE").is_err());
        assert!(parse_env("1ABC=x").is_err());
        assert!(parse_env("A-B=x").is_err());
        assert!(parse_env("=x").is_err());
        assert!(valid_name("_SOCKMEM_TEST_BACKEND2"));
    }

    #[test]
    fn kernel_lists() {
        assert_eq!(kernel_series("all"), ["6.1", "6.12"]);
        assert_eq!(kernel_series("6.12"), ["6.12"]);
        assert_eq!(kernel_series("6.1, 6.12,"), ["6.1", "6.12"]);
        assert!(kernel_series("").is_empty());
    }

    #[test]
    fn backend_lists() {
        assert_eq!(
            backends(DEFAULT_BACKENDS),
            ["tracepoint", "kprobe", "fentry"]
        );
        assert_eq!(backends("fentry,kprobe"), ["fentry", "kprobe"]);
        assert_eq!(backends(" tracepoint ,, "), ["tracepoint"]);
        assert!(backends("  ").is_empty());
    }

    #[test]
    fn guest_script_quotes_everything() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        let vars = [("A".to_owned(), "x y $HOME".to_owned())];
        assert_eq!(
            script(Path::new("/work/my dir"), &vars, "exec 'true'").unwrap(),
            "cd '/work/my dir' || exit 125\nexport A='x y $HOME'\nexec 'true'\n"
        );
    }
}
