//! Scenario files: the reference runner's format (`../shared/oracle/README.md`), read from YAML.
//!
//! This is the only module that knows YAML (serde_yaml is archived upstream; a swap to a fork
//! touches this file alone). Every mapping refuses unknown keys with the list of known ones, and
//! each step is checked for its op's required fields inside the parser, so an error names the
//! file, the step's line and column, and what was expected. Agent names used by steps must be
//! declared agents (the reference runner would fail later with a `KeyError`).

use crate::client::{HandlerMode, ToolBehaviour, ToolSpec, TurnItem};
use crate::hub::rule::{DurationSpec, Rule};
use crate::time::{Timestamp, DEFAULT_EPOCH};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Limits on scenario size, refused at parse time.
pub mod limits {
    /// Agents in one scenario.
    pub const AGENTS_MAX: usize = 256;
    /// Steps in one scenario.
    pub const STEPS_MAX: usize = 10_000;
    /// Scripted turns of one agent.
    pub const TURNS_MAX: usize = 10_000;
    /// Bytes of one scenario file.
    pub const FILE_BYTES_MAX: u64 = 4 << 20;
}

/// A scenario that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the format; the message has the line and column.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, where, and what was expected.
        message: String,
    },
}

/// A whole scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// `name`, defaulting to the file stem.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Hub settings.
    pub hub: HubOptions,
    /// Agents, registered in this order before any step.
    pub agents: Vec<AgentSpec>,
    /// Steps, run in order.
    pub steps: Vec<Step>,
}

/// The `hub:` block.
#[derive(Clone, Debug, PartialEq)]
pub struct HubOptions {
    /// Where the mock clock starts.
    pub epoch: Timestamp,
    /// `invite_ack_timeout`, in seconds of the monotonic clock.
    pub invite_ack_timeout_seconds: f64,
    /// How long (monotonic seconds) a step may wait before it fails with `StepTimeout`.
    pub step_timeout_seconds: f64,
}

/// One agent.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSpec {
    /// Unique name.
    pub name: String,
    /// How it handles deliveries.
    pub handler: HandlerMode,
    /// Its rule, if not the default.
    pub rule: Option<Rule>,
    /// Callable tools.
    pub tools: Vec<ToolSpec>,
    /// One entry per model turn.
    pub replies: Vec<Vec<TurnItem>>,
}

/// What a failing step must fail with.
#[derive(Clone, Debug)]
pub struct ExpectError {
    /// The exception type name, if constrained.
    pub type_name: Option<String>,
    /// A regex searched in the message (`re.search`), if constrained; compiled once at load.
    pub pattern: Option<regex::Regex>,
}

impl PartialEq for ExpectError {
    fn eq(&self, other: &ExpectError) -> bool {
        self.type_name == other.type_name
            && self.pattern.as_ref().map(regex::Regex::as_str)
                == other.pattern.as_ref().map(regex::Regex::as_str)
    }
}

impl ExpectError {
    /// The reference runner's `_matches`: the type must be equal and the pattern found in the
    /// raw message.
    pub fn matches(&self, type_name: &str, message: &str) -> bool {
        let type_ok = self
            .type_name
            .as_ref()
            .is_none_or(|t| t.is_empty() || t == type_name);
        type_ok && self.pattern.as_ref().is_none_or(|re| re.is_match(message))
    }
}

/// Agent ids inside data are written `{$id: name}`; they are resolved when the step runs.
pub type Data = Value;

/// One step.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The op name as written (`expire_due` stays `expire_due`).
    pub op: String,
    /// The keys the trace echoes (`by`, `agent`, `channel`, `type`, `target`, `seconds`), as written.
    pub echo: Map<String, Value>,
    /// The expected failure, if any.
    pub expect_error: Option<ExpectError>,
    /// What the step does.
    pub action: Action,
}

/// A step's action.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `open`.
    Open {
        /// `as`.
        label: Option<String>,
        /// The creator.
        by: String,
        /// The adapter type.
        manifest_type: String,
        /// Target names or ids.
        targets: Vec<String>,
        /// `ttl`.
        ttl: Option<DurationSpec>,
        /// `knobs` (may hold `$id` references).
        knobs: Option<Data>,
        /// `intent`.
        intent: Option<String>,
        /// `labels`.
        labels: Option<Data>,
        /// `wait: false` runs the open in the background.
        wait: bool,
    },
    /// `send`.
    Send {
        /// Channel label.
        channel: String,
        /// Use a channel id the hub never minted when the label is unknown.
        unknown_channel: bool,
        /// The sender.
        by: String,
        /// `text` (used when `event_data` is absent).
        text: String,
        /// Names; `None` broadcasts.
        audience: Option<Vec<String>>,
        /// `event_type`.
        event_type: String,
        /// `event_data` (may hold `$id` references).
        event_data: Option<Data>,
        /// `depth`.
        depth: Option<i64>,
        /// `via: hub` posts straight to the hub.
        via_hub: bool,
    },
    /// `close`.
    Close {
        /// Channel label.
        channel: String,
        /// See `Send`.
        unknown_channel: bool,
        /// Who closes.
        by: String,
        /// `reason`.
        reason: String,
        /// `via: hub` calls the hub directly.
        via_hub: bool,
    },
    /// `advance`: moves the mock clock.
    Advance(AdvanceBy),
    /// `ttl_tick` / `expire_due`.
    TtlTick,
    /// `expectation_tick`.
    ExpectationTick,
    /// `set_rule`.
    SetRule {
        /// The agent.
        agent: String,
        /// The new rule.
        rule: Rule,
    },
    /// `unregister`.
    Unregister {
        /// The agent.
        agent: String,
    },
    /// `settle`: nothing (the runner drains after every step anyway).
    Settle,
}

/// How far an `advance` moves the clock.
#[derive(Clone, Debug, PartialEq)]
pub enum AdvanceBy {
    /// Whole seconds.
    Seconds(i64),
    /// Fractional seconds.
    Float(f64),
    /// A duration string, parsed by `parse_duration` when the step runs.
    Text(String),
}

impl Scenario {
    /// Reads and checks a scenario file.
    ///
    /// # Errors
    /// [`ScenarioError`] naming the file, and for format errors the line and column.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let io = |source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > limits::FILE_BYTES_MAX {
            return Err(ScenarioError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "file is {size} bytes; at most {} are read",
                    limits::FILE_BYTES_MAX
                ),
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|error| ScenarioError::Invalid {
            path: path.to_path_buf(),
            message: format!("not UTF-8: {error}"),
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Scenario::parse(&text, &stem).map_err(|message| ScenarioError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses scenario text; `default_name` is used when the scenario has no `name`.
    ///
    /// # Errors
    /// A message with the line and column and what was expected.
    pub fn parse(text: &str, default_name: &str) -> Result<Scenario, String> {
        let raw: RawScenario = serde_yaml::from_str(text).map_err(|error| locate(text, &error))?;
        let mut scenario = raw.0;
        if scenario.name.is_empty() {
            scenario.name = default_name.to_string();
        }
        Ok(scenario)
    }
}

/// serde_yaml locates errors inside nested values; errors about a top-level key come without a
/// location, so the key's line is found in the text.
fn locate(text: &str, error: &serde_yaml::Error) -> String {
    let message = error.to_string();
    if message.contains(" at line ") {
        return message;
    }
    let key = message.split('`').nth(1).unwrap_or_default();
    let line = text
        .lines()
        .position(|line| !key.is_empty() && line.starts_with(&format!("{key}:")));
    match (line, error.location()) {
        (Some(idx), _) => format!("{message} at line {} column 1", idx + 1),
        (None, Some(location)) => format!(
            "{message} at line {} column {}",
            location.line(),
            location.column()
        ),
        (None, None) => message,
    }
}

const SCENARIO_FIELDS: &[&str] = &["name", "description", "hub", "agents", "steps"];

struct RawScenario(Scenario);

impl<'de> Deserialize<'de> for RawScenario {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ScenarioVisitor)
    }
}

struct ScenarioVisitor;

impl<'de> Visitor<'de> for ScenarioVisitor {
    type Value = RawScenario;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scenario mapping with `agents` and `steps`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawScenario, A::Error> {
        let mut scenario = Scenario {
            name: String::new(),
            description: None,
            hub: HubOptions::default(),
            agents: Vec::new(),
            steps: Vec::new(),
        };
        let mut known_agents: Option<BTreeSet<String>> = None;
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            match key.as_str() {
                "name" => scenario.name = map.next_value()?,
                "description" => scenario.description = map.next_value()?,
                "hub" => {
                    scenario.hub = map
                        .next_value::<Option<RawHub>>()?
                        .map(|h| h.0)
                        .unwrap_or_default()
                }
                "agents" => {
                    scenario.agents = map.next_value_seed(AgentsSeed)?;
                    known_agents = Some(scenario.agents.iter().map(|a| a.name.clone()).collect());
                }
                "steps" => {
                    scenario.steps = map.next_value_seed(StepsSeed {
                        agents: known_agents.as_ref(),
                    })?
                }
                other => return Err(de::Error::unknown_field(other, SCENARIO_FIELDS)),
            }
        }
        if known_agents.is_none() {
            let names = scenario.agents.iter().map(|a| a.name.clone()).collect();
            for (idx, step) in scenario.steps.iter().enumerate() {
                check_step_agents(step, &names)
                    .map_err(|e| de::Error::custom(format!("steps[{idx}]: {e}")))?;
            }
        }
        Ok(RawScenario(scenario))
    }
}

/// The agent list, checked as it is read so errors point at the offending agent.
struct AgentsSeed;

impl<'de> DeserializeSeed<'de> for AgentsSeed {
    type Value = Vec<AgentSpec>;

    fn deserialize<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Vec<AgentSpec>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AgentsSeed {
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
            let Some(agent) = seq.next_element_seed(AgentSeed { declared })? else {
                break;
            };
            if agents.len() >= limits::AGENTS_MAX {
                return Err(de::Error::custom(format!(
                    "at most {} agents",
                    limits::AGENTS_MAX
                )));
            }
            agents.push(agent);
        }
        Ok(agents)
    }
}

impl Default for HubOptions {
    fn default() -> HubOptions {
        HubOptions {
            epoch: Timestamp::parse_iso(DEFAULT_EPOCH).expect("the default epoch parses"),
            invite_ack_timeout_seconds: 30.0,
            step_timeout_seconds: 10.0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HubFields {
    epoch: Option<String>,
    invite_ack_timeout: Option<f64>,
    step_timeout: Option<f64>,
    attach_plugin: Option<bool>,
}

struct RawHub(HubOptions);

impl<'de> Deserialize<'de> for RawHub {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = HubFields::deserialize(deserializer)?;
        let _ = fields.attach_plugin; // hubsim's agents carry no network tools either way
        let mut options = HubOptions::default();
        if let Some(epoch) = fields.epoch {
            options.epoch = Timestamp::parse_iso(&epoch).ok_or_else(|| {
                de::Error::custom(format!("hub.epoch: `{epoch}` is not an ISO-8601 timestamp"))
            })?;
        }
        for (name, value, slot) in [
            (
                "invite_ack_timeout",
                fields.invite_ack_timeout,
                &mut options.invite_ack_timeout_seconds,
            ),
            (
                "step_timeout",
                fields.step_timeout,
                &mut options.step_timeout_seconds,
            ),
        ] {
            if let Some(value) = value {
                if !(value.is_finite() && value > 0.0 && value < 1e9) {
                    return Err(de::Error::custom(format!(
                        "hub.{name} must be a positive number of seconds"
                    )));
                }
                *slot = value;
            }
        }
        Ok(RawHub(options))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFields {
    name: String,
    #[allow(dead_code)]
    prompt: Option<String>,
    handler: Option<String>,
    rule: Option<RuleFields>,
    tools: Option<Vec<serde_yaml::Value>>,
    replies: Option<Vec<serde_yaml::Value>>,
}

struct AgentSeed {
    declared: BTreeSet<String>,
}

impl<'de> DeserializeSeed<'de> for AgentSeed {
    type Value = AgentSpec;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<AgentSpec, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AgentSeed {
    type Value = AgentSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an agent mapping with a `name`")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AgentSpec, A::Error> {
        let fields = AgentFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
        if self.declared.contains(&fields.name) {
            return Err(de::Error::custom(format!(
                "agent name `{}` is declared twice",
                fields.name
            )));
        }
        if crate::ids::is_hex32(&fields.name) {
            return Err(de::Error::custom(format!(
                "agent name `{}` has the shape of an agent id",
                fields.name
            )));
        }
        agent_from_fields(fields).map_err(de::Error::custom)
    }
}

fn agent_from_fields(fields: AgentFields) -> Result<AgentSpec, String> {
    let handler = match fields.handler.as_deref() {
        None | Some("default") => HandlerMode::Default,
        Some("ack_only") => HandlerMode::AckOnly,
        Some("silent") => HandlerMode::Silent,
        Some(other) => {
            return Err(format!(
                "unknown handler `{other}`, expected `default`, `ack_only` or `silent`"
            ))
        }
    };
    let tools = fields
        .tools
        .unwrap_or_default()
        .iter()
        .map(parse_tool)
        .collect::<Result<Vec<_>, _>>()?;
    let replies = fields.replies.unwrap_or_default();
    if replies.len() > limits::TURNS_MAX {
        return Err(format!("at most {} replies", limits::TURNS_MAX));
    }
    let replies = replies
        .iter()
        .enumerate()
        .map(|(idx, turn)| parse_turn(turn).map_err(|e| format!("replies[{idx}]: {e}")))
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
struct RuleFields {
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
    fn into_rule(self) -> Rule {
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

/// Every key a step may carry; each op accepts a subset (see [`op_fields`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFields {
    op: String,
    #[serde(rename = "as")]
    label: Option<String>,
    by: Option<serde_yaml::Value>,
    agent: Option<serde_yaml::Value>,
    channel: Option<serde_yaml::Value>,
    #[serde(rename = "type")]
    manifest_type: Option<serde_yaml::Value>,
    target: Option<serde_yaml::Value>,
    seconds: Option<serde_yaml::Value>,
    ttl: Option<serde_yaml::Value>,
    knobs: Option<serde_yaml::Value>,
    intent: Option<String>,
    labels: Option<serde_yaml::Value>,
    wait: Option<bool>,
    text: Option<String>,
    audience: Option<Vec<String>>,
    event_type: Option<String>,
    event_data: Option<serde_yaml::Value>,
    depth: Option<i64>,
    via: Option<String>,
    reason: Option<String>,
    rule: Option<RuleFields>,
    unknown_channel: Option<bool>,
    expect_error: Option<serde_yaml::Value>,
}

/// The keys each op accepts besides `op` and `expect_error`.
fn op_fields(op: &str) -> Option<&'static [&'static str]> {
    Some(match op {
        "open" => &[
            "as", "by", "type", "target", "ttl", "knobs", "intent", "labels", "wait",
        ],
        "send" => &[
            "channel",
            "by",
            "text",
            "audience",
            "event_type",
            "event_data",
            "depth",
            "via",
            "unknown_channel",
        ],
        "close" => &["channel", "by", "reason", "via", "unknown_channel"],
        "advance" => &["seconds"],
        "ttl_tick" | "expire_due" | "expectation_tick" | "settle" => &[],
        "set_rule" => &["agent", "rule"],
        "unregister" => &["agent"],
        _ => return None,
    })
}

const OPS: &str = "open, send, close, advance, ttl_tick, expire_due, expectation_tick, set_rule, unregister, settle";

struct StepsSeed<'a> {
    agents: Option<&'a BTreeSet<String>>,
}

impl<'de> DeserializeSeed<'de> for StepsSeed<'_> {
    type Value = Vec<Step>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Step>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StepsSeed<'_> {
    type Value = Vec<Step>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of steps")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<Step>, E> {
        Ok(Vec::new())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Step>, A::Error> {
        let mut steps = Vec::new();
        while let Some(step) = seq.next_element_seed(StepSeed {
            agents: self.agents,
        })? {
            if steps.len() >= limits::STEPS_MAX {
                return Err(de::Error::custom(format!(
                    "at most {} steps",
                    limits::STEPS_MAX
                )));
            }
            steps.push(step);
        }
        Ok(steps)
    }
}

struct StepSeed<'a> {
    agents: Option<&'a BTreeSet<String>>,
}

impl<'de> DeserializeSeed<'de> for StepSeed<'_> {
    type Value = Step;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Step, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StepSeed<'_> {
    type Value = Step;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a step: a mapping with `op`, or a bare op name")
    }

    fn visit_str<E: de::Error>(self, op: &str) -> Result<Step, E> {
        match op_fields(op) {
            Some([]) => step_from_fields(bare_step(op)).map_err(E::custom),
            Some(_) => Err(E::custom(format!(
                "op `{op}` needs a mapping with its fields"
            ))),
            None => Err(E::custom(format!(
                "unknown op `{op}`, expected one of: {OPS}"
            ))),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Step, A::Error> {
        let fields = StepFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let step = step_from_fields(fields).map_err(de::Error::custom)?;
        if let Some(agents) = self.agents {
            check_step_agents(&step, agents).map_err(de::Error::custom)?;
        }
        Ok(step)
    }
}

fn bare_step(op: &str) -> StepFields {
    StepFields {
        op: op.to_string(),
        label: None,
        by: None,
        agent: None,
        channel: None,
        manifest_type: None,
        target: None,
        seconds: None,
        ttl: None,
        knobs: None,
        intent: None,
        labels: None,
        wait: None,
        text: None,
        audience: None,
        event_type: None,
        event_data: None,
        depth: None,
        via: None,
        reason: None,
        rule: None,
        unknown_channel: None,
        expect_error: None,
    }
}

fn step_from_fields(f: StepFields) -> Result<Step, String> {
    let op = f.op.clone();
    let allowed =
        op_fields(&op).ok_or_else(|| format!("unknown op `{op}`, expected one of: {OPS}"))?;
    let present: Vec<&str> = [
        ("as", f.label.is_some()),
        ("by", f.by.is_some()),
        ("agent", f.agent.is_some()),
        ("channel", f.channel.is_some()),
        ("type", f.manifest_type.is_some()),
        ("target", f.target.is_some()),
        ("seconds", f.seconds.is_some()),
        ("ttl", f.ttl.is_some()),
        ("knobs", f.knobs.is_some()),
        ("intent", f.intent.is_some()),
        ("labels", f.labels.is_some()),
        ("wait", f.wait.is_some()),
        ("text", f.text.is_some()),
        ("audience", f.audience.is_some()),
        ("event_type", f.event_type.is_some()),
        ("event_data", f.event_data.is_some()),
        ("depth", f.depth.is_some()),
        ("via", f.via.is_some()),
        ("reason", f.reason.is_some()),
        ("rule", f.rule.is_some()),
        ("unknown_channel", f.unknown_channel.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, present)| present.then_some(key))
    .collect();
    if let Some(extra) = present.iter().find(|key| !allowed.contains(key)) {
        let mut known: Vec<&str> = vec!["op", "expect_error"];
        known.extend_from_slice(allowed);
        return Err(format!(
            "op `{op}` does not take `{extra}`; its fields are: {}",
            known.join(", ")
        ));
    }
    let mut echo = Map::new();
    for (key, value) in [
        ("by", &f.by),
        ("agent", &f.agent),
        ("channel", &f.channel),
        ("type", &f.manifest_type),
        ("target", &f.target),
        ("seconds", &f.seconds),
    ] {
        if let Some(value) = value {
            echo.insert(key.to_string(), yaml_to_json(value));
        }
    }
    let expect_error = f
        .expect_error
        .as_ref()
        .map(parse_expect_error)
        .transpose()?;
    let need = |value: &Option<serde_yaml::Value>, key: &str| -> Result<String, String> {
        match value {
            Some(serde_yaml::Value::String(text)) => Ok(text.clone()),
            Some(_) => Err(format!("op `{op}`: `{key}` must be a string")),
            None => Err(format!("op `{op}` needs `{key}`")),
        }
    };
    let via_hub = match f.via.as_deref() {
        None | Some("client") => false,
        Some("hub") => true,
        Some(other) => return Err(format!("`via: {other}`: expected `client` or `hub`")),
    };
    let action = match op.as_str() {
        "open" => Action::Open {
            label: f.label.clone(),
            by: need(&f.by, "by")?,
            manifest_type: need(&f.manifest_type, "type")?,
            targets: parse_targets(f.target.as_ref())?,
            ttl: f.ttl.as_ref().map(parse_ttl).transpose()?,
            knobs: f
                .knobs
                .as_ref()
                .map(|k| mapping_or_null(k, "knobs"))
                .transpose()?
                .flatten(),
            intent: f.intent.clone(),
            labels: f
                .labels
                .as_ref()
                .map(|l| mapping_or_null(l, "labels"))
                .transpose()?
                .flatten(),
            wait: f.wait.unwrap_or(true),
        },
        "send" => Action::Send {
            channel: need(&f.channel, "channel")?,
            unknown_channel: f.unknown_channel.unwrap_or(false),
            by: need(&f.by, "by")?,
            text: f.text.clone().unwrap_or_default(),
            audience: f.audience.clone(),
            event_type: f
                .event_type
                .clone()
                .unwrap_or_else(|| crate::proto::EventType::TEXT.to_string()),
            event_data: f
                .event_data
                .as_ref()
                .map(|d| mapping_or_null(d, "event_data"))
                .transpose()?
                .flatten(),
            depth: f.depth,
            via_hub,
        },
        "close" => Action::Close {
            channel: need(&f.channel, "channel")?,
            unknown_channel: f.unknown_channel.unwrap_or(false),
            by: need(&f.by, "by")?,
            reason: f.reason.clone().unwrap_or_default(),
            via_hub,
        },
        "advance" => Action::Advance(parse_advance(f.seconds.as_ref())?),
        "ttl_tick" | "expire_due" => Action::TtlTick,
        "expectation_tick" => Action::ExpectationTick,
        "set_rule" => Action::SetRule {
            agent: need(&f.agent, "agent")?,
            rule: f
                .rule
                .ok_or_else(|| format!("op `{op}` needs `rule`"))?
                .into_rule(),
        },
        "unregister" => Action::Unregister {
            agent: need(&f.agent, "agent")?,
        },
        _ => Action::Settle,
    };
    Ok(Step {
        op,
        echo,
        expect_error,
        action,
    })
}

fn parse_expect_error(value: &serde_yaml::Value) -> Result<ExpectError, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Fields {
        #[serde(rename = "type")]
        type_name: Option<String>,
        #[serde(rename = "match")]
        pattern: Option<String>,
    }
    let (type_name, pattern) = match value {
        serde_yaml::Value::String(type_name) => (Some(type_name.clone()), None),
        other => {
            let fields: Fields =
                serde_yaml::from_value(other.clone()).map_err(|e| format!("expect_error: {e}"))?;
            (fields.type_name, fields.pattern)
        }
    };
    let pattern = pattern
        .filter(|p| !p.is_empty())
        .map(|p| regex::Regex::new(&p).map_err(|e| format!("expect_error.match: {e}")))
        .transpose()?;
    Ok(ExpectError { type_name, pattern })
}

fn parse_targets(value: Option<&serde_yaml::Value>) -> Result<Vec<String>, String> {
    match value {
        None => Err("op `open` needs `target`".into()),
        Some(serde_yaml::Value::String(name)) => Ok(vec![name.clone()]),
        Some(serde_yaml::Value::Sequence(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "`target` entries must be names".to_string())
            })
            .collect(),
        Some(_) => Err("`target` must be a name or a list of names".into()),
    }
}

fn parse_ttl(value: &serde_yaml::Value) -> Result<DurationSpec, String> {
    use serde_yaml::Value as Y;
    match value {
        Y::Bool(flag) => Ok(DurationSpec::Seconds(i64::from(*flag))),
        Y::Number(number) if number.is_i64() => {
            Ok(DurationSpec::Seconds(number.as_i64().expect("is_i64")))
        }
        Y::Number(number) => Ok(DurationSpec::Float(number.as_f64().unwrap_or(f64::NAN))),
        Y::String(text) => Ok(DurationSpec::Text(text.clone())),
        _ => Err("`ttl` must be a number of seconds or a duration string like \"60s\"".into()),
    }
}

fn parse_advance(value: Option<&serde_yaml::Value>) -> Result<AdvanceBy, String> {
    use serde_yaml::Value as Y;
    let bad =
        || "op `advance` needs `seconds`: a number or a duration string like \"61s\"".to_string();
    match value.ok_or_else(bad)? {
        Y::Number(number) if number.is_i64() => {
            Ok(AdvanceBy::Seconds(number.as_i64().expect("is_i64")))
        }
        Y::Number(number) => match number.as_f64() {
            Some(seconds) if seconds.is_finite() => Ok(AdvanceBy::Float(seconds)),
            _ => Err(bad()),
        },
        Y::String(text) => Ok(AdvanceBy::Text(text.clone())),
        _ => Err(bad()),
    }
}

fn mapping_or_null(value: &serde_yaml::Value, key: &str) -> Result<Option<Value>, String> {
    match yaml_to_json(value) {
        Value::Null => Ok(None),
        object @ Value::Object(_) => Ok(Some(object)),
        _ => Err(format!("`{key}` must be a mapping")),
    }
}

fn check_step_agents(step: &Step, agents: &BTreeSet<String>) -> Result<(), String> {
    let check = |name: &str| -> Result<(), String> {
        if agents.contains(name) {
            Ok(())
        } else {
            let known: Vec<&str> = agents.iter().map(String::as_str).collect();
            Err(format!(
                "op `{}`: unknown agent `{name}` (agents: {})",
                step.op,
                known.join(", ")
            ))
        }
    };
    let check_refs = |data: &Option<Value>| -> Result<(), String> {
        let mut names = Vec::new();
        if let Some(data) = data {
            collect_refs(data, &mut names);
        }
        names.iter().try_for_each(|name| check(name))
    };
    match &step.action {
        Action::Open { by, knobs, .. } => {
            check(by)?;
            check_refs(knobs)
        }
        Action::Send {
            by,
            audience,
            event_data,
            ..
        } => {
            check(by)?;
            audience.iter().flatten().try_for_each(|name| check(name))?;
            check_refs(event_data)
        }
        Action::Close { by, .. } => check(by),
        Action::SetRule { agent, .. } | Action::Unregister { agent } => check(agent),
        _ => Ok(()),
    }
}

/// Names referenced as `{$id: name}` inside data.
fn collect_refs(value: &Value, names: &mut Vec<String>) {
    match value {
        Value::Object(map) if map.len() == 1 && map.contains_key("$id") => {
            if let Some(Value::String(name)) = map.get("$id") {
                names.push(name.clone());
            }
        }
        Value::Object(map) => map.values().for_each(|v| collect_refs(v, names)),
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, names)),
        _ => {}
    }
}

/// A YAML value as the JSON object Python's `yaml.safe_load` + `json.dumps` would give: mapping
/// keys become strings (`true`, `1`), tags are dropped.
pub fn yaml_to_json(value: &serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(flag) => Value::Bool(*flag),
        Y::Number(number) => {
            if let Some(int) = number.as_i64() {
                Value::from(int)
            } else if let Some(int) = number.as_u64() {
                Value::from(int)
            } else {
                number
                    .as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(text) => Value::String(text.clone()),
        Y::Sequence(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let key = match yaml_to_json(key) {
                        Value::String(text) => text,
                        Value::Number(number) => number.to_string(),
                        Value::Bool(flag) => flag.to_string(),
                        Value::Null => "null".to_string(),
                        other => other.to_string(),
                    };
                    (key, yaml_to_json(value))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => yaml_to_json(&tagged.value),
    }
}
