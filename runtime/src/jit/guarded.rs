//! Float buffers for the JIT's bounds-checked mode (`cnnc run --check-bounds`): each
//! one is mapped between two inaccessible pages and pushed against one of them, so
//! generated code that reads or writes past either end of a buffer faults at once
//! instead of silently using a neighbour's memory. A run against the trailing guard
//! catches overruns, one against the leading guard underruns. Normal runs use heap
//! buffers that start on a cache line: the same type holds either.

use crate::error::{Result, RuntimeError};
use std::ops::{Deref, DerefMut};

/// Which guard page a buffer's data touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The data starts right after the leading guard page: an underrun faults.
    Leading,
    /// The data ends right before the trailing guard page: an overrun faults.
    Trailing,
}

/// Zeroed f32s, on the heap or between guard pages.
pub enum Floats {
    Heap(Lines),
    Guarded(Mapping),
}

/// Floats on the heap from the start of a cache line. A vector's allocation starts 16
/// bytes past one (the allocator's header), so every 64-byte load of a tile's row
/// straddled two lines: a 1x1 conv's tiles ran 10-19% slower over such rows. The
/// block is `calloc`'s, whose large blocks are fresh pages that read zero until
/// written, so a buffer is not written once over just to zero it (a 400 MB dense
/// layer's packed weights).
pub struct Lines {
    /// What `calloc` returned, to free.
    block: *mut libc::c_void,
    /// The first cache line in it.
    data: *mut f32,
    len: usize,
}

// SAFETY: the block is plain memory owned by this value, like a Vec's.
unsafe impl Send for Lines {}
unsafe impl Sync for Lines {}

const LINE_BYTES: usize = 64;

impl Lines {
    fn zeroed(len: usize) -> Result<Lines> {
        let bytes = len
            .checked_mul(4)
            .and_then(|bytes| bytes.checked_add(LINE_BYTES))
            .ok_or_else(|| RuntimeError::Invalid(format!("{len} floats do not fit in memory")))?;
        // SAFETY: calloc has no preconditions; a null result is handled below.
        let block = unsafe { libc::calloc(bytes, 1) };
        if block.is_null() {
            return Err(RuntimeError::Invalid(format!(
                "cannot allocate {len} floats ({bytes} bytes)"
            )));
        }
        let skip = block.cast::<u8>().align_offset(LINE_BYTES);
        Ok(Lines {
            block,
            // SAFETY: `skip` < 64, within the block's `len * 4 + 64` bytes.
            data: unsafe { block.cast::<u8>().add(skip) }.cast(),
            len,
        })
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        // SAFETY: `block` is what calloc returned, freed once.
        unsafe { libc::free(self.block) };
    }
}

impl Floats {
    /// `len` zeros; between guard pages when `guard` says which one to touch.
    pub fn zeroed(len: usize, guard: Option<Guard>) -> Result<Floats> {
        match guard {
            None => Lines::zeroed(len).map(Floats::Heap),
            Some(guard) => Mapping::new(len, guard).map(Floats::Guarded),
        }
    }

    /// A copy of `values`, between guard pages when `guard` is given.
    pub fn from_vec(values: Vec<f32>, guard: Option<Guard>) -> Result<Floats> {
        let mut floats = Floats::zeroed(values.len(), guard)?;
        floats.copy_from_slice(&values);
        Ok(floats)
    }
}

impl Deref for Floats {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            // SAFETY: `data` points at `len` zeroed (so initialised) floats, aligned and
            // non-null, that live as long as the block.
            Floats::Heap(h) => unsafe { std::slice::from_raw_parts(h.data, h.len) },
            // SAFETY: `data` points at `len` initialised (zero-mapped) floats that live
            // as long as the mapping.
            Floats::Guarded(m) => unsafe { std::slice::from_raw_parts(m.data, m.len) },
        }
    }
}

impl DerefMut for Floats {
    fn deref_mut(&mut self) -> &mut [f32] {
        match self {
            // SAFETY: as for `deref`, and `&mut self` makes the borrow unique.
            Floats::Heap(h) => unsafe { std::slice::from_raw_parts_mut(h.data, h.len) },
            // SAFETY: as for `deref`, and `&mut self` makes the borrow unique.
            Floats::Guarded(m) => unsafe { std::slice::from_raw_parts_mut(m.data, m.len) },
        }
    }
}

/// An anonymous mapping: a guard page, the data's pages, a guard page.
pub struct Mapping {
    base: *mut libc::c_void,
    mapped: usize,
    data: *mut f32,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value, like a Vec's.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

/// Makes a fault say what it most likely is before the process dies of it: in a
/// guarded run, a segmentation fault is code that touched a guard page. The handler
/// writes one line and returns; `SA_RESETHAND` has put the default action back, so the
/// access faults again and the process ends by SIGSEGV as it would have.
fn report_faults() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler only calls write(2), which is
        // async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fault as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut());
        }
    });
}

extern "C" fn on_fault(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    const MESSAGE: &[u8] = b"error: segmentation fault in a bounds-checked run: code read or \
wrote outside its buffer (a guard page). This is a bug in cnnc's code generation; please \
report it with the network.\n";
    // SAFETY: writes a static buffer to stderr.
    unsafe {
        libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
    }
}

impl Mapping {
    fn new(len: usize, guard: Guard) -> Result<Mapping> {
        report_faults();
        let page = page_size();
        let bytes = len
            .checked_mul(4)
            .ok_or_else(|| RuntimeError::Invalid("a guarded buffer is too large".into()))?;
        let data_pages = bytes.div_ceil(page).max(1) * page;
        let mapped = data_pages + 2 * page;
        // SAFETY: a fresh private anonymous mapping, inaccessible until mprotect below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_error("mmap"));
        }
        let mapping = |data_offset: usize| Mapping {
            base,
            mapped,
            // SAFETY: the offset is inside the mapping.
            data: unsafe { base.cast::<u8>().add(data_offset) }.cast(),
            len,
        };
        // Made now, so that an error below unmaps it on drop.
        let mapping = mapping(match guard {
            Guard::Leading => page,
            Guard::Trailing => page + data_pages - bytes,
        });
        // SAFETY: the pages between the guards belong to this mapping.
        let opened = unsafe {
            libc::mprotect(
                base.cast::<u8>().add(page).cast(),
                data_pages,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if opened != 0 {
            return Err(os_error("mprotect"));
        }
        Ok(mapping)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base` and `mapped` are exactly what mmap returned and was given.
        unsafe { libc::munmap(self.base, self.mapped) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(4096)
}

fn os_error(call: &str) -> RuntimeError {
    RuntimeError::Invalid(format!(
        "cannot map a guarded buffer ({call}): {}",
        std::io::Error::last_os_error()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_buffers_hold_zeros_touching_their_guard() {
        for guard in [Guard::Leading, Guard::Trailing] {
            for len in [0, 1, 5, 1024, 1025, 3000] {
                let mut floats = Floats::zeroed(len, Some(guard)).expect("maps");
                assert_eq!(floats.len(), len);
                assert!(floats.iter().all(|&v| v == 0.0));
                floats
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = i as f32);
                let Floats::Guarded(m) = &floats else {
                    panic!("guarded")
                };
                let page = page_size();
                let offset = m.data as usize - m.base as usize;
                match guard {
                    Guard::Leading => assert_eq!(offset, page),
                    Guard::Trailing => assert_eq!(offset + 4 * len, m.mapped - page),
                }
            }
        }
        let copied = Floats::from_vec(vec![1.0, 2.0, 3.0], Some(Guard::Trailing)).expect("maps");
        assert_eq!(&*copied, &[1.0, 2.0, 3.0]);
    }

    #[test]
    fn heap_buffers_start_on_a_cache_line_and_hold_exactly_their_floats() {
        for len in [0, 1, 15, 16, 17, 3136] {
            let values: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let mut floats = Floats::from_vec(values.clone(), None).expect("allocates");
            assert_eq!(&*floats, values.as_slice());
            assert_eq!(floats.as_ptr() as usize % 64, 0, "{len} floats");
            floats.iter_mut().for_each(|v| *v += 1.0);
            assert!(floats.iter().zip(&values).all(|(a, b)| *a == b + 1.0));
            let zeroed = Floats::zeroed(len, None).expect("allocates");
            assert_eq!(zeroed.len(), len);
            assert!(zeroed.iter().all(|&v| v == 0.0));
        }
    }
}
