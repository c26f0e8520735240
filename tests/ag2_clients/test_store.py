"""`hubsim serve --store DIR` with ag2's own clients: a conversation, a clean stop (SIGTERM),
a new hub on the same store, and the conversation going on: both agents re-attach under their
ids, the channel is still active, and its WAL continues where it stopped."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ag2.network import EV_TEXT, ChannelState, Envelope, Passport, Resume

from support import RPC_TIMEOUT_S, against, scripted_agent


class Store:
    async def test_restart_from_the_store_and_go_on(self) -> None:
        store = Path(tempfile.mkdtemp(prefix="hubsim-store-")) / "hub"
        flags = ("--store", str(store), "--sync", "always")

        # First life: bob answers alice once.
        server = self.start_server(extra_args=flags)
        alice_hub, bob_hub = await self.hub_client(server), await self.hub_client(server)
        alice_agent, _ = scripted_agent("alice")
        bob_agent, bob_model = scripted_agent("bob", "first answer", "second answer")
        alice = await alice_hub.register(alice_agent, Passport(name="alice"), Resume())
        bob = await bob_hub.register(bob_agent, Passport(name="bob"), Resume())
        channel = await alice.open(type="conversation", target=["bob"])
        await channel.send("first question")
        await alice.wait_for_channel_event(
            channel_id=channel.channel_id,
            predicate=lambda e: e.event_type == EV_TEXT and e.sender_id == bob.agent_id,
            timeout=RPC_TIMEOUT_S,
        )
        before = await alice_hub.read_wal(channel.channel_id)
        await alice_hub.close()
        await bob_hub.close()
        server.stop()

        # Second life, on the same store.
        server = self.start_server(extra_args=flags)
        alice_hub, bob_hub = await self.hub_client(server), await self.hub_client(server)
        alice = await alice_hub.attach(alice_agent, "alice", passport=Passport(name="alice"))
        bob_again = await bob_hub.attach(bob_agent, "bob", passport=Passport(name="bob"))
        self.assertEqual(bob_again.agent_id, bob.agent_id)
        info = await alice_hub.get_channel(channel.channel_id)
        self.assertEqual(info.state, ChannelState.ACTIVE)
        self.assertEqual([e.to_dict() for e in await alice_hub.read_wal(channel.channel_id)],
                         [e.to_dict() for e in before])

        posted = await alice.send_envelope(
            Envelope(
                channel_id=channel.channel_id,
                sender_id=alice.agent_id,
                audience=None,
                event_type=EV_TEXT,
                event_data={"text": "second question"},
            )
        )
        reply = await alice.wait_for_channel_event(
            channel_id=channel.channel_id,
            predicate=lambda e: e.event_type == EV_TEXT and e.sender_id == bob.agent_id,
            timeout=RPC_TIMEOUT_S,
        )
        self.assertEqual(reply.event_data["text"], "second answer")
        self.assertEqual(bob_model.asked, 2)
        after = await alice_hub.read_wal(channel.channel_id)
        self.assertEqual([e.to_dict() for e in after[: len(before)]], [e.to_dict() for e in before])
        self.assertEqual([e.envelope_id for e in after[len(before):]], [posted, reply.envelope_id])
        # New ids come after every id of the first life.
        self.assertGreater(posted, max(e.envelope_id for e in before))


globals().update(against(Store, "hubsim"))
