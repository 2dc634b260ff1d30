"""A node's stop (podium.app's lifespan): each step runs whatever became of the ones
before it, so a step that fails cannot leave content processes running without their
server; the failure is logged and ``podium serve`` exits 1."""

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


def test_a_stop_step_that_fails_is_logged_and_every_later_step_still_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = _node(tmp_path)
    app = create_app(node)
    ran: list[str] = []

    def spied(name: str, stop: Any) -> Any:
        async def step(*args: Any, **kwargs: Any) -> None:
            ran.append(name)
            await stop(*args, **kwargs)
        return step

    async def broken() -> None:
        ran.append("heartbeat")
        raise RuntimeError("a bug in the heartbeat's stop")

    node.heartbeat.close = broken  # type: ignore[method-assign]
    node.feed.close = spied("feed", node.feed.close)  # type: ignore[method-assign]
    node.scheduler.close = spied("scheduler", node.scheduler.close)  # type: ignore[method-assign]
    node.backend.close = spied("backend", node.backend.close)  # type: ignore[method-assign]

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
