//! Result bookkeeping: an HdrHistogram of latencies, counts by outcome, and (for plots) samples
//! over time.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, 1 µs to 10 minutes, 3 significant digits.
const MAX_US: u64 = 600_000_000;

#[derive(Debug, Clone)]
pub struct Stats {
    pub latency_us: Histogram<u64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// (seconds since the start, latency in ms, succeeded), kept only when plotting.
    pub samples: Option<Vec<(f32, f32, bool)>>,
}

impl Stats {
    pub fn new(keep_samples: bool) -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"),
            ok: 0,
            errors: BTreeMap::new(),
            samples: keep_samples.then(Vec::new),
        }
    }

    /// Records one finished request: `at` is when it was (meant to be) sent, relative to the start.
    pub fn record(&mut self, at: Duration, latency: Duration, outcome: &Result<(), String>) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_US);
        // Failed requests count in the latency distribution too: a fast 429 is still an answer.
        let _ = self.latency_us.record(us);
        match outcome {
            Ok(()) => self.ok += 1,
            Err(kind) => *self.errors.entry(kind.clone()).or_default() += 1,
        }
        if let Some(s) = &mut self.samples {
            s.push((
                at.as_secs_f32(),
                latency.as_secs_f32() * 1e3,
                outcome.is_ok(),
            ));
        }
    }

    pub fn merge(&mut self, other: Stats) {
        let _ = self.latency_us.add(&other.latency_us);
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        if let (Some(mine), Some(theirs)) = (&mut self.samples, other.samples) {
            mine.extend(theirs);
        }
    }

    pub fn sent(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// Latency percentiles in milliseconds.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |us: u64| us as f64 / 1e3;
    Percentiles {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: h.mean() / 1e3,
    }
}

/// The open loop's schedule: request `k` is due `k / rate` seconds after the start.
pub fn intended_offset(k: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(k as f64 / rate)
}

/// One interval of a run, for plots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Start of the interval, seconds since the start of the run.
    pub at: f32,
    pub p50_ms: f32,
    pub p99_ms: f32,
    pub requests_per_s: f32,
}

/// One point per interval with at least one request.
pub fn over_time(samples: &[(f32, f32, bool)], interval: f32) -> Vec<Point> {
    if samples.is_empty() || interval <= 0.0 {
        return Vec::new();
    }
    let end = samples.iter().map(|s| s.0).fold(0.0f32, f32::max);
    let buckets = (end / interval).floor() as usize + 1;
    let mut lat: Vec<Vec<f32>> = vec![Vec::new(); buckets];
    for &(at, ms, _) in samples {
        lat[((at / interval) as usize).min(buckets - 1)].push(ms);
    }
    lat.into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .map(|(i, mut v)| {
            v.sort_by(f32::total_cmp);
            let q = |p: f32| v[((v.len() as f32 - 1.0) * p).round() as usize];
            Point {
                at: i as f32 * interval,
                p50_ms: q(0.5),
                p99_ms: q(0.99),
                requests_per_s: v.len() as f32 / interval,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_merge() {
        let mut a = Stats::new(true);
        a.record(Duration::ZERO, Duration::from_micros(100), &Ok(()));
        a.record(
            Duration::ZERO,
            Duration::from_micros(300),
            &Err("http 429".into()),
        );
        let mut b = Stats::new(true);
        b.record(Duration::from_secs(1), Duration::from_micros(200), &Ok(()));
        b.record(
            Duration::from_secs(1),
            Duration::from_millis(5),
            &Err("http 429".into()),
        );
        b.record(
            Duration::from_secs(1),
            Duration::from_millis(5),
            &Err("timeout".into()),
        );
        a.merge(b);
        assert_eq!(a.ok, 2);
        assert_eq!(a.errors["http 429"], 2);
        assert_eq!(a.errors["timeout"], 1);
        assert_eq!(a.sent(), 5);
        assert_eq!(a.latency_us.len(), 5);
        assert_eq!(a.samples.as_ref().unwrap().len(), 5);
        let p = percentiles(&a.latency_us);
        assert!((p.p50 - 0.3).abs() < 0.01, "{p:?}");
        assert!((p.max - 5.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut s = Stats::new(false);
        for us in 1..=1000u64 {
            s.record(Duration::ZERO, Duration::from_micros(us * 10), &Ok(()));
        }
        let p = percentiles(&s.latency_us);
        assert!((p.p50 - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99 - 9.9).abs() < 0.01, "{p:?}");
        assert!((p.p999 - 9.99).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn open_loop_schedule_is_evenly_spaced_from_the_start() {
        assert_eq!(intended_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(intended_offset(1, 1000.0), Duration::from_millis(1));
        assert_eq!(intended_offset(2500, 1000.0), Duration::from_millis(2500));
        assert_eq!(intended_offset(3, 4.0), Duration::from_millis(750));
    }

    #[test]
    fn series_buckets_by_interval() {
        let samples = vec![(0.1, 1.0, true), (0.2, 3.0, true), (1.5, 10.0, false)];
        let series = over_time(&samples, 1.0);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].at, 0.0);
        assert_eq!(series[0].requests_per_s, 2.0);
        assert_eq!(series[1].p50_ms, 10.0);
    }
}
