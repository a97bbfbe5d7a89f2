"""Namespaces (loopback_asgi/namespaces.py): entry points, port policy, admin policy."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest

from loopback_asgi import Namespace, Policy, PortPolicy
from loopback_asgi.namespaces import discover_namespaces

from .conftest import ROOT, TOKEN, start_sidecar


def make_plugin(tmp_path: Path, entries: dict[str, str], module: str) -> Path:
    """A real installed distribution (dist-info + module) declaring ``entries``."""
    (tmp_path / "fakelib.py").write_text(textwrap.dedent(module))
    info = tmp_path / "fakelib-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakelib\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {value}" for name, value in entries.items())
    (info / "entry_points.txt").write_text(f"[jupyter_loopback.namespaces]\n{lines}\n")
    return tmp_path


PLUGIN = """
    from loopback_asgi import Namespace
    FULL = Namespace(ports="8000-8010", strip_prefix=False, rewrite_redirects=False)
    PLAIN = {}
    AS_DICT = {"ports": [9000, (9100, 9200)], "websocket": False}
    BAD_FIELD = {"colour": "blue"}
    def _boom():
        raise RuntimeError("boom")
"""
ENTRIES = {
    "full": "fakelib:FULL",
    "plain": "fakelib:PLAIN",
    "as-dict": "fakelib:AS_DICT",
    "bad-field": "fakelib:BAD_FIELD",
    "missing": "fakelib:NOT_THERE",
    "gone": "no_such_module:X",
    "Bad_Name": "fakelib:PLAIN",
}


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = make_plugin(tmp_path, ENTRIES, PLUGIN)
    monkeypatch.syspath_prepend(str(path))
    return path


def test_entry_points_load_and_broken_ones_are_skipped_with_a_warning(
    plugin_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    found, failures = discover_namespaces()
    assert found["full"] == Namespace(name="full", ports="8000-8010", strip_prefix=False, rewrite_redirects=False)
    assert found["plain"] == Namespace(name="plain")
    assert found["as-dict"].ports == PortPolicy(((9000, 9000), (9100, 9200)))
    assert found["as-dict"].websocket is False
    assert found["app"] == Namespace(name="app")
    assert set(failures) == {"bad-field", "missing", "gone", "Bad_Name"}
    assert "colour" in failures["bad-field"]
    assert {r.getMessage().split("'")[1] for r in caplog.records} >= set(failures)


def test_a_live_sidecar_serves_declared_namespaces_and_survives_broken_ones(plugin_path: Path, upstream: int) -> None:
    proc = start_sidecar(env={"PYTHONPATH": f"{ROOT}:{plugin_path}"})
    try:
        base = proc.match[1]
        with httpx.Client(headers={"Authorization": f"token {TOKEN}"}, trust_env=False) as client:
            health = client.get(f"{base}/_loopback/health").json()
            assert set(health["namespaces"]) == {"app", "full", "plain", "as-dict"}
            assert "missing" in health["failures"]
            plain = client.get(f"{base}/plain/{upstream}/echo/p").json()
            assert plain["raw_path"] == "/echo/p"
        assert any("skipped" in line and "gone" in line for line in proc.output)
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("value", "ranges"),
    [
        ("1024-65535", ((1024, 65535),)),
        ("8000, 8050-8060", ((8000, 8000), (8050, 8060))),
        (8888, ((8888, 8888),)),
        (range(3000, 3010), ((3000, 3009),)),
        ((5000, 5005), ((5000, 5005),)),
        ([80, 443, (8000, 8100)], ((80, 80), (443, 443), (8000, 8100))),
    ],
)
def test_port_policy_spellings(value: object, ranges: tuple[tuple[int, int], ...]) -> None:
    policy = PortPolicy.parse(value)
    assert policy.ranges == ranges
    assert PortPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize("value", ["0-10", "70000", "9-3", "", "x", 1.5, [], range(5, 5), range(0, 10, 2)])
def test_bad_port_policies_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        PortPolicy.parse(value)


def test_namespace_validates_its_fields() -> None:
    with pytest.raises(ValueError):
        Namespace(host="10.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Namespace(name="Upper")
    with pytest.raises(ValueError):
        Namespace(connect_timeout=0)
    assert 8000 in Namespace(ports="8000").ports
    assert 8001 not in Namespace(ports="8000").ports


def test_policy_narrows_and_round_trips_through_the_environment() -> None:
    declared = {"a": Namespace(name="a"), "b": Namespace(name="b", ports="9000-9100"), "c": Namespace(name="c")}
    policy = Policy(
        enabled=frozenset({"a", "b"}),
        disabled=frozenset({"a"}),
        ports=PortPolicy.parse("8000-9050"),
        header_timeout=5.0,
        max_connections=7,
    )
    served = policy.apply(declared)
    assert set(served) == {"b"}
    assert served["b"].ports == PortPolicy(((9000, 9050),))
    assert served["b"].header_timeout == 5.0
    assert Policy.from_env(policy.to_env()) == policy
    assert Policy.from_env({}) == Policy()


def test_policy_drops_a_namespace_left_with_no_port() -> None:
    served = Policy(ports=PortPolicy.parse("100")).apply({"a": Namespace(name="a")})
    assert served == {}
