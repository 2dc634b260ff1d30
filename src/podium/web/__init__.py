"""The dashboard: server-rendered pages for publishers, viewers and administrators.

``install(app)`` adds everything the browser needs to the app: the sign-in
pages, the dashboard under ``/connect/`` (where Connect clients' dashboard
links point), and the static files under ``/__static__/``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from podium.urls import Urls
from podium.web import (
    admin,
    admin_inventory,
    admin_tags,
    content_pages,
    groups,
    login,
    oauth_signin,
    pages,
    profile,
    publish,
    usage_view,
)
from podium.web.templating import STATIC_PREFIX, WEB_DIR, make_environment

_PAGE_PREFIXES = ("/connect", "/__login__", "/__logout__", "/__oauth__", STATIC_PREFIX)


def page_headers(urls: Urls) -> list[tuple[bytes, bytes]]:
    """Dashboard pages are never framed (clickjacking: a published page cannot load them in
    a frame to act through them), frame only the content origin (and this one, which the
    sign-in hand-off passes through), are never sniffed, and send no Referer beyond this
    origin."""
    frames = urls.content_origin.replace("{guid}", "*").encode()
    return [
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", b"frame-ancestors 'none'; frame-src 'self' " + frames),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    ]


class PageHeaders:
    """Adds :func:`page_headers` to the dashboard's responses (content is left alone:
    publishers may want their pages embedded)."""

    def __init__(self, app: Any, headers: list[tuple[bytes, bytes]]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/" or path.startswith(_PAGE_PREFIXES)):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *(h for h in self.headers if h[0] not in names)]
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI) -> None:
    app.state.templates = make_environment()
    app.add_middleware(PageHeaders, headers=page_headers(app.state.urls))
    pages.install_handlers(app)
    app.mount(STATIC_PREFIX, StaticFiles(directory=WEB_DIR / "static"), name="static")
    for module in (login, content_pages, publish, profile, admin, admin_tags, admin_inventory, usage_view, groups, oauth_signin):
        app.include_router(module.router, include_in_schema=False)
