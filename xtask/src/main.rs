//! Project automation: `cargo xtask <command>`.
//!
//! Sets up the eBPF toolchain (nightly rust-src, bpf-linker against the nightly sysroot's own
//! libLLVM), builds the eBPF object and the userspace binary that embeds it, runs it as root,
//! and runs the tests.
mod bench;
mod build;
mod packages;
mod setup;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, run and test sockmem")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building the eBPF programs needs (idempotent).
    Setup,
    /// Build the eBPF object and the sockmem binary (release).
    Build {
        /// Build the userspace binary in debug mode.
        #[arg(long)]
        debug: bool,
    },
    /// Build, then run sockmem as root with the given arguments.
    Run {
        /// Build the userspace binary in debug mode.
        #[arg(long)]
        debug: bool,
        /// Arguments for sockmem, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then run fmt and clippy checks, every test on this kernel (unit and integration:
    /// needs root), then the integration tests in VMs on Debian's 6.1 and 6.12 (`vm-test`).
    Test {
        /// Only this machine's kernel: skip the VM matrix.
        #[arg(long)]
        host: bool,
        /// Extra arguments for `cargo test`, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a command as root in a VM booting a Debian kernel (qemu), the host's files visible.
    ///
    /// Exits with the command's exit code; 124 on timeout, 125 when the VM could not run it.
    VmRun {
        /// Kernel series: 6.1 or 6.12 (the newest Debian package of that series).
        #[arg(long)]
        kernel: String,
        /// Seconds before the VM is killed.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// Set a variable in the guest (SOCKMEM_* and RUST_* pass through anyway).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// The command and its arguments, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Build the integration tests, then run them in VMs: each kernel × each backend of
    /// SOCKMEM_TEST_BACKENDS (default: tracepoint kprobe fentry).
    VmTest {
        /// Kernel series: 6.1, 6.12, a comma-separated list, or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Seconds before one VM (one kernel × backend) is killed.
        #[arg(long, default_value_t = 1500)]
        timeout: u64,
        /// Build the tests unoptimized (they run about twice as long under TCG).
        #[arg(long)]
        debug: bool,
        /// How many VMs to run at once (each uses about one core; default: one per core).
        /// With more than one, each run's output is printed whole when it ends.
        #[arg(long, short)]
        jobs: Option<usize>,
        /// Run only these test executables (tests/NAME.rs), host-only ones included.
        #[arg(long, value_delimiter = ',')]
        tests: Vec<String>,
        /// Extra arguments for the test executables, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure what tracing costs: iperf3 over a veth pair with no tracer, with sockmem's modes
    /// and with bpftrace doing the same, in interleaved rounds; prints a table and the goals.
    ///
    /// Needs root; installs iperf3, bpftrace and bpftool with apt when missing. Every figure
    /// also goes to target/bench/ as JSON (a timestamped file and latest.json).
    Bench {
        /// Rounds: every mode runs once per round, in turn.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds of traffic per mode and round.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// unlimited (one stream, pfifo), queued (tbf 500 Mbit/s), or all.
        #[arg(long, value_enum, default_value = "all")]
        workload: bench::WorkloadArg,
        /// Comma-separated modes (default: all), run in the order listed below.
        #[arg(long, value_enum, value_delimiter = ',')]
        modes: Vec<bench::Mode>,
    },
}

/// The host suite, then (unless `host_only`) every backend on the distribution kernels: the
/// backends this kernel cannot run.
fn test(host_only: bool, args: &[String]) -> anyhow::Result<()> {
    build::test(args)?;
    if host_only {
        return Ok(());
    }
    vm::test_cli(&vm::TestOptions {
        kernels: "all",
        timeout: 1500,
        release: true,
        jobs: None,
        only: &[],
        extra: &[],
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::ensure_toolchain(),
        Command::Build { debug } => build::build_all(!debug).map(|_| ()),
        Command::Run { debug, args } => build::run(!debug, &args),
        Command::Test { host, args } => test(host, &args),
        Command::VmRun {
            kernel,
            timeout,
            env,
            command,
        } => vm::run_cli(&kernel, timeout, &env, &command),
        Command::VmTest {
            kernel,
            timeout,
            debug,
            jobs,
            tests,
            args,
        } => vm::test_cli(&vm::TestOptions {
            kernels: &kernel,
            timeout,
            release: !debug,
            jobs,
            only: &tests,
            extra: &args,
        }),
        Command::Bench {
            rounds,
            seconds,
            workload,
            modes,
        } => bench::run(&bench::Options {
            rounds,
            seconds,
            workload,
            modes,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
