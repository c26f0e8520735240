"""Raw frames answered as ag2 answers them: the same messages sent to `hubsim serve` and to ag2's
own `serve_ws` over bare `websockets` connections get the same replies, byte for byte once ids
and timestamps are numbered in order of appearance. Covers the app-level ping, undecodable and
malformed messages, hellos (unknown, malformed, refused, welcomed), requests open to anyone and
those that need a binding, unknown ops, errors of each code, and register's passport.

After each message the probe sends a `find_agent_id` request of its own and reads up to its
response: both hubs handle a connection's frames one at a time, so every reply a message causes
comes before it."""

from __future__ import annotations

import asyncio
import json
import re

from websockets.asyncio.client import connect

from support import RPC_TIMEOUT_S, Server, ServerCase, bounded

HEX_ID = re.compile(r"[0-9a-f]{32}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")
PING = '{"kind": "ping"}'
PONG = '{"kind": "pong"}'
SYNC = '"request_id": "sync-'


def request(request_id: str, op: str, params: object) -> str:
    return json.dumps({"request_id": request_id, "op": op, "params": params, "kind": "request"})


def register(request_id: str, name: str) -> str:
    return request(request_id, "register", {"passport": {"name": name}, "resume": {}, "skill_md": None, "rule": None})


def get_agent(value: str) -> str:
    return '{"kind": "request", "request_id": "r", "op": "get_agent", "params": {"name_or_id": %s}}' % value


# Each probe runs on a fresh connection of one hub, in order, so later probes see earlier ones'
# registrations.
PROBES: dict[str, list[str]] = {
    "app_ping_pong": [PING, PONG, '{"kind": "ping", "extra": 1}'],
    "undecodable": ["not json", "[1, 2]", '"text"', "{}", '{"kind": "nope"}', '{"kind": "ping", "kind": "pong"}',
                    '\ufeff{"kind": "ping"}'],
    "client_sends_hub_frames": ['{"kind": "welcome", "endpoint_id": "e", "hub_time": "t"}',
                                '{"kind": "error", "code": "x", "message": "y"}',
                                '{"kind": "receipt", "envelope_id": "e", "status": "ack"}'],
    "hello_malformed": ['{"kind": "hello", "name": 5}', '{"kind": "hello", "name": "x", "auth_scheme": 5}',
                        '{"kind": "hello", "name": "x", "since_envelope_id": 5}', '{"kind": "hello"}'],
    "hello_unknown_name": ['{"kind": "hello", "name": "nobody"}'],
    "request_malformed": ['{"kind": "request", "request_id": 5, "op": "x", "params": {}}',
                          '{"kind": "request", "request_id": "r", "op": 5, "params": {}}',
                          '{"kind": "request", "request_id": "r", "op": "x", "params": []}',
                          '{"kind": "request", "request_id": "r", "op": "x"}',
                          request("r", "frobnicate", {})],
    "open_to_anyone": [get_agent('"nobody"'), get_agent("null"), get_agent("1.5"), get_agent("[1, 2]"),
                       get_agent('"\\ud83d\\ude00"'), request("r2", "get_agent", {}),
                       request("r3", "get_rule", {"agent_id": "nobody"}),
                       request("r4", "get_resume", {"agent_id": "nobody"}),
                       request("r5", "find_agent_id", {"name": "nobody"}),
                       request("r6", "names_for", {"agent_ids": ["f" * 32]}),
                       request("r7", "list_agents", {}), request("r8", "list_tasks", {}),
                       request("r9", "get_task", {"task_id": "bad id!"})],
    "needs_a_binding": [request("r1", "read_wal", {"channel_id": "c" * 32}),
                        request("r2", "post_envelope", {"envelope": {
                            "channel_id": "c", "sender_id": "s", "audience": None, "event_type": "ag2.msg.text",
                            "event_data": {}}}),
                        request("r3", "list_channels", {}),
                        request("r4", "unregister", {"agent_id": "f" * 32})],
    "register_refused": [request("r1", "register", {"passport": {"name": "0" * 32}, "resume": {}}),
                         request("r2", "register", {"passport": {}, "resume": {}}),
                         request("r3", "register", {"passport": {"name": "h", "kind": "human"}, "resume": {}}),
                         request("r4", "register", {})],
    "register_and_read_back": [register("r1", "bob"), register("r2", "bob"),
                               request("r3", "get_agent", {"name_or_id": "bob"}),
                               request("r4", "find_agent_id", {"name": "bob"}), request("r5", "list_agents", {}),
                               request("r6", "read_wal", {"channel_id": "c" * 32}),
                               request("r7", "list_channels", {}),
                               request("r8", "create_channel", {"creator_id": "f" * 32, "manifest_type": "consulting",
                                                                "participants": []}),
                               request("r9", "checkpoint_task", {"task_id": "t1", "state": {"a": 1}}),
                               request("r10", "read_task_checkpoint", {"task_id": "t1"})],
    "hello_as_registered": ['{"kind": "hello", "name": "bob", "auth_claim": [1]}',
                            '{"kind": "hello", "name": "bob", "auth_scheme": "api_key"}',
                            '{"kind": "hello", "name": "bob"}',
                            '{"kind": "hello", "name": "bob", "since_envelope_id": null}'],
    "binary_messages": [b'{"kind": "ping"}', register("r1", "carol").encode()],
}


async def transcript(url: str, messages: list[str | bytes]) -> list[str]:
    """What the hub sends back for each message, ids and times numbered in order."""
    names: dict[str, str] = {}

    def number(text: str) -> str:
        text = HEX_ID.sub(lambda match: names.setdefault(match.group(0), f"<id{len(names)}>"), text)
        return TIMESTAMP.sub("<time>", text)

    lines = []
    async with connect(url, ping_interval=None) as ws:
        for position, message in enumerate(messages):
            lines.append(">> " + number(message if isinstance(message, str) else message.decode()))
            await ws.send(message)
            await ws.send(request(f"sync-{position}", "find_agent_id", {"name": "sync"}))
            while SYNC + f'{position}"' not in (reply := await asyncio.wait_for(ws.recv(), RPC_TIMEOUT_S)):
                lines.append("<< " + number(reply))
    return lines


class WireAnswers(ServerCase):
    maxDiff = None

    @bounded
    async def test_raw_frames_get_ag2s_answers(self) -> None:
        seen: dict[str, dict[str, list[str]]] = {}
        for kind in ("ag2", "hubsim"):
            server = Server(kind).start()
            self.addAsyncCleanup(asyncio.to_thread, server.stop)
            self.servers.append(server)
            for probe, messages in PROBES.items():
                seen.setdefault(probe, {})[kind] = await transcript(server.url, messages)
            await asyncio.to_thread(server.stop)
        for probe, by_kind in seen.items():
            with self.subTest(probe=probe):
                self.assertEqual("\n".join(by_kind["hubsim"]), "\n".join(by_kind["ag2"]))
        # The probes are answered at all: a hub that never replied would pass the comparison.
        self.assertIn("<< " + PONG, seen["app_ping_pong"]["ag2"])
        self.assertTrue(any('"ok": true' in line for line in seen["register_and_read_back"]["ag2"]))
