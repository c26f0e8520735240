//! A run seen by a person: the event log of a run ([`EventLog`]) joined with what the run left
//! ([`Run`]) into numbered entries with the trace's names, the lanes they happen on (the hub and
//! one per agent), the frames' pairs (send and delivery or drop), the fault periods, the model
//! turns and each violation with the entries it concerns. The text timeline
//! ([`Timeline::render`], `hubsim run --timeline`) and the HTML report
//! ([`crate::report::html`], `hubsim run --html`) both show this one model.

use super::check::Violation;
use super::log::{Event, EventLog, FrameSummary};
use super::record::Run;
use super::scenario::{Fault, Scenario};
use super::trace::Normaliser;
use super::{Backend, RunOptions};
use crate::client::host::HostEvent;
use crate::ids::{ChannelId, EnvelopeId};
use crate::json::py_float_repr;
use crate::proto::frame::FrameKind;
use crate::time::MICROS_PER_SECOND;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// The hub's lane; agent `i` is on lane `i + 1`.
pub const HUB_LANE: usize = 0;

/// What kind of thing an entry is (the HTML report colours and filters by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A scenario step began.
    Step,
    /// A scenario step ended.
    StepEnd,
    /// A frame left one end of a link.
    Sent,
    /// A frame arrived.
    Delivered,
    /// A frame was lost.
    Dropped,
    /// A connection opened, re-attached or closed.
    Connection,
    /// A fault was applied, or every fault healed.
    Fault,
    /// What a client saw or did (deliveries, handled envelopes).
    Client,
    /// A model turn started.
    TurnStart,
    /// A model turn ended.
    TurnEnd,
    /// The hub's timers ran.
    Timer,
    /// The store synced.
    Store,
    /// The hub crashed, restarted, or could not restart.
    Crash,
    /// An invariant broke.
    Violation,
}

/// A frame as an entry shows it.
#[derive(Clone, Debug, Serialize)]
pub struct FrameView {
    /// Its number in the run (0: its other end is not logged).
    pub seq: u64,
    /// Agent to hub.
    pub up: bool,
    /// `request`, `notify`, ...
    pub kind: &'static str,
    /// Its JSON as it crossed the wire, with the trace's names (empty at the entries of a
    /// frame after its first).
    pub json: String,
}

/// One numbered line of the timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// Its number, from 1.
    pub n: usize,
    /// Simulated time (µs from the start of the run).
    pub at: u64,
    /// Who: `hub`, an agent, `alice -> hub`, `harness`, `network`, `checker`.
    pub who: String,
    /// What happened, with the trace's names.
    pub what: String,
    /// What kind of thing.
    pub kind: Kind,
    /// The lane it happens on (`None`: the harness's and the network's own entries).
    pub lane: Option<usize>,
    /// The frame, for a frame entry.
    pub frame: Option<FrameView>,
    /// The agents it concerns (indices).
    pub agents: Vec<usize>,
    /// The channels it concerns (labels).
    pub channels: Vec<String>,
    /// For a violation: the entries it concerns (numbers, earlier ones).
    pub refs: Vec<usize>,
}

/// A period on one lane: a fault (partition, hold, crash) or a model turn.
#[derive(Clone, Debug, Serialize)]
pub struct Band {
    /// The lane.
    pub lane: usize,
    /// The entry that began it.
    pub from: usize,
    /// The entry that ended it (`None`: it lasted to the end of the run).
    pub to: Option<usize>,
    /// `partition`, `hold`, `crash` or `turn`.
    pub kind: &'static str,
    /// What it was.
    pub label: String,
}

/// One channel's WAL at the end of the run.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelTable {
    /// Its label.
    pub label: String,
    /// Its adapter.
    pub adapter: &'static str,
    /// Its state.
    pub state: &'static str,
    /// Why it closed, if it did.
    pub close_reason: String,
    /// One row per WAL entry: position, sender, event type, audience, content.
    pub rows: Vec<[String; 5]>,
}

/// What to show of a timeline.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only entries concerning these agents (by name).
    pub agents: Vec<String>,
    /// Only entries concerning these channels (by label).
    pub channels: Vec<String>,
    /// From this simulated time (µs).
    pub from: Option<u64>,
    /// Up to this simulated time (µs).
    pub to: Option<u64>,
}

impl Filter {
    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
            && self.channels.is_empty()
            && self.from.is_none()
            && self.to.is_none()
    }
}

/// A run as a person sees it.
#[derive(Clone, Debug, Serialize)]
pub struct Timeline {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The backend (`events`, `turmoil`, `in-process`).
    pub backend: String,
    /// The lanes' names: `hub`, then the agents in registration order.
    pub lanes: Vec<String>,
    /// The entries, in order.
    pub entries: Vec<Entry>,
    /// Fault periods and model turns.
    pub bands: Vec<Band>,
    /// The faults the seed's chaos profile drew (entry numbers).
    pub chaos: Vec<usize>,
    /// The violations (entry numbers).
    pub violations: Vec<usize>,
    /// Violations found at the end of the run, after the last entry (kind, message).
    pub final_violations: Vec<(String, String)>,
    /// Each channel's WAL at the end.
    pub channels: Vec<ChannelTable>,
    /// Every channel label of the run.
    pub channel_labels: Vec<String>,
    /// The invariants checked.
    pub invariants: Vec<String>,
}

/// Where a run came from, for the timeline's header.
#[derive(Clone, Debug)]
pub struct Origin<'a> {
    /// The scenario's name.
    pub scenario: &'a str,
    /// The seed.
    pub seed: u64,
    /// The backend's name.
    pub backend: &'static str,
    /// The invariants checked.
    pub invariants: Vec<String>,
}

impl Origin<'_> {
    /// A run of `scenario` as `options` say.
    pub fn of<'a>(scenario: &'a Scenario, options: &RunOptions) -> Origin<'a> {
        let backend = match options.backend {
            Backend::InProcess => "in-process",
            Backend::Events => "events",
            Backend::Turmoil(_) => "turmoil",
        };
        Origin {
            scenario: &scenario.name,
            seed: options.seed,
            backend,
            invariants: if options.backend == Backend::InProcess {
                Vec::new()
            } else {
                scenario
                    .sweep
                    .invariants
                    .iter()
                    .map(|inv| inv.name().to_string())
                    .collect()
            },
        }
    }
}

/// Longest frame JSON an entry keeps (longer ones are cut, and say so).
const JSON_MAX: usize = 2048;

impl Timeline {
    /// The timeline of `run`, from its event log and its violations.
    pub fn new(
        origin: &Origin<'_>,
        run: &Run,
        log: &EventLog,
        violations: &[Violation],
    ) -> Timeline {
        Builder::new(run, log).build(origin, violations)
    }

    /// How many frames the log holds: each numbered frame once (its send and its delivery or
    /// drop are one frame), and each entry of an unnumbered one.
    pub fn frame_count(&self) -> usize {
        let mut numbered = BTreeSet::new();
        let mut unnumbered = 0;
        for frame in self.entries.iter().filter_map(|e| e.frame.as_ref()) {
            if frame.seq == 0 {
                unnumbered += 1;
            } else {
                numbered.insert(frame.seq);
            }
        }
        numbered.len() + unnumbered
    }

    /// Refuses a filter naming an agent or a channel the run does not have.
    ///
    /// # Errors
    /// Which name is unknown, and the names there are.
    pub fn check_filter(&self, filter: &Filter) -> Result<(), String> {
        for name in &filter.agents {
            if !self.lanes.contains(name) {
                return Err(format!(
                    "--only {name}: no such agent; the lanes are {}",
                    self.lanes.join(", ")
                ));
            }
        }
        let labels: Vec<&str> = self.channel_labels.iter().map(String::as_str).collect();
        for label in &filter.channels {
            if !labels.contains(&label.as_str()) {
                return Err(format!(
                    "--channel {label}: no such channel; the channels are {}",
                    if labels.is_empty() {
                        "none".to_string()
                    } else {
                        labels.join(", ")
                    }
                ));
            }
        }
        Ok(())
    }

    /// The entries `filter` keeps (violations always stay).
    pub fn filtered<'a>(&'a self, filter: &Filter) -> impl Iterator<Item = &'a Entry> + 'a {
        let filter = filter.clone();
        let agents: BTreeSet<usize> = filter
            .agents
            .iter()
            .filter_map(|name| self.lanes.iter().position(|lane| lane == name))
            .filter(|&lane| lane != HUB_LANE)
            .map(|lane| lane - 1)
            .collect();
        let hub = filter.agents.iter().any(|name| name == "hub");
        self.entries.iter().filter(move |entry| {
            if entry.kind == Kind::Violation {
                return true;
            }
            if filter.from.is_some_and(|from| entry.at < from)
                || filter.to.is_some_and(|to| entry.at > to)
            {
                return false;
            }
            let by_agent = filter.agents.is_empty()
                || entry.agents.iter().any(|agent| agents.contains(agent))
                || (hub && entry.lane == Some(HUB_LANE))
                || (entry.agents.is_empty() && matches!(entry.kind, Kind::Crash));
            let by_channel = filter.channels.is_empty()
                || entry
                    .channels
                    .iter()
                    .any(|label| filter.channels.contains(label));
            by_agent && by_channel
        })
    }

    /// Every entry, one line each (line N is entry #N), without the header: what two runs of
    /// one seed are compared by.
    pub fn entry_lines(&self) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            write_entry(&mut out, entry);
        }
        out
    }

    /// The text timeline: a header (scenario, seed, the chaos schedule the seed drew), then one
    /// line per entry `filter` keeps: number, simulated time, who, what.
    pub fn render(&self, filter: &Filter) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "timeline of {} (seed {}, {} backend): {} events, {} agents",
            self.scenario,
            self.seed,
            self.backend,
            self.entries.len(),
            self.lanes.len() - 1
        );
        if self.chaos.is_empty() {
            let _ = writeln!(out, "chaos schedule drawn by the seed: none");
        } else {
            let _ = writeln!(out, "chaos schedule drawn by the seed:");
            for &n in &self.chaos {
                let entry = &self.entries[n - 1];
                let _ = writeln!(out, "    {} {} (#{n})", seconds(entry.at), entry.what);
            }
        }
        if !filter.is_empty() {
            let mut parts = Vec::new();
            if !filter.agents.is_empty() {
                parts.push(format!("only {}", filter.agents.join(", ")));
            }
            if !filter.channels.is_empty() {
                parts.push(format!("channel {}", filter.channels.join(", ")));
            }
            if let Some(from) = filter.from {
                parts.push(format!("from {}", seconds(from)));
            }
            if let Some(to) = filter.to {
                parts.push(format!("to {}", seconds(to)));
            }
            let _ = writeln!(
                out,
                "filter: {} (violations always shown)",
                parts.join(", ")
            );
        }
        for entry in self.filtered(filter) {
            write_entry(&mut out, entry);
        }
        for (kind, message) in &self.final_violations {
            let _ = writeln!(
                out,
                "{:>6}  {:>10}  {:<16} VIOLATION {kind} at the end: {message}",
                "", "end", "checker"
            );
        }
        out
    }
}

impl Timeline {
    /// Each violation with the entries it concerns, as a terminal shows them.
    pub fn violation_report(&self) -> String {
        let mut out = String::new();
        for entry in self.entries.iter().filter(|e| e.kind == Kind::Violation) {
            write_entry(&mut out, entry);
            for n in &entry.refs {
                if let Some(concerned) = self.entries.get(n.wrapping_sub(1)) {
                    out.push_str("        ");
                    write_entry(&mut out, concerned);
                }
            }
        }
        for (kind, message) in &self.final_violations {
            let _ = writeln!(out, "   end  VIOLATION {kind} at the end: {message}");
        }
        out
    }
}

/// One entry's line.
fn write_entry(out: &mut String, entry: &Entry) {
    let number = format!("#{}", entry.n);
    let _ = write!(
        out,
        "{number:>6}  {:>10}  {:<16} {}",
        seconds(entry.at),
        entry.who,
        entry.what
    );
    if !entry.refs.is_empty() {
        let refs: Vec<String> = entry.refs.iter().map(|n| format!("#{n}")).collect();
        let _ = write!(out, " [concerns {}]", refs.join(" "));
    }
    out.push('\n');
}

/// `16.0s`, `16.25s`.
pub fn seconds(micros: u64) -> String {
    format!(
        "{}s",
        py_float_repr(micros as f64 / MICROS_PER_SECOND as f64)
    )
}

/// The state the entries are built with.
struct Builder<'r> {
    run: &'r Run,
    log: &'r EventLog,
    normaliser: Normaliser,
    /// Each envelope's channel: from the WALs, and from what the clients received.
    channel_of: BTreeMap<EnvelopeId, ChannelId>,
    entries: Vec<Entry>,
    bands: Vec<Band>,
    /// Open periods: (lane, kind, key) -> index in `bands`.
    open: BTreeMap<(usize, &'static str, String), usize>,
    /// Entries mentioning each envelope.
    by_envelope: BTreeMap<EnvelopeId, Vec<usize>>,
    /// Each step's starting entry (index).
    steps: BTreeMap<usize, usize>,
    /// Frames whose JSON an entry holds.
    frames_seen: BTreeSet<u64>,
    /// Each request's op, by agent and request id (to name what a response answers).
    requests: BTreeMap<(usize, String), String>,
}

impl<'r> Builder<'r> {
    fn new(run: &'r Run, log: &'r EventLog) -> Builder<'r> {
        let mut channel_of = BTreeMap::new();
        for &channel in run.labels.keys() {
            for envelope in run.hub.read_wal(channel) {
                if let Some(id) = envelope.envelope_id {
                    channel_of.insert(id, channel);
                }
            }
        }
        for logged in log.events() {
            match &logged.event {
                Event::Host {
                    event: HostEvent::Received { envelope, .. },
                    ..
                } => {
                    if let Some(id) = envelope.envelope_id {
                        channel_of.entry(id).or_insert(envelope.channel_id);
                    }
                }
                Event::FrameSent { frame, .. }
                | Event::FrameDelivered { frame, .. }
                | Event::FrameDropped { frame, .. } => {
                    if let (Some(id), Some(channel)) = (frame.envelope, frame.channel) {
                        channel_of.entry(id).or_insert(channel);
                    }
                }
                _ => {}
            }
        }
        Builder {
            run,
            log,
            normaliser: Normaliser::for_messages(
                run,
                log.events()
                    .iter()
                    .filter_map(|logged| match &logged.event {
                        Event::Host {
                            event: HostEvent::Received { envelope, .. },
                            ..
                        } => Some(&**envelope),
                        _ => None,
                    }),
            ),
            channel_of,
            entries: Vec::new(),
            bands: Vec::new(),
            open: BTreeMap::new(),
            by_envelope: BTreeMap::new(),
            steps: BTreeMap::new(),
            frames_seen: BTreeSet::new(),
            requests: BTreeMap::new(),
        }
    }

    fn agent_name(&self, agent: usize) -> String {
        self.run
            .agents
            .get(agent)
            .map_or_else(|| format!("agent#{agent}"), |a| a.model.name.clone())
    }

    fn agent_named(&self, name: &str) -> Option<usize> {
        self.run.agents.iter().position(|a| a.model.name == name)
    }

    fn name_of(&self, raw: impl std::fmt::Display) -> String {
        self.normaliser.text(&raw.to_string()).into_owned()
    }

    fn label(&self, channel: ChannelId) -> Option<String> {
        self.run.labels.get(&channel).cloned()
    }

    fn envelope(&self, id: Option<EnvelopeId>) -> String {
        id.map_or_else(|| "?".to_string(), |id| self.name_of(id))
    }

    fn build(mut self, origin: &Origin<'_>, violations: &[Violation]) -> Timeline {
        let log = self.log;
        let mut chaos = Vec::new();
        let mut violation_entries = Vec::new();
        for logged in log.events() {
            let n = self.entries.len() + 1;
            let mut entry = Entry {
                n,
                at: logged.at,
                who: String::new(),
                what: String::new(),
                kind: Kind::Step,
                lane: None,
                frame: None,
                agents: Vec::new(),
                channels: Vec::new(),
                refs: Vec::new(),
            };
            let mut envelopes: Vec<EnvelopeId> = Vec::new();
            match &logged.event {
                Event::StepStarted { step, op } => {
                    self.steps.insert(*step, n - 1);
                    entry.who = "harness".into();
                    entry.what = format!("step {step} {op}{}", self.step_detail(*step, &mut entry));
                }
                Event::StepEnded { step, error } => {
                    entry.kind = Kind::StepEnd;
                    entry.who = "harness".into();
                    entry.what = match error {
                        None => format!("step {step} ok"),
                        Some(error) => format!(
                            "step {step} failed: {}: {}",
                            error.type_name,
                            self.normaliser.message(&error.message)
                        ),
                    };
                    if let Some(&started) = self.steps.get(step) {
                        let started = &self.entries[started];
                        entry.agents = started.agents.clone();
                        entry.channels = started.channels.clone();
                    }
                }
                Event::FrameSent { agent, up, frame }
                | Event::FrameDelivered { agent, up, frame }
                | Event::FrameDropped {
                    agent, up, frame, ..
                } => {
                    let (verb, kind) = match &logged.event {
                        Event::FrameSent { .. } => ("sent".to_string(), Kind::Sent),
                        Event::FrameDelivered { .. } => ("delivered".to_string(), Kind::Delivered),
                        Event::FrameDropped { why, .. } => {
                            (format!("dropped ({})", why.as_str()), Kind::Dropped)
                        }
                        _ => unreachable!("a frame event"),
                    };
                    let name = self.agent_name(*agent);
                    entry.who = if *up {
                        format!("{name} -> hub")
                    } else {
                        format!("hub -> {name}")
                    };
                    entry.kind = kind;
                    // A frame is on its receiver's lane once delivered, on its sender's before.
                    entry.lane = Some(match (kind, up) {
                        (Kind::Delivered, true) | (Kind::Sent | Kind::Dropped, false) => HUB_LANE,
                        _ => agent + 1,
                    });
                    entry.agents.push(*agent);
                    entry.what = format!("{verb} {}", self.frame_text(*agent, frame));
                    if let Some(channel) = frame.channel.and_then(|c| self.label(c)) {
                        entry.channels.push(channel);
                    } else if let Some(channel) = frame
                        .envelope
                        .and_then(|e| self.channel_of.get(&e).copied())
                        .and_then(|c| self.label(c))
                    {
                        entry.channels.push(channel);
                    }
                    envelopes.extend(frame.envelope);
                    // A frame's JSON is kept once, at its first entry.
                    let json = if frame.seq == 0 || self.frames_seen.insert(frame.seq) {
                        self.frame_json(frame)
                    } else {
                        String::new()
                    };
                    entry.frame = Some(FrameView {
                        seq: frame.seq,
                        up: *up,
                        kind: frame.kind.as_str(),
                        json,
                    });
                }
                Event::Connected { agent, connection } => {
                    entry.kind = Kind::Connection;
                    entry.who = self.agent_name(*agent);
                    entry.lane = Some(agent + 1);
                    entry.agents.push(*agent);
                    entry.what = format!("connected (connection {connection})");
                }
                Event::Reattached { agent, connection } => {
                    entry.kind = Kind::Connection;
                    entry.who = self.agent_name(*agent);
                    entry.lane = Some(agent + 1);
                    entry.agents.push(*agent);
                    entry.what = format!(
                        "re-attach: hello replaying past the cursor (connection {connection})"
                    );
                }
                Event::ConnectionClosed { agent, why } => {
                    entry.kind = Kind::Connection;
                    entry.who = self.agent_name(*agent);
                    entry.lane = Some(agent + 1);
                    entry.agents.push(*agent);
                    entry.what = format!("connection closed ({})", why.as_str());
                }
                Event::Fault {
                    fault,
                    chaos: drawn,
                } => {
                    entry.kind = Kind::Fault;
                    entry.who = "network".into();
                    let origin = if *drawn { "chaos " } else { "" };
                    entry.what = format!("{origin}fault: {}", describe_fault(fault));
                    if let Some(agent) = fault.agent().and_then(|name| self.agent_named(name)) {
                        entry.agents.push(agent);
                        entry.lane = Some(agent + 1);
                    }
                    if matches!(fault, Fault::Crash | Fault::Restart) {
                        entry.lane = Some(HUB_LANE);
                    }
                    self.fault_band(n, fault);
                    if *drawn {
                        chaos.push(n);
                    }
                }
                Event::Healed => {
                    entry.kind = Kind::Fault;
                    entry.who = "network".into();
                    entry.what = "every fault healed".into();
                    let open: Vec<_> = self
                        .open
                        .iter()
                        .filter(|((_, kind, _), _)| *kind != "turn" && *kind != "crash")
                        .map(|(key, _)| key.clone())
                        .collect();
                    for key in open {
                        self.close_band(&key, n);
                    }
                }
                Event::Host { agent, event } => {
                    entry.who = self.agent_name(*agent);
                    entry.lane = Some(agent + 1);
                    entry.agents.push(*agent);
                    entry.kind = Kind::Client;
                    entry.what = self.host_event(*agent, n, event, &mut entry.kind, &mut envelopes);
                    for id in &envelopes {
                        if let Some(label) = self.channel_of.get(id).and_then(|c| self.label(*c)) {
                            entry.channels.push(label);
                        }
                    }
                }
                Event::HubTimers { appended, audited } => {
                    entry.kind = Kind::Timer;
                    entry.who = "hub".into();
                    entry.lane = Some(HUB_LANE);
                    entry.what =
                        format!("timers ran: {appended} WAL entries, {audited} audit records");
                }
                Event::StoreSynced => {
                    entry.kind = Kind::Store;
                    entry.who = "hub".into();
                    entry.lane = Some(HUB_LANE);
                    entry.what = "store synced".into();
                }
                Event::HubCrashed => {
                    entry.kind = Kind::Crash;
                    entry.who = "hub".into();
                    entry.lane = Some(HUB_LANE);
                    entry.what = "crashed: writes since the last sync are lost".into();
                    self.open_band(HUB_LANE, "crash", String::new(), n, "hub down".into());
                }
                Event::HubRestarted => {
                    entry.kind = Kind::Crash;
                    entry.who = "hub".into();
                    entry.lane = Some(HUB_LANE);
                    entry.what = "restarted from its store".into();
                    self.close_band(&(HUB_LANE, "crash", String::new()), n);
                }
                Event::HubNotRestarted { message } => {
                    entry.kind = Kind::Crash;
                    entry.who = "hub".into();
                    entry.lane = Some(HUB_LANE);
                    entry.what = format!("did not restart: {}", self.normaliser.message(message));
                }
                Event::Violation { kind, message } => {
                    entry.kind = Kind::Violation;
                    entry.who = "checker".into();
                    entry.what = format!("VIOLATION {kind}: {}", self.normaliser.message(message));
                    entry.refs = self.concerns(message);
                    entry.agents = self.agents_in(message);
                    entry.lane = entry
                        .refs
                        .last()
                        .and_then(|&r| self.entries[r - 1].lane)
                        .or(Some(HUB_LANE));
                    violation_entries.push(n);
                }
            }
            for id in envelopes {
                self.by_envelope.entry(id).or_default().push(n);
            }
            entry.channels.sort();
            entry.channels.dedup();
            self.entries.push(entry);
        }
        let logged: BTreeSet<(String, String)> = self
            .entries
            .iter()
            .filter(|e| e.kind == Kind::Violation)
            .map(|e| (e.what.clone(), String::new()))
            .collect();
        let final_violations = violations
            .iter()
            .filter(|v| {
                let what = format!(
                    "VIOLATION {}: {}",
                    v.kind,
                    self.normaliser.message(&v.message)
                );
                !logged.contains(&(what, String::new()))
            })
            .map(|v| (v.kind.to_string(), self.normaliser.message(&v.message)))
            .collect();
        let mut lanes = vec!["hub".to_string()];
        lanes.extend(self.run.agents.iter().map(|a| a.model.name.clone()));
        let channels = self.channel_tables();
        Timeline {
            scenario: origin.scenario.to_string(),
            seed: origin.seed,
            backend: origin.backend.to_string(),
            lanes,
            entries: self.entries,
            bands: self.bands,
            chaos,
            violations: violation_entries,
            final_violations,
            channels,
            channel_labels: self.run.labels.values().cloned().collect(),
            invariants: origin.invariants.clone(),
        }
    }

    /// A step's keys as written (`agent=bob channel=c1 ...`); notes the agents and channels
    /// it names.
    fn step_detail(&self, step: usize, entry: &mut Entry) -> String {
        let Some(record) = self.run.steps.iter().find(|r| r.idx == step) else {
            return String::new();
        };
        let mut out = String::new();
        for (key, value) in &record.echo {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            for word in words(&text) {
                if let Some(agent) = self.agent_named(word) {
                    entry.agents.push(agent);
                }
                if self.run.labels.values().any(|label| label == word) {
                    entry.channels.push(word.to_string());
                }
            }
            let text = self.normaliser.text(&text);
            let _ = write!(out, " {key}={}", shorten(&text, 60));
        }
        entry.agents.sort_unstable();
        entry.agents.dedup();
        out
    }

    /// A frame in words: `request post_envelope`, `response to get_agent: ok`,
    /// `notify <env:c1#2> ag2.msg.text`, `receipt <env:c1#2> ack`, `hello since <env:c1#1>`.
    fn frame_text(&mut self, agent: usize, frame: &FrameSummary) -> String {
        let kind = frame.kind.as_str();
        let request_id = || frame.request_id.clone().unwrap_or_default();
        match frame.kind {
            FrameKind::Request => {
                let op = frame.op.clone().unwrap_or_default();
                self.requests.insert((agent, request_id()), op.clone());
                match frame.channel.and_then(|c| self.label(c)) {
                    Some(label) => format!("{kind} {op} ({label})"),
                    None => format!("{kind} {op}"),
                }
            }
            FrameKind::Response => {
                let op = self
                    .requests
                    .get(&(agent, request_id()))
                    .map_or("?", String::as_str);
                match &frame.failure {
                    None => format!("{kind} to {op}: ok"),
                    Some((code, message)) => format!(
                        "{kind} to {op}: {code}: {}",
                        self.normaliser.message(message)
                    ),
                }
            }
            FrameKind::Error => match &frame.failure {
                Some((code, message)) => {
                    format!("{kind} {code}: {}", self.normaliser.message(message))
                }
                None => kind.to_string(),
            },
            FrameKind::Notify => format!(
                "{kind} {} {}",
                self.envelope(frame.envelope),
                frame.event_type.as_deref().unwrap_or("?")
            ),
            FrameKind::Receipt => format!(
                "{kind} {} {}",
                self.envelope(frame.envelope),
                frame.status.as_deref().unwrap_or("")
            ),
            FrameKind::Hello => match &frame.since {
                Some(since) if since.is_empty() => {
                    format!("{kind} replaying past the hub's cursor")
                }
                Some(since) => {
                    format!("{kind} since {}", self.normaliser.text(since))
                }
                _ => format!("{kind} (no replay)"),
            },
            FrameKind::Welcome | FrameKind::Ping | FrameKind::Pong => kind.to_string(),
        }
    }

    fn frame_json(&self, frame: &FrameSummary) -> String {
        // Names are no longer than the raw ids and timestamps they replace, so the first
        // JSON_MAX bytes of the normalised frame come from its first JSON_MAX + slack bytes;
        // should the names have shrunk it more than that, the whole frame is normalised.
        let raw: &str = &frame.text;
        let mut prefix = raw.len().min(2 * JSON_MAX + 64);
        while !raw.is_char_boundary(prefix) {
            prefix -= 1;
        }
        let mut json = self.normaliser.text(&raw[..prefix]);
        if prefix < raw.len() && json.len() <= JSON_MAX + 64 {
            json = self.normaliser.text(raw);
        }
        if json.len() <= JSON_MAX {
            return json.into_owned();
        }
        let mut cut = JSON_MAX;
        while !json.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}… ({} bytes on the wire)", &json[..cut], raw.len())
    }

    fn host_event(
        &mut self,
        agent: usize,
        n: usize,
        event: &HostEvent,
        kind: &mut Kind,
        envelopes: &mut Vec<EnvelopeId>,
    ) -> String {
        match event {
            HostEvent::Connected(connection) => format!("client on connection {connection}"),
            HostEvent::Registered(id) => format!("registered as {}", self.name_of(id)),
            HostEvent::Unregistered => "unregistered".to_string(),
            HostEvent::Received {
                connection,
                envelope,
            } => {
                envelopes.extend(envelope.envelope_id);
                format!(
                    "received {} {} (connection {connection})",
                    self.envelope(envelope.envelope_id),
                    envelope.event_type
                )
            }
            HostEvent::TurnStarted(trigger) => {
                *kind = Kind::TurnStart;
                envelopes.push(*trigger);
                let name = self.envelope(Some(*trigger));
                self.open_band(
                    agent + 1,
                    "turn",
                    trigger.to_string(),
                    n,
                    format!("model turn for {name}"),
                );
                format!("model turn for {name} started")
            }
            HostEvent::TurnEnded(trigger) => {
                *kind = Kind::TurnEnd;
                envelopes.push(*trigger);
                self.close_band(&(agent + 1, "turn", trigger.to_string()), n);
                format!("model turn for {} ended", self.envelope(Some(*trigger)))
            }
            HostEvent::Handled(id) => {
                envelopes.push(*id);
                format!("handled {}", self.envelope(Some(*id)))
            }
        }
    }

    fn open_band(
        &mut self,
        lane: usize,
        kind: &'static str,
        key: String,
        from: usize,
        label: String,
    ) {
        let key = (lane, kind, key);
        if self.open.contains_key(&key) {
            return;
        }
        self.open.insert(key, self.bands.len());
        self.bands.push(Band {
            lane,
            from,
            to: None,
            kind,
            label,
        });
    }

    fn close_band(&mut self, key: &(usize, &'static str, String), to: usize) {
        if let Some(index) = self.open.remove(key) {
            self.bands[index].to = Some(to);
        }
    }

    fn fault_band(&mut self, n: usize, fault: &Fault) {
        let lane = |name: &str| self.agent_named(name).map(|agent| agent + 1);
        match fault {
            Fault::Partition(name) => {
                if let Some(lane) = lane(name) {
                    self.open_band(
                        lane,
                        "partition",
                        String::new(),
                        n,
                        format!("{name} partitioned"),
                    );
                }
            }
            Fault::Repair(name) => {
                if let Some(lane) = lane(name) {
                    self.close_band(&(lane, "partition", String::new()), n);
                }
            }
            Fault::Hold(name) => {
                if let Some(lane) = lane(name) {
                    self.open_band(
                        lane,
                        "hold",
                        String::new(),
                        n,
                        format!("{name}'s link held"),
                    );
                }
            }
            Fault::Release(name) => {
                if let Some(lane) = lane(name) {
                    self.close_band(&(lane, "hold", String::new()), n);
                }
            }
            Fault::Disconnect(_) | Fault::Crash | Fault::Restart | Fault::Latency { .. } => {}
        }
    }

    /// The earlier entries a violation's message concerns: those of the envelopes it names,
    /// else those of the channels it names (the last ten).
    fn concerns(&self, message: &str) -> Vec<usize> {
        let ids: Vec<u128> = hex_words(message)
            .filter_map(|word| u128::from_str_radix(word, 16).ok())
            .collect();
        let mut refs: BTreeSet<usize> = BTreeSet::new();
        for &id in &ids {
            if let Some(entries) = self.by_envelope.get(&EnvelopeId(id)) {
                refs.extend(entries);
            }
        }
        if refs.is_empty() {
            let labels: BTreeSet<String> = ids
                .iter()
                .filter_map(|&id| self.label(ChannelId(id)))
                .collect();
            refs.extend(
                self.entries
                    .iter()
                    .filter(|e| e.channels.iter().any(|c| labels.contains(c)))
                    .map(|e| e.n),
            );
        }
        let refs: Vec<usize> = refs.into_iter().collect();
        refs[refs.len().saturating_sub(10)..].to_vec()
    }

    /// The agents a violation's message names.
    fn agents_in(&self, message: &str) -> Vec<usize> {
        let ids: BTreeSet<u128> = hex_words(message)
            .filter_map(|word| u128::from_str_radix(word, 16).ok())
            .collect();
        let mut agents: Vec<usize> = self
            .run
            .agents
            .iter()
            .enumerate()
            .filter(|(_, a)| ids.contains(&a.id.0) || words(message).any(|w| w == a.model.name))
            .map(|(i, _)| i)
            .collect();
        agents.dedup();
        agents
    }

    fn channel_tables(&self) -> Vec<ChannelTable> {
        let mut tables = Vec::new();
        for (&channel, label) in &self.run.labels {
            let Ok(metadata) = self.run.hub.get_channel(channel) else {
                continue;
            };
            let rows = self
                .run
                .hub
                .read_wal(channel)
                .iter()
                .enumerate()
                .map(|(seq, envelope)| {
                    let audience = envelope.audience.as_ref().map_or_else(
                        || "everyone".to_string(),
                        |ids| {
                            ids.iter()
                                .map(|id| self.short_name(*id))
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                    );
                    let data = serde_json::to_string(&envelope.event_data).unwrap_or_default();
                    [
                        seq.to_string(),
                        self.short_name(envelope.sender_id),
                        envelope.event_type.clone(),
                        audience,
                        shorten(&self.normaliser.text(&data), 200),
                    ]
                })
                .collect();
            tables.push(ChannelTable {
                label: label.clone(),
                adapter: metadata.manifest.manifest_type,
                state: metadata.state.as_str(),
                close_reason: metadata.close_reason.clone(),
                rows,
            });
        }
        tables.sort_by(|a, b| a.label.cmp(&b.label));
        tables
    }

    fn short_name(&self, id: crate::ids::AgentId) -> String {
        self.run
            .agents
            .iter()
            .find(|a| a.id == id)
            .map_or_else(|| self.name_of(id), |a| a.model.name.clone())
    }
}

/// A fault in words: `partition bob`, `latency of every link 5ms..20ms`.
pub fn describe_fault(fault: &Fault) -> String {
    match fault {
        Fault::Partition(a) => format!("partition {a}"),
        Fault::Repair(a) => format!("repair {a}"),
        Fault::Hold(a) => format!("hold {a}"),
        Fault::Release(a) => format!("release {a}"),
        Fault::Disconnect(a) => format!("disconnect {a}"),
        Fault::Crash => "crash the hub".to_string(),
        Fault::Restart => "restart the hub".to_string(),
        Fault::Latency { agent, range } => {
            let (low, high) = (range.min, range.max);
            let range = if low == high {
                format!("{}ms", py_float_repr(low as f64 / 1000.0))
            } else {
                format!(
                    "{}ms..{}ms",
                    py_float_repr(low as f64 / 1000.0),
                    py_float_repr(high as f64 / 1000.0)
                )
            };
            match agent {
                Some(a) => format!("latency of {a}'s link {range}"),
                None => format!("latency of every link {range}"),
            }
        }
    }
}

/// The words of `text` (letters, digits, `_`, `-`).
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(|word| !word.is_empty())
}

/// The 32-hex words of `text` (raw ids).
fn hex_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| word.len() == 32 && word.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `text` cut to `max` characters, with `…`.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}
