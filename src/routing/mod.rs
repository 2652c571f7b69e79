//! Routing: which version answers a request that names none, and progressive delivery.
//!
//! A rollout moves a model's traffic from a stable version to a candidate through steps, each held
//! for a bake interval while the analysis runs:
//! - `spec`: what an operator asks for (kind, steps, interval, thresholds);
//! - `state`: the rollout as kept in the registry (`routing.toml`) and its transitions;
//! - `split`: the per-request choice (weighted, sticky hash, shadow) and the copies;
//! - `window`, `compare`: what this replica measures of each variant during an interval;
//! - `checks`: the analysis, one small type per check;
//! - `controller`: the loop that decides each interval and writes the decision to the registry.
//!
//! Routing never makes a caller wait: the split is a table lookup and a random draw, and copies
//! to the other variant run after the caller's answer, off the response path.

pub mod checks;
pub mod compare;
pub mod controller;
pub mod spec;
pub mod split;
pub mod state;
pub mod window;

use std::sync::Arc;

pub use spec::{Kind, RolloutSpec};
pub use split::Route;
pub use state::{Decision, Event, Phase, Rollout};
pub use window::{Variant, Window};

/// A rollout as this replica serves it: the state read from the registry and the window that
/// collects the open interval's measurements.
pub struct LiveRollout {
    pub state: Rollout,
    pub window: Arc<Window>,
}

impl LiveRollout {
    /// The live rollout for `state`, keeping `previous`'s window while the interval is the same
    /// (a re-read of an unchanged state must not lose what was measured).
    pub fn next(previous: Option<&Arc<LiveRollout>>, state: Rollout) -> Arc<Self> {
        let window = match previous {
            Some(p) if p.state.id == state.id && p.state.interval == state.interval => {
                p.window.clone()
            }
            _ => Arc::new(Window::new()),
        };
        Arc::new(Self { state, window })
    }
}

/// The replica's name in decisions: host and process id.
pub fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}/{}", std::process::id())
}

/// Unix time in milliseconds (the clock every replica shares through the registry's state).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The status of a model's rollout as the admin API returns it (and the CLI prints it): the
/// state from the registry, plus what this replica measured in the open interval and what the
/// checks would say of it now.
pub fn status_json(model: &str, pinned: Option<u64>, live: &LiveRollout) -> serde_json::Value {
    use serde_json::json;
    let r = &live.state;
    let summary = live.window.summary();
    let checks = checks::analyse(&summary, &r.spec);
    let event = |e: &Event| {
        json!({
            "at": state::format_time(e.at_ms),
            "at_ms": e.at_ms,
            "decision": e.decision,
            "step": e.step,
            "interval": e.interval,
            "by": e.by,
            "reason": e.reason,
            "checks": e.checks,
        })
    };
    json!({
        "model": model,
        "pinned_version": pinned,
        "rollout": {
            "id": r.id,
            "kind": r.spec.kind.as_str(),
            "stable": r.stable,
            "candidate": r.candidate(),
            "phase": r.phase.as_str(),
            "step": r.step,
            "steps": r.spec.weights().iter().map(|w| w * 100.0).collect::<Vec<_>>(),
            "weight": r.weight(),
            "interval": spec::format_duration(r.spec.interval),
            "interval_index": r.interval,
            "interval_started": state::format_time(r.interval_started_ms),
            "interval_ends": state::format_time(r.interval_end_ms()),
            "failures": r.failures,
            "failure_limit": r.spec.failure_limit,
            "started": state::format_time(r.started_ms),
            "finished": r.finished_ms.map(state::format_time),
            "reason": r.reason,
            "spec": r.spec,
            "window": {
                "stable": summary.stable,
                "candidate": summary.candidate,
                "agreement": summary.agreement,
                "checks": checks,
            },
            "last_decision": r.last_event().map(event),
            "history": r.history.iter().map(event).collect::<Vec<_>>(),
        }
    })
}
