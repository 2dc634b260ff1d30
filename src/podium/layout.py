"""Where things live in the data dir.

One :class:`DataLayout` names every path Podium keeps under its data dir, so the
API, the services and the wiring agree on them:

- ``bundles/<content id>/<bundle id>.tar.gz``: uploaded archives, immutable;
- ``apps/<content id>/<bundle id>/``: unpacked bundles;
- ``envs/<fingerprint>/``: package environments, shared by fingerprint;
- ``cache/``: the package installer's cache;
- ``jobs/<key>/``: each job's log and records (local backend);
- ``outputs/<content id>/<rendering id>/``: rendered documents;
- ``home/<content guid>/``: the ``HOME`` of a content's processes;
- ``usage/``: recorded usage spooled by each node, waiting to be imported;
- ``runtime/``: the app runner script; ``tmp/``: uploads in progress (on the data
  volume, so a finished upload is renamed into place).

One :class:`NodeDirs` names what belongs to one server node alone, in its runtime dir
(``settings.runtime_dir``), never on the data volume that several nodes share: the
app's socket and content processes' sockets.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from podium.settings import SettingsError


@dataclass(frozen=True)
class DataLayout:
    root: Path

    def create(self) -> DataLayout:
        """Make the data dir, readable by the server's user alone (content processes see
        only the folders mounted into their sandbox), and return this layout."""
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.root.chmod(0o700)
        except OSError as exc:  # a file there, no permission, a read-only file system
            raise SettingsError(
                f"the data dir {self.root} cannot be made or used: {exc.strerror or exc}. Choose a directory "
                "this user may write (setting data_dir, or --data-dir)") from exc
        return self

    @property
    def envs(self) -> Path:
        return self.root / "envs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def runtime(self) -> Path:
        return self.root / "runtime"

    @property
    def usage_spool(self) -> Path:
        """Recorded usage each node spools for the importer (:mod:`podium.usage_import`)."""
        return self.root / "usage"

    def bundle_archive(self, content_id: int, bundle_id: int) -> Path:
        return self.root / "bundles" / str(content_id) / f"{bundle_id}.tar.gz"

    def bundle_dir(self, content_id: int, bundle_id: int) -> Path:
        return self.root / "apps" / str(content_id) / str(bundle_id)

    def output_dir(self, content_id: int, rendering_id: int) -> Path:
        return self.root / "outputs" / str(content_id) / str(rendering_id)

    def content_dirs(self, content_id: int) -> tuple[Path, ...]:
        """Every folder holding one content item's files (removed with the content)."""
        return tuple(self.root / part / str(content_id) for part in ("apps", "bundles", "outputs"))

    def home(self, content_guid: str) -> Path:
        """The ``HOME`` of a content's processes, created on first use."""
        path = self.root / "home" / content_guid
        path.mkdir(parents=True, exist_ok=True)
        return path

    def tmp(self) -> Path:
        """Scratch space for uploads in progress, created on first use."""
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class NodeDirs:
    """One node's own runtime dir (sockets), kept apart from every other node's."""

    root: Path

    def create(self) -> NodeDirs:
        """Make the runtime dir (mode 0700) and check that it is a directory of this user's
        alone, not a link: in a shared temp dir another user could have made it first."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        info, parent = os.lstat(self.root), os.lstat(self.root.parent)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise RuntimeError(
                f"the runtime dir {self.root} is not a directory owned by this user (uid "
                f"{os.geteuid()}); remove it or set runtime_dir"
            )
        if parent.st_uid not in (0, os.geteuid()) or parent.st_mode & stat.S_IWOTH and not parent.st_mode & stat.S_ISVTX:
            # whoever owns the folder above could swap this one for their own
            raise RuntimeError(
                f"the runtime dir's parent {self.root.parent} belongs to another user or anyone "
                "may replace what is in it; set runtime_dir"
            )
        self.root.chmod(0o700)
        self.sockets.mkdir(exist_ok=True, mode=0o700)
        self.sockets.chmod(0o700)
        return self

    @property
    def app_socket(self) -> Path:
        """The unix socket the front reaches the API app on."""
        return self.root / "app.sock"

    @property
    def sockets(self) -> Path:
        """Content processes' unix sockets (``<job key>.sock``, or ``<job key>/app.sock``
        for a sandboxed process, whose folder alone is bound into its sandbox)."""
        return self.root / "sockets"
