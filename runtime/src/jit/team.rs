//! The threads that share a kernel's chunks: a persistent team, started with the
//! program, whose workers spin between kernels instead of sleeping.
//!
//! A fork-join that wakes a sleeping thread costs a futex wake and, in a virtual
//! machine, waking an idle virtual CPU: tens of microseconds, measured here (rayon's
//! pool, whose workers sleep soon after their last job, ran ResNet-18 slower on two
//! threads than on one). A kernel of a big network takes 0.1-3 ms and the next one
//! starts microseconds later, so the workers keep spinning for `SPIN` after each job
//! and only then sleep; publishing a job is then a store the spinning worker sees at
//! once. The caller is thread 0 and works too.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker spins for the next job before it sleeps: longer than the gap
/// between two kernels of a run (and between runs of a benchmark), short enough that
/// an idle program soon stops using the core.
const SPIN: Duration = Duration::from_millis(2);

/// Spins between two looks at the clock (or between two yields of a waiting caller).
const SPINS_PER_CHECK: u32 = 1024;

/// What thread `index` of a job runs.
type Work<'a> = dyn Fn(usize) + Sync + 'a;

/// A team of `threads` threads: the caller and `threads - 1` workers.
pub struct Team {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

struct Shared {
    /// The job's number (high bits) and how many threads take part in it (low
    /// `PARTICIPANT_BITS`): one word, so a worker reads both at once.
    state: AtomicU64,
    /// The current job, valid while `pending` is nonzero.
    job: UnsafeCell<Option<JobPointer>>,
    /// Workers of the current job that have not finished it.
    pending: AtomicUsize,
    /// Whether a worker's part of the current job panicked.
    panicked: AtomicBool,
    stop: AtomicBool,
    /// Workers asleep (or about to be) on `wake`.
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

/// The job's closure with its lifetime erased: `Team::run` does not return before
/// every worker is done with it.
#[derive(Clone, Copy)]
struct JobPointer(*const Work<'static>);

// SAFETY: `job` is written only by the caller of `run` while no worker reads it (every
// worker of the previous job has finished it), and read by workers only between the
// publication of a job and their decrement of `pending`; the closure itself is `Sync`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

const PARTICIPANT_BITS: u32 = 16;
const PARTICIPANT_MASK: u64 = (1 << PARTICIPANT_BITS) - 1;

impl Team {
    /// The most threads a team has: what the state word's participant count holds.
    pub const MAX_THREADS: usize = PARTICIPANT_MASK as usize;

    /// A team of `threads` threads (at least one: the caller).
    pub fn new(threads: usize) -> std::io::Result<Team> {
        let threads = threads.clamp(1, Self::MAX_THREADS);
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut team = Team {
            shared,
            workers: Vec::with_capacity(threads - 1),
        };
        for index in 1..threads {
            let shared = Arc::clone(&team.shared);
            let worker = std::thread::Builder::new()
                .name(format!("cnnc-jit-{index}"))
                .spawn(move || shared.serve(index))?;
            // Pushed at once, so that a failed spawn still stops the ones before.
            team.workers.push(worker);
        }
        Ok(team)
    }

    /// The caller and the workers.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `work(index)` for every `index` in `0..participants` (at most the team's
    /// threads), each on its own thread, index 0 on this one; returns when all have.
    /// Allocates nothing.
    pub fn run(&self, participants: usize, work: &Work<'_>) {
        let participants = participants.clamp(1, self.threads());
        if participants == 1 {
            work(0);
            return;
        }
        let shared = &*self.shared;
        shared.pending.store(participants - 1, Ordering::Relaxed);
        // SAFETY: the lifetime is erased for the workers, and this function waits
        // below until every one of them has finished with the closure. No worker reads
        // `job` now: each of the last job's finished it before `run` returned.
        unsafe {
            let erased: *const Work<'static> = std::mem::transmute(work as *const Work<'_>);
            *shared.job.get() = Some(JobPointer(erased));
        }
        let number = (shared.state.load(Ordering::Relaxed) >> PARTICIPANT_BITS) + 1;
        shared.state.store(
            (number << PARTICIPANT_BITS) | participants as u64,
            Ordering::SeqCst,
        );
        if shared.sleeping.load(Ordering::SeqCst) > 0 {
            let _held = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(0)));
        let mut spins = 0u32;
        while shared.pending.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(SPINS_PER_CHECK) {
                // A worker descheduled on a busy machine gets its core back sooner.
                std::thread::yield_now();
            }
        }
        if let Err(payload) = mine {
            std::panic::resume_unwind(payload);
        }
        if shared.panicked.swap(false, Ordering::Relaxed) {
            panic!("a JIT worker thread panicked");
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _held = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for worker in self.workers.drain(..) {
            // A worker that panicked has already reported it through `run`.
            let _ = worker.join();
        }
    }
}

impl Shared {
    /// Worker `index`'s life: wait for a job, do its part if it takes part, repeat.
    fn serve(&self, index: usize) {
        // The state the team was made with, not a fresh load: a job published before
        // this thread started must still be seen as new.
        let mut seen = 0;
        while let Some(state) = self.next_job(seen) {
            seen = state;
            if index >= (state & PARTICIPANT_MASK) as usize {
                continue;
            }
            // SAFETY: a job was published for this worker (it takes part), and the
            // caller keeps it alive and unchanged until `pending` reaches zero.
            let work = unsafe { (*self.job.get()).map(|job| &*job.0) };
            if let Some(work) = work {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(index)));
                if result.is_err() {
                    self.panicked.store(true, Ordering::Relaxed);
                }
            }
            self.pending.fetch_sub(1, Ordering::Release);
        }
    }

    /// The state once it differs from `seen` (a new job), or `None` when the team
    /// stops: spinning for `SPIN`, then asleep until `run` or `drop` wakes it.
    fn next_job(&self, seen: u64) -> Option<u64> {
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            let state = self.state.load(Ordering::Acquire);
            if state != seen {
                return Some(state);
            }
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(SPINS_PER_CHECK) && started.elapsed() > SPIN {
                return self.sleep_until_changed(seen);
            }
        }
    }

    fn sleep_until_changed(&self, seen: u64) -> Option<u64> {
        let mut held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        // Checked again with the count raised: `run` either sees the sleeper and
        // notifies under the lock, or published before this load, which then sees it.
        let result = loop {
            if self.stop.load(Ordering::SeqCst) {
                break None;
            }
            let state = self.state.load(Ordering::SeqCst);
            if state != seen {
                break Some(state);
            }
            held = self.wake.wait(held).unwrap_or_else(|e| e.into_inner());
        };
        self.sleeping.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_participant_runs_once_per_job() {
        let team = Team::new(3).expect("threads");
        assert_eq!(team.threads(), 3);
        for participants in [1, 2, 3, 7] {
            let counts: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..200 {
                team.run(participants, &|index| {
                    counts[index].fetch_add(1, Ordering::Relaxed);
                });
            }
            let ran: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            let expected: Vec<usize> = (0..3)
                .map(|i| if i < participants.min(3) { 200 } else { 0 })
                .collect();
            assert_eq!(ran, expected, "{participants} participants");
        }
    }

    #[test]
    fn sleeping_workers_wake_for_the_next_job() {
        let team = Team::new(2).expect("threads");
        let sum = AtomicUsize::new(0);
        team.run(2, &|index| {
            sum.fetch_add(index + 1, Ordering::Relaxed);
        });
        // Past the spin: the worker is asleep now.
        std::thread::sleep(SPIN * 3);
        team.run(2, &|index| {
            sum.fetch_add(index + 1, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_team_goes_on() {
        let team = Team::new(2).expect("threads");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            team.run(2, &|index| assert_eq!(index, 0, "worker fails"));
        }));
        assert!(result.is_err());
        let ran = AtomicUsize::new(0);
        team.run(2, &|_| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(ran.load(Ordering::Relaxed), 2);
    }
}
