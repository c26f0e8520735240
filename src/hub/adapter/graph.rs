//! The workflow transition graph: ag2's `TransitionGraph.loads` and its built-in targets and
//! conditions, with the errors ag2 raises for malformed graph dicts.
//!
//! ag2 accepts any JSON value in graph arguments and only fails later (at fold time) on some of
//! them; hubsim refuses those at load time with a `ProtocolError("invalid workflow graph:
//! hubsim: ...")` instead. The README's conformance section lists them.

use crate::json::{py_eq, py_missing_args, py_repr, py_str_repr, py_truthy, py_type_name};
use crate::proto::HubError;
use serde_json::{Map, Value};

/// A condition deciding whether a transition fires.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `always`.
    Always,
    /// `from_speaker(agent_id)`: the sender equals `agent_id`.
    FromSpeaker(Value),
    /// `tool_called(tool_name)`: a packet whose `routing.tool` equals `tool_name`.
    ToolCalled(Value),
    /// `context_equals(key, value)`: `context_vars.get(key) == value` (missing is `None`).
    ContextEquals {
        /// The context key.
        key: String,
        /// The value compared against.
        value: Value,
    },
}

/// Where the next turn goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// `agent(agent_id)`.
    Agent(Value),
    /// `round_robin`: the participant after the last speaker.
    RoundRobin,
    /// `stay`: the last speaker again.
    Stay,
    /// `revert_to_initiator`: the channel creator.
    RevertToInitiator,
    /// `terminate(reason="after_work")`: close the channel.
    Terminate(String),
}

/// One graph edge.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// When it fires.
    pub when: Condition,
    /// Where it goes.
    pub then: Target,
    /// Lower priorities are checked first; ties keep list order.
    pub priority: i64,
}

/// A loaded graph. `transitions` are already in evaluation order.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    /// The first expected speaker (any value; usually an agent id).
    pub initial_speaker: Value,
    /// Transitions sorted by priority (stable).
    pub transitions: Vec<Transition>,
    /// Used when no transition fires; a missing or null default is `terminate("after_work")`.
    pub default_target: Target,
    /// Closes the channel with `max_turns` once the turn count reaches it.
    pub max_turns: Option<i64>,
}

/// The outcome of resolving a target.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The next speaker; `None` terminates.
    pub next_speaker: Option<Value>,
    /// The close reason when terminating.
    pub close_reason: String,
}

/// What targets and conditions see: the state after the fold's bookkeeping.
pub struct Context<'a> {
    /// Participant ids (as strings) in rotation order.
    pub order: &'a [String],
    /// The sender of the envelope being folded (also the new last speaker).
    pub sender: &'a str,
    /// The channel creator.
    pub creator: &'a str,
    /// Context variables after this envelope's updates.
    pub context_vars: &'a Map<String, Value>,
    /// `routing.tool` of the envelope when it is a packet.
    pub packet_tool: Option<&'a Value>,
}

impl Graph {
    /// ag2's `TransitionGraph.loads(dict)`.
    ///
    /// # Errors
    /// `KeyError`/`TypeError` for malformed dicts, `ProtocolError("invalid workflow graph: ...")`
    /// for unknown names (ag2's `WorkflowGraphError`, wrapped by the adapter) and for values
    /// hubsim refuses at load time.
    pub fn load(data: &Map<String, Value>) -> Result<Graph, HubError> {
        let initial_speaker = data
            .get("initial_speaker")
            .ok_or_else(|| HubError::key("initial_speaker"))?
            .clone();
        let mut transitions = Vec::new();
        if let Some(items) = data.get("transitions").filter(|value| py_truthy(value)) {
            for item in py_iterate(items)? {
                transitions.push(load_transition(&item)?);
            }
        }
        let default_target = load_target(data.get("default_target").unwrap_or(&Value::Null))?;
        let max_turns = match data.get("max_turns") {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) if number.is_i64() => number.as_i64(),
            Some(other) => {
                return Err(graph_error(format!(
                    "hubsim: max_turns must be an integer or null, got {}",
                    py_repr(other)
                )))
            }
        };
        transitions.sort_by_key(|transition| transition.priority);
        Ok(Graph {
            initial_speaker,
            transitions,
            default_target,
            max_turns,
        })
    }

    /// The names of tools that `tool_called` conditions route on.
    pub fn tool_called_names(&self) -> impl Iterator<Item = &Value> {
        self.transitions
            .iter()
            .filter_map(|transition| match &transition.when {
                Condition::ToolCalled(name) => Some(name),
                _ => None,
            })
    }

    /// ag2's `WorkflowAdapter._select`: the first firing transition's target, else the default.
    pub fn select(&self, context: &Context<'_>) -> Decision {
        let target = self
            .transitions
            .iter()
            .find(|transition| transition.when.evaluate(context))
            .map_or(&self.default_target, |transition| &transition.then);
        target.resolve(context)
    }
}

impl Condition {
    fn evaluate(&self, context: &Context<'_>) -> bool {
        match self {
            Condition::Always => true,
            Condition::FromSpeaker(agent) => py_eq(&Value::from(context.sender), agent),
            Condition::ToolCalled(tool) => {
                context.packet_tool.is_some_and(|value| py_eq(value, tool))
            }
            Condition::ContextEquals { key, value } => {
                py_eq(context.context_vars.get(key).unwrap_or(&Value::Null), value)
            }
        }
    }
}

impl Target {
    fn resolve(&self, context: &Context<'_>) -> Decision {
        let speaker = |text: &str| Decision {
            next_speaker: Some(Value::from(text)),
            close_reason: String::new(),
        };
        match self {
            Target::Agent(Value::Null) => Decision {
                next_speaker: None,
                close_reason: String::new(),
            },
            Target::Agent(agent) => Decision {
                next_speaker: Some(agent.clone()),
                close_reason: String::new(),
            },
            Target::RoundRobin => {
                if context.order.is_empty() {
                    return Decision {
                        next_speaker: None,
                        close_reason: "no_participants".to_string(),
                    };
                }
                let next = match context.order.iter().position(|id| id == context.sender) {
                    Some(idx) => (idx + 1) % context.order.len(),
                    None => 0,
                };
                speaker(&context.order[next])
            }
            Target::Stay => speaker(context.sender),
            Target::RevertToInitiator => speaker(context.creator),
            Target::Terminate(reason) => Decision {
                next_speaker: None,
                close_reason: reason.clone(),
            },
        }
    }
}

fn graph_error(message: String) -> HubError {
    HubError::protocol(format!("invalid workflow graph: {message}"))
}

fn load_transition(data: &Value) -> Result<Transition, HubError> {
    let map = subscript(data)?;
    let when = load_condition(map.get("when").ok_or_else(|| HubError::key("when"))?)?;
    let then = load_target(map.get("then").ok_or_else(|| HubError::key("then"))?)?;
    let priority = match map.get("priority") {
        None => 0,
        Some(Value::Number(number)) if number.is_i64() => number.as_i64().expect("checked is_i64"),
        Some(other) => {
            return Err(graph_error(format!(
                "hubsim: priority must be an integer, got {}",
                py_repr(other)
            )))
        }
    };
    Ok(Transition {
        when,
        then,
        priority,
    })
}

fn load_condition(data: &Value) -> Result<Condition, HubError> {
    let map = subscript(data)?;
    let name = registry_name(map)?;
    let known = ["always", "from_speaker", "tool_called", "context_equals"];
    if !name.as_str().is_some_and(|name| known.contains(&name)) {
        return Err(graph_error(format!(
            "no transition condition registered for {}",
            py_repr(&name)
        )));
    }
    let name = name.as_str().expect("checked above");
    let (class, params): (&str, &[&str]) = match name {
        "always" => ("Always", &[]),
        "from_speaker" => ("FromSpeaker", &["agent_id"]),
        "tool_called" => ("ToolCalled", &["tool_name"]),
        _ => ("ContextEquals", &["key", "value"]),
    };
    let mut args = bind_args(class, map.get("args"), params, &[])?;
    Ok(match name {
        "always" => Condition::Always,
        "from_speaker" => Condition::FromSpeaker(args.remove(0)),
        "tool_called" => Condition::ToolCalled(args.remove(0)),
        _ => {
            let key = match args.remove(0) {
                Value::String(key) => key,
                other => {
                    return Err(graph_error(format!(
                        "hubsim: context_equals key must be a string, got {}",
                        py_repr(&other)
                    )))
                }
            };
            Condition::ContextEquals {
                key,
                value: args.remove(0),
            }
        }
    })
}

fn load_target(data: &Value) -> Result<Target, HubError> {
    if data.is_null() {
        return Ok(Target::Terminate("after_work".to_string()));
    }
    let map = subscript(data)?;
    let name = registry_name(map)?;
    let known = [
        "agent",
        "round_robin",
        "stay",
        "revert_to_initiator",
        "terminate",
    ];
    if !name.as_str().is_some_and(|name| known.contains(&name)) {
        return Err(graph_error(format!(
            "no transition target registered for {}",
            py_repr(&name)
        )));
    }
    let name = name.as_str().expect("checked above");
    let (class, params, optional): (&str, &[&str], &[&str]) = match name {
        "agent" => ("AgentTarget", &["agent_id"], &[]),
        "round_robin" => ("RoundRobinTarget", &[], &[]),
        "stay" => ("StayTarget", &[], &[]),
        "revert_to_initiator" => ("RevertToInitiatorTarget", &[], &[]),
        _ => ("TerminateTarget", &[], &["reason"]),
    };
    let mut args = bind_args(class, map.get("args"), params, optional)?;
    Ok(match name {
        "agent" => Target::Agent(args.remove(0)),
        "round_robin" => Target::RoundRobin,
        "stay" => Target::Stay,
        "revert_to_initiator" => Target::RevertToInitiator,
        _ => match args.pop().unwrap_or(Value::Null) {
            Value::Null => Target::Terminate("after_work".to_string()),
            Value::String(reason) => Target::Terminate(reason),
            other => {
                return Err(graph_error(format!(
                    "hubsim: terminate reason must be a string, got {}",
                    py_repr(&other)
                )))
            }
        },
    })
}

/// `data["name"]`, refusing unhashable names as Python's dict lookup does.
fn registry_name(map: &Map<String, Value>) -> Result<Value, HubError> {
    let name = map.get("name").ok_or_else(|| HubError::key("name"))?;
    match name {
        Value::Array(_) => Err(HubError::type_error("unhashable type: 'list'")),
        Value::Object(_) => Err(HubError::type_error("unhashable type: 'dict'")),
        other => Ok(other.clone()),
    }
}

/// `cls(**(data.get("args") or {}))` for a dataclass with `required` then `optional` fields.
/// Returns the required values in order, then the optional ones that were given.
fn bind_args(
    class: &str,
    args: Option<&Value>,
    required: &[&str],
    optional: &[&str],
) -> Result<Vec<Value>, HubError> {
    let empty = Map::new();
    let args = match args {
        None => &empty,
        Some(value) if !py_truthy(value) => &empty,
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(HubError::type_error(format!(
                "ag2.network.transitions.{class}() argument after ** must be a mapping, not {}",
                py_type_name(other)
            )))
        }
    };
    if let Some(unexpected) = args
        .keys()
        .find(|key| !required.contains(&key.as_str()) && !optional.contains(&key.as_str()))
    {
        return Err(HubError::type_error(format!(
            "{class}.__init__() got an unexpected keyword argument {}",
            py_str_repr(unexpected)
        )));
    }
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|name| !args.contains_key(*name))
        .collect();
    if !missing.is_empty() {
        return Err(HubError::type_error(py_missing_args(
            &format!("{class}.__init__()"),
            &missing,
        )));
    }
    let mut values: Vec<Value> = required.iter().map(|name| args[*name].clone()).collect();
    values.extend(optional.iter().filter_map(|name| args.get(*name).cloned()));
    Ok(values)
}

/// `value["key"]` needs a dict; anything else fails as CPython's subscript does.
pub(crate) fn subscript(value: &Value) -> Result<&Map<String, Value>, HubError> {
    match value {
        Value::Object(map) => Ok(map),
        Value::String(_) => Err(HubError::type_error(
            "string indices must be integers, not 'str'",
        )),
        Value::Array(_) => Err(HubError::type_error(
            "list indices must be integers or slices, not str",
        )),
        other => Err(HubError::type_error(format!(
            "'{}' object is not subscriptable",
            py_type_name(other)
        ))),
    }
}

/// `for item in value`: lists yield items, dicts their keys, strings their characters.
pub(crate) fn py_iterate(value: &Value) -> Result<Vec<Value>, HubError> {
    match value {
        Value::Array(items) => Ok(items.clone()),
        Value::Object(map) => Ok(map.keys().map(|key| Value::from(key.as_str())).collect()),
        Value::String(text) => Ok(text.chars().map(|ch| Value::from(ch.to_string())).collect()),
        other => Err(HubError::type_error(format!(
            "'{}' object is not iterable",
            py_type_name(other)
        ))),
    }
}
