"""A node's stop (podium.app's lifespan): each step runs whatever became of the ones
before it, so a step that fails cannot leave content processes running without their
server; the failure is logged and ``podium serve`` exits 1. A start that fails stops
what had started the same way, and still fails."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from tests.conftest import free_port

from podium.app import Node, build, create_app
from podium.settings import load_settings


def _node(tmp_path: Path) -> Node:
    return build(load_settings(
        None, data_dir=tmp_path / "data", runtime_dir=tmp_path / "run", listen=f"127.0.0.1:{free_port()}",
        sandbox="off", python_installations=[sys.executable]))


def _start_and_stop(app: FastAPI) -> None:
    """The app's lifespan, its start-up and its stop, as uvicorn runs it."""

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(lifespan())


def _spy(node: Node) -> list[str]:
    """The stop steps of ``node`` that ran, in order (feed, scheduler and backend; the
    heartbeat's by the test itself)."""
    ran: list[str] = []

    def spied(name: str, stop: Any) -> Any:
        async def step(*args: Any, **kwargs: Any) -> None:
            ran.append(name)
            await stop(*args, **kwargs)
        return step

    node.feed.close = spied("feed", node.feed.close)  # type: ignore[method-assign]
    node.scheduler.close = spied("scheduler", node.scheduler.close)  # type: ignore[method-assign]
    node.backend.close = spied("backend", node.backend.close)  # type: ignore[method-assign]
    return ran


def test_a_stop_step_that_fails_is_logged_and_every_later_step_still_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = _node(tmp_path)
    app = create_app(node)
    ran = _spy(node)

    async def broken() -> None:
        ran.append("heartbeat")
        raise RuntimeError("a bug in the heartbeat's stop")

    node.heartbeat.close = broken  # type: ignore[method-assign]

    with caplog.at_level(logging.INFO, logger="podium.app"):
        _start_and_stop(app)
    assert ran == ["heartbeat", "feed", "scheduler", "backend"]
    assert app.state.stop_failed == ["the heartbeat"]
    messages = [record.getMessage() for record in caplog.records]
    assert "stopping: the heartbeat failed; the stop goes on" in messages
    assert ("the stop was not clean: the heartbeat failed (logged above); the rest of it went on"
            in messages)


def test_a_clean_stop_fails_no_step(tmp_path: Path) -> None:
    app = create_app(_node(tmp_path))
    _start_and_stop(app)
    assert app.state.stop_failed == []


def test_a_start_that_fails_stops_what_had_started_and_still_fails(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = _node(tmp_path)
    app = create_app(node)
    ran = _spy(node)
    heartbeats: list[bool] = []
    close = node.heartbeat.close

    async def closed() -> None:  # the heartbeat's task had started: it is stopped
        heartbeats.append(node.heartbeat._task is not None and not node.heartbeat._task.done())
        await close()
        heartbeats.append(node.heartbeat._task.done())

    def broken() -> None:
        raise RuntimeError("a bug in the throttle's start")

    node.heartbeat.close = closed  # type: ignore[method-assign]
    node.throttle.start = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="podium.app"), \
            pytest.raises(RuntimeError, match="a bug in the throttle's start"):
        _start_and_stop(app)
    assert heartbeats == [True, True]
    assert ran == ["feed", "scheduler", "backend"]
    assert app.state.stop_failed == []
    messages = [record.getMessage() for record in caplog.records]
    assert ("the start failed (RuntimeError: a bug in the throttle's start); stopping what had started"
            in messages)
    assert not any(message.startswith("Podium ") and "serving on" in message for message in messages)
