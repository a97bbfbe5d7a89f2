"""A test-only jupyter_server extension: the server's own TCP sockets and their ``TCP_NODELAY``.

``GET <base_url>nodelay-probe`` (token required) answers
``{"sockets": [...], "connects": N, "class": "..."}``: every connected TCP
socket of the server process, read with ``getsockopt`` on a duplicate of its
descriptor (``/proc/self/fd``, Linux), how many kernel websockets
:class:`MarkedConnection` connected, and the connection class in the
settings. :func:`tcp_sockets` runs in a kernel too, for the kernel's side,
and reads another process's sockets for the widget benchmark;
:func:`kernel_info` is one round trip over a kernel websocket, for both.

With ``NODELAY_PROBE_SET_CLASS=1`` in the server's environment, the extension
sets :class:`MarkedConnection` as the connection class at load, as another
extension loaded after jupyter-loopback's would.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1, serialize_msg_to_ws_v1
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from jupyter_server.utils import url_path_join
from tornado import web

__all__ = ["V1", "MarkedConnection", "kernel_info", "tcp_sockets"]

V1 = "v1.kernel.websocket.jupyter.org"


def tcp_sockets(pid: int | None = None) -> list[dict[str, Any]]:
    """Connected TCP sockets of this process, or of ``pid``: ``local``, ``peer`` (``[host, port]``) and ``nodelay``.

    Each socket is read through a duplicate of its descriptor: ``os.dup``
    here, ``pidfd_getfd`` for another process (Linux ≥ 5.6, with ptrace
    rights over it; ``OSError`` without them).
    """
    if pid is None:
        return _read(os.listdir("/proc/self/fd"), os.dup)
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(434, pid, 0)  # pidfd_open
    if pidfd < 0:
        raise OSError(ctypes.get_errno(), f"pidfd_open({pid}): {os.strerror(ctypes.get_errno())}")

    def dup(fd: int) -> int:
        got = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
        if got < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        return int(got)

    try:
        return _read(os.listdir(f"/proc/{pid}/fd"), dup)
    finally:
        os.close(pidfd)


def _read(names: list[str], dup: Callable[[int], int]) -> list[dict[str, Any]]:
    out = []
    for name in names:
        try:
            fd = dup(int(name))
        except OSError:
            continue  # closed since the listing
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)  # not a socket
            continue
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                continue
            try:
                peer = sock.getpeername()
            except OSError:
                continue  # a listening socket
            nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            out.append({"local": list(sock.getsockname()[:2]), "peer": list(peer[:2]), "nodelay": bool(nodelay)})
    return out


def kernel_info(ws: Any, protocol: str | None, timeout: float = 60) -> None:
    """Ask for kernel_info over ``ws`` and wait (bounded) for the reply: the websocket is then fully live."""
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "kernel_info_request",
              "version": "5.3", "date": ""}  # fmt: skip
    if protocol == V1:
        parts = [json.dumps(part).encode() for part in (header, {}, {}, {})]
        ws.send(serialize_msg_to_ws_v1(parts, "shell"))  # type: ignore[no-untyped-call]
    else:
        ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": {}, "channel": "shell"}))
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        raw = ws.recv(timeout=left)
        if protocol == V1:
            _, parts = deserialize_msg_from_ws_v1(raw)  # type: ignore[no-untyped-call]
            msg = {"msg_type": json.loads(parts[0])["msg_type"], "parent_header": json.loads(parts[1])}
        else:
            body = json.loads(raw)
            msg = {"msg_type": body["msg_type"], "parent_header": body["parent_header"]}
        if msg["msg_type"] == "kernel_info_reply" and msg["parent_header"].get("msg_id") == msg_id:
            return
    raise AssertionError(f"no kernel_info_reply in {timeout} s")


class MarkedConnection(ZMQChannelsWebsocketConnection):
    """jupyter_server's connection class, counting its connects: proof that it was the one used."""

    connects = 0

    def connect(self) -> Any:
        MarkedConnection.connects += 1
        return super().connect()


class Probe(JupyterHandler):
    @web.authenticated
    def get(self) -> None:
        cls = self.settings.get("kernel_websocket_connection_class")
        body = {"sockets": tcp_sockets(), "connects": MarkedConnection.connects, "class": repr(cls)}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "tests.nodelay_probe"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    web_app = serverapp.web_app
    if os.environ.get("NODELAY_PROBE_SET_CLASS") == "1":
        web_app.settings["kernel_websocket_connection_class"] = MarkedConnection
    route = url_path_join(web_app.settings["base_url"], "nodelay-probe")
    web_app.add_handlers(".*", [(route, Probe)])
