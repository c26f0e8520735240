//! The `network:` block, an extension of the reference format read only by the network backends
//! (`hubsim run`): latencies, model time, the hub clock and sweepers, keepalive, reconnect, the
//! store's sync interval, and timed faults.

use super::*;

/// Network settings; every field has a default, so a reference scenario runs unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkOptions {
    /// One-way latency of each message, drawn per message from the `net` stream (µs).
    pub latency: Range,
    /// Duration of a model turn, drawn per turn from the `agent/NAME` stream (µs).
    pub model_time: Range,
    /// `frozen`: the hub clock is the scenario's mock clock and moves only on `advance`, as in
    /// the reference runner. `sim` (default): it also follows simulated time.
    pub frozen_clock: bool,
    /// TTL sweeper interval (µs, 0 disables); ag2's default 30 s.
    pub ttl_sweep: u64,
    /// Expectation sweeper interval (µs, 0 disables); ag2's default 10 s.
    pub expectation_sweep: u64,
    /// A connection that hears nothing for this long is dropped at both ends (the WebSocket
    /// keepalive: ping interval plus ping timeout, 40 s by default).
    pub keepalive: u64,
    /// How long after losing its connection a client re-attaches (`None`: never, which is
    /// ag2's `HubClient`; the default, 1 s, is the application's recovery loop).
    pub reconnect: Option<u64>,
    /// The hub's store syncs every this often; a crash loses what is newer (0: every change).
    pub sync: u64,
    /// ag2's `rpc_timeout` (µs).
    pub rpc_timeout: u64,
    /// How long the run may take to settle after the last step, with every fault healed.
    pub quiesce: u64,
    /// Faults at fixed simulated times.
    pub faults: Vec<TimedFault>,
    /// Queued events a run may fire before it is stopped as a runaway (not a YAML key;
    /// default [`EVENTS_MAX`]).
    pub events_max: u64,
    /// `wire: text` carries every message as the exact text ag2 would send (encoded, then
    /// decoded by the receiver, with the 1 MiB limit); `frames` (default) hands the frame
    /// over without encoding it, which is faster and, below the limit, the same run.
    pub text_wire: bool,
}

/// Queued events a network run may fire by default (a normal run fires thousands).
pub const EVENTS_MAX: u64 = 5_000_000;

/// A closed range of microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// Lower bound.
    pub min: u64,
    /// Upper bound (>= min).
    pub max: u64,
}

impl Range {
    /// A fixed value.
    pub const fn fixed(micros: u64) -> Range {
        Range {
            min: micros,
            max: micros,
        }
    }
}

/// A fault injected into the network or the hub.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Cut an agent's link to the hub: nothing crosses it until `repair`; past the keepalive
    /// the connection is dropped at both ends and what was in flight is lost.
    Partition(String),
    /// Heal a partition: what was held goes through in order.
    Repair(String),
    /// Hold an agent's messages (both ways) without breaking the connection.
    Hold(String),
    /// Deliver what a hold kept, in order.
    Release(String),
    /// Drop an agent's connection now (both ends see it close).
    Disconnect(String),
    /// Crash the hub: every connection drops and writes since the last sync are lost.
    Crash,
    /// Restart a crashed hub from its store.
    Restart,
    /// Set the latency of one agent's link (or every link).
    Latency {
        /// The agent, or `None` for every link.
        agent: Option<String>,
        /// The new range.
        range: Range,
    },
}

impl Fault {
    /// The agent it concerns, if any.
    pub fn agent(&self) -> Option<&str> {
        match self {
            Fault::Partition(a)
            | Fault::Repair(a)
            | Fault::Hold(a)
            | Fault::Release(a)
            | Fault::Disconnect(a) => Some(a),
            Fault::Latency { agent, .. } => agent.as_deref(),
            Fault::Crash | Fault::Restart => None,
        }
    }
}

/// A fault at a simulated time.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedFault {
    /// Microseconds from the start of the run.
    pub at: u64,
    /// What happens.
    pub fault: Fault,
}

impl Default for NetworkOptions {
    fn default() -> NetworkOptions {
        NetworkOptions {
            latency: Range::fixed(0),
            model_time: Range::fixed(0),
            frozen_clock: false,
            ttl_sweep: 30_000_000,
            expectation_sweep: 10_000_000,
            keepalive: 40_000_000,
            reconnect: Some(1_000_000),
            sync: 0,
            rpc_timeout: 30_000_000,
            quiesce: 120_000_000,
            faults: Vec::new(),
            events_max: EVENTS_MAX,
            text_wire: false,
        }
    }
}

/// Seconds of a duration string: `12us`, `250ms`, `2s`, `1m`, `1h`, or a bare number of
/// seconds. `None` if it is none of these.
pub fn duration_seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    let (digits, scale) = if let Some(d) = text.strip_suffix("ms") {
        (d, 0.001)
    } else if let Some(d) = text.strip_suffix("us") {
        (d, 0.000_001)
    } else if let Some(d) = text.strip_suffix('s') {
        (d, 1.0)
    } else if let Some(d) = text.strip_suffix('m') {
        (d, 60.0)
    } else if let Some(d) = text.strip_suffix('h') {
        (d, 3600.0)
    } else {
        (text, 1.0)
    };
    digits.trim().parse::<f64>().ok().map(|value| value * scale)
}

/// A duration: seconds as a number, or a string like `250ms`, `2s`, `1m`, `1h`.
pub(super) fn duration_micros(value: &serde_yaml::Value) -> Result<u64, String> {
    use serde_yaml::Value as Y;
    let bad = || {
        format!(
            "expected a duration (seconds, or a string like \"250ms\", \"2s\", \"1m\"), got {}",
            describe(value)
        )
    };
    let seconds = match value {
        Y::Number(number) => number.as_f64().ok_or_else(bad)?,
        Y::String(text) => duration_seconds(text).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if !(seconds.is_finite() && (0.0..1e9).contains(&seconds)) {
        return Err(bad());
    }
    Ok((seconds * 1e6).round() as u64)
}

/// A range: `"1ms..20ms"`, `[min, max]`, or one duration.
pub(super) fn range(value: &serde_yaml::Value) -> Result<Range, String> {
    use serde_yaml::Value as Y;
    let (min, max) = match value {
        Y::String(text) if text.contains("..") => {
            let (a, b) = text.split_once("..").unwrap_or_default();
            (
                duration_micros(&Y::String(a.to_string()))?,
                duration_micros(&Y::String(b.to_string()))?,
            )
        }
        Y::Sequence(items) if items.len() == 2 => {
            (duration_micros(&items[0])?, duration_micros(&items[1])?)
        }
        other => {
            let fixed = duration_micros(other)?;
            (fixed, fixed)
        }
    };
    if min > max {
        return Err(format!(
            "range {} has its bounds the wrong way round",
            describe(value)
        ));
    }
    Ok(Range { min, max })
}

fn describe(value: &serde_yaml::Value) -> String {
    yaml_to_json(value).to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NetworkFields {
    latency: Option<serde_yaml::Value>,
    model_time: Option<serde_yaml::Value>,
    clock: Option<String>,
    ttl_sweep: Option<serde_yaml::Value>,
    expectation_sweep: Option<serde_yaml::Value>,
    keepalive: Option<serde_yaml::Value>,
    reconnect: Option<serde_yaml::Value>,
    sync: Option<serde_yaml::Value>,
    rpc_timeout: Option<serde_yaml::Value>,
    quiesce: Option<serde_yaml::Value>,
    faults: Option<Vec<FaultFields>>,
    wire: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FaultFields {
    at: serde_yaml::Value,
    partition: Option<String>,
    repair: Option<String>,
    hold: Option<String>,
    release: Option<String>,
    disconnect: Option<String>,
    crash: Option<String>,
    restart: Option<String>,
    latency: Option<serde_yaml::Value>,
    agent: Option<String>,
}

impl Fault {
    /// The key of a `network.faults` entry that names the fault's agent.
    pub(super) fn key(&self) -> &'static str {
        match self {
            Fault::Partition(_) => "partition",
            Fault::Repair(_) => "repair",
            Fault::Hold(_) => "hold",
            Fault::Release(_) => "release",
            Fault::Disconnect(_) => "disconnect",
            Fault::Crash => "crash",
            Fault::Restart => "restart",
            Fault::Latency { .. } => "agent",
        }
    }
}

/// The `network:` block's values; a problem's path is inside the block.
pub(super) fn options(f: NetworkFields) -> Result<NetworkOptions, Problem> {
    let mut options = NetworkOptions::default();
    let field = |name: &'static str, value: &Option<serde_yaml::Value>, slot: &mut u64| {
        if let Some(value) = value {
            *slot = duration_micros(value)
                .map_err(|e| Problem::at(format!("network.{name}: {e}"), [name]))?;
        }
        Ok::<(), Problem>(())
    };
    if let Some(value) = &f.latency {
        options.latency =
            range(value).map_err(|e| Problem::at(format!("network.latency: {e}"), ["latency"]))?;
    }
    if let Some(value) = &f.model_time {
        options.model_time = range(value)
            .map_err(|e| Problem::at(format!("network.model_time: {e}"), ["model_time"]))?;
    }
    options.frozen_clock = match f.clock.as_deref() {
        None | Some("sim") => false,
        Some("frozen") => true,
        Some(other) => {
            return Err(Problem::at(
                format!("network.clock: expected `sim` or `frozen`, got `{other}`"),
                ["clock"],
            ))
        }
    };
    options.text_wire = match f.wire.as_deref() {
        None | Some("frames") => false,
        Some("text") => true,
        Some(other) => {
            return Err(Problem::at(
                format!("network.wire: expected `frames` or `text`, got `{other}`"),
                ["wire"],
            ))
        }
    };
    field("ttl_sweep", &f.ttl_sweep, &mut options.ttl_sweep)?;
    field(
        "expectation_sweep",
        &f.expectation_sweep,
        &mut options.expectation_sweep,
    )?;
    field("keepalive", &f.keepalive, &mut options.keepalive)?;
    field("sync", &f.sync, &mut options.sync)?;
    field("rpc_timeout", &f.rpc_timeout, &mut options.rpc_timeout)?;
    field("quiesce", &f.quiesce, &mut options.quiesce)?;
    options.reconnect = match &f.reconnect {
        None => options.reconnect,
        Some(serde_yaml::Value::Null) => None,
        Some(value) => {
            let bad = |message: String| Problem::at(message, ["reconnect"]);
            let after =
                duration_micros(value).map_err(|e| bad(format!("network.reconnect: {e}")))?;
            // A client retries a failed re-attach this often: at 0 it would retry
            // forever at one moment.
            if after < 1_000 {
                return Err(bad(format!(
                    "network.reconnect: at least 1ms (null: never re-attach), got {}",
                    describe(value)
                )));
            }
            Some(after)
        }
    };
    for (idx, fault) in f.faults.iter().flatten().enumerate() {
        let timed = timed_fault(fault).map_err(|p| {
            Problem {
                message: format!("network.faults[{idx}]: {}", p.message),
                ..p
            }
            .within([Seg::from("faults"), idx.into()])
        })?;
        options.faults.push(timed);
    }
    Ok(options)
}

/// One timed fault; a problem's path is inside the entry.
pub(super) fn timed_fault(f: &FaultFields) -> Result<TimedFault, Problem> {
    let at = duration_micros(&f.at).map_err(|e| Problem::at(format!("at: {e}"), ["at"]))?;
    let mut faults = Vec::new();
    let agent = |name: &Option<String>| name.clone();
    if let Some(a) = agent(&f.partition) {
        faults.push(Fault::Partition(a));
    }
    if let Some(a) = agent(&f.repair) {
        faults.push(Fault::Repair(a));
    }
    if let Some(a) = agent(&f.hold) {
        faults.push(Fault::Hold(a));
    }
    if let Some(a) = agent(&f.release) {
        faults.push(Fault::Release(a));
    }
    if let Some(a) = agent(&f.disconnect) {
        faults.push(Fault::Disconnect(a));
    }
    for (key, value, fault) in [
        ("crash", &f.crash, Fault::Crash),
        ("restart", &f.restart, Fault::Restart),
    ] {
        if let Some(target) = value {
            if target != "hub" {
                return Err(Problem::at(
                    format!("`{key}: {target}`: only `hub` can {key}"),
                    [key],
                ));
            }
            faults.push(fault);
        }
    }
    if let Some(value) = &f.latency {
        faults.push(Fault::Latency {
            agent: f.agent.clone(),
            range: range(value).map_err(|e| Problem::at(format!("latency: {e}"), ["latency"]))?,
        });
    } else if f.agent.is_some() {
        return Err(Problem::key("`agent` goes with `latency`", ["agent"]));
    }
    match faults.len() {
        1 => Ok(TimedFault {
            at,
            fault: faults.remove(0),
        }),
        0 => Err(Problem::here(
            "expected one of: partition, repair, hold, release, disconnect, crash, restart, latency",
        )),
        _ => Err(Problem::key(
            "one fault per entry",
            [match &faults[1] {
                Fault::Latency { .. } => "latency",
                other => other.key(),
            }],
        )),
    }
}
