//! The `steps:` list: each op's fields, checked where the step is written.

use super::*;

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
    task: Option<String>,
    state: Option<serde_yaml::Value>,
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
        "checkpoint" => &["agent", "task", "state"],
        "read_checkpoint" => &["agent", "task"],
        "next_envelope" => &["agent"],
        "wait" => &["seconds"],
        "partition" | "repair" | "hold" | "release" | "disconnect" => &["agent"],
        "crash" | "restart" => &[],
        _ => return None,
    })
}

const OPS: &str = "open, send, close, advance, ttl_tick, expire_due, expectation_tick, set_rule, unregister, settle, checkpoint, read_checkpoint, next_envelope, wait, partition, repair, hold, release, disconnect, crash, restart";

pub(super) struct StepsSeed<'a> {
    pub(super) agents: Option<&'a BTreeSet<String>>,
    pub(super) found: Found<'a>,
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
            index: steps.len(),
            found: self.found,
        })? {
            if steps.len() >= limits::STEPS_MAX {
                return Err(self.found.fail(Problem::at(
                    format!("at most {} steps", limits::STEPS_MAX),
                    steps_path(steps.len()),
                )));
            }
            steps.push(step);
        }
        Ok(steps)
    }
}

struct StepSeed<'a> {
    agents: Option<&'a BTreeSet<String>>,
    index: usize,
    found: Found<'a>,
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
            Some([]) => step_from_fields(bare_step(op)).map_err(|p| E::custom(p.message)),
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
        let fail = |problem: Problem| self.found.fail(problem.within(steps_path(self.index)));
        let step = step_from_fields(fields).map_err(fail)?;
        if let Some(agents) = self.agents {
            check_step_agents(&step, agents).map_err(fail)?;
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
        task: None,
        state: None,
        unknown_channel: None,
        expect_error: None,
    }
}

/// The step, or a problem with a path inside the step.
fn step_from_fields(f: StepFields) -> Result<Step, Problem> {
    let op = f.op.clone();
    let allowed = op_fields(&op)
        .ok_or_else(|| Problem::at(format!("unknown op `{op}`, expected one of: {OPS}"), ["op"]))?;
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
        ("task", f.task.is_some()),
        ("state", f.state.is_some()),
        ("unknown_channel", f.unknown_channel.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, present)| present.then_some(key))
    .collect();
    if let Some(extra) = present.iter().find(|key| !allowed.contains(key)) {
        let mut known: Vec<&str> = vec!["op", "expect_error"];
        known.extend_from_slice(allowed);
        return Err(Problem::key(
            format!(
                "op `{op}` does not take `{extra}`; its fields are: {}",
                known.join(", ")
            ),
            [*extra],
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
        .transpose()
        .map_err(|p| p.within(["expect_error"]))?;
    let need = |value: &Option<serde_yaml::Value>, key: &str| -> Result<String, Problem> {
        match value {
            Some(serde_yaml::Value::String(text)) => Ok(text.clone()),
            Some(_) => Err(Problem::at(
                format!("op `{op}`: `{key}` must be a string"),
                [key],
            )),
            None => Err(Problem::here(format!("op `{op}` needs `{key}`"))),
        }
    };
    let missing = |key: &str| Problem::here(format!("op `{op}` needs `{key}`"));
    let at = |key: &'static str| move |message: String| Problem::at(message, [key]);
    let via_hub = match f.via.as_deref() {
        None | Some("client") => false,
        Some("hub") => true,
        Some(other) => {
            return Err(Problem::at(
                format!("`via: {other}`: expected `client` or `hub`"),
                ["via"],
            ))
        }
    };
    let action = match op.as_str() {
        "open" => Action::Open {
            label: f.label.clone(),
            by: need(&f.by, "by")?,
            manifest_type: need(&f.manifest_type, "type")?,
            targets: parse_targets(f.target.as_ref())?,
            ttl: f
                .ttl
                .as_ref()
                .map(parse_ttl)
                .transpose()
                .map_err(at("ttl"))?,
            knobs: f
                .knobs
                .as_ref()
                .map(|k| mapping_or_null(k, "knobs"))
                .transpose()
                .map_err(at("knobs"))?
                .flatten(),
            intent: f.intent.clone(),
            labels: f
                .labels
                .as_ref()
                .map(|l| mapping_or_null(l, "labels"))
                .transpose()
                .map_err(at("labels"))?
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
                .transpose()
                .map_err(at("event_data"))?
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
        "advance" => Action::Advance(parse_advance(f.seconds.as_ref()).map_err(
            |e| match f.seconds {
                Some(_) => Problem::at(e, ["seconds"]),
                None => Problem::here(e),
            },
        )?),
        "ttl_tick" | "expire_due" => Action::TtlTick,
        "expectation_tick" => Action::ExpectationTick,
        "set_rule" => Action::SetRule {
            agent: need(&f.agent, "agent")?,
            rule: f.rule.ok_or_else(|| missing("rule"))?.into_rule(),
        },
        "unregister" => Action::Unregister {
            agent: need(&f.agent, "agent")?,
        },
        "checkpoint" => Action::Checkpoint {
            agent: need(&f.agent, "agent")?,
            task: f.task.clone().ok_or_else(|| missing("task"))?,
            state: f
                .state
                .as_ref()
                .map(yaml_to_json)
                .ok_or_else(|| missing("state"))?,
        },
        "read_checkpoint" => Action::ReadCheckpoint {
            agent: need(&f.agent, "agent")?,
            task: f.task.clone().ok_or_else(|| missing("task"))?,
        },
        "next_envelope" => Action::NextEnvelope {
            agent: need(&f.agent, "agent")?,
        },
        "wait" => Action::Wait(
            f.seconds
                .as_ref()
                .ok_or_else(|| missing("seconds"))
                .and_then(|s| {
                    super::network::duration_micros(s)
                        .map_err(|e| Problem::at(format!("op `wait`: {e}"), ["seconds"]))
                })?,
        ),
        "partition" => Action::Fault(Fault::Partition(need(&f.agent, "agent")?)),
        "repair" => Action::Fault(Fault::Repair(need(&f.agent, "agent")?)),
        "hold" => Action::Fault(Fault::Hold(need(&f.agent, "agent")?)),
        "release" => Action::Fault(Fault::Release(need(&f.agent, "agent")?)),
        "disconnect" => Action::Fault(Fault::Disconnect(need(&f.agent, "agent")?)),
        "crash" => Action::Fault(Fault::Crash),
        "restart" => Action::Fault(Fault::Restart),
        _ => Action::Settle,
    };
    Ok(Step {
        op,
        echo,
        expect_error,
        action,
    })
}

/// `expect_error`: a type name, `{type, match}`, or `{any_of: [...]}` whose alternatives are
/// either of those or `null` (the step may also succeed). A problem's path is inside it.
fn parse_expect_error(value: &serde_yaml::Value) -> Result<ExpectError, Problem> {
    if let Some(alternatives) = value.as_mapping().and_then(|map| map.get("any_of")) {
        if value.as_mapping().is_some_and(|map| map.len() > 1) {
            return Err(Problem::here(
                "expect_error: `any_of` stands alone; put `type`/`match` in its alternatives",
            ));
        }
        let items = alternatives
            .as_sequence()
            .filter(|items| !items.is_empty())
            .ok_or_else(|| {
                Problem::at(
                    "expect_error.any_of: expected a non-empty list of errors \
                     (a type name, `{type, match}`, or `null` for success)",
                    ["any_of"],
                )
            })?;
        let mut expected = ExpectError {
            errors: Vec::new(),
            may_succeed: false,
        };
        for (idx, item) in items.iter().enumerate() {
            if item.is_null() {
                expected.may_succeed = true;
            } else {
                let one = error_match(item)
                    .map_err(|e| Problem::at(e, [Seg::from("any_of"), idx.into()]))?;
                expected.errors.push(one);
            }
        }
        return Ok(expected);
    }
    Ok(ExpectError {
        errors: vec![error_match(value).map_err(Problem::here)?],
        may_succeed: false,
    })
}

/// One error: a type name or `{type, match}`.
fn error_match(value: &serde_yaml::Value) -> Result<ErrorMatch, String> {
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
    Ok(ErrorMatch { type_name, pattern })
}

fn parse_targets(value: Option<&serde_yaml::Value>) -> Result<Vec<String>, Problem> {
    match value {
        None => Err(Problem::here("op `open` needs `target`")),
        Some(serde_yaml::Value::String(name)) => Ok(vec![name.clone()]),
        Some(serde_yaml::Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .map(|(idx, item)| {
                item.as_str().map(str::to_string).ok_or_else(|| {
                    Problem::at(
                        "`target` entries must be names",
                        [Seg::from("target"), idx.into()],
                    )
                })
            })
            .collect(),
        Some(_) => Err(Problem::at(
            "`target` must be a name or a list of names",
            ["target"],
        )),
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

/// Every agent the step names is declared; a problem's path is inside the step.
pub(super) fn check_step_agents(step: &Step, agents: &BTreeSet<String>) -> Result<(), Problem> {
    let check = |name: &str, path: Vec<Seg>| -> Result<(), Problem> {
        if agents.contains(name) {
            Ok(())
        } else {
            let known: Vec<&str> = agents.iter().map(String::as_str).collect();
            Err(Problem::at(
                format!(
                    "op `{}`: unknown agent `{name}` (agents: {})",
                    step.op,
                    known.join(", ")
                ),
                path,
            ))
        }
    };
    let check_refs = |data: &Option<Value>, key: &str| -> Result<(), Problem> {
        let mut refs = Vec::new();
        if let Some(data) = data {
            collect_refs(data, &mut vec![Seg::from(key)], &mut refs);
        }
        refs.into_iter()
            .try_for_each(|(name, path)| check(&name, path))
    };
    let key = |key: &str| vec![Seg::from(key)];
    match &step.action {
        Action::Open { by, knobs, .. } => {
            check(by, key("by"))?;
            check_refs(knobs, "knobs")
        }
        Action::Send {
            by,
            audience,
            event_data,
            ..
        } => {
            check(by, key("by"))?;
            for (idx, name) in audience.iter().flatten().enumerate() {
                check(name, vec![Seg::from("audience"), idx.into()])?;
            }
            check_refs(event_data, "event_data")
        }
        Action::Close { by, .. } => check(by, key("by")),
        Action::SetRule { agent, .. }
        | Action::Unregister { agent }
        | Action::Checkpoint { agent, .. }
        | Action::ReadCheckpoint { agent, .. }
        | Action::NextEnvelope { agent } => check(agent, key("agent")),
        Action::Fault(fault) => fault.agent().map_or(Ok(()), |a| check(a, key("agent"))),
        _ => Ok(()),
    }
}

/// Names referenced as `{$id: name}` inside data, with the path of each name.
fn collect_refs(value: &Value, path: &mut Vec<Seg>, refs: &mut Vec<(String, Vec<Seg>)>) {
    match value {
        Value::Object(map) if map.len() == 1 && map.contains_key("$id") => {
            if let Some(Value::String(name)) = map.get("$id") {
                let mut at = path.clone();
                at.push(Seg::from("$id"));
                refs.push((name.clone(), at));
            }
        }
        Value::Object(map) => {
            for (key, v) in map {
                path.push(Seg::from(key.as_str()));
                collect_refs(v, path, refs);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (idx, v) in items.iter().enumerate() {
                path.push(Seg::Index(idx));
                collect_refs(v, path, refs);
                path.pop();
            }
        }
        _ => {}
    }
}
