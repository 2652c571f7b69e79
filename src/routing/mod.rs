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
