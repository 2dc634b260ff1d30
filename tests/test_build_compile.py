"""Bytecode compiled after the deploy (podium.build.compile): a real server builds a
FastAPI environment, finishes the deploy, and compiles the environment in a compile job
of its own; the pieces that guard the environment are tested on their own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.conftest import RunningServer, start_server
from tests.helpers import deploy, tar_gz

from podium.build.compile import COMPILED_MARKER, adopt_bytecode, compiling
from podium.caches import paths_in_use
from podium.store import Store
from podium.store.models import Content, Job, User

_APP = "from fastapi import FastAPI\napp = FastAPI()\n@app.get('/')\ndef root():\n    return {'ok': True}\n"
_TAG = "cpython-311"  # the bundles ask for Python 3.11.7


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("podium") / "data")
    yield running
    running.stop()


def _bundle(requirements: str) -> bytes:
    manifest = {
        "version": 1,
        "metadata": {"appmode": "python-fastapi", "entrypoint": "app"},
        "python": {"version": "3.11.7", "package_manager": {"name": "pip", "package_file": "requirements.txt"}},
        "files": {},
    }
    return tar_gz({"manifest.json": json.dumps(manifest), "requirements.txt": requirements, "app.py": _APP})


def _environment(server: RunningServer, task: dict[str, Any]) -> Path:
    found = re.search(r"(?:Building|Reusing) package environment ([0-9a-f]{32})", "\n".join(task["all_output"]))
    assert found, task["all_output"]
    return server.data_dir / "envs" / found.group(1)


def _wait_compiled(env: Path) -> None:
    deadline = time.monotonic() + 120
    while not (env / COMPILED_MARKER).exists():
        assert time.monotonic() < deadline, f"{env} was not compiled to bytecode"
        time.sleep(0.1)


def _compile_jobs(server: RunningServer, guid: str) -> list[dict[str, Any]]:
    jobs = server.api().get(f"{server.url}/__api__/v1/content/{guid}/jobs").json()
    return [job for job in jobs if job["key"].startswith("compile-")]


def test_build_compile_after_the_deploy_leaves_bytecode_python_uses(server: RunningServer) -> None:
    key = server.admin_key
    guid = server.api().post(f"{server.url}/__api__/v1/content", json={"name": "compiled"}).json()["guid"]
    _, task = deploy(server, key, guid, _bundle("fastapi\n"))
    assert task["code"] == 0, task["all_output"]
    output = "\n".join(task["all_output"])
    assert "Compiling the environment's modules to bytecode in the background (job compile-" in output
    assert "Bytecode compiled" not in output  # not uv's compile, inside the build
    env = _environment(server, task)
    _wait_compiled(env)
    package = next((env / "lib").glob("python3.*/site-packages/fastapi"))
    cached = package / "__pycache__" / f"__init__.{_TAG}.pyc"
    assert cached.is_file() and cached.stat().st_uid == os.geteuid()
    assert not cached.stat().st_mode & 0o022 and not (package / "__pycache__").stat().st_mode & 0o022
    assert not list(server.data_dir.glob("envs/.*"))  # no scratch folder left
    # Python finds the bytecode current (timestamp and size of each source) and loads it.
    verbose = subprocess.run([str(env / "bin" / "python"), "-v", "-c", "import fastapi"],
                             env={"PYTHONDONTWRITEBYTECODE": "1"}, capture_output=True, text=True, timeout=60)
    assert f"{cached} matches {package / '__init__.py'}" in verbose.stderr, verbose.stderr[-3000:]
    jobs = _compile_jobs(server, guid)
    assert len(jobs) == 1 and jobs[0]["status"] != 0 and jobs[0]["exit_code"] == 0, jobs
    assert jobs[0]["tag"] == "python_restore"  # one of Connect's tags
    assert server.api().get(f"{server.content_url}/content/{guid}/", timeout=60).json() == {"ok": True}


def test_build_compile_again_when_a_reused_environment_is_not_compiled(server: RunningServer) -> None:
    """What a server stop in the middle of a compile leaves: the next deploy reusing
    the environment compiles it."""
    key = server.admin_key
    guid = server.api().post(f"{server.url}/__api__/v1/content", json={"name": "recompiled"}).json()["guid"]
    _, first = deploy(server, key, guid, _bundle("fastapi\n"))
    assert first["code"] == 0, first["all_output"]
    env = _environment(server, first)
    _wait_compiled(env)
    (env / COMPILED_MARKER).unlink()
    _, again = deploy(server, key, guid, _bundle("fastapi\n"))
    assert again["code"] == 0, again["all_output"]
    output = "\n".join(again["all_output"])
    assert "Reusing package environment" in output and "to bytecode in the background" in output
    _wait_compiled(env)
    _, third = deploy(server, key, guid, _bundle("fastapi\n"))
    assert "to bytecode in the background" not in "\n".join(third["all_output"])


def test_build_compile_moves_only_pyc_files_beside_real_folders(tmp_path: Path) -> None:
    env, scratch = tmp_path / "env", tmp_path / "scratch"
    (env / "lib" / "pkg").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (env / "lib" / "link").symlink_to(tmp_path / "elsewhere")
    for folder in ("lib/pkg", "lib/link", "lib/gone"):
        (scratch / folder / "__pycache__").mkdir(parents=True)
        (scratch / folder / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"pyc")
    (scratch / "lib/pkg/__pycache__/notes.txt").write_text("not bytecode")
    (scratch / "lib/pkg/__pycache__/other.cpython-311.pyc").symlink_to(tmp_path / "elsewhere")
    (scratch / "lib/pkg/stray.pyc").write_bytes(b"outside a __pycache__")

    assert adopt_bytecode(scratch, env, None) == 1
    assert (env / "lib/pkg/__pycache__/mod.cpython-311.pyc").read_bytes() == b"pyc"
    assert sorted(p.name for p in (env / "lib/pkg/__pycache__").iterdir()) == ["mod.cpython-311.pyc"]
    assert not list((tmp_path / "elsewhere").iterdir())  # nothing through the link
    assert not (env / "lib/gone").exists() and not (env / "lib/pkg/stray.pyc").exists()


def test_build_compile_keeps_its_environment_in_use_for_the_runtime_caches(store: Store, tmp_path: Path) -> None:
    env = str(tmp_path / "envs" / "abc")
    with store.session() as session:
        owner = User(username="owner")
        session.add(owner)
        session.flush()
        content = Content(name="compiling", owner_id=owner.id)
        session.add(content)
        session.flush()
        session.add(Job(key="compile-1", content_id=content.id, kind="build", tag="python_restore",
                        backend="local", meta={"environment": env}))
    with store.session() as session:
        assert compiling(session) == {env}
        assert paths_in_use(session, [env, str(tmp_path / "envs" / "other")]) == {env}
        job = session.scalar(select(Job).where(Job.key == "compile-1"))
        assert job is not None
        job.status = 1
    with store.session() as session:
        assert compiling(session) == set() and paths_in_use(session, [env]) == set()
