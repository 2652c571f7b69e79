//! The per-request choice: which variant answers the caller, and whether a copy of the request
//! also runs on the other variant (shadow traffic, or a sample compared in canary and A/B).

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::LiveRollout;
use super::spec::Kind;
use super::state::Rollout;
use super::window::Variant;
use crate::models::LoadedVersion;

/// Where a request goes.
pub struct Route {
    /// The version that answers the caller.
    pub target: Arc<LoadedVersion>,
    /// Set when a rollout chose the version (`None`: no rollout, or the caller named a version).
    pub variant: Option<Variant>,
    /// The rollout that chose, for the measurements.
    pub rollout: Option<Arc<LiveRollout>>,
    /// A version that also runs the request, after the caller is answered.
    pub copy: Option<Arc<LoadedVersion>>,
}

impl Route {
    /// A version chosen without a rollout.
    pub fn direct(target: Arc<LoadedVersion>) -> Self {
        Self {
            target,
            variant: None,
            rollout: None,
            copy: None,
        }
    }
}

/// Where in [0, 1) a sticky key falls for this rollout. The rollout's id salts the hash, so a key
/// that was on the candidate in one rollout is not always first in the next; SHA-256 so every
/// replica, build and platform agrees.
pub fn key_position(rollout_id: &str, key: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(rollout_id.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut top = [0u8; 8];
    top.copy_from_slice(&digest[..8]);
    // 53 bits: exactly representable, uniform in [0, 1).
    (u64::from_be_bytes(top) >> 11) as f64 / (1u64 << 53) as f64
}

/// The variant for one caller, and the variant a copy goes to (if any).
pub fn choose(r: &Rollout, key: Option<&str>) -> (Variant, Option<Variant>) {
    let weight = r.weight();
    let candidate_if = |hit: bool| {
        if hit {
            Variant::Candidate
        } else {
            Variant::Stable
        }
    };
    match r.spec.kind {
        Kind::Shadow => (
            Variant::Stable,
            (fastrand::f64() < r.spec.shadow_fraction).then_some(Variant::Candidate),
        ),
        kind => {
            let variant = match (kind, key) {
                // Below the weight: candidate. As the weight grows, keys only join it.
                (Kind::Ab, Some(k)) => candidate_if(key_position(&r.id, k) < weight),
                _ => candidate_if(fastrand::f64() < weight),
            };
            let copy = (fastrand::f64() < r.spec.compare_fraction).then_some(variant.other());
            (variant, copy)
        }
    }
}

/// Routes a request under an active rollout, given this replica's ready versions. `None` when
/// the stable version is not ready here (the caller then falls back to the default version).
pub fn route(
    live: &Arc<LiveRollout>,
    key: Option<&str>,
    ready: impl Fn(u64) -> Option<Arc<LoadedVersion>>,
) -> Option<Route> {
    let r = &live.state;
    let stable = ready(r.stable)?;
    let Some(candidate) = ready(r.candidate()) else {
        // The candidate failed to load on this replica: stable answers, nothing to compare.
        return Some(Route {
            target: stable,
            variant: Some(Variant::Stable),
            rollout: Some(live.clone()),
            copy: None,
        });
    };
    let (variant, copy) = choose(r, key);
    let pick = |v: Variant| match v {
        Variant::Stable => stable.clone(),
        Variant::Candidate => candidate.clone(),
    };
    Some(Route {
        target: pick(variant),
        variant: Some(variant),
        rollout: Some(live.clone()),
        copy: copy.map(pick),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::spec::RolloutSpec;

    fn rollout(kind: Kind, steps: Option<Vec<f64>>) -> Rollout {
        let mut spec = RolloutSpec::new(2);
        spec.kind = kind;
        spec.steps = steps;
        spec.compare_fraction = 0.0;
        spec.shadow_fraction = 0.25;
        Rollout::start(spec, 1, 0, "test")
    }

    #[test]
    fn canary_splits_by_weight() {
        let r = rollout(Kind::Canary, Some(vec![30.0]));
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| choose(&r, None).0 == Variant::Candidate)
            .count() as f64;
        // Binomial(20000, 0.3): sd ≈ 65; 5 sd.
        assert!((hits - 6_000.0).abs() < 325.0, "{hits}");
    }

    #[test]
    fn sticky_keys_keep_their_variant_and_never_move_back() {
        let mut r = rollout(Kind::Ab, Some(vec![10.0, 40.0, 70.0, 100.0]));
        let keys: Vec<String> = (0..2_000).map(|i| format!("user-{i}")).collect();
        let mut before: Vec<Variant> = keys.iter().map(|k| choose(&r, Some(k)).0).collect();
        for step in 0..4 {
            r.step = step;
            let now: Vec<Variant> = keys.iter().map(|k| choose(&r, Some(k)).0).collect();
            // Same answer every time within a step.
            for (k, v) in keys.iter().zip(&now) {
                assert_eq!(choose(&r, Some(k)).0, *v);
            }
            for (b, a) in before.iter().zip(&now) {
                assert!(!(*b == Variant::Candidate && *a == Variant::Stable));
            }
            let share = now.iter().filter(|v| **v == Variant::Candidate).count() as f64 / 2_000.0;
            assert!((share - r.weight()).abs() < 0.05, "step {step}: {share}");
            before = now;
        }
    }

    #[test]
    fn the_key_position_is_stable_and_salted() {
        assert_eq!(key_position("a", "user-1"), key_position("a", "user-1"));
        assert_ne!(key_position("a", "user-1"), key_position("b", "user-1"));
        let p = key_position("a", "user-1");
        assert!((0.0..1.0).contains(&p));
    }

    #[test]
    fn shadow_answers_from_stable_and_copies_a_fraction() {
        let r = rollout(Kind::Shadow, None);
        let picks: Vec<_> = (0..8_000).map(|_| choose(&r, Some("k"))).collect();
        assert!(picks.iter().all(|(v, _)| *v == Variant::Stable));
        let copies = picks.iter().filter(|(_, c)| c.is_some()).count() as f64;
        assert!((copies - 2_000.0).abs() < 200.0, "{copies}");
    }
}
