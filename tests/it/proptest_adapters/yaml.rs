//! A generated op sequence as a reference-format scenario file: what the drivers parse, and
//! what a failure prints, so `hubsim trace FILE` and `hubsim run FILE` replay it.

use super::ops::{
    Cond, Event, GraphSpec, Kind, Op, Open, Routing, RuleSpec, Send, Target, Ttl, NAMES, SILENT,
    TOOL,
};
use std::fmt::Write;

/// The scenario text for `ops`, named `name`.
pub(super) fn scenario(name: &str, ops: &[Op]) -> String {
    let mut out = format!("name: {name}\nagents:\n");
    for (idx, agent) in NAMES.iter().enumerate() {
        let handler = if idx == SILENT { "silent" } else { "ack_only" };
        let _ = writeln!(out, "  - {{name: {agent}, handler: {handler}}}");
    }
    out.push_str("steps:\n");
    for (idx, op) in ops.iter().enumerate() {
        let _ = writeln!(out, "  - {}", step(idx, op));
    }
    out
}

/// The label of the open at step `idx`.
pub(super) fn label(idx: usize) -> String {
    format!("c{idx}")
}

fn step(idx: usize, op: &Op) -> String {
    match op {
        Op::Open(open) => open_step(idx, open),
        Op::Send(send) => send_step(idx, send),
        Op::Close {
            channel,
            by,
            reason,
        } => {
            let reason = reason.map_or(String::new(), |r| format!(", reason: \"{r}\""));
            format!(
                "{{op: close, {}, by: {}{reason}}}",
                channel_field(*channel),
                NAMES[*by]
            )
        }
        Op::Advance(seconds) => format!("{{op: advance, seconds: {seconds}}}"),
        Op::TtlTick => "{op: ttl_tick}".to_string(),
        Op::ExpectationTick => "{op: expectation_tick}".to_string(),
        Op::SetRule { agent, rule } => {
            let rule = match rule {
                RuleSpec::Reset => "{}".to_string(),
                RuleSpec::MaxPending(cap) => {
                    format!("{{limits: {{inbox: {{max_pending: {cap}}}}}}}")
                }
                RuleSpec::InboundFrom(pattern) => {
                    format!("{{access: {{inbound_from: [\"{pattern}\"]}}}}")
                }
                RuleSpec::OutboundTo(pattern) => {
                    format!("{{access: {{outbound_to: [\"{pattern}\"]}}}}")
                }
            };
            format!("{{op: set_rule, agent: {}, rule: {rule}}}", NAMES[*agent])
        }
        Op::Unregister(agent) => format!("{{op: unregister, agent: {}}}", NAMES[*agent]),
    }
}

fn channel_field(channel: Option<usize>) -> String {
    match channel {
        Some(open) => format!("channel: {}", label(open)),
        None => "channel: nowhere, unknown_channel: true".to_string(),
    }
}

fn names(agents: &[usize]) -> String {
    let names: Vec<&str> = agents.iter().map(|a| NAMES[*a]).collect();
    format!("[{}]", names.join(", "))
}

fn id(agent: usize) -> String {
    format!("{{$id: {}}}", NAMES[agent])
}

fn open_step(idx: usize, open: &Open) -> String {
    let mut out = format!(
        "{{op: open, as: {}, by: {}, type: {}, target: {}",
        label(idx),
        NAMES[open.by],
        open.kind.name(),
        names(&open.targets)
    );
    match open.ttl {
        Ttl::CreatorDefault => {}
        Ttl::Seconds(seconds) => {
            let _ = write!(out, ", ttl: {seconds}");
        }
        Ttl::Never => out.push_str(", ttl: \"0\""),
    }
    match &open.kind {
        Kind::Discussion => out.push_str(", knobs: {ordering: round_robin}"),
        Kind::Workflow(graph) => {
            let _ = write!(out, ", knobs: {{graph: {}}}", graph_knob(graph));
        }
        Kind::Consulting | Kind::Conversation => {}
    }
    if !open.wait {
        out.push_str(", wait: false");
    }
    out.push('}');
    out
}

fn target(target: &Target) -> String {
    match target {
        Target::Agent(agent) => format!("{{name: agent, args: {{agent_id: {}}}}}", id(*agent)),
        Target::RoundRobin => "{name: round_robin, args: {}}".to_string(),
        Target::Stay => "{name: stay, args: {}}".to_string(),
        Target::RevertToInitiator => "{name: revert_to_initiator, args: {}}".to_string(),
        Target::Terminate(reason) => format!("{{name: terminate, args: {{reason: {reason}}}}}"),
    }
}

fn graph_knob(graph: &GraphSpec) -> String {
    let transitions: Vec<String> = graph
        .transitions
        .iter()
        .map(|edge| {
            let when = match edge.when {
                Cond::Always => "{name: always, args: {}}".to_string(),
                Cond::FromSpeaker(agent) => {
                    format!("{{name: from_speaker, args: {{agent_id: {}}}}}", id(agent))
                }
                Cond::ToolCalled => format!("{{name: tool_called, args: {{tool_name: {TOOL}}}}}"),
            };
            format!(
                "{{when: {when}, then: {}, priority: {}}}",
                target(&edge.then),
                edge.priority
            )
        })
        .collect();
    let mut out = format!(
        "{{initial_speaker: {}, transitions: [{}]",
        id(graph.initial),
        transitions.join(", ")
    );
    if let Some(default) = &graph.default {
        let _ = write!(out, ", default_target: {}", target(default));
    }
    if let Some(max_turns) = graph.max_turns {
        let _ = write!(out, ", max_turns: {max_turns}");
    }
    out.push('}');
    out
}

fn send_step(idx: usize, send: &Send) -> String {
    let mut out = format!(
        "{{op: send, {}, by: {}",
        channel_field(send.channel),
        NAMES[send.by]
    );
    match &send.event {
        Event::Text(text) => {
            let _ = write!(out, ", text: \"{text}\"");
        }
        Event::Packet(routing) => {
            let routing = match routing {
                Routing::Plain => String::new(),
                Routing::Finish(reason) => {
                    format!(", routing: {{kind: finish, reason: \"{reason}\"}}")
                }
                Routing::HandoffId(agent) => {
                    format!(", routing: {{kind: handoff, target: {}}}", id(*agent))
                }
                Routing::HandoffName(agent) => {
                    format!(", routing: {{kind: handoff, target: {}}}", NAMES[*agent])
                }
                Routing::Tool => format!(", routing: {{kind: handoff, tool: {TOOL}}}"),
            };
            let _ = write!(
                out,
                ", event_type: ag2.packet, event_data: {{body: \"step {idx}\"{routing}}}"
            );
        }
        Event::Note => {
            let _ = write!(
                out,
                ", event_type: app.note, event_data: {{note: \"step {idx}\"}}"
            );
        }
        Event::Ack => out.push_str(", event_type: ag2.channel.invite.ack"),
        Event::Reject => out.push_str(", event_type: ag2.channel.invite.reject"),
    }
    if let Some(audience) = &send.audience {
        let _ = write!(out, ", audience: {}", names(audience));
    }
    if send.via_hub {
        out.push_str(", via: hub");
    }
    out.push('}');
    out
}
