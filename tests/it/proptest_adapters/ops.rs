//! The generated vocabulary: ops over a fixed cast of four agents, and the proptest strategies
//! that draw them. A send or close draws its channel as an index into the opens before it and
//! its sender mostly among that open's participants; both are resolved once the sequence is
//! drawn, so every shrink of a sequence is still a well-formed scenario.

use proptest::prelude::*;
use proptest::sample::Index;

/// The cast, in registration order. alice, bob and carol run `ack_only` (they ack invites and
/// never run a model); dave is `silent` (he ignores everything, invites included).
pub(super) const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// dave: an open that invites him stays PENDING until a step acks or rejects for him.
pub(super) const SILENT: usize = 3;
/// The tool name `tool_called` conditions and tool packets use.
pub(super) const TOOL: &str = "t1";

/// One step of a generated scenario.
#[derive(Clone, Debug)]
pub(super) enum Op {
    /// `open`, labelled `c{step}`.
    Open(Open),
    /// `send`.
    Send(Send),
    /// `close`, through the client (`get_channel` first).
    Close {
        /// The open step whose channel it names; `None`: a channel the hub never minted.
        channel: Option<usize>,
        by: usize,
        reason: Option<&'static str>,
    },
    /// `advance` the mock clock by whole seconds.
    Advance(u32),
    /// `ttl_tick` (ag2's `expire_due`).
    TtlTick,
    /// `expectation_tick`.
    ExpectationTick,
    /// `set_rule` (a partial rule: every other field is reset to its default).
    SetRule { agent: usize, rule: RuleSpec },
    /// `unregister`.
    Unregister(usize),
}

/// An `open` step.
#[derive(Clone, Debug)]
pub(super) struct Open {
    pub(super) by: usize,
    pub(super) kind: Kind,
    /// Distinct agents, in the order given; the creator may be among them.
    pub(super) targets: Vec<usize>,
    pub(super) ttl: Ttl,
    /// `wait: false` runs the open in the background. Always false when dave is invited: a
    /// blocking open would wait for an ack that never comes.
    pub(super) wait: bool,
}

/// The adapter of an open.
#[derive(Clone, Debug)]
pub(super) enum Kind {
    Consulting,
    Conversation,
    /// With `knobs: {ordering: round_robin}`.
    Discussion,
    Workflow(GraphSpec),
}

impl Kind {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Kind::Consulting => "consulting",
            Kind::Conversation => "conversation",
            Kind::Discussion => "discussion",
            Kind::Workflow(_) => "workflow",
        }
    }
}

/// An open's `ttl`.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ttl {
    /// No `ttl`: the creator's `channel_ttl_default` (`2h`).
    CreatorDefault,
    /// `ttl: N` seconds.
    Seconds(u32),
    /// `ttl: "0"`: no expiry.
    Never,
}

/// A `send` step.
#[derive(Clone, Debug)]
pub(super) struct Send {
    /// The open step whose channel it names; `None`: a channel the hub never minted
    /// (`unknown_channel: true`).
    pub(super) channel: Option<usize>,
    pub(super) by: usize,
    pub(super) event: Event,
    /// `None`: a broadcast. Distinct agents, any of the cast (the sender and non-participants
    /// included), possibly empty.
    pub(super) audience: Option<Vec<usize>>,
    /// `via: hub` posts straight to the hub, skipping the client's `get_channel` lookup and
    /// its disconnected check.
    pub(super) via_hub: bool,
}

/// Which channel a send or close names, as drawn.
#[derive(Clone, Copy, Debug)]
enum ChannelRef {
    /// The open at this index among the opens before the step (modulo their count); with no
    /// open before it, a channel the hub never minted.
    Opened(Index),
    /// A channel the hub never minted (`unknown_channel: true`).
    Unknown,
}

/// Who sends or closes, as drawn.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// A participant of the channel's open (any agent when there is no open).
    Participant(Index),
    /// Any agent.
    Anyone(usize),
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        3 => any::<Index>().prop_map(Who::Participant),
        1 => agent().prop_map(Who::Anyone),
    ]
}

/// A send or close before its channel and sender are resolved.
#[derive(Clone, Debug)]
enum Drawn {
    Op(Op),
    Send(ChannelRef, Who, Send),
    Close(ChannelRef, Who, Option<&'static str>),
}

/// What a send posts.
#[derive(Clone, Debug)]
pub(super) enum Event {
    /// `ag2.msg.text`, possibly empty.
    Text(&'static str),
    /// `ag2.packet` with a `body` and this routing.
    Packet(Routing),
    /// A custom `app.note`.
    Note,
    /// `ag2.channel.invite.ack`.
    Ack,
    /// `ag2.channel.invite.reject`.
    Reject,
}

/// A packet's `routing` (all well-formed: the fold never raises).
#[derive(Clone, Copy, Debug)]
pub(super) enum Routing {
    /// No routing: the graph decides.
    Plain,
    /// `{kind: finish, reason}`; an empty reason closes with `finished`.
    Finish(&'static str),
    /// `{kind: handoff, target: {$id: agent}}`: that agent's id, participant or not.
    HandoffId(usize),
    /// `{kind: handoff, target: name}`: a bare name, which matches no sender id.
    HandoffName(usize),
    /// `{kind: handoff, tool: t1}` with no target: the graph decides, `tool_called(t1)` true.
    Tool,
}

/// A partial rule for `set_rule`.
#[derive(Clone, Copy, Debug)]
pub(super) enum RuleSpec {
    /// `{}`: every field at its default.
    Reset,
    /// `{limits: {inbox: {max_pending: N}}}` (0: unlimited).
    MaxPending(i64),
    /// `{access: {inbound_from: [PATTERN]}}`.
    InboundFrom(&'static str),
    /// `{access: {outbound_to: [PATTERN]}}`.
    OutboundTo(&'static str),
}

/// A workflow `knobs.graph`, always loadable; its initial speaker may be a non-participant.
#[derive(Clone, Debug)]
pub(super) struct GraphSpec {
    pub(super) initial: usize,
    pub(super) transitions: Vec<Edge>,
    /// `None`: no `default_target` key, which means `terminate(after_work)`.
    pub(super) default: Option<Target>,
    pub(super) max_turns: Option<i64>,
}

/// A graph transition.
#[derive(Clone, Debug)]
pub(super) struct Edge {
    pub(super) when: Cond,
    pub(super) then: Target,
    pub(super) priority: i64,
}

/// A transition's condition.
#[derive(Clone, Copy, Debug)]
pub(super) enum Cond {
    Always,
    FromSpeaker(usize),
    /// `tool_called(t1)`.
    ToolCalled,
}

/// A transition's target.
#[derive(Clone, Copy, Debug)]
pub(super) enum Target {
    Agent(usize),
    RoundRobin,
    Stay,
    RevertToInitiator,
    Terminate(&'static str),
}

/// Glob patterns rules use (`*` and literals only, so the model's matcher is exact).
const PATTERNS: &[&str] = &["*", "a*", "b*", "*o*", "bob", "carol", "dave"];
const TEXTS: &[&str] = &["", "hi", "a question", "an answer"];
const REASONS: &[&str] = &["", "done", "gave up"];
/// Clock steps around the thresholds: acks_within 30 s, TTLs 30/60 s, reply_within 600 s,
/// max_silence 3600 s, the default TTL 2 h.
const ADVANCES: &[u32] = &[1, 10, 29, 30, 31, 59, 60, 599, 600, 3600, 7200];

fn agent() -> impl Strategy<Value = usize> {
    0..NAMES.len()
}

/// Distinct agents, in any order.
fn agents(range: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<usize>> {
    prop::sample::subsequence((0..NAMES.len()).collect::<Vec<_>>(), range).prop_shuffle()
}

fn ttl() -> impl Strategy<Value = Ttl> {
    prop_oneof![
        3 => Just(Ttl::CreatorDefault),
        2 => prop::sample::select(&[30u32, 60][..]).prop_map(Ttl::Seconds),
        1 => Just(Ttl::Never),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        agent().prop_map(Target::Agent),
        Just(Target::RoundRobin),
        Just(Target::Stay),
        Just(Target::RevertToInitiator),
        prop::sample::select(&["done", "after_work"][..]).prop_map(Target::Terminate),
    ]
}

fn edge() -> impl Strategy<Value = Edge> {
    let when = prop_oneof![
        2 => Just(Cond::Always),
        2 => agent().prop_map(Cond::FromSpeaker),
        1 => Just(Cond::ToolCalled),
    ];
    (when, target(), 0i64..3).prop_map(|(when, then, priority)| Edge {
        when,
        then,
        priority,
    })
}

/// A graph whose initial speaker is `Who::Participant` of the open (resolved by [`open`]).
fn graph() -> impl Strategy<Value = (Who, GraphSpec)> {
    (
        who(),
        prop::collection::vec(edge(), 0..4),
        prop::option::of(target()),
        prop::option::of(prop::sample::select(&[0i64, 1, 2, 3, 5][..])),
    )
        .prop_map(|(initial, transitions, default, max_turns)| {
            let graph = GraphSpec {
                initial: 0,
                transitions,
                default,
                max_turns,
            };
            (initial, graph)
        })
}

/// An open's participants in order: the targets as given, the creator first unless listed.
pub(super) fn participants(open: &Open) -> Vec<usize> {
    let mut participants = open.targets.clone();
    if !participants.contains(&open.by) {
        participants.insert(0, open.by);
    }
    participants
}

fn pick(who: Who, participants: &[usize]) -> usize {
    match who {
        Who::Participant(index) if !participants.is_empty() => *index.get(participants),
        Who::Participant(index) => index.index(NAMES.len()),
        Who::Anyone(agent) => agent,
    }
}

/// The targets of an open: for the two-party adapters one agent, mostly not the creator; two
/// or three distinct agents otherwise, the creator possibly among them. dave may be invited
/// only in a `silent` share of the opens, so that most channels activate.
fn targets(kind: KindTag, silent: f64) -> BoxedStrategy<(usize, Vec<usize>)> {
    let invite_silent = prop::bool::weighted(silent);
    match kind {
        KindTag::Consulting | KindTag::Conversation => (
            agent(),
            0..NAMES.len(),
            prop::bool::weighted(0.1),
            invite_silent,
        )
            .prop_map(|(by, pick, itself, silent)| {
                let others: Vec<usize> = (0..NAMES.len())
                    .filter(|a| *a != by && (silent || *a != SILENT))
                    .collect();
                let target = if itself {
                    by
                } else {
                    others[pick % others.len()]
                };
                (by, vec![target])
            })
            .boxed(),
        KindTag::Discussion | KindTag::Workflow => (agent(), agents(2..=3), invite_silent)
            .prop_map(|(by, mut targets, silent)| {
                if !silent && targets.len() > 2 {
                    targets.retain(|a| *a != SILENT);
                }
                if !silent && targets.contains(&SILENT) {
                    let free = (0..SILENT)
                        .find(|a| !targets.contains(a))
                        .expect("a free agent");
                    targets
                        .iter_mut()
                        .filter(|a| **a == SILENT)
                        .for_each(|a| *a = free);
                }
                (by, targets)
            })
            .boxed(),
    }
}

/// An open of `kind`, inviting dave in at most a `silent` share of the cases.
fn open(kind: KindTag, silent: f64) -> BoxedStrategy<Op> {
    let spec = match kind {
        KindTag::Consulting => Just((Who::Anyone(0), Kind::Consulting)).boxed(),
        KindTag::Conversation => Just((Who::Anyone(0), Kind::Conversation)).boxed(),
        KindTag::Discussion => Just((Who::Anyone(0), Kind::Discussion)).boxed(),
        KindTag::Workflow => graph()
            .prop_map(|(initial, graph)| (initial, Kind::Workflow(graph)))
            .boxed(),
    };
    (targets(kind, silent), spec, ttl(), any::<bool>())
        .prop_map(|((by, targets), (initial, mut kind), ttl, wait)| {
            let invites_silent = by != SILENT && targets.contains(&SILENT);
            let mut open = Open {
                by,
                kind: Kind::Consulting,
                targets,
                ttl,
                wait: wait && !invites_silent,
            };
            if let Kind::Workflow(graph) = &mut kind {
                graph.initial = pick(initial, &participants(&open));
            }
            open.kind = kind;
            Op::Open(open)
        })
        .boxed()
}

/// Which adapter an open strategy draws.
#[derive(Clone, Copy, Debug)]
pub(super) enum KindTag {
    Consulting,
    Conversation,
    Discussion,
    Workflow,
}

fn routing() -> impl Strategy<Value = Routing> {
    prop_oneof![
        3 => Just(Routing::Plain),
        1 => prop::sample::select(REASONS).prop_map(Routing::Finish),
        1 => agent().prop_map(Routing::HandoffId),
        1 => agent().prop_map(Routing::HandoffName),
        1 => Just(Routing::Tool),
    ]
}

/// Event weights: `protocol` raises acks and rejects (the lifecycle mix).
fn event(protocol: u32) -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => prop::sample::select(TEXTS).prop_map(Event::Text),
        2 => routing().prop_map(Event::Packet),
        1 => Just(Event::Note),
        protocol => Just(Event::Ack),
        protocol => Just(Event::Reject),
    ]
}

fn channel_ref() -> impl Strategy<Value = ChannelRef> {
    prop_oneof![
        20 => any::<Index>().prop_map(ChannelRef::Opened),
        1 => Just(ChannelRef::Unknown),
    ]
}

fn send(protocol: u32) -> impl Strategy<Value = Drawn> {
    (
        channel_ref(),
        who(),
        event(protocol),
        prop::option::weighted(0.3, agents(0..=4)),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(channel, by, event, audience, via_hub)| {
            let send = Send {
                channel: None,
                by: 0,
                event,
                audience,
                via_hub,
            };
            Drawn::Send(channel, by, send)
        })
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    prop_oneof![
        1 => Just(RuleSpec::Reset),
        3 => prop::sample::select(&[0i64, 1, 2, 3][..]).prop_map(RuleSpec::MaxPending),
        2 => prop::sample::select(PATTERNS).prop_map(RuleSpec::InboundFrom),
        2 => prop::sample::select(PATTERNS).prop_map(RuleSpec::OutboundTo),
    ]
}

/// Every other op, weighted: `lifecycle` favours closes, clock moves, acks and rejects, and
/// unregistration over sends.
fn other(lifecycle: bool) -> BoxedStrategy<Drawn> {
    let (sends, protocol, closes, clock, unregisters) = if lifecycle {
        (8, 3, 3, 3, 2)
    } else {
        (14, 1, 1, 2, 1)
    };
    let op = |op: Op| Drawn::Op(op);
    prop_oneof![
        sends => send(protocol),
        closes => (channel_ref(), who(), prop::option::of(prop::sample::select(REASONS)))
            .prop_map(|(channel, by, reason)| Drawn::Close(channel, by, reason)),
        clock => prop::sample::select(ADVANCES).prop_map(move |s| op(Op::Advance(s))),
        clock => Just(op(Op::TtlTick)),
        clock => Just(op(Op::ExpectationTick)),
        1 => (agent(), rule()).prop_map(move |(agent, rule)| op(Op::SetRule { agent, rule })),
        unregisters => agent().prop_map(move |agent| op(Op::Unregister(agent))),
    ]
    .boxed()
}

/// Resolves every drawn channel and sender against the opens before it.
fn resolve(drawn: Vec<Drawn>) -> Vec<Op> {
    let mut ops: Vec<Op> = Vec::with_capacity(drawn.len());
    for item in drawn {
        let channel_of = |ops: &[Op], channel: ChannelRef| {
            let ChannelRef::Opened(index) = channel else {
                return None;
            };
            let opens: Vec<usize> = (0..ops.len())
                .filter(|idx| matches!(ops[*idx], Op::Open(_)))
                .collect();
            (!opens.is_empty()).then(|| *index.get(&opens))
        };
        let participants_of = |ops: &[Op], channel: Option<usize>| match channel.map(|c| &ops[c]) {
            Some(Op::Open(open)) => participants(open),
            _ => Vec::new(),
        };
        let op = match item {
            Drawn::Op(op) => op,
            Drawn::Send(channel, who, mut send) => {
                send.channel = channel_of(&ops, channel);
                send.by = pick(who, &participants_of(&ops, send.channel));
                Op::Send(send)
            }
            Drawn::Close(channel, who, reason) => {
                let channel = channel_of(&ops, channel);
                let by = pick(who, &participants_of(&ops, channel));
                Op::Close {
                    channel,
                    by,
                    reason,
                }
            }
        };
        ops.push(op);
    }
    ops
}

/// A sequence for one adapter: an open of that kind first, then 0-24 ops among which more
/// opens of that kind.
pub(super) fn adapter_ops(kind: KindTag) -> impl Strategy<Value = Vec<Op>> {
    let step = prop_oneof![1 => open(kind, 0.25).prop_map(Drawn::Op), 6 => other(false)];
    (open(kind, 0.25), prop::collection::vec(step, 0..25)).prop_map(|(first, mut rest)| {
        rest.insert(0, Drawn::Op(first));
        resolve(rest)
    })
}

/// A lifecycle sequence: 1-25 ops with opens of every adapter, the first one an open; half
/// the opens invite dave, whose acks and rejects only steps send.
pub(super) fn lifecycle_ops() -> impl Strategy<Value = Vec<Op>> {
    let open_any = || {
        prop_oneof![
            open(KindTag::Consulting, 0.5),
            open(KindTag::Conversation, 0.5),
            open(KindTag::Discussion, 0.5),
            open(KindTag::Workflow, 0.5),
        ]
        .prop_map(Drawn::Op)
    };
    let step = prop_oneof![1 => open_any(), 3 => other(true)];
    (open_any(), prop::collection::vec(step, 0..25)).prop_map(|(first, mut rest)| {
        rest.insert(0, first);
        resolve(rest)
    })
}
