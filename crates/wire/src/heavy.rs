//! Work on a large message, done where it does not hold other connections up.
//!
//! tokio runs every connection's tasks on a few worker threads (the I/O threads). Decoding a
//! request that expands to 128 MB, or encoding a 25 MB answer, on one of them keeps every other
//! task of that thread waiting for as long, and with two such requests in flight a stranger's
//! one-millisecond request waited for all of them. Past [`HEAVY_BYTES`] the work runs in
//! `tokio::task::block_in_place`: the thread gives its place among the workers to another
//! thread for the length of the work, so the other connections go on, and the operating
//! system's scheduler shares the cores between the heavy work and them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The size of work (bytes decoded, encoded or written) from which it is moved aside. Below it
/// the hand-over (waking a thread to take the worker's place, a few microseconds) would cost
/// more than the work delays others.
pub const HEAVY_BYTES: usize = 1 << 20;

/// Runs `f`, which works on about `bytes` bytes: past [`HEAVY_BYTES`], aside from the I/O
/// threads when called on one of a multi-threaded runtime's and fewer than the cores' number
/// of such works are aside already; otherwise here. The bound keeps one peer's many large
/// requests from taking a thread each, and with them as many shares of the cores.
pub fn run<R>(bytes: usize, f: impl FnOnce() -> R) -> R {
    if bytes < HEAVY_BYTES || !on_multi_thread_worker() {
        return f();
    }
    match Aside::take() {
        // The place is held until the work is done, and given back if it panics.
        Some(_place) => tokio::task::block_in_place(f),
        None => f(),
    }
}

/// Works aside now.
static ASIDE: AtomicUsize = AtomicUsize::new(0);

/// One of the places aside, given back when dropped.
struct Aside;

impl Aside {
    /// A place if fewer than the cores' number are taken.
    fn take() -> Option<Self> {
        static LIMIT: OnceLock<usize> = OnceLock::new();
        let limit =
            *LIMIT.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        ASIDE
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Aside)
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        ASIDE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether `block_in_place` may be called here: it panics on a current-thread runtime. (It
/// also panics in a multi-threaded runtime's context entered with `Handle::enter` inside a
/// current-thread runtime's `block_on`, which nothing here does.)
fn on_multi_thread_worker() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The places aside are the process's: tests that count on them run one at a time.
    static PLACES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test(flavor = "current_thread")]
    async fn a_current_thread_runtime_runs_the_work_in_place() {
        assert_eq!(run(HEAVY_BYTES, || 7), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn heavy_work_leaves_the_only_worker_to_other_tasks() {
        let _places = PLACES.lock().await;
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

    /// With every place aside taken, one more heavy work runs in place: one peer's many large
    /// requests do not take a thread each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn past_the_cores_number_of_works_aside_one_runs_in_place() {
        let _places = PLACES.lock().await;
        use std::sync::mpsc;
        use std::time::Duration;
        let limit = std::thread::available_parallelism().map_or(2, |n| n.get());
        // Works that hold every place aside until they are let go.
        let (started, aside) = mpsc::channel();
        let (release, holds): (Vec<_>, Vec<_>) = (0..limit).map(|_| mpsc::channel::<()>()).unzip();
        let fills: Vec<_> = holds
            .into_iter()
            .map(|hold| {
                let started = started.clone();
                tokio::spawn(async move {
                    run(HEAVY_BYTES, move || {
                        started.send(()).unwrap();
                        let _ = hold.recv_timeout(Duration::from_secs(10));
                    })
                })
            })
            .collect();
        for _ in 0..limit {
            aside.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        // One more stays in place: a task spawned before it cannot run while it goes on.
        let probe = tokio::spawn(async {
            let (tx, rx) = mpsc::channel();
            let other = tokio::spawn(async move { tx.send(()).unwrap() });
            let ran = run(HEAVY_BYTES, || {
                rx.recv_timeout(Duration::from_millis(300)).is_ok()
            });
            other.await.unwrap();
            ran
        });
        assert!(!probe.await.unwrap(), "a work past the bound went aside");
        drop(release);
        for f in fills {
            f.await.unwrap();
        }
    }
}
