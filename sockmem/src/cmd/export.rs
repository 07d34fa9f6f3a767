//! `sockmem export FILE --perfetto OUT.json`: a recording as Chrome trace-event JSON (see
//! `render::perfetto`).

use anyhow::Context as _;

use crate::{
    cli::ExportArgs,
    output::OutputFile,
    pipeline::{filter::nothing_matched, timeline::Timeline},
    render::perfetto,
};

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    crate::output::refuse_input(&args.perfetto, &args.input)?;
    let timeline = Timeline::read(&args.input, &args.filters)?;
    if timeline.sockets.is_empty() {
        return Err(nothing_matched(&args.filters, timeline.recorded_events));
    }
    let mut out = OutputFile::create(&args.perfetto)?;
    let counts = perfetto::write(&timeline, &mut out)
        .with_context(|| format!("writing `{}`", args.perfetto.display()))?;
    out.commit()?;
    eprintln!(
        "sockmem: exported {} trace events of {} sockets in {} processes to `{}`",
        counts.events,
        timeline.sockets.len(),
        counts.processes,
        args.perfetto.display()
    );
    Ok(())
}
