//! A sliding window of skew counts: a ring of time slices, so the window moves forward by dropping
//! whole old slices instead of remembering every request.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::monitoring::skew::Profile;

struct Slice {
    /// Which slice of time (`now_ms / slice_ms`) the counts belong to.
    key: u64,
    profile: Profile,
}

/// Per-version counts over the last `window`, kept in `ceil(window / slice)` slices. The current
/// slice is partial, so the window spans between `window - slice` and `window` of traffic.
pub struct SkewWindow {
    slice_ms: u64,
    slices: Mutex<Vec<Slice>>,
    empty: Profile,
}

impl SkewWindow {
    /// A zero `slice` is taken as 1 ms, a `window` shorter than a slice as one slice, and the
    /// ring holds at most 65536 slices (each is a whole profile): the configuration refuses such
    /// values before they get here.
    pub fn new(window: Duration, slice: Duration, empty: Profile) -> SkewWindow {
        let slice_ms = u64::try_from(slice.as_millis()).unwrap_or(u64::MAX).max(1);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let n = window_ms.div_ceil(slice_ms).clamp(1, 1 << 16) as usize;
        let slices = (0..n)
            .map(|_| Slice {
                // No slice of time has this key until u64::MAX ms have passed: marks it unused.
                key: u64::MAX,
                profile: empty.clone(),
            })
            .collect();
        SkewWindow {
            slice_ms,
            slices: Mutex::new(slices),
            empty,
        }
    }

    /// Slices in the ring.
    pub fn slices(&self) -> usize {
        self.lock().len()
    }

    /// Adds one request's counts to the slice of `now_ms`, clearing that slot first if it still
    /// holds an older slice.
    pub fn record(&self, delta: &Profile, now_ms: u64) {
        let key = now_ms / self.slice_ms;
        let mut slices = self.lock();
        let n = slices.len() as u64;
        let Some(slot) = slices.get_mut((key % n) as usize) else {
            return;
        };
        if slot.key != key {
            slot.profile.clear();
            slot.key = key;
        }
        slot.profile.merge(delta);
    }

    /// The counts of the slices within the window ending at `now_ms`.
    pub fn snapshot(&self, now_ms: u64) -> Profile {
        let key = now_ms / self.slice_ms;
        let mut out = self.empty.clone();
        let slices = self.lock();
        let n = slices.len() as u64;
        for s in slices.iter() {
            if s.key <= key && key - s.key < n {
                out.merge(&s.profile);
            }
        }
        out
    }

    /// A panic while the lock was held cannot leave counts half-merged in a way that matters
    /// more than losing them, so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Vec<Slice>> {
        self.slices.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tensor::{Tensor, TensorData};
    use crate::monitoring::baseline::Baseline;
    use crate::monitoring::skew::Profiler;

    fn profiler() -> Profiler {
        let b = Baseline::parse(
            br#"{"input": "X", "features": [{"name": "a", "index": 0, "type": "numeric",
                "histogram": {"bin_edges": [0, 1, 2], "proportions": [0.5, 0.5]}}]}"#,
            "b.json",
        )
        .unwrap();
        Profiler::new(&b, None).unwrap()
    }

    fn rows(p: &Profiler, n: usize) -> Profile {
        let mut out = p.empty();
        let t = Tensor::new("X", vec![n as i64, 1], TensorData::Fp64(vec![0.5; n]));
        p.observe(&[t], &[], &mut out);
        out
    }

    const SEC: u64 = 1000;

    fn window(p: &Profiler) -> SkewWindow {
        SkewWindow::new(Duration::from_secs(600), Duration::from_secs(60), p.empty())
    }

    #[test]
    fn the_ring_has_ceil_window_over_slice_slices() {
        let p = profiler();
        assert_eq!(window(&p).slices(), 10);
        let odd = SkewWindow::new(Duration::from_secs(90), Duration::from_secs(60), p.empty());
        assert_eq!(odd.slices(), 2);
        let zero = SkewWindow::new(Duration::ZERO, Duration::ZERO, p.empty());
        assert_eq!(zero.slices(), 1);
    }

    #[test]
    fn snapshot_sums_the_slices_in_the_window() {
        let p = profiler();
        let w = window(&p);
        assert_eq!(w.snapshot(0).rows(), 0);
        w.record(&rows(&p, 1), 0);
        w.record(&rows(&p, 2), 59 * SEC);
        w.record(&rows(&p, 4), 60 * SEC);
        w.record(&rows(&p, 8), 599 * SEC);
        assert_eq!(w.snapshot(599 * SEC).rows(), 15);
        // At 600 s the first slice [0, 60) has left the window.
        assert_eq!(w.snapshot(600 * SEC).rows(), 12);
        assert_eq!(w.snapshot(659 * SEC).rows(), 12);
        assert_eq!(w.snapshot(660 * SEC).rows(), 8);
        assert_eq!(w.snapshot(1199 * SEC).rows(), 0);
        // A snapshot is the merged profile, not only a row count.
        let mut want = rows(&p, 4);
        want.merge(&rows(&p, 8));
        assert_eq!(w.snapshot(600 * SEC), want);
    }

    #[test]
    fn a_reused_slot_is_cleared_first() {
        let p = profiler();
        let w = window(&p);
        w.record(&rows(&p, 5), 30 * SEC);
        // Ten slices later the same slot serves a new slice of time: the old 5 rows are gone.
        w.record(&rows(&p, 1), 630 * SEC);
        assert_eq!(w.snapshot(630 * SEC).rows(), 1);
        w.record(&rows(&p, 1), 631 * SEC);
        assert_eq!(w.snapshot(631 * SEC).rows(), 2);
    }

    #[test]
    fn slices_from_a_later_time_are_not_counted() {
        let p = profiler();
        let w = window(&p);
        w.record(&rows(&p, 3), 120 * SEC);
        // A reader whose clock is behind the writer's sees only what had happened by then.
        assert_eq!(w.snapshot(119 * SEC).rows(), 0);
        assert_eq!(w.snapshot(120 * SEC).rows(), 3);
    }

    #[test]
    fn a_foreign_profile_is_ignored() {
        let p = profiler();
        let w = window(&p);
        w.record(&Profile::default(), 0);
        assert_eq!(w.snapshot(0), p.empty());
    }
}
