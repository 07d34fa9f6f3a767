//! Project automation: `cargo xtask <command>`.
//!
//! Sets up the eBPF toolchain (nightly rust-src, bpf-linker against the nightly sysroot's own
//! libLLVM), builds the eBPF object and the userspace binary that embeds it, runs it as root,
//! and runs the tests.
mod build;
mod setup;

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
    /// Build, then run every test (unit and integration: needs root) plus fmt and clippy checks.
    Test {
        /// Extra arguments for `cargo test`, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::ensure_toolchain(),
        Command::Build { debug } => build::build_all(!debug).map(|_| ()),
        Command::Run { debug, args } => build::run(!debug, &args),
        Command::Test { args } => build::test(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
