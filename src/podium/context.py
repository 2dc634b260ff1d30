"""The server's shared state: settings, store, secret box, task manager.

One ``Podium`` object is made by ``create_app(settings)`` and hung off the app;
nothing in Podium is a module-level singleton.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from podium.crypto import SecretBox
from podium.settings import Settings
from podium.store import Store
from podium.tasks import TaskManager


@dataclass
class Podium:
    settings: Settings
    store: Store
    secrets: SecretBox
    tasks: TaskManager
    deploy_locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def bundle_archive(self, content_id: int, bundle_id: int) -> Path:
        return self.data_dir / "bundles" / str(content_id) / f"{bundle_id}.tar.gz"

    def bundle_dir(self, content_id: int, bundle_id: int) -> Path:
        return self.data_dir / "apps" / str(content_id) / str(bundle_id)

    def tmp_dir(self) -> Path:
        path = self.data_dir / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def content_url(self, guid: str) -> str:
        return f"{self.settings.effective_public_url}content/{guid}/"

    def dashboard_url(self, guid: str) -> str:
        return f"{self.settings.effective_public_url}connect/#/apps/{guid}"

    def deploy_lock(self, content_id: int) -> asyncio.Lock:
        return self.deploy_locks.setdefault(content_id, asyncio.Lock())


def open_podium(settings: Settings) -> Podium:
    """Make the data dir, migrate the database and assemble the server state."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.effective_database_url)
    store.migrate()
    return Podium(
        settings=settings,
        store=store,
        secrets=SecretBox.from_file(settings.effective_secret_key_file),
        tasks=TaskManager(store),
    )
