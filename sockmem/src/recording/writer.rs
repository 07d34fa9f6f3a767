//! Writes a recording to any `io::Write` (for `record`: a [`Background`] writer over the output
//! file, so that a slow disk never stops the ring buffer being drained; its chunks are large).
//!
//! [`Background`]: crate::render::background::Background

use std::io::{self, Write};

use bytes::BytesMut;

use super::format::{self, Header, Kind, RecordedSnapshot, Trailer};

pub struct Writer<W: Write> {
    out: W,
    /// The frame being put together (reused: an event costs no allocation).
    frame: BytesMut,
    /// Bytes written so far: where the next frame starts.
    offset: u64,
    events: u64,
    snapshots: u64,
}

impl<W: Write> Writer<W> {
    /// Writes the magic, the format version and the header.
    pub fn new(mut out: W, header: &Header) -> io::Result<Writer<W>> {
        let preamble = format::preamble();
        out.write_all(&preamble)?;
        let mut w = Writer {
            out,
            frame: BytesMut::with_capacity(1024),
            offset: preamble.len() as u64,
            events: 0,
            snapshots: 0,
        };
        w.json(Kind::Header, header)?;
        Ok(w)
    }

    fn write_frame(&mut self, kind: Kind, payload: &[u8]) -> io::Result<()> {
        self.frame.clear();
        format::put_frame(&mut self.frame, kind, payload);
        self.out.write_all(&self.frame)?;
        self.offset += self.frame.len() as u64;
        Ok(())
    }

    fn json<T: serde::Serialize>(&mut self, kind: Kind, value: &T) -> io::Result<()> {
        let payload = serde_json::to_vec(value)?;
        if payload.len() > format::MAX_META_BYTES as usize {
            return Err(io::Error::other(format!(
                "a recording's {kind:?} frame would be {} bytes, more than a reader accepts",
                payload.len()
            )));
        }
        self.write_frame(kind, &payload)
    }

    /// One raw ring-buffer record, as it is.
    pub fn event(&mut self, raw: &[u8]) -> io::Result<()> {
        self.events += 1;
        self.write_frame(Kind::Event, raw)
    }

    pub fn snapshot(&mut self, s: &RecordedSnapshot) -> io::Result<()> {
        self.snapshots += 1;
        self.json(Kind::Snapshot, s)
    }

    /// What was written so far, to the file: a killed `record` leaves it readable.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// Writes the trailer (its counts set to what was written) and the footer, flushes, and
    /// hands back the output for its last step.
    pub fn finish(mut self, mut trailer: Trailer) -> io::Result<W> {
        trailer.events = self.events;
        trailer.snapshots = self.snapshots;
        let at = self.offset;
        self.json(Kind::Trailer, &trailer)?;
        self.out.write_all(&format::footer(at))?;
        self.out.flush()?;
        Ok(self.out)
    }
}
