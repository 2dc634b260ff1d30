"""The content router: decides, per request, where ``/content/{guid}/...`` goes.

Content is served on its own origin (:mod:`podium.urls`), never the dashboard's, so
a published page cannot act with its viewer's dashboard session. The router answers
for both origins (:attr:`ContentRouter.content` and :attr:`ContentRouter.dashboard`):

- On the **content origin**, the viewer is whoever the request's API key names, or
  the content cookie (:mod:`podium.handoff`) for *this* content item; the dashboard's
  session cookie is never read there. Interactive content is forwarded to a process
  leased from the scheduler, with the viewer's Podium credentials stripped and
  identity headers added. Files of static content and rendered output that the viewer
  may see are served by the front itself (:mod:`podium.proxy.files`). Anything else
  (drafts, earlier renderings, ranges, the sign-in hand-off, refusals, files not found,
  unknown content) is passed to the app, which answers it with the same rules. Paths outside ``/content/`` are not found there, except the hand-off's.
- On the **dashboard origin**, content answers only requests carrying an API key
  (clients such as rsconnect check a deploy there; no browser sends a key on its own).
  Every other request is redirected to the same path on the content origin.

Content records (with where their files are) and callers are cached briefly so the
hot path rarely touches the database (a record is read again in the background once
it is two seconds old, which is how changes made on other nodes arrive if their notice
is lost; requests go on with the old record meanwhile, and records due are read in
batches, a few queries for many items); changes invalidate the content cache at once on
this node, and with it the item's cached files. The callers' cache is bounded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import auth, vanity
from podium.handoff import Handoff
from podium.layout import DataLayout
from podium.oauth import SESSION_HEADER, UserSessionTokens
from podium.proxy.decisions import PASS_TO_APP, Forward, PassToApp, Respond, ServeFile
from podium.proxy.files import FileCache
from podium.render import RENDERED_MODES, latest_rendering
from podium.scheduler import AppTarget, Scheduler, Unavailable
from podium.store import Store
from podium.store.models import (
    Bundle,
    Content,
    Group,
    GroupMember,
    OAuthAssociation,
    OAuthIntegration,
    Permission,
    User,
    Vanity,
)
from podium.urls import Urls
from podium.usage import UsageRecorder

log = logging.getLogger(__name__)

_CONTENT_TTL = 2.0
# How long past its lifetime a content record still answers while it is read again.
_STALE_SECONDS = 30.0
_USER_TTL = 5.0
# Most callers (API keys and sessions, wrong ones included) the router remembers at once.
_USERS_MAX = 10_000
# Most content records read with one set of queries (SQLite allows 32,766 parameters).
_BATCH = 500
_PATH = re.compile(rb"^/content/([0-9a-fA-F-]{36})(/.*)?$")
_DRAFT = re.compile(rb"^/_bundle(\d+)(/.*)?$")
# Earlier renderings (/_rendering{id}/) are the app's to serve, as are ranges.
_EARLIER = re.compile(rb"^/_rendering\d+(/|$)")
_SANDBOX = b"content-security-policy: sandbox\r\n"
# Headers a viewer must never be able to send to content.
_REMOVE = frozenset(
    {b"authorization", b"x-rsc-authorization", b"rstudio-connect-credentials",
     b"posit-connect-user-session-token", b"cookie"}
)
CONTENT_COOKIE = "podium_content"
# Where the content origin trades a hand-off code for the content cookie (served by the app).
HANDOFF_PATH = b"/__podium_content_auth__"
_PODIUM_COOKIES = {auth.SESSION_COOKIE, auth.CSRF_COOKIE, CONTENT_COOKIE}
_CONTENT_COOKIE_PREFIX = CONTENT_COOKIE.encode() + b"="


@dataclass(frozen=True)
class Viewer:
    id: int
    guid: str
    username: str
    role: str
    # The viewer's groups (guid -> name), loaded with the viewer: permissions may name them.
    groups: dict[str, str] = field(default_factory=dict)

    def role_in(self, roles: dict[str, str]) -> str | None:
        """The strongest permission role ``roles`` gives the viewer or one of its groups."""
        found = roles.get(self.guid)
        if found == "owner":
            return found
        for group in self.groups:
            role = roles.get(group)
            if role == "owner":
                return role
            found = found or role
        return found


@dataclass(frozen=True)
class Files:
    """Where the active bundle's files are served from: a static bundle's directory or
    its latest rendering's output; ``tag`` goes into the ETag (see ``files.etag_for``)."""

    root: str
    primary: str  # the file served for the item's own address
    tag: str


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
    files: Files | None = None  # static or rendered content with something to serve
    oauth: bool = False  # associated with a Viewer OAuth integration: content gets session tokens


TargetLookup = Callable[[int, int, bool], AppTarget | None]


class ContentRouter:
    """``app_target(content_id, bundle_id, draft)`` says what a bundle runs
    (:meth:`podium.targets.AppTargets.app_target`); ``scheduler`` leases its processes;
    ``handoff`` checks content cookies. :meth:`invalidate` and :meth:`forget_users` are
    called on every change (:class:`podium.changes.Changes`). The front asks
    :attr:`content` about requests on the content origin and :attr:`dashboard` about
    ``/content/`` requests on the dashboard's. With ``layout``, the front serves the
    files of static and rendered content itself, from ``files`` (a fresh
    :class:`~podium.proxy.files.FileCache` unless given); without it, the app does."""

    def __init__(
        self,
        store: Store,
        session_lifetime_seconds: int,
        app_target: TargetLookup,
        scheduler: Scheduler,
        urls: Urls,
        handoff: Handoff,
        layout: DataLayout | None = None,
        files: FileCache | None = None,
        usage: UsageRecorder | None = None,
        oauth_sessions: UserSessionTokens | None = None,
        starting_page_after_seconds: float = 5.0,
    ) -> None:
        self.store = store
        # How long a browser waits for a starting process before the "starting" page.
        self.starting_page_after_seconds = starting_page_after_seconds
        # Mints the Posit-Connect-User-Session-Token for content with a Viewer integration.
        self.oauth_sessions = oauth_sessions
        self.layout = layout
        self.files = files if files is not None else FileCache()
        self.usage = usage  # records what content serves (podium.usage); None: nothing
        self.session_lifetime_seconds = session_lifetime_seconds
        self.app_target = app_target
        self.scheduler = scheduler
        self.urls = urls
        self.handoff = handoff
        self.content_host = urls.content_host()
        self.content = OriginRouter(self, content_origin=True)
        self.dashboard = OriginRouter(self, content_origin=False)
        self._content: dict[str, ContentInfo] = {}
        # The loop requests are routed on (known from the first request): changes noticed
        # on other threads (the API's sync endpoints run in a thread pool) are applied there.
        self._loop: asyncio.AbstractEventLoop | None = None
        # Reads of a content record in progress: requests arriving meanwhile share them.
        self._loading: dict[str, asyncio.Future[ContentInfo | None]] = {}
        # Reads asked for and not started yet, and the task reading them in batches.
        self._pending: dict[str, asyncio.Future[ContentInfo | None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._users: dict[str, tuple[float, Viewer | None]] = {}
        # Vanity path -> content guid, and when it was read (None: read it again).
        self._vanities: dict[str, str] = {}
        self._vanities_fetched: float | None = None
        self._vanities_generation = 0  # moved on by every invalidation

    # --- caches -------------------------------------------------------------------------

    def invalidate(self, guid: str | None = None) -> None:
        """Forget ``guid`` (every item: None) now. Called from another thread, the change is
        handed to the routing loop, ahead of the caller's own answer (which the loop sends
        once the thread is done), so no later request sees the old state."""
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self._invalidate, guid)
                return
        self._invalidate(guid)

    def _invalidate(self, guid: str | None) -> None:
        if guid is None:
            self._content.clear()
            self._loading.clear()  # reads not started yet (_pending) will see the change
            self.files.forget()
        else:
            info = self._content.pop(guid, None)
            self._loading.pop(guid, None)  # a read in progress may predate the change
            if info is not None and self.layout is not None:
                # Ids can come back after a deletion (SQLite): forget every file of the item.
                mine = tuple(f"{path.resolve()}/" for path in self.layout.content_dirs(info.id))
                self.files.forget(lambda root: root.startswith(mine))
        # Any content change may add, move or (deleting content) remove a vanity path.
        self._vanities_fetched = None
        self._vanities_generation += 1

    def forget_users(self) -> None:
        self._users.clear()

    async def _info(self, guid: str) -> ContentInfo | None:
        """The content record, from the cache while it is fresh. Past its lifetime (which
        only matters for changes made on other nodes: this node's own invalidate at once)
        it is still used, up to :data:`_STALE_SECONDS`, while one read refreshes it in the
        background, so requests do not queue behind the database."""
        info = self._content.get(guid)
        if info is not None:
            age = time.monotonic() - info.fetched
            if age < _CONTENT_TTL:
                return info
            if age < _STALE_SECONDS:
                self._reload(guid)
                return info
        return await asyncio.shield(self._reload(guid))

    def _reload(self, guid: str) -> asyncio.Future[ContentInfo | None]:
        """The read of ``guid``'s record in progress, started if none is (one at a time).

        Reads are made in batches: every record asked for while a batch is being read
        is read by the next one, with a few queries for the whole batch. With many items
        in use, the records expiring each second then cost a few queries, not a few
        each (1,000 static items read at once expire at 500 a second)."""
        loading = self._loading.get(guid)
        if loading is None:
            # A read not started yet sees every change made so far: it can be shared.
            loading = self._pending.get(guid)
            if loading is None:
                loading = self._pending[guid] = asyncio.get_running_loop().create_future()
                loading.add_done_callback(_retrieved)
            self._loading[guid] = loading
            if self._reader is None or self._reader.done():
                self._reader = asyncio.ensure_future(self._read_pending())
        return loading

    async def _read_pending(self) -> None:
        while self._pending:
            batch = dict(list(self._pending.items())[:_BATCH])
            for guid in batch:
                del self._pending[guid]
            try:
                infos = await asyncio.to_thread(self._load_many, list(batch))
            except Exception as error:
                log.error("cannot read %d content records", len(batch), exc_info=error)
                for guid, future in batch.items():
                    if self._loading.get(guid) is future:
                        del self._loading[guid]
                    if not future.done():
                        future.set_exception(error)
                continue
            for guid, future in batch.items():
                info = infos.get(guid)
                if self._loading.get(guid) is future:  # not invalidated while reading
                    del self._loading[guid]
                    if info is None:
                        self._content.pop(guid, None)
                    else:
                        self._content[guid] = info
                if not future.done():
                    future.set_result(info)

    def _load_many(self, guids: list[str]) -> dict[str, ContentInfo]:
        """The records of ``guids`` that exist, read together."""
        with self.store.session() as session:
            contents = list(session.scalars(select(Content).where(Content.guid.in_(guids))))
            ids = [content.id for content in contents]
            roles: dict[int, dict[str, str]] = {content_id: {} for content_id in ids}
            for permission in session.scalars(select(Permission).where(Permission.content_id.in_(ids))):
                roles[permission.content_id][permission.principal_guid] = permission.role
            oauth = set(session.scalars(
                select(OAuthAssociation.content_id)
                .join(OAuthIntegration, OAuthIntegration.id == OAuthAssociation.integration_id)
                .where(OAuthAssociation.content_id.in_(ids), OAuthIntegration.auth_type == "Viewer")
            ))
            bundle_ids = [content.bundle_id for content in contents if content.bundle_id is not None]
            bundles = {bundle.id: bundle for bundle in session.scalars(select(Bundle).where(Bundle.id.in_(bundle_ids)))}
            return {
                content.guid: ContentInfo(
                    content.id, content.guid, content.owner_id, content.access_type, content.bundle_id,
                    roles[content.id], oauth=content.id in oauth,
                    files=self._files(session, content, bundles.get(content.bundle_id or 0)),
                )
                for content in contents
            }

    def _files(self, session: Session, content: Content, bundle: Bundle | None) -> Files | None:
        """Where the active ``bundle``'s files are, when the front serves them (as the app's
        ``podium.proxy.routes`` would: a static bundle, or the latest rendering)."""
        if self.layout is None or bundle is None:
            return None
        if bundle.app_mode in RENDERED_MODES:
            rendering = latest_rendering(session, content.id, bundle.id)
            if rendering is None or not rendering.primary_file:
                return None
            root = self.layout.output_dir(content.id, rendering.id)
            return Files(str(root.resolve()), rendering.primary_file, f"r{rendering.id}")
        if bundle.app_mode == "static":
            primary = (bundle.manifest.get("metadata") or {}).get("primary_html") or "index.html"
            root = self.layout.bundle_dir(content.id, bundle.id)
            return Files(str(root.resolve()), str(primary), str(bundle.id))
        return None

    async def _vanity(self, path: bytes) -> tuple[str, str] | None:
        """``(vanity path, guid)`` for a path under a vanity, from the cached map (read
        again after a change, or once it is older than the content cache's lifetime)."""
        fetched = self._vanities_fetched
        if fetched is None or time.monotonic() - fetched > _CONTENT_TTL:
            started, generation = time.monotonic(), self._vanities_generation
            self._vanities = await asyncio.to_thread(self._load_vanities)
            # A change during the read leaves the map to be read again on the next request.
            if generation == self._vanities_generation:
                self._vanities_fetched = started
        try:
            return vanity.match(self._vanities, path.decode())
        except UnicodeDecodeError:
            return None

    def _load_vanities(self) -> dict[str, str]:
        with self.store.session() as session:
            rows = session.execute(
                select(Vanity.path, Content.guid).join(Content, Content.id == Vanity.content_id)
            ).all()
            return dict(rows)

    async def _target(self, info: ContentInfo, bundle_id: int, draft: bool) -> AppTarget | None:
        if bundle_id not in info.bundles:
            info.bundles[bundle_id] = await asyncio.to_thread(
                self.app_target, info.id, bundle_id, draft
            )
        return info.bundles[bundle_id]

    async def _viewer(self, headers: list[tuple[bytes, bytes]], guid: str | None) -> Viewer | None | bool:
        """The caller; ``None`` for anonymous, ``False`` for bad credentials. With ``guid``
        (the content origin), a content cookie for that content item counts too."""
        key = api_key(headers)
        session_id: int | None = None
        if key is None and guid is not None:
            session_id = self._content_session(headers, guid)
        if key is None and session_id is None:
            return None
        cache_key = ("k:" + key) if key is not None else f"s:{session_id}"
        hit = self._users.get(cache_key)
        if hit is not None and time.monotonic() - hit[0] < _USER_TTL:
            return hit[1] if hit[1] is not None else (False if key else None)
        viewer = await asyncio.to_thread(self._load_viewer, key, session_id)
        now = time.monotonic()
        if len(self._users) >= _USERS_MAX:
            # Every key and session seen would stay for good: keep the fresh ones only.
            self._users = {k: v for k, v in self._users.items() if now - v[0] < _USER_TTL}
            if len(self._users) >= _USERS_MAX:
                self._users.clear()
        self._users[cache_key] = (now, viewer)
        if viewer is None and key is not None:
            return False
        return viewer

    def _content_session(self, headers: list[tuple[bytes, bytes]], guid: str) -> int | None:
        """The dashboard session behind a valid content cookie for ``guid``. Content on the
        same origin can set cookies of that name too: any one that checks out counts."""
        for name, value in headers:
            if name != b"cookie":
                continue
            for part in value.split(b";"):
                part = part.strip()
                if part.startswith(_CONTENT_COOKIE_PREFIX):
                    found = self.handoff.check(part[len(_CONTENT_COOKIE_PREFIX):].decode("latin-1"), guid)
                    if found is not None:
                        return found
        return None

    def _load_viewer(self, key: str | None, session_id: int | None) -> Viewer | None:
        with self.store.session() as session:
            user: User | None
            if key is not None:
                user = auth.user_for_api_key(session, key)
            else:
                user = auth.user_for_session_id(session, session_id or 0)
            if user is None:
                return None
            groups = dict(
                session.execute(
                    select(Group.guid, Group.name)
                    .join(GroupMember, GroupMember.group_id == Group.id)
                    .where(GroupMember.user_id == user.id)
                ).all()
            )
            return Viewer(user.id, user.guid, user.username, user.user_role, groups)

    # --- decisions ----------------------------------------------------------------------

    def _session_token(self, info: ContentInfo, viewer: Viewer | None) -> str | None:
        """A user-session token for a signed-in viewer of content with a Viewer integration."""
        if not info.oauth or viewer is None or self.oauth_sessions is None:
            return None
        return self.oauth_sessions.issue(viewer.guid, info.guid)

    @staticmethod
    def _may_view(info: ContentInfo, viewer: Viewer | None) -> bool:
        if info.access_type == "all":
            return True
        if viewer is None:
            return False
        if info.access_type == "logged_in" or viewer.role == "administrator":
            return True
        return viewer.id == info.owner_id or viewer.role_in(info.roles) is not None

    @staticmethod
    def _may_manage(info: ContentInfo, viewer: Viewer | None) -> bool:
        if viewer is None:
            return False
        if viewer.role == "administrator":
            return True
        return viewer.role == "publisher" and (
            viewer.id == info.owner_id or viewer.role_in(info.roles) == "owner"
        )

    async def route(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        content_origin: bool,
    ) -> Forward | Respond | PassToApp | ServeFile:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        path, _, query = target.partition(b"?")
        match = _PATH.match(path)
        to_app: PassToApp = PASS_TO_APP
        if match is None and path != HANDOFF_PATH:
            found = await self._vanity(path)
            if found is not None:  # served as /content/{guid}/..., which apps were started with
                prefix, guid = found[0].encode(), found[1]
                if not content_origin and api_key(headers) is None:
                    return self._to_content_origin(guid, target)
                if len(path) < len(prefix):  # /sales -> /sales/
                    location = prefix + (b"?" + query if query else b"")
                    return Respond(301, [(b"location", location), (b"cache-control", b"no-store")], b"")
                path = b"/content/" + guid.encode() + path[len(prefix) - 1:]
                match = _PATH.match(path)
                to_app = PassToApp(path + (b"?" + query if query else b""), prefix)
        if not content_origin:
            if match is None:
                return PASS_TO_APP
            if api_key(headers) is None:  # browsers: to the content origin
                return self._to_content_origin(match.group(1).decode().lower(), target)
        elif match is None:
            return PASS_TO_APP if path == HANDOFF_PATH else self._not_content()
        elif self.urls.per_content_hosts:
            host = next((value for name, value in headers if name == b"host"), None)
            if self.content_host.guid(host) != match.group(1).decode().lower():
                return self._not_content()
        if match.group(2) is None:
            return to_app
        guid = match.group(1).decode().lower()
        rest = match.group(2)
        info = await self._info(guid)
        if info is None:
            return to_app
        draft = _DRAFT.match(rest)
        if draft is not None:
            if draft.group(2) is None:
                return to_app
            bundle_id = int(draft.group(1))
            rest = draft.group(2)
            base = f"/content/{guid}/_bundle{bundle_id}/"
        elif info.bundle_id is None:
            return to_app
        elif info.files is not None:
            return await self._serve_file(info, info.files, method, target, rest, headers, content_origin, to_app)
        else:
            bundle_id = info.bundle_id
            base = f"/content/{guid}/"
        app = await self._target(info, bundle_id, draft is not None)
        if app is None or app.base_path != base:
            return to_app
        viewer = await self._viewer(headers, guid if content_origin else None)
        if viewer is False:
            return to_app
        assert viewer is not True
        allowed = self._may_manage(info, viewer) if draft is not None else self._may_view(info, viewer)
        if not allowed:
            return to_app
        browser = method == b"GET" and any(
            n.lower() == b"accept" and b"text/html" in v for n, v in headers
        )
        try:
            lease = await self.scheduler.acquire(app, self.starting_page_after_seconds if browser else None)
        except Unavailable as exc:
            return _unavailable(exc, headers)
        upstream = rest if lease.strip_prefix else path
        if query:
            upstream += b"?" + query
        on_done = lease.release
        if self.usage is not None:
            user_guid = viewer.guid if viewer else None
            if self.usage.hit(method, target, headers, guid, user_guid, bundle_id):
                # a WebSocket: an app session too, ended when the tunnel closes
                on_done = _then(lease.release, self.usage.session(guid, user_guid, bundle_id))
        return Forward(
            host=lease.address[0],
            port=lease.address[1],
            target=upstream,
            set_headers=_identity_headers(headers, viewer, self._session_token(info, viewer)),
            remove_headers=_REMOVE,
            on_done=on_done,
            read_timeout_seconds=app.limits.read_timeout or None,
            connection_timeout_seconds=app.limits.connection_timeout or None,
            unix_path=lease.unix_path,
            handoff_path=lease.handoff_path,
        )

    async def _serve_file(
        self,
        info: ContentInfo,
        files: Files,
        method: bytes,
        target: bytes,
        rest: bytes,
        headers: list[tuple[bytes, bytes]],
        content_origin: bool,
        to_app: PassToApp,
    ) -> ServeFile | PassToApp:
        """A file of static or rendered content, served by the front when the viewer may
        see it and it exists; everything else goes to the app, which answers it as before."""
        if method not in (b"GET", b"HEAD") or _EARLIER.match(rest):
            return to_app
        for name, _ in headers:
            if name == b"range" or name == b"if-range":
                return to_app
        viewer = await self._viewer(headers, info.guid if content_origin else None)
        if viewer is False:
            return to_app
        assert viewer is not True
        if not self._may_view(info, viewer):
            return to_app
        try:
            relative = urllib.parse.unquote(rest.decode("ascii"), errors="strict")
            if relative.strip("/") == "":
                relative = files.primary
            entry = self.files.lookup(files.root, relative, files.tag)
        except (UnicodeDecodeError, ValueError, OSError):  # not UTF-8, a NUL byte, ...
            return to_app
        if entry is None:
            return to_app
        if self.usage is not None:  # a hit, as when the app serves the file
            self.usage.hit(method, target, headers, info.guid, viewer.guid if viewer else None, info.bundle_id)
        return ServeFile(entry, self.files, b"" if content_origin else _SANDBOX)

    def _to_content_origin(self, guid: str, target: bytes) -> Respond:
        origin = self.urls.content_origin.replace("{guid}", guid).encode()
        return Respond(307, [(b"location", origin + target), (b"cache-control", b"no-store")], b"")

    def _not_content(self) -> Respond:
        from html import escape

        body = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Not found - Podium"
            "</title></head><body style='font-family:sans-serif;max-width:40em;margin:4em auto'>"
            "<h1>Not found</h1><p>This address serves published content only. The dashboard is at "
            f"<a href='{escape(self.urls.public)}'>{escape(self.urls.public)}</a>.</p></body></html>"
        ).encode()
        return Respond(404, [(b"content-type", b"text/html; charset=utf-8")], body)


class OriginRouter:
    """The :class:`~podium.proxy.decisions.Router` of one origin (see the module docs)."""

    __slots__ = ("_router", "_content_origin")

    def __init__(self, router: ContentRouter, content_origin: bool) -> None:
        self._router = router
        self._content_origin = content_origin

    async def route(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
    ) -> Forward | Respond | PassToApp | ServeFile:
        return await self._router.route(method, target, headers, client, self._content_origin)


def _then(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        first()
        second()

    return both


def _retrieved(read: asyncio.Future[ContentInfo | None]) -> None:
    # A failed read is logged once for its batch; a refresh nobody waits for is no error.
    if not read.cancelled():
        read.exception()


def api_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The API key a request carries (``Authorization: Key``, else ``X-RSC-Authorization``)."""
    key: str | None = None
    for name, value in headers:
        if name == b"authorization":
            key = auth.parse_authorization(value.decode("latin-1"))
        elif name == b"x-rsc-authorization" and key is None:
            key = value.decode("latin-1").strip() or None
    return key


def _identity_headers(
    headers: list[tuple[bytes, bytes]], viewer: Viewer | None, session_token: str | None = None
) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    if viewer is not None:
        identity = json.dumps({"user": viewer.username, "groups": sorted(viewer.groups.values())}).encode()
        out.append((b"rstudio-connect-credentials", identity))
    if session_token is not None:
        out.append((SESSION_HEADER.lower().encode(), session_token.encode()))
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
