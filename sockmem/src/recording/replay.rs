//! `trace --input FILE`: a recording through `trace`'s own path (decode → names → filters →
//! per-socket deltas → sink), without loading any program.
//!
//! For a recorded run this prints what a live `trace --json` of the same run printed, except the
//! lines (and fields) that cannot be the same:
//!
//! - the header: `version` is the replaying sockmem's; `ring_size` is the recording's (`record`
//!   defaults to 16M);
//! - the summary: `elapsed_s` is how long the recording ran, `bpf_stats` its programs' cost
//!   (`record --stats`), and `lost` counts the whole recording even when filters are given here;
//! - against a live `trace` that ran beside `record`: that is another set of programs, so its
//!   `ts_ns`, `time_s`, durations, socket ids and snapshot instants are its own; its counters are
//!   read a few microseconds apart from the recording's (another CPU may change them in between:
//!   about one event in a few hundred differs); and events from two CPUs may reach its ring
//!   buffer in the other order (which changes those events' deltas).
//!
//! For the same records, the replay and a live `trace` print the same bytes (tested below).

use std::{
    io::{Read, Seek},
    path::Path,
};

use anyhow::Context as _;

use super::{
    format::Header,
    reader::{Item, Reader},
};
use crate::{
    cli::TraceArgs,
    pipeline::{
        filter::{nothing_matched, EventFilter},
        names::Names,
        trace::TracePipeline,
    },
    render::{background::Background, time::Clock, trace_sink, RunInfo, Sink, Summary},
    session,
};

pub fn run(args: &TraceArgs, input: &Path) -> anyhow::Result<()> {
    let what = || format!("reading the recording `{}`", input.display());
    let mut reader = super::open(input)?;
    let out = session::open_output(args.output.as_deref())?;
    let out = Background::new(out).context("starting the output's writing thread")?;
    // Time 0 and the wall clock are the recording's.
    let clock = Clock {
        mode: args.time,
        anchor: reader.header().anchor,
    };
    let sink = trace_sink(out, args.json, args.kernel_addrs, clock);
    let summary = replay(&mut reader, sink, EventFilter::new(&args.filters)?, &what())?;
    let (header, trailer) = (reader.header(), reader.trailer());
    // As `report`, `plot` and `export`: filters that let nothing through end with exit code 1.
    // What was written stays (the header and the summary, the recording's losses in it), as
    // `grep -c` still prints its 0.
    if summary.events == 0 && !args.filters.describe().is_empty() {
        return Err(nothing_matched(&args.filters, trailer.events));
    }
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

/// The recording through `trace`'s path into `sink`: header, events and snapshots, the socket
/// table, the summary.
/// `what` says what is being read, for errors.
fn replay<R: Read + Seek>(
    reader: &mut Reader<R>,
    mut sink: Box<dyn Sink>,
    filter: EventFilter,
    what: &str,
) -> anyhow::Result<Summary> {
    let header: Header = reader.header().clone();
    let trailer = reader.trailer().clone();
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
    let names = Names::recorded(
        &trailer.enums,
        &trailer.locations,
        trailer.attribution.as_ref(),
    );
    let mut pipe = TracePipeline::new(
        sink,
        header.anchor.monotonic_ns,
        attached,
        names,
        Some(filter),
    );
    while let Some(item) = reader.next_item().context(what.to_owned())? {
        match item {
            Item::Event(bytes) => pipe.record(bytes)?,
            Item::Snapshot(s) => {
                let snapshot = s
                    .to_snapshot()
                    .map_err(anyhow::Error::msg)
                    .context(what.to_owned())?;
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
        missed_per_hook: None,
        sockets: tracker.sockets(),
        elapsed_s: trailer.elapsed_s,
        bpf_stats: trailer.bpf_stats.clone(),
    };
    sink.summary(&summary)?;
    sink.finish()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{self, Cursor, Write},
        sync::{Arc, Mutex},
    };

    use sockmem_common::{event::FLAG_HAS_SKB, Hook, SockEvent};

    use super::*;
    use crate::{
        cli::FilterArgs,
        kernel::sock_diag::{Family, Protocol, SockMem},
        pipeline::decode::tests::raw_event,
        recording::{
            format::{
                ClockAnchor, RecordedEnum, RecordedFilters, RecordedHook, RecordedSnapshot, Trailer,
            },
            writer::Writer,
        },
        render::{json::JsonSink, Finish},
    };

    /// An output the test can read after the sink is gone.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Finish for Shared {
        fn finish(self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn bytes_of(raw: &SockEvent) -> Vec<u8> {
        let p = (raw as *const SockEvent).cast::<u8>();
        // SAFETY: plain old data, read whole.
        unsafe { std::slice::from_raw_parts(p, std::mem::size_of::<SockEvent>()) }.to_vec()
    }

    /// Two sockets' events: sendmsg, an skb through `veth0`, a drop with a reason and a place,
    /// the other socket's sendmsg, a socket event.
    fn records() -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        let mut t = 1_000_000_000;
        let mut at = |hook: Hook, f: &dyn Fn(&mut SockEvent)| {
            let mut raw = raw_event(hook);
            t += 1_000_000;
            raw.ts_ns = t;
            f(&mut raw);
            v.push(bytes_of(&raw));
        };
        at(Hook::TcpSendmsg, &|r| r.wmem_queued = 1000);
        at(Hook::QdiscEnqueue, &|r| {
            r.flags = FLAG_HAS_SKB;
            r.skb_len = 1500;
            r.ifname[..5].copy_from_slice(b"veth0");
        });
        at(Hook::SkbDrop, &|r| {
            r.flags = FLAG_HAS_SKB;
            (r.value, r.aux, r.duration_ns) = (2, 0xffff_ffff_8100_1000, 900);
        });
        at(Hook::TcpSendmsg, &|r| {
            (r.sock_id, r.lport, r.wmem_queued) = (0x402, 40001, 10)
        });
        at(Hook::TcpAck, &|r| r.wmem_queued = 0);
        v
    }

    #[test]
    fn a_replay_prints_what_the_live_path_printed_for_the_same_records() {
        let header = Header {
            sockmem_version: "0.1.0".into(),
            kernel: "6.18.0-test".into(),
            ring_size: 1 << 22,
            hooks: vec![
                RecordedHook {
                    hook: "tcp_sendmsg".into(),
                    backend: "fentry".into(),
                    attach: "tcp_sendmsg_locked".into(),
                    unavailable: None,
                },
                RecordedHook {
                    hook: "wmem_release".into(),
                    backend: String::new(),
                    attach: String::new(),
                    unavailable: Some("no kprobes".into()),
                },
            ],
            filters: RecordedFilters::default(),
            event_size: std::mem::size_of::<SockEvent>() as u32,
            anchor: ClockAnchor {
                realtime_ns: 1_764_000_000_000_000_000,
                monotonic_ns: 999_000_000,
            },
            snapshot_every_s: None,
        };
        let trailer = Trailer {
            lost_per_cpu: vec![1, 2],
            elapsed_s: 2.5,
            enums: vec![RecordedEnum {
                hook: "skb_drop".into(),
                values: vec![(2, "NOT_SPECIFIED".into())],
            }],
            locations: vec![(0xffff_ffff_8100_1000, "tcp_v4_rcv+0x1a".into())],
            ..Trailer::default()
        };
        let snapshot = RecordedSnapshot {
            time_ns: 1_002_500_000,
            sock_id: 0x301,
            netns: "this".into(),
            last: Some((1000, 4608)),
            agreement: "explained".into(),
            note: Some("still moving".into()),
            limit_output_bytes: Some(4 << 20),
            kernel: SockMem {
                ino: 123_456,
                family: Family::Ipv4,
                protocol: Protocol::Tcp,
                local: "198.18.0.1:40000".parse().unwrap(),
                remote: "198.18.0.2:5201".parse().unwrap(),
                state: 1,
                rmem_alloc: 0,
                rcvbuf: 131072,
                wmem_alloc: 4608,
                sndbuf: 87040,
                fwd_alloc: 0,
                wmem_queued: 1000,
                optmem: 0,
                backlog: 0,
                drops: 0,
                cookie: 77,
                uid: 0,
                tcp: None,
            },
        };
        let records = records();
        let mut w = Writer::new(Vec::new(), &header).unwrap();
        for (i, r) in records.iter().enumerate() {
            w.event(r).unwrap();
            if i == 1 {
                w.snapshot(&snapshot).unwrap();
            }
        }
        let file = w.finish(trailer.clone()).unwrap();

        // What `trace` does with the same records, live.
        let live = Shared::default();
        let mut sink: Box<dyn Sink> = Box::new(JsonSink::new(live.clone(), false));
        sink.header(&RunInfo {
            kernel: header.kernel.clone(),
            ring_size: header.ring_size,
            hooks: header.hooks.iter().map(|h| h.to_line()).collect(),
        })
        .unwrap();
        let mut pipe = TracePipeline::new(
            sink,
            header.anchor.monotonic_ns,
            [Hook::TcpSendmsg].into_iter().collect(),
            Names::recorded(
                &trailer.enums,
                &trailer.locations,
                trailer.attribution.as_ref(),
            ),
            None,
        );
        for (i, r) in records.iter().enumerate() {
            pipe.record(r).unwrap();
            if i == 1 {
                pipe.put_snapshot(snapshot.to_snapshot().unwrap(), snapshot.time_ns)
                    .unwrap();
            }
        }
        pipe.socket_table().unwrap();
        let summary = Summary {
            events: pipe.events,
            lost: 3,
            lost_per_cpu: vec![1, 2],
            missed_per_hook: None,
            sockets: pipe.tracker.sockets(),
            elapsed_s: 2.5,
            bpf_stats: None,
        };
        pipe.sink.summary(&summary).unwrap();
        pipe.sink.finish().unwrap();

        let replayed = Shared::default();
        let mut reader = Reader::open(Cursor::new(&file[..])).unwrap();
        let sink = Box::new(JsonSink::new(replayed.clone(), false));
        let got = replay(&mut reader, sink, EventFilter::default(), "test").unwrap();
        assert_eq!(got.events, 5);
        let text = replayed.text();
        assert_eq!(text, live.text());
        for word in [
            "NOT_SPECIFIED",
            "tcp_v4_rcv+0x1a",
            "\"type\":\"snapshot\"",
            "still moving",
        ] {
            assert!(text.contains(word), "{word} in:\n{text}");
        }

        // A filter after the fact: the second socket only (its snapshot-less socket line too).
        let only = Shared::default();
        let mut reader = Reader::open(Cursor::new(&file[..])).unwrap();
        let filter = EventFilter::new(&FilterArgs {
            port: vec![40001],
            ..FilterArgs::default()
        })
        .unwrap();
        let got = replay(
            &mut reader,
            Box::new(JsonSink::new(only.clone(), false)),
            filter,
            "t",
        );
        assert_eq!(got.unwrap().events, 1);
        let text = only.text();
        assert!(!text.contains("\"type\":\"snapshot\""), "{text}");
        assert_eq!(text.matches("\"type\":\"socket\"").count(), 1, "{text}");
    }
}
