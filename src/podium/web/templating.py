"""Jinja2 rendering for the dashboard: one environment per app, shared filters.

Pages are rendered on the server with everything a reader needs; the small
scripts in ``web/static`` only add live behaviour (actions through the API,
log following). The caller and the CSRF token are added to every page's
context, so templates never look them up themselves; the token reaches page
scripts through ``<meta name="csrf-token">``, never a cookie.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from podium import __version__, auth
from podium.appmodes import APP_MODE_ORDINALS

WEB_DIR = Path(__file__).parent
STATIC_PREFIX = "/__static__"

APP_MODE_LABELS: dict[str, str] = {
    "unknown": "—",
    "static": "Static site",
    "python-fastapi": "FastAPI",
    "python-api": "Python API (WSGI)",
    "python-dash": "Dash",
    "python-streamlit": "Streamlit",
    "python-shiny": "Shiny for Python",
    "python-bokeh": "Bokeh",
    "python-panel": "Panel",
    "python-gradio": "Gradio",
    "jupyter-static": "Jupyter notebook",
    "jupyter-voila": "Voilà",
    "quarto-static": "Quarto document",
    "quarto-shiny": "Quarto Shiny",
    "rmd-static": "R Markdown",
    "rmd-shiny": "R Markdown Shiny",
    "shiny": "Shiny (R)",
    "api": "Plumber API (R)",
}


def app_mode_label(mode: str | None) -> str:
    return APP_MODE_LABELS.get(mode or "unknown", mode or "unknown")


def human_bytes(value: float | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            text = f"{size:.0f}" if unit == "bytes" or size == int(size) else f"{size:.1f}"
            return f"{text} {unit}"
        size /= 1024
    return f"{value} bytes"


def number(value: float | None) -> str:
    """``2`` rather than ``2.0``; None as a dash."""
    if value is None:
        return "—"
    return f"{value:g}" if isinstance(value, float) else str(value)


def cores(value: float | None) -> str:
    if not value:
        return "none"
    return f"{number(value)} core{'' if value == 1 else 's'}"


def when(value: datetime | str | None) -> str:
    """A UTC time as ``2024-05-01 13:02 UTC`` (the API's ISO form stays in attributes)."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    else:
        moment = value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(WEB_DIR / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        app_mode=app_mode_label, human_bytes=human_bytes, when=when, num=number, cores=cores
    )
    env.globals.update(
        static=lambda name: f"{STATIC_PREFIX}/{name}?v={__version__}",
        app_modes=[m for m in APP_MODE_ORDINALS if m != "unknown"],
    )
    return env


def render(
    request: Request,
    template: str,
    user: Any = None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    env: Environment = request.app.state.templates
    html = env.get_template(template).render(
        request=request,
        user=user,
        is_admin=auth.at_least(user, "administrator"),
        is_publisher=auth.at_least(user, "publisher"),
        # The signed-in session's token (set on request.state by api.deps.resolve_caller),
        # delivered only inside dashboard pages, which no other origin can read.
        csrf_token=getattr(request.state, "csrf_token", ""),
        isolation_problem=(
            request.app.state.isolation.problem() if auth.at_least(user, "administrator") else None
        ),
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    # Pages show per-user data: never let a shared cache keep them.
    response.headers["Cache-Control"] = "no-store"
    return response
