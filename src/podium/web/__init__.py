"""The dashboard: server-rendered pages for publishers, viewers and administrators.

``install(app)`` adds everything the browser needs to the app: the sign-in
pages, the dashboard under ``/connect/`` (where Connect clients' dashboard
links point), and the static files under ``/__static__/``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from podium.web import admin, content_pages, login, pages, profile, publish
from podium.web.templating import STATIC_PREFIX, WEB_DIR, make_environment


def install(app: FastAPI) -> None:
    app.state.templates = make_environment()
    pages.install_handlers(app)
    app.mount(STATIC_PREFIX, StaticFiles(directory=WEB_DIR / "static"), name="static")
    for module in (login, content_pages, publish, profile, admin):
        app.include_router(module.router, include_in_schema=False)
