"""API keys (`hubsim serve --api-keys FILE`, ag2's `ApiKeyAuth`): an agent registering or
re-attaching with its token is bound; a wrong, missing or unknown token, or another scheme, is
refused with ag2's `auth_failed`, which the ag2 client raises as `AuthError` with the hub's
message, and the connection stays usable."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ag2.network import AuthBlock, AuthError, Passport, Resume

from support import against, scripted_agent

KEYS = {"alice": "k-alice-3f9c1e", "bob": "k-bob-77ad20"}


def passport(name: str, token: str | None = None, scheme: str = "api_key") -> Passport:
    claim = {} if token is None else {"token": token}
    return Passport(name=name, auth=AuthBlock(scheme=scheme, claim=claim))


class ApiKeys:
    def start_keyed_server(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        path = Path(folder.name) / "keys.txt"
        path.write_text("# agents\n" + "".join(f"{name}={token}\n" for name, token in KEYS.items()))
        os.chmod(path, 0o600)
        return self.start_server(api_keys=path)

    async def test_register_with_the_right_token(self) -> None:
        server = self.start_keyed_server()
        hub = await self.hub_client(server)
        alice = await hub.register(scripted_agent("alice")[0], passport("alice", KEYS["alice"]), Resume())
        self.assertRegex(alice.agent_id, r"^[0-9a-f]{32}$")
        # The hub keeps the scheme and never hands the claim back.
        stored = await hub.get_agent("alice")
        self.assertEqual((stored.agent_id, stored.auth.scheme, stored.auth.claim), (alice.agent_id, "api_key", {}))

    async def test_refusals_are_auth_failed(self) -> None:
        server = self.start_keyed_server()
        hub = await self.hub_client(server)
        refusals = [
            (passport("bob", "k-wrong"), "api_key mismatch for 'bob'"),
            (passport("bob"), "api_key claim missing required string field 'token'"),
            (passport("bob", ""), "api_key claim missing required string field 'token'"),
            (passport("carol", "k-bob-77ad20"), "no api_key registered for 'carol'"),
            (passport("bob", KEYS["bob"], scheme="none"), "unknown auth scheme: 'none'"),
            (Passport(name="bob"), "unknown auth scheme: 'none'"),
        ]
        for refused, message in refusals:
            with self.subTest(passport=refused.name, auth=refused.auth):
                with self.assertRaises(AuthError) as caught:
                    await hub.register(scripted_agent(refused.name)[0], refused, Resume())
                self.assertEqual(str(caught.exception), message)
        # Nothing was registered, and the same connection registers bob with his token.
        self.assertIsNone(await hub._rpc("find_agent_id", {"name": "bob"}))
        self.assertIsNone(await hub._rpc("find_agent_id", {"name": "carol"}))
        bob = await hub.register(scripted_agent("bob")[0], passport("bob", KEYS["bob"]), Resume())
        self.assertEqual(await hub._rpc("find_agent_id", {"name": "bob"}), bob.agent_id)

    async def test_reattach_hello_checks_the_token(self) -> None:
        server = self.start_keyed_server()
        first = await self.hub_client(server)
        alice = await first.register(scripted_agent("alice")[0], passport("alice", KEYS["alice"]), Resume())
        # A hello with a wrong or missing token is answered with an `auth_failed` error frame.
        second = await self.hub_client(server)
        for refused, message in [
            (passport("alice", "k-bob-77ad20"), "api_key mismatch for 'alice'"),
            (None, "api_key claim missing required string field 'token'"),
            (passport("alice", KEYS["alice"], scheme="none"),
             "auth scheme 'none' does not match 'alice''s registered scheme 'api_key'"),
        ]:
            with self.subTest(auth=refused and refused.auth):
                with self.assertRaises(AuthError) as caught:
                    await second.attach(scripted_agent("alice")[0], "alice", passport=refused)
                self.assertEqual(str(caught.exception), message)
        # The right token re-attaches alice on the second connection.
        again = await second.attach(scripted_agent("alice")[0], "alice", passport=passport("alice", KEYS["alice"]))
        self.assertEqual(again.agent_id, alice.agent_id)


globals().update(against(ApiKeys, "hubsim", "ag2"))
