#!/usr/bin/env python3
"""Run reference-format scenarios against ag2's Python hub and print normalised traces.

The traces in ``tests/reference/`` are what this program prints for the scenario of the same
name in ``sims/``, run against ``ag2==1.2.1`` (``ag2.network.Hub``, in process, agents
registered without the network plugin). The Rust hub must reproduce them byte for byte.

    python tests/reference_runner.py sims/NAME.yaml    # print the trace of one scenario
    python tests/reference_runner.py --check           # every reference trace regenerates?
    python tests/reference_runner.py --update          # rewrite tests/reference/
    python tests/reference_runner.py --bench 100 sims/NAME.yaml

``--check`` and ``--update`` without scenario arguments take every ``sims/NAME.yaml`` that has a
``tests/reference/NAME.json``. The scenario format is described in ``sims/README.md``; keys the
runner does not know (hubsim's ``network:``, ``seeds``, ``invariants``, ...) are ignored.

How a run is made reproducible:

* the hub's clock is a frozen ISO clock that moves only on ``advance`` steps;
* every id the hub, its transport and its clients mint comes from one counter (32 hex digits,
  so ids still sort in mint order, which delivery cursors rely on);
* each agent's model is a scripted ``TestConfig``: one scripted entry per ``Agent.ask``;
* both sweepers are off (steps tick them), tools are async (a sync tool would run in a worker
  thread), and after every step the event loop is drained until nothing is runnable;
* the program re-executes itself with ``PYTHONHASHSEED=0``.
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import contextlib
import difflib
import json
import logging
import os
import re
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import ag2.network.client.hub_client
import ag2.network.hub.core
import ag2.network.ids
import ag2.network.transport.local
import yaml
from ag2 import Agent
from ag2.events import ToolCallEvent
from ag2.knowledge import MemoryKnowledgeStore
from ag2.network import EV_CHANNEL_INVITE, EV_TEXT, Envelope, Finish, Handoff, Hub, Rule, parse_duration
from ag2.network.client.channel import Channel
from ag2.network.client.handlers import _auto_ack_invite
from ag2.testing import TestConfig
from ag2.tools import tool

ROOT = Path(__file__).resolve().parent.parent
SIMS = ROOT / "sims"
REFERENCE = ROOT / "tests" / "reference"

DEFAULT_EPOCH = "2026-01-01T00:00:00+00:00"
# The channel id of steps with `unknown_channel: true`: one the id counter never reaches.
GHOST_CHANNEL = "f" * 32
# How long the drain after a step waits for a notify handler that is blocked on a timer.
DRAIN_LIMIT_S = 10.0


class StepTimeout(Exception):
    """A step (or the drain after it) outlived its real-time budget."""


# ── Scenario input ───────────────────────────────────────────────────────────────────────────


def load(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    scenario = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    scenario.setdefault("name", path.stem)
    return scenario


def to_seconds(value: Any) -> float | int:
    return parse_duration(value) if isinstance(value, str) else value


def exception_from(spec: Any) -> BaseException:
    """`{type: RuntimeError, message: ...}` or `"RuntimeError: ..."` -> a builtin exception."""
    if isinstance(spec, str):
        kind, _, message = spec.partition(":")
        spec = {"type": kind.strip(), "message": message.strip()}
    kind = getattr(builtins, spec.get("type", "RuntimeError"), None)
    if not (isinstance(kind, type) and issubclass(kind, BaseException)):
        raise ValueError(f"not a builtin exception type: {spec!r}")
    return kind(spec.get("message", ""))


def model_turn(agent: str, number: int, spec: Any) -> list[Any]:
    """One `replies` entry -> the events of one scripted model turn."""
    events: list[Any] = []
    for position, item in enumerate(spec if isinstance(spec, list) else [spec]):
        if isinstance(item, str):
            events.append(item)
        elif isinstance(item, dict) and "raise" in item:
            events.append(exception_from(item["raise"]))
        elif isinstance(item, dict) and "tool_call" in item:
            call = item["tool_call"]
            arguments = json.dumps(call.get("arguments", {}), sort_keys=True)
            events.append(ToolCallEvent(call["name"], arguments=arguments, id=f"{agent}.{number}.{position}"))
        else:
            raise ValueError(f"agent {agent}, reply {number}: cannot script {item!r}")
    if events and isinstance(events[-1], ToolCallEvent):
        events.append("")  # the model's answer once the tool has run: a silent one
    return events


def scenario_tool(spec: Any):
    """A named async tool: returns a string, a `Handoff` or a `Finish`."""
    spec = {"name": spec} if isinstance(spec, str) else spec
    if "handoff" in spec:
        target = spec["handoff"]

        async def body(reason: str = "") -> Handoff:
            return Handoff(target=target, reason=reason)

    elif "finish" in spec:
        ending = spec["finish"] or {}

        async def body(summary: str = "") -> Finish:  # type: ignore[misc]
            summary = summary or ending.get("summary", "")
            return Finish(summary=summary, reason=ending.get("reason", "finished"))

    else:
        answer = spec.get("returns", "ok")

        async def body(reason: str = "") -> str:  # type: ignore[misc]
            return answer

    return tool(body, name=spec["name"], description=spec.get("description", spec["name"]))


def with_agent_ids(value: Any, ids: dict[str, str]) -> Any:
    """Replaces every `{$id: NAME}` with NAME's agent id."""
    if isinstance(value, dict):
        if list(value) == ["$id"]:
            return ids[value["$id"]]
        return {key: with_agent_ids(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [with_agent_ids(item, ids) for item in value]
    return value


def error_matches(expected: Any, error: dict | None) -> bool:
    """A step without `expect_error` must succeed; with it, the error must have that type/message
    (or, with `any_of`, match one alternative; a `null` alternative is success)."""
    if expected is None:
        return error is None
    if isinstance(expected, dict) and "any_of" in expected:
        return any(error_matches(alternative, error) for alternative in expected["any_of"])
    if isinstance(expected, str):
        expected = {"type": expected}
    return (
        error is not None
        and (not expected.get("type") or expected["type"] == error["type"])
        and (not expected.get("match") or re.search(expected["match"], error["message"]) is not None)
    )


class Script(TestConfig):
    """An agent's model. ag2 calls `create()` once per `Agent.ask`, and a plain `TestConfig`
    would replay its first turn every time: this one takes the next scripted turn, and answers
    silently ("") once the script has run out. `asked` counts the model turns."""

    __test__ = False

    def __init__(self, turns: list[list[Any]]) -> None:
        super().__init__()
        self.turns = turns
        self.asked = 0

    def create(self):  # type: ignore[override]
        turn = self.turns[self.asked] if self.asked < len(self.turns) else [""]
        self.asked += 1
        return TestConfig(*turn).create()


# ── Determinism ──────────────────────────────────────────────────────────────────────────────


class FrozenClock:
    """The hub clock: `datetime.isoformat()` strings, moved only by `advance` steps."""

    def __init__(self, epoch: Any) -> None:
        start = epoch if isinstance(epoch, datetime) else datetime.fromisoformat(str(epoch))
        self.epoch = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
        self.now = self.epoch

    def __call__(self) -> str:
        return self.now.isoformat()

    def advance(self, seconds: float | int) -> None:
        self.now = self.now + timedelta(seconds=seconds)  # raises before moving on overflow


@contextlib.contextmanager
def counted_ids():
    """While active, every `make_id` binding in ag2 (the modules that mint ids import it by name,
    imported above) and the hub's envelope-id factory (`_MonotonicIds`) draw from one counter
    starting at 1."""
    minted = 0

    def next_id() -> str:
        nonlocal minted
        minted += 1
        return format(minted, "032x")

    ids = ag2.network.ids
    replacements = {ids.make_id: next_id, ids._MonotonicIds: lambda: next_id}
    undo = []
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("ag2."):
            continue
        for attribute in ("make_id", "_MonotonicIds"):
            current = module.__dict__.get(attribute)
            if current is not None and current in replacements:
                undo.append((module, attribute, current))
                setattr(module, attribute, replacements[current])
    try:
        yield
    finally:
        for module, attribute, original in undo:
            setattr(module, attribute, original)


# ── Running a scenario ───────────────────────────────────────────────────────────────────────


class Session:
    """One scenario against one hub: its agents, channel labels and step records."""

    def __init__(self, scenario: dict, hub: Any, clock: FrozenClock) -> None:
        self.scenario = scenario
        self.hub = hub
        self.clock = clock
        self.clients: dict[str, Any] = {}  # name -> AgentClient
        self.scripts: dict[str, Any] = {}  # name -> the agent's scripted model config
        self.labels: dict[str, str] = {}  # channel id -> label, in creation order
        self.busy = 0  # notify handlers currently running
        self.background: list[tuple[dict, dict, asyncio.Task]] = []  # (step, record, open task)
        self.records: list[dict] = []
        self.problems: list[tuple[int, dict, dict | None]] = []  # steps with unexpected outcomes

    # Agents

    async def register(self, spec: dict) -> None:
        name = spec["name"]
        script = Script([model_turn(name, n, reply) for n, reply in enumerate(spec.get("replies") or [])])
        agent = Agent(
            name,
            prompt=spec.get("prompt", f"You are {name}."),
            config=script,
            tools=[scenario_tool(t) for t in spec.get("tools") or []],
        )
        rule = Rule.from_dict(spec["rule"]) if spec.get("rule") else None
        client = await self.hub.register(agent, rule=rule, attach_plugin=False)
        self.clients[name] = client
        self.scripts[name] = script
        client.on_envelope(self.handler(client, spec.get("handler", "default")))

    def handler(self, client: Any, kind: str):
        if kind == "silent":

            async def ignore(envelope: Any) -> None:
                return None

            return ignore
        if kind == "default":
            react = client._run_default_handler  # ag2's default notify handler
        elif kind == "ack_only":

            async def react(envelope: Any) -> None:
                if envelope.event_type == EV_CHANNEL_INVITE:
                    await _auto_ack_invite(envelope, client)

        else:
            raise ValueError(f"unknown handler {kind!r}")

        async def tracked(envelope: Any) -> None:
            self.busy += 1
            try:
                await react(envelope)
            finally:
                self.busy -= 1

        return tracked

    def agent_ids(self) -> dict[str, str]:
        return {name: client.agent_id for name, client in self.clients.items()}

    # Scheduling

    async def drain(self) -> None:
        """Runs the event loop until nothing is runnable. Everything is in memory, so an empty
        ready queue means every handler is idle, unless one waits on a real timer: then wait
        for it, up to DRAIN_LIMIT_S. (Reads CPython's private `loop._ready`.)"""
        loop = asyncio.get_running_loop()
        give_up = time.monotonic() + DRAIN_LIMIT_S
        quiet = 0
        while quiet < 3:
            await asyncio.sleep(0)
            if loop._ready:  # type: ignore[attr-defined]
                quiet = 0
            elif self.busy:
                if time.monotonic() > give_up:
                    raise StepTimeout(f"handlers still busy after {DRAIN_LIMIT_S}s")
                await asyncio.sleep(0.001)
            else:
                quiet += 1

    # Channels

    def label_new_channels(self, known: set[str], label: str) -> None:
        for channel_id in self.hub._channels:
            if channel_id not in known:
                self.labels.setdefault(channel_id, label)

    def channel(self, step: dict) -> str:
        """The first channel labelled `step.channel`, or a never-minted id (`unknown_channel`)."""
        for channel_id, label in self.labels.items():
            if label == step["channel"]:
                return channel_id
        if step.get("unknown_channel"):
            return GHOST_CHANNEL
        raise KeyError(f"no channel is labelled {step['channel']!r}")

    # Steps: each `op_NAME` may fill in `record` and raises on failure.

    async def op_open(self, step: dict, record: dict) -> None:
        client = self.clients[step["by"]]
        label = step.get("as") or f"ch{len(self.labels) + 1}"
        known = set(self.hub._channels)
        opening = client.open(
            type=step["type"],
            target=step["target"],
            ttl=step.get("ttl"),
            knobs=with_agent_ids(step.get("knobs"), self.agent_ids()),
            intent=step.get("intent"),
            labels=step.get("labels"),
        )
        if step.get("wait", True) is False:
            task = asyncio.create_task(opening)
            await self.drain()
            self.label_new_channels(known, label)
            record.update(result=label, background=True)
            self.background.append((step, record, task))
            return
        try:
            await opening
        finally:
            self.label_new_channels(known, label)  # also when the open fails or is cancelled
        record["result"] = label

    async def op_send(self, step: dict, record: dict) -> None:
        client = self.clients[step["by"]]
        channel_id = self.channel(step)
        audience = step.get("audience")
        if audience is not None:
            audience = [self.clients[name].agent_id for name in audience]
        data = with_agent_ids(step.get("event_data"), self.agent_ids())
        event_type = step.get("event_type", EV_TEXT)
        if step.get("via", "client") == "hub":
            envelope = Envelope(
                channel_id=channel_id,
                sender_id=client.agent_id,
                audience=audience,
                event_type=event_type,
                event_data={"text": step.get("text", "")} if data is None else data,
                depth=step.get("depth") or 0,
            )
            record["result"] = await self.hub.post_envelope(envelope)
        else:
            handle = Channel(metadata=await self.hub.get_channel(channel_id), client=client)
            record["result"] = await handle.send(
                step.get("text", ""),
                audience=audience,
                event_type=event_type,
                event_data=data,
                depth=step.get("depth"),
            )

    async def op_close(self, step: dict, record: dict) -> None:
        client = self.clients[step["by"]]
        channel_id = self.channel(step)
        reason = step.get("reason", "")
        if step.get("via", "client") == "hub":
            await self.hub.close_channel(channel_id, reason=reason)
        else:
            handle = Channel(metadata=await self.hub.get_channel(channel_id), client=client)
            await handle.close(reason)

    async def op_advance(self, step: dict, record: dict) -> None:
        self.clock.advance(to_seconds(step["seconds"]))
        record["now"] = self.clock()

    async def op_ttl_tick(self, step: dict, record: dict) -> None:
        await self.hub.expire_due()  # what the TTL sweeper runs

    op_expire_due = op_ttl_tick

    async def op_expectation_tick(self, step: dict, record: dict) -> None:
        await self.hub._expectation_tick()  # what the expectation sweeper runs

    async def op_set_rule(self, step: dict, record: dict) -> None:
        await self.clients[step["agent"]].set_rule(Rule.from_dict(step["rule"]))

    async def op_unregister(self, step: dict, record: dict) -> None:
        await self.clients[step["agent"]].unregister()

    async def op_settle(self, step: dict, record: dict) -> None:
        pass  # every step is followed by a drain anyway

    async def step(self, index: int, step: dict) -> None:
        record: dict[str, Any] = {"i": index, "op": step["op"]}
        for key in ("by", "agent", "channel", "type", "target", "seconds"):
            if key in step:
                record[key] = step[key]
        action = getattr(self, f"op_{step['op']}", None)
        if action is None:
            raise ValueError(f"step {index}: unknown op {step['op']!r}")
        limit = float((self.scenario.get("hub") or {}).get("step_timeout", 10.0))
        error = None
        try:
            await asyncio.wait_for(action(step, record), timeout=limit)
        except TimeoutError:
            error = {"type": "StepTimeout", "message": f"step did not finish in {limit}s"}
        except Exception as failure:  # noqa: BLE001 (errors are part of the trace)
            error = describe(failure)
        try:
            await self.drain()
        except StepTimeout as failure:
            error = error or describe(failure)
        record["error"] = error
        self.records.append(record)
        if not record.get("background") or error is not None:
            self.expect(index, step, error)
        for _, opened, task in self.background:
            if task.done() and "completed_after_step" not in opened:
                opened["completed_after_step"] = index
                opened["error"] = describe(task.exception()) if task.exception() else None

    async def finish_background(self) -> None:
        """Opens still waiting at the end (an invite nobody acks) are cancelled."""
        for step, record, task in self.background:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                record["still_pending_at_end"] = True
                record["error"] = None
            self.expect(record["i"], step, record["error"])

    def expect(self, index: int, step: dict, error: dict | None) -> None:
        if not error_matches(step.get("expect_error"), error):
            self.problems.append((index, step, error))


def describe(failure: BaseException) -> dict:
    return {"type": type(failure).__name__, "message": str(failure)}


async def run(scenario: dict) -> tuple[dict, list[str]]:
    """Runs a scenario; returns its normalised trace and a line for each step whose outcome
    differs from its `expect_error` (the trace is complete either way)."""
    settings = scenario.get("hub") or {}
    clock = FrozenClock(settings.get("epoch", DEFAULT_EPOCH))
    with counted_ids():
        hub = await Hub.open(
            MemoryKnowledgeStore(),
            clock=clock,
            ttl_sweep_interval=0,
            expectation_sweep_interval=0,
            invite_ack_timeout=float(settings.get("invite_ack_timeout", 30.0)),
        )
        try:
            session = Session(scenario, hub, clock)
            for agent in scenario.get("agents") or []:
                await session.register(agent)
            await session.drain()
            for index, step in enumerate(scenario.get("steps") or []):
                await session.step(index, {"op": step} if isinstance(step, str) else step)
            await session.finish_background()
            trace, names = await snapshot(session)
        finally:
            await hub.close()
    problems = [
        f"step {index} ({step['op']}): expected {step.get('expect_error')!r}, got {names.any(error)!r}"
        for index, step, error in session.problems
    ]
    return trace, problems


# ── The trace ────────────────────────────────────────────────────────────────────────────────

HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")


class Names:
    """Replaces what differs between implementations: ids by names and labels, timestamps by
    their offset from the epoch (`<T+Ns>`)."""

    def __init__(self, epoch: datetime, agents: dict[str, str], channels: dict[str, str]) -> None:
        self.epoch = epoch
        self.agents = agents  # agent id -> name
        self.ids = {agent_id: f"<agent:{name}>" for agent_id, name in agents.items()}
        self.ids.update({channel_id: f"<channel:{label}>" for channel_id, label in channels.items()})

    def name_envelopes(self, label: str, wal: list[Any]) -> None:
        for seq, envelope in enumerate(wal):
            if envelope.envelope_id:
                self.ids[envelope.envelope_id] = f"<env:{label}#{seq}>"

    def agent(self, agent_id: str | None) -> str | None:
        return None if agent_id is None else self.agents.get(agent_id) or self.any(agent_id)

    def offset(self, stamp: str) -> str:
        seconds = (datetime.fromisoformat(stamp.replace("Z", "+00:00")) - self.epoch).total_seconds()
        text = str(int(seconds)) if seconds == int(seconds) else f"{seconds:.6f}".rstrip("0")
        return f"<T+{text}s>"

    def any(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {self.any(key): self.any(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.any(item) for item in value]
        if not isinstance(value, str):
            return value
        if HEX_ID.fullmatch(value):
            return self.ids.get(value, "<id:unknown>")
        if TIMESTAMP.fullmatch(value):
            return self.offset(value)
        value = HEX_ID.sub(lambda found: self.ids.get(found.group(), "<id:unknown>"), value)
        return TIMESTAMP.sub(lambda found: self.offset(found.group()), value)


async def snapshot(session: Session) -> tuple[dict, Names]:
    hub = session.hub
    for channel_id in hub._channels:  # channels no step opened (none without network tools)
        if channel_id not in session.labels:
            autos = sum(label.startswith("auto") for label in session.labels.values())
            session.labels[channel_id] = f"auto{autos + 1}"
    agents = {client.agent_id: name for name, client in session.clients.items()}
    names = Names(session.clock.epoch, agents, session.labels)
    wals = {channel_id: await hub.read_wal(channel_id) for channel_id in hub._channels}
    for channel_id, wal in wals.items():
        names.name_envelopes(session.labels[channel_id], wal)
    channels = {}
    for channel_id, metadata in hub._channels.items():
        channels[session.labels[channel_id]] = channel_trace(names, metadata.to_dict(), wals[channel_id])
    audit = [names.any(entry) for entry in await hub.audit_log.read_all()]
    trace = {
        "scenario": session.scenario.get("name"),
        "agents": {
            name: {"model_turns": script.asked, "scripted_turns": len(script.turns)}
            for name, script in session.scripts.items()
        },
        "inbox_pending": {names.agent(agent_id): count for agent_id, count in hub._inbox_pending.items()},
        "steps": [names.any(record) for record in session.records],
        "channels": channels,
        "audit_kinds": [entry.get("kind") for entry in audit],
        "audit": audit,
    }
    return trace, names


def channel_trace(names: Names, metadata: dict, wal: list[Any]) -> dict:
    manifest = metadata["manifest"]
    return {
        "type": manifest["type"],
        "manifest_version": manifest["version"],
        "expectations": manifest["expectations"],
        "creator": names.agent(metadata["creator_id"]),
        "participants": [
            {
                "name": names.agent(member["agent_id"]),
                "role": member["role"],
                "order": member["order"],
                "joined_at": names.any(member["joined_at"]),
            }
            for member in metadata["participants"]
        ],
        "state": metadata["state"],
        "close_reason": metadata["close_reason"],
        "created_at": names.any(metadata["created_at"]),
        "expires_at": names.any(metadata["expires_at"]),
        "closed_at": names.any(metadata["closed_at"]),
        "knobs": names.any(metadata["knobs"]),
        "labels": names.any(metadata["labels"]),
        "required_acks": metadata["required_acks"],
        "pending_acks": [names.agent(agent_id) for agent_id in metadata["pending_acks"]],
        "rejected_by": [names.agent(agent_id) for agent_id in metadata["rejected_by"]],
        "wal": [wal_entry(names, seq, envelope) for seq, envelope in enumerate(wal)],
    }


def wal_entry(names: Names, seq: int, envelope: Any) -> dict:
    return {
        "seq": seq,
        "event_type": envelope.event_type,
        "sender": names.agent(envelope.sender_id),
        "audience": None if envelope.audience is None else [names.agent(a) for a in envelope.audience],
        "event_data": names.any(envelope.event_data),
        "causation_id": names.any(envelope.causation_id),
        "created_at": names.any(envelope.created_at),
        "task_id": envelope.task_id,
        "trace_id": envelope.trace_id,
        "priority": envelope.priority,
        "depth": envelope.depth,
        "idempotency_key": envelope.idempotency_key,
        "ttl_seconds": envelope.ttl_seconds,
    }


def render(trace: dict) -> str:
    return json.dumps(trace, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def trace_text(scenario: dict) -> tuple[str, list[str]]:
    trace, problems = asyncio.run(run(scenario))
    return render(trace), problems


# ── Command line ─────────────────────────────────────────────────────────────────────────────


def reference_scenarios() -> list[Path]:
    return [SIMS / f"{path.stem}.yaml" for path in sorted(REFERENCE.glob("*.json"))]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "scenarios", nargs="*", type=Path, help="scenario files (with --check/--update, default: all reference ones)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare each trace with tests/reference/NAME.json")
    mode.add_argument("--update", action="store_true", help="write each trace to tests/reference/NAME.json")
    mode.add_argument("--bench", type=int, metavar="N", help="run each scenario N times; print scenarios per second")
    parser.add_argument("--verbose", action="store_true", help="show ag2's log output (e.g. turn failure tracebacks)")
    args = parser.parse_args(argv)
    if not args.verbose:
        logging.getLogger("ag2").setLevel(logging.CRITICAL + 1)
    paths = args.scenarios or (reference_scenarios() if args.check or args.update else [])
    if not paths:
        parser.error("no scenario given")

    status = 0
    differing = []
    for path in paths:
        scenario = load(path)
        if args.bench:
            start = time.perf_counter()
            for _ in range(args.bench):
                trace_text(scenario)
            seconds = time.perf_counter() - start
            rate = args.bench / seconds
            print(f"{path.stem}: {rate:.1f} scenarios/s ({1000 * seconds / args.bench:.2f} ms/run)")
            continue
        text, problems = trace_text(scenario)
        for problem in problems:
            print(f"{path.stem}: unexpected outcome at {problem}", file=sys.stderr)
            status = 1
        reference = REFERENCE / f"{path.stem}.json"
        if args.update:
            reference.write_text(text, encoding="utf-8")
            print(f"wrote {reference.relative_to(ROOT)}")
        elif args.check:
            expected = reference.read_text(encoding="utf-8") if reference.exists() else ""
            if expected != text:
                differing.append(path.stem)
                diff = difflib.unified_diff(
                    expected.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"tests/reference/{path.stem}.json",
                    f"{path} (ag2)",
                )
                sys.stdout.writelines(list(diff)[:60])
        else:
            sys.stdout.buffer.write(text.encode("utf-8"))
            sys.stdout.flush()
    if args.check:
        print(f"{len(paths) - len(differing)} of {len(paths)} reference traces regenerate byte for byte")
        if differing:
            print("differ: " + " ".join(differing))
            status = 1
    return status


if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") != "0":  # fixes the iteration order of string sets
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    sys.exit(main(sys.argv[1:]))
