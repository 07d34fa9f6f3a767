//! `sockmem report FILE`: a recording summed up per socket (or group), with `hist`'s histograms
//! on request. Reads the file through the recording reader, applies the filters as `trace
//! --input` does, and hands the events to the report's collector; no program is loaded.

use anyhow::Context as _;

use crate::{
    cli::ReportArgs,
    pipeline::{
        filter::{nothing_matched, EventFilter},
        report::Collector,
    },
    recording,
    render::{
        report::{write_report_json, write_report_text, Context},
        Finish as _,
    },
    session,
};

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let what = || format!("reading the recording `{}`", args.input.display());
    let mut reader = recording::open(&args.input)?;
    let mut out = session::open_output(args.output.as_deref())?;
    let mut filter = EventFilter::new(&args.filters)?;
    let mut collector = Collector::new(args.hist);
    let undecodable = collector
        .read(&mut reader, &mut filter)
        .with_context(what)?;
    if undecodable > 0 {
        eprintln!("sockmem: skipped {undecodable} events that could not be decoded");
    }
    let events = collector.events;
    // Said before anything is written, as grep says no match. An empty recording without
    // filters is still reported: its header says what the run was.
    if events == 0 && !args.filters.describe().is_empty() {
        return Err(nothing_matched(&args.filters, reader.trailer().events));
    }
    let group_by = args.group_by.unwrap_or_default();
    let summary = collector.finish(group_by, args.group_by.is_some());
    let file = args.input.display().to_string();
    let ctx = Context {
        file: &file,
        header: reader.header(),
        trailer: reader.trailer(),
        group_by,
        filters: (&args.filters).into(),
        events,
    };
    if args.json {
        write_report_json(&mut out, &ctx, &summary)?;
    } else {
        write_report_text(&mut out, &ctx, &summary)?;
    }
    out.finish().context("writing the report")?;
    let lost: u64 = ctx.trailer.lost_per_cpu.iter().sum();
    if lost > 0 {
        eprintln!("sockmem: warning: the recording lost {lost} events: the report undercounts");
    }
    Ok(())
}
