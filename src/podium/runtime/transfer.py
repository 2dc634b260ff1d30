"""Files for pods without a shared volume: single-use, short-lived transfer tokens.

With ``kubernetes_shared_volume = false`` no pod mounts the data volume. The
Kubernetes backend issues, for each job, one *fetch* token naming exactly the paths of
the data dir the job may see (its sandbox's: bundle, package environment, runner,
home, output folder) and one *upload* token per folder it writes back (a render's
output, a build's new environment). An init container redeems the fetch token at
Podium's internal endpoint (``GET /__api__/internal/transfer``) for a tar of those
paths and unpacks it into an ``emptyDir``; once the job's command succeeded its
container redeems each upload token (``PUT``) with a tar of that folder, which
replaces the folder on the server. The endpoint takes nothing but the token, so a
token never reaches another job's files.

A token is 256 random bits, kept only as its SHA-256, redeemed once, and refused
after its expiry; the backend revokes a job's tokens when the job ends. Tokens live in
the server's memory: a pod whose server restarted before it fetched fails and is
started again by its scheduler (one server replica, as the shipped manifests run).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import secrets
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

Action = Literal["fetch", "upload"]


class TransferRefused(Exception):
    """A token that is unknown, used already, expired, or for another action."""


@dataclass(frozen=True)
class Grant:
    """What a token allows: ``fetch`` of ``paths`` (``None``: an empty folder in its
    place, such as a scratch folder), or ``upload`` of ``paths[0]``."""

    job_key: str
    content_guid: str
    action: Action
    paths: tuple[str | None, ...]
    expires: float
    absolute_links: bool = False  # upload: links to absolute paths outside the data dir


class TransferTokens:
    """Issues and redeems transfer tokens for paths below ``root`` (the data dir)."""

    def __init__(self, root: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root).resolve()
        self._clock = clock
        self._grants: dict[str, Grant] = {}
        self._lock = threading.Lock()

    def issue(self, job_key: str, content_guid: str, action: Action, paths: Iterable[str | None],
              ttl_seconds: float, absolute_links: bool = False) -> str:
        """A token for ``action`` on ``paths``; an upload token with ``absolute_links``
        accepts links to absolute paths outside the data dir (a build's venv links its
        interpreter), else only links inside the folder (a render's output is served)."""
        wanted = tuple(paths)
        for path in wanted:
            if path is None and action == "fetch":
                continue
            if path is None or not _below(posixpath.normpath(path), str(self.root)) or posixpath.normpath(path) == str(self.root):
                raise ValueError(f"a transfer path must be inside the data dir, not {path!r}")
        if action == "upload" and len(wanted) != 1:
            raise ValueError("an upload token names one folder")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._prune()
            self._grants[_digest(token)] = Grant(job_key, content_guid, action, wanted, self._clock() + ttl_seconds,
                                                 absolute_links)
        return token

    def redeem(self, token: str, action: Action) -> Grant:
        """The token's grant, used up; :class:`TransferRefused` when it allows nothing."""
        with self._lock:
            self._prune()
            grant = self._grants.get(_digest(token))
            if grant is None or grant.action != action:
                raise TransferRefused("unknown, used or expired token")
            del self._grants[_digest(token)]
        return grant

    def revoke(self, job_key: str) -> None:
        """Forget every token of a job (it ended, or was stopped)."""
        with self._lock:
            self._grants = {key: grant for key, grant in self._grants.items() if grant.job_key != job_key}

    def __len__(self) -> int:
        with self._lock:
            self._prune()
            return len(self._grants)

    def _prune(self) -> None:
        now = self._clock()
        self._grants = {key: grant for key, grant in self._grants.items() if grant.expires > now}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _below(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def pack(paths: tuple[str | None, ...], out: IO[bytes]) -> None:
    """A tar of ``paths``: path *i* as member folder ``<i>`` (links kept as links, never
    followed). ``None``, or a path that does not exist, is an empty folder. Not compressed: inside a
    cluster the network outruns gzip (``bench/k8s_transfer.py``: twice as fast)."""
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for index, path in enumerate(paths):
            if path is not None and os.path.lexists(path):
                tar.add(path, arcname=str(index), recursive=True)
            else:
                info = tarfile.TarInfo(str(index))
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)


def unpack_upload(archive: IO[bytes], target: Path, root: Path, absolute_links: bool = False) -> None:
    """Replace folder ``target`` with the folder ``0`` of ``archive`` (from a pod: not
    trusted). Members must stay inside; a relative symbolic link must stay inside the
    folder; an absolute one is refused unless ``absolute_links``, and then may point only
    where the data dir ``root`` is not (a venv's ``bin/python``): neither into it nor at
    a parent of it, so no later write or read by the server follows a link (or a chain
    of them) to its key or database."""
    root = root.resolve()
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.upload-", dir=target.parent))
    try:
        with tarfile.open(fileobj=archive, mode="r:*") as tar:
            def allowed(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
                name = member.name.lstrip("./")
                if name != "0" and not name.startswith("0/"):
                    raise tarfile.FilterError(f"unexpected member {member.name!r}")
                if member.issym():  # judged by its text: the folder's own links are not followed
                    if member.linkname.startswith("/"):  # nothing under it may be the data dir's
                        if not absolute_links:
                            raise tarfile.FilterError(f"link {member.name!r} points to an absolute path")
                        real = os.path.realpath(member.linkname)
                        if _below(real, str(root)) or _below(str(root), real):
                            raise tarfile.FilterError(f"link {member.name!r} points into the data dir")
                    else:
                        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
                        if target != "0" and not target.startswith("0/"):
                            raise tarfile.FilterError(f"link {member.name!r} points outside its folder")
                    return tarfile.tar_filter(member, dest)
                return tarfile.data_filter(member, dest)

            tar.extractall(staging, filter=allowed)
        new = staging / "0"
        if not new.is_dir() or new.is_symlink():
            raise tarfile.FilterError("the upload holds no folder")
        old = target.parent / f".{target.name}.old-{secrets.token_hex(4)}"
        if target.exists():
            target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# Run by the pods (any Python 3.8+, standard library only): ``fetch`` in the init
# container, ``upload`` after the job's command succeeded. Paths and tokens come from
# the environment: PODIUM_TRANSFER_URL, PODIUM_TRANSFER_TOKEN (fetch), PODIUM_TRANSFER_DIR
# (where the emptyDir is), PODIUM_UPLOAD_<i>_PATH / PODIUM_UPLOAD_<i>_TOKEN (upload).
POD_SCRIPT = r'''
import io, os, sys, tarfile, time, urllib.request
url = os.environ["PODIUM_TRANSFER_URL"].rstrip("/") + "/__api__/internal/transfer"
def call(method, token, body=None):
    for attempt in range(5):
        request = urllib.request.Request(url, data=body, method=method,
                                         headers={"Authorization": "Bearer " + token})
        try:
            with urllib.request.urlopen(request, timeout=300) as answer:
                return answer.read()
        except urllib.error.HTTPError as error:
            sys.exit("podium transfer: %s refused: %s %s" % (method, error.code, error.read()[:200]))
        except OSError as error:  # the server restarting, a network hiccup: try again
            print("podium transfer: %s: %s; retrying" % (method, error), file=sys.stderr, flush=True)
            time.sleep(1 + attempt)
    sys.exit("podium transfer: %s failed" % method)
if sys.argv[1] == "fetch":
    data = call("GET", os.environ["PODIUM_TRANSFER_TOKEN"])
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
        if hasattr(tarfile, "tar_filter"):
            tar.extractall(os.environ["PODIUM_TRANSFER_DIR"], filter="tar")
        else:
            tar.extractall(os.environ["PODIUM_TRANSFER_DIR"])
    print("podium transfer: fetched %d bytes" % len(data), flush=True)
else:
    index = 0
    while "PODIUM_UPLOAD_%d_PATH" % index in os.environ:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w|") as tar:
            tar.add(os.environ["PODIUM_UPLOAD_%d_PATH" % index], arcname="0")
        call("PUT", os.environ["PODIUM_UPLOAD_%d_TOKEN" % index], out.getvalue())
        index += 1
    print("podium transfer: uploaded %d folders" % index, flush=True)
'''
