"""Runtime caches: the built package environments, as Connect lists and deletes them.

Connect names a runtime cache by language, version and image (``v1/system/caches/
runtime``); here a cache is every recorded package environment with those three
(:class:`podium.store.models.PackageEnvironment`). Deleting one runs as a task:

- an environment no process runs from is removed from disk and from the inventory;
- one a running process (a run or render job of this or another node) still uses is
  *retired*: its ready marker goes and it leaves the list, but its files stay until
  nothing runs from it (each later deletion sweeps retired environments no longer in
  use), so the process is not pulled from under;
- then every active bundle that used a deleted environment is built again
  (:meth:`podium.deploy.Deployer.rebuild_environment`; a retired folder's fingerprint
  builds beside it), so that content's next process starts with a fresh environment.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from podium.build import READY_MARKER
from podium.build.compile import compiling
from podium.deploy import Deployer
from podium.store import Store
from podium.store.models import Bundle, Content, Job, PackageEnvironment
from podium.tasks import TaskOutput

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class CacheKey:
    language: str
    version: str
    image_name: str

    def json(self) -> dict[str, str]:
        return {"language": self.language, "version": self.version, "image_name": self.image_name}


def list_caches(session: Session) -> list[CacheKey]:
    """Every runtime cache with an environment on disk, by language, version and image."""
    rows = session.scalars(select(PackageEnvironment).where(PackageEnvironment.retired.is_(False)))
    return sorted({CacheKey(r.language, r.language_version, r.image_name) for r in rows
                   if (Path(r.path) / READY_MARKER).exists()})


def environments_of(session: Session, key: CacheKey) -> list[PackageEnvironment]:
    return [
        env for env in session.scalars(
            select(PackageEnvironment).where(
                PackageEnvironment.retired.is_(False),
                PackageEnvironment.language.ilike(key.language),
                PackageEnvironment.language_version == key.version,
                PackageEnvironment.image_name == key.image_name,
            ).order_by(PackageEnvironment.id)
        )
        if (Path(env.path) / READY_MARKER).exists()
    ]


def _uses(bundle: Bundle, path: str) -> bool:
    prefix = path.rstrip("/") + "/"
    return any(p is not None and (p + "/").startswith(prefix) for p in (bundle.python_path, bundle.r_library))


def paths_in_use(session: Session, paths: list[str]) -> set[str]:
    """Which of the environment folders ``paths`` a running run or render job uses, or a
    compile job writes bytecode into (:mod:`podium.build.compile`)."""
    bundle_ids = set(session.scalars(
        select(Job.bundle_id).where(Job.status == 0, Job.kind.in_(("run", "render")), Job.bundle_id.is_not(None))
    ))
    compiled_now = compiling(session)
    used = {path for path in paths if path in compiled_now}
    for bundle in session.scalars(select(Bundle).where(Bundle.id.in_(bundle_ids))) if bundle_ids else []:
        used.update(path for path in paths if _uses(bundle, path))
    return used


class RuntimeCaches:
    """Deletes runtime caches (:meth:`delete`, the body of a task)."""

    def __init__(self, store: Store, deployer: Deployer) -> None:
        self.store = store
        self.deployer = deployer

    def sweep(self, out: TaskOutput | None = None) -> int:
        """Remove retired environments nothing runs from any more; how many went."""
        removed = 0
        with self.store.session() as session:
            retired = list(session.scalars(select(PackageEnvironment).where(PackageEnvironment.retired.is_(True))))
            busy = paths_in_use(session, [env.path for env in retired])
            for env in retired:
                if env.path in busy:
                    continue
                shutil.rmtree(env.path, ignore_errors=True)
                session.delete(env)
                removed += 1
                if out is not None:
                    out.line(f"Removed retired environment {env.fingerprint}: nothing runs from it any more.")
        return removed

    async def delete(self, key: CacheKey, out: TaskOutput) -> None:
        self.sweep(out)
        rebuild: set[tuple[int, int]] = set()
        with self.store.session() as session:
            environments = environments_of(session, key)
            paths = [env.path for env in environments]
            busy = paths_in_use(session, paths)
            active = session.execute(
                select(Content.id, Bundle).join(Bundle, Bundle.id == Content.bundle_id)
            ).all()
            for env in environments:
                rebuild.update((cid, b.id) for cid, b in active if _uses(b, env.path))
                (Path(env.path) / READY_MARKER).unlink(missing_ok=True)
                if env.path in busy:
                    env.retired = True
                    out.line(f"Retired environment {env.fingerprint}: a running process uses it; "
                             "it is removed once nothing runs from it.")
                else:
                    shutil.rmtree(env.path, ignore_errors=True)
                    session.delete(env)
                    out.line(f"Removed environment {env.fingerprint} ({env.path}).")
        log.info("runtime cache %s %s %s deleted: %d environments", key.language, key.version,
                 key.image_name, len(paths))
        for content_id, bundle_id in sorted(rebuild):
            out.line(f"Rebuilding the environment of content {content_id}, bundle {bundle_id}, for its next start.")
            await self.deployer.rebuild_environment(content_id, bundle_id, out)
        out.line(f"Deleted the {key.language} {key.version} runtime cache of image {key.image_name}.")
