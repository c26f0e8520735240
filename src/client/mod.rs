//! Clients of the hub: scripted agents (the model side) and ag2's default notify-handler logic
//! (`handler`). Nothing here knows how envelopes travel; drivers feed deliveries in and post what
//! comes out.

pub mod handler;
pub mod host;
pub mod remote;

use crate::json::py_repr;
use crate::proto::HubError;
use serde_json::{Map, Value};

/// How an agent reacts to deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerMode {
    /// ag2's default handler: ack invites, run the model on substantive envelopes when it may speak.
    Default,
    /// Ack invites; never run the model.
    AckOnly,
    /// Ignore everything, invites included.
    Silent,
    /// ag2's `HumanClient` (remote mode only): optionally ack invites before queueing them,
    /// queue every delivery for `next_envelope`, and answer each substantive envelope from
    /// someone else with the next scripted reply (a push callback; a refused post is skipped).
    Human {
        /// `auto_ack_invites`.
        auto_ack: bool,
    },
}

/// What a scripted tool does when called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolBehaviour {
    /// Returns a fixed value.
    Returns(String),
    /// Returns `Handoff(target=<name>, reason=<argument reason>)`.
    Handoff(String),
    /// Returns `Finish(summary=<argument summary or default>, reason=<reason>)`.
    Finish {
        /// The finish reason (ag2 default `finished`).
        reason: String,
        /// The summary used when the call gives none.
        summary: String,
    },
}

/// A tool an agent can call from its script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolSpec {
    /// The tool name the script calls.
    pub name: String,
    /// What it does.
    pub behaviour: ToolBehaviour,
}

impl ToolSpec {
    /// The one string parameter of the reference runner's tools.
    fn parameter(&self) -> &'static str {
        match self.behaviour {
            ToolBehaviour::Finish { .. } => "summary",
            _ => "reason",
        }
    }
}

/// One model call's scripted answer within a turn.
#[derive(Clone, Debug, PartialEq)]
pub enum TurnItem {
    /// A final text answer (`""` is a silent round).
    Text(String),
    /// The model raises.
    Raise {
        /// The Python exception type.
        type_name: String,
        /// Its message.
        message: String,
    },
    /// The model calls a tool; the next item answers after the tool ran.
    ToolCall {
        /// The tool name.
        name: String,
        /// Its arguments.
        arguments: Map<String, Value>,
    },
}

/// What a tool call produced, for the workflow round encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolRun {
    /// The tool called.
    pub name: String,
    /// The call's `reason` argument when it is a string, else `""` (what ag2's round encoder
    /// reads for `tool_called` routing).
    pub call_reason: String,
    /// A `Handoff` result: `(target, reason)`.
    pub handoff: Option<(String, String)>,
    /// A `Finish` result: `(reason, summary)`.
    pub finish: Option<(String, String)>,
}

/// The result of one `Agent.ask`.
#[derive(Clone, Debug, PartialEq)]
pub struct TurnOutcome {
    /// The final text, or the exception that ended the turn.
    pub reply: Result<String, HubError>,
    /// Tool calls in the order the model made them.
    pub tools: Vec<ToolRun>,
    /// How many event-loop iterations the turn spans in ag2 (see [`cost`]).
    pub iterations: u64,
}

/// Event-loop iterations an `Agent.ask` spans in ag2 1.2.1 with the reference runner's scripted
/// model, measured by counting `BaseEventLoop._run_once` calls. They only decide the order in
/// which concurrent turns of different agents finish.
pub mod cost {
    /// A turn ending in a text answer.
    pub const TEXT: u64 = 22;
    /// A turn whose model raises.
    pub const RAISE: u64 = 12;
    /// Each successful tool call.
    pub const TOOL: u64 = 48;
    /// A turn ending with an unknown tool (`ToolNotFoundError`).
    pub const TOOL_NOT_FOUND: u64 = 55;
    /// A turn ending with an argument validation error.
    pub const TOOL_INVALID: u64 = 60;
}

/// A scripted agent: its script, tools and handler mode, and how far the script has run.
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptedAgent {
    /// The registered name.
    pub name: String,
    /// How it reacts to deliveries.
    pub handler: HandlerMode,
    /// Callable tools.
    pub tools: Vec<ToolSpec>,
    /// One entry per `Agent.ask`; after the end every turn answers `""`.
    pub turns: Vec<Vec<TurnItem>>,
    /// Turns asked so far (`model_turns` in traces).
    pub used: usize,
}

impl ScriptedAgent {
    /// Runs the next scripted turn (ag2's `Agent.ask` with the runner's `ScriptedConfig`).
    pub fn ask(&mut self) -> TurnOutcome {
        let silent = [TurnItem::Text(String::new())];
        let turn: &[TurnItem] = self.turns.get(self.used).map_or(&silent, Vec::as_slice);
        self.used += 1;
        let mut tools = Vec::new();
        let mut iterations = 0;
        for item in turn {
            match item {
                TurnItem::Text(text) => {
                    return TurnOutcome {
                        reply: Ok(text.clone()),
                        tools,
                        iterations: iterations + cost::TEXT,
                    }
                }
                TurnItem::Raise { type_name, message } => {
                    return TurnOutcome {
                        reply: Err(HubError::named(type_name, message)),
                        tools,
                        iterations: iterations + cost::RAISE,
                    }
                }
                TurnItem::ToolCall { name, arguments } => match self.run_tool(name, arguments) {
                    Ok(run) => {
                        tools.push(run);
                        iterations += cost::TOOL;
                    }
                    Err((error, cost)) => {
                        return TurnOutcome {
                            reply: Err(error),
                            tools,
                            iterations: iterations + cost,
                        }
                    }
                },
            }
        }
        // A turn ending in a tool call: the model's answer after the tool ran is "".
        TurnOutcome {
            reply: Ok(String::new()),
            tools,
            iterations: iterations + cost::TEXT,
        }
    }

    fn run_tool(
        &self,
        name: &str,
        arguments: &Map<String, Value>,
    ) -> Result<ToolRun, (HubError, u64)> {
        let Some(tool) = self.tools.iter().find(|tool| tool.name == name) else {
            return Err((
                HubError::named("ToolNotFoundError", &format!("Tool `{name}` not found")),
                cost::TOOL_NOT_FOUND,
            ));
        };
        let parameter = tool.parameter();
        let argument = match arguments.get(parameter) {
            None => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => return Err((validation_error(parameter, other), cost::TOOL_INVALID)),
        };
        let mut run = ToolRun {
            name: name.to_string(),
            call_reason: arguments
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            handoff: None,
            finish: None,
        };
        match &tool.behaviour {
            ToolBehaviour::Returns(_) => {}
            ToolBehaviour::Handoff(target) => run.handoff = Some((target.clone(), argument)),
            ToolBehaviour::Finish { reason, summary } => {
                let summary = if argument.is_empty() {
                    summary.clone()
                } else {
                    argument
                };
                run.finish = Some((reason.clone(), summary));
            }
        }
        Ok(run)
    }
}

/// pydantic's message for a non-string argument to a `str` parameter.
fn validation_error(parameter: &str, value: &Value) -> HubError {
    let input_type = crate::json::py_type_name(value);
    HubError::named(
        "ValidationError",
        &format!(
            "1 validation error for fn\n{parameter}\n  Input should be a valid string [type=string_type, input_value={}, input_type={input_type}]\n    For further information visit https://errors.pydantic.dev/2.14/v/string_type",
            py_repr(value)
        ),
    )
}
