//! Test-only fault injection: makes a storage step fail (or panic) on purpose, so tests can
//! watch a real node stop on a storage fault. Driven by the environment variable
//! `RAFTPAY_FAULT`, read once per process; compiled in debug builds only — in a release build
//! [`check`] is a no-op and the variable is ignored (with a warning at start).
//!
//! Syntax: items separated by commas, each one of
//! - `<point>:after=N`: the first N passes through `<point>` succeed, every later one fails with
//!   an injected I/O error (the failure is sticky, like a dead disk);
//! - `<point>:panic-after=N`: the first N passes succeed, the next one panics;
//! - `linger-ms=N`: how long a node that stopped on a fault keeps answering (`503`s, `/health`
//!   with the fault) before it exits, so a test can see it.
//!
//! Points: `log-sync` (the log flusher, just before its group fdatasync) and `state-apply` (the
//! state machine, before it writes an apply's batch). Example:
//! `RAFTPAY_FAULT=log-sync:after=200,linger-ms=1500`.
//!
//! This module must never change behaviour when the variable is unset, and never exist in a
//! release build.

use std::io;
use std::time::Duration;

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// `store::log` flusher, before `Storage::sync_log`.
    LogSync,
    /// `store::state_machine`, before an apply's batch is written.
    StateApply,
}

impl FaultPoint {
    #[cfg(debug_assertions)]
    const ALL: [FaultPoint; 2] = [FaultPoint::LogSync, FaultPoint::StateApply];

    /// The name used in `RAFTPAY_FAULT`.
    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::LogSync => "log-sync",
            FaultPoint::StateApply => "state-apply",
        }
    }

    #[cfg(debug_assertions)]
    fn slot(self) -> usize {
        match self {
            FaultPoint::LogSync => 0,
            FaultPoint::StateApply => 1,
        }
    }
}

/// The environment variable read by [`init`].
pub const ENV_FAULT: &str = "RAFTPAY_FAULT";

/// What happens at a point once its passes are used up.
#[cfg(debug_assertions)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// An injected I/O error, on this pass and every later one.
    Error,
    /// A panic.
    Panic,
}

/// A parsed `RAFTPAY_FAULT`: per point, the passes that succeed and what happens next.
#[cfg(debug_assertions)]
#[derive(Debug, Default)]
pub struct FaultPlan {
    points: [Option<(u64, FaultAction)>; 2],
    passes: [std::sync::atomic::AtomicU64; 2],
    /// See `linger-ms` above.
    pub linger: Duration,
}

/// `RAFTPAY_FAULT` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ENV_FAULT}: {0}")]
pub struct FaultSpecError(String);

#[cfg(debug_assertions)]
impl FaultPlan {
    /// Parses the syntax of the module documentation.
    ///
    /// # Errors
    /// On an unknown point or action, a missing or non-numeric count, or a point given twice.
    pub fn parse(spec: &str) -> Result<FaultPlan, FaultSpecError> {
        let mut plan = FaultPlan::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let number = |text: &str| {
                text.parse::<u64>()
                    .map_err(|_| FaultSpecError(format!("{item:?}: {text:?} is not a count")))
            };
            if let Some(ms) = item.strip_prefix("linger-ms=") {
                plan.linger = Duration::from_millis(number(ms)?);
                continue;
            }
            let (name, rule) = item
                .split_once(':')
                .ok_or_else(|| FaultSpecError(format!("{item:?}: expected <point>:<rule>")))?;
            let point = FaultPoint::ALL
                .into_iter()
                .find(|p| p.name() == name)
                .ok_or_else(|| FaultSpecError(format!("{item:?}: unknown point {name:?}")))?;
            let (action, count) = if let Some(n) = rule.strip_prefix("after=") {
                (FaultAction::Error, number(n)?)
            } else if let Some(n) = rule.strip_prefix("panic-after=") {
                (FaultAction::Panic, number(n)?)
            } else {
                return Err(FaultSpecError(format!(
                    "{item:?}: expected after=N or panic-after=N"
                )));
            };
            let slot = &mut plan.points[point.slot()];
            if slot.is_some() {
                return Err(FaultSpecError(format!("{name} given twice")));
            }
            *slot = Some((count, action));
        }
        Ok(plan)
    }

    /// One pass through `point`: `None` while it should succeed.
    pub fn pass(&self, point: FaultPoint) -> Option<FaultAction> {
        let (allowed, action) = self.points[point.slot()]?;
        let passed = self.passes[point.slot()].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (passed >= allowed).then_some(action)
    }
}

#[cfg(debug_assertions)]
/// Runs one pass of `point` against `plan`: an error or a panic once the plan says so.
///
/// # Errors
/// The injected I/O error.
///
/// # Panics
/// When the plan says `panic-after` and its passes are used up.
pub fn plan_check(plan: &FaultPlan, point: FaultPoint) -> io::Result<()> {
    match plan.pass(point) {
        None => Ok(()),
        Some(FaultAction::Error) => Err(io::Error::other(format!(
            "injected fault at {} ({ENV_FAULT})",
            point.name()
        ))),
        Some(FaultAction::Panic) => {
            panic!("injected panic at {} ({ENV_FAULT})", point.name())
        }
    }
}

#[cfg(debug_assertions)]
mod active {
    use std::sync::OnceLock;

    use super::{FaultPlan, FaultSpecError, ENV_FAULT};

    static PLAN: OnceLock<Option<FaultPlan>> = OnceLock::new();

    pub(super) fn init() -> Result<(), FaultSpecError> {
        let spec = match std::env::var(ENV_FAULT) {
            Ok(spec) => spec,
            Err(std::env::VarError::NotPresent) => return Ok(()),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(FaultSpecError("not valid UTF-8".into()))
            }
        };
        let plan = FaultPlan::parse(&spec)?;
        tracing::warn!(fault = %spec, "fault injection armed ({ENV_FAULT}); test builds only");
        // A second init (a second node in one process) keeps the first plan.
        let _ = PLAN.set(Some(plan));
        Ok(())
    }

    pub(super) fn plan() -> Option<&'static FaultPlan> {
        PLAN.get().and_then(Option::as_ref)
    }
}

/// Reads `RAFTPAY_FAULT` (once per process; later calls keep the first plan).
///
/// # Errors
/// When the variable is set but does not parse (debug builds only).
pub fn init() -> Result<(), FaultSpecError> {
    #[cfg(debug_assertions)]
    {
        active::init()
    }
    #[cfg(not(debug_assertions))]
    {
        if std::env::var_os(ENV_FAULT).is_some() {
            tracing::warn!("{ENV_FAULT} is ignored: fault injection exists in debug builds only");
        }
        Ok(())
    }
}

/// One pass through `point`: `Ok` unless `RAFTPAY_FAULT` injects a fault here.
///
/// # Errors
/// The injected I/O error (debug builds only).
///
/// # Panics
/// When `RAFTPAY_FAULT` asks for a panic here (debug builds only).
#[inline]
pub fn check(point: FaultPoint) -> io::Result<()> {
    #[cfg(debug_assertions)]
    if let Some(plan) = active::plan() {
        return plan_check(plan, point);
    }
    let _ = point;
    Ok(())
}

/// How long a node that stopped on a fault keeps answering before it exits (`linger-ms`; zero
/// unless injected).
pub fn linger() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(plan) = active::plan() {
        return plan.linger;
    }
    Duration::ZERO
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    #[test]
    fn a_plan_fails_its_point_after_n_passes_and_keeps_failing() {
        let plan = FaultPlan::parse("log-sync:after=2, linger-ms=1500").expect("parse");
        assert_eq!(plan.linger, Duration::from_millis(1500));
        assert!(plan_check(&plan, FaultPoint::LogSync).is_ok());
        assert!(plan_check(&plan, FaultPoint::LogSync).is_ok());
        for _ in 0..3 {
            let error = plan_check(&plan, FaultPoint::LogSync).expect_err("injected");
            assert!(error.to_string().contains("log-sync"), "{error}");
        }
        // Another point is untouched.
        for _ in 0..5 {
            assert!(plan_check(&plan, FaultPoint::StateApply).is_ok());
        }
    }

    #[test]
    fn a_panic_plan_panics_after_n_passes() {
        let plan = FaultPlan::parse("state-apply:panic-after=1").expect("parse");
        assert!(plan_check(&plan, FaultPoint::StateApply).is_ok());
        let panicked = std::panic::catch_unwind(|| plan_check(&plan, FaultPoint::StateApply));
        assert!(panicked.is_err(), "the second pass must panic");
    }

    #[test]
    fn bad_specs_are_refused() {
        for spec in [
            "disk:after=1",
            "log-sync",
            "log-sync:after=",
            "log-sync:after=x",
            "log-sync:sometimes=1",
            "linger-ms=soon",
            "log-sync:after=1,log-sync:panic-after=2",
        ] {
            assert!(FaultPlan::parse(spec).is_err(), "{spec} must be refused");
        }
        let empty = FaultPlan::parse("").expect("empty is no fault");
        assert_eq!(empty.pass(FaultPoint::LogSync), None);
    }

    #[test]
    fn without_the_variable_nothing_is_injected() {
        // The unit tests never set RAFTPAY_FAULT: every pass succeeds.
        if std::env::var_os(ENV_FAULT).is_none() {
            for _ in 0..10 {
                assert!(check(FaultPoint::LogSync).is_ok());
                assert!(check(FaultPoint::StateApply).is_ok());
            }
            assert_eq!(linger(), Duration::ZERO);
        }
    }
}
