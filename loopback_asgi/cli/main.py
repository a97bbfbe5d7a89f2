"""The ``jupyter-loopback`` command: ``serve`` runs the sidecar, ``doctor`` explains the setup."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import socket
import stat
import sys
from collections.abc import Sequence

import uvicorn

from loopback_asgi.sidecar.app import create_app

__all__ = ["bind_socket", "main"]


def bind_socket(*, host: str = "127.0.0.1", port: int | None = None, unix_socket: str | None = None) -> socket.socket:
    """A listening socket for the sidecar.

    A unix socket is created 0600 inside a directory that is (made) 0700 and
    owned by this user, so no other local user can connect; an existing
    directory that others can enter is refused.
    """
    if unix_socket:
        directory = os.path.dirname(os.path.abspath(unix_socket))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.stat(directory)
        if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
            raise SystemExit(f"jupyter-loopback: {directory} must be a 0700 directory owned by this user.")
        if os.path.exists(unix_socket):
            os.unlink(unix_socket)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(unix_socket)
        finally:
            os.umask(old)
        os.chmod(unix_socket, 0o600)
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Proto given explicitly: asyncio turns Nagle off only on accepted sockets
        # whose proto is TCP, and proto 0 is inherited; with Nagle on, a small
        # response's second write waits ~40 ms for the client's delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port or 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


# glibc returns large freed blocks to the kernel at once, so every relayed
# body chunk faulted in fresh pages: relaying 1 GB cost ~1 s of kernel time
# that way and ~0.35 s with freed memory kept for reuse (docs/benchmarks.md).
# The price is up to this much freed memory held by the sidecar.
HEAP_KEEP = 16 * 1024 * 1024


def _keep_freed_memory() -> None:
    """Raise glibc's trim and mmap thresholds to ``HEAP_KEEP`` (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc
    mallopt(-1, HEAP_KEEP)  # M_TRIM_THRESHOLD
    mallopt(-3, HEAP_KEEP)  # M_MMAP_THRESHOLD


def serve(args: argparse.Namespace) -> int:
    if args.unix_socket is None and args.port is None:
        raise SystemExit("jupyter-loopback serve: give --port N or --unix-socket PATH.")
    token = args.token
    if args.unix_socket is None and not token:
        token = os.environ.get("JUPYTER_LOOPBACK_TOKEN") or secrets.token_urlsafe(24)
    # The Jupyter adapter hands over the namespaces it already discovered:
    # entry-point discovery scans every installed distribution (~0.5 s).
    given = os.environ.get("JUPYTER_LOOPBACK_NAMESPACES")
    try:
        namespaces = json.loads(given) if given else None
    except ValueError as exc:
        raise SystemExit(f"jupyter-loopback serve: JUPYTER_LOOPBACK_NAMESPACES is not JSON: {exc}") from exc
    _keep_freed_memory()
    sock = bind_socket(host=args.host, port=args.port, unix_socket=args.unix_socket)
    app = create_app(
        namespaces,
        discover=namespaces is None,
        token=token if args.unix_socket is None else (args.token or None),
        public_root=args.public_root,
        trust_forwarded=args.trust_forwarded,
        max_message_size=args.max_message_size,
    )
    if args.unix_socket:
        where = f"unix:{args.unix_socket}"
    else:
        host, port = sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        where = f"http://{host}:{port}/?token={token}"
    print(f"jupyter-loopback {', '.join(app.state.namespaces) or '(no namespaces)'} on {where}", flush=True)
    for name, reason in app.state.failures.items():
        print(f"jupyter-loopback: namespace {name!r} skipped: {reason}", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        # uvicorn's Sans-I/O WebSocket protocol, able to hand a session to a
        # byte pipe once both handshakes are done (_transports/pipe.py).
        # The head of a response leaves with its first body piece (protocols/http.py).
        http="loopback_asgi.protocols.http:HttpProtocol",
        ws="loopback_asgi.protocols.websocket:PipeProtocol" if args.websocket_relay == "pipe" else "websockets-sansio",
        ws_max_size=args.max_message_size,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=2,
        access_log=False,
        # The sidecar decides itself which X-Forwarded-* to trust (see
        # --trust-forwarded); uvicorn's own handling would let any local
        # client spoof its address.
        proxy_headers=False,
        # The upstream's own Date/Server pass through; do not add a second pair.
        server_header=False,
        date_header=False,
    )
    # Server.run, not asyncio.run(serve()): it uses uvicorn's loop choice (uvloop when installed).
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from loopback_asgi.cli.doctor import doctor

    return doctor(timeout=args.timeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jupyter-loopback", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the sidecar standalone")
    p.add_argument("--port", type=int, help="TCP port (0 picks a free one); requires a token")
    p.add_argument("--host", default="127.0.0.1", help="TCP address (default 127.0.0.1)")
    p.add_argument("--unix-socket", help="listen on this unix socket instead (created 0600 in a 0700 directory)")
    p.add_argument("--token", help="the token for TCP clients (default: $JUPYTER_LOOPBACK_TOKEN or a new one)")
    p.add_argument("--public-root", help="public path the sidecar is reached under, e.g. /user/a/loopback")
    p.add_argument("--trust-forwarded", action="store_true", help="keep X-Forwarded-* from a trusted front proxy")
    p.add_argument("--max-message-size", type=int, default=2**30, help="largest WebSocket message, bytes")
    p.add_argument(
        "--websocket-relay",
        choices=("pipe", "messages"),
        default="pipe",
        help="after both handshakes, pass frames through as bytes (pipe, default) or relay message by message",
    )
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=serve)
    d = sub.add_parser("doctor", help="explain this environment and test the route through a running server")
    d.add_argument("--timeout", type=float, default=20, help="seconds allowed for the live round trip")
    d.set_defaults(func=_doctor)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
