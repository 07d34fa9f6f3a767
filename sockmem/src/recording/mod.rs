//! Recordings: `sockmem record` writes every raw event of a `trace` run, and the kernel's view
//! of the traced sockets, to a file; `sockmem trace --input` replays one through `trace`'s own
//! output path.
//!
//! The file (little endian throughout):
//!
//! ```text
//! "SOCKMEMR"  format version (u16)
//! frame*      kind (u8)  payload length (u32)  payload
//! footer      offset of the trailer frame (u64)  "SOCKMEND"
//! ```
//!
//! The first frame is the header (JSON, [`format::Header`]: sockmem version, kernel release,
//! hooks and backends, filters, the `SockEvent` size, and a CLOCK_REALTIME/CLOCK_MONOTONIC
//! anchor for the events' monotonic timestamps). Then, in the order they happened, event frames
//! (one raw `SockEvent` each, as the ring buffer held it) and snapshot frames (JSON,
//! [`format::RecordedSnapshot`]: one socket as sock_diag reported it). The last frame is the
//! trailer (JSON, [`format::Trailer`]: counts, events lost per CPU, and the names decoding
//! needs from the recording machine: `skb_drop_reason` enumerators, `symbol+offset` of drop
//! sites), found through the footer. A file without its footer is truncated; a newer format
//! version is refused by name. Event payloads carry no checksum: a bit flipped inside one gives a
//! wrong value, or an event `trace` skips as undecodable; everything else is checked.
pub mod format;
pub mod reader;
pub mod recorder;
pub mod replay;
pub mod writer;

use std::{fs::File, io::BufReader, path::Path};

use anyhow::Context as _;

/// Opens the recording at `input` for reading (`trace --input`, `report`, `plot`, `export`): a
/// regular file whose preamble, header and trailer check out. One without its trailer (a
/// killed `record`) is read up to where it ends, with a warning that says what is missing.
pub fn open(input: &Path) -> anyhow::Result<reader::Reader<BufReader<File>>> {
    let what = || format!("reading the recording `{}`", input.display());
    let meta = match std::fs::metadata(input) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let hint = match left_by_a_killed_record(input) {
                Some(p) => format!(
                    "; a `record` to it that was killed left what it wrote in `{}`: read that \
                     file",
                    p.display()
                ),
                None => String::new(),
            };
            return Err(anyhow::Error::new(e).context(format!("{}{hint}", what())));
        }
        m => m.with_context(what)?,
    };
    if !meta.is_file() {
        anyhow::bail!(
            "`{}` is not a regular file; a recording is written by `sockmem record -o FILE`",
            input.display()
        );
    }
    let file = File::open(input).with_context(what)?;
    let reader =
        reader::Reader::open(BufReader::with_capacity(1 << 20, file)).with_context(what)?;
    if let Some(w) = reader.truncation_warning(input) {
        eprintln!("sockmem: WARNING: {w}");
    }
    Ok(reader)
}

/// `record -o FILE` writes `.FILE.sockmem-PID-N.tmp` beside it and renames it to FILE when the
/// run ends (see `output`); a run killed with SIGKILL leaves that file. The newest such file
/// for `path`, if any.
fn left_by_a_killed_record(path: &Path) -> Option<std::path::PathBuf> {
    let name = path.file_name()?.to_str()?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!(".{name}.sockmem-");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".tmp"))
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
}
