//! What a finished run leaves for the trace ([`Run`]), and a step's record: what the trace shows of each step (its index, op, echoed keys, result and
//! error, and for a background open when it finished). Drivers fill it; only
//! [`crate::sim::trace`] renders it. Also the check of a step's outcome against its
//! `expect_error`.

use super::scenario::{Action, ExpectError, Step};
use crate::client::ScriptedAgent;
use crate::hub::Hub;
use crate::ids::{AgentId, ChannelId};
use crate::proto::HubError;
use crate::time::Timestamp;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// An agent as the trace shows it.
#[derive(Clone, Debug)]
pub struct RunAgent {
    /// The registered id.
    pub id: AgentId,
    /// The script and how far it ran.
    pub model: ScriptedAgent,
    /// Distinct envelopes whose handler finished on a live connection (`expect:`'s
    /// `handled`; network runs fill it from the client's log).
    pub handled: usize,
}

/// Everything a finished run leaves for the trace.
#[derive(Clone, Debug)]
pub struct Run {
    /// The hub at the end.
    pub hub: Hub,
    /// Agents in registration order.
    pub agents: Vec<RunAgent>,
    /// Channel labels.
    pub labels: BTreeMap<ChannelId, String>,
    /// One record per step, raw (ids and timestamps not yet normalised).
    pub steps: Vec<StepRecord>,
    /// Steps whose outcome did not match their `expect_error`.
    pub mismatches: Vec<String>,
    /// The scenario epoch.
    pub epoch: Timestamp,
}

/// One step as the trace shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    /// The step's index.
    pub idx: usize,
    /// Its op.
    pub op: String,
    /// The step keys the trace echoes, as written.
    pub echo: Map<String, Value>,
    /// What the step returned (a label, an envelope id, a checkpoint, a pulled envelope's id).
    pub result: Option<Value>,
    /// A pulled envelope's event type (`next_envelope`).
    pub event_type: Option<Value>,
    /// The hub clock after an `advance`.
    pub now: Option<Timestamp>,
    /// A background (`wait: false`) open that started.
    pub background: bool,
    /// What the step failed with (`None`: it succeeded; a background open: how it finished).
    pub error: Option<HubError>,
    /// When a background open finished.
    pub completion: Option<Completion>,
}

/// When a background open finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// After this step.
    AfterStep(usize),
    /// Never: it was still pending when the run ended (the reference runner cancels it).
    PendingAtEnd,
}

impl StepRecord {
    /// A step's record before it runs.
    pub fn new(idx: usize, step: &Step) -> StepRecord {
        StepRecord {
            idx,
            op: step.op.clone(),
            echo: step.echo.clone(),
            result: None,
            event_type: None,
            now: None,
            background: false,
            error: None,
            completion: None,
        }
    }

    /// Completes the record with the step's outcome; returns the expectation mismatch, if any
    /// (a background open is checked when it finishes).
    pub fn close(&mut self, step: &Step, result: Result<(), HubError>) -> Option<String> {
        self.error = result.err();
        let background =
            matches!(step.action, Action::Open { wait: false, .. }) && self.error.is_none();
        (!background && !matches_expectation(step.expect_error.as_ref(), self.error.as_ref()))
            .then(|| mismatch(self.idx, step, self.error.as_ref()))
    }

    /// A background open finished after step `after` (recorded once).
    pub fn complete(&mut self, after: usize, outcome: &Result<(), HubError>) {
        if self.completion.is_none() {
            self.completion = Some(Completion::AfterStep(after));
            self.error = outcome.as_ref().err().cloned();
        }
    }

    /// A background open still pending when the run ends.
    pub fn pending_at_end(&mut self) {
        if self.completion.is_none() {
            self.completion = Some(Completion::PendingAtEnd);
            self.error = None;
        }
    }

    /// A background open's outcome, as recorded, against its step's `expect_error`.
    pub fn background_mismatch(&self, step: &Step) -> Option<String> {
        if matches_expectation(step.expect_error.as_ref(), self.error.as_ref()) {
            return None;
        }
        Some(mismatch(self.idx, step, self.error.as_ref()).replacen(
            &format!("step {} ({})", self.idx, step.op),
            &format!("step {} (background open)", self.idx),
            1,
        ))
    }
}

/// A step with no expectation must succeed; one with an expectation must fail as expected, or
/// succeed if it may.
pub(crate) fn matches_expectation(
    expected: Option<&ExpectError>,
    error: Option<&HubError>,
) -> bool {
    match (expected, error) {
        (None, error) => error.is_none(),
        (Some(expected), None) => expected.may_succeed,
        (Some(expected), Some(error)) => expected.matches(&error.type_name, &error.message),
    }
}

pub(crate) fn mismatch(idx: usize, step: &Step, error: Option<&HubError>) -> String {
    let expected = match &step.expect_error {
        None => "success".to_string(),
        Some(e) => e.to_string(),
    };
    let got = error.map_or("success".to_string(), |e| {
        format!("{}: {}", e.type_name, e.message)
    });
    format!("step {idx} ({}): expected {expected}, got {got}", step.op)
}
