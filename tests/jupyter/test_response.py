"""The adapter's reading of the sidecar's responses (loopback_asgi/jupyter/response.py).

Chunk sizes follow RFC 9112 §7.1 exactly; anything else fails the response
and the connection never goes back to the pool. Shown through a real
``jupyter server`` whose sidecar socket is taken over by a scripted one,
since a real sidecar (uvicorn) never frames a chunk wrongly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import httpx
import pytest

from loopback_asgi._transports.http11 import ResponseReader
from tests.jupyter_fixtures import JupyterServer, _cmdline, start_jupyter, stop_jupyter

WAIT = 10.0


def _chunked(line: bytes) -> ResponseReader:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + line)
    return reader


@pytest.mark.parametrize(
    ("line", "size"),
    [
        (b"5\r\n", 5),
        (b"00ff\r\n", 255),
        (b"A;name\r\n", 10),
        (b"a;name=value;other\r\n", 10),
        (b'10;q="a \\" b"\r\n', 16),
    ],
)
def test_chunk_sizes_of_rfc_9112(line: bytes, size: int) -> None:
    reader = _chunked(line + b"x" * size + b"\r\n0\r\n\r\n")
    assert (reader.complete, reader.take()) == (True, b"x" * size)


@pytest.mark.parametrize(
    "line",
    [
        b"0x5\r\n",
        b"+5\r\n",
        b"-5\r\n",
        b"5_0\r\n",
        b" 5\r\n",
        b"5 \r\n",
        b"\r\n",
        b"5;\r\n",
        b"g\r\n",
        b"1" * 17 + b"\r\n",
    ],
)
def test_other_chunk_sizes_are_refused(line: bytes) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        _chunked(line + b"hello\r\n0\r\n\r\n")


@contextlib.asynccontextmanager
async def scripted_sidecar(server: JupyterServer, first_chunk: bytearray) -> AsyncIterator[list[int]]:
    """Stop the server's sidecar and answer on its socket instead: each request gets a chunked ``hello``.

    The first response on each connection sizes its chunk with ``first_chunk``
    (as it is then); later ones on the same connection are well framed. Yields, per
    connection, how many requests it carried.
    """
    (pid,) = server.sidecar_pids()
    args = _cmdline(pid).split(b"\0")
    path = args[args.index(b"--unix-socket") + 1].decode()
    per_connection: list[int] = []
    handlers: list[tuple[asyncio.Task[None], asyncio.StreamWriter]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append((task, writer))
        index = len(per_connection)
        per_connection.append(0)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            while True:
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
                size = bytes(first_chunk) if per_connection[index] == 0 else b"5"
                per_connection[index] += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nhello\r\n0\r\n\r\n"
                )
                await writer.drain()
        writer.close()
        await writer.wait_closed()

    os.kill(pid, signal.SIGSTOP)  # still running for its supervisor, so not restarted; serves nothing
    try:
        os.unlink(path)
        listener = await asyncio.start_unix_server(handle, path)
        async with listener:
            yield per_connection
            for _, writer in handlers:  # connections the adapter still holds
                writer.transport.abort()
            await asyncio.wait_for(asyncio.gather(*(task for task, _ in handlers)), WAIT)
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def fresh_jupyter(upstream: int) -> AsyncIterator[JupyterServer]:
    server = start_jupyter("/")
    try:
        # Start the sidecar, then take every connection out of the adapter's pool: a response
        # cut short closes its connection (the start may have left one more, hence twice).
        for _ in range(2):
            with pytest.raises(httpx.RemoteProtocolError):
                httpx.get(server.loopback(upstream, "die?after=1000"), headers=server.auth, trust_env=False, timeout=60)
        yield server
    finally:
        stop_jupyter(server)


async def test_a_bad_chunk_size_is_a_502_and_the_connection_is_not_reused(
    fresh_jupyter: JupyterServer, upstream: int
) -> None:
    server = fresh_jupyter
    bad = [b"0x5", b"+5", b"-5", b"5_0", b" 5"]
    first = bytearray()
    async with scripted_sidecar(server, first) as per_connection:
        async with httpx.AsyncClient(headers=server.auth, trust_env=False, timeout=WAIT) as client:
            for size in bad:
                first[:] = size
                r = await client.get(server.loopback(upstream, "x"))
                assert (r.status_code, r.text) == (502, "The loopback sidecar sent a malformed response.\n"), size
    # Each went on a new connection: the one that carried a bad size never went back to the pool.
    assert per_connection == [1] * len(bad)


async def test_a_good_chunk_size_with_an_extension_passes_and_the_connection_is_reused(
    fresh_jupyter: JupyterServer, upstream: int
) -> None:
    server = fresh_jupyter
    async with scripted_sidecar(server, bytearray(b"5;name=value")) as per_connection:
        async with httpx.AsyncClient(headers=server.auth, trust_env=False, timeout=WAIT) as client:
            for path in ("x", "y"):
                r = await client.get(server.loopback(upstream, path))
                assert (r.status_code, r.text) == (200, "hello")
    assert per_connection == [2]
