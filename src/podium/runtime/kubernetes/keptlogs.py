"""Job logs kept by Podium after the cluster forgets them.

A pod's log lives as long as the pod: ``ttlSecondsAfterFinished`` deletes an ended Job
with its pod, and stopping a job deletes it at once. :class:`KeptLogs` saves each
job's log (the lines as the pod log API gave them, with their timestamps) under
``<root>/<key>/log`` when the job ends or is stopped, and serves it once the pod is
gone. Logs older than the retention are deleted whenever a new one is saved.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from podium.runtime.base import valid_key

log = logging.getLogger(__name__)


class KeptLogs:
    def __init__(self, root: Path, retention_seconds: float) -> None:
        self.root = root
        self.retention_seconds = retention_seconds

    def path(self, key: str) -> Path | None:
        return self.root / key / "log" if valid_key(key) else None

    def has(self, key: str) -> bool:
        path = self.path(key)
        return path is not None and path.is_file()

    def save(self, key: str, lines: Iterable[str]) -> None:
        """Write ``key``'s log atomically (once: a kept log is final), then prune."""
        path = self.path(key)
        if path is None or path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8") as file:
            for line in lines:
                file.write(line.replace("\n", " ") + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(file.name, path)
        self.prune()

    def read(self, key: str) -> Iterator[str]:
        path = self.path(key)
        if path is None or not path.is_file():
            return
        with open(path, encoding="utf-8", errors="replace") as file:
            for line in file:
                yield line.rstrip("\n")

    def prune(self) -> None:
        """Delete kept logs older than the retention."""
        cutoff = time.time() - self.retention_seconds
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry.path, ignore_errors=True)
                    log.info("deleted the kept log of job %s (older than the retention)", entry.name)
            except OSError:
                continue
