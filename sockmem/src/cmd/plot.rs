//! `sockmem plot FILE -o OUT.svg|OUT.png`: a recording's sockets as stacked panels (see
//! `render::plot`).

use crate::{
    cli::PlotArgs,
    pipeline::{filter::nothing_matched, timeline::Timeline},
    render::plot::{Format, Plot},
};

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    // A bad name is said before the recording is read.
    Format::of(&args.output)?;
    crate::output::refuse_input(&args.output, &args.input)?;
    let timeline = Timeline::read(&args.input, &args.filters)?;
    if timeline.sockets.is_empty() {
        return Err(nothing_matched(&args.filters, timeline.recorded_events));
    }
    let source = args
        .input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let plot = Plot::choose(&timeline, &args.sockets, args.panels.into(), source)?;
    plot.save(&args.output)?;
    let (w, h) = plot.size();
    eprintln!(
        "sockmem: plotted {} socket{} to `{}` ({w}×{h}){}",
        plot.panels.len(),
        if plot.panels.len() == 1 { "" } else { "s" },
        args.output.display(),
        match plot.left_out {
            0 => String::new(),
            n => format!("; {n} more not shown (--socket ID, --panels N)"),
        }
    );
    Ok(())
}
