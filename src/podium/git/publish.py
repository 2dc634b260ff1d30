"""From a git commit to a serving bundle: fetch, bundle, build, activate; follow branches.

:class:`GitPublisher` is the service behind ``POST v1/content/{guid}/deploy`` with
``bundle_id: null`` on git-backed content, ``POST .../repository/bundle``, the poller and
push webhooks. A fetch happens on the server, in a scratch directory under the data
dir's ``tmp/`` that is removed afterwards; what leaves it is a bundle archive, unpacked
and checked by :mod:`podium.bundles` exactly like an upload (so a symlink leaving the
directory, or an oversized tree, is refused there), then built by the deployer. On
Kubernetes the build job only ever sees that bundle on the data volume: no credentials
and no repository reach a pod.

Every step's outcome is recorded on the repository row: ``last_known_commit`` when a
bundle was made, ``last_error`` (empty on success), ``last_fetched_time``. A failure
leaves the active bundle as it was.

Polling (:meth:`GitPublisher.poll_once`): an item is due when its last check is older
than ``git_polling_interval_seconds``. A node claims a due item with one conditional
``UPDATE`` of its lease columns (only an unleased or expired row matches), so with
several nodes sharing a database exactly one checks it, on SQLite and PostgreSQL alike.
The lease lasts ``2 * git_timeout_seconds + 60`` s and is renewed while a deploy it
started runs; the items of a node that dies are free again when their leases expire.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, update

from podium import audit
from podium.bundles import BundleError, BundleLimits, unpack_bundle
from podium.deploy import Deployer, DeployRequest
from podium.git.remote import GitAuth, GitError, GitRunner, host_of
from podium.layout import DataLayout
from podium.secrets import SecretBox
from podium.settings import Settings
from podium.store import Store
from podium.store.models import Bundle, Content, GitCredential, GitRepository, User
from podium.tasks import TaskFailed, TaskManager, TaskOutput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Made:
    """A bundle made from a commit."""

    bundle_id: int
    commit: str
    repository: str
    ref: str
    directory: str


_REMOTE_QUERIES_AT_ONCE = 2
POLLER = audit.Actor(None, None, "the git poller")
WEBHOOK = audit.Actor(None, None, "a git push webhook")


def _now() -> datetime:
    return datetime.now(UTC)


class GitPublisher:
    """One per server node, made by the app."""

    def __init__(
        self, store: Store, settings: Settings, layout: DataLayout, box: SecretBox,
        runner: GitRunner, deployer: Deployer, tasks: TaskManager, node: str | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.layout = layout
        self.box = box
        self.runner = runner
        self.deployer = deployer
        self.tasks = tasks
        self.node = node or f"{socket.gethostname()[:40]}-{os.getpid()}"
        self._in_flight: set[int] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        # Remote queries at once: a pass over many due items must not fill the thread pool
        # every other part of the server uses.
        self._remote_slots = asyncio.Semaphore(_REMOTE_QUERIES_AT_ONCE)

    # --- credentials -------------------------------------------------------------------
    def auth_for(self, url: str) -> GitAuth | None:
        with self.store.session() as session:
            row = session.scalar(select(GitCredential).where(GitCredential.host == host_of(url)))
            if row is None:
                return None
            return GitAuth(row.username, self.box.decrypt(row.secret_encrypted))

    # --- making a bundle -----------------------------------------------------------------
    def _limits(self) -> BundleLimits:
        s = self.settings
        return BundleLimits(
            max_bytes=s.bundle_max_bytes, max_unpacked_bytes=s.bundle_max_unpacked_bytes,
            max_files=s.bundle_max_files, max_compression_ratio=s.bundle_max_compression_ratio,
        )

    def _record_error(self, content_id: int, message: str) -> None:
        with self.store.session() as session:
            repo = session.scalar(select(GitRepository).where(GitRepository.content_id == content_id))
            if repo is not None:
                repo.last_error = message
                repo.last_fetched_time = _now()

    async def make_bundle(
        self, content_id: int, user_id: int | None, say: Callable[[str], None],
        repository: str | None = None, ref: str | None = None, directory: str | None = None,
    ) -> Made:
        """Fetch the content's repository (or the given location) and record a bundle of the
        directory at that commit; raises :class:`TaskFailed` with a message for the publisher
        (also stored as ``last_error``)."""
        with self.store.session() as session:
            repo = session.scalar(select(GitRepository).where(GitRepository.content_id == content_id))
            if repo is None:
                raise TaskFailed("This content is not deployed from a git repository.")
            url = repository or repo.repository
            ref = ref or repo.branch
            directory = directory if directory is not None else repo.directory
            # Only a fetch of the followed location says what the poller has seen.
            followed = (url, ref, directory) == (repo.repository, repo.branch, repo.directory)
        loop = asyncio.get_running_loop()

        def say_soon(text: str) -> None:  # git runs in a worker thread; the task output is the loop's
            loop.call_soon_threadsafe(say, text)

        scratch = self.layout.tmp() / f"git-{uuid.uuid4().hex}"
        scratch.mkdir(mode=0o700)
        try:
            archive = scratch / "bundle.tar.gz"
            unpacked = scratch / "unpacked"
            limits = self._limits()
            try:
                auth = await asyncio.to_thread(self.auth_for, url)
                commit = await asyncio.to_thread(
                    self.runner.fetch_tree, url, ref, directory, auth, scratch, archive,
                    limits.max_bytes, say_soon, limits.max_unpacked_bytes,
                )
                manifest = await asyncio.to_thread(unpack_bundle, archive, unpacked, limits)
            except (GitError, BundleError) as exc:
                message = exc.message if isinstance(exc, GitError) else f"The bundle was refused: {exc.message}"
                await asyncio.to_thread(self._record_error, content_id, message)
                log.info("content %s: git fetch of %s failed: %s", content_id, ref, message)
                raise TaskFailed(message) from None
            bundle_id = await asyncio.to_thread(
                self._store_bundle, content_id, user_id, archive, unpacked, manifest.metadata.appmode,
                manifest.model_dump(mode="json", exclude_none=True),
                {"source": "git", "source_repo": url, "source_branch": ref, "source_commit": commit},
                commit if followed else None,
            )
            say(f"Made bundle {bundle_id} from commit {commit[:12]}")
            return Made(bundle_id, commit, url, ref, directory)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _store_bundle(
        self, content_id: int, user_id: int | None, archive: Path, unpacked: Path, app_mode: str,
        manifest: dict[str, Any], metadata: dict[str, str], commit: str | None,
    ) -> int:
        """Record the bundle; with ``commit``, also as the repository's last known commit."""
        md5 = hashlib.md5(usedforsecurity=False)
        sha1 = hashlib.sha1(usedforsecurity=False)
        with open(archive, "rb") as handle:
            while chunk := handle.read(1 << 16):
                md5.update(chunk)
                sha1.update(chunk)
        with self.store.session() as session:
            bundle = Bundle(
                content_id=content_id, created_by_id=user_id, size=archive.stat().st_size,
                archive_md5=md5.hexdigest(), archive_sha1=sha1.hexdigest(), app_mode=app_mode,
                manifest=manifest, bundle_metadata=metadata,
            )
            session.add(bundle)
            session.flush()
            archive_path = self.layout.bundle_archive(content_id, bundle.id)
            bundle_path = self.layout.bundle_dir(content_id, bundle.id)
            archive_path.parent.mkdir(parents=True, exist_ok=True)
            bundle_path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(archive, archive_path)
            os.rename(unpacked, bundle_path)
            repo = session.scalar(select(GitRepository).where(GitRepository.content_id == content_id))
            if repo is not None and commit is not None:
                repo.last_known_commit = commit
                repo.last_error = ""
                repo.last_fetched_time = _now()
            try:
                session.commit()
            except BaseException:
                archive_path.unlink(missing_ok=True)
                shutil.rmtree(bundle_path, ignore_errors=True)
                raise
            return bundle.id

    def finish_task(self, task_id: str, lines: list[str], error: str) -> None:
        """Finish ``task_id`` with ``lines`` as its output (and ``error``, when not empty)."""

        async def body(out: TaskOutput) -> dict[str, Any] | None:
            for line in lines:
                out.line(line)
            if error:
                raise TaskFailed(error)
            return None

        self.tasks.start(task_id, body)

    # --- deploying -----------------------------------------------------------------------
    def start_deploy(
        self, content_id: int, user_id: int | None, activate: bool = True, why: str = "",
        on_end: Callable[[], None] | None = None,
    ) -> str:
        """Start a deploy task that fetches, bundles, builds and (unless ``activate`` is
        false) activates; returns its id."""
        task_id = self.tasks.create("deploy", user_id, content_id)
        self._in_flight.add(content_id)

        async def body(out: TaskOutput) -> dict[str, Any] | None:
            try:
                if why:
                    out.line(why)
                made = await self.make_bundle(content_id, user_id, out.line)
                with self.store.session() as session:
                    content = session.get(Content, content_id)
                    bundle = session.get(Bundle, made.bundle_id)
                    if content is None or bundle is None:
                        raise TaskFailed("The content was deleted during the deploy.")
                    if content.app_mode not in ("unknown", bundle.app_mode):
                        message = (
                            f"This content is {content.app_mode!r} and commit {made.commit[:12]} holds "
                            f"{bundle.app_mode!r} content: the app mode cannot change once deployed."
                        )
                        await asyncio.to_thread(self._record_error, content_id, message)
                        raise TaskFailed(message)
                    owner = session.get(User, user_id) if user_id is not None else content.owner
                    deployer = None if owner is None or owner.user_role == "administrator" else owner.guid
                try:
                    await self.deployer.run(
                        DeployRequest(content_id=content_id, bundle_id=made.bundle_id, activate=activate,
                                      deployer=deployer),
                        out,
                    )
                except TaskFailed as exc:
                    await asyncio.to_thread(
                        self._record_error, content_id, f"Commit {made.commit[:12]} did not deploy: {exc.message}"
                    )
                    raise
                return {"bundle_id": str(made.bundle_id), "commit": made.commit}
            finally:
                self._in_flight.discard(content_id)
                if on_end is not None:
                    on_end()

        self.tasks.start(task_id, body)
        return task_id

    # --- polling -------------------------------------------------------------------------
    def _lease_seconds(self) -> float:
        """How long a claim lasts unless renewed: a check's remote query fits in it; a deploy
        it starts renews it (:meth:`_renew`), so a node that dies frees its items this soon."""
        return 2 * self.settings.git_timeout_seconds + 60

    def _renew(self, content_id: int) -> None:
        with self.store.session() as session:
            session.execute(
                update(GitRepository)
                .where(GitRepository.content_id == content_id, GitRepository.lease_node == self.node)
                .values(lease_expires=_now() + timedelta(seconds=self._lease_seconds()))
            )

    def claim_due(self, now: datetime | None = None) -> list[int]:
        """Claim every polling item whose last check is older than the interval and whose
        lease is free; returns their content ids (this node now holds their leases)."""
        now = now or _now()
        due_before = now - timedelta(seconds=self.settings.git_polling_interval_seconds)
        with self.store.session() as session:
            rows = list(session.execute(
                select(GitRepository.id, GitRepository.content_id).where(
                    GitRepository.polling.is_(True),
                    or_(GitRepository.last_fetched_time.is_(None), GitRepository.last_fetched_time <= due_before),
                    or_(GitRepository.lease_expires.is_(None), GitRepository.lease_expires < now),
                )
            ))
        claimed = []
        for repo_id, content_id in rows:
            if content_id in self._in_flight:
                continue
            with self.store.session() as session:
                result = session.execute(
                    update(GitRepository)
                    .where(GitRepository.id == repo_id,
                           or_(GitRepository.lease_expires.is_(None), GitRepository.lease_expires < now))
                    .values(lease_node=self.node,
                            lease_expires=now + timedelta(seconds=self._lease_seconds()))
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(content_id)
        return claimed

    def _release(self, content_id: int, fetched: bool) -> None:
        with self.store.session() as session:
            values: dict[str, Any] = {"lease_node": None, "lease_expires": None}
            if fetched:
                values["last_fetched_time"] = _now()
            session.execute(
                update(GitRepository)
                .where(GitRepository.content_id == content_id, GitRepository.lease_node == self.node)
                .values(**values)
            )

    async def check(self, content_id: int) -> str | None:
        """Ask the remote for the branch's commit (one ``ls-remote``); deploy it when it is
        new. Returns the deploy task id, or None when nothing changed or the check failed.
        The caller holds the item's lease; it is released when the check (and any deploy
        it started) ends."""
        with self.store.session() as session:
            repo = session.scalar(select(GitRepository).where(GitRepository.content_id == content_id))
            if repo is None:
                return None
            url, branch, known = repo.repository, repo.branch, repo.last_known_commit
            content = session.get(Content, content_id)
            if content is None:
                return None
            owner_id, described = content.owner_id, f"{content.name!r} ({content.guid})"
        scratch = self.layout.tmp() / f"git-ls-{uuid.uuid4().hex}"
        try:
            async with self._remote_slots:
                auth = await asyncio.to_thread(self.auth_for, url)
                commit = await asyncio.to_thread(self.runner.ls_remote, url, branch, auth, scratch)
        except GitError as exc:
            await asyncio.to_thread(self._record_error, content_id, exc.message)
            await asyncio.to_thread(self._release, content_id, True)
            log.info("content %s: polling %s failed: %s", content_id, branch, exc.message)
            return None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if commit == known or content_id in self._in_flight:  # unchanged, or a deploy is under way
            await asyncio.to_thread(self._release, content_id, True)
            return None
        log.info("content %s: %s moved to %s; deploying", content_id, branch, commit[:12])
        await asyncio.to_thread(
            audit.record_now, self.store, POLLER, "deploy_content",
            f"Started deploying content {described} from git: {branch!r} of {url} moved to {commit[:12]}.",
        )
        done = asyncio.Event()
        task_id = self.start_deploy(
            content_id, owner_id, why=f"Branch {branch!r} of {url} is now at {commit}.", on_end=done.set
        )
        while True:  # hold the lease while the deploy runs
            try:
                await asyncio.wait_for(done.wait(), self._lease_seconds() / 3)
                break
            except TimeoutError:
                await asyncio.to_thread(self._renew, content_id)
        await asyncio.to_thread(self._release, content_id, True)
        return task_id

    async def poll_once(self) -> list[int]:
        """Claim due items and start their checks; returns the content ids claimed."""
        claimed = await asyncio.to_thread(self.claim_due)
        for content_id in claimed:
            self._spawn(self.check(content_id))
        return claimed

    def _spawn(self, work: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("git: a check failed unexpectedly")

        task = asyncio.get_running_loop().create_task(run())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _loop(self, tick_seconds: float) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("git polling: a pass failed; trying again")
            await asyncio.sleep(tick_seconds)

    def start(self) -> None:
        """Run the poller on this node: it looks for due items every tenth of the interval
        (at most every 30 s, at least every 0.5 s)."""
        tick = min(30.0, max(0.5, self.settings.git_polling_interval_seconds / 10))
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(tick))

    async def close(self) -> None:
        tasks = [t for t in (self._loop_task, *self._checks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
