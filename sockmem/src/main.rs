//! sockmem: where do a socket's send bytes sit, and for how long?
mod attach;
mod cli;
mod cmd;
mod demo;
mod exporter;
mod kernel;
mod output;
mod pipeline;
mod recording;
mod render;
mod session;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Usage errors exit with code 2 from here.
    let cli = cli::Cli::parse_valid();
    let result = match cli.command {
        cli::Command::Trace(args) => cmd::trace::run(args),
        cli::Command::Hist(args) => cmd::hist::run(args),
        cli::Command::Why(args) => cmd::why::run(args),
        cli::Command::Top(args) => cmd::top::run(args),
        cli::Command::Record(args) => cmd::record::run(args),
        cli::Command::Report(args) => cmd::report::run(args),
        cli::Command::Demo(args) => cmd::demo::run(args),
        cli::Command::Probe(args) => cmd::probe::run(args),
        cli::Command::Plot(args) => cmd::plot::run(args),
        cli::Command::Export(args) => cmd::export::run(args),
        cli::Command::Serve(args) => cmd::serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `sockmem trace | head`: the reader left, which is not a failure.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockmem: {e:#}");
            // A value only the machine could judge (an unknown interface, say) is a usage
            // error like clap's: exit code 2.
            match e.chain().any(|c| c.is::<cli::UsageError>()) {
                true => ExitCode::from(2),
                false => ExitCode::FAILURE,
            }
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
