"""tests/apps/marimo_app.py served by marimo's ASGI API, with the sidecar mounted in one line.

``uvicorn tests.apps.marimo_server:server``: marimo runs the notebook as
``marimo run`` does (a kernel thread per tab, in this process), so
``browser_url`` in the notebook returns the mounted path.
"""

from pathlib import Path

import marimo

from loopback_asgi import mount_into

server = marimo.create_asgi_app().with_app(path="", root=str(Path(__file__).with_name("marimo_app.py"))).build()
mount_into(server)
