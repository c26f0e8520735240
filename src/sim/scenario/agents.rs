//! The `agents:` list: names, handlers, rules (`Rule.from_dict`), tools and scripted replies.

use super::*;

/// The agent list, checked as it is read so errors point at the offending agent.
pub(super) struct AgentsSeed<'a> {
    pub(super) found: Found<'a>,
}

impl<'de> DeserializeSeed<'de> for AgentsSeed<'_> {
    type Value = Vec<AgentSpec>;

    fn deserialize<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Vec<AgentSpec>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AgentsSeed<'_> {
    type Value = Vec<AgentSpec>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of agents")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<AgentSpec>, E> {
        Ok(Vec::new())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<AgentSpec>, A::Error> {
        let mut agents: Vec<AgentSpec> = Vec::new();
        loop {
            let declared = agents.iter().map(|a| a.name.clone()).collect();
            let Some(agent) = seq.next_element_seed(AgentSeed {
                declared,
                index: agents.len(),
                found: self.found,
            })?
            else {
                break;
            };
            if agents.len() >= limits::AGENTS_MAX {
                return Err(self.found.fail(Problem::at(
                    format!("at most {} agents", limits::AGENTS_MAX),
                    [Seg::from("agents"), agents.len().into()],
                )));
            }
            agents.push(agent);
        }
        Ok(agents)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFields {
    name: String,
    #[allow(dead_code)]
    prompt: Option<String>,
    handler: Option<String>,
    kind: Option<String>,
    auto_ack_invites: Option<bool>,
    rule: Option<RuleFields>,
    tools: Option<Vec<serde_yaml::Value>>,
    replies: Option<Vec<serde_yaml::Value>>,
}

struct AgentSeed<'a> {
    declared: BTreeSet<String>,
    index: usize,
    found: Found<'a>,
}

impl<'de> DeserializeSeed<'de> for AgentSeed<'_> {
    type Value = AgentSpec;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<AgentSpec, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AgentSeed<'_> {
    type Value = AgentSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an agent mapping with a `name`")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AgentSpec, A::Error> {
        let fields = AgentFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let fail = |problem: Problem| {
            self.found
                .fail(problem.within([Seg::from("agents"), self.index.into()]))
        };
        if self.declared.contains(&fields.name) {
            return Err(fail(Problem::at(
                format!("agent name `{}` is declared twice", fields.name),
                ["name"],
            )));
        }
        if crate::ids::is_hex32(&fields.name) {
            return Err(fail(Problem::at(
                format!("agent name `{}` has the shape of an agent id", fields.name),
                ["name"],
            )));
        }
        agent_from_fields(fields).map_err(fail)
    }
}

/// A human: the agent fields with the human handler.
fn agent_from_fields_with(auto_ack: bool, fields: AgentFields) -> Result<AgentSpec, Problem> {
    let mut spec = agent_from_fields(fields)?;
    spec.handler = HandlerMode::Human { auto_ack };
    Ok(spec)
}

/// The agent, or a problem with a path inside the agent's mapping.
fn agent_from_fields(fields: AgentFields) -> Result<AgentSpec, Problem> {
    let handler = match (fields.kind.as_deref(), fields.handler.as_deref()) {
        (None | Some("agent"), _) if fields.auto_ack_invites.is_some() => {
            return Err(Problem::key(
                "`auto_ack_invites` goes with `kind: human`",
                ["auto_ack_invites"],
            ))
        }
        (None | Some("agent"), handler) => handler,
        (Some("human"), None) => {
            return agent_from_fields_with(
                fields.auto_ack_invites.unwrap_or(true),
                AgentFields {
                    kind: None,
                    auto_ack_invites: None,
                    ..fields
                },
            )
        }
        (Some("human"), Some(_)) => {
            return Err(Problem::key(
                "a `kind: human` participant takes no `handler`",
                ["handler"],
            ))
        }
        (Some(other), _) => {
            return Err(Problem::at(
                format!("unknown kind `{other}`, expected `agent` or `human`"),
                ["kind"],
            ))
        }
    };
    let handler = match handler {
        None | Some("default") => HandlerMode::Default,
        Some("ack_only") => HandlerMode::AckOnly,
        Some("silent") => HandlerMode::Silent,
        Some(other) => {
            return Err(Problem::at(
                format!("unknown handler `{other}`, expected `default`, `ack_only` or `silent`"),
                ["handler"],
            ))
        }
    };
    let tools = fields
        .tools
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(idx, tool)| {
            parse_tool(tool).map_err(|e| Problem::at(e, [Seg::from("tools"), idx.into()]))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let replies = fields.replies.unwrap_or_default();
    if replies.len() > limits::TURNS_MAX {
        return Err(Problem::at(
            format!("at most {} replies", limits::TURNS_MAX),
            [Seg::from("replies"), limits::TURNS_MAX.into()],
        ));
    }
    let replies = replies
        .iter()
        .enumerate()
        .map(|(idx, turn)| {
            parse_turn(turn).map_err(|e| {
                Problem::at(
                    format!("replies[{idx}]: {e}"),
                    [Seg::from("replies"), idx.into()],
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rule = fields.rule.map(RuleFields::into_rule);
    Ok(AgentSpec {
        name: fields.name,
        handler,
        rule,
        tools,
        replies,
    })
}

fn parse_tool(value: &serde_yaml::Value) -> Result<ToolSpec, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ToolFields {
        name: String,
        returns: Option<String>,
        handoff: Option<String>,
        finish: Option<Option<FinishFields>>,
        #[allow(dead_code)]
        description: Option<String>,
    }
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct FinishFields {
        reason: Option<String>,
        summary: Option<String>,
    }
    if let serde_yaml::Value::String(name) = value {
        return Ok(ToolSpec {
            name: name.clone(),
            behaviour: ToolBehaviour::Returns("ok".into()),
        });
    }
    let fields: ToolFields =
        serde_yaml::from_value(value.clone()).map_err(|e| format!("tool: {e}"))?;
    let behaviour = match (fields.returns, fields.handoff, fields.finish) {
        (returns, None, None) => ToolBehaviour::Returns(returns.unwrap_or_else(|| "ok".into())),
        (None, Some(target), None) => ToolBehaviour::Handoff(target),
        (None, None, Some(finish)) => {
            let finish = finish.unwrap_or_default();
            ToolBehaviour::Finish {
                reason: finish.reason.unwrap_or_else(|| "finished".into()),
                summary: finish.summary.unwrap_or_default(),
            }
        }
        _ => {
            return Err(format!(
                "tool `{}`: give at most one of `returns`, `handoff`, `finish`",
                fields.name
            ))
        }
    };
    Ok(ToolSpec {
        name: fields.name,
        behaviour,
    })
}

fn parse_turn(value: &serde_yaml::Value) -> Result<Vec<TurnItem>, String> {
    let items = match value {
        serde_yaml::Value::Sequence(items) if items.is_empty() => {
            return Err("a turn list needs at least one item".into())
        }
        serde_yaml::Value::Sequence(items) => items.iter().collect::<Vec<_>>(),
        single => vec![single],
    };
    items.into_iter().map(parse_turn_item).collect()
}

fn parse_turn_item(value: &serde_yaml::Value) -> Result<TurnItem, String> {
    use serde_yaml::Value as Y;
    match value {
        Y::String(text) => Ok(TurnItem::Text(text.clone())),
        Y::Mapping(map) if map.len() == 1 => {
            let (key, inner) = map.iter().next().expect("one entry");
            match key.as_str() {
                Some("raise") => parse_raise(inner),
                Some("tool_call") => {
                    #[derive(Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Call {
                        name: String,
                        arguments: Option<serde_yaml::Value>,
                    }
                    let call: Call = serde_yaml::from_value(inner.clone())
                        .map_err(|e| format!("tool_call: {e}"))?;
                    let arguments = match call.arguments.map(|a| yaml_to_json(&a)) {
                        None | Some(Value::Null) => Map::new(),
                        Some(Value::Object(map)) => map,
                        Some(_) => return Err("tool_call.arguments must be a mapping".into()),
                    };
                    Ok(TurnItem::ToolCall {
                        name: call.name,
                        arguments,
                    })
                }
                _ => Err(
                    "expected a string, `{raise: ...}` or `{tool_call: {name, arguments}}`".into(),
                ),
            }
        }
        _ => Err("expected a string, `{raise: ...}` or `{tool_call: {name, arguments}}`".into()),
    }
}

fn parse_raise(value: &serde_yaml::Value) -> Result<TurnItem, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RaiseFields {
        #[serde(rename = "type")]
        type_name: Option<String>,
        message: Option<String>,
    }
    let (type_name, message) = match value {
        serde_yaml::Value::String(text) => {
            let (type_name, message) = text.split_once(':').unwrap_or((text.as_str(), ""));
            (type_name.trim().to_string(), message.trim().to_string())
        }
        other => {
            let fields: RaiseFields =
                serde_yaml::from_value(other.clone()).map_err(|e| format!("raise: {e}"))?;
            (
                fields.type_name.unwrap_or_else(|| "RuntimeError".into()),
                fields.message.unwrap_or_default(),
            )
        }
    };
    if !PYTHON_EXCEPTIONS.contains(&type_name.as_str()) {
        return Err(format!(
            "raise: `{type_name}` is not a Python built-in exception type"
        ));
    }
    Ok(TurnItem::Raise { type_name, message })
}

/// Python 3.11's built-in exception classes (what the reference runner can raise).
const PYTHON_EXCEPTIONS: &[&str] = &[
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "BaseException",
    "BlockingIOError",
    "BrokenPipeError",
    "BufferError",
    "ChildProcessError",
    "ConnectionAbortedError",
    "ConnectionError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "EOFError",
    "EnvironmentError",
    "Exception",
    "FileExistsError",
    "FileNotFoundError",
    "FloatingPointError",
    "IOError",
    "ImportError",
    "IndentationError",
    "IndexError",
    "InterruptedError",
    "IsADirectoryError",
    "KeyError",
    "LookupError",
    "MemoryError",
    "ModuleNotFoundError",
    "NameError",
    "NotADirectoryError",
    "NotImplementedError",
    "OSError",
    "OverflowError",
    "PermissionError",
    "ProcessLookupError",
    "RecursionError",
    "ReferenceError",
    "RuntimeError",
    "StopAsyncIteration",
    "TabError",
    "TimeoutError",
    "TypeError",
    "UnboundLocalError",
    "UnicodeError",
    "ValueError",
    "ZeroDivisionError",
];

/// A rule as `Rule.from_dict` reads it: any subset of fields.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleFields {
    version: Option<i64>,
    access: Option<AccessFields>,
    limits: Option<LimitsFields>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AccessFields {
    inbound_from: Option<Vec<String>>,
    outbound_to: Option<Vec<String>>,
    channel_types: Option<ChannelTypeFields>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ChannelTypeFields {
    initiate: Option<Vec<String>>,
    accept: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsFields {
    max_concurrent_channels: Option<i64>,
    max_concurrent_tasks: Option<i64>,
    channel_ttl_default: Option<DurationField>,
    task_ttl_default: Option<DurationField>,
    rate: Option<RateFields>,
    delegation_depth: Option<i64>,
    inbox: Option<InboxFields>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RateFields {
    per_minute: Option<i64>,
    burst: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InboxFields {
    max_pending: Option<i64>,
    overflow: Option<String>,
    high_water: Option<Option<i64>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationField {
    Seconds(i64),
    Text(String),
}

impl DurationField {
    fn into_spec(self) -> DurationSpec {
        match self {
            DurationField::Seconds(seconds) => DurationSpec::Seconds(seconds),
            DurationField::Text(text) => DurationSpec::Text(text),
        }
    }
}

impl RuleFields {
    pub(super) fn into_rule(self) -> Rule {
        let mut rule = Rule::default();
        if let Some(version) = self.version {
            rule.version = version;
        }
        let access = self.access.unwrap_or_default();
        let set = |slot: &mut Vec<String>, value: Option<Vec<String>>| {
            if let Some(value) = value {
                *slot = value;
            }
        };
        set(&mut rule.access.inbound_from, access.inbound_from);
        set(&mut rule.access.outbound_to, access.outbound_to);
        let types = access.channel_types.unwrap_or_default();
        set(&mut rule.access.initiate, types.initiate);
        set(&mut rule.access.accept, types.accept);
        let limits = self.limits.unwrap_or_default();
        let target = &mut rule.limits;
        target.max_concurrent_channels = limits
            .max_concurrent_channels
            .unwrap_or(target.max_concurrent_channels);
        target.max_concurrent_tasks = limits
            .max_concurrent_tasks
            .unwrap_or(target.max_concurrent_tasks);
        if let Some(ttl) = limits.channel_ttl_default {
            target.channel_ttl_default = ttl.into_spec();
        }
        if let Some(ttl) = limits.task_ttl_default {
            target.task_ttl_default = ttl.into_spec();
        }
        let rate = limits.rate.unwrap_or_default();
        target.rate_per_minute = rate.per_minute.unwrap_or(target.rate_per_minute);
        target.rate_burst = rate.burst.unwrap_or(target.rate_burst);
        target.delegation_depth = limits.delegation_depth.unwrap_or(target.delegation_depth);
        let inbox = limits.inbox.unwrap_or_default();
        target.inbox.max_pending = inbox.max_pending.unwrap_or(target.inbox.max_pending);
        if let Some(overflow) = inbox.overflow {
            target.inbox.overflow = overflow;
        }
        if let Some(high_water) = inbox.high_water {
            target.inbox.high_water = high_water;
        }
        rule
    }
}
