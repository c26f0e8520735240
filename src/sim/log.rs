//! The typed event log of a run: what happened, in order, with simulated time. Every network
//! backend records into it through the run's `Monitor`: steps and
//! their outcomes, frames sent, delivered and dropped, connections opened, closed and
//! re-attached, faults, what each agent's client saw and did (deliveries, model turns), hub
//! timers, store syncs, crashes and restarts, and each invariant violation at the moment it was
//! found. Ids stay raw here; [`crate::sim::timeline::Timeline`] shows them with the trace's
//! normalised names (`<agent:bob>`, `<channel:c1>`, `<env:c1#2>`).
//!
//! A log that is not kept ([`EventLog::off`]) records nothing and costs one branch per event.

use crate::client::host::HostEvent;
use crate::ids::{ChannelId, EnvelopeId};
use crate::proto::frame::{Frame, FrameKind};
use crate::proto::HubError;
use crate::sim::scenario::Fault;
use serde_json::Value;
use std::sync::Arc;

/// What a run logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogLevel {
    /// Nothing (sweeps, benchmarks): the checkers still see every client event.
    #[default]
    Off,
    /// Every event but frames.
    Events,
    /// Every event, frames included (each frame summarised: kind, op, envelope).
    Frames,
}

/// One frame, summarised for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSummary {
    /// The frame's number in the run, from 1, the same at its send and at its delivery or drop
    /// (0 where a backend cannot pair them: turmoil logs the agents' ends only).
    pub seq: u64,
    /// The frame's kind.
    pub kind: FrameKind,
    /// A request's op.
    pub op: Option<String>,
    /// A notify's envelope, or the envelope a receipt acknowledges.
    pub envelope: Option<EnvelopeId>,
    /// A notify's event type.
    pub event_type: Option<String>,
    /// The channel a notify's envelope or a request's `channel_id` names.
    pub channel: Option<ChannelId>,
    /// A request's or a response's `request_id`.
    pub request_id: Option<String>,
    /// A failed response's `error_code` and `error_message`, or an error frame's `code` and
    /// `message`.
    pub failure: Option<(String, String)>,
    /// A receipt's status.
    pub status: Option<String>,
    /// A hello's `since_envelope_id`, when it is a string (`""`: replay past the cursor).
    pub since: Option<String>,
    /// The frame as it crosses the wire (its JSON text, raw ids).
    pub text: Arc<str>,
}

impl FrameSummary {
    /// Summarises `frame`, frame number `seq`.
    pub fn of(seq: u64, frame: &Frame) -> FrameSummary {
        FrameSummary::with_text(seq, frame, frame.encode().into())
    }

    /// Summarises a text message (`None` if it does not decode).
    pub fn of_text(seq: u64, text: &str) -> Option<FrameSummary> {
        Frame::decode(text)
            .ok()
            .map(|frame| FrameSummary::with_text(seq, &frame, text.into()))
    }

    fn with_text(seq: u64, frame: &Frame, text: Arc<str>) -> FrameSummary {
        let string = |value: &Value| value.as_str().map(str::to_string);
        let channel = |value: &Value| value.as_str().and_then(ChannelId::parse);
        let (op, envelope, event_type, channel) = match frame.kind {
            FrameKind::Request => (
                string(frame.get("op")),
                None,
                None,
                frame.get("params").get("channel_id").and_then(channel),
            ),
            FrameKind::Notify => {
                let envelope = frame.get("envelope");
                (
                    None,
                    envelope
                        .get("envelope_id")
                        .and_then(Value::as_str)
                        .and_then(EnvelopeId::parse),
                    envelope.get("event_type").and_then(string),
                    envelope.get("channel_id").and_then(channel),
                )
            }
            FrameKind::Receipt => (
                None,
                frame
                    .get("envelope_id")
                    .as_str()
                    .and_then(EnvelopeId::parse),
                None,
                None,
            ),
            _ => (None, None, None, None),
        };
        let text_of = |name: &str| frame.get(name).as_str().unwrap_or("").to_string();
        let request_id = matches!(frame.kind, FrameKind::Request | FrameKind::Response)
            .then(|| text_of("request_id"));
        let failure = match frame.kind {
            FrameKind::Response if frame.get("ok").as_bool() == Some(false) => {
                Some((text_of("error_code"), text_of("error_message")))
            }
            FrameKind::Error => Some((text_of("code"), text_of("message"))),
            _ => None,
        };
        let status = (frame.kind == FrameKind::Receipt).then(|| text_of("status"));
        let since = match frame.kind {
            FrameKind::Hello => frame.get("since_envelope_id").as_str().map(str::to_string),
            _ => None,
        };
        FrameSummary {
            seq,
            kind: frame.kind,
            op,
            envelope,
            event_type,
            channel,
            request_id,
            failure,
            status,
            since,
            text,
        }
    }
}

/// Why a frame never arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Its connection ended before it arrived (or while a cut link held it).
    ConnectionClosed,
    /// It was superseded: the agent is on a newer connection.
    StaleConnection,
    /// The client had no connection to send it on.
    NoConnection,
}

impl DropReason {
    /// The name the timeline prints.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::ConnectionClosed => "connection closed",
            DropReason::StaleConnection => "stale connection",
            DropReason::NoConnection => "no connection",
        }
    }
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// A cut link outlived the keepalive.
    Keepalive,
    /// A `disconnect` fault.
    Disconnect,
    /// The hub crashed.
    Crash,
    /// The hub closed it (a message over the size limit).
    Hub,
    /// The agent closed it (a recorded serve).
    Peer,
}

impl CloseReason {
    /// The name the timeline prints.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Keepalive => "keepalive",
            CloseReason::Disconnect => "disconnect",
            CloseReason::Crash => "hub crash",
            CloseReason::Hub => "closed by the hub",
            CloseReason::Peer => "closed by the agent",
        }
    }
}

/// One thing that happened in a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A scenario step began (`step` is its index).
    StepStarted {
        /// The step's index.
        step: usize,
        /// Its op.
        op: String,
    },
    /// A step ended (after its settle), with its error if it failed.
    StepEnded {
        /// The step's index.
        step: usize,
        /// What it failed with.
        error: Option<HubError>,
    },
    /// A frame left one end of an agent's link (`up`: agent to hub).
    FrameSent {
        /// The agent whose link it travels.
        agent: usize,
        /// Agent to hub.
        up: bool,
        /// The frame.
        frame: FrameSummary,
    },
    /// A frame arrived at the other end.
    FrameDelivered {
        /// The agent whose link it travelled.
        agent: usize,
        /// Agent to hub.
        up: bool,
        /// The frame.
        frame: FrameSummary,
    },
    /// A frame was lost.
    FrameDropped {
        /// The agent whose link it travelled.
        agent: usize,
        /// Agent to hub.
        up: bool,
        /// The frame.
        frame: FrameSummary,
        /// Why.
        why: DropReason,
    },
    /// An agent opened a connection to the hub (`connection` counts re-attaches from 1).
    Connected {
        /// The agent.
        agent: usize,
        /// Its connection number.
        connection: u32,
    },
    /// An agent re-attached: a hello that asks for a replay past the hub's cursor.
    Reattached {
        /// The agent.
        agent: usize,
        /// Its connection number.
        connection: u32,
    },
    /// An agent's connection ended.
    ConnectionClosed {
        /// The agent.
        agent: usize,
        /// Why.
        why: CloseReason,
    },
    /// A fault was applied (`chaos`: drawn by the seed's chaos profile).
    Fault {
        /// The fault.
        fault: Fault,
        /// Drawn by the chaos profile.
        chaos: bool,
    },
    /// Every fault was healed for the quiesce phase.
    Healed,
    /// What an agent's client saw or did.
    Host {
        /// The agent.
        agent: usize,
        /// What.
        event: HostEvent,
    },
    /// The hub's timers ran (TTL and expectation sweeps, invite timeouts); `appended` WAL
    /// entries and `audited` audit records came of it.
    HubTimers {
        /// WAL entries appended.
        appended: u64,
        /// Audit records written.
        audited: usize,
    },
    /// The hub's durable store caught up with it.
    StoreSynced,
    /// The hub crashed: unsynced writes are lost.
    HubCrashed,
    /// The hub restarted from its store.
    HubRestarted,
    /// The hub could not restart from its store.
    HubNotRestarted {
        /// Why.
        message: String,
    },
    /// An invariant broke.
    Violation {
        /// Its stable kind.
        kind: &'static str,
        /// What broke.
        message: String,
    },
}

/// One logged event and when it happened.
#[derive(Clone, Debug, PartialEq)]
pub struct Logged {
    /// Simulated time (µs from the start of the run).
    pub at: u64,
    /// What happened.
    pub event: Event,
}

/// The events of one run, in order.
#[derive(Clone, Debug, Default)]
pub struct EventLog {
    level: LogLevel,
    events: Vec<Logged>,
}

impl EventLog {
    /// A log at `level`.
    pub fn new(level: LogLevel) -> EventLog {
        EventLog {
            level,
            events: Vec::new(),
        }
    }

    /// A log that keeps nothing.
    pub fn off() -> EventLog {
        EventLog::new(LogLevel::Off)
    }

    /// What this log keeps.
    pub fn level(&self) -> LogLevel {
        self.level
    }

    /// Whether events are kept.
    pub fn enabled(&self) -> bool {
        self.level != LogLevel::Off
    }

    /// Whether frames are kept.
    pub fn frames(&self) -> bool {
        self.level == LogLevel::Frames
    }

    /// Records `event` at `at` (if events are kept).
    pub fn push(&mut self, at: u64, event: Event) {
        if self.enabled() {
            self.events.push(Logged { at, event });
        }
    }

    /// The events, in order.
    pub fn events(&self) -> &[Logged] {
        &self.events
    }
}
