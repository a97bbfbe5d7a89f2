"""Advisory regressions against a live standalone sidecar: one test per advisory class.

Each test names the defence it guards. Each was run once with that defence
removed from a local working copy (never committed) and seen failing; the
docstring says what was removed and how the test failed.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .conftest import TOKEN, Proc, start_sidecar
from .security_fixtures import Canary, figure

AUTH = {"Authorization": f"token {TOKEN}"}


def http(base: str, path: str, method: str = "GET", **kw: object) -> httpx.Response:
    with httpx.Client(timeout=20, trust_env=False) as client:
        return client.request(method, base + path, **kw)  # type: ignore[arg-type]


def ws_url(base: str, path: str) -> str:
    return "ws" + base.removeprefix("http") + path


def ws_status(url: str, headers: dict[str, str] | None = None) -> int:
    """101 if the handshake is accepted (then closed), else the status it was refused with."""
    try:
        with connect(url, additional_headers=headers, proxy=None, open_timeout=30):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.fixture
def canary(upstream: int) -> Iterator[Canary]:
    c = Canary([("127.0.0.2", upstream), ("::1", upstream), ("127.0.0.2", 80), ("127.0.0.1", 80), ("127.0.0.1", 0)])
    yield c
    c.close()


@pytest.fixture
def strict(upstream: int) -> Iterator[str]:
    """A sidecar whose admin policy allows only the upstream's port."""
    proc = start_sidecar(env={"JUPYTER_LOOPBACK_ALLOWED_PORTS": str(upstream)})
    yield proc.match[1]
    proc.stop()


def test_ssrf_host_tricks_reach_no_other_host(strict: str, upstream: int, canary: Canary) -> None:
    """CVE-2022-21697 class: ``@``, ``:``, ``//``, backslash, IPv6 and encoded hosts never change the upstream.

    Guards loopback_asgi/sidecar/target.py: the upstream host is the namespace's, never
    text from the request, and the port segment must be canonical decimal.
    Seen failing with the port read leniently (``int(re.match(rb"\\d+", seg))``)
    and the upstream URL formatted from the path's text, as a naive proxy
    does: ``/app/<port>@127.0.0.2:<port>/json`` reached the 127.0.0.2 canary,
    which hung up, and the test saw that 502.
    """
    p = upstream
    tricks = [
        f"/app/{p}@127.0.0.2:{p}/json",
        f"/app/{p}@127.0.0.2/json",
        f"/app/{p}%40127.0.0.2/json",
        f"/app/{p}:{p}@127.0.0.2/json",
        f"/app/127.0.0.2:{p}/json",
        f"/app/[::1]:{p}/json",
        f"/app/{p}//127.0.0.2:{p}/json",
        f"/app/{p}/@127.0.0.2:{p}/json",
        f"/app/{p}\\@127.0.0.2/json",
        f"/app/{p}%5c@127.0.0.2/json",
        f"/app/{p}%2f%2f127.0.0.2:{p}/json",
        f"/app/0{p}/json",
        f"/app/{p}.0/json",
        f"/app/{p}%00@127.0.0.2/json",
        f"/app/{p}/..%2f..%2f127.0.0.2/json",
        f"/app@127.0.0.2/{p}/json",
        f"/app:{p}@127.0.0.2/{p}/json",
        "/app/80/json",
        f"/app/{p}/http://127.0.0.2:{p}/",
    ]
    statuses = []
    for path in tricks:
        r = http(strict, path, headers={**AUTH, "Host": f"127.0.0.2:{p}", "X-Forwarded-Host": f"127.0.0.2:{p}"})
        statuses.append(r.status_code)
        assert r.status_code < 500, (path, r.status_code, r.text)
    for path in tricks[:6]:
        with pytest.raises(InvalidStatus):
            connect(ws_url(strict, path), additional_headers=AUTH, proxy=None, open_timeout=10).close()
    assert canary.hits == []
    figure("test_security::ssrf", "host tricks tried (HTTP + WS)", len(tricks) + 6)
    figure("test_security::ssrf", "canary connections", len(canary.hits))


def test_port_policy_keeps_other_loopback_ports_out_of_reach(strict: str, upstream: int, canary: Canary) -> None:
    """Admin port policy (env ``JUPYTER_LOOPBACK_ALLOWED_PORTS``): other 127.0.0.1 ports answer 403, unreached.

    Guards the ``port not in ns.ports`` check in loopback_asgi/sidecar/target.py. Seen
    failing with that check removed: the request reached the 127.0.0.1 canary
    (and the test saw 502, not 403).
    """
    ports = [p for h, p in canary.listening if h == "127.0.0.1"]
    for port in ports:
        assert http(strict, f"/app/{port}/", headers=AUTH).status_code == 403
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(strict, f"/app/{port}/ws"), additional_headers=AUTH, proxy=None).close()
        assert info.value.response.status_code == 403
    assert canary.hits == []
    assert http(strict, f"/app/{upstream}/json", headers=AUTH).json() == {"hello": "world"}


XSS = ["<script>alert(1)</script>", "<img/src=x/onerror=alert(1)>", '"><svg/onload=alert(1)>', "'-alert(1)-'"]


def raw_get(base: str, target: str, accept: str) -> tuple[str, dict[str, str], str]:
    """GET with the target sent byte for byte (an HTTP client would percent-encode ``<``)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        head = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: token {TOKEN}\r\n"
        sock.sendall(f"{head}Accept: {accept}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    top, _, body = data.decode("latin-1").partition("\r\n\r\n")
    status, *lines = top.split("\r\n")
    return status.split()[1], {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}, body


@pytest.mark.parametrize("where", ["namespace", "port"])
def test_error_pages_escape_what_they_echo(sidecar: str, where: str) -> None:
    """CVE-2024-35225 class: reflected markup in an error page is escaped and marked ``nosniff``.

    Guards loopback_asgi/sidecar/errors.py (``html.escape`` and
    ``X-Content-Type-Options: nosniff`` on every error). Seen failing with
    ``html.escape`` removed (the raw ``<script>`` came back in the 404 page)
    and, separately, with the nosniff header removed (KeyError on the header).
    """
    for payload in XSS:
        path = f"/{payload}/8000/" if where == "namespace" else f"/app/{payload}/"
        for accept in ("text/html", "*/*", "application/json", "text/html;q=0.9"):
            status, headers, body = raw_get(sidecar, path, accept)
            assert status in ("400", "404")
            assert headers["x-content-type-options"] == "nosniff"
            if "html" in headers["content-type"]:
                echoed = body.split("<p>", 1)[1].rsplit("</p>", 1)[0]
                assert not set(echoed) & set("<>\"'"), echoed
            else:
                assert headers["content-type"].startswith(("text/plain", "application/json"))
    figure("test_security::xss", f"payloads x Accept ({where})", len(XSS) * 4)


CREDENTIAL_COOKIES = {
    "_xsrf": "2|xsrf",
    "username-127-0-0-1-8888": "jupyter-login",
    "jupyterhub-session-id": "hub-session",
    "jupyterhub-user-alice": "hub-user",
    "jupyterhub-hub-login": "hub-login",
    "jupyter-loopback-token": TOKEN,
}


def test_jupyter_credentials_never_reach_the_upstream(sidecar: str, upstream: int) -> None:
    """jupyter-server-proxy #590 class: Jupyter's cookies, token header and ``?token=``/``_xsrf`` are stripped.

    Guards loopback_asgi/sidecar/headers.py (``CREDENTIAL_COOKIE`` filter,
    ``Authorization: token`` removal) and target.py's ``strip_credentials``.
    Seen failing three times, one removal each: the cookie filter bypassed
    (``_filter_cookies`` returning its input: the upstream saw every Jupyter
    and Hub cookie), the ``Authorization: token`` rule removed (the upstream
    saw the header), ``strip_credentials`` disabled (the upstream saw
    ``token=`` and ``_xsrf=``).
    """
    cookie = "; ".join(f"{k}={v}" for k, v in {**CREDENTIAL_COOKIES, "app": "keep"}.items())
    r = http(
        sidecar,
        f"/app/{upstream}/echo?token={TOKEN}&a=1&_xsrf=2|xsrf",
        headers={**AUTH, "Cookie": cookie, "X-XSRFToken": "2|xsrf"},
    )
    seen = r.json()
    headers = dict(seen["headers"])
    assert "authorization" not in headers
    assert headers["cookie"] == "app=keep"
    assert seen["query"] == "a=1"
    flat = json.dumps(seen)
    for secret in (TOKEN, "hub-session", "hub-user", "hub-login", "jupyter-login"):
        assert secret not in flat
    # The same on a WebSocket handshake.
    with connect(
        ws_url(sidecar, f"/app/{upstream}/ws-headers?token={TOKEN}"),
        additional_headers={**AUTH, "Cookie": cookie},
        proxy=None,
    ) as ws:
        ws_headers = dict(json.loads(ws.recv(timeout=10)))
    assert "authorization" not in ws_headers and ws_headers["cookie"] == "app=keep"
    assert TOKEN not in json.dumps(ws_headers)


ORIGIN = {"Origin": "http://evil.example"}


def test_no_wildcard_cors_anywhere(sidecar: str, upstream: int) -> None:
    """jupyter-loopback 0.3.3 class: the sidecar itself never grants CORS (no ``Access-Control-Allow-Origin: *``).

    Guards create_app's middleware list (no CORS middleware). Seen failing with
    Starlette's ``CORSMiddleware(allow_origins=["*"])`` added, as 0.3.3 did.
    """
    preflight = {**ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-a"}
    answers = [
        http(sidecar, f"/app/{upstream}/json", headers={**AUTH, **ORIGIN}),
        http(sidecar, f"/app/{upstream}/json", "OPTIONS", headers={**AUTH, **preflight}),
        http(sidecar, f"/app/{upstream}", headers={**AUTH, **ORIGIN}),
        http(sidecar, "/nope/1/", headers={**AUTH, **ORIGIN}),
        http(sidecar, "/app/1/", "OPTIONS", headers={**AUTH, **preflight}),
        http(sidecar, f"/app/{upstream}/json", "OPTIONS", headers=preflight),
        http(sidecar, "/_loopback/health", headers={**AUTH, **ORIGIN}),
    ]
    for r in answers:
        assert not any(k.lower().startswith("access-control-") for k in r.headers), (r.url, r.headers)


def test_cross_site_unsafe_requests_are_refused(sidecar: str, upstream: int) -> None:
    """CSRF: a foreign ``Origin`` or ``Sec-Fetch-Site: cross-site`` on POST/PUT/PATCH/DELETE or a WebSocket is 403.

    Guards ``cross_site`` in loopback_asgi/sidecar/app.py. Seen failing with the check
    short-circuited (``return False``): the foreign POST reached the upstream (200).
    """
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for headers in (ORIGIN, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
            r = http(sidecar, f"/app/{upstream}/echo", method, headers={**AUTH, **headers}, content=b"x")
            assert r.status_code == 403, (method, headers)
    with pytest.raises(InvalidStatus) as info:
        connect(
            ws_url(sidecar, f"/app/{upstream}/ws"),
            additional_headers=AUTH,
            origin="http://evil.example",  # type: ignore[arg-type]
            proxy=None,
        ).close()
    assert info.value.response.status_code == 403
    same = {"Origin": sidecar, "Sec-Fetch-Site": "same-origin"}
    assert http(sidecar, f"/app/{upstream}/echo", "POST", headers={**AUTH, **same}, content=b"x").status_code == 200


def test_tcp_sidecar_without_its_token_is_401_and_dials_nothing(sidecar: str, canary: Canary) -> None:
    """Unauthenticated access (0.3.3 served anonymous requests): no token, no relay, HTTP and WebSocket alike.

    Guards ``TokenAuth`` in loopback_asgi/sidecar/app.py. Seen failing with the
    middleware left out of create_app: the first request was relayed to the
    canary port (502 when the canary hung up) instead of answered 401.
    """
    port = next(p for h, p in canary.listening if h == "127.0.0.1" and p != 80)
    wrong = [
        {},
        {"Authorization": "token wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"token {TOKEN[:-1]}"},
        {"Authorization": "token"},
        {"Cookie": "jupyter-loopback-token=nope"},
        {"Cookie": f"other={TOKEN}"},
    ]
    count = 0
    for headers in wrong:
        for method in ("GET", "POST", "OPTIONS", "DELETE"):
            r = http(sidecar, f"/app/{port}/x", method, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "token"
            count += 1
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(sidecar, f"/app/{port}/ws"), additional_headers=headers, proxy=None).close()
        assert info.value.response.status_code == 401
        count += 1
    for query in ("?token=", "?token=wrong", f"?tokenx={TOKEN}", f"?x=1&token={TOKEN}x"):
        assert http(sidecar, f"/app/{port}/x{query}").status_code == 401
        count += 1
    assert canary.hits == []
    figure("test_security::unauthenticated", "requests without a valid token (all 401)", count)


@pytest.mark.parametrize(
    ("env", "path", "status"),
    [
        ({"JUPYTER_LOOPBACK_DISABLED_NAMESPACES": "app"}, "/app/{port}/json", 404),
        ({"JUPYTER_LOOPBACK_ENABLED_NAMESPACES": "other"}, "/app/{port}/json", 404),
        ({"JUPYTER_LOOPBACK_ENABLED_NAMESPACES": "app"}, "/app/{port}/json", 200),
        ({"JUPYTER_LOOPBACK_ALLOWED_PORTS": "1-1023"}, "/app/{port}/json", 404),
        ({"JUPYTER_LOOPBACK_ALLOWED_PORTS": "{port}"}, "/app/{port}/json", 200),
        ({"JUPYTER_LOOPBACK_ALLOWED_PORTS": "{port}"}, "/app/{other}/json", 403),
    ],
)
def test_admin_policy_from_the_environment(env: dict[str, str], path: str, status: int, upstream: int) -> None:
    """The standalone sidecar reads the admin policy from ``JUPYTER_LOOPBACK_*``.

    (A port policy that leaves a namespace no port at all removes the namespace: 404.)
    """
    fill = {"port": upstream, "other": upstream + 1 if upstream < 65535 else upstream - 1}
    proc: Proc = start_sidecar(env={k: v.format(**fill) for k, v in env.items()})
    try:
        assert http(proc.match[1], path.format(**fill), headers=AUTH).status_code == status
    finally:
        proc.stop()


def test_max_connections_caps_upstream_websockets_too(upstream: int) -> None:
    """``JUPYTER_LOOPBACK_MAX_CONNECTIONS=2``: a third concurrent WebSocket waits the connect
    timeout (1 s here) for a slot, then is refused with 503; once one closes, it gets through.

    Regression: the cap used to apply to HTTP only, so WebSockets could hold any number of
    upstream connections (seen failing without ``max_connections`` passed to the relay: 101).
    """
    env = {"JUPYTER_LOOPBACK_MAX_CONNECTIONS": "2", "JUPYTER_LOOPBACK_CONNECT_TIMEOUT": "1"}
    proc = start_sidecar(env=env)
    url = ws_url(proc.match[1], f"/app/{upstream}/ws")
    try:
        with (
            connect(url, additional_headers=AUTH, proxy=None) as first,
            connect(url, additional_headers=AUTH, proxy=None),
        ):
            started = time.monotonic()
            assert ws_status(url, AUTH) == 503
            assert 0.9 < time.monotonic() - started < 5
            first.close()
            with connect(url, additional_headers=AUTH, proxy=None, open_timeout=10) as third:
                third.send("x")
                assert third.recv(timeout=10) == "x"
    finally:
        proc.stop()
