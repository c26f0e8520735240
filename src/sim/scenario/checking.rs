//! The keys `hubsim check` reads besides the reference format: the fixed `seed`, the `seeds`
//! a sweep runs, the `invariants` to check, the `known_violations` the scenario shows on
//! purpose, the `expect_reached` probes, and the random fault profile (`chaos`).

use super::network::{duration_micros, range};
use super::*;
use crate::sim::check::{ag2_behaviour, Invariant, Selection, HOLES, SURPRISES};

/// How `hubsim check` sweeps a scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepOptions {
    /// The seed of `hubsim run` without `--seed`, and of the snapshot.
    pub seed: u64,
    /// The seeds a sweep runs (half-open); `None`: one seed if nothing is drawn at random,
    /// else [`DEFAULT_SEEDS`].
    pub seeds: Option<SeedRange>,
    /// The invariants checked.
    pub invariants: Selection,
    /// Violations ag2 itself commits here (its delivery holes): they do not fail a sweep. A
    /// scenario kept to show one also lists it in `expect_reached`, so the sweep fails if the
    /// finding goes away.
    pub known_violations: Vec<KnownViolation>,
    /// Probes at least one seed of a sweep must reach (see [`PROBES`]), or violation kinds.
    pub expect_reached: Vec<String>,
    /// A random fault profile drawn per seed.
    pub chaos: Option<Chaos>,
    /// The network backends the scenario is meant for (`backends:`; empty: every one). A
    /// scenario whose faults are pinned to the event driver's timing (the fuzzer's findings:
    /// a crash 1 ms into a run whose registration takes no time there, several ticks on
    /// turmoil) names `events` alone.
    pub backends: Vec<NetworkBackend>,
}

/// A network backend a scenario can name in `backends:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkBackend {
    /// The event-driven backend.
    Events,
    /// turmoil.
    Turmoil,
}

impl NetworkBackend {
    /// The name scenarios use.
    pub fn name(self) -> &'static str {
        match self {
            NetworkBackend::Events => "events",
            NetworkBackend::Turmoil => "turmoil",
        }
    }
}

impl SweepOptions {
    /// Whether the scenario is meant for `backend`.
    pub fn runs_on(&self, backend: NetworkBackend) -> bool {
        self.backends.is_empty() || self.backends.contains(&backend)
    }
}

/// Parses `backends`.
pub(super) fn backends(names: &[String]) -> Result<Vec<NetworkBackend>, Problem> {
    names
        .iter()
        .enumerate()
        .map(|(idx, name)| match name.as_str() {
            "events" => Ok(NetworkBackend::Events),
            "turmoil" => Ok(NetworkBackend::Turmoil),
            other => Err(Problem::at(
                format!("backends: unknown backend `{other}`; expected `events` or `turmoil`"),
                [idx],
            )),
        })
        .collect()
}

impl Scenario {
    /// True when a run draws anything at random (latencies, model time, chaos), so seeds
    /// differ.
    pub fn draws_randomly(&self) -> bool {
        let varies = |r: Range| r.min != r.max;
        varies(self.network.latency)
            || varies(self.network.model_time)
            || self.sweep.chaos.is_some()
            || self
                .network
                .faults
                .iter()
                .any(|f| matches!(&f.fault, Fault::Latency { range, .. } if varies(*range)))
    }

    /// The seeds a sweep runs: the scenario's `seeds`, else one seed (its `seed`) when nothing
    /// is drawn at random, else `0..DEFAULT_SEEDS`.
    pub fn seed_range(&self) -> SeedRange {
        self.sweep.seeds.unwrap_or(if self.draws_randomly() {
            SeedRange {
                start: 0,
                end: DEFAULT_SEEDS,
            }
        } else {
            SeedRange {
                start: self.sweep.seed,
                end: self.sweep.seed + 1,
            }
        })
    }
}

/// Seeds a sweep runs when the scenario draws at random and names no `seeds`.
pub const DEFAULT_SEEDS: u64 = 100;

/// What `expect_reached` may name besides violation kinds.
pub const PROBES: [&str; 6] = [
    "hub_crash",
    "reconnect",
    "message_lost",
    "inbox_full",
    "channel_expired",
    "duplicate_delivery",
];

/// A half-open range of seeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedRange {
    /// First seed.
    pub start: u64,
    /// One past the last seed.
    pub end: u64,
}

impl SeedRange {
    /// Parses `N` (0..N) or `A..B`.
    ///
    /// # Errors
    /// What was expected.
    pub fn parse(text: &str) -> Result<SeedRange, String> {
        let number = |t: &str| {
            t.trim()
                .parse::<u64>()
                .map_err(|_| format!("expected a seed count `N` or a range `A..B`, got `{text}`"))
        };
        let range = match text.split_once("..") {
            Some((a, b)) => SeedRange {
                start: number(a)?,
                end: number(b)?,
            },
            None => SeedRange {
                start: 0,
                end: number(text)?,
            },
        };
        if range.start >= range.end {
            return Err(format!("seed range `{text}` is empty"));
        }
        Ok(range)
    }

    /// How many seeds.
    pub fn len(self) -> u64 {
        self.end - self.start
    }

    /// Never true for a parsed range.
    pub fn is_empty(self) -> bool {
        self.start >= self.end
    }
}

impl fmt::Display for SeedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A violation a scenario shows on purpose, with why it is expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownViolation {
    /// The violation kind (`delivery/closed_channel_not_replayed`).
    pub kind: String,
    /// Why: the scenario's words, or the ag2 hole's explanation.
    pub because: String,
}

/// A fault kind the chaos profile can draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChaosKind {
    /// A partition of one agent's link, repaired after a drawn duration.
    Partition,
    /// A hold of one agent's link, released after a drawn duration.
    Hold,
    /// One agent's connection dropped.
    Disconnect,
    /// The hub crashed, restarted after a drawn duration.
    Crash,
    /// One agent's latency set to a drawn range, restored after a drawn duration.
    Latency,
}

impl ChaosKind {
    const ALL: [ChaosKind; 5] = [
        ChaosKind::Partition,
        ChaosKind::Hold,
        ChaosKind::Disconnect,
        ChaosKind::Crash,
        ChaosKind::Latency,
    ];

    /// The name in `chaos.faults`.
    pub fn name(self) -> &'static str {
        match self {
            ChaosKind::Partition => "partition",
            ChaosKind::Hold => "hold",
            ChaosKind::Disconnect => "disconnect",
            ChaosKind::Crash => "crash",
            ChaosKind::Latency => "latency",
        }
    }
}

/// A random fault profile (swarm testing): per seed, each kind is on or off, and an enabled
/// kind gets its own rate, both drawn from the seed's `chaos` stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Chaos {
    /// No fault before this (µs of simulated time from the start), so the first steps can set
    /// the scene.
    pub from: u64,
    /// The chaos phase lasts this long (µs of simulated time from the start); then every
    /// fault is healed and the run must settle within `network.quiesce`.
    pub until: u64,
    /// The kinds that may be drawn.
    pub kinds: Vec<ChaosKind>,
    /// Faults per simulated second of an enabled kind: drawn per seed and kind in this range.
    pub rate: (f64, f64),
    /// How long a partition, hold, crash or latency change lasts.
    pub duration: Range,
    /// The latency range a latency fault sets.
    pub latency: Range,
}

impl Default for SweepOptions {
    fn default() -> SweepOptions {
        SweepOptions {
            seed: 0,
            seeds: None,
            invariants: Selection::ALL,
            known_violations: Vec::new(),
            expect_reached: Vec::new(),
            backends: Vec::new(),
            chaos: None,
        }
    }
}

/// Parses the `seeds` value: a count or `A..B`.
pub(super) fn seeds(value: &serde_yaml::Value) -> Result<SeedRange, Problem> {
    match value {
        serde_yaml::Value::Number(n) => SeedRange::parse(&n.to_string()),
        serde_yaml::Value::String(text) => SeedRange::parse(text),
        _ => Err("expected a seed count `N` or a range `\"A..B\"`".into()),
    }
    .map_err(|e| Problem::here(format!("seeds: {e}")))
}

/// Parses `invariants`.
pub(super) fn invariants(names: &[String]) -> Result<Selection, Problem> {
    let mut selection = Selection::NONE;
    for (idx, name) in names.iter().enumerate() {
        let invariant = Invariant::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Invariant::ALL.iter().map(|i| i.name()).collect();
            Problem::at(
                format!(
                    "invariants: unknown invariant `{name}`; expected one of: {}",
                    known.join(", ")
                ),
                [idx],
            )
        })?;
        selection = selection.with(invariant);
    }
    Ok(selection)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KnownFields {
    kind: String,
    because: Option<String>,
}

/// Parses `known_violations`: each kind must be one a checker reports.
pub(super) fn known(entries: Vec<KnownFields>) -> Result<Vec<KnownViolation>, Problem> {
    entries
        .into_iter()
        .enumerate()
        .map(|(idx, entry)| {
            let hole = ag2_behaviour(&entry.kind);
            let because = match (entry.because, hole) {
                (Some(because), _) => because,
                (None, Some(hole)) => format!("ag2 1.2.1, {}: {}", hole.section, hole.explanation),
                (None, None) => {
                    return Err(Problem::at(format!(
                        "known_violations[{idx}]: `{}` is not one of ag2's known holes ({}); say why it is expected with `because:`",
                        entry.kind,
                        HOLES.iter().chain(SURPRISES.iter()).map(|h| h.kind).collect::<Vec<_>>().join(", ")
                    ), [Seg::Index(idx), "kind".into()]))
                }
            };
            let invariant = entry.kind.split('/').next().unwrap_or_default();
            if Invariant::parse(invariant).is_none() || !entry.kind.contains('/') {
                return Err(Problem::at(
                    format!(
                        "known_violations[{idx}]: `{}` is not a violation kind (`INVARIANT/KIND`)",
                        entry.kind
                    ),
                    [Seg::Index(idx), "kind".into()],
                ));
            }
            Ok(KnownViolation {
                kind: entry.kind,
                because,
            })
        })
        .collect()
}

/// Checks `expect_reached` names.
pub(super) fn probes(names: &[String]) -> Result<(), Problem> {
    for (idx, name) in names.iter().enumerate() {
        let violation = name
            .split_once('/')
            .is_some_and(|(inv, _)| Invariant::parse(inv).is_some());
        if !violation && !PROBES.contains(&name.as_str()) {
            return Err(Problem::at(
                format!(
                    "expect_reached: unknown probe `{name}`; expected a violation kind \
                     (`INVARIANT/KIND`) or one of: {}",
                    PROBES.join(", ")
                ),
                [idx],
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChaosFields {
    from: Option<serde_yaml::Value>,
    until: serde_yaml::Value,
    faults: Vec<String>,
    rate: Option<serde_yaml::Value>,
    duration: Option<serde_yaml::Value>,
    latency: Option<serde_yaml::Value>,
}

/// Parses `chaos`.
pub(super) fn chaos(fields: ChaosFields) -> Result<Chaos, Problem> {
    let at = |key: &'static str| move |e: String| Problem::at(format!("chaos.{key}: {e}"), [key]);
    let until = duration_micros(&fields.until).map_err(at("until"))?;
    let from = match &fields.from {
        None => 0,
        Some(value) => duration_micros(value).map_err(at("from"))?,
    };
    if from >= until {
        let key = if fields.from.is_some() {
            "from"
        } else {
            "until"
        };
        return Err(Problem::at("chaos: `from` must come before `until`", [key]));
    }
    let mut kinds = Vec::new();
    for (idx, name) in fields.faults.iter().enumerate() {
        let kind = ChaosKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = ChaosKind::ALL.iter().map(|k| k.name()).collect();
                Problem::at(
                    format!(
                        "chaos.faults: unknown fault `{name}`; expected any of: {}",
                        known.join(", ")
                    ),
                    [Seg::from("faults"), idx.into()],
                )
            })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    kinds.sort();
    let rate = match &fields.rate {
        None => (0.05, 0.5),
        Some(value) => rate(value).map_err(at("rate"))?,
    };
    // Faults drawn per kind at the top of the range: a bound on a run's schedule and memory.
    let most = rate.1 * (until - from) as f64 / 1e6;
    if most > super::limits::CHAOS_FAULTS_MAX as f64 {
        let key = if fields.rate.is_some() {
            "rate"
        } else {
            "until"
        };
        return Err(Problem::at(
            format!(
                "chaos: up to {most:.0} faults of each kind ({} a second for {} s); at most {} \
                 are drawn: lower `rate` or shorten `from`..`until`",
                rate.1,
                (until - from) / 1_000_000,
                super::limits::CHAOS_FAULTS_MAX
            ),
            [key],
        ));
    }
    let duration = match &fields.duration {
        None => Range {
            min: 100_000,
            max: 5_000_000,
        },
        Some(value) => range(value).map_err(at("duration"))?,
    };
    let latency = match &fields.latency {
        None => Range {
            min: 1_000,
            max: 200_000,
        },
        Some(value) => range(value).map_err(at("latency"))?,
    };
    Ok(Chaos {
        from,
        until,
        kinds,
        rate,
        duration,
        latency,
    })
}

/// A rate range: `"0.1..2"` or one number (faults per second).
fn rate(value: &serde_yaml::Value) -> Result<(f64, f64), String> {
    let bad = || "expected faults per second: a number or a range \"A..B\"".to_string();
    let number = |t: &str| t.trim().parse::<f64>().map_err(|_| bad());
    let (min, max) = match value {
        serde_yaml::Value::Number(n) => {
            let v = n.as_f64().ok_or_else(bad)?;
            (v, v)
        }
        serde_yaml::Value::String(text) => match text.split_once("..") {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(text)?, number(text)?),
        },
        _ => return Err(bad()),
    };
    if !(min.is_finite() && max.is_finite() && 0.0 < min && min <= max && max <= 1000.0) {
        return Err(format!("rate {min}..{max}: expected 0 < A <= B <= 1000"));
    }
    Ok((min, max))
}
