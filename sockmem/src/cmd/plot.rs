//! `sockmem plot FILE -o OUT.svg|OUT.png`: a recording's sockets as stacked panels (see
//! `render::plot`).

use std::io::Write as _;

use crate::{
    cli::PlotArgs,
    output::OutputFile,
    pipeline::timeline::Timeline,
    render::plot::{Format, Plot},
};

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let format = Format::of(&args.output)?;
    let timeline = Timeline::read(&args.input, &args.filters)?;
    let source = args
        .input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let plot = Plot::choose(&timeline, &args.sockets, args.panels.into(), source)?;
    let bytes = match format {
        Format::Svg => plot.svg()?.into_bytes(),
        Format::Png => plot.png()?,
    };
    let mut out = OutputFile::create(&args.output)?;
    out.write_all(&bytes)?;
    out.commit()?;
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
