"""A simulated Kubernetes cluster for tests: a real HTTP API server in a thread of its
own, with a Job controller and a local kubelet (see ``reference/kubernetes-testing.md``).

    cluster = SimCluster(tmp_path, images={"python:3.12"})
    cluster.start()
    cluster.write_kubeconfig(tmp_path / "kubeconfig")
    ...
    cluster.stop()

What it does not model is listed in ``tests/k8s_sim/README.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from podium.runtime.sandbox import SYSTEM_DIRS, probe_sandbox

from .scheduling import node
from .server import ApiServer, self_check
from .store import Store
from .workloads import Workloads

T = TypeVar("T")


def image_dirs() -> tuple[str, ...]:
    """What the simulated images hold beyond the host's system folders: this Python, its
    environment and Podium's own source (the runtime image is Podium's)."""
    import podium

    source = os.path.dirname(os.path.dirname(podium.__file__))
    found = []
    for path in (sys.prefix, sys.base_prefix, source):
        path = os.path.realpath(path)
        if not any(path == d or path.startswith(d + "/") for d in (*SYSTEM_DIRS, *found)):
            found.append(path)
    return tuple(found)


class SimCluster:
    """``volumes`` maps PVC names to host folders (more with :meth:`add_volume`);
    ``enforce_mounts`` runs every pod process in the local sandbox (None: when this host
    can make sandboxes as root, see :attr:`enforcing`)."""

    def __init__(self, root: Path, images: set[str], validate: bool = True,
                 volumes: dict[str, Path] | None = None, enforce_mounts: bool | None = None) -> None:
        self.root = root
        self.images = images
        self.validate = validate
        self.volumes: dict[str, Path] = dict(volumes or {})
        if enforce_mounts is None:
            enforce_mounts = os.geteuid() == 0 and probe_sandbox(65534, 65534).available
        self.enforcing = enforce_mounts
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="k8s-sim", daemon=True)
        self._runner: web.AppRunner | None = None
        self.store: Store
        self.workloads: Workloads

    def start(self) -> str:
        self._thread.start()
        self.url = self.call(self._start())
        return self.url

    async def _start(self) -> str:
        self.store = Store(self_check if self.validate else None)
        self.workloads = Workloads(self.store, self.root, self.images, self.volumes, image_dirs(),
                                   self.enforcing)
        server = ApiServer(self.store, self.workloads)
        self._runner = web.AppRunner(server.app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the cluster's event loop (its objects live there)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def create_service_account(self, namespace: str, name: str) -> None:
        async def create() -> None:
            self.store.create("serviceaccounts", namespace,
                              {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})
        self.call(create())

    def set_start_delay(self, seconds: float) -> None:
        """Every pod started from now on waits ``seconds`` (``ContainerCreating``) before
        its first container runs: an image pull, or a runtime copying its files."""
        async def change() -> None:
            self.workloads.start_delay_seconds = seconds
        self.call(change())

    def add_volume(self, claim: str, host: Path) -> None:
        """A PersistentVolumeClaim bound to the host folder ``host``."""
        self.volumes[claim] = host.resolve()

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        async def create() -> None:
            self.store.create("namespaces", "", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": name, "labels": dict(labels or {})}})
        self.call(create())

    def add_node(self, name: str, labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None,
                 cpu: float = 2.0, memory: float = 8 * 2**30, extra: dict[str, float] | None = None) -> None:
        """A node joins (as a cluster autoscaler would add one): pending pods may now fit."""
        async def add() -> None:
            self.workloads.add_node(node(name, labels, taints, cpu, memory, extra))
        self.call(add())

    def remove_node(self, name: str) -> None:
        async def remove() -> None:
            found = self.store.get("nodes", "", name)
            if found is not None:
                self.store.remove("nodes", found)
        self.call(remove())

    def objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        """Every stored object of a kind, as the API server holds it (a copy)."""
        import copy

        async def items() -> list[dict[str, Any]]:
            return copy.deepcopy(self.store.items(kind, namespace))
        return self.call(items())

    def history(self) -> list[dict[str, Any]]:
        """Every version of every object the API server has stored (its watch history)."""
        import copy

        async def items() -> list[dict[str, Any]]:
            return [copy.deepcopy(entry[4]) for entry in self.store.history]
        return self.call(items())

    @property
    def problems(self) -> list[str]:
        return self.workloads.problems

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "sim",
            "clusters": [{"name": "sim", "cluster": {"server": self.url}}],
            "users": [{"name": "sim", "user": {"token": "sim"}}],
            "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "sim", "namespace": namespace}}],
        }))
        return path

    def close(self) -> list[str]:
        """Stop the cluster (:meth:`stop`) and return the problems it saw while it ran,
        taken before stopping; tests assert there were none."""
        problems = list(self.problems)
        self.stop()
        return problems

    def stop(self) -> None:
        async def shutdown() -> None:
            await self.workloads.shutdown()
            if self._runner is not None:
                await self._runner.cleanup()
            current = asyncio.current_task()
            rest = [task for task in asyncio.all_tasks() if task is not current]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
        try:
            self.call(shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.close()
