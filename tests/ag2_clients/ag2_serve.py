#!/usr/bin/env python3
"""ag2 1.2.1's own hub over WebSocket (`Hub.open` + `serve_ws`, in memory), so every case can run
against it too and pin ag2's answers, not hubsim's. The suite runs `serve` on a thread of its
own process (importing ag2 again in a child would cost seconds per case); as a program it serves
until SIGTERM, to point clients at by hand:

    python ag2_serve.py [--api-keys FILE] [--ping-interval S] [--ping-timeout S]

It binds 127.0.0.1 on a free port and prints `ag2: serving on ws://ADDR/` to stderr. The keys
file has `hubsim serve`'s format (`name=token` lines, `#` comments).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from ag2.knowledge import MemoryKnowledgeStore
from ag2.network import ApiKeyAuth, AuthRegistry, Hub, serve_ws


def read_keys(path: str) -> dict[str, str]:
    keys = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, token = line.partition("=")
                keys[name.strip()] = token.strip()
    return keys


async def serve(
    api_keys: str | None, ping_interval_s: float, ping_timeout_s: float, on_ready, stop: asyncio.Event
) -> None:
    """Serves a fresh hub on 127.0.0.1 until `stop` is set; `on_ready(url)` once it listens."""
    auth = AuthRegistry([ApiKeyAuth(keys=read_keys(api_keys))]) if api_keys else None
    hub = await Hub.open(MemoryKnowledgeStore(), auth=auth)
    try:
        async with serve_ws(
            hub, "127.0.0.1", 0, ping_interval=ping_interval_s, ping_timeout=ping_timeout_s
        ) as server:
            host, port = server.sockets[0].getsockname()[:2]
            on_ready(f"ws://{host}:{port}/")
            await stop.wait()
    finally:
        await hub.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-keys")
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    args = parser.parse_args()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def ready(url: str) -> None:
        print(f"ag2: serving on {url}", file=sys.stderr, flush=True)

    await serve(args.api_keys, args.ping_interval, args.ping_timeout, ready, stop)


if __name__ == "__main__":
    asyncio.run(main())
