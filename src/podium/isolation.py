"""Content runs as nobody in particular: which sandbox each local job gets.

Every process Podium starts for content on this host (a package build, a render, an
app process) runs in a bubblewrap sandbox (:mod:`podium.runtime.sandbox`) as an
unprivileged uid, seeing the host's system directories, what it needs read-only and
its own writable folders, never the data dir, the secret key or the database:

======== ================================= ===================================== ============
job      uid                               read-only                             writable
======== ================================= ===================================== ============
build    ``sandbox_uid_base`` (the builder) the bundle, the interpreter, uv       the new
                                                                                 environment,
                                                                                 uv's cache
render   ``sandbox_uid_base`` + content id  the bundle, its environments and      its output,
                                           interpreters                          its home
run      ``sandbox_uid_base`` + content id  the bundle, its environments and      its home,
                                           interpreters, the app runner          its socket
                                                                                 folder
======== ================================= ===================================== ============

A content item's processes therefore cannot read another's ``/proc/<pid>/environ``
(another uid, and a PID namespace of its own) nor its files, and cannot change their
own bundle. Builds share one uid, so that uv's cache (shared by every build, as it
makes builds fast) keeps one owner; a build's new environment becomes root's and
read-only to everyone once built.

The ``sandbox`` setting decides what happens where sandboxes cannot be made (no
bubblewrap, no user namespaces): ``required`` launches nothing (each job fails with the
reason and its fix), ``optional`` runs jobs unsandboxed with a warning, ``off`` never
sandboxes.

On Kubernetes (:meth:`Isolation.for_pods`) every job gets the same sandbox, always:
the backend turns its paths into the pod's volume mounts (one ``subPath`` of the data
PVC each, read-only or writable as listed) and its uid/gid into the pod's security
context, so a pod sees its bundle and environments read-only and its own folders
writable, never the data dir, the key or the database. Pods all run as one configured
uid/gid (``kubernetes_run_as_user``/``kubernetes_run_as_group``): their mounts, not
their uids, keep them apart.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from podium.runtime.base import Sandbox
from podium.runtime.sandbox import SYSTEM_DIRS, SandboxSupport, prepare_writable

log = logging.getLogger(__name__)
SandboxMode = Literal["required", "optional", "off"]


class Isolation:
    """``support``: what :func:`~podium.runtime.sandbox.probe_sandbox` found on this host.
    A server that is not root runs every sandbox as its own uid (a user namespace)."""

    def __init__(
        self, mode: SandboxMode, uid_base: int, support: SandboxSupport, data_dir: Path | None = None
    ) -> None:
        """``data_dir``: never shown to a job whole, whatever path would contain it."""
        self.mode = mode
        self.uid_base = uid_base
        self.support = support
        self.data_dir = str(data_dir) if data_dir is not None else None
        self.privileged = os.geteuid() == 0
        self.pod_ids: tuple[int, int] | None = None  # set by for_pods

    @classmethod
    def for_pods(cls, uid: int, gid: int, data_dir: Path) -> Isolation:
        """Sandboxes for Kubernetes pods: always made, every job as ``uid``/``gid``."""
        isolation = cls("required", uid, SandboxSupport(True, "pods on Kubernetes"), data_dir)
        isolation.pod_ids = (uid, gid)
        return isolation

    @property
    def active(self) -> bool:
        """Whether jobs get sandboxes (when ``required`` and unavailable they still do, and
        the backend refuses them)."""
        return self.mode == "required" or (self.mode == "optional" and self.support.available)

    def problem(self) -> str | None:
        """What an administrator must know about content isolation on this server, or None."""
        if self.mode == "off":
            return (
                "Content runs unsandboxed (setting sandbox = \"off\"): every content process "
                "runs as the server's user and can read the data dir, the secret key and "
                "other content's processes."
            )
        if self.support.available:
            return None
        if self.mode == "required":
            return (
                f"Content cannot run: sandboxes are required (setting sandbox) and this host "
                f"cannot make them: {self.support.reason}. Fix that, or set sandbox = "
                f"\"optional\" to run content unsandboxed."
            )
        return (
            f"Content runs unsandboxed: this host cannot make sandboxes: {self.support.reason}. "
            "Every content process can read the data dir, the secret key and other content's "
            "processes."
        )

    def content_uid(self, content_id: int) -> int:
        if self.pod_ids is not None:
            return self.pod_ids[0]
        return self.uid_base + content_id if self.privileged else os.geteuid()

    @property
    def builder_uid(self) -> int:
        if self.pod_ids is not None:
            return self.pod_ids[0]
        return self.uid_base if self.privileged else os.geteuid()

    def own_tree(self, root: Path, uid: int) -> None:
        """Give ``root`` and everything in it to ``uid`` (uv's cache, written by unsandboxed
        builds before), when its top is someone else's."""
        if not self.active or not self.privileged or not root.exists() or root.stat().st_uid == uid:
            return
        for directory, dirs, files in os.walk(root):
            os.lchown(directory, uid, uid)
            for entry in dirs + files:
                os.lchown(os.path.join(directory, entry), uid, uid)

    def sandbox(
        self, uid: int, read_only: Iterable[str | Path | None], writable: Iterable[str | Path]
    ) -> Sandbox | None:
        """The sandbox of a job running as ``uid``, or None when jobs run unsandboxed. The
        writable folders are created (0700) and given to ``uid``; read-only paths that are
        None, repeated or inside another listed path are dropped."""
        if not self.active:
            return None
        gid = self.pod_ids[1] if self.pod_ids is not None else uid
        mine = tuple(str(self._writable(path, uid, gid)) for path in writable)
        shown: list[str] = []
        for path in sorted({os.path.normpath(str(p)) for p in read_only if p}, key=len):
            if self.data_dir is not None and _below(self.data_dir, path):
                log.warning("sandbox: %s holds the data dir; not shown to the job", path)
                continue
            if path not in mine and not any(_below(path, other) for other in (*shown, *mine)):
                shown.append(path)
        return Sandbox(uid, gid, tuple(shown), mine)

    def _writable(self, path: str | Path, uid: int, gid: int) -> Path:
        if self.pod_ids is not None and not self.privileged:
            # A server that is not root cannot give folders away: its pods run as its
            # own uid (the shipped manifests do), and the folder is its own.
            folder = Path(path)
            folder.mkdir(mode=0o700, exist_ok=True)
            return folder
        return prepare_writable(path, uid, gid)


def interpreter_paths(executable: str | None) -> list[str]:
    """What an interpreter needs to run in a sandbox: for a venv's python, the venv and the
    installation its ``pyvenv.cfg`` names; otherwise the installation holding it (the
    parent of its ``bin``, or its own folder). Paths under the system directories need
    nothing."""
    if not executable:
        return []
    path = Path(executable)
    found: list[str] = []
    venv = path.parent.parent
    config = venv / "pyvenv.cfg"
    if config.is_file():
        found.append(str(venv))
        for line in config.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                found.append(str(Path(value.strip()).resolve().parent))
    else:
        folder = path.resolve().parent
        found.append(str(folder.parent if folder.name == "bin" else folder))
    return [p for p in found if not any(_below(p, system) for system in SYSTEM_DIRS)]


def make_readable(root: Path) -> None:
    """Give ``root`` (a finished build) to the server's user, readable by everyone and
    writable by no one else: sandboxed content of any uid reads it, none can change it."""
    owner = os.geteuid()

    def give(name: str) -> None:
        stat = os.lstat(name)
        if os.path.islink(name):
            os.lchown(name, owner, owner)
            return
        os.chown(name, owner, owner)
        readable = 0o555 if (stat.st_mode & 0o111 or os.path.isdir(name)) else 0o444
        os.chmod(name, (stat.st_mode & 0o1777 & ~0o022) | readable)

    give(str(root))
    for directory, dirs, files in os.walk(root):
        for entry in dirs + files:
            give(os.path.join(directory, entry))


def _below(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")
