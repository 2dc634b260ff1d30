"""Tasks: client-visible long operations (deploy, build) whose output clients poll.

Output lines are stored in the database as they are produced, so any server
node can answer ``GET v1/tasks/{id}``; waiters on this node are woken at once,
others notice within a short poll interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from podium.store import Store
from podium.store.models import Task, TaskLine, utcnow

log = logging.getLogger(__name__)
_POLL_SECONDS = 0.25


class TaskFailed(Exception):
    """Raised inside a task body to finish it with a non-zero code and a message."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class TaskSnapshot:
    id: str
    output: list[str]
    last: int
    finished: bool
    code: int
    error: str
    result: dict[str, Any] | None


class TaskOutput:
    """What a running task writes to: lines for the client, and its end."""

    def __init__(self, manager: TaskManager, task_id: str) -> None:
        self._manager = manager
        self.task_id = task_id
        self._count = 0

    def line(self, text: str) -> None:
        self.lines([text])

    def lines(self, texts: list[str]) -> None:
        """Write ``texts`` as lines (each split where it holds line breaks), in one
        database write."""
        with self._manager.store.session() as session:
            for text in texts:
                for part in text.splitlines() or [""]:
                    session.add(TaskLine(task_id=self.task_id, n=self._count, line=part))
                    self._count += 1
        self._manager.notify(self.task_id)


TaskBody = Callable[[TaskOutput], Awaitable[dict[str, Any] | None]]


class ContentLocks:
    """One lock per content item, held by its deploys and renders so they never overlap
    (on this node)."""

    def __init__(self) -> None:
        self._locks: dict[int, asyncio.Lock] = {}

    def __call__(self, content_id: int) -> asyncio.Lock:
        return self._locks.setdefault(content_id, asyncio.Lock())


class TaskManager:
    """Runs tasks on this node (``node_id``, recorded on each task it creates)."""

    def __init__(self, store: Store, node_id: str | None = None) -> None:
        self.store = store
        self.node_id = node_id
        self._events: dict[str, asyncio.Event] = {}
        self._running: set[asyncio.Task[None]] = set()

    def create(self, kind: str, user_id: int | None, content_id: int | None) -> str:
        with self.store.session() as session:
            task = Task(kind=kind, user_id=user_id, content_id=content_id, node_id=self.node_id)
            session.add(task)
            session.flush()
            return task.id

    def start(self, task_id: str, body: TaskBody) -> None:
        """Run ``body`` in the background; its exceptions finish the task as failed."""
        runner = asyncio.get_running_loop().create_task(self._run(task_id, body))
        self._running.add(runner)
        runner.add_done_callback(self._running.discard)

    async def _run(self, task_id: str, body: TaskBody) -> None:
        out = TaskOutput(self, task_id)
        code, error, result = 0, "", None
        try:
            result = await body(out)
        except TaskFailed as exc:
            code, error = exc.code, exc.message
        except Exception:
            log.exception("task %s failed unexpectedly", task_id)
            code, error = 1, "The task failed with an internal error; the server log has details."
        if error:
            out.line(error)
        with self.store.session() as session:
            task = session.get(Task, task_id)
            assert task is not None
            task.finished, task.code, task.error = True, code, error
            task.result, task.finished_time = result, utcnow()
        self.notify(task_id)

    def notify(self, task_id: str) -> None:
        event = self._events.get(task_id)
        if event is not None:
            event.set()

    def snapshot(self, task_id: str, first: int) -> TaskSnapshot | None:
        with self.store.session() as session:
            task = session.get(Task, task_id)
            if task is None:
                return None
            lines = session.scalars(
                select(TaskLine.line)
                .where(TaskLine.task_id == task_id, TaskLine.n >= first)
                .order_by(TaskLine.n)
            ).all()
            total = session.scalar(
                select(func.count()).select_from(TaskLine).where(TaskLine.task_id == task_id)
            )
            # Lines written between the two reads are not in ``lines``: ``last`` must not
            # count them, or the client's next ``first`` would skip them (lines are numbered
            # from 0 without gaps, so the lines read end at first + len(lines)).
            last = first + len(lines) if lines else min(first, int(total or 0))
            return TaskSnapshot(
                task.id, list(lines), last, task.finished, task.code, task.error, task.result,
            )

    async def wait(self, task_id: str, first: int, wait_seconds: float) -> TaskSnapshot | None:
        """The task from line ``first`` on, held up to ``wait_seconds`` for news.

        Returns early as soon as there is output past ``first`` or the task finishes.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_seconds)
        event = self._events.setdefault(task_id, asyncio.Event())
        try:
            while True:
                event.clear()
                snap = await asyncio.to_thread(self.snapshot, task_id, first)
                remaining = deadline - loop.time()
                if snap is None or snap.finished or snap.last > first or remaining <= 0:
                    return snap
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, _POLL_SECONDS))
                except TimeoutError:
                    pass
        finally:
            if not event.is_set():
                self._events.pop(task_id, None)

    def fail_interrupted(self) -> int:
        """Tasks this node left running when it stopped can never finish: say so (another
        node's are its own, or the claimer's of a dead node). Returns how many."""
        with self.store.session() as session:
            done = session.execute(
                update(Task)
                .where(Task.finished.is_(False), Task.node_id == self.node_id)
                .values(
                    finished=True,
                    code=1,
                    error="The server stopped while this task ran; deploy again.",
                    finished_time=utcnow(),
                )
            )
            return int(getattr(done, "rowcount", 0) or 0)

    async def shutdown(self) -> None:
        for runner in list(self._running):
            runner.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
