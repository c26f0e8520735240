//! Scenario files: the reference runner's format (documented in `sims/README.md`), read from YAML.
//!
//! This module (with `agents.rs`, `steps.rs`, `network.rs`, `checking.rs` and `source.rs`) is
//! the only code that knows YAML (serde_yaml is archived upstream; a swap to a fork touches these
//! files alone). Loading is linear in the file's size: a pre-scan bounds the nesting depth
//! before serde_yaml reads the text. Every mapping refuses unknown keys with the list of known
//! ones, and each step is checked for its op's fields inside the parser. Checks on parsed values
//! name the node they are about by its path (`steps[3].channel`), which is found again in the
//! text, so every error names the file, the exact line and column, and what was expected. Agent
//! names used by steps must be declared agents and channel labels opened by an earlier step (the
//! reference runner would fail later with a `KeyError`).

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
mod expect;
mod live;
mod network;
mod source;
mod steps;

pub use checking::{
    Chaos, ChaosKind, KnownViolation, NetworkBackend, SeedRange, SweepOptions, DEFAULT_SEEDS,
    PROBES,
};
pub use live::FaultPlan;
pub use network::{duration_seconds, Fault, NetworkOptions, Range, TimedFault, EVENTS_MAX};

pub use source::NESTING_MAX;

use agents::{AgentsSeed, RuleFields};
use source::{Found, Problem, Seg};
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
    /// Simulated time a scenario may ask for (µs): its `wait` steps together, a timed fault's
    /// `at`, `chaos.until`. 30 days: ag2's sweepers alone fire ~350,000 times in that span.
    pub const SIM_MICROS_MAX: u64 = 30 * 86_400 * 1_000_000;
    /// Chaos faults one kind may draw in a run, at the top of its `rate` range.
    pub const CHAOS_FAULTS_MAX: u64 = 10_000;
}

/// A scenario that cannot be used, with where and why. Displayed as rustc prints an error:
/// the message, ` --> file:line:column`, and the line with a caret under the offending token.
#[derive(Debug)]
pub enum ScenarioError {
    /// The file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The text is malformed or does not fit the format.
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
        /// Where, when the error is about a place in the text.
        at: Option<Location>,
    },
}

/// A place in a scenario's text, with the line it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The text of the line.
    pub text: String,
    /// Characters the caret spans (the offending token), at least 1.
    pub width: usize,
}

impl Location {
    fn of(text: &str, offset: usize) -> Location {
        let at = source::line_column(text, offset);
        Location {
            line: at.line,
            column: at.column,
            text: source::line_text(text, offset).to_string(),
            width: source::token_width(text, offset),
        }
    }
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, message, at) = match self {
            ScenarioError::Io { path, source } => (path, source.to_string(), None),
            ScenarioError::Invalid { path, message, at } => (path, message.clone(), at.as_ref()),
        };
        write!(f, "error: {message}")?;
        let Some(at) = at else {
            return write!(f, "\n --> {}", path.display());
        };
        let number = at.line.to_string();
        let gutter = " ".repeat(number.len());
        // A long line is shown as a window around the column, as rustc does.
        let chars: Vec<char> = at.text.chars().collect();
        let column = at.column.saturating_sub(1).min(chars.len());
        let start = column.saturating_sub(SNIPPET_BEFORE);
        let end = chars.len().min(start + SNIPPET_CHARS);
        let shown: String = chars[start..end].iter().collect();
        let (open, close) = (
            if start > 0 { "..." } else { "" },
            if end < chars.len() { "..." } else { "" },
        );
        let before: String = open
            .chars()
            .chain(chars[start..column].iter().copied())
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let carets = "^".repeat(at.width.min(end.saturating_sub(column)).max(1));
        write!(
            f,
            "\n{gutter}--> {}:{}:{}\n{gutter} |\n{number} | {open}{shown}{close}\n{gutter} | {before}{carets}",
            path.display(),
            at.line,
            at.column,
        )
    }
}

/// Characters of a source line shown in an error, and how many of them before the column.
const SNIPPET_CHARS: usize = 100;
const SNIPPET_BEFORE: usize = 40;

impl std::error::Error for ScenarioError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScenarioError::Io { source, .. } => Some(source),
            ScenarioError::Invalid { .. } => None,
        }
    }
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
    /// What must hold at the end of every run (`expect:`; empty: nothing).
    pub expect: crate::sim::expect::Expect,
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

/// What a step must fail with: one of `errors`, or, if `may_succeed`, nothing at all
/// (`expect_error: {any_of: [..., null]}`).
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectError {
    /// The errors the step may fail with (any one of them).
    pub errors: Vec<ErrorMatch>,
    /// The step may also succeed (a `null` alternative of `any_of`).
    pub may_succeed: bool,
}

/// One error a step may fail with.
#[derive(Clone, Debug)]
pub struct ErrorMatch {
    /// The exception type name, if constrained.
    pub type_name: Option<String>,
    /// A regex searched in the message (`re.search`), if constrained; compiled once at load.
    pub pattern: Option<regex::Regex>,
}

impl PartialEq for ErrorMatch {
    fn eq(&self, other: &ErrorMatch) -> bool {
        self.type_name == other.type_name
            && self.pattern.as_ref().map(regex::Regex::as_str)
                == other.pattern.as_ref().map(regex::Regex::as_str)
    }
}

impl ErrorMatch {
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

impl fmt::Display for ErrorMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let type_name = self
            .type_name
            .as_deref()
            .filter(|t| !t.is_empty())
            .unwrap_or("an error");
        match &self.pattern {
            Some(pattern) => write!(f, "{type_name} matching /{}/", pattern.as_str()),
            None => f.write_str(type_name),
        }
    }
}

impl ExpectError {
    /// Whether an error of `type_name` with `message` is one of those expected.
    pub fn matches(&self, type_name: &str, message: &str) -> bool {
        self.errors.iter().any(|e| e.matches(type_name, message))
    }
}

impl fmt::Display for ExpectError {
    /// `ProtocolError matching /closed/ or success`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut each: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        if self.may_succeed {
            each.push("success".to_string());
        }
        f.write_str(&each.join(" or "))
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
    /// Reads and checks a scenario file. In a `sims/` folder (or below one), its `name`, if
    /// given, must be the file's stem.
    ///
    /// # Errors
    /// [`ScenarioError`] naming the file, and for format errors the line and column.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let io = |source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |message: String, at: Option<Location>| ScenarioError::Invalid {
            path: path.to_path_buf(),
            message,
            at,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > limits::FILE_BYTES_MAX {
            return Err(invalid(
                format!(
                    "file is {size} bytes; at most {} are read",
                    limits::FILE_BYTES_MAX
                ),
                None,
            ));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => {
                let (message, at) = not_utf8(error.as_bytes(), error.utf8_error().valid_up_to());
                return Err(invalid(message, Some(at)));
            }
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A scenario kept in `sims/` (or a folder below it) is found by its name.
        let kept = path
            .ancestors()
            .skip(1)
            .any(|dir| dir.file_name().is_some_and(|name| name == "sims"));
        Scenario::parse_text(&text, &stem, kept)
            .map_err(|diag| invalid(diag.message, diag.at.map(|at| Location::of(&text, at))))
    }

    /// Parses scenario text; `default_name` is used when the scenario has no `name`.
    ///
    /// # Errors
    /// `LINE:COLUMN: message`, saying what was expected.
    pub fn parse(text: &str, default_name: &str) -> Result<Scenario, String> {
        Scenario::parse_text(text, default_name, false).map_err(|diag| match diag.at {
            Some(offset) => {
                let at = source::line_column(text, offset);
                format!("{}:{}: {}", at.line, at.column, diag.message)
            }
            None => diag.message,
        })
    }

    /// The pre-scan, serde_yaml, then the checks that need the whole scenario; `named_by_file`:
    /// a `name` must equal `stem`.
    fn parse_text(text: &str, stem: &str, named_by_file: bool) -> Result<Scenario, Diag> {
        let scan = source::prescan(text).map_err(|refusal| Diag {
            message: refusal.message,
            at: Some(refusal.offset),
        })?;
        if let Some(offset) = scan.second_document {
            return Err(Diag {
                message: "a second YAML document starts here; a scenario file holds one".into(),
                at: Some(offset),
            });
        }
        if scan.content.is_none() {
            return Err(Diag {
                message: format!("empty scenario: {EXPECTED}"),
                at: Some(0),
            });
        }
        let problem = std::cell::RefCell::new(None);
        YAML_PARSES.with(|count| count.set(count.get() + 1));
        let raw = ScenarioSeed {
            found: Found(&problem),
        }
        .deserialize(serde_yaml::Deserializer::from_str(text));
        let raw = match raw {
            Ok(raw) => raw,
            Err(error) => {
                return Err(match problem.take() {
                    Some(problem) => Diag::find(text, problem),
                    None => Diag::from_yaml(text, &error, &scan),
                })
            }
        };
        raw.check(stem, named_by_file)
            .map_err(|problem| Diag::find(text, problem))
    }
}

thread_local! {
    static YAML_PARSES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Texts this thread has handed to serde_yaml to load a scenario. A text the pre-scan refuses
/// (nesting deeper than [`NESTING_MAX`]) is never handed over, which tests observe with this.
pub fn yaml_parses() -> u64 {
    YAML_PARSES.with(std::cell::Cell::get)
}

/// What a scenario must be.
const EXPECTED: &str = "expected a mapping with `agents` and `steps`";

/// An error found in a text, at a byte offset.
struct Diag {
    message: String,
    at: Option<usize>,
}

impl Diag {
    /// A problem found after deserialization, located at its node, or at the nearest node
    /// above it that the text has (a key written as a number is `"1"` once parsed).
    fn find(text: &str, mut problem: Problem) -> Diag {
        let at = loop {
            if let Some(at) = source::find(text, &problem) {
                break Some(source::offset_of(text, at));
            }
            if problem.path.pop().is_none() {
                break None;
            }
            problem.at_key = false;
        };
        Diag {
            at,
            message: problem.message,
        }
    }

    /// An error of serde_yaml's own. Those without a position are placed from the pre-scan:
    /// the alias-expansion limit at the first alias.
    fn from_yaml(text: &str, error: &serde_yaml::Error, scan: &source::Scan) -> Diag {
        static AT: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
        let at = AT.get_or_init(|| {
            regex::Regex::new(r" at (line \d+ column \d+|position \d+)").expect("a valid regex")
        });
        let mut message = at.replace_all(&error.to_string(), "").into_owned();
        let offset = match error.location() {
            Some(location) => Some(source::offset_of(
                text,
                source::LineColumn {
                    line: location.line(),
                    column: location.column(),
                },
            )),
            None if message.contains("repetition limit exceeded") => {
                message = "aliases expand to more than 100 times the document's size \
                           (repetition limit exceeded); the first alias is here"
                    .into();
                scan.first_alias
            }
            None if message.contains("more than one document") => {
                message = "a second YAML document starts here; a scenario file holds one".into();
                scan.second_document
            }
            None => None,
        };
        Diag {
            message,
            at: offset,
        }
    }
}

/// The message and place of the first byte that is not UTF-8, in `bytes`, whose first `valid`
/// bytes are.
fn not_utf8(bytes: &[u8], valid: usize) -> (String, Location) {
    let prefix = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
    let at = source::line_column(prefix, valid);
    let start = prefix.rfind('\n').map_or(0, |idx| idx + 1);
    let end = bytes[valid..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |idx| valid + idx);
    let line = String::from_utf8_lossy(&bytes[start..end]);
    (
        format!(
            "not UTF-8: byte 0x{:02x} starts no UTF-8 character; scenario files are UTF-8 text",
            bytes[valid]
        ),
        Location {
            line: at.line,
            column: at.column,
            text: line.trim_end_matches('\r').to_string(),
            width: 1,
        },
    )
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
    "expect",
    "chaos",
    "backends",
];

/// A scenario as read, before the checks that need all of it.
struct RawScenario {
    scenario: Scenario,
    /// The top-level keys given.
    keys: BTreeSet<String>,
    /// Whether `steps` came before `agents` (their agent names are then checked afterwards).
    steps_first: bool,
    /// The labels and agent names `expect:` uses, checked once the whole scenario is read.
    expect_names: Vec<expect::NameRef>,
}

struct ScenarioSeed<'a> {
    found: Found<'a>,
}

impl<'de> DeserializeSeed<'de> for ScenarioSeed<'_> {
    type Value = RawScenario;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawScenario, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// A top-level key, refused where it is written if unknown or given twice.
struct TopKey<'a> {
    seen: &'a BTreeSet<String>,
}

impl<'de> DeserializeSeed<'de> for TopKey<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for TopKey<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scenario key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<String, E> {
        if !SCENARIO_FIELDS.contains(&key) {
            return Err(E::unknown_field(key, SCENARIO_FIELDS));
        }
        if self.seen.contains(key) {
            return Err(E::custom(format!("duplicate key `{key}`")));
        }
        Ok(key.to_string())
    }
}

impl<'de> Visitor<'de> for ScenarioSeed<'_> {
    type Value = RawScenario;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scenario mapping with `agents` and `steps`")
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawScenario, E> {
        Err(E::custom(format!("empty scenario: {EXPECTED}")))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawScenario, A::Error> {
        let found = self.found;
        let mut scenario = Scenario {
            name: String::new(),
            description: None,
            hub: HubOptions::default(),
            agents: Vec::new(),
            steps: Vec::new(),
            network: NetworkOptions::default(),
            sweep: SweepOptions::default(),
            expect: Default::default(),
        };
        let mut expect_names = Vec::new();
        let mut known_agents: Option<BTreeSet<String>> = None;
        let mut seen = BTreeSet::new();
        let mut steps_first = false;
        while let Some(key) = map.next_key_seed(TopKey { seen: &seen })? {
            seen.insert(key.clone());
            let fail = |problem: Problem| found.fail(problem.within([key.as_str()]));
            match key.as_str() {
                "name" => scenario.name = map.next_value()?,
                "description" => scenario.description = map.next_value()?,
                "hub" => {
                    if let Some(fields) = map.next_value::<Option<HubFields>>()? {
                        scenario.hub = hub_options(fields).map_err(fail)?;
                    }
                }
                "network" => {
                    if let Some(fields) = map.next_value::<Option<network::NetworkFields>>()? {
                        scenario.network = network::options(fields).map_err(fail)?;
                    }
                }
                "agents" => {
                    scenario.agents = map.next_value_seed(AgentsSeed { found })?;
                    known_agents = Some(scenario.agents.iter().map(|a| a.name.clone()).collect());
                }
                "steps" => {
                    steps_first = known_agents.is_none();
                    scenario.steps = map.next_value_seed(StepsSeed {
                        agents: known_agents.as_ref(),
                        found,
                    })?
                }
                "seed" => scenario.sweep.seed = map.next_value()?,
                "seeds" => {
                    let value: serde_yaml::Value = map.next_value()?;
                    scenario.sweep.seeds = Some(checking::seeds(&value).map_err(fail)?);
                }
                "invariants" => {
                    let names: Vec<String> = map.next_value()?;
                    scenario.sweep.invariants = checking::invariants(&names).map_err(fail)?;
                }
                "known_violations" => {
                    let entries: Vec<checking::KnownFields> = map.next_value()?;
                    scenario.sweep.known_violations = checking::known(entries).map_err(fail)?;
                }
                "expect_reached" => {
                    let names: Vec<String> = map.next_value()?;
                    checking::probes(&names).map_err(fail)?;
                    scenario.sweep.expect_reached = names;
                }
                "expect" => {
                    let value: serde_yaml::Value = map.next_value()?;
                    if !value.is_null() {
                        let (expect, names) = expect::parse(&value).map_err(|p| found.fail(p))?;
                        scenario.expect = expect;
                        expect_names = names;
                    }
                }
                "chaos" => {
                    let fields: checking::ChaosFields = map.next_value()?;
                    scenario.sweep.chaos = Some(checking::chaos(fields).map_err(fail)?);
                }
                "backends" => {
                    let names: Vec<String> = map.next_value()?;
                    scenario.sweep.backends = checking::backends(&names).map_err(fail)?;
                }
                _ => unreachable!("TopKey refuses unknown keys"),
            }
        }
        Ok(RawScenario {
            scenario,
            keys: seen,
            steps_first,
            expect_names,
        })
    }
}

impl RawScenario {
    /// The checks that need the whole scenario: it is not empty, its `name` is the file's
    /// (`named_by_file`), fault and step agents are declared, channel labels are opened before
    /// they are used and adapter types exist.
    fn check(self, stem: &str, named_by_file: bool) -> Result<Scenario, Problem> {
        let RawScenario {
            mut scenario,
            keys,
            steps_first,
            expect_names,
        } = self;
        if !keys.contains("agents") && !keys.contains("steps") {
            return Err(Problem::here(format!(
                "empty scenario: no `agents` and no `steps`; {EXPECTED}"
            )));
        }
        if keys.contains("name") && named_by_file && scenario.name != stem {
            return Err(Problem::at(
                format!(
                    "scenario name `{}` differs from its file name `{stem}`; they must be equal \
                     (traces, snapshots and reference traces are found by name)",
                    scenario.name
                ),
                ["name"],
            ));
        }
        if scenario.name.is_empty() {
            scenario.name = stem.to_string();
        }
        let names: BTreeSet<String> = scenario.agents.iter().map(|a| a.name.clone()).collect();
        let known = || {
            names
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (idx, timed) in scenario.network.faults.iter().enumerate() {
            if let Some(agent) = timed.fault.agent() {
                if !names.contains(agent) {
                    return Err(Problem::at(
                        format!(
                            "network.faults[{idx}]: unknown agent `{agent}` (agents: {})",
                            known()
                        ),
                        [
                            Seg::from("network"),
                            "faults".into(),
                            idx.into(),
                            timed.fault.key().into(),
                        ],
                    ));
                }
            }
        }
        if steps_first {
            for (idx, step) in scenario.steps.iter().enumerate() {
                check_step_agents(step, &names).map_err(|p| p.within(steps_path(idx)))?;
            }
        }
        check_simulated_length(&scenario)?;
        check_labels_and_types(&scenario.steps)?;
        let labels = Labels::of(&scenario.steps);
        expect::check_names(
            &expect_names,
            &names,
            |label| labels.known(label),
            &labels.listed(),
        )?;
        Ok(scenario)
    }
}

/// `30 days (2592000 s)`.
fn sim_max_text() -> String {
    let seconds = limits::SIM_MICROS_MAX / 1_000_000;
    format!("{} days ({seconds} s)", seconds / 86_400)
}

/// The simulated time a scenario asks for stays within [`limits::SIM_MICROS_MAX`]: its waits
/// together, each timed fault, the chaos phase.
fn check_simulated_length(scenario: &Scenario) -> Result<(), Problem> {
    let mut waited: u64 = 0;
    for (idx, step) in scenario.steps.iter().enumerate() {
        if let Action::Wait(micros) = step.action {
            waited = waited.saturating_add(micros);
            if waited > limits::SIM_MICROS_MAX {
                return Err(Problem::at(
                    format!(
                        "op `wait`: the waits up to here add up to {} s; a run simulates at most {}",
                        waited / 1_000_000,
                        sim_max_text()
                    ),
                    [Seg::from("steps"), Seg::Index(idx), "seconds".into()],
                ));
            }
        }
    }
    for (idx, timed) in scenario.network.faults.iter().enumerate() {
        if timed.at > limits::SIM_MICROS_MAX {
            return Err(Problem::at(
                format!(
                    "network.faults[{idx}]: at {} s, past the longest run ({})",
                    timed.at / 1_000_000,
                    sim_max_text()
                ),
                [
                    Seg::from("network"),
                    "faults".into(),
                    idx.into(),
                    "at".into(),
                ],
            ));
        }
    }
    if let Some(chaos) = &scenario.sweep.chaos {
        if chaos.until > limits::SIM_MICROS_MAX {
            return Err(Problem::at(
                format!(
                    "chaos.until: {} s is past the longest run ({})",
                    chaos.until / 1_000_000,
                    sim_max_text()
                ),
                ["chaos", "until"],
            ));
        }
    }
    Ok(())
}

/// The path of step `idx`.
fn steps_path(idx: usize) -> [Seg; 2] {
    [Seg::from("steps"), Seg::Index(idx)]
}

/// The channel labels a scenario's steps open: `as:` labels, and `chN` if some open has none.
struct Labels<'s> {
    opened: Vec<&'s str>,
    unnamed_opens: bool,
}

impl<'s> Labels<'s> {
    /// The labels opened by `steps`.
    fn of(steps: &'s [Step]) -> Labels<'s> {
        let mut labels = Labels {
            opened: Vec::new(),
            unnamed_opens: false,
        };
        for step in steps {
            labels.add(step);
        }
        labels
    }

    fn add(&mut self, step: &'s Step) {
        if let Action::Open { label, .. } = &step.action {
            match label {
                Some(label) => self.opened.push(label),
                None => self.unnamed_opens = true,
            }
        }
    }

    /// `label` is opened (`chN` is, once an open has no `as:`).
    fn known(&self, label: &str) -> bool {
        let automatic = self.unnamed_opens
            && label
                .strip_prefix("ch")
                .is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n > 0));
        self.opened.contains(&label) || automatic
    }

    /// The labels, sorted, for a message (`none` if there are none).
    fn listed(&self) -> String {
        let mut labels = self.opened.clone();
        if self.unnamed_opens {
            labels.push("chN");
        }
        if labels.is_empty() {
            return "none".to_string();
        }
        labels.sort_unstable();
        labels.dedup();
        labels.join(", ")
    }
}

/// Each `channel` a step names was opened (`as:`, or `chN` for an open without one) by an
/// earlier step, unless the step asks for `unknown_channel`; each `open` names a registered
/// adapter type, unless it expects an error.
fn check_labels_and_types(steps: &[Step]) -> Result<(), Problem> {
    let mut labels = Labels {
        opened: Vec::new(),
        unnamed_opens: false,
    };
    for (idx, step) in steps.iter().enumerate() {
        match &step.action {
            Action::Open { manifest_type, .. } => {
                if step.expect_error.is_none()
                    && crate::hub::adapter::AdapterKind::lookup(manifest_type, 1).is_none()
                {
                    return Err(Problem::at(
                        format!(
                            "unknown adapter type `{manifest_type}`; expected one of {}",
                            ADAPTER_TYPES.join(", ")
                        ),
                        ["type"],
                    )
                    .within(steps_path(idx)));
                }
                labels.add(step);
            }
            Action::Send {
                channel,
                unknown_channel: false,
                ..
            }
            | Action::Close {
                channel,
                unknown_channel: false,
                ..
            } if !labels.known(channel) => {
                let so_far = if labels.opened.is_empty() {
                    "none".to_string()
                } else {
                    let mut opened = labels.opened.clone();
                    opened.sort_unstable();
                    opened.dedup();
                    opened.join(", ")
                };
                return Err(Problem::at(
                    format!(
                        "channel `{channel}` is used before any step opens it \
                             (no earlier `open` has `as: {channel}`; opened so far: {so_far}); \
                             `unknown_channel: true` asks for a channel the hub never minted"
                    ),
                    ["channel"],
                )
                .within(steps_path(idx)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The adapter types the hub registers.
const ADAPTER_TYPES: [&str; 4] = ["consulting", "conversation", "discussion", "workflow"];

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

/// The `hub:` block's values; a problem's path is inside the block.
fn hub_options(fields: HubFields) -> Result<HubOptions, Problem> {
    let _ = fields.attach_plugin; // hubsim's agents carry no network tools either way
    let mut options = HubOptions::default();
    if let Some(epoch) = fields.epoch {
        options.epoch = Timestamp::parse_iso(&epoch).ok_or_else(|| {
            Problem::at(
                format!("hub.epoch: `{epoch}` is not an ISO-8601 timestamp"),
                ["epoch"],
            )
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
                return Err(Problem::at(
                    format!("hub.{name} must be a positive number of seconds"),
                    [name],
                ));
            }
            *slot = value;
        }
    }
    Ok(options)
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
