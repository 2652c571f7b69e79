//! Results: a summary per target, printed as tables (with ratios against the first target) or
//! as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stats::{Percentiles, Stats, percentiles};

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub target: String,
    pub protocol: String,
    pub url: String,
    pub mode: String,
    pub batch: usize,
    pub elapsed_s: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub requests_per_s: f64,
    pub rows_per_s: f64,
    pub latency_ms: Percentiles,
    /// CPU seconds the load generator used during the measured phase.
    pub client_cpu_s: f64,
    /// CPU seconds the server process tree used, when its PID was given.
    pub server_cpu_s: Option<f64>,
}

impl Summary {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: &str,
        protocol: String,
        url: String,
        mode: String,
        batch: usize,
        stats: &Stats,
        elapsed_s: f64,
        client_cpu_s: f64,
        server_cpu_s: Option<f64>,
    ) -> Self {
        let sent = stats.sent();
        let rate = if elapsed_s > 0.0 {
            stats.ok as f64 / elapsed_s
        } else {
            0.0
        };
        Self {
            target: target.to_string(),
            protocol,
            url,
            mode,
            batch,
            elapsed_s,
            sent,
            ok: stats.ok,
            errors: stats.errors.clone(),
            requests_per_s: rate,
            rows_per_s: rate * batch as f64,
            latency_ms: percentiles(&stats.latency_us),
            client_cpu_s,
            server_cpu_s,
        }
    }
}

fn errors_cell(e: &BTreeMap<String, u64>) -> String {
    if e.is_empty() {
        "0".into()
    } else {
        e.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The human-readable report: one row per target, then ratios against the first.
pub fn tables(summaries: &[Summary]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<14} {:<12} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}  errors\n",
        "target",
        "protocol",
        "ok req/s",
        "rows/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "cpu cli s",
        "cpu srv s"
    ));
    for s in summaries {
        let l = &s.latency_ms;
        out.push_str(&format!(
            "{:<14} {:<12} {:>10.0} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.2} {:>9.2} {:>9}  {}\n",
            s.target,
            s.protocol,
            s.requests_per_s,
            s.rows_per_s,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            s.client_cpu_s,
            s.server_cpu_s.map_or("-".into(), |c| format!("{c:.2}")),
            errors_cell(&s.errors)
        ));
    }
    if let [first, rest @ ..] = summaries
        && !rest.is_empty()
    {
        out.push_str(&format!(
            "\nratios against '{}' (same run):\n",
            first.target
        ));
        out.push_str(&format!(
            "{:<14} {:>10} {:>8} {:>8}\n",
            "target", "req/s", "p50", "p99"
        ));
        for s in summaries {
            let r = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            out.push_str(&format!(
                "{:<14} {:>9.2}x {:>7.2}x {:>7.2}x\n",
                s.target,
                r(s.requests_per_s, first.requests_per_s),
                r(s.latency_ms.p50, first.latency_ms.p50),
                r(s.latency_ms.p99, first.latency_ms.p99)
            ));
        }
    }
    out
}
