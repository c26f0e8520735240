"""Keepalive and dead peers. A peer that stops answering WebSocket pings is closed with 1011 once
a ping goes unanswered for `--ping-timeout`, and its agent is unbound, while ag2 clients on the
same hub keep being served; a client whose process is killed is unbound at once.

Whether an agent is still bound is read over the wire through ag2's inbox cap: the hub counts a
substantive notify against the recipient's `max_pending` only when it dispatches it to a bound
connection, so with `max_pending: 1` a second post to a bound agent is refused with `InboxFull`
(a bare `NetworkError` over the wire) and to an unbound one is accepted."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

from ag2.network import EV_TEXT, Envelope, NetworkError, Passport, Resume, Rule
from ag2.network.transport.frames import RequestFrame, ResponseFrame, decode_frame, encode_frame
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import OP_PONG

from support import RPC_TIMEOUT_S, against, scripted_agent

PING_S = 0.5
# After this long with the connection closed, the hub has dropped its endpoint (it does so as it
# closes the socket: this only covers a busy machine).
SETTLE_S = 0.5
CHILD_START_TIMEOUT_S = 20.0
ONE_PENDING = {"limits": {"inbox": {"max_pending": 1}}}

# A remote agent in a child process: registers `dora` (one pending notify at most), opens a
# conversation with alice, prints the channel id, and waits to be killed.
CHILD = """
import asyncio, sys
from ag2 import Agent
from ag2.network import HubClient, Passport, Resume, Rule, WsLink
from ag2.testing import TestConfig

async def main():
    hub = HubClient(WsLink(sys.argv[1]), rpc_timeout=10)
    dora = await hub.register(Agent("dora", config=TestConfig("")), Passport(name="dora"), Resume(),
                              rule=Rule.from_dict({"limits": {"inbox": {"max_pending": 1}}}))
    channel = await dora.open(type="conversation", target=["alice"])
    print(channel.channel_id, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class RawAgent:
    """An agent on a bare `websockets` connection (no keepalive of its own), speaking ag2's
    frames; `stop_answering_pings` makes it drop its automatic pongs from then on."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.agent_id = ""
        self.requests = 0

    @classmethod
    async def connect(cls, url: str) -> "RawAgent":
        return cls(await connect(url, ping_interval=None))

    async def call(self, op: str, params: dict) -> object:
        """One RPC; notifies that arrive before its response are skipped."""
        self.requests += 1
        request_id = f"raw-{self.requests}"
        await self.ws.send(json.dumps(encode_frame(RequestFrame(request_id=request_id, op=op, params=params))))
        while True:
            frame = decode_frame(json.loads(await asyncio.wait_for(self.ws.recv(), RPC_TIMEOUT_S)))
            if isinstance(frame, ResponseFrame) and frame.request_id == request_id:
                if not frame.ok:
                    raise NetworkError(f"{frame.error_code}: {frame.error_message}")
                return frame.result

    def stop_answering_pings(self) -> None:
        protocol = self.ws.protocol
        send_frame = protocol.send_frame

        def send_all_but_pongs(frame) -> None:
            if frame.opcode is not OP_PONG:
                send_frame(frame)

        protocol.send_frame = send_all_but_pongs  # type: ignore[method-assign]


def text(channel_id: str, sender_id: str, words: str) -> Envelope:
    return Envelope(channel_id=channel_id, sender_id=sender_id, audience=None, event_type=EV_TEXT,
                    event_data={"text": words})


class Keepalive:
    async def posts_refused(self, hub, channel_id: str, sender_id: str) -> list[str]:
        """Posts two texts; the refusals' messages (one when the other participant, whose cap is
        one, is bound; none when it is not)."""
        refusals = []
        for number in (1, 2):
            try:
                await hub.post_envelope(text(channel_id, sender_id, f"probe {number}"))
            except NetworkError as error:
                self.assertIs(type(error), NetworkError)
                refusals.append(str(error))
        return refusals

    async def test_silent_peer_closed_with_1011(self) -> None:
        server = self.start_server(ping_interval_s=PING_S, ping_timeout_s=PING_S)
        alice_hub = await self.hub_client(server)
        alice = await alice_hub.register(scripted_agent("alice")[0], Passport(name="alice"), Resume())

        mute = await RawAgent.connect(server.url)
        self.addAsyncCleanup(mute.ws.close)
        registered = await mute.call("register", {
            "passport": Passport(name="mute").to_dict(), "resume": Resume().to_dict(), "skill_md": None,
            "rule": Rule.from_dict(ONE_PENDING).to_dict(),
        })
        mute.agent_id = registered["agent_id"]
        # alice's default handler acks the invite, so the open returns an active channel.
        channel = await mute.call("create_channel", {
            "creator_id": mute.agent_id, "manifest_type": "conversation", "participants": [alice.agent_id],
        })
        channel_id = channel["channel_id"]
        self.assertEqual(channel["state"], "active")

        # While it answers pings it stays bound, through several keepalive rounds: the cap holds.
        await asyncio.sleep(3 * PING_S)
        self.assertEqual(await self.posts_refused(alice_hub, channel_id, alice.agent_id),
                         [f"recipient {mute.agent_id!r} inbox at capacity (1 >= 1)"])
        # Its own post takes its pending count back to 0.
        await mute.call("post_envelope", {"envelope": text(channel_id, mute.agent_id, "read").to_dict()})

        mute.stop_answering_pings()
        silent_since = time.monotonic()
        await asyncio.wait_for(mute.ws.wait_closed(), 10 * PING_S)
        silent_s = time.monotonic() - silent_since
        self.assertEqual((mute.ws.close_code, mute.ws.close_reason), (1011, "keepalive ping timeout"))
        # The first unanswered ping comes within one interval, the close one timeout after it.
        self.assertGreaterEqual(silent_s, PING_S * 0.9)
        self.assertLess(silent_s, 2 * PING_S + 1.5)

        await asyncio.sleep(SETTLE_S)
        self.assertEqual(await self.posts_refused(alice_hub, channel_id, alice.agent_id), [])
        # alice, answering pings as ag2's client does, is still served; the WAL has every post
        # but the refused one.
        wal = await alice_hub.read_wal(channel_id)
        self.assertEqual([e.event_data.get("text") for e in wal if e.event_type == EV_TEXT],
                         ["probe 1", "read", "probe 1", "probe 2"])

    async def test_killed_client_is_unbound(self) -> None:
        server = self.start_server()
        alice_hub = await self.hub_client(server)
        alice = await alice_hub.register(scripted_agent("alice")[0], Passport(name="alice"), Resume())
        child = subprocess.Popen([sys.executable, "-c", CHILD, server.url], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, text=True)
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        self.addCleanup(child.stdout.close)
        # The child imports ag2 first: a few seconds on a loaded machine.
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), CHILD_START_TIMEOUT_S)
        channel_id = line.strip()
        self.assertRegex(channel_id, r"^[0-9a-f]{32}$")
        dora_id = await alice_hub._rpc("find_agent_id", {"name": "dora"})

        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(asyncio.to_thread(child.wait), RPC_TIMEOUT_S)
        await asyncio.sleep(SETTLE_S)
        # dora's cap would refuse the second post if she were still bound.
        self.assertEqual(await self.posts_refused(alice_hub, channel_id, alice.agent_id), [])
        metadata = await alice_hub.get_channel(channel_id)
        self.assertEqual([p.agent_id for p in metadata.participants], [dora_id, alice.agent_id])


globals().update(against(Keepalive, "hubsim", "ag2"))
