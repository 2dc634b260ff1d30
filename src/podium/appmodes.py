"""App modes: what kind of content a bundle is (names and ordinals as Connect's)."""

from __future__ import annotations

APP_MODE_ORDINALS: dict[str, int] = {
    "unknown": 0,
    "shiny": 1,
    "rmd-shiny": 2,
    "rmd-static": 3,
    "static": 4,
    "api": 5,
    "tensorflow-saved-model": 6,
    "jupyter-static": 7,
    "python-api": 8,
    "python-dash": 9,
    "python-streamlit": 10,
    "python-bokeh": 11,
    "python-fastapi": 12,
    "quarto-shiny": 13,
    "quarto-static": 14,
    "python-shiny": 15,
    "jupyter-voila": 16,
    "python-gradio": 17,
    "python-panel": 18,
    "nodejs": 20,
}
INTERACTIVE = frozenset(
    {
        "api",
        "jupyter-voila",
        "python-api",
        "python-bokeh",
        "python-dash",
        "python-fastapi",
        "python-gradio",
        "python-panel",
        "python-shiny",
        "python-streamlit",
        "quarto-shiny",
        "rmd-shiny",
        "shiny",
        "tensorflow-saved-model",
    }
)
RENDERED = frozenset({"rmd-static", "jupyter-static", "quarto-static"})
# Python app modes Podium builds a package environment for and runs as processes.
PYTHON_INTERACTIVE = frozenset(
    {
        "python-fastapi",
        "python-api",
        "python-dash",
        "python-streamlit",
        "python-shiny",
        "python-bokeh",
        "python-panel",
        "python-gradio",
        "jupyter-voila",
    }
)
# R app modes Podium runs as processes: Shiny apps and Plumber APIs.
R_INTERACTIVE = frozenset({"shiny", "api"})
