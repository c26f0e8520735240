"""A consulting exchange between two ag2 remote agents, each on its own `HubClient(WsLink(url))`:
alice asks, bob's default handler answers with his scripted model, the channel auto-closes.
Checked from both clients, then read back through the client API (channel metadata, WAL)."""

from __future__ import annotations

import re

from ag2.network import (
    EV_CHANNEL_CLOSED,
    EV_CHANNEL_INVITE,
    EV_CHANNEL_INVITE_ACK,
    EV_CHANNEL_OPENED,
    EV_TEXT,
    ChannelState,
    Passport,
    Resume,
)

from support import RPC_TIMEOUT_S, against, scripted_agent

QUESTION = "What is 12 times 11? Reply with just the integer."
ANSWER = "132"
AGENT_ID = re.compile(r"^[0-9a-f]{32}$")


class Consulting:
    async def test_ask_reply_auto_close(self) -> None:
        server = self.start_server()
        alice_hub, bob_hub = await self.hub_client(server), await self.hub_client(server)
        alice_agent, alice_model = scripted_agent("alice")
        bob_agent, bob_model = scripted_agent("bob", ANSWER)
        alice = await alice_hub.register(alice_agent, Passport(name="alice"), Resume())
        bob = await bob_hub.register(bob_agent, Passport(name="bob"), Resume())
        self.assertRegex(alice.agent_id, AGENT_ID)
        self.assertRegex(bob.agent_id, AGENT_ID)
        self.assertNotEqual(alice.agent_id, bob.agent_id)
        # Each client finds the other by name over the wire.
        self.assertEqual((await alice_hub.get_agent("bob")).agent_id, bob.agent_id)
        self.assertEqual(await bob_hub._rpc("find_agent_id", {"name": "alice"}), alice.agent_id)

        # open() returns once bob's default handler has acked the invite: the channel is active.
        channel = await alice.open(type="consulting", target=["bob"])
        self.assertEqual(channel.state, ChannelState.ACTIVE)
        self.assertEqual([p.agent_id for p in channel.metadata.participants], [alice.agent_id, bob.agent_id])
        await channel.send(QUESTION)

        reply = await alice.wait_for_channel_event(
            channel_id=channel.channel_id,
            predicate=lambda e: e.event_type == EV_TEXT and e.sender_id == bob.agent_id,
            timeout=RPC_TIMEOUT_S,
        )
        self.assertEqual(reply.event_data["text"], ANSWER)
        closed = await alice.wait_for_channel_event(
            channel_id=channel.channel_id,
            predicate=lambda e: e.event_type == EV_CHANNEL_CLOSED,
            timeout=RPC_TIMEOUT_S,
        )
        self.assertEqual(closed.event_data.get("reason"), "consulting_complete")
        # Bob's client saw the close too, and his model ran exactly once; alice's never.
        await bob.wait_for_channel_event(
            channel_id=channel.channel_id,
            predicate=lambda e: e.event_type == EV_CHANNEL_CLOSED,
            timeout=RPC_TIMEOUT_S,
        )
        self.assertEqual(bob_model.asked, 1)
        self.assertEqual(alice_model.asked, 0)

        # The channel and its WAL, read back through either client.
        info = await channel.info()
        self.assertEqual(info.state, ChannelState.CLOSED)
        self.assertEqual(info.close_reason, "consulting_complete")
        self.assertIsNotNone(info.closed_at)
        self.assertEqual((await bob_hub.get_channel(channel.channel_id)).state, ChannelState.CLOSED)
        wal = await alice_hub.read_wal(channel.channel_id)
        self.assertEqual(
            [(e.event_type, e.sender_id) for e in wal],
            [
                (EV_CHANNEL_INVITE, alice.agent_id),
                (EV_CHANNEL_INVITE_ACK, bob.agent_id),
                (EV_CHANNEL_OPENED, alice.agent_id),
                (EV_TEXT, alice.agent_id),
                (EV_TEXT, bob.agent_id),
                (EV_CHANNEL_CLOSED, alice.agent_id),
            ],
        )
        self.assertEqual([e.to_dict() for e in await bob_hub.read_wal(channel.channel_id)], [e.to_dict() for e in wal])
        question, answer = wal[3], wal[4]
        self.assertEqual(question.event_data["text"], QUESTION)
        self.assertEqual(answer.event_data["text"], ANSWER)
        self.assertEqual(answer.causation_id, question.envelope_id)
        self.assertEqual(reply.envelope_id, answer.envelope_id)
        self.assertEqual(closed.envelope_id, wal[5].envelope_id)
        # Envelope ids sort in WAL order, every envelope is stamped, and a partial read works.
        self.assertEqual(sorted(e.envelope_id for e in wal), [e.envelope_id for e in wal])
        self.assertTrue(all(e.created_at for e in wal))
        self.assertEqual([e.envelope_id for e in await alice_hub.read_wal(channel.channel_id, since=3, until=5)],
                         [question.envelope_id, answer.envelope_id])

        # A closed consulting channel takes no more posts.
        with self.assertRaisesRegex(Exception, "is closed"):
            await channel.send("one more")


globals().update(against(Consulting, "hubsim", "ag2"))
