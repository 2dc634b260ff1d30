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
from tests.conftest import free_port

from podium.app import build, create_app
from podium.settings import load_settings


def test_a_stop_step_that_fails_is_logged_and_every_later_step_still_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = build(load_settings(
        None, data_dir=tmp_path / "data", runtime_dir=tmp_path / "run", listen=f"127.0.0.1:{free_port()}",
        sandbox="off", python_installations=[sys.executable]))
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

    async def serve_and_stop() -> None:
        async with app.router.lifespan_context(app):
            pass

    with caplog.at_level(logging.INFO, logger="podium.app"):
        asyncio.run(serve_and_stop())
    assert ran == ["heartbeat", "feed", "scheduler", "backend"]
    assert app.state.stop_failed == ["the heartbeat"]
    messages = [record.getMessage() for record in caplog.records]
    assert "stopping: the heartbeat failed; the stop goes on" in messages
    assert ("the stop was not clean: the heartbeat failed (logged above); the rest of it went on"
            in messages)


def test_a_clean_stop_fails_no_step(tmp_path: Path) -> None:
    node = build(load_settings(
        None, data_dir=tmp_path / "data", runtime_dir=tmp_path / "run", listen=f"127.0.0.1:{free_port()}",
        sandbox="off", python_installations=[sys.executable]))
    app = create_app(node)

    async def serve_and_stop() -> None:
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(serve_and_stop())
    assert app.state.stop_failed == []
