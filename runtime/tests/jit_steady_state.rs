//! The JIT's steady state allocates nothing but its output: after a first run of a
//! batch size, the buffers, scratch and argument slots are reused. Counted with a
//! global allocator, in a test binary of its own so no other test allocates meanwhile.

mod common;

use cnnc_runtime::jit;
use common::{example, input, weights};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_warm_run_allocates_only_its_output() {
    // On the pool's threads, as `cnnc bench` runs: a call from outside a pool goes
    // through rayon's injector, which allocates a block now and then.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a pool");
    for (name, batch) in [("googlenet", 1), ("resnet18", 2), ("lenet5", 3)] {
        let net = example(name);
        let weights = weights(&net, 1);
        let inputs: Vec<_> = (0..4).map(|_| vec![input(&net, batch, 2)]).collect();
        // The program is made on the pool too: it is not shared between threads.
        let counts: Vec<usize> = pool.install(|| {
            let program = jit::Program::with_threads(&net, &weights, 2).expect("compiles");
            inputs
                .into_iter()
                .map(|inputs| {
                    let before = ALLOCATIONS.load(Ordering::Relaxed);
                    let output = program.run(inputs).expect("runs");
                    let after = ALLOCATIONS.load(Ordering::Relaxed);
                    drop(output);
                    after - before
                })
                .collect()
        });
        // The first run makes the buffers; the next ones allocate the output tensor's
        // values and shape only. The counter sees every thread's allocations, and
        // once in a full suite run another thread's landed in the window (3 on a warm
        // LeNet-5 run, never again in 20 runs): a run's own allocations would be in
        // every warm run, so the fewest is what is held to the limit.
        assert!(counts[0] > 2, "{name}: the first run allocates its buffers");
        let fewest = counts[1..].iter().min().copied().unwrap_or(0);
        assert!(
            fewest <= 2,
            "{name}: warm runs made {:?} allocations",
            &counts[1..]
        );
    }
}
