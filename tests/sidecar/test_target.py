"""Property tests: no request path leads the sidecar anywhere but loopback:<allowed port>.

``resolve()`` (loopback_asgi/sidecar/target.py) maps a raw request path to a target;
the relays then build an ``httpx.URL`` (HTTP) and a ``ws://`` URI (WebSocket)
from it. Hypothesis throws raw paths made of the pieces SSRF tricks are made
of (``@``, ``:``, ``//``, backslash, ``..``, percent-encodings, IPv6 literals,
other loopback and remote hosts, leading zeros, huge numbers, unicode, control
bytes) and checks the URLs both relays would use.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.uri import parse_uri

from loopback_asgi.namespaces import Namespace, Policy, PortPolicy
from loopback_asgi.sidecar.target import Target, TargetError, resolve, strip_credentials
from tests.security_fixtures import figure

NAMESPACES = {
    "app": Namespace(name="app"),
    "six": Namespace(name="six", host="::1", ports="8000-8010"),
    "keep": Namespace(name="keep", ports=[8888, (9000, 9001)], strip_prefix=False),
}
CANONICAL_PORT = re.compile(rb"[1-9][0-9]{0,4}")

TRICKS = [
    "@",
    ":",
    "//",
    "\\",
    "..",
    ".",
    "%2e",
    "%2E%2E",
    "%2f",
    "%2F",
    "%40",
    "%3a",
    "%5c",
    "%00",
    "%25",
    "#",
    "?",
    "[::1]",
    "[::ffff:127.0.0.2]",
    "127.0.0.2",
    "0x7f.1",
    "0177.0.0.1",
    "2130706434",
    "localhost",
    "evil.example",
    "user:pass@",
    "http://",
    "ws://",
    ";",
    ",",
    "\u2215",
    "\uff0f",
    "\u2024",
    "\u0131",
    "\ufeff",
    "\u202e",
    "\x00",
    "\t",
    " ",
    "\r\n",
    "\x7f",
    "0",
    "00",
    "08000",
    "65536",
    "99999999999999999999",
    "-1",
    "+80",
    "8000 ",
    "1e3",
]
piece = st.one_of(
    st.sampled_from(TRICKS).map(lambda s: s.encode("utf-8")),
    st.text(max_size=6).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=6),
    st.integers(min_value=0, max_value=10**12).map(lambda n: str(n).encode()),
    st.sampled_from(sorted(NAMESPACES)).map(str.encode),
)
segment = st.lists(piece, max_size=5).map(b"".join)
good_head = st.one_of(
    st.sampled_from([b"/app/8000", b"/six/8005", b"/keep/8888", b"/keep/9001", b"/app/65535", b"/app/1024"]),
    st.builds(lambda n: b"/app/%d" % n, st.integers(1024, 65535)),
)
raw_paths = st.one_of(
    st.builds(lambda head, rest: head + rest, good_head, segment),
    st.builds(lambda head, parts: head + b"/" + b"/".join(parts), good_head, st.lists(segment, max_size=5)),
    st.builds(lambda parts: b"/" + b"/".join(parts), st.lists(segment, min_size=1, max_size=6)),
    st.builds(lambda a, b, rest: b"/" + a + b"/" + b + rest, segment, segment, segment),
    st.binary(max_size=40),
)
queries = st.one_of(st.lists(piece, max_size=6).map(b"".join), st.binary(max_size=30))


def http_url(target: Target) -> httpx.URL:
    """The upstream URL exactly as loopback_asgi/sidecar/relay/http.py builds it."""
    return httpx.URL(scheme="http", host=target.host, port=target.port, raw_path=target.target.encode("latin-1"))


def ws_uri(target: Target) -> str:
    """The upstream URI exactly as loopback_asgi/sidecar/relay/websocket.py builds it."""
    return f"ws://{target.netloc}{target.target}"


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=raw_paths, query=queries)
def _maps_to_the_namespace_host_and_an_allowed_port(tried: dict[str, int], raw: bytes, query: bytes) -> None:
    tried["inputs"] += 1
    try:
        target = resolve(raw, query, NAMESPACES, "/user/a/loopback")
    except TargetError as exc:
        tried["refused"] += 1
        assert exc.status in (400, 403, 404)
        assert exc.message and "\n" not in exc.message and "Traceback" not in exc.message
        return
    tried["resolved"] += 1
    parts = raw.split(b"/", 3)
    ns = NAMESPACES[parts[1].decode()]
    assert CANONICAL_PORT.fullmatch(parts[2]) and int(parts[2]) == target.port
    assert target.port in ns.ports and target.host == ns.host
    url = http_url(target)
    assert (url.scheme, url.host, url.port or 80) == ("http", ns.host, target.port)
    assert url.raw_path.startswith(b"/") and url.userinfo == b""
    assert (url.netloc.decode(), httpx.Request("GET", url).headers["host"]) == (target.netloc, target.netloc)
    ws = parse_uri(ws_uri(target))
    assert (ws.host, ws.port, ws.user_info) == (ns.host, target.port, None)
    assert ws.resource_name.startswith("/")
    assert not {p.split(b"=", 1)[0] for p in url.query.split(b"&")} & {b"token", b"_xsrf"}


def test_any_path_maps_to_the_namespace_host_and_an_allowed_port() -> None:
    """Either a 400/403/404 with one sentence, or loopback:<allowed port> on both relays' URLs.

    The generated paths must reach both outcomes many times, or the property
    says little: a strategy that drifted to all-refused would pass unnoticed.
    """
    tried = {"inputs": 0, "resolved": 0, "refused": 0}
    _maps_to_the_namespace_host_and_an_allowed_port(tried)
    figure("test_target_properties", "bad/odd paths tried", tried["inputs"])
    figure("test_target_properties", "resolved / refused", f"{tried['resolved']} / {tried['refused']}")
    assert tried["inputs"] >= 1000
    assert tried["resolved"] >= tried["inputs"] // 10 and tried["refused"] >= tried["inputs"] // 10, tried


name_st = st.from_regex(re.compile(r"[a-z0-9][a-z0-9-]{0,20}"), fullmatch=True)
rest_st = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#"), max_size=30)


@settings(max_examples=500, deadline=None)
@given(port=st.integers(min_value=1, max_value=65535), rest=rest_st, strip=st.booleans(), bare=st.booleans())
def test_canonical_paths_map_exactly(port: int, rest: str, strip: bool, bare: bool) -> None:
    """``/<ns>/<port>/<rest>`` reaches ``/<rest>`` (or the prefix plus it) on that port, unchanged."""
    ns = Namespace(name="lib", ports="1-65535", strip_prefix=strip)
    raw = f"/lib/{port}" + ("" if bare else f"/{rest}")
    target = resolve(raw.encode(), b"a=1", {"lib": ns}, "/r")
    assert (target.port, target.prefix, target.bare) == (port, f"/r/lib/{port}", bare)
    sent = "/" + ("" if bare else rest)
    assert target.path == (sent if strip else f"/r/lib/{port}{sent}")
    assert (http_url(target).port or 80) == port  # httpx drops the default port 80 from the URL


@given(port=st.integers(min_value=-(10**30), max_value=10**30))
def test_a_port_outside_1_to_65535_or_spelled_oddly_is_400(port: int) -> None:
    ns = {"lib": Namespace(name="lib", ports="1-65535")}
    for spelling in (str(port), f"0{port}", f"+{port}", f"{port}.0", f" {port}", f"{port:x}x"):
        if CANONICAL_PORT.fullmatch(spelling.encode()) and 1 <= port <= 65535:
            continue
        with pytest.raises(TargetError) as info:
            resolve(f"/lib/{spelling}/x".encode(), b"", ns)
        assert info.value.status == 400


@given(port=st.integers(min_value=1, max_value=65535), allowed=st.lists(st.integers(1, 65535), min_size=1))
def test_a_port_outside_the_policy_is_403(port: int, allowed: list[int]) -> None:
    ns = {"lib": Namespace(name="lib", ports=allowed)}
    if port in allowed:
        assert resolve(f"/lib/{port}/".encode(), b"", ns).port == port
    else:
        with pytest.raises(TargetError) as info:
            resolve(f"/lib/{port}/".encode(), b"", ns)
        assert info.value.status == 403


@given(name=st.binary(max_size=12))
def test_only_a_declared_canonical_name_is_a_namespace(name: bytes) -> None:
    try:
        target = resolve(b"/" + name + b"/8000/x", b"", NAMESPACES)
    except TargetError as exc:
        assert exc.status in (400, 403, 404)
        if exc.status == 404:
            assert name.decode("latin-1") not in NAMESPACES
        return
    assert name.decode() in NAMESPACES and target.namespace is NAMESPACES[name.decode()]


param = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="&="), max_size=8)


def encodings(name: str) -> st.SearchStrategy[str]:
    """``name`` with any of its characters percent-encoded (either case), as tornado still reads it."""
    return st.lists(st.sampled_from(["", "%", "%l"]), min_size=len(name), max_size=len(name)).map(
        lambda how: "".join(
            c if h == "" else (f"%{ord(c):02X}" if h == "%" else f"%{ord(c):02x}")
            for c, h in zip(name, how, strict=True)
        )
    )


names = st.one_of(
    encodings("token"), encodings("_xsrf"), st.sampled_from(["a", "tok", "xsrf", "%74ok", "t%6Fke"]), param
)


@given(params=st.lists(st.tuples(names, param), max_size=8))
def test_credentials_never_stay_in_the_query_and_the_rest_does(params: list[tuple[str, str]]) -> None:
    """``token=`` and ``_xsrf=`` go, however percent-encoded their names (Jupyter decodes them
    and accepts ``?%74oken=<token>``); every other parameter stays byte for byte.

    Regression: the names were compared raw, so ``?%74oken=<token>`` authenticated with
    Jupyter and reached the upstream (seen through jupyter server; see test_security.py).
    """
    query = "&".join(f"{k}={v}" for k, v in params).encode()
    kept = strip_credentials(query)
    expected = [f"{k}={v}" for k, v in params if unquote_plus(k) not in ("token", "_xsrf")]
    assert kept == "&".join(expected).encode()


ranges = st.lists(st.tuples(st.integers(1, 65535), st.integers(0, 500)), min_size=1, max_size=4).map(
    lambda items: ",".join(f"{a}-{min(a + n, 65535)}" for a, n in items)
)


@given(declared=ranges, admin=ranges, port=st.integers(1, 65535))
def test_the_admin_port_policy_only_narrows(declared: str, admin: str, port: int) -> None:
    ns = {"lib": Namespace(name="lib", ports=declared)}
    served = Policy(ports=PortPolicy.parse(admin)).apply(ns)
    allowed = port in PortPolicy.parse(declared) and port in PortPolicy.parse(admin)
    assert (port in served["lib"].ports if "lib" in served else False) == allowed
