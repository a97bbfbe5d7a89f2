"""Small apps for the framework tests (marimo, Solara, Shiny), run by each framework's own server."""
