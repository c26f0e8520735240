//! Scenario files: the reference runner's format (documented in `sims/README.md`), read from YAML.
//!
//! This module (with `agents.rs` and `steps.rs`) is the only code that knows YAML (serde_yaml is archived upstream; a swap to a fork
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

mod agents;
mod checking;
mod network;
mod steps;

pub use checking::{
    Chaos, ChaosKind, KnownViolation, NetworkBackend, SeedRange, SweepOptions, DEFAULT_SEEDS,
    PROBES,
};
pub use network::{duration_seconds, Fault, NetworkOptions, Range, TimedFault, EVENTS_MAX};

use agents::{AgentsSeed, RuleFields};
use steps::{check_step_agents, StepsSeed};

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
    /// Network settings (`network:`), used by the network backends only.
    pub network: NetworkOptions,
    /// How `hubsim check` sweeps it: seeds, invariants, known violations, probes, chaos.
    pub sweep: SweepOptions,
}

impl Scenario {
    /// The hub configuration the scenario asks for (`sweepers`: the sweeper intervals of its
    /// `network:` block; the in-process driver runs none), with the deliberate defects `bugs`.
    pub fn hub_config(&self, bugs: crate::hub::Bugs, sweepers: bool) -> crate::hub::HubConfig {
        let interval = |micros: u64| if sweepers { micros } else { 0 };
        crate::hub::HubConfig {
            invite_ack_timeout_micros: (self.hub.invite_ack_timeout_seconds
                * crate::time::MICROS_PER_SECOND as f64)
                as u64,
            ttl_sweep_interval_micros: interval(self.network.ttl_sweep),
            expectation_sweep_interval_micros: interval(self.network.expectation_sweep),
            auth: Default::default(),
            bugs,
        }
    }

    /// True when the scenario injects faults, waits on simulated time or has a human
    /// participant, which only the network backends can run (the reference runner has none).
    pub fn network_only(&self) -> bool {
        !self.network.faults.is_empty()
            || self
                .agents
                .iter()
                .any(|agent| matches!(agent.handler, HandlerMode::Human { .. }))
            || self
                .steps
                .iter()
                .any(|step| matches!(step.action, Action::Fault(_) | Action::Wait(_)))
            || self.sweep.chaos.is_some()
    }
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

impl AgentSpec {
    /// The agent's script, not yet run.
    pub fn scripted(&self) -> crate::client::ScriptedAgent {
        crate::client::ScriptedAgent {
            name: self.name.clone(),
            handler: self.handler,
            tools: self.tools.clone(),
            turns: self.replies.clone(),
            used: 0,
        }
    }
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
    /// `checkpoint`: ag2's `HubBackedCheckpointStore.write(task, state)` through the agent's
    /// client.
    Checkpoint {
        /// The writer.
        agent: String,
        /// The task id.
        task: String,
        /// The state (any JSON).
        state: Value,
    },
    /// `read_checkpoint`: `HubBackedCheckpointStore.read(task)`; the step records the state.
    ReadCheckpoint {
        /// The reader.
        agent: String,
        /// The task id.
        task: String,
    },
    /// `next_envelope`: the next envelope from a human's pull queue (network backends only); the
    /// step records its id and event type.
    NextEnvelope {
        /// The human.
        agent: String,
    },
    /// `wait`: simulated time passes (network backends only), in microseconds.
    Wait(u64),
    /// A fault op (`partition`, `repair`, `hold`, `release`, `disconnect`, `crash`, `restart`).
    Fault(Fault),
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

const SCENARIO_FIELDS: &[&str] = &[
    "name",
    "description",
    "hub",
    "network",
    "agents",
    "steps",
    "seed",
    "seeds",
    "invariants",
    "known_violations",
    "expect_reached",
    "chaos",
    "backends",
];

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
            network: NetworkOptions::default(),
            sweep: SweepOptions::default(),
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
                "network" => {
                    scenario.network = map
                        .next_value::<Option<network::RawNetwork>>()?
                        .map(|n| n.0)
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
                "seed" => scenario.sweep.seed = map.next_value()?,
                "seeds" => {
                    let value: serde_yaml::Value = map.next_value()?;
                    scenario.sweep.seeds =
                        Some(checking::seeds(&value).map_err(de::Error::custom)?);
                }
                "invariants" => {
                    let names: Vec<String> = map.next_value()?;
                    scenario.sweep.invariants =
                        checking::invariants(&names).map_err(de::Error::custom)?;
                }
                "known_violations" => {
                    let entries: Vec<checking::KnownFields> = map.next_value()?;
                    scenario.sweep.known_violations =
                        checking::known(entries).map_err(de::Error::custom)?;
                }
                "expect_reached" => {
                    let names: Vec<String> = map.next_value()?;
                    checking::probes(&names).map_err(de::Error::custom)?;
                    scenario.sweep.expect_reached = names;
                }
                "chaos" => {
                    let fields: checking::ChaosFields = map.next_value()?;
                    scenario.sweep.chaos =
                        Some(checking::chaos(fields).map_err(de::Error::custom)?);
                }
                "backends" => {
                    let names: Vec<String> = map.next_value()?;
                    scenario.sweep.backends =
                        checking::backends(&names).map_err(de::Error::custom)?;
                }
                other => return Err(de::Error::unknown_field(other, SCENARIO_FIELDS)),
            }
        }
        let names: BTreeSet<String> = scenario.agents.iter().map(|a| a.name.clone()).collect();
        for (idx, timed) in scenario.network.faults.iter().enumerate() {
            if let Some(agent) = timed.fault.agent() {
                if !names.contains(agent) {
                    let known: Vec<&str> = names.iter().map(String::as_str).collect();
                    return Err(de::Error::custom(format!(
                        "network.faults[{idx}]: unknown agent `{agent}` (agents: {})",
                        known.join(", ")
                    )));
                }
            }
        }
        if known_agents.is_none() {
            for (idx, step) in scenario.steps.iter().enumerate() {
                check_step_agents(step, &names)
                    .map_err(|e| de::Error::custom(format!("steps[{idx}]: {e}")))?;
            }
        }
        Ok(RawScenario(scenario))
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
