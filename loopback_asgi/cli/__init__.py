"""The ``jupyter-loopback`` command: ``serve`` runs the sidecar, ``doctor`` explains the setup."""

from __future__ import annotations

from loopback_asgi.cli.main import main

__all__ = ["main"]
