"""The public names are exactly what the README and SPEC promise."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import jupyter_loopback
import loopback_asgi

PROMISED = {
    "Namespace",
    "Policy",
    "PortPolicy",
    "Reach",
    "__version__",
    "autodetect_prefix",
    "browser_url",
    "create_app",
    "mount_into",
    "reach",
    "setup_proxy_handler",
}


def test_loopback_asgi_exports() -> None:
    assert set(loopback_asgi.__all__) == PROMISED
    for name in PROMISED:
        assert getattr(loopback_asgi, name) is not None


# 0.3.3's __all__, plus __version__ (0.3.3 had it too, outside __all__).
PROMISED_0_3 = {
    "CommBridge",
    "LoopbackProxyHandler",
    "RequestHandler",
    "__version__",
    "autodetect_prefix",
    "enable_comm_bridge",
    "intercept_localhost",
    "is_comm_bridge_enabled",
    "is_in_jupyter_kernel",
    "off_request",
    "on_request",
    "setup_proxy_handler",
}


def test_jupyter_loopback_exports() -> None:
    assert set(jupyter_loopback.__all__) == PROMISED_0_3
    for name in PROMISED_0_3:
        assert getattr(jupyter_loopback, name) is not None
    assert jupyter_loopback.__version__ == loopback_asgi.__version__


@pytest.mark.parametrize("module", ["_comm", "_server"])
def test_jupyter_loopback_modules_declare_all(module: str) -> None:
    mod = importlib.import_module(f"jupyter_loopback.{module}")
    assert mod.__all__
    for name in mod.__all__:
        assert hasattr(mod, name), f"jupyter_loopback.{module}.{name}"


def _modules(package: str) -> list[str]:
    root = importlib.import_module(package)
    return [m.name for m in pkgutil.walk_packages(root.__path__, f"{package}.") if not m.name.endswith("__main__")]


@pytest.mark.parametrize("module", _modules("loopback_asgi") + _modules("comm_bridge"))
def test_every_module_declares_all(module: str) -> None:
    mod = importlib.import_module(module)
    assert isinstance(mod.__all__, list)  # a package that only groups modules exports nothing itself
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"
