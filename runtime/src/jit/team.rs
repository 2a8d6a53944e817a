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
//!
//! A worker joins a job only while it is open, and the caller, its own part done,
//! closes it and waits for the workers that joined, not for every worker: on a shared
//! machine a worker's core may be given to another process for milliseconds, and its
//! chunks are then taken by the threads that run (`program::Shares`). Waiting for
//! every worker to see every job made GoogLeNet 3x slower on two threads while
//! another process shared one of the cores (13 -> 40 ms; ONNX Runtime 43 -> 54).

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
    /// The current job, valid for the workers that joined it until they finish it.
    job: UnsafeCell<Option<JobPointer>>,
    /// The current job's number (from `GATE_NUMBER_SHIFT`), whether it is open
    /// (`GATE_OPEN`) and how many workers joined it (the low bits).
    gate: AtomicU64,
    /// Workers that joined the current job and finished their part.
    finished: AtomicUsize,
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
// worker that joined the previous job has finished it, and no other read it), and read
// by a worker only after it joined the job and before it counts itself finished; the
// closure itself is `Sync`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

const PARTICIPANT_BITS: u32 = 16;
const PARTICIPANT_MASK: u64 = (1 << PARTICIPANT_BITS) - 1;

/// The gate: the count of workers that joined (below `GATE_OPEN`), the open bit, and
/// the job's number (as many of its low bits as fit).
const GATE_OPEN: u64 = 1 << 16;
const GATE_NUMBER_SHIFT: u32 = 17;
const GATE_COUNT_MASK: u64 = GATE_OPEN - 1;
const GATE_NUMBER_MASK: u64 = u64::MAX >> GATE_NUMBER_SHIFT;

impl Team {
    /// The most threads a team has: what the state word's participant count holds.
    pub const MAX_THREADS: usize = PARTICIPANT_MASK as usize;

    /// A team of `threads` threads (at least one: the caller).
    pub fn new(threads: usize) -> std::io::Result<Team> {
        let threads = threads.clamp(1, Self::MAX_THREADS);
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            gate: AtomicU64::new(0),
            finished: AtomicUsize::new(0),
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

    /// Runs `work(0)` on this thread and `work(index)` for each `index` in
    /// `1..participants` (at most the team's threads) whose worker joins before this
    /// thread's part is done, each on its own thread; returns when all of those have.
    /// A worker late for a job skips it, so `work` must share the job among whoever
    /// runs (as `program::Shares` does). Allocates nothing.
    pub fn run(&self, participants: usize, work: &Work<'_>) {
        let participants = participants.clamp(1, self.threads());
        if participants == 1 {
            work(0);
            return;
        }
        let shared = &*self.shared;
        // No worker runs a job now: each that joined the last one finished it first.
        shared.finished.store(0, Ordering::Relaxed);
        // SAFETY: the lifetime is erased for the workers, and this function waits
        // below until every worker that joined has finished with the closure; no
        // other reads it. No worker reads `job` now (see above).
        unsafe {
            let erased: *const Work<'static> = std::mem::transmute(work as *const Work<'_>);
            *shared.job.get() = Some(JobPointer(erased));
        }
        let number = (shared.state.load(Ordering::Relaxed) >> PARTICIPANT_BITS) + 1;
        let gate_number = (number & GATE_NUMBER_MASK) << GATE_NUMBER_SHIFT;
        shared
            .gate
            .store(gate_number | GATE_OPEN, Ordering::Release);
        shared.state.store(
            (number << PARTICIPANT_BITS) | participants as u64,
            Ordering::SeqCst,
        );
        if shared.sleeping.load(Ordering::SeqCst) > 0 {
            let _held = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(0)));
        let joined =
            (shared.gate.fetch_and(!GATE_OPEN, Ordering::AcqRel) & GATE_COUNT_MASK) as usize;
        let mut spins = 0u32;
        while shared.finished.load(Ordering::Acquire) != joined {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(SPINS_PER_CHECK) {
                // A worker descheduled on a busy machine gets its core back sooner.
                std::thread::yield_now();
            }
        }
        // Cleared whichever part panicked, so the next job does not report it again.
        let worker_panicked = shared.panicked.swap(false, Ordering::Relaxed);
        if let Err(payload) = mine {
            std::panic::resume_unwind(payload);
        }
        if worker_panicked {
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
            if index >= (state & PARTICIPANT_MASK) as usize || !self.join(state >> PARTICIPANT_BITS)
            {
                continue;
            }
            // SAFETY: this worker joined the job, and the caller keeps it alive and
            // unchanged until every worker that joined has finished it.
            let work = unsafe { (*self.job.get()).map(|job| &*job.0) };
            if let Some(work) = work {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(index)));
                if result.is_err() {
                    self.panicked.store(true, Ordering::Relaxed);
                }
            }
            self.finished.fetch_add(1, Ordering::Release);
        }
    }

    /// Joins job `number` if it is still open (its caller has not finished its own
    /// part); whether it did.
    fn join(&self, number: u64) -> bool {
        let wanted = (number & GATE_NUMBER_MASK) << GATE_NUMBER_SHIFT;
        let mut gate = self.gate.load(Ordering::Acquire);
        loop {
            let open = gate & GATE_OPEN != 0;
            if gate & !(GATE_OPEN | GATE_COUNT_MASK) != wanted || !open {
                return false;
            }
            match self.gate.compare_exchange_weak(
                gate,
                gate + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => gate = now,
            }
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

    /// Waits until `count` reaches `wanted` (the workers that must join have),
    /// yielding now and then to a worker that shares the core.
    fn wait_for(count: &AtomicUsize, wanted: usize) {
        let mut spins = 0u32;
        while count.load(Ordering::Acquire) < wanted {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(SPINS_PER_CHECK) {
                std::thread::yield_now();
            }
        }
    }

    #[test]
    fn the_caller_runs_every_job_and_each_worker_at_most_once() {
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
            assert_eq!(ran[0], 200, "{participants} participants");
            for (index, &times) in ran.iter().enumerate().skip(1) {
                let most = if index < participants { 200 } else { 0 };
                assert!(times <= most, "{participants} participants: {ran:?}");
            }
        }
    }

    #[test]
    fn workers_that_join_in_time_each_run_their_part_once() {
        // The caller's part waits for the workers' parts: every worker joins while
        // the job is open, so each index runs exactly once per job.
        let team = Team::new(3).expect("threads");
        let counts: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        for job in 1..=200 {
            team.run(3, &|index| {
                counts[index].fetch_add(1, Ordering::Release);
                if index == 0 {
                    wait_for(&counts[1], job);
                    wait_for(&counts[2], job);
                }
            });
        }
        let ran: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(ran, [200, 200, 200]);
    }

    #[test]
    fn sleeping_workers_wake_for_the_next_job() {
        let team = Team::new(2).expect("threads");
        let (joined, sum) = (AtomicUsize::new(0), AtomicUsize::new(0));
        // The caller's part ends once the worker has joined `wanted` jobs in all.
        let job = |index: usize, wanted: usize| {
            sum.fetch_add(index + 1, Ordering::Relaxed);
            match index {
                0 => wait_for(&joined, wanted),
                _ => _ = joined.fetch_add(1, Ordering::Release),
            }
        };
        team.run(2, &|index| job(index, 1));
        // Past the spin: the worker is asleep now, and must wake to join.
        std::thread::sleep(SPIN * 3);
        team.run(2, &|index| job(index, 2));
        assert_eq!(sum.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_team_goes_on() {
        let team = Team::new(2).expect("threads");
        let started = AtomicUsize::new(0);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            team.run(2, &|index| {
                if index == 0 {
                    // The worker joins before this part ends, and fails.
                    wait_for(&started, 1);
                } else {
                    started.fetch_add(1, Ordering::Release);
                    panic!("worker fails");
                }
            });
        }));
        assert!(result.is_err());
        let ran = AtomicUsize::new(0);
        team.run(2, &|_| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        assert!((1..=2).contains(&ran.load(Ordering::Relaxed)));
    }

    #[test]
    fn a_job_shared_by_whoever_runs_is_done_once_every_time() {
        // As the kernels share their chunks: every chunk of every job taken exactly
        // once, however many workers join each job.
        let team = Team::new(2).expect("threads");
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        for job in 0..2000 {
            next.store(0, Ordering::Relaxed);
            team.run(2, &|_| {
                while next.fetch_add(1, Ordering::Relaxed) < 8 {
                    // A chunk takes a while: the caller often runs out of chunks
                    // while a worker is still in one, which it must wait for.
                    for _ in 0..2000 {
                        std::hint::spin_loop();
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
            assert_eq!(done.load(Ordering::Relaxed), 8 * (job + 1));
        }
    }
}
