"""`hubsim serve --faults FILE --record DIR` with ag2's own clients: a disconnect the fault file
injects cuts bob's connection; alice posts while he is away; bob's client re-attaches
(`HubClient.attach`, a hello that replays past the hub's cursor), his default handler answers
the message he missed, and the recording shows the fault, the re-attach and no violation."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from ag2.network import EV_TEXT, HubClient, Passport, Resume, WsLink

from support import RPC_TIMEOUT_S, against, scripted_agent

# When the fault file cuts bob (seconds after the hub starts): setting the scene takes well
# under a second, with room for a loaded machine.
DISCONNECT_AT_S = 4.0


class Faults:
    async def test_disconnect_then_reattach_with_replay(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="hubsim-faults-"))
        faults = folder / "faults.yaml"
        faults.write_text(f"faults:\n  - {{at: {DISCONNECT_AT_S}s, disconnect: bob}}\n")
        record = folder / "recording"
        started = time.monotonic()
        server = self.start_server(extra_args=("--faults", str(faults), "--record", str(record)))
        alice_hub, bob_hub = await self.hub_client(server), await self.hub_client(server)
        alice_agent, _ = scripted_agent("alice")
        bob_agent, bob_model = scripted_agent("bob", "yes, back")
        alice = await alice_hub.register(alice_agent, Passport(name="alice"), Resume())
        await bob_hub.register(bob_agent, Passport(name="bob"), Resume())
        channel = await alice.open(type="conversation", target=["bob"])
        self.assertLess(time.monotonic() - started, DISCONNECT_AT_S - 0.5, "the scene took too long to set")

        # The fault cuts bob's socket; his client's receive loop ends.
        await asyncio.sleep(DISCONNECT_AT_S + 0.5 - (time.monotonic() - started))
        await channel.send("are you there?")
        self.assertEqual(bob_model.asked, 0)

        # Bob comes back on a new connection and asks for what he missed.
        bob_again = HubClient(WsLink(server.url), rpc_timeout=RPC_TIMEOUT_S)
        self.addAsyncCleanup(bob_again.close)
        await bob_again.open()
        bob = await bob_again.attach(bob_agent, "bob", passport=Passport(name="bob"), since_envelope_id="")
        reply = await alice.wait_for_channel_event(
            channel_id=channel.channel_id,
            predicate=lambda e: e.event_type == EV_TEXT and e.sender_id == bob.agent_id,
            timeout=RPC_TIMEOUT_S,
        )
        self.assertEqual(reply.event_data["text"], "yes, back")
        self.assertEqual(bob_model.asked, 1)

        # Closing the channel settles both sides before the hub stops and checks the run.
        await channel.close()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(server.stop)
        timeline = (record / "timeline.txt").read_text()
        for expected in (
            "fault: disconnect bob",
            "bob              connection closed (disconnect)",
            "re-attach: hello replaying past the cursor (connection 2)",
        ):
            self.assertIn(expected, timeline)
        self.assertTrue((record / "report.html").is_file())
        log = "\n".join(server.log)
        self.assertIn("invariants at shutdown: no violation", log)


globals().update(against(Faults, "hubsim"))
