//! Output written on a thread of its own, so that a slow `write(2)` (page-cache writeback to a
//! busy disk can block for hundreds of ms) never stops `trace` from draining the ring buffer:
//! at full rate a 4 MiB ring is full in about 200 ms, and every event after that is lost.

use std::{
    io::{self, Write},
    mem,
    sync::mpsc::{sync_channel, Receiver, SyncSender},
    thread::{self, JoinHandle},
};

use super::Finish;

/// Bytes collected before they go to the writing thread.
const CHUNK_BYTES: usize = 256 << 10;
/// Chunks that may wait for the writing thread (64 MiB, over a second of `trace --json` at full
/// rate); past that, writing blocks as it would without the thread.
const CHUNKS_QUEUED: usize = 256;

/// A `Write` that hands its bytes in chunks to a thread writing them to `W`.
pub struct Background<W: Finish + Send + 'static> {
    chunk: Vec<u8>,
    /// `None` once the thread is gone (finished, or stopped by an error).
    tx: Option<SyncSender<Chunk>>,
    thread: Option<JoinHandle<io::Result<W>>>,
}

enum Chunk {
    /// Write these bytes.
    Data(Vec<u8>),
    /// Write these bytes and flush: the caller wants them visible.
    Flush(Vec<u8>),
}

impl<W: Finish + Send + 'static> Background<W> {
    pub fn new(out: W) -> io::Result<Self> {
        let (tx, rx) = sync_channel(CHUNKS_QUEUED);
        let thread = thread::Builder::new()
            .name("sockmem-writer".into())
            .spawn(move || write_chunks(out, rx))?;
        Ok(Background {
            chunk: Vec::with_capacity(CHUNK_BYTES),
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&mut self, make: fn(Vec<u8>) -> Chunk) -> io::Result<()> {
        let data = mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_BYTES));
        let sent = match &self.tx {
            Some(tx) => tx.send(make(data)).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread stopped on a write error: that error is the answer (a closed pipe stays
        // recognisable as one).
        self.tx = None;
        match self.join() {
            Err(e) => Err(e),
            Ok(_) => Err(io::Error::other("the output's writing thread has stopped")),
        }
    }

    fn join(&mut self) -> io::Result<W> {
        let thread = self
            .thread
            .take()
            .ok_or_else(|| io::Error::other("the output's writing thread has stopped"))?;
        thread
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

fn write_chunks<W: Write>(mut out: W, rx: Receiver<Chunk>) -> io::Result<W> {
    for chunk in rx {
        match chunk {
            Chunk::Data(d) => out.write_all(&d)?,
            Chunk::Flush(d) => {
                out.write_all(&d)?;
                out.flush()?;
            }
        }
    }
    Ok(out)
}

impl<W: Finish + Send + 'static> Write for Background<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.chunk.extend_from_slice(buf);
        if self.chunk.len() >= CHUNK_BYTES {
            self.send(Chunk::Data)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send(Chunk::Flush)
    }
}

impl<W: Finish + Send + 'static> Finish for Background<W> {
    /// Everything written, then the output completed (a file put in place).
    fn finish(mut self) -> io::Result<()> {
        self.send(Chunk::Flush)?;
        // Closing the channel ends the thread once it has written the rest.
        self.tx = None;
        self.join()?.finish()
    }
}

impl<W: Finish + Send + 'static> Drop for Background<W> {
    fn drop(&mut self) {
        // Not finished (an error): let the thread end; `W`'s own drop cleans up.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `Finish` that records what reached it, and whether it was finished.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<(Vec<u8>, bool)>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Finish for Recorder {
        fn finish(self) -> io::Result<()> {
            self.0.lock().unwrap().1 = true;
            Ok(())
        }
    }

    #[test]
    fn every_byte_arrives_in_order_and_flush_makes_it_visible() {
        let rec = Recorder::default();
        let mut w = Background::new(rec.clone()).unwrap();
        w.write_all(b"first\n").unwrap();
        w.flush().unwrap();
        // The thread writes it soon after.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while rec.0.lock().unwrap().0.is_empty() && std::time::Instant::now() < deadline {
            thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(rec.0.lock().unwrap().0, b"first\n");
        let mut want = b"first\n".to_vec();
        for i in 0..100_000u32 {
            let line = format!("{i}\n");
            w.write_all(line.as_bytes()).unwrap();
            want.extend_from_slice(line.as_bytes());
        }
        w.finish().unwrap();
        let got = rec.0.lock().unwrap();
        assert!(got.1, "the inner output was finished");
        assert!(got.0 == want, "{} bytes, want {}", got.0.len(), want.len());
    }

    #[test]
    fn a_write_error_comes_back_with_its_kind() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Finish for Closed {
            fn finish(self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = Background::new(Closed).unwrap();
        w.write_all(b"x").unwrap();
        // The first flush may still be queued; a later one sees the thread gone.
        let err = (0..1000)
            .find_map(|_| {
                thread::sleep(std::time::Duration::from_millis(1));
                w.flush().err()
            })
            .expect("the error comes back");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
