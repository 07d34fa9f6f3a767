//! One file per subcommand, each a thin layer over the shared session, pipeline and sinks.
pub mod demo;
pub mod export;
pub mod hist;
pub mod plot;
pub mod probe;
pub mod record;
pub mod report;
pub mod serve;
pub mod top;
pub mod trace;
pub mod why;
