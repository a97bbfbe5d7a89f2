"""Header rewriting rules (loopback_asgi/sidecar/headers.py) on their own."""

from __future__ import annotations

import pytest

from loopback_asgi import Namespace
from loopback_asgi.sidecar.headers import request_headers, response_headers, rewrite_cookie_path, rewrite_location
from loopback_asgi.sidecar.target import resolve

NAMESPACES = {"lib": Namespace(name="lib"), "keep": Namespace(name="keep", strip_prefix=False)}
TARGET = resolve(b"/lib/8000/x", b"", NAMESPACES, "/user/a/loopback")
PREFIX = "/user/a/loopback/lib/8000"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("http://127.0.0.1:8000/x?y=1#f", f"{PREFIX}/x?y=1#f"),
        ("http://127.0.0.1:8000", f"{PREFIX}/"),
        ("http://localhost:8000/a", f"{PREFIX}/a"),
        ("http://127.0.0.1:80001/a", "http://127.0.0.1:80001/a"),
        ("http://127.0.0.1:9000/a", "http://127.0.0.1:9000/a"),
        ("/", f"{PREFIX}/"),
        (f"{PREFIX}/dash/", f"{PREFIX}/dash/"),
        (PREFIX, PREFIX),
        (f"{PREFIX}x/not-inside", f"{PREFIX}{PREFIX}x/not-inside"),
        ("//evil.example/x", "//evil.example/x"),
        ("next", "next"),
    ],
)
def test_location(location: str, expected: str) -> None:
    assert rewrite_location(location, TARGET) == expected


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        (b"a=1; Path=/", f"a=1; Path={PREFIX}".encode()),
        (b"a=1; path=/sub; HttpOnly", f"a=1; path={PREFIX}/sub; HttpOnly".encode()),
        (f"a=1; Path={PREFIX}/in".encode(), f"a=1; Path={PREFIX}/in".encode()),
        (b"a=1; HttpOnly", b"a=1; HttpOnly"),
        (b"a=1; Path=relative", b"a=1; Path=relative"),
    ],
)
def test_cookie_path(cookie: bytes, expected: bytes) -> None:
    assert rewrite_cookie_path(cookie, TARGET) == expected


def test_rewriting_can_be_turned_off_per_namespace() -> None:
    ns = {"raw": Namespace(name="raw", rewrite_redirects=False, rewrite_cookie_path=False)}
    target = resolve(b"/raw/8000/", b"", ns)
    headers = [(b"location", b"/x"), (b"set-cookie", b"a=1; Path=/")]
    assert response_headers(headers, target) == headers


def test_keep_prefix_sends_the_public_path_upstream() -> None:
    target = resolve(b"/keep/8000/a/b", b"q=1", NAMESPACES, "/base/loopback")
    assert target.path == "/base/loopback/keep/8000/a/b"
    assert target.target == "/base/loopback/keep/8000/a/b?q=1"


def test_trusted_forwarded_headers_extend_the_chain() -> None:
    incoming = [
        (b"host", b"127.0.0.1"),
        (b"x-forwarded-for", b"203.0.113.9"),
        (b"x-forwarded-host", b"hub.example.org"),
        (b"x-forwarded-proto", b"https"),
    ]
    out = dict(request_headers(incoming, TARGET, client="127.0.0.1", scheme="http", trust_forwarded=True))
    assert out[b"x-forwarded-for"] == b"203.0.113.9, 127.0.0.1"
    assert out[b"x-forwarded-host"] == b"hub.example.org"
    assert out[b"x-forwarded-proto"] == b"https"
    assert out[b"x-forwarded-prefix"] == PREFIX.encode()


def test_secret_bearer_is_dropped_but_other_authorization_kept() -> None:
    secret = [(b"authorization", b"Bearer s3cret")]
    other = [(b"authorization", b"Basic dXNlcjpwdw==")]
    assert b"authorization" not in dict(
        request_headers(secret, TARGET, client=None, scheme="http", secrets=[b"s3cret"])
    )
    assert dict(request_headers(other, TARGET, client=None, scheme="http", secrets=[b"s3cret"]))[b"authorization"]


def test_repeated_response_headers_keep_their_order() -> None:
    headers = [(b"set-cookie", b"a=1"), (b"x", b"1"), (b"set-cookie", b"b=2"), (b"set-cookie", b"c=3")]
    assert [v for k, v in response_headers(headers, TARGET) if k == b"set-cookie"] == [b"a=1", b"b=2", b"c=3"]


def test_one_hop_by_hop_list_for_every_path() -> None:
    """The sidecar, the adapter (``HOP_BY_HOP_STR``) and the comm bridge drop the same names."""
    from loopback_asgi.jupyter import handler as jupyter_relay
    from loopback_asgi.jupyter import response as jupyter_response
    from loopback_asgi.sidecar.headers import HOP_BY_HOP, HOP_BY_HOP_STR

    assert {b"forwarded", b"expect"} <= HOP_BY_HOP
    assert HOP_BY_HOP_STR == {n.decode() for n in HOP_BY_HOP}
    assert jupyter_relay.HOP_BY_HOP_STR is HOP_BY_HOP_STR is jupyter_response.HOP_BY_HOP_STR
    incoming = [(b"forwarded", b"for=6.6.6.6"), (b"expect", b"100-continue"), (b"x-kept", b"1")]
    out = dict(request_headers(incoming, TARGET, client=None, scheme="http"))
    assert b"forwarded" not in out and b"expect" not in out and out[b"x-kept"] == b"1"
