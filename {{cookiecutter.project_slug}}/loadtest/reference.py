"""The reference server: a bare `websockets` broadcast server, no auth, no storage, no order.

Every text frame a client sends goes to every other client connected, through
`websockets.broadcast`, which writes to each connection without awaiting any. It is about the
most a Python WebSocket server does for fan-out on this machine, and so the limit `make loadtest`
holds the service against.

    python -m loadtest.reference        (listens on 127.0.0.1:$PORT until SIGTERM or SIGINT)
"""

import asyncio
import os
import signal
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

    # Handlers of its own: a process started in the background by a shell inherits SIGINT
    # ignored, and Python's default handler for it is then never installed.
    stop = asyncio.Event()
    for each in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(each, stop.set)
    async with serve(relay, "127.0.0.1", port, compression=None, ping_interval=None):
        print("listening", file=sys.stderr, flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(os.environ["PORT"])))
