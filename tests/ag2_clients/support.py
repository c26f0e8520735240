"""What every case of the suite shares: a hub server (`hubsim serve` in a child process, or ag2's
own), ag2 clients pointed at it, a scripted model, and a time bound on everything.

A case is a class of `async def test_*` methods over `self.start_server(...)`; `against(Cases,
"hubsim", "ag2")` turns it into one `unittest` class per server, so the same assertions run
against `hubsim serve` and against ag2 1.2.1's own `serve_ws` (`ag2_serve.py`): what they pin is
ag2's behaviour, and hubsim must show it. A case that needs flags only `hubsim serve` has passes
them as `start_server(extra_args=(...))` and is made for "hubsim" alone.

`hubsim serve` is the binary named by the environment variable `HUBSIM_BIN` (`run.py --hubsim
PATH` sets it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import unittest
from pathlib import Path
from typing import Any

from ag2 import Agent
from ag2.network import HubClient, WsLink
from ag2.testing import TestConfig

# Every test method is cut off after this long (the cases take a few seconds each).
CASE_TIMEOUT_S = 30.0
# A client's RPCs and hellos give up after this long (ag2's default is 30 s).
RPC_TIMEOUT_S = 10.0
# How long a server may take to print its address, and to exit after SIGTERM.
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
SERVING = re.compile(r"serving on (ws://\S+/)")

# ag2 logs a closed connection's failed RPCs and handler errors; the cases assert on them instead.
logging.basicConfig(level=logging.DEBUG if os.environ.get("AG2_CLIENTS_VERBOSE") else logging.CRITICAL)


def hubsim_bin() -> str:
    path = os.environ.get("HUBSIM_BIN")
    if not path:
        raise RuntimeError("HUBSIM_BIN is not set: the path of the hubsim binary (run.py --hubsim PATH)")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"HUBSIM_BIN={path} is not an executable")
    return path


def seconds_flag(value: float) -> str:
    """`hubsim serve` takes `500ms`; ag2_serve.py takes plain seconds."""
    return f"{round(value * 1000)}ms"


class HubsimServer:
    """`hubsim serve --port 0` in a child process.

    `start` waits for the `hubsim: serving on ws://ADDR/` line on stderr; a thread keeps reading
    stderr (the pipe never fills) into `log`. `stop` sends SIGTERM and asserts exit status 0.
    `extra_args` are more `hubsim serve` flags.
    """

    kind = "hubsim"

    def __init__(
        self,
        *,
        api_keys: Path | None = None,
        ping_interval_s: float | None = None,
        ping_timeout_s: float | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        command = [hubsim_bin(), "serve", "--port", "0"]
        if api_keys is not None:
            command += ["--api-keys", str(api_keys)]
        if ping_interval_s is not None:
            command += ["--ping-interval", seconds_flag(ping_interval_s)]
        if ping_timeout_s is not None:
            command += ["--ping-timeout", seconds_flag(ping_timeout_s)]
        self.command = command + list(extra_args)
        self.log: list[str] = []
        self.url = ""
        self.process: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None

    def start(self) -> "HubsimServer":
        env = dict(os.environ)
        env.pop("HUBSIM_API_KEYS", None)
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=env,
        )
        found = threading.Event()

        def read() -> None:
            assert self.process is not None and self.process.stderr is not None
            for line in self.process.stderr:
                self.log.append(line.rstrip("\n"))
                match = SERVING.search(line)
                if match and not found.is_set():
                    self.url = match.group(1)
                    found.set()
            found.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not found.wait(START_TIMEOUT_S) or not self.url:
            with contextlib.suppress(AssertionError):
                self.process.kill()
                self.stop()
            raise AssertionError(f"hubsim printed no address in {START_TIMEOUT_S} s:\n{self.log_text()}")
        return self

    def stop(self) -> None:
        """SIGTERM, then the exit status must be 0 (and come within STOP_TIMEOUT_S)."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            status = None
            process.wait()
        if self.reader is not None:
            self.reader.join(STOP_TIMEOUT_S)
        assert process.stderr is not None
        process.stderr.close()
        if status is None:
            raise AssertionError(f"hubsim did not exit within {STOP_TIMEOUT_S} s of SIGTERM:\n{self.log_text()}")
        if status != 0:
            raise AssertionError(f"hubsim exited with status {status} after SIGTERM:\n{self.log_text()}")

    def log_text(self) -> str:
        return "\n".join(f"    {line}" for line in self.log)


class Ag2Server:
    """ag2 1.2.1's own hub and `serve_ws` (`ag2_serve.serve`), on a thread with its own event
    loop; `stop` ends it and asserts it ended cleanly."""

    kind = "ag2"

    def __init__(
        self,
        *,
        api_keys: Path | None = None,
        ping_interval_s: float | None = None,
        ping_timeout_s: float | None = None,
    ) -> None:
        self.options = (
            None if api_keys is None else str(api_keys),
            20.0 if ping_interval_s is None else ping_interval_s,
            20.0 if ping_timeout_s is None else ping_timeout_s,
        )
        self.url = ""
        self.failure: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> "Ag2Server":
        import ag2_serve

        ready = threading.Event()

        def on_ready(url: str) -> None:
            self.url = url
            ready.set()

        async def run() -> None:
            self.loop = asyncio.get_running_loop()
            self.stopping = asyncio.Event()
            await ag2_serve.serve(*self.options, on_ready, self.stopping)

        def thread() -> None:
            try:
                asyncio.run(run())
            except BaseException as error:  # noqa: BLE001 - reported by stop()
                self.failure = error
            ready.set()

        self.thread = threading.Thread(target=thread, daemon=True)
        self.thread.start()
        if not ready.wait(START_TIMEOUT_S) or not self.url:
            raise AssertionError(f"ag2's serve_ws did not start: {self.failure!r}")
        return self

    def stop(self) -> None:
        if self.thread is None:
            return
        thread, self.thread = self.thread, None
        if self.loop is not None and self.stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self.loop.call_soon_threadsafe(self.stopping.set)
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            raise AssertionError(f"ag2's serve_ws did not stop within {STOP_TIMEOUT_S} s")
        if self.failure is not None:
            raise AssertionError(f"ag2's serve_ws failed: {self.failure!r}")

    def log_text(self) -> str:
        return "    (ag2's hub runs in this process; AG2_CLIENTS_VERBOSE=1 shows its log)"


def Server(kind: str, **options: Any) -> HubsimServer | Ag2Server:  # noqa: N802 - a factory
    """A server of `kind` ("hubsim" or "ag2"), not yet started; options: see `HubsimServer`."""
    if kind == "hubsim":
        return HubsimServer(**options)
    if kind == "ag2":
        return Ag2Server(**options)
    raise ValueError(f"unknown server kind {kind!r}")


class Script(TestConfig):
    """A scripted model: each `Agent.ask` takes the next reply (then answers ""); `asked`
    counts the model turns."""

    __test__ = False

    def __init__(self, *replies: str) -> None:
        super().__init__()
        self.replies = list(replies)
        self.asked = 0

    def create(self):  # type: ignore[override]
        reply = self.replies[self.asked] if self.asked < len(self.replies) else ""
        self.asked += 1
        return TestConfig(reply).create()


def scripted_agent(name: str, *replies: str) -> tuple[Agent, Script]:
    script = Script(*replies)
    return Agent(name, prompt=f"You are {name}.", config=script), script


class ServerCase(unittest.IsolatedAsyncioTestCase):
    """The base of every generated class: `server_kind` names the server its cases run against."""

    server_kind = "hubsim"

    def start_server(self, **options: Any) -> HubsimServer | Ag2Server:
        """Starts a server for this test; it is stopped (SIGTERM, exit 0) when the test ends.
        Options: see `HubsimServer` (`Ag2Server` takes all but `extra_args`)."""
        server = Server(self.server_kind, **options).start()
        # Stopped off the event loop, which goes on running the clients' side of the closing
        # handshakes (ag2's server runs in this process and waits for them).
        self.addAsyncCleanup(asyncio.to_thread, server.stop)
        self.servers.append(server)
        return server

    async def hub_client(self, server: HubsimServer | Ag2Server) -> HubClient:
        """An ag2 remote-mode client, connected; closed when the test ends."""
        client = HubClient(WsLink(server.url), rpc_timeout=RPC_TIMEOUT_S)
        self.addAsyncCleanup(client.close)
        await client.open()
        return client

    def setUp(self) -> None:
        self.servers: list[HubsimServer | Ag2Server] = []

    def run(self, result=None):  # type: ignore[override]
        """Prints each server's log under a failing test."""
        before = len(result.failures) + len(result.errors) if result is not None else 0
        outcome = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            for server in self.servers:
                print(f"\n--- {self.id()}: {server.kind} log ---\n{server.log_text()}", file=sys.stderr)
        return outcome


def bounded(method: Any) -> Any:
    """A test method cut off after CASE_TIMEOUT_S."""

    @functools.wraps(method)
    async def run(self: Any) -> None:
        await asyncio.wait_for(method(self), CASE_TIMEOUT_S)

    return run


def against(cases: type, *kinds: str) -> dict[str, type]:
    """One `unittest` class per server kind ("hubsim", "ag2") running the `test_*` methods of
    `cases`, each bounded in time; assign the result into the module's globals so that
    discovery finds them: `globals().update(against(Consulting, "hubsim", "ag2"))`."""
    made = {}
    for kind in kinds:
        name = f"{cases.__name__}_{kind}"
        body: dict[str, Any] = {"server_kind": kind, "__module__": cases.__module__}
        for attribute in dir(cases):
            if attribute.startswith("test_") and asyncio.iscoroutinefunction(getattr(cases, attribute)):
                body[attribute] = bounded(getattr(cases, attribute))
        made[name] = type(name, (cases, ServerCase), body)
    return made
