"""The comm bridge and the mounted sidecar in a Shiny app with shinywidgets: ``shiny run tests/apps/shiny_app.py``.

Shiny serves every browser session from one process: each session's
``enable_comm_bridge()`` returns that session's bridge, whose messages leave
on Shiny's loop inside the session. The sidecar is mounted into the app's
Starlette app at ``/loopback`` with one line.
"""

from shiny import App, render, ui
from shinywidgets import output_widget, render_widget

from comm_bridge import enable_comm_bridge
from loopback_asgi import mount_into
from tests.apps.common import info, serve

app_ui = ui.page_fluid(output_widget("bridge_view"), ui.div(ui.output_text("loopback_info"), class_="loopback-info"))


def server(input: object, output: object, session: object) -> None:
    port = serve()
    bridge = enable_comm_bridge(display=False)

    @render_widget  # type: ignore[misc]
    def bridge_view() -> object:
        return bridge

    @render.text
    def loopback_info() -> str:
        return info(port, bridge)


app = App(app_ui, server)
mount_into(app)
