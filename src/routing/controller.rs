//! The rollout controller: operators' actions (start, pause, resume, promote, abort) and the loop
//! that analyses each interval when it ends and writes the decision to the registry.
//!
//! There is no leader. Every replica times intervals from the state in the registry, analyses
//! what it measured itself, and writes its decision with a read-modify-write under the registry's
//! lock: the first decision of an interval wins, a failure always counts (once per interval), and
//! the others see the result at their next read of the registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::checks::analyse;
use super::spec::RolloutSpec;
use super::state::{Decision, Phase, Rollout, Verdict};
use super::{LiveRollout, now_ms, replica_name};
use crate::error::{Error, Result};
use crate::models::{ModelEntry, ModelManager, VersionState};
use crate::monitoring::metrics;
use crate::shutdown::Signal;

/// How often the controller looks for intervals that ended (in memory; the registry is only
/// written when a decision is due).
pub const TICK: Duration = Duration::from_millis(100);

/// What an operator can do to a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Promote,
    Abort,
}

impl Action {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pause" => Some(Self::Pause),
            "resume" => Some(Self::Resume),
            "promote" => Some(Self::Promote),
            "abort" => Some(Self::Abort),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Promote => "promote",
            Self::Abort => "abort",
        }
    }
}

/// Starts a rollout of `spec.candidate`. The stable version is the spec's, else the pinned one,
/// else the one serving requests that name no version; it is pinned, so that when the rollout
/// ends (aborted) it keeps serving even if the candidate is the highest version.
pub fn start(models: &ModelManager, model: &str, mut spec: RolloutSpec) -> Result<Rollout> {
    spec.validate().map_err(Error::invalid)?;
    let stable = match spec.stable {
        Some(v) => v,
        None => {
            let table = models.snapshot();
            let entry = table
                .models
                .get(model)
                .ok_or_else(|| Error::NotFound(format!("unknown model '{model}'")))?;
            entry.default_version().map(|v| v.version).ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "model '{model}' has no ready version to roll out from"
                ))
            })?
        }
    };
    if spec.stable.is_none() && stable == spec.candidate {
        return Err(Error::FailedPrecondition(format!(
            "model '{model}' version {stable} already serves requests that name no version \
             (pinned, or the highest ready version); say which version to roll out from with \
             \"stable\" (--stable), or pin it first with `switchyard promote {model} V`"
        )));
    }
    spec.stable = Some(stable);
    spec.validate().map_err(Error::invalid)?;
    models.require_ready(model, stable)?;
    models.require_ready(model, spec.candidate)?;
    let by = format!("operator via {}", replica_name());
    let (_, started) = models.update_routing(model, |r| {
        if let Some(current) = r.rollout.as_ref().filter(|r| r.phase.active()) {
            return Err(Error::FailedPrecondition(format!(
                "model '{model}' already has a {} rollout of version {} (started {}); \
                 promote or abort it first",
                current.phase.as_str(),
                current.candidate(),
                super::state::format_time(current.started_ms)
            )));
        }
        let rollout = Rollout::start(spec.clone(), stable, now_ms(), &by);
        r.pinned_version = Some(stable);
        r.rollout = Some(rollout.clone());
        Ok(rollout)
    })?;
    started
}

/// Applies an operator's action to the model's rollout.
pub fn act(models: &ModelManager, model: &str, action: Action) -> Result<Rollout> {
    let by = format!("operator via {}", replica_name());
    let (_, outcome) = models.update_routing(model, |r| {
        let Some(rollout) = r.rollout.as_mut() else {
            return Err(no_rollout(model));
        };
        let now = now_ms();
        let done = match action {
            Action::Pause => rollout.pause(now, &by),
            Action::Resume => rollout.resume(now, &by),
            Action::Promote => rollout.promote(now, &by),
            Action::Abort => rollout.abort(now, &by),
        };
        done.map_err(|why| {
            Error::FailedPrecondition(format!(
                "cannot {} the rollout of model '{model}': {why}",
                action.as_str()
            ))
        })?;
        if action == Action::Promote {
            r.pinned_version = Some(rollout.candidate());
        }
        Ok(rollout.clone())
    })?;
    let rollout = outcome?;
    match action {
        Action::Promote => metrics::record_deployment(model, "succeeded"),
        Action::Abort => metrics::record_deployment(model, "aborted"),
        _ => {}
    }
    Ok(rollout)
}

pub fn no_rollout(model: &str) -> Error {
    Error::NotFound(format!(
        "model '{model}' has no rollout; start one with `switchyard rollout start {model} \
         --candidate V` (PUT /admin/models/{model}/rollout)"
    ))
}

/// Runs the analysis loop until shutdown.
pub async fn run(models: Arc<ModelManager>, stop: Signal) {
    let replica = replica_name();
    let missing: Arc<MissingSince> = Arc::default();
    stop.every(TICK, || {
        let due = due(&models);
        let models = models.clone();
        let replica = replica.clone();
        let missing = missing.clone();
        async move {
            if due.is_empty() {
                return;
            }
            // Registry writes block (file locks, object store calls): not on the serving threads.
            let _ = tokio::task::spawn_blocking(move || {
                for (model, live) in due {
                    decide(&models, &model, &live, &replica, &missing);
                }
            })
            .await;
        }
    })
    .await;
}

/// The running rollouts whose open interval ended, unless this replica already recorded the
/// interval as inconclusive (it keeps collecting until the data is enough).
fn due(models: &ModelManager) -> Vec<(String, Arc<LiveRollout>)> {
    let now = now_ms();
    models
        .snapshot()
        .models
        .iter()
        .filter_map(|(name, entry)| {
            let live = entry.rollout.as_ref()?;
            let r = &live.state;
            (r.phase == Phase::Running && now >= r.interval_end_ms())
                .then(|| (name.clone(), live.clone()))
        })
        .collect()
}

/// Whether both versions of a rollout can serve on this replica.
enum Availability {
    Ready,
    /// One is still loading (a replica that has just seen it): wait.
    Loading,
    /// One is absent or being unloaded: it may be a replica that has not seen it yet, so this
    /// becomes a rollback only once it lasted a whole interval.
    Missing(String),
    /// One failed to load here: a candidate that does not load everywhere must not be promoted.
    Failed(String),
}

fn availability(entry: &ModelEntry, r: &Rollout) -> Availability {
    for (role, v) in [("stable", r.stable), ("candidate", r.candidate())] {
        let why =
            |state: &str| format!("the {role} version {v} is not ready on this replica ({state})");
        match entry.versions.get(&v) {
            Some(VersionState::Ready(_)) => {}
            Some(VersionState::Loading) => return Availability::Loading,
            Some(VersionState::Failed(reason)) => {
                return Availability::Failed(why(&format!("failed: {reason}")));
            }
            Some(VersionState::Unloading) => return Availability::Missing(why("unloading")),
            None => return Availability::Missing(why("not loaded")),
        }
    }
    Availability::Ready
}

/// Since when (unix ms) a version of each model's rollout has been missing on this replica.
type MissingSince = Mutex<HashMap<String, (String, u64)>>;

/// What the controller does with an interval that ended, given the versions' availability.
#[derive(Debug, PartialEq)]
enum Next {
    Analyse,
    Wait,
    RollBack(String),
}

/// A failed version rolls back at once; a missing one after a whole interval of grace (counted
/// from when this replica first saw it missing); a loading one waits.
fn next_step(
    availability: Availability,
    since: &mut HashMap<String, (String, u64)>,
    model: &str,
    r: &Rollout,
    now: u64,
) -> Next {
    match availability {
        Availability::Ready => {
            since.remove(model);
            Next::Analyse
        }
        Availability::Loading => {
            // Not missing: a later absence starts its grace afresh.
            since.remove(model);
            Next::Wait
        }
        Availability::Failed(why) => {
            since.remove(model);
            Next::RollBack(why)
        }
        Availability::Missing(why) => {
            let first = match since.get(model) {
                Some((id, t)) if *id == r.id => *t,
                _ => {
                    since.insert(model.to_string(), (r.id.clone(), now));
                    now
                }
            };
            if now.saturating_sub(first) < r.spec.interval.as_millis() as u64 {
                Next::Wait
            } else {
                since.remove(model);
                Next::RollBack(why)
            }
        }
    }
}

/// Rolls the rollout back when a version cannot serve here (failed, or missing for a whole
/// interval); `true` when the interval must not be analysed now.
fn unavailable(
    models: &ModelManager,
    model: &str,
    live: &LiveRollout,
    replica: &str,
    missing: &MissingSince,
) -> bool {
    let r = &live.state;
    let availability = match models.snapshot().models.get(model) {
        Some(entry) => availability(entry, r),
        None => Availability::Ready,
    };
    let next = {
        let mut since = missing.lock().unwrap_or_else(|p| p.into_inner());
        next_step(availability, &mut since, model, r, now_ms())
    };
    let why = match next {
        Next::Analyse => return false,
        Next::Wait => return true,
        Next::RollBack(why) => why,
    };
    let id = r.id.as_str();
    let written = models.update_routing(model, |routing| {
        routing
            .rollout
            .as_mut()
            .filter(|ro| ro.id == id)
            .is_some_and(|ro| ro.roll_back_unavailable(&why, now_ms(), replica))
    });
    match written {
        Ok((_, true)) => metrics::record_deployment(model, "aborted"),
        Ok(_) => {}
        Err(e) => tracing::warn!(model, error = %e, "cannot record the rollback"),
    }
    true
}

/// Analyses the interval `live` measured and records the decision.
fn decide(
    models: &ModelManager,
    model: &str,
    live: &LiveRollout,
    replica: &str,
    missing: &MissingSince,
) {
    if unavailable(models, model, live, replica, missing) {
        return;
    }
    let summary = live.window.summary();
    let checks = analyse(&summary, &live.state.spec);
    let verdict = Verdict::combine(&checks);
    let (id, interval) = (live.state.id.as_str(), live.state.interval);
    if verdict == Verdict::Inconclusive
        && live
            .state
            .history
            .iter()
            .rev()
            .any(|e| e.interval == interval && e.decision == Decision::Inconclusive)
    {
        // Already recorded; keep collecting without writing every tick.
        return;
    }
    let written = models.update_routing(model, |r| {
        let rollout = r.rollout.as_mut().filter(|ro| ro.id == id)?;
        let decision = rollout.conclude(interval, checks.clone(), now_ms(), replica)?;
        if decision == Decision::Succeeded {
            r.pinned_version = Some(rollout.candidate());
        }
        Some(decision)
    });
    match written {
        Ok((_, Some(decision))) => {
            for c in &checks {
                metrics::record_rollout_check(model, &c.check, c.verdict.as_str());
            }
            if !summary.agreement.disagreement.is_nan() {
                metrics::set_disagreement(
                    model,
                    live.state.candidate(),
                    summary.agreement.disagreement,
                );
            }
            match decision {
                Decision::Succeeded => metrics::record_deployment(model, "succeeded"),
                Decision::RolledBack => metrics::record_deployment(model, "aborted"),
                _ => {}
            }
        }
        Ok((_, None)) => {}
        Err(e) => {
            tracing::warn!(model, error = %e, "cannot record the rollout decision; retrying at the next tick")
        }
    }
}

/// Updates the gauges when this replica starts serving a new state of a model's rollout (its
/// own decision or one read from the registry). `lead_time_from` is the candidate's training
/// date, for the lead time of a promotion.
pub fn observe(
    model: &str,
    previous: Option<&Rollout>,
    next: &Rollout,
    lead_time_from: Option<std::time::SystemTime>,
) {
    let all: Vec<&'static str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
    metrics::set_rollout_state(model, next.phase.as_str(), &all);
    let (stable_share, candidate_share) = match next.phase {
        Phase::Succeeded => (0.0, 1.0),
        Phase::Aborted => (1.0, 0.0),
        _ => (1.0 - next.weight(), next.weight()),
    };
    metrics::set_rollout_weight(model, next.stable, stable_share);
    metrics::set_rollout_weight(model, next.candidate(), candidate_share);
    let newly_ended =
        !next.phase.active() && previous.is_none_or(|p| p.id != next.id || p.phase.active());
    if !newly_ended {
        return;
    }
    let now = now_ms();
    match next.phase {
        Phase::Aborted => {
            let from = next
                .failed_interval_end_ms
                .or(next.finished_ms)
                .unwrap_or(now);
            let seconds = now.saturating_sub(from) as f64 / 1000.0;
            // A state read long after it was written (a restart) is not a time to restore.
            if previous.is_some() {
                metrics::record_rollback(model, seconds);
            }
        }
        Phase::Succeeded => {
            if let (Some(trained), Some(done)) = (lead_time_from, next.finished_ms) {
                let trained_ms = trained
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                metrics::set_lead_time(model, done.saturating_sub(trained_ms) as f64 / 1000.0);
            }
        }
        _ => {}
    }
}

/// Zeroes a removed model's rollout gauges (a series cannot be deleted; a stale 1 would say the
/// model is still being rolled out).
pub fn forget(model: &str, last: &Rollout) {
    let all: Vec<&'static str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
    metrics::set_rollout_state(model, "", &all);
    metrics::set_rollout_weight(model, last.stable, 0.0);
    metrics::set_rollout_weight(model, last.candidate(), 0.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::RolloutSpec;

    fn rollout() -> Rollout {
        let mut spec = RolloutSpec::new(2);
        spec.interval = Duration::from_secs(10);
        Rollout::start(spec, 1, 0, "test")
    }

    fn entry(stable: Option<VersionState>) -> ModelEntry {
        let mut e = ModelEntry::default();
        if let Some(s) = stable {
            e.versions.insert(1, s);
        }
        e
    }

    #[test]
    fn availability_names_the_version_and_its_state() {
        let r = rollout();
        assert!(matches!(
            availability(&entry(Some(VersionState::Loading)), &r),
            Availability::Loading
        ));
        match availability(&entry(Some(VersionState::Failed("bad sha".into()))), &r) {
            Availability::Failed(why) => {
                assert!(
                    why.contains("stable version 1") && why.contains("bad sha"),
                    "{why}"
                )
            }
            _ => panic!("a failed version is a failure"),
        }
        match availability(&entry(None), &r) {
            Availability::Missing(why) => assert!(why.contains("not loaded"), "{why}"),
            _ => panic!("an absent version is missing"),
        }
        assert!(matches!(
            availability(&entry(Some(VersionState::Unloading)), &r),
            Availability::Missing(_)
        ));
    }

    #[test]
    fn missing_versions_get_one_interval_of_grace_and_loading_waits() {
        let r = rollout();
        let mut since = HashMap::new();
        let missing = || Availability::Missing("gone".into());
        assert_eq!(next_step(missing(), &mut since, "m", &r, 1_000), Next::Wait);
        assert_eq!(
            next_step(missing(), &mut since, "m", &r, 10_999),
            Next::Wait
        );
        // Loading in between: the grace starts again.
        assert_eq!(
            next_step(Availability::Loading, &mut since, "m", &r, 5_000),
            Next::Wait
        );
        assert_eq!(
            next_step(missing(), &mut since, "m", &r, 11_000),
            Next::Wait
        );
        assert_eq!(
            next_step(missing(), &mut since, "m", &r, 21_000),
            Next::RollBack("gone".into())
        );
        assert_eq!(
            next_step(
                Availability::Failed("x".into()),
                &mut since,
                "m",
                &r,
                21_001
            ),
            Next::RollBack("x".into())
        );
        assert_eq!(
            next_step(Availability::Ready, &mut since, "m", &r, 21_002),
            Next::Analyse
        );
        assert!(since.is_empty());
    }
}
