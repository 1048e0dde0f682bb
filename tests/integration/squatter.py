"""A hostile listener for tests: binds a freed tenant port and asks every client for a
cleartext password, the way audit finding H2 describes.

It speaks just enough of two protocols. A PostgreSQL client talks first (a
startup packet, maybe an SSLRequest before it): the squatter answers
``AuthenticationCleartextPassword`` and records the ``PasswordMessage``. A
MySQL client waits for the server's greeting: after a short silence the
squatter sends one announcing ``mysql_native_password``, then switches the
client to ``mysql_clear_password`` and records what comes back. Either way
the client is then refused. Every byte received is kept, so a test can look
for any secret anywhere in it, not only where the protocol puts passwords.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
#: How long the squatter waits for a client to speak first (PostgreSQL) before
#: greeting it as a MySQL server.
_CLIENT_FIRST_S = 0.3


@dataclass
class Squatter:
    """What the listener saw: raw bytes per connection and the passwords it was handed."""

    host: str
    port: int
    connections: int = 0
    received: list[bytes] = field(default_factory=list)
    passwords: list[tuple[str, str, bytes]] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def start(self, timeout_s: float = 30.0) -> None:
        """Bind the port, retrying while the runtime still holds it."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                self._server = await asyncio.start_server(self._serve, self.host, self.port)
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)
            else:
                return

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def holds(self, secret: str) -> bool:
        """True when ``secret`` appears anywhere in what was received."""
        needle = secret.encode()
        return any(needle in chunk for chunk in self.received)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        raw = bytearray()
        self.received.append(b"")
        index = len(self.received) - 1
        try:
            async with asyncio.timeout(10):
                try:
                    async with asyncio.timeout(_CLIENT_FIRST_S):
                        first = await reader.readexactly(8)
                except TimeoutError:
                    await self._mysql(reader, writer, raw)
                else:
                    raw += first
                    await self._postgres(first, reader, writer, raw)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, struct.error):
            pass
        finally:
            self.received[index] = bytes(raw)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _postgres(self, first: bytes, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, raw: bytearray) -> None:
        length, code = struct.unpack("!II", first)
        while code in (_SSL_REQUEST, _GSSENC_REQUEST):
            writer.write(b"N")
            await writer.drain()
            head = await reader.readexactly(8)
            raw += head
            length, code = struct.unpack("!II", head)
        body = await reader.readexactly(length - 8)
        raw += body
        parts = body.split(b"\0")
        params = dict(zip(parts[0::2], parts[1::2], strict=False))
        user = params.get(b"user", b"").decode(errors="replace")
        writer.write(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
        await writer.drain()
        kind = await reader.readexactly(1)
        size = struct.unpack("!I", await reader.readexactly(4))[0]
        message = await reader.readexactly(size - 4)
        raw += kind + message
        self.passwords.append(("postgres", user, message.rstrip(b"\0")))
        error = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"
        writer.write(b"E" + struct.pack("!I", len(error) + 4) + error)
        await writer.drain()

    async def _mysql(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     raw: bytearray) -> None:
        salt = b"abcdefghijklmnopqrst"
        capabilities = 0x1 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x80000  # protocol 41, plugin auth
        greeting = (
            b"\x0a" + b"5.5.5-10.11.0-MariaDB\0" + struct.pack("<I", 7) + salt[:8] + b"\0"
            + struct.pack("<H", capabilities & 0xFFFF) + b"\x21" + struct.pack("<H", 2)
            + struct.pack("<H", capabilities >> 16) + bytes([21]) + b"\0" * 10
            + salt[8:] + b"\0" + b"mysql_native_password\0"
        )
        _write_packet(writer, 0, greeting)
        await writer.drain()
        seq, response = await _read_packet(reader, raw)
        user = response[32:].split(b"\0", 1)[0].decode(errors="replace")
        _write_packet(writer, seq + 1, b"\xfe" + b"mysql_clear_password\0")
        await writer.drain()
        seq, password = await _read_packet(reader, raw)
        self.passwords.append(("mysql", user, password.rstrip(b"\0")))
        _write_packet(writer, seq + 1, b"\xff" + struct.pack("<H", 1045) + b"#28000Access denied")
        await writer.drain()


def _write_packet(writer: asyncio.StreamWriter, seq: int, payload: bytes) -> None:
    writer.write(struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload)


async def _read_packet(reader: asyncio.StreamReader, raw: bytearray) -> tuple[int, bytes]:
    head = await reader.readexactly(4)
    size = int.from_bytes(head[:3], "little")
    payload = await reader.readexactly(size)
    raw += head + payload
    return head[3], payload
