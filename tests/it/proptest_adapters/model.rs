//! A small reference model of the in-process runner over the generated vocabulary, written
//! from the ag2 hub spec (§2.4-2.8, §3, §4, §5) and the oracle's runner, not from hubsim's code.
//!
//! It predicts, step by step, whether each step succeeds or which error it raises (type and a
//! message fragment), how each background open ends, each channel's final state, and the
//! inbox counters. It does not predict audit records, WAL contents or the trace layout.
//!
//! It covers every step the generators produce, because they produce only what it models
//! exactly: no `ag2.context.set` and no `context_equals` conditions (workflow context), no
//! malformed payloads, no hand-made `opened`/`closed`/`invite` events (§8.8), no `depth`, no
//! model turns (every agent is `ack_only` or `silent`), no concurrency caps, and no blocking
//! open that waits for dave (its `StepTimeout` would move the runner's monotonic clock, which
//! the real-time invite-ack timeout reads).

use super::ops::{
    Cond, Event, GraphSpec, Kind, Op, Open, Routing, RuleSpec, Send, Target, Ttl, NAMES, SILENT,
};
use std::collections::BTreeMap;

mod open;
mod send;

const MICROS: i64 = 1_000_000;
/// `channel_ttl_default` of every rule here (`2h`; `set_rule` resets to it).
const DEFAULT_TTL_SECONDS: i64 = 7200;
/// Consulting's expectations (spec §3.1): `acks_within` 30 s and `reply_within` 600 s, both
/// `auto_close`.
const ACKS_WITHIN_SECONDS: i64 = 30;
const REPLY_WITHIN_SECONDS: i64 = 600;

/// What a step does, as its record shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Expect {
    Ok,
    /// An exception of this Python type whose message contains `fragment`.
    Err {
        type_name: &'static str,
        fragment: String,
    },
    /// A background open still waiting when the run ends.
    StillPending,
}

fn err(type_name: &'static str, fragment: impl Into<String>) -> Expect {
    Expect::Err {
        type_name,
        fragment: fragment.into(),
    }
}

/// The ids the hub minted, for the messages that embed them (the model never reads hub state).
pub(super) struct Ids {
    pub(super) agents: [String; 4],
    /// Open step to channel id, for the channels the run created.
    pub(super) channels: BTreeMap<usize, String>,
}

impl Ids {
    fn channel(&self, open: usize) -> String {
        self.channels
            .get(&open)
            .cloned()
            .unwrap_or_else(|| format!("<no channel for step {open}>"))
    }
}

/// A channel's state at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ChannelEnd {
    pub(super) state: &'static str,
    pub(super) close_reason: String,
    pub(super) pending_acks: Vec<usize>,
    pub(super) turn: Turn,
}

/// The adapter state the model tracks, as comparable values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Turn {
    Consulting {
        sent: bool,
        replied: bool,
    },
    Conversation,
    /// The expected speaker.
    Discussion {
        expected: usize,
    },
    /// The expected speaker as the adapter holds it (an agent id or a bare name; `None` once
    /// the channel decided to close) and the substantive turns taken.
    Workflow {
        expected: Option<String>,
        turns: i64,
    },
}

/// Everything the model predicts for a run.
pub(super) struct Prediction {
    pub(super) steps: Vec<Expect>,
    /// Open step to how its background open ends.
    pub(super) background: BTreeMap<usize, Expect>,
    /// Open step to its channel's final state.
    pub(super) channels: BTreeMap<usize, ChannelEnd>,
    /// Each agent's inbox counter (0 when the hub keeps none).
    pub(super) pending: [u64; 4],
}

#[derive(Clone, Debug)]
struct AgentModel {
    registered: bool,
    max_pending: i64,
    inbound_from: &'static str,
    outbound_to: &'static str,
    pending: u64,
}

impl Default for AgentModel {
    fn default() -> AgentModel {
        AgentModel {
            registered: true,
            max_pending: 1000,
            inbound_from: "*",
            outbound_to: "*",
            pending: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Pending,
    Active,
    Closed(String),
    Expired,
}

/// A workflow's expected speaker (spec §3.4: handoff targets are kept verbatim).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Speaker {
    Agent(usize),
    /// A bare agent name: no sender id ever equals it.
    Name(usize),
}

#[derive(Clone, Debug)]
enum Adapter {
    Consulting {
        sent: bool,
        replied: bool,
        /// When the question landed, and whether it was addressed to the respondent (a
        /// broadcast, or the respondent in its audience): what `reply_within` reads.
        question: Option<(i64, bool)>,
    },
    Conversation,
    Discussion {
        order: Vec<usize>,
        expected: usize,
    },
    Workflow {
        graph: GraphSpec,
        order: Vec<usize>,
        expected: Option<Speaker>,
        turns: i64,
    },
}

#[derive(Clone, Debug)]
struct Channel {
    creator: usize,
    participants: Vec<usize>,
    state: State,
    pending_acks: Vec<usize>,
    rejected: bool,
    created_at: i64,
    expires_at: Option<i64>,
    adapter: Adapter,
    /// A background open still waits on this channel's handshake.
    waiter: bool,
}

/// `fnmatchcase` for patterns made of literals and `*`.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|cut| glob(rest, &tail[cut..]))
        }
    }
}

struct Model<'a> {
    ids: &'a Ids,
    now: i64,
    agents: [AgentModel; 4],
    /// Open step to its channel, for the opens that created one.
    channels: BTreeMap<usize, Channel>,
    background: BTreeMap<usize, Expect>,
}

/// Predicts the in-process run of `ops`.
pub(super) fn predict(ops: &[Op], ids: &Ids) -> Prediction {
    let mut model = Model {
        ids,
        now: 0,
        agents: Default::default(),
        channels: BTreeMap::new(),
        background: BTreeMap::new(),
    };
    let steps = ops
        .iter()
        .enumerate()
        .map(|(idx, op)| model.step(idx, op))
        .collect();
    for (open, channel) in &model.channels {
        if channel.waiter {
            model.background.insert(*open, Expect::StillPending);
        }
    }
    let channels = model
        .channels
        .iter()
        .map(|(open, channel)| (*open, model.end_of(channel)))
        .collect();
    Prediction {
        steps,
        background: model.background,
        channels,
        pending: model.agents.each_ref().map(|agent| agent.pending),
    }
}

impl Model<'_> {
    fn step(&mut self, idx: usize, op: &Op) -> Expect {
        match op {
            Op::Open(open) => self.open(idx, open),
            Op::Send(send) => self.send(idx, send.channel, send),
            Op::Close {
                channel, reason, ..
            } => self.close(idx, *channel, reason.unwrap_or("")),
            Op::Advance(seconds) => {
                self.now += i64::from(*seconds) * MICROS;
                Expect::Ok
            }
            Op::TtlTick => {
                self.expire_due();
                Expect::Ok
            }
            Op::ExpectationTick => {
                self.expectation_tick();
                Expect::Ok
            }
            Op::SetRule { agent, rule } => self.set_rule(*agent, *rule),
            Op::Unregister(agent) => {
                // The runner unregisters once; a second unregister is a no-op.
                let agent = &mut self.agents[*agent];
                agent.registered = false;
                agent.pending = 0;
                Expect::Ok
            }
        }
    }

    fn set_rule(&mut self, agent: usize, rule: RuleSpec) -> Expect {
        if !self.agents[agent].registered {
            return err(
                "NotFoundError",
                format!("agent not registered: {}", self.ids.agents[agent]),
            );
        }
        let model = &mut self.agents[agent];
        let pending = model.pending;
        // A partial rule resets every field it does not name (spec §1.7, `Rule.from_dict`).
        *model = AgentModel {
            pending,
            ..AgentModel::default()
        };
        match rule {
            RuleSpec::Reset => {}
            RuleSpec::MaxPending(cap) => model.max_pending = cap,
            RuleSpec::InboundFrom(pattern) => model.inbound_from = pattern,
            RuleSpec::OutboundTo(pattern) => model.outbound_to = pattern,
        }
        Expect::Ok
    }

    /// The runner's label lookup: a label no open created is the runner's `KeyError`.
    fn label(&self, idx: usize, channel: Option<usize>) -> Result<Option<usize>, Expect> {
        match channel {
            Some(open) if self.channels.contains_key(&open) => Ok(Some(open)),
            Some(open) => Err(err(
                "KeyError",
                format!("step {idx}: unknown channel label 'c{open}'"),
            )),
            None => Ok(None),
        }
    }

    fn not_found_channel(&self, channel: Option<usize>) -> Expect {
        let id = match channel {
            Some(open) => self.ids.channel(open),
            None => "f".repeat(32),
        };
        err("NotFoundError", format!("channel not found: {id}"))
    }

    fn close(&mut self, idx: usize, channel: Option<usize>, reason: &str) -> Expect {
        let channel = match self.label(idx, channel) {
            Ok(channel) => channel,
            Err(expect) => return expect,
        };
        // Through the client: `get_channel` first; in process anyone may close (spec §2.8).
        let Some(open) = channel else {
            return self.not_found_channel(None);
        };
        let reason = if reason.is_empty() {
            "explicit_close"
        } else {
            reason
        };
        self.end(open, State::Closed(reason.to_string()));
        Expect::Ok
    }

    /// `_transition_channel` to a terminal state; a terminal channel stays as it is. A
    /// background open still waiting fails "closed during handshake" (spec §2.4 step 14).
    fn end(&mut self, open: usize, state: State) {
        let cid = self.ids.channel(open);
        let channel = self.channels.get_mut(&open).expect("known channel");
        if matches!(channel.state, State::Closed(_) | State::Expired) {
            return;
        }
        if channel.waiter {
            channel.waiter = false;
            let reason = match &state {
                State::Closed(reason) => reason.clone(),
                _ => "ttl_expired".to_string(),
            };
            self.background.insert(
                open,
                err(
                    "ProtocolError",
                    format!("channel '{cid}' closed during handshake: {reason}"),
                ),
            );
        }
        let channel = self.channels.get_mut(&open).expect("known channel");
        channel.state = state;
    }

    fn activate(&mut self, open: usize) {
        let channel = self.channels.get_mut(&open).expect("known channel");
        if channel.state != State::Pending {
            return;
        }
        channel.state = State::Active;
        if channel.waiter {
            channel.waiter = false;
            self.background.insert(open, Expect::Ok);
        }
    }

    fn expire_due(&mut self) {
        let due: Vec<usize> = self
            .channels
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Pending | State::Active))
            .filter(|(_, c)| c.expires_at.is_some_and(|at| at <= self.now))
            .map(|(open, _)| *open)
            .collect();
        for open in due {
            self.end(open, State::Expired);
        }
    }

    /// Only consulting's expectations act (spec §4.2): conversation's `max_silence` only
    /// audits, and the `turn_within` of discussion and workflow is inert (§8.14).
    fn expectation_tick(&mut self) {
        let mut closes = Vec::new();
        for (open, channel) in &self.channels {
            let Adapter::Consulting { question, .. } = &channel.adapter else {
                continue;
            };
            let reason = match channel.state {
                State::Pending
                    if self.now - channel.created_at >= ACKS_WITHIN_SECONDS * MICROS
                        && !channel.pending_acks.is_empty() =>
                {
                    "acks_within"
                }
                State::Active => match question {
                    Some((at, true)) if self.now - at >= REPLY_WITHIN_SECONDS * MICROS => {
                        "reply_within"
                    }
                    _ => continue,
                },
                _ => continue,
            };
            closes.push((*open, format!("expectation_violated:{reason}")));
        }
        for (open, reason) in closes {
            self.end(open, State::Closed(reason));
        }
    }

    fn end_of(&self, channel: &Channel) -> ChannelEnd {
        let (state, close_reason) = match &channel.state {
            State::Pending => ("pending", String::new()),
            State::Active => ("active", String::new()),
            State::Closed(reason) => ("closed", reason.clone()),
            State::Expired => ("expired", "ttl_expired".to_string()),
        };
        let turn = match &channel.adapter {
            Adapter::Consulting { sent, replied, .. } => Turn::Consulting {
                sent: *sent,
                replied: *replied,
            },
            Adapter::Conversation => Turn::Conversation,
            Adapter::Discussion { expected, .. } => Turn::Discussion {
                expected: *expected,
            },
            Adapter::Workflow {
                expected, turns, ..
            } => Turn::Workflow {
                expected: expected.map(|speaker| match speaker {
                    Speaker::Agent(agent) => self.ids.agents[agent].clone(),
                    Speaker::Name(agent) => NAMES[agent].to_string(),
                }),
                turns: *turns,
            },
        };
        ChannelEnd {
            state,
            close_reason,
            pending_acks: channel.pending_acks.clone(),
            turn,
        }
    }
}
