//! A counting global allocator: the peak of bytes live on the current thread while a closure
//! runs, for asserting that decoding stays within a constant of its input's size.
//!
//! Counts are per thread (the test harness runs tests in parallel threads). A reallocation is
//! counted as the old and the new block both live at once, as when it moves.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn record(freed: usize, allocated: usize) {
    // `try_with`: the allocator runs during thread teardown too.
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let live = LIVE.get() - freed as isize + allocated as isize;
            PEAK.set(PEAK.get().max(live));
            LIVE.set(live);
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            record(0, layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            record(0, layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        record(layout.size(), 0);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Peak as if both blocks were live, then the old one is gone.
            let _ = TRACKING.try_with(|t| {
                if t.get() {
                    let live = LIVE.get();
                    PEAK.set(PEAK.get().max(live + new_size as isize));
                    LIVE.set(live - layout.size() as isize + new_size as isize);
                }
            });
        }
        p
    }
}

/// Runs `f` and returns its result with the peak number of bytes it had allocated at once on
/// this thread (counting its result, which is still alive when it returns).
pub fn peak_bytes<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.set(0);
    PEAK.set(0);
    TRACKING.set(true);
    let r = f();
    TRACKING.set(false);
    (r, PEAK.get().max(0) as usize)
}
