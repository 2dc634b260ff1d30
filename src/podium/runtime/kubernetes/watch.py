"""One list-and-watch cache of one kind of object (jobs or pods), label-selected.

Lists, then watches from the list's resourceVersion (bookmarks keep it fresh); when a
watch ends it resumes from the last version seen; a 410 Expired relists. Errors are
logged and retried with backoff. ``status()`` calls answer from here, never by polling
the API server (kubespawner's ``reflector.py`` has the same shape).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from podium.runtime.kubernetes.client import Kind, KubeApiError, KubeClient

log = logging.getLogger(__name__)
WATCH_TIMEOUT_SECONDS = 300
MAX_BACKOFF_SECONDS = 10.0


class Reflector:
    def __init__(self, client: KubeClient, kind: Kind, namespace: str, selector: str) -> None:
        self.client = client
        self.kind: Kind = kind
        self.namespace = namespace
        self.selector = selector
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.error: KubeApiError | None = None  # the last failure, until the next success
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"podium-k8s-watch-{self.kind}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def put(self, obj: dict[str, Any]) -> None:
        """Record an object the backend just created, before its watch event arrives."""
        self.objects.setdefault(obj["metadata"]["name"], obj)
        self._notify()

    def replace(self, obj: dict[str, Any]) -> None:
        """Record the newer version of an object the backend just changed."""
        self.objects[obj["metadata"]["name"]] = obj
        self._notify()

    def change(self) -> asyncio.Event:
        """An event set at the next change to the cache. Take it *before* looking at
        :attr:`objects`, so that a change in between is not missed."""
        return self._changed

    async def wait_changed(self, timeout: float, event: asyncio.Event | None = None) -> None:
        """Return after the next change to the cache (after ``event``, when given), or
        after ``timeout`` seconds."""
        event = event or self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _run(self) -> None:
        backoff = 0.1
        version = ""
        while True:
            try:
                if not version:
                    items, version = await self.client.list_objects(self.kind, self.namespace, self.selector)
                    self.objects = {item["metadata"]["name"]: item for item in items}
                    self.error = None
                    self.synced.set()
                    self._notify()
                version = await self._watch(version)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except KubeApiError as error:
                self.error = error
                log.warning("kubernetes %s watch failed (%s); retrying in %.1f s", self.kind, error, backoff)
                version = ""
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            except Exception:  # a bug or a malformed event must not end the cache for good
                log.exception("kubernetes %s watch crashed; relisting", self.kind)
                version = ""
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _watch(self, version: str) -> str:
        """Apply events until the watch ends; the version to resume from ("" = relist)."""
        async for event in self.client.watch(
            self.kind, self.namespace, self.selector, version, WATCH_TIMEOUT_SECONDS
        ):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    log.info("kubernetes %s watch expired at %s; relisting", self.kind, version)
                    return ""
                raise KubeApiError(int(obj.get("code") or 0), str(obj.get("reason")), str(obj.get("message")))
            version = str(obj.get("metadata", {}).get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            name = obj["metadata"]["name"]
            if kind == "DELETED":
                self.objects.pop(name, None)
            else:
                self.objects[name] = obj
            self._notify()
        return version
