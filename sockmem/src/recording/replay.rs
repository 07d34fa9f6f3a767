//! `trace --input FILE`: a recording through `trace`'s own path (decode → names → filters →
//! per-socket deltas → sink), without loading any program.
//!
//! For a run both recorded and traced live (`trace --json`), the output is the live one's, line
//! for line, except what cannot be the same:
//!
//! - the header's `version` is the replaying sockmem's, not the recorder's;
//! - the summary's `elapsed_s` is how long the recording ran, and its `bpf_stats` (`record
//!   --stats`) the recording's programs' cost;
//! - events, snapshots and socket ids are those of the recording's own programs: a live `trace`
//!   beside it has its own socket ids, timestamps a few microseconds off, and its snapshots at
//!   other instants;
//! - with filters given here, the summary's `lost` is still the whole recording's.

use std::{fs::File, io::BufReader, path::Path};

use anyhow::Context as _;

use super::{
    format::Header,
    reader::{Item, Reader},
};
use crate::{
    cli::TraceArgs,
    pipeline::{filter::EventFilter, names::Names, trace::TracePipeline},
    render::{background::Background, json::JsonSink, text::TextSink, RunInfo, Sink, Summary},
    session,
};

pub fn run(args: &TraceArgs, input: &Path) -> anyhow::Result<()> {
    let what = || format!("reading the recording `{}`", input.display());
    let meta = std::fs::metadata(input).with_context(what)?;
    if !meta.is_file() {
        anyhow::bail!(
            "`{}` is not a regular file; --input takes a recording (`sockmem record -o FILE`)",
            input.display()
        );
    }
    let file = File::open(input).with_context(what)?;
    let mut reader = Reader::open(BufReader::with_capacity(1 << 20, file)).with_context(what)?;
    let out = session::open_output(args.output.as_deref())?;
    let out = Background::new(out).context("starting the output's writing thread")?;
    let mut sink: Box<dyn Sink> = if args.json {
        Box::new(JsonSink::new(out, args.kernel_addrs))
    } else {
        Box::new(TextSink::new(out))
    };
    let header: Header = reader.header().clone();
    let hooks: Vec<_> = header.hooks.iter().map(|h| h.to_line()).collect();
    let attached = hooks
        .iter()
        .filter(|h| h.unavailable.is_none())
        .filter_map(|h| sockmem_common::registry::hooks().find(|s| s.hook.name() == h.hook))
        .map(|s| s.hook)
        .collect();
    sink.header(&RunInfo {
        kernel: header.kernel.clone(),
        ring_size: header.ring_size,
        hooks,
    })?;
    let trailer = reader.trailer().clone();
    let names = Names::recorded(&trailer.enums, &trailer.locations);
    let mut pipe = TracePipeline::new(
        sink,
        header.anchor.monotonic_ns,
        attached,
        names,
        Some(EventFilter::new(&args.filters)),
    );
    while let Some(item) = reader.next_item().with_context(what)? {
        match item {
            Item::Event(bytes) => pipe.record(bytes)?,
            Item::Snapshot(s) => {
                let snapshot = s
                    .to_snapshot()
                    .map_err(anyhow::Error::msg)
                    .with_context(what)?;
                pipe.put_snapshot(snapshot, s.time_ns)?;
            }
        }
    }
    pipe.socket_table()?;
    let TracePipeline {
        tracker,
        mut sink,
        events,
        ..
    } = pipe;
    let summary = Summary {
        events,
        lost: trailer.lost_per_cpu.iter().sum(),
        lost_per_cpu: trailer.lost_per_cpu.clone(),
        sockets: tracker.sockets(),
        elapsed_s: trailer.elapsed_s,
        bpf_stats: trailer.bpf_stats.clone(),
    };
    sink.summary(&summary)?;
    sink.finish()?;
    eprintln!(
        "sockmem: replayed {} of {} recorded events from {} sockets ({:.1} s recorded with \
         sockmem {} on kernel {}), {} lost",
        summary.events,
        trailer.events,
        summary.sockets,
        summary.elapsed_s,
        header.sockmem_version,
        header.kernel,
        summary.lost
    );
    Ok(())
}
