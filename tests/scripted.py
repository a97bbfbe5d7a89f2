"""Scripted raw servers: a real TCP listener on 127.0.0.1 that answers with exactly the bytes a test writes.

A test gives :class:`ScriptedServer` a coroutine that plays one connection
(:class:`Peer`): read the request as bytes, write any bytes back, close or
hang. The server records every connection, so a test can see at the server
whether a connection was reused, replayed or closed. Every read is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["WAIT", "Peer", "Request", "ScriptedServer", "ws_accept"]

WAIT = 5.0  # seconds any single scripted read or test-side wait may take


@dataclass
class Request:
    """One request as the server read it."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    raw: bytes = b""  # the head and the body exactly as they came off the wire
    chunk_sizes: list[int] = field(default_factory=list)  # for a chunked body

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n.lower() == name), None)


class Peer:
    """One accepted connection, played by the test's script."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.requests: list[Request] = []
        self.done = asyncio.Event()  # the script returned or failed

    async def read_request(self, timeout: float = WAIT) -> Request:
        return await asyncio.wait_for(self._read_request(), timeout)

    async def _read_request(self) -> Request:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        method, target, _ = lines[0].split(b" ")
        headers = [(n.strip(), v.strip()) for n, v in (line.split(b":", 1) for line in lines[1:])]
        request = Request(method, target, headers, raw=head)
        if (request.header(b"transfer-encoding") or b"").rsplit(b",", 1)[-1].strip().lower() == b"chunked":
            body = bytearray()
            while True:
                line = await self.reader.readuntil(b"\r\n")
                request.raw += line
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    trailer = await self.reader.readuntil(b"\r\n")
                    request.raw += trailer
                    assert trailer == b"\r\n", trailer
                    break
                data = await self.reader.readexactly(size + 2)
                request.raw += data
                assert data.endswith(b"\r\n"), data[-10:]
                body += data[:-2]
                request.chunk_sizes.append(size)
            request.body = bytes(body)
        elif (length := request.header(b"content-length")) is not None:
            request.body = await self.reader.readexactly(int(length))
            request.raw += request.body
        self.requests.append(request)
        return request

    async def read_eof(self, timeout: float = WAIT) -> bytes:
        """Everything the client sends until it closes the connection."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        if not self.writer.transport.is_closing():  # a closed transport must not be aborted
            self.writer.transport.abort()


Script = Callable[[Peer], Awaitable[None]]


class ScriptedServer:
    """A TCP server on 127.0.0.1 port 0; connection ``i`` is played by ``scripts[i]`` (the last one plays the rest).

    Leaving the ``async with`` closes the listener and every connection and
    re-raises the first failure of a script (a failed assertion in a script
    fails the test), except the client having gone away.
    """

    def __init__(self, *scripts: Script) -> None:
        self.scripts = scripts
        self.peers: list[Peer] = []
        self.accepted = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._errors: list[BaseException] = []

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port: int = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.close()
        for peer in self.peers:
            peer.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if kind is None and self._errors:
            raise self._errors[0]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        script = self.scripts[min(len(self.peers), len(self.scripts) - 1)]
        self.peers.append(peer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.append(task)
        async with self.accepted:
            self.accepted.notify_all()
        try:
            await script(peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: its side of the test says whether that was right
        except asyncio.CancelledError:
            # Stopped by __aexit__. Returning (not re-raising) keeps asyncio's
            # stream callback from reporting the cancelled task as an error.
            pass
        except BaseException as exc:
            self._errors.append(exc)
        finally:
            peer.done.set()

    async def peer(self, index: int, timeout: float = WAIT) -> Peer:
        """The ``index``-th connection (from 0), once it is accepted."""
        async with self.accepted:
            await asyncio.wait_for(self.accepted.wait_for(lambda: len(self.peers) > index), timeout)
        return self.peers[index]


def ws_accept(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value for a client's key (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    return base64.b64encode(digest)
