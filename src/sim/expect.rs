//! End-state assertions (a scenario's `expect:` block): what must hold when a run ends, checked
//! on every seed. Channels (state, close reason, turns), WALs (envelopes they contain or must
//! not contain), agents (model turns, deliveries handled, the hub's inbox counter), each
//! with `any_of` alternatives for outcomes that depend on the seed.
//!
//! The scenario loader builds an [`Expect`] (and checks its names); [`check`] reads a finished
//! [`Run`] and says, for each assertion that does not hold, where it is in the block, what it
//! expected and what the run has. Messages hold raw ids (a close reason may name one): the
//! callers name them as the trace does ([`super::trace::Normaliser::message`]).

use super::record::Run;
use crate::hub::adapter::AdapterState;
use crate::hub::channel::ChannelMetadata;
use crate::ids::ChannelId;
use crate::proto::{Envelope, EventType};
use std::fmt;

/// A scenario's `expect:` block. Everything listed must hold, and when `any_of` is given, at
/// least one of its alternatives too.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expect {
    /// Channels by label, in the order written.
    pub channels: Vec<(String, ChannelExpect)>,
    /// WALs by channel label.
    pub wal: Vec<(String, WalExpect)>,
    /// Agents by name.
    pub agents: Vec<(String, AgentExpect)>,
    /// Whole-block alternatives.
    pub any_of: Vec<Expect>,
}

impl Expect {
    /// Nothing is asserted.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
            && self.wal.is_empty()
            && self.agents.is_empty()
            && self.any_of.is_empty()
    }
}

/// What must hold of one channel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelExpect {
    /// `pending`, `active`, `closed` or `expired`.
    pub state: Option<String>,
    /// The close reason, exactly (`""` until the channel's first transition).
    pub close_reason: Option<String>,
    /// The adapter's turn count (see [`turns`]).
    pub turns: Option<Count>,
    /// Alternatives, one of which must hold besides the above.
    pub any_of: Vec<ChannelExpect>,
}

/// What must hold of one channel's WAL.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WalExpect {
    /// Each must match some envelope (`count` of them, if given).
    pub contains: Vec<EnvelopeMatch>,
    /// None may match any envelope.
    pub not_contains: Vec<EnvelopeMatch>,
    /// Alternatives.
    pub any_of: Vec<WalExpect>,
}

/// An envelope pattern: every field given must match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnvelopeMatch {
    /// The event type, exactly.
    pub event_type: Option<String>,
    /// The sender's agent name.
    pub sender: Option<String>,
    /// A regex searched in the envelope's text (`event_data.text`); an envelope without text
    /// does not match.
    pub text: Option<Pattern>,
    /// How many envelopes must match (`contains` only; default at least one).
    pub count: Option<Count>,
}

/// What must hold of one agent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentExpect {
    /// Model turns asked (the trace's `model_turns`).
    pub model_turns: Option<Count>,
    /// Distinct envelopes whose handler finished on a live connection.
    pub handled: Option<Count>,
    /// The hub's inbox pending counter for the agent (0 when it has none).
    pub inbox_pending: Option<Count>,
    /// Alternatives.
    pub any_of: Vec<AgentExpect>,
}

/// A counter's expected value: exact, or a range with either end open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    /// At least this.
    pub min: Option<u64>,
    /// At most this.
    pub max: Option<u64>,
}

impl Count {
    /// Exactly `n`.
    pub fn exactly(n: u64) -> Count {
        Count {
            min: Some(n),
            max: Some(n),
        }
    }

    /// Whether `value` is in range.
    pub fn holds(self, value: u64) -> bool {
        self.min.is_none_or(|min| value >= min) && self.max.is_none_or(|max| value <= max)
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min, self.max) {
            (Some(min), Some(max)) if min == max => write!(f, "{min}"),
            (Some(min), Some(max)) => write!(f, "between {min} and {max}"),
            (Some(min), None) => write!(f, "at least {min}"),
            (None, Some(max)) => write!(f, "at most {max}"),
            (None, None) => f.write_str("any number"),
        }
    }
}

/// A regex, compared by its text.
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl fmt::Display for EnvelopeMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(event_type) = &self.event_type {
            parts.push(format!("event_type: {event_type}"));
        }
        if let Some(sender) = &self.sender {
            parts.push(format!("sender: {sender}"));
        }
        if let Some(text) = &self.text {
            parts.push(format!("text: /{}/", text.0.as_str()));
        }
        write!(f, "{{{}}}", parts.join(", "))
    }
}

/// Checks `expect` against a finished run: one message per assertion that does not hold
/// (`expect.channels.c1.state: expected closed, actual active`), none if all hold.
pub fn check(expect: &Expect, run: &Run) -> Vec<String> {
    let end = End { run };
    end.expect(expect, "expect.")
}

/// Envelopes of a WAL listed in a message, at most.
const WAL_SHOWN: usize = 8;
/// Characters of an envelope's text shown in a message, at most.
const TEXT_SHOWN: usize = 40;

/// A finished run, read by label and name.
struct End<'r> {
    run: &'r Run,
}

impl End<'_> {
    fn expect(&self, expect: &Expect, path: &str) -> Vec<String> {
        let mut failures = Vec::new();
        for (label, channel) in &expect.channels {
            failures.extend(self.channel(label, channel, &format!("{path}channels.{label}.")));
        }
        for (label, wal) in &expect.wal {
            failures.extend(self.wal(label, wal, &format!("{path}wal.{label}.")));
        }
        for (name, agent) in &expect.agents {
            failures.extend(self.agent(name, agent, &format!("{path}agents.{name}.")));
        }
        failures.extend(alternatives(&expect.any_of, path, |e| self.expect(e, "")));
        failures
    }

    /// The channel a label names at the end: the last one created with it, as in the trace.
    fn channel_id(&self, label: &str) -> Option<ChannelId> {
        self.run
            .hub
            .channel_ids()
            .filter(|channel| self.run.labels.get(channel).is_some_and(|l| l == label))
            .last()
    }

    fn missing(label: &str, path: &str) -> Vec<String> {
        vec![format!(
            "{}: expected a channel labelled `{label}`, actual none (its open failed or never ran)",
            path.trim_end_matches('.')
        )]
    }

    fn channel(&self, label: &str, expect: &ChannelExpect, path: &str) -> Vec<String> {
        let Some(channel) = self.channel_id(label) else {
            return End::missing(label, path);
        };
        let Ok(metadata) = self.run.hub.get_channel(channel) else {
            return End::missing(label, path);
        };
        self.channel_of(channel, metadata, expect, path)
    }

    fn channel_of(
        &self,
        channel: ChannelId,
        metadata: &ChannelMetadata,
        expect: &ChannelExpect,
        path: &str,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        if let Some(state) = &expect.state {
            let actual = metadata.state.as_str();
            if actual != state {
                failures.push(format!("{path}state: expected {state}, actual {actual}"));
            }
        }
        if let Some(reason) = &expect.close_reason {
            if &metadata.close_reason != reason {
                failures.push(format!(
                    "{path}close_reason: expected {reason:?}, actual {:?} (state {})",
                    metadata.close_reason,
                    metadata.state.as_str()
                ));
            }
        }
        if let Some(count) = expect.turns {
            let actual = turns(&self.run.hub, channel);
            if !count.holds(actual) {
                failures.push(format!("{path}turns: expected {count}, actual {actual}"));
            }
        }
        failures.extend(alternatives(&expect.any_of, path, |e| {
            self.channel_of(channel, metadata, e, "")
        }));
        failures
    }

    fn wal(&self, label: &str, expect: &WalExpect, path: &str) -> Vec<String> {
        let Some(channel) = self.channel_id(label) else {
            return End::missing(label, path);
        };
        self.wal_of(self.run.hub.read_wal(channel), expect, path)
    }

    fn wal_of(
        &self,
        wal: &[std::sync::Arc<Envelope>],
        expect: &WalExpect,
        path: &str,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        let matching = |pattern: &EnvelopeMatch| -> Vec<(usize, &Envelope)> {
            wal.iter()
                .enumerate()
                .filter(|(_, envelope)| self.matches(pattern, envelope))
                .map(|(seq, envelope)| (seq, &**envelope))
                .collect()
        };
        for (idx, pattern) in expect.contains.iter().enumerate() {
            let found = matching(pattern);
            let count = pattern.count.unwrap_or(Count {
                min: Some(1),
                max: None,
            });
            if !count.holds(found.len() as u64) {
                let shown = if found.is_empty() {
                    self.listing(wal.iter().map(|e| &**e).enumerate())
                } else {
                    self.listing(found.iter().copied())
                };
                let what = if found.is_empty() {
                    format!("0 of {} in the WAL", wal.len())
                } else {
                    found.len().to_string()
                };
                failures.push(format!(
                    "{path}contains[{idx}] {pattern}: expected {count} matching, actual {what}{shown}"
                ));
            }
        }
        for (idx, pattern) in expect.not_contains.iter().enumerate() {
            let found = matching(pattern);
            if !found.is_empty() {
                failures.push(format!(
                    "{path}not_contains[{idx}] {pattern}: expected none matching, actual {}{}",
                    found.len(),
                    self.listing(found.iter().copied())
                ));
            }
        }
        failures.extend(alternatives(&expect.any_of, path, |e| {
            self.wal_of(wal, e, "")
        }));
        failures
    }

    fn matches(&self, pattern: &EnvelopeMatch, envelope: &Envelope) -> bool {
        pattern
            .event_type
            .as_ref()
            .is_none_or(|t| *t == envelope.event_type)
            && pattern
                .sender
                .as_ref()
                .is_none_or(|name| self.name_of(envelope) == *name)
            && pattern.text.as_ref().is_none_or(|re| {
                envelope
                    .event_data
                    .get("text")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|text| re.0.is_match(text))
            })
    }

    fn name_of(&self, envelope: &Envelope) -> String {
        self.run
            .agents
            .iter()
            .find(|agent| agent.id == envelope.sender_id)
            .map_or_else(
                || envelope.sender_id.to_string(),
                |agent| agent.model.name.clone(),
            )
    }

    /// `: #0 ag2.msg.text from alice "Topic: A or B?", ...`: what a message shows of envelopes.
    fn listing<'e>(&self, envelopes: impl Iterator<Item = (usize, &'e Envelope)>) -> String {
        let all: Vec<(usize, &Envelope)> = envelopes.collect();
        if all.is_empty() {
            return String::new();
        }
        let mut shown: Vec<String> = all
            .iter()
            .take(WAL_SHOWN)
            .map(|(seq, envelope)| {
                let mut line = format!(
                    "#{seq} {} from {}",
                    envelope.event_type,
                    self.name_of(envelope)
                );
                if let Some(text) = envelope
                    .event_data
                    .get("text")
                    .and_then(serde_json::Value::as_str)
                {
                    let cut: String = text.chars().take(TEXT_SHOWN).collect();
                    let more = if cut.len() < text.len() { "..." } else { "" };
                    line.push_str(&format!(" {:?}", format!("{cut}{more}")));
                }
                line
            })
            .collect();
        if all.len() > WAL_SHOWN {
            shown.push(format!("... and {} more", all.len() - WAL_SHOWN));
        }
        format!(": {}", shown.join(", "))
    }

    fn agent(&self, name: &str, expect: &AgentExpect, path: &str) -> Vec<String> {
        let Some(agent) = self.run.agents.iter().find(|a| a.model.name == name) else {
            return vec![format!(
                "{}: expected an agent named `{name}`, actual none",
                path.trim_end_matches('.')
            )];
        };
        let pending = self
            .run
            .hub
            .inbox_pending()
            .get(&agent.id)
            .copied()
            .unwrap_or(0);
        let counters = [
            ("model_turns", expect.model_turns, agent.model.used as u64),
            ("handled", expect.handled, agent.handled as u64),
            ("inbox.pending", expect.inbox_pending, pending),
        ];
        let mut failures: Vec<String> = counters
            .into_iter()
            .filter_map(|(key, count, actual)| {
                count
                    .filter(|count| !count.holds(actual))
                    .map(|count| format!("{path}{key}: expected {count}, actual {actual}"))
            })
            .collect();
        failures.extend(alternatives(&expect.any_of, path, |e| {
            self.agent(name, e, "")
        }));
        failures
    }
}

/// `any_of`: nothing when there are no alternatives or one holds, else one message with what
/// failed in each.
fn alternatives<T>(any_of: &[T], path: &str, check: impl Fn(&T) -> Vec<String>) -> Option<String> {
    if any_of.is_empty() {
        return None;
    }
    let mut each = Vec::new();
    for alternative in any_of {
        let failures = check(alternative);
        if failures.is_empty() {
            return None;
        }
        each.push(failures);
    }
    let listed: Vec<String> = each
        .iter()
        .enumerate()
        .map(|(idx, failures)| format!("({}) {}", idx + 1, failures.join("; ")))
        .collect();
    Some(format!(
        "{path}any_of: no alternative holds: {}",
        listed.join(" | ")
    ))
}

/// A channel's turns: the adapter's turn count (texts a conversation or discussion accepted,
/// substantive turns of a workflow), for consulting the texts that landed (question, reply),
/// and for a channel with no adapter state the `ag2.msg.text` envelopes of its WAL.
pub fn turns(hub: &crate::hub::Hub, channel: ChannelId) -> u64 {
    match hub.adapter_state(channel) {
        Some(AdapterState::Conversation(state)) => state.turn_count,
        Some(AdapterState::Discussion(state)) => state.turn_count,
        Some(AdapterState::Workflow(state)) => u64::try_from(state.turn_count).unwrap_or(0),
        Some(AdapterState::Consulting(state)) => {
            u64::from(state.initiator_sent) + u64::from(state.respondent_replied)
        }
        None => hub
            .read_wal(channel)
            .iter()
            .filter(|envelope| envelope.event_type == EventType::TEXT)
            .count() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(min: Option<u64>, max: Option<u64>) -> Count {
        Count { min, max }
    }

    #[test]
    fn counts_hold_in_range_and_read_as_written() {
        assert!(Count::exactly(3).holds(3));
        assert!(!Count::exactly(3).holds(2));
        assert!(count(Some(1), None).holds(7));
        assert!(!count(Some(1), None).holds(0));
        assert!(count(None, Some(2)).holds(0));
        assert!(!count(None, Some(2)).holds(3));
        assert!(count(Some(1), Some(3)).holds(3));
        assert_eq!(Count::exactly(3).to_string(), "3");
        assert_eq!(count(Some(1), Some(3)).to_string(), "between 1 and 3");
        assert_eq!(count(Some(1), None).to_string(), "at least 1");
        assert_eq!(count(None, Some(2)).to_string(), "at most 2");
    }

    #[test]
    fn alternatives_pass_when_one_holds_and_list_each_failure_otherwise() {
        let values = [1u64, 2];
        let check = |v: &u64| {
            if *v == 2 {
                Vec::new()
            } else {
                vec![format!("v: expected 2, actual {v}")]
            }
        };
        assert_eq!(alternatives(&values, "x.", check), None);
        assert_eq!(alternatives::<u64>(&[], "x.", check), None);
        let failing = [1u64, 3];
        assert_eq!(
            alternatives(&failing, "x.", check).as_deref(),
            Some(
                "x.any_of: no alternative holds: (1) v: expected 2, actual 1 | \
                 (2) v: expected 2, actual 3"
            )
        );
    }

    #[test]
    fn envelope_patterns_print_their_fields() {
        let pattern = EnvelopeMatch {
            event_type: Some("ag2.msg.text".into()),
            sender: Some("bob".into()),
            text: Some(Pattern(regex::Regex::new("4[0-9]").expect("a regex"))),
            count: None,
        };
        assert_eq!(
            pattern.to_string(),
            "{event_type: ag2.msg.text, sender: bob, text: /4[0-9]/}"
        );
        assert_eq!(EnvelopeMatch::default().to_string(), "{}");
    }
}
