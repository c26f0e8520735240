#!/usr/bin/env python3
"""ag2 1.2.1's own hub over WebSocket (`Hub.open` + `serve_ws`), started the way the suite starts
`hubsim serve`, so every case can run against both and pin ag2's answers, not hubsim's.

    python ag2_serve.py [--api-keys FILE] [--ping-interval S] [--ping-timeout S]

It binds 127.0.0.1 on a free port, prints `ag2: serving on ws://ADDR/` to stderr, and on SIGTERM
closes the server and the hub and exits 0. The keys file has `hubsim serve`'s format
(`name=token` lines, `#` comments).
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


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-keys")
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    args = parser.parse_args()

    auth = AuthRegistry([ApiKeyAuth(keys=read_keys(args.api_keys))]) if args.api_keys else None
    hub = await Hub.open(MemoryKnowledgeStore(), auth=auth)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve_ws(
        hub, "127.0.0.1", 0, ping_interval=args.ping_interval, ping_timeout=args.ping_timeout
    ) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print(f"ag2: serving on ws://{host}:{port}/", file=sys.stderr, flush=True)
        await stop.wait()
    await hub.close()


if __name__ == "__main__":
    asyncio.run(main())
