"""The comm bridge in a marimo notebook: ``marimo edit`` or ``marimo run`` this file.

Each browser session (``marimo run`` runs a kernel thread per tab) gets its own
bridge from ``enable_comm_bridge()``; the upstream runs in the same process.
"""

import marimo

app = marimo.App()


@app.cell
def _():
    from comm_bridge import enable_comm_bridge
    from tests.apps.common import info, serve

    port = serve()
    bridge = enable_comm_bridge(display=False)
    bridge  # noqa: B018 - a cell shows its last expression
    return bridge, info, port


@app.cell
def _(bridge, info, port):
    import marimo as mo

    mo.Html(f'<pre class="loopback-info">{info(port, bridge)}</pre>')
    return


if __name__ == "__main__":
    app.run()
