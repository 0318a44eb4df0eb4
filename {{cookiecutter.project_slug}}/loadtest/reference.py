"""The reference server: a bare `websockets` broadcast server, no auth, no storage, no order.

Every text frame a client sends goes to every other client connected, through
`websockets.broadcast`, which writes to each connection without awaiting any. It is about the
most a Python WebSocket server does for fan-out on this machine, and so the limit `make loadtest`
holds the service against.

    python -m loadtest.reference        (listens on 127.0.0.1:$PORT)
"""

import asyncio
import contextlib
import os
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve


async def main(port: int) -> None:
    clients: set[ServerConnection] = set()

    async def relay(connection: ServerConnection) -> None:
        clients.add(connection)
        try:
            async for frame in connection:
                broadcast(clients - {connection}, frame)
        finally:
            clients.discard(connection)

    async with serve(relay, "127.0.0.1", port, compression=None, ping_interval=None) as server:
        print("listening", file=sys.stderr, flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(int(os.environ["PORT"])))
