"""A WebSocket client that can stop reading altogether, as a stuck browser tab does."""

import asyncio
import json
import socket

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from .contract import contract
from .live import offer

TIMEOUT_S = 5.0


class StalledClient:
    """Speaks just enough WebSocket to subscribe, then reads only when asked to.

    Built on the sans-I/O protocol over a plain stream, so no library reads behind our back:
    unread data backs up into the server, and pings go unanswered.
    """

    def __init__(self, url: str, token: str, receive_buffer: int = 4096) -> None:
        self.protocol = ClientProtocol(parse_uri(f"{url}/ws"), subprotocols=offer(token))
        self.url = url
        self.receive_buffer = receive_buffer

    async def open(self) -> None:
        host, port = self.url.removeprefix("ws://").split(":")
        sock = socket.socket()
        # A tiny receive buffer by default, so the server's writes back up after little data.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        sock.connect((host, int(port)))
        sock.setblocking(False)
        self.reader, self.writer = await asyncio.open_connection(sock=sock)
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        await self.next_frame()  # the welcome

    async def send(self, frame: dict[str, object]) -> None:
        """Send a request the AsyncAPI document allows."""
        contract().check_request(frame)
        await self.send_text(json.dumps(frame).encode())

    async def send_text(self, payload: bytes) -> None:
        """Send `payload` in a text frame as it is, valid UTF-8 or not."""
        self.protocol.send_text(payload)
        await self._flush()

    def pipeline(self, frame: dict[str, object], count: int) -> None:
        """Send `count` copies of a request at once, waiting for nothing: the socket takes them
        as fast as the server reads them."""
        contract().check_request(frame)
        for _ in range(count):
            self.protocol.send_text(json.dumps(frame).encode())
        self.writer.write(b"".join(self.protocol.data_to_send()))

    async def next_frame(self) -> dict[str, object]:
        while True:
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    frame: dict[str, object] = json.loads(bytes(event.data))
                    contract().check_server_frame(frame)
                    return frame
            self.protocol.receive_data(await asyncio.wait_for(self.reader.read(65536), TIMEOUT_S))

    async def close_code(self) -> int | None:
        """Read everything the server sent up to its close frame; return the close code."""
        async with asyncio.timeout(TIMEOUT_S):
            while self.protocol.close_rcvd is None:
                data = await self.reader.read(1 << 20)
                if not data:
                    break
                self.protocol.receive_data(data)
        await self._flush()
        self.writer.close()
        return self.protocol.close_rcvd.code if self.protocol.close_rcvd else None

    async def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            self.writer.write(data)
        await self.writer.drain()
