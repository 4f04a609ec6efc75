//! Work on a large message, done where it does not hold other connections up.
//!
//! tokio runs every connection's tasks on a few worker threads (the I/O threads). Decoding a
//! request that expands to 128 MB, or encoding a 25 MB answer, on one of them keeps every other
//! task of that thread waiting for as long, and with two such requests in flight a stranger's
//! one-millisecond request waited for all of them. Past [`HEAVY_BYTES`] the work runs in
//! `tokio::task::block_in_place`: the thread gives its place among the workers to another
//! thread for the length of the work, so the other connections go on, and the operating
//! system's scheduler shares the cores between the heavy work and them.

/// The size of work (bytes decoded, encoded or written) from which it is moved aside. Below it
/// the hand-over (waking a thread to take the worker's place, a few microseconds) would cost
/// more than the work delays others.
pub const HEAVY_BYTES: usize = 1 << 20;

/// Runs `f`, which works on about `bytes` bytes: past [`HEAVY_BYTES`], aside from the I/O
/// threads when called on one of a multi-threaded runtime's; otherwise here.
pub fn run<R>(bytes: usize, f: impl FnOnce() -> R) -> R {
    if bytes >= HEAVY_BYTES && on_multi_thread_worker() {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Whether `block_in_place` may be called here: it panics on a current-thread runtime.
fn on_multi_thread_worker() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_current_thread_runtime_runs_the_work_in_place() {
        assert_eq!(run(HEAVY_BYTES, || 7), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn heavy_work_leaves_the_only_worker_to_other_tasks() {
        // The test's own body is not on a worker thread: its task is.
        tokio::spawn(async {
            use std::sync::mpsc;
            use std::time::Duration;
            // Below the bound the work stays in place: a task spawned before it cannot run
            // while it goes on (checked first: after a hand-over the worker may be elsewhere).
            let (tx, rx) = mpsc::channel();
            let other = tokio::spawn(async move { tx.send(()).unwrap() });
            let ran = run(HEAVY_BYTES - 1, || {
                rx.recv_timeout(Duration::from_millis(200)).is_ok()
            });
            assert!(!ran, "small work left the worker");
            other.await.unwrap();
            // Past it, the worker is handed over, and the other task runs meanwhile.
            let (tx, rx) = mpsc::channel();
            let other = tokio::spawn(async move { tx.send(()).unwrap() });
            let ran = run(HEAVY_BYTES, || {
                rx.recv_timeout(Duration::from_secs(10)).is_ok()
            });
            assert!(ran, "the other task waited for the heavy work");
            other.await.unwrap();
        })
        .await
        .unwrap();
    }
}
