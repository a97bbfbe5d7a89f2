"""The comm bridge and the mounted sidecar in a Solara app: ``solara run tests/apps/solara_app.py``.

Solara serves every browser page from one process, each in its own virtual
kernel: each page's ``enable_comm_bridge()`` returns that page's bridge. The
sidecar is mounted into Solara's Starlette app at ``/loopback`` with one line.
"""

import solara
import solara.server.starlette

from comm_bridge import enable_comm_bridge
from loopback_asgi import mount_into
from tests.apps.common import info, serve

mount_into(solara.server.starlette.app)


@solara.component
def Page() -> None:
    port = serve()
    bridge = solara.use_memo(lambda: enable_comm_bridge(display=False), [])
    solara.display(bridge)
    solara.Text(info(port, bridge), classes=["loopback-info"])
