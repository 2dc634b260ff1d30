"""The content router: decides, per request, where ``/content/{guid}/...`` goes.

Interactive content is forwarded to a process leased from the scheduler, with
the viewer's Podium credentials stripped and identity headers added. Anything
else (static files, sign-in redirects, refusals, unknown content) is passed to
the app, which answers it with the same rules. Content records and callers are
cached briefly so the hot path rarely touches the database; API changes
invalidate the content cache at once on this node.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

from sqlalchemy import select

from podium import auth
from podium.proxy.decisions import PASS_TO_APP, Forward, PassToApp, Respond
from podium.scheduler import AppTarget, Scheduler, Unavailable
from podium.store import Store
from podium.store.models import Content, Permission, User

_CONTENT_TTL = 2.0
_USER_TTL = 5.0
_PATH = re.compile(rb"^/content/([0-9a-fA-F-]{36})(/.*)?$")
_DRAFT = re.compile(rb"^/_bundle(\d+)(/.*)?$")
# Headers a viewer must never be able to send to content.
_REMOVE = frozenset(
    {b"authorization", b"x-rsc-authorization", b"rstudio-connect-credentials",
     b"posit-connect-user-session-token", b"cookie"}
)
_PODIUM_COOKIES = {auth.SESSION_COOKIE, auth.CSRF_COOKIE}


@dataclass(frozen=True)
class Viewer:
    id: int
    guid: str
    username: str
    role: str


@dataclass
class ContentInfo:
    id: int
    guid: str
    owner_id: int
    access_type: str
    bundle_id: int | None
    roles: dict[str, str]  # principal guid -> permission role
    bundles: dict[int, AppTarget | None] = field(default_factory=dict)
    fetched: float = field(default_factory=time.monotonic)


TargetLookup = Callable[[int, int, bool], AppTarget | None]


class ContentRouter:
    """``app_target(content_id, bundle_id, draft)`` says what a bundle runs
    (:meth:`podium.targets.AppTargets.app_target`); ``scheduler`` leases its processes.
    :meth:`invalidate` and :meth:`forget_users` are called on every change
    (:class:`podium.changes.Changes`)."""

    def __init__(
        self, store: Store, session_lifetime_seconds: int, app_target: TargetLookup, scheduler: Scheduler
    ) -> None:
        self.store = store
        self.session_lifetime_seconds = session_lifetime_seconds
        self.app_target = app_target
        self.scheduler = scheduler
        self._content: dict[str, ContentInfo] = {}
        self._users: dict[str, tuple[float, Viewer | None]] = {}

    # --- caches -------------------------------------------------------------------------

    def invalidate(self, guid: str | None = None) -> None:
        if guid is None:
            self._content.clear()
        else:
            self._content.pop(guid, None)

    def forget_users(self) -> None:
        self._users.clear()

    async def _info(self, guid: str) -> ContentInfo | None:
        info = self._content.get(guid)
        if info is not None and time.monotonic() - info.fetched < _CONTENT_TTL:
            return info
        info = await asyncio.to_thread(self._load, guid)
        if info is None:
            self._content.pop(guid, None)
        else:
            self._content[guid] = info
        return info

    def _load(self, guid: str) -> ContentInfo | None:
        with self.store.session() as session:
            content = session.scalar(select(Content).where(Content.guid == guid))
            if content is None:
                return None
            roles = {
                p.principal_guid: p.role
                for p in session.scalars(select(Permission).where(Permission.content_id == content.id))
            }
            return ContentInfo(
                content.id, content.guid, content.owner_id, content.access_type, content.bundle_id, roles
            )

    async def _target(self, info: ContentInfo, bundle_id: int, draft: bool) -> AppTarget | None:
        if bundle_id not in info.bundles:
            info.bundles[bundle_id] = await asyncio.to_thread(
                self.app_target, info.id, bundle_id, draft
            )
        return info.bundles[bundle_id]

    async def _viewer(self, headers: list[tuple[bytes, bytes]]) -> Viewer | None | bool:
        """The caller; ``None`` for anonymous, ``False`` for bad credentials."""
        key: str | None = None
        token: str | None = None
        for raw_name, value in headers:
            name = raw_name.lower()
            if name == b"authorization":
                key = auth.parse_authorization(value.decode("latin-1"))
            elif name == b"x-rsc-authorization" and key is None:
                key = value.decode("latin-1").strip() or None
            elif name == b"cookie":
                cookie: SimpleCookie = SimpleCookie()
                try:
                    cookie.load(value.decode("latin-1"))
                except Exception:
                    continue
                if auth.SESSION_COOKIE in cookie:
                    token = cookie[auth.SESSION_COOKIE].value
        if key is None and token is None:
            return None
        cache_key = ("k:" + key) if key is not None else ("s:" + str(token))
        hit = self._users.get(cache_key)
        if hit is not None and time.monotonic() - hit[0] < _USER_TTL:
            return hit[1] if hit[1] is not None else (False if key else None)
        viewer = await asyncio.to_thread(self._load_viewer, key, token)
        self._users[cache_key] = (time.monotonic(), viewer)
        if viewer is None and key is not None:
            return False
        return viewer

    def _load_viewer(self, key: str | None, token: str | None) -> Viewer | None:
        with self.store.session() as session:
            user: User | None
            if key is not None:
                user = auth.user_for_api_key(session, key)
            else:
                found = auth.user_for_session(session, str(token), self.session_lifetime_seconds)
                user = found.user if found else None
            if user is None:
                return None
            return Viewer(user.id, user.guid, user.username, user.user_role)

    # --- decisions ----------------------------------------------------------------------

    @staticmethod
    def _may_view(info: ContentInfo, viewer: Viewer | None) -> bool:
        if info.access_type == "all":
            return True
        if viewer is None:
            return False
        if info.access_type == "logged_in" or viewer.role == "administrator":
            return True
        return viewer.id == info.owner_id or viewer.guid in info.roles

    @staticmethod
    def _may_manage(info: ContentInfo, viewer: Viewer | None) -> bool:
        if viewer is None:
            return False
        if viewer.role == "administrator":
            return True
        return viewer.role == "publisher" and (
            viewer.id == info.owner_id or info.roles.get(viewer.guid) == "owner"
        )

    async def route(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
    ) -> Forward | Respond | PassToApp:
        path, _, query = target.partition(b"?")
        match = _PATH.match(path)
        if match is None or match.group(2) is None:
            return PASS_TO_APP
        guid = match.group(1).decode().lower()
        rest = match.group(2)
        info = await self._info(guid)
        if info is None:
            return PASS_TO_APP
        draft = _DRAFT.match(rest)
        if draft is not None:
            if draft.group(2) is None:
                return PASS_TO_APP
            bundle_id = int(draft.group(1))
            rest = draft.group(2)
            base = f"/content/{guid}/_bundle{bundle_id}/"
        elif info.bundle_id is None:
            return PASS_TO_APP
        else:
            bundle_id = info.bundle_id
            base = f"/content/{guid}/"
        app = await self._target(info, bundle_id, draft is not None)
        if app is None or app.base_path != base:
            return PASS_TO_APP
        viewer = await self._viewer(headers)
        if viewer is False:
            return PASS_TO_APP
        assert viewer is not True
        allowed = self._may_manage(info, viewer) if draft is not None else self._may_view(info, viewer)
        if not allowed:
            return PASS_TO_APP
        browser = method == b"GET" and any(
            n.lower() == b"accept" and b"text/html" in v for n, v in headers
        )
        try:
            lease = await self.scheduler.acquire(app, wait=not browser)
        except Unavailable as exc:
            return _unavailable(exc, headers)
        upstream = rest if lease.strip_prefix else path
        if query:
            upstream += b"?" + query
        return Forward(
            host=lease.address[0],
            port=lease.address[1],
            target=upstream,
            set_headers=_identity_headers(headers, viewer),
            remove_headers=_REMOVE,
            on_done=lease.release,
            read_timeout_seconds=app.limits.read_timeout or None,
            connection_timeout_seconds=app.limits.connection_timeout or None,
            unix_path=lease.unix_path,
        )


def _identity_headers(headers: list[tuple[bytes, bytes]], viewer: Viewer | None) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    if viewer is not None:
        identity = json.dumps({"user": viewer.username, "groups": []}).encode()
        out.append((b"rstudio-connect-credentials", identity))
    kept: list[str] = []
    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            cookie_name = part.split("=", 1)[0].strip()
            if cookie_name and cookie_name not in _PODIUM_COOKIES:
                kept.append(part.strip())
    if kept:
        out.append((b"cookie", "; ".join(kept).encode("latin-1")))
    return out


def _unavailable(exc: Unavailable, headers: list[tuple[bytes, bytes]]) -> Respond:
    wants_json = any(n.lower() == b"accept" and b"application/json" in v for n, v in headers)
    if exc.starting:
        body = (
            b"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            b"<meta http-equiv='refresh' content='1'><title>Starting - Podium</title></head>"
            b"<body style='font-family:sans-serif;max-width:40em;margin:4em auto'>"
            b"<h1>Starting&hellip;</h1><p>This content is starting up; this page reloads "
            b"by itself.</p></body></html>"
        )
        return Respond(503, [(b"content-type", b"text/html; charset=utf-8"), (b"retry-after", b"1")], body)
    if wants_json:
        payload = json.dumps({"code": 1, "error": exc.message, "payload": None}).encode()
        return Respond(exc.status, [(b"content-type", b"application/json")], payload)
    from html import escape

    body = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Unavailable - Podium"
        "</title></head><body style='font-family:sans-serif;max-width:40em;margin:4em auto'>"
        f"<h1>Unavailable</h1><p>{escape(exc.message)}</p></body></html>"
    ).encode()
    return Respond(exc.status, [(b"content-type", b"text/html; charset=utf-8"), (b"retry-after", b"2")], body)
