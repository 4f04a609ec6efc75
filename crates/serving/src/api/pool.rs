//! The inference threads: as many as `--workers`, started with the core, each taking the next
//! waiting inference as soon as it has finished one.
//!
//! Handing every inference to tokio's blocking pool instead made a thread sleep after each
//! inference and another be woken for the next; Linux then often placed the woken thread on the
//! core where the other inference ran, and a core that fell idle does not pull a thread that ran
//! within the last half millisecond (`sched_migration_cost_ns`), so one core sat idle for up to
//! an inference's length while two inferences shared the other (MobileNetV2 at four requesters
//! on two cores: 393 ms idle in 2 s, `perf sched timehist`). A thread that finishes an inference
//! now waits for the next on its own core, which has just fallen idle, and is woken there.
//!
//! An inference takes one of the pool's places before it is queued: two per thread, one running
//! and one queued behind it, so that a thread that finishes an inference finds the next without
//! sleeping (with one place per thread, 57 ms of the same 2 s were idle). A requester that gives
//! up while it waits for a place leaves nothing behind (its decoded inputs are dropped with it);
//! one that gives up after its inference was queued is skipped when reached, so at most two
//! inferences' inputs per thread outlive their requesters, and only until a thread reaches them.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tonic::Code;

use super::error::ApiError;
use super::turns::FairPlaces;

type Job = Box<dyn FnOnce() + Send>;

/// The inference threads and the queue of inferences waiting for one.
#[derive(Debug)]
pub(crate) struct InferencePool {
    jobs: mpsc::Sender<Job>,
    /// Two places per thread: taken before an inference is queued, given back when it has run;
    /// requesters waiting for one take turns by peer.
    places: Arc<FairPlaces>,
    /// Threads that started (none: every inference goes to tokio's blocking pool).
    threads: usize,
    /// One more thread, for short inferences while the others are taken and one of them runs
    /// an inference not known to be short.
    short: Option<Lane>,
    /// Inferences not known to be short running on the threads now.
    long_running: Arc<AtomicUsize>,
}

/// The short lane: a thread that runs only inferences expected to be short
/// ([`RunCost::is_short`](crate::engine::RunCost::is_short)), so that a peer's long inferences
/// holding every inference thread (a quarter of a second to seconds each) do not make a
/// stranger's short one wait for one of them to end. It runs only when none of the others is
/// idle and one of them runs such an inference, and only short inferences, so it takes from
/// them at most a short inference's time; a load of short inferences alone queues for the
/// others' places as before (the lane beside them would only add a third thread on their cores).
#[derive(Debug)]
struct Lane {
    jobs: mpsc::Sender<Job>,
    places: Arc<FairPlaces>,
}

/// Starts `threads` threads named `name-i` taking jobs from one queue; the queue and how many
/// started. A thread the system refuses to start is logged.
fn start(threads: usize, name: &str) -> (mpsc::Sender<Job>, usize) {
    let (jobs, waiting) = mpsc::channel::<Job>();
    let waiting = Arc::new(Mutex::new(waiting));
    let mut started = 0;
    for i in 0..threads {
        let waiting = waiting.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || loop {
                // The lock is held only while waiting for the next inference, not while it
                // runs; the queue ends when the core (its only sender) is dropped.
                let next = match waiting.lock() {
                    Ok(w) => w.recv(),
                    Err(_) => return,
                };
                match next {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            });
        match spawned {
            Ok(_) => started += 1,
            Err(e) => tracing::error!("inference thread {name}-{i} not started: {e}"),
        }
    }
    (jobs, started)
}

impl InferencePool {
    /// Starts `threads` inference threads (at least one), and the short lane's. The pool runs
    /// on the threads that started.
    pub(crate) fn new(threads: usize) -> Self {
        let (jobs, started) = start(threads.max(1), "teeserve-infer");
        let short = match start(1, "teeserve-infer-short") {
            (jobs, 1) if started > 0 => Some(Lane {
                jobs,
                places: FairPlaces::new(2),
            }),
            _ => None,
        };
        Self {
            jobs,
            places: FairPlaces::new(2 * started.max(1)),
            threads: started,
            short,
            long_running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs `f` on the next free inference thread, in its peer's turn among the peers waiting
    /// ([`FairPlaces`]): one requester's many waiting inferences delay another's by one per turn.
    /// An inference expected to be `short` that finds no thread idle runs on the short lane.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        short: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let failed = || ApiError::new(Code::Internal, "inference task failed: it panicked");
        let shutting_down = || ApiError::new(Code::Unavailable, "the server is shutting down");
        let peer = crate::api::scope::current_peer();
        // The lane when no thread of the others is idle (a free place of theirs can be the one
        // queued behind a running inference) and one of them runs a long inference.
        let lane = self.short.as_ref().filter(|_| short).filter(|_| {
            // Checked before an idle thread is looked for: a place taken is not given back.
            self.long_running.load(Ordering::Acquire) > 0
        });
        let idle = || self.places.try_take_beyond(self.threads);
        let (place, jobs) = match lane.map(|lane| (lane, idle())) {
            Some((_, Some(place))) => (place, &self.jobs),
            Some((lane, None)) => (
                lane.places.take(peer).await.map_err(|_| shutting_down())?,
                &lane.jobs,
            ),
            None => (
                self.places.take(peer).await.map_err(|_| shutting_down())?,
                &self.jobs,
            ),
        };
        // Runs not known to be short are counted while they run, for the lane's rule.
        let long = (!short).then(|| self.long_running.clone());
        if self.threads == 0 {
            return tokio::task::spawn_blocking(move || {
                let _place = place;
                f()
            })
            .await
            .map_err(|e| ApiError::new(Code::Internal, format!("inference task failed: {e}")));
        }
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _place = place;
            // A requester gone since has nobody to give the result to: not run.
            if done.is_closed() {
                return;
            }
            if let Some(l) = &long {
                l.fetch_add(1, Ordering::AcqRel);
            }
            let r = std::panic::catch_unwind(AssertUnwindSafe(f));
            if let Some(l) = &long {
                l.fetch_sub(1, Ordering::AcqRel);
            }
            let _ = done.send(r);
        });
        jobs.send(job).map_err(|_| shutting_down())?;
        match result.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(failed()),
            Err(_) => Err(shutting_down()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn inferences_run_at_once_on_the_threads_and_wait_beyond_them() {
        let pool = Arc::new(InferencePool::new(2));
        let t = Instant::now();
        let sleep = || std::thread::sleep(Duration::from_millis(200));
        let (a, b) = tokio::join!(pool.run(false, sleep), pool.run(false, sleep));
        a.unwrap();
        b.unwrap();
        let two = t.elapsed();
        assert!(
            two < Duration::from_millis(390),
            "two on two threads took {two:?}"
        );
        let t = Instant::now();
        let (a, b, c) = tokio::join!(
            pool.run(false, sleep),
            pool.run(false, sleep),
            pool.run(false, sleep)
        );
        a.unwrap();
        b.unwrap();
        c.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "a third waits for a thread"
        );
    }

    #[tokio::test]
    async fn a_requester_that_gives_up_waiting_leaves_no_inference_behind() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = InferencePool::new(1);
        let ran = Arc::new(AtomicUsize::new(0));
        let busy = pool.run(false, || std::thread::sleep(Duration::from_millis(300)));
        // One queued behind the running inference, one waiting for a place: both given up.
        let (a, b) = (ran.clone(), ran.clone());
        let queued = pool.run(false, move || a.fetch_add(1, Ordering::SeqCst));
        let waiting = pool.run(false, move || b.fetch_add(1, Ordering::SeqCst));
        let soon = Duration::from_millis(50);
        let (busy, queued, waiting) = tokio::join!(
            busy,
            tokio::time::timeout(soon, queued),
            tokio::time::timeout(soon, waiting)
        );
        busy.unwrap();
        assert!(queued.is_err() && waiting.is_err(), "both waited");
        assert_eq!(pool.run(false, || 7).await.unwrap(), 7);
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "the inference given up did not run"
        );
    }

    #[tokio::test]
    async fn a_short_inference_runs_on_the_short_lane_when_the_threads_are_taken() {
        let pool = Arc::new(InferencePool::new(1));
        let long = || std::thread::sleep(Duration::from_millis(500));
        // One running: a place of the thread is free, but it would be queued behind it.
        let one = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(false, long).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        assert_eq!(pool.run(true, || 7).await.unwrap(), 7);
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "the short one waited for the long one: {:?}",
            t.elapsed()
        );
        one.await.unwrap().unwrap();
        // One running and one queued: every place of the one thread is taken.
        let (a, b) = (pool.clone(), pool.clone());
        let held =
            tokio::spawn(async move { tokio::join!(a.run(false, long), b.run(false, long)) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        assert_eq!(pool.run(true, || 7).await.unwrap(), 7);
        assert!(
            t.elapsed() < Duration::from_millis(400),
            "the short one waited for the long ones: {:?}",
            t.elapsed()
        );
        // One not known to be short waits for a place of the thread.
        let t = Instant::now();
        pool.run(false, || ()).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(400), "it did not wait");
        let (a, b) = held.await.unwrap();
        a.unwrap();
        b.unwrap();
    }

    #[tokio::test]
    async fn short_inferences_alone_queue_for_the_threads_not_the_lane() {
        let pool = Arc::new(InferencePool::new(1));
        // Two taken for 300 ms each by inferences known to be short (a slow moment): none runs
        // anything long, so the next short one queues behind them instead of taking the lane.
        let slow = || std::thread::sleep(Duration::from_millis(300));
        let (a, b) = (pool.clone(), pool.clone());
        let held = tokio::spawn(async move { tokio::join!(a.run(true, slow), b.run(true, slow)) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        pool.run(true, || ()).await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "it took the lane: {:?}",
            t.elapsed()
        );
        let (a, b) = held.await.unwrap();
        a.unwrap();
        b.unwrap();
    }

    #[tokio::test]
    async fn a_panicking_inference_is_an_error_and_the_thread_goes_on() {
        let pool = InferencePool::new(1);
        let e = pool.run(false, || panic!("boom")).await.unwrap_err();
        assert!(e.message.contains("panicked"), "{}", e.message);
        assert_eq!(pool.run(false, || 7).await.unwrap(), 7);
    }
}
