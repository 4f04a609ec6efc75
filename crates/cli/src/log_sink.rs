//! Log output to stderr. The access log (one line per request, target
//! `teeserve_serving::access`) is gathered and written in batches: at most [`DELAY`] after the
//! first waiting line, or at once when [`BATCH`] bytes wait, so a busy server spends no system
//! call per request on its log (inside a TEE every system call leaves the enclave). Every other
//! line is written at once, after the access lines before it, and [`flush`] writes what waits
//! before the process exits. A process killed without warning loses at most the last
//! [`DELAY`] of access lines.

use std::io::Write as _;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// The longest an access line waits.
pub const DELAY: Duration = Duration::from_millis(100);
/// Written at once when this many bytes wait.
const BATCH: usize = 32 * 1024;
/// The access log's target.
pub const ACCESS: &str = "teeserve_serving::access";

/// Lines waiting to be written, and the flusher's wake-up.
struct Pending {
    lines: Mutex<Vec<u8>>,
    waiting: Condvar,
}

fn pending() -> &'static Pending {
    static PENDING: OnceLock<Pending> = OnceLock::new();
    PENDING.get_or_init(|| {
        // The flusher: asleep while nothing waits; once a line waits, it writes everything
        // that joined within DELAY in one go.
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(|| loop {
                let p = pending();
                let Ok(mut lines) = p.lines.lock() else {
                    return;
                };
                while lines.is_empty() {
                    lines = match p.waiting.wait(lines) {
                        Ok(l) => l,
                        Err(_) => return,
                    };
                }
                drop(lines);
                std::thread::sleep(DELAY);
                flush();
            })
            .ok();
        Pending {
            lines: Mutex::new(Vec::with_capacity(BATCH)),
            waiting: Condvar::new(),
        }
    })
}

/// Writes the waiting access lines now.
pub fn flush() {
    let _ = write_after_waiting(&[]);
}

/// Writes the waiting access lines, then `line`. stderr is taken before the batch (always in
/// that order), so that lines taken from the batch are written before any taken after them.
fn write_after_waiting(line: &[u8]) -> std::io::Result<()> {
    let mut err = std::io::stderr().lock();
    let waiting = pending()
        .lines
        .lock()
        .map(|mut lines| std::mem::take(&mut *lines))
        .unwrap_or_default();
    if !waiting.is_empty() {
        err.write_all(&waiting)?;
    }
    if !line.is_empty() {
        err.write_all(line)?;
    }
    Ok(())
}

/// The `MakeWriter` of the log: access lines to the batch, others straight to stderr.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sink;

/// Where one event's line goes.
pub enum LineWriter {
    /// An access line, into the batch.
    Access,
    /// Any other line: the waiting access lines first, then this one.
    Direct,
}

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            LineWriter::Access => {
                let p = pending();
                let full = match p.lines.lock() {
                    Ok(mut lines) => {
                        let first = lines.is_empty();
                        lines.extend_from_slice(buf);
                        if first {
                            p.waiting.notify_one();
                        }
                        lines.len() >= BATCH
                    }
                    // A poisoned batch: write through rather than lose the line.
                    Err(_) => return std::io::stderr().lock().write_all(buf).map(|_| buf.len()),
                };
                if full {
                    write_after_waiting(&[])?;
                }
            }
            LineWriter::Direct => write_after_waiting(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter::Direct
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        if meta.target() == ACCESS && *meta.level() >= tracing::Level::INFO {
            LineWriter::Access
        } else {
            LineWriter::Direct
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_wait_and_other_lines_go_at_once_after_them() {
        let mut w = LineWriter::Access;
        w.write_all(b"access 1\n").unwrap();
        assert_eq!(pending().lines.lock().unwrap().as_slice(), b"access 1\n");
        // Any other line takes the waiting access lines with it, in order.
        LineWriter::Direct.write_all(b"other\n").unwrap();
        assert!(pending().lines.lock().unwrap().is_empty());
        // A full batch is written at once.
        let big = vec![b'x'; BATCH];
        LineWriter::Access.write_all(&big).unwrap();
        assert!(pending().lines.lock().unwrap().is_empty());
    }
}
