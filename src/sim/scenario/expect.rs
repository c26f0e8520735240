//! The `expect:` block: end-state assertions checked on every seed (see [`crate::sim::expect`]).
//! Each key is checked where it is written; the channel labels and agent names it uses are
//! collected with their paths and checked against the whole scenario afterwards.

use super::*;
use crate::sim::expect::{
    AgentExpect, ChannelExpect, Count, EnvelopeMatch, Expect, Pattern, WalExpect,
};
use serde_yaml::{Mapping, Value as Y};

/// A name the block uses: a channel label or an agent name, with the path of the node naming
/// it.
#[derive(Clone, Debug)]
pub(super) enum NameRef {
    /// A channel label (a key of `channels` or `wal`).
    Label(String, Vec<Seg>),
    /// An agent name (a key of `agents`, or a `sender`).
    Agent(String, Vec<Seg>),
}

/// The channel states `state:` may name.
const STATES: [&str; 4] = ["pending", "active", "closed", "expired"];

/// Parses the `expect:` value; problems and names carry paths from the document's root.
pub(super) fn parse(value: &Y) -> Result<(Expect, Vec<NameRef>), Problem> {
    let mut refs = Vec::new();
    let expect = top(value, &[Seg::from("expect")], &mut refs)?;
    Ok((expect, refs))
}

fn path_with(path: &[Seg], seg: impl Into<Seg>) -> Vec<Seg> {
    let mut path = path.to_vec();
    path.push(seg.into());
    path
}

/// The dotted form of a path for messages (`expect.channels.c1`).
fn dotted(path: &[Seg]) -> String {
    let mut text = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Seg::Index(idx) => text.push_str(&format!("[{idx}]")),
        }
    }
    text
}

/// The entries of a mapping, each key a string among `known`.
fn entries<'v>(
    value: &'v Y,
    path: &[Seg],
    what: &str,
    known: &[&str],
) -> Result<Vec<(&'v str, &'v Y)>, Problem> {
    let map = mapping(value, path, what)?;
    let mut out = Vec::new();
    for (key, value) in map {
        let Some(key) = key.as_str() else {
            return Err(Problem::at(
                format!("{}: keys must be strings", dotted(path)),
                path.to_vec(),
            ));
        };
        if !known.contains(&key) {
            return Err(Problem::key(
                format!(
                    "{}: unknown key `{key}`; expected one of: {}",
                    dotted(path),
                    known.join(", ")
                ),
                path_with(path, key),
            ));
        }
        out.push((key, value));
    }
    Ok(out)
}

fn mapping<'v>(value: &'v Y, path: &[Seg], what: &str) -> Result<&'v Mapping, Problem> {
    value
        .as_mapping()
        .ok_or_else(|| Problem::at(format!("{}: expected {what}", dotted(path)), path.to_vec()))
}

/// A named entry of `channels`, `wal` or `agents`: the name, its value, its path.
type Named<'v> = (String, &'v Y, Vec<Seg>);

/// The keys of a mapping of names (`channels`, `wal`, `agents`), with their values.
fn named<'v>(value: &'v Y, path: &[Seg], what: &str) -> Result<Vec<Named<'v>>, Problem> {
    let map = mapping(value, path, &format!("a mapping of {what} to assertions"))?;
    let mut out = Vec::new();
    for (key, value) in map {
        let Some(name) = key.as_str() else {
            return Err(Problem::at(
                format!("{}: expected {what} as keys", dotted(path)),
                path.to_vec(),
            ));
        };
        out.push((name.to_string(), value, path_with(path, name)));
    }
    Ok(out)
}

fn string(value: &Y, path: &[Seg]) -> Result<String, Problem> {
    value.as_str().map(str::to_string).ok_or_else(|| {
        Problem::at(
            format!("{}: expected a string", dotted(path)),
            path.to_vec(),
        )
    })
}

/// `N` or `{min: N, max: M}` (either end may be left out).
fn count(value: &Y, path: &[Seg]) -> Result<Count, Problem> {
    let bad = || {
        Problem::at(
            format!(
                "{}: expected a count: a number, or `{{min: N, max: M}}` with either end",
                dotted(path)
            ),
            path.to_vec(),
        )
    };
    if let Some(n) = value.as_u64() {
        return Ok(Count::exactly(n));
    }
    if value.as_mapping().is_none() {
        return Err(bad());
    }
    let mut count = Count::default();
    for (key, bound) in entries(value, path, "a count", &["min", "max"])? {
        let n = bound.as_u64().ok_or_else(|| {
            Problem::at(
                format!("{}.{key}: expected a whole number at least 0", dotted(path)),
                path_with(path, key),
            )
        })?;
        match key {
            "min" => count.min = Some(n),
            _ => count.max = Some(n),
        }
    }
    if count.min.is_none() && count.max.is_none() {
        return Err(bad());
    }
    if let (Some(min), Some(max)) = (count.min, count.max) {
        if min > max {
            return Err(Problem::at(
                format!("{}: min {min} is above max {max}", dotted(path)),
                path.to_vec(),
            ));
        }
    }
    Ok(count)
}

/// `any_of: [...]`: a non-empty list of alternatives of the same shape.
fn any_of<T>(
    value: &Y,
    path: &[Seg],
    mut each: impl FnMut(&Y, &[Seg]) -> Result<T, Problem>,
) -> Result<Vec<T>, Problem> {
    let items = value
        .as_sequence()
        .filter(|items| !items.is_empty())
        .ok_or_else(|| {
            Problem::at(
                format!(
                    "{}: expected a non-empty list of alternatives",
                    dotted(path)
                ),
                path.to_vec(),
            )
        })?;
    items
        .iter()
        .enumerate()
        .map(|(idx, item)| each(item, &path_with(path, idx)))
        .collect()
}

fn top(value: &Y, path: &[Seg], refs: &mut Vec<NameRef>) -> Result<Expect, Problem> {
    let mut expect = Expect::default();
    let what = "a mapping with `channels`, `wal`, `agents` or `any_of`";
    for (key, value) in entries(value, path, what, &["channels", "wal", "agents", "any_of"])? {
        let at = path_with(path, key);
        match key {
            "channels" => {
                for (label, value, at) in named(value, &at, "channel labels")? {
                    refs.push(NameRef::Label(label.clone(), at.clone()));
                    expect.channels.push((label, channel(value, &at)?));
                }
            }
            "wal" => {
                for (label, value, at) in named(value, &at, "channel labels")? {
                    refs.push(NameRef::Label(label.clone(), at.clone()));
                    expect.wal.push((label, wal(value, &at, refs)?));
                }
            }
            "agents" => {
                for (name, value, at) in named(value, &at, "agent names")? {
                    refs.push(NameRef::Agent(name.clone(), at.clone()));
                    expect.agents.push((name, agent(value, &at)?));
                }
            }
            _ => expect.any_of = any_of(value, &at, |item, at| top(item, at, refs))?,
        }
    }
    Ok(expect)
}

fn channel(value: &Y, path: &[Seg]) -> Result<ChannelExpect, Problem> {
    let mut expect = ChannelExpect::default();
    let what = "a mapping with `state`, `close_reason`, `turns` or `any_of`";
    let known = ["state", "close_reason", "turns", "any_of"];
    for (key, value) in entries(value, path, what, &known)? {
        let at = path_with(path, key);
        match key {
            "state" => {
                let state = string(value, &at)?;
                if !STATES.contains(&state.as_str()) {
                    return Err(Problem::at(
                        format!(
                            "{}: unknown state `{state}`; expected one of: {}",
                            dotted(&at),
                            STATES.join(", ")
                        ),
                        at,
                    ));
                }
                expect.state = Some(state);
            }
            "close_reason" => expect.close_reason = Some(string(value, &at)?),
            "turns" => expect.turns = Some(count(value, &at)?),
            _ => expect.any_of = any_of(value, &at, channel)?,
        }
    }
    Ok(expect)
}

fn wal(value: &Y, path: &[Seg], refs: &mut Vec<NameRef>) -> Result<WalExpect, Problem> {
    let mut expect = WalExpect::default();
    let what = "a mapping with `contains`, `not_contains` or `any_of`";
    let known = ["contains", "not_contains", "any_of"];
    for (key, value) in entries(value, path, what, &known)? {
        let at = path_with(path, key);
        match key {
            "contains" | "not_contains" => {
                let items = value.as_sequence().ok_or_else(|| {
                    Problem::at(
                        format!("{}: expected a list of envelope patterns", dotted(&at)),
                        at.clone(),
                    )
                })?;
                let counted = key == "contains";
                let patterns = items
                    .iter()
                    .enumerate()
                    .map(|(idx, item)| envelope(item, &path_with(&at, idx), counted, refs))
                    .collect::<Result<Vec<_>, _>>()?;
                if counted {
                    expect.contains = patterns;
                } else {
                    expect.not_contains = patterns;
                }
            }
            _ => expect.any_of = any_of(value, &at, |item, at| wal(item, at, refs))?,
        }
    }
    Ok(expect)
}

fn envelope(
    value: &Y,
    path: &[Seg],
    counted: bool,
    refs: &mut Vec<NameRef>,
) -> Result<EnvelopeMatch, Problem> {
    let mut pattern = EnvelopeMatch::default();
    let known: &[&str] = if counted {
        &["event_type", "sender", "text", "count"]
    } else {
        &["event_type", "sender", "text"]
    };
    let what = format!("an envelope pattern: a mapping with {}", known.join(", "));
    for (key, value) in entries(value, path, &what, known)? {
        let at = path_with(path, key);
        match key {
            "event_type" => pattern.event_type = Some(string(value, &at)?),
            "sender" => {
                let name = string(value, &at)?;
                refs.push(NameRef::Agent(name.clone(), at));
                pattern.sender = Some(name);
            }
            "text" => {
                let text = string(value, &at)?;
                let re = regex::Regex::new(&text).map_err(|e| {
                    Problem::at(format!("{}: not a regex: {e}", dotted(&at)), at.clone())
                })?;
                pattern.text = Some(Pattern(re));
            }
            _ => pattern.count = Some(count(value, &at)?),
        }
    }
    Ok(pattern)
}

fn agent(value: &Y, path: &[Seg]) -> Result<AgentExpect, Problem> {
    let mut expect = AgentExpect::default();
    let what = "a mapping with `model_turns`, `handled`, `inbox` or `any_of`";
    let known = ["model_turns", "handled", "inbox", "any_of"];
    for (key, value) in entries(value, path, what, &known)? {
        let at = path_with(path, key);
        match key {
            "model_turns" => expect.model_turns = Some(count(value, &at)?),
            "handled" => expect.handled = Some(count(value, &at)?),
            "inbox" => {
                for (key, value) in entries(value, &at, "a mapping with `pending`", &["pending"])? {
                    let _ = key;
                    expect.inbox_pending = Some(count(value, &path_with(&at, "pending"))?);
                }
            }
            _ => expect.any_of = any_of(value, &at, agent)?,
        }
    }
    Ok(expect)
}

/// Every name the block uses is one the scenario has: labels opened by a step (`known_label`),
/// agents declared.
pub(super) fn check_names(
    refs: &[NameRef],
    agents: &BTreeSet<String>,
    known_label: impl Fn(&str) -> bool,
    labels: &str,
) -> Result<(), Problem> {
    for name in refs {
        match name {
            NameRef::Label(label, path) if !known_label(label) => {
                return Err(Problem::key(
                    format!(
                        "{}: unknown channel label `{label}`: no step opens it (labels: {labels})",
                        dotted(path)
                    ),
                    path.clone(),
                ));
            }
            NameRef::Agent(agent, path) if !agents.contains(agent) => {
                let known: Vec<&str> = agents.iter().map(String::as_str).collect();
                let message = format!(
                    "{}: unknown agent `{agent}` (agents: {})",
                    dotted(path),
                    known.join(", ")
                );
                // A key (`agents.NAME`) is pointed at; a `sender` at its value.
                let key = matches!(path.get(path.len().wrapping_sub(2)), Some(Seg::Key(k)) if k == "agents");
                return Err(if key {
                    Problem::key(message, path.clone())
                } else {
                    Problem::at(message, path.clone())
                });
            }
            _ => {}
        }
    }
    Ok(())
}
