"""The execution-backend contract: every backend must pass these tests.

The ``harness`` fixture is parametrised over backends: ``local``, and ``kubernetes``
through the simulated cluster (``tests/k8s_sim``), one namespace per test. The jobs run
``sys.executable`` and ``sh`` with loopback networking and read pids from their
output, so the backend must run them on this host: the local backend does, and so does
the simulated cluster's local kubelet.

Where backends legitimately differ the harness says so: a Kubernetes job may be PENDING
after ``launch`` returns (tests wait for RUNNING), and the pod log API merges stdout and
stderr (``merged_streams``).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.helpers import alive

from k8s_sim import SimCluster
from podium.runtime import (
    BackendError,
    ExecutionBackend,
    JobHandle,
    JobKind,
    JobSpec,
    JobState,
    JobStatus,
    LocalBackend,
    LogLine,
    Resources,
)
from podium.runtime.kubernetes.backend import KubernetesBackend
from podium.runtime.kubernetes.client import AsyncioKubeClient
from podium.runtime.kubernetes.manifests import KubernetesJobConfig

BACKENDS = ["local", "kubernetes"]
SIM_IMAGE = "podium.test/runtime:host"  # the simulated kubelet runs it on the host
_namespaces = itertools.count(1)
PY = sys.executable
T = TypeVar("T")


# Backends made while a scenario runs; closed on its event loop before the loop ends
# (a Kubernetes backend holds connections and watch tasks bound to that loop).
_made: list[ExecutionBackend] = []


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run one test scenario on a fresh event loop (no pytest-asyncio needed)."""

    async def scenario() -> T:
        try:
            return await asyncio.wait_for(coro, timeout)
        finally:
            for backend in _made:
                await backend.close()

    return asyncio.run(scenario())


def tracked(make: Callable[[], ExecutionBackend]) -> Callable[[], ExecutionBackend]:
    def make_tracked() -> ExecutionBackend:
        backend = make()
        _made.append(backend)
        return backend

    return make_tracked


@dataclass
class Harness:
    """One backend under test, and a way to make another instance over the same jobs
    (what a restarted server gets)."""

    make: Callable[[], ExecutionBackend]
    workdir: str
    merged_streams: bool = False
    backend: ExecutionBackend = field(init=False)
    launched: list[JobHandle] = field(default_factory=list)
    _count: int = 0

    def __post_init__(self) -> None:
        self.backend = self.make()

    def spec(
        self,
        command: list[str],
        *,
        kind: JobKind = "build",
        key: str | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        resources: Resources | None = None,
    ) -> JobSpec:
        self._count += 1
        return JobSpec(
            key=key or f"job-{self._count}",
            kind=kind,
            content_guid="0b6e8e6c-5f0d-4c4e-9a53-7a0b1c2d3e4f",
            image=None,
            command=command,
            env=env or {},
            workdir=self.workdir,
            port=port,
            resources=resources or Resources(),
        )

    async def launch(self, spec: JobSpec) -> JobHandle:
        handle = await self.backend.launch(spec)
        self.launched.append(handle)
        return handle

    async def cleanup(self) -> None:
        backend = self.make()
        for handle in [*self.launched, *await backend.list_jobs()]:
            await backend.stop(handle, grace_seconds=0)
        assert await backend.list_jobs() == []
        await backend.close()
        await self.backend.close()


@pytest.fixture(params=BACKENDS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    root = tmp_path / "jobs"
    workdir = tmp_path / "work"
    workdir.mkdir()
    if request.param == "local":
        harness = Harness(lambda: LocalBackend(root), str(workdir))
    elif request.param == "kubernetes":
        cluster = request.getfixturevalue("k8s_cluster")
        kubeconfig = str(cluster.write_kubeconfig(tmp_path / "kubeconfig"))
        config = KubernetesJobConfig(namespace=f"contract-{next(_namespaces)}", default_image=SIM_IMAGE)
        harness = Harness(
            tracked(lambda: KubernetesBackend(lambda: AsyncioKubeClient.connect(kubeconfig), config)),
            str(workdir), merged_streams=True,
        )
    else:
        raise AssertionError(f"no harness for backend {request.param!r}")
    yield harness
    run(harness.cleanup())
    _made.clear()


@pytest.fixture(scope="module")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    # The contract is the lifecycle, seen from the host (its files, its /proc): the pods'
    # isolation has tests of its own (test_kubernetes_isolation.py), so no sandbox here.
    cluster = SimCluster(tmp_path_factory.mktemp("k8s"), images={SIM_IMAGE}, enforce_mounts=False)
    cluster.start()
    yield cluster
    assert cluster.close() == []


async def running(backend: ExecutionBackend, handle: JobHandle) -> None:
    """Wait until a launched job has left PENDING (at once for the local backend)."""
    await wait_status(backend, handle, lambda status: status.state is not JobState.PENDING)


async def wait_status(
    backend: ExecutionBackend,
    handle: JobHandle,
    done: Callable[[JobStatus], bool] = lambda status: not status.state.active,
    timeout: float = 10.0,
) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = await backend.status(handle)
        if done(status) or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.02)


async def read_logs(
    backend: ExecutionBackend, handle: JobHandle, follow: bool = False
) -> list[LogLine]:
    return [line async for line in backend.logs(handle, follow=follow)]


async def wait_for_line(backend: ExecutionBackend, handle: JobHandle, text: str) -> LogLine:
    async for line in backend.logs(handle, follow=True):
        if text in line.data:
            return line
    raise AssertionError(f"the job ended without printing {text!r}")


def pid_gone(pid: int) -> bool:
    return not alive(pid)


def python(code: str) -> list[str]:
    return [PY, "-c", code]


SLEEP = python("import time; time.sleep(60)")


def test_backend_job_succeeds_with_exit_code_and_logs(harness: Harness) -> None:
    async def scenario() -> None:
        handle = await harness.launch(harness.spec(
            python("import sys; print('hello', flush=True); print('oops', file=sys.stderr)")
        ))
        status = await wait_status(harness.backend, handle)
        assert (status.state, status.exit_code, status.reason) == (JobState.SUCCEEDED, 0, "Completed")
        assert status.started_at and status.finished_at
        assert status.started_at <= status.finished_at
        lines = await read_logs(harness.backend, handle)
        if harness.merged_streams:
            assert sorted(line.data for line in lines) == ["hello", "oops"]
        else:
            assert [(line.stream, line.data) for line in lines if line.stream == "stdout"] == [
                ("stdout", "hello")
            ]
            assert ("stderr", "oops") in [(line.stream, line.data) for line in lines]
        assert all(line.timestamp.utcoffset() == timedelta(0) for line in lines)
        # Following an ended job returns what it printed, and ends.
        assert await read_logs(harness.backend, handle, follow=True) == lines

    run(scenario())


def test_backend_status_is_running_while_the_process_lives(harness: Harness) -> None:
    async def scenario() -> None:
        handle = await harness.launch(harness.spec(SLEEP))
        status = await wait_status(harness.backend, handle, lambda s: s.state is not JobState.PENDING)
        assert (status.state, status.exit_code, status.finished_at) == (JobState.RUNNING, None, None)
        assert status.started_at is not None
        assert await harness.backend.address(handle) is None  # not a run job

    run(scenario())


def test_backend_failing_job_reports_exit_code(harness: Harness) -> None:
    async def scenario() -> None:
        handle = await harness.launch(harness.spec(python("raise SystemExit(3)")))
        status = await wait_status(harness.backend, handle)
        assert (status.state, status.exit_code, status.reason) == (JobState.FAILED, 3, "Exited")
        assert status.message == "exited with code 3"

    run(scenario())


def test_backend_signalled_job_reports_128_plus_signal(harness: Harness) -> None:
    async def scenario() -> None:
        handle = await harness.launch(harness.spec(python("import os; os.abort()")))
        status = await wait_status(harness.backend, handle)
        assert (status.state, status.exit_code, status.reason) == (JobState.FAILED, 134, "Signalled")
        assert status.message == "killed by signal SIGABRT"

    run(scenario())


def test_backend_command_that_cannot_start_is_a_failed_job(harness: Harness) -> None:
    async def scenario() -> None:
        handle = await harness.launch(harness.spec(["/nonexistent/podium-no-such-command"]))
        status = await wait_status(harness.backend, handle)
        assert (status.state, status.reason) == (JobState.FAILED, "StartError")
        assert status.message and "/nonexistent/podium-no-such-command" in status.message

    run(scenario())


def test_backend_logs_follow_streams_lines_until_exit(harness: Harness) -> None:
    code = (
        "import time\n"
        "for word in ('one', 'two', 'three'):\n"
        "    print(word, flush=True)\n"
        "    time.sleep(0.4)\n"
    )

    async def scenario() -> None:
        handle = await harness.launch(harness.spec(python(code)))
        received = []
        async for line in harness.backend.logs(handle, follow=True):
            received.append((line.data, time.monotonic()))
        assert [data for data, _ in received] == ["one", "two", "three"]
        # Each line arrived while the job was still producing the next ones.
        assert received[2][1] - received[0][1] > 0.5
        assert not (await harness.backend.status(handle)).state.active

    run(scenario())


def test_backend_stop_ends_job_and_is_idempotent(harness: Harness) -> None:
    async def scenario() -> None:
        handle = await harness.launch(harness.spec(SLEEP))
        started = time.monotonic()
        await harness.backend.stop(handle, grace_seconds=5)
        assert time.monotonic() - started < 3  # it obeyed SIGTERM
        status = await harness.backend.status(handle)
        assert (status.state, status.reason) == (JobState.STOPPED, "Stopped")
        await harness.backend.stop(handle, grace_seconds=5)
        assert await harness.backend.status(handle) == status

    run(scenario())


def test_backend_stop_leaves_an_ended_job_as_it_was(harness: Harness) -> None:
    async def scenario() -> None:
        handle = await harness.launch(harness.spec(python("print('done')")))
        status = await wait_status(harness.backend, handle)
        await harness.backend.stop(handle, grace_seconds=1)
        assert await harness.backend.status(handle) == status
        assert status.state is JobState.SUCCEEDED

    run(scenario())


def test_backend_unknown_handle_is_not_found_and_stop_is_a_no_op(harness: Harness) -> None:
    async def scenario() -> None:
        backend = harness.backend
        handle = JobHandle(backend=backend.name, key="never-launched", data={})
        status = await backend.status(handle)
        assert (status.state, status.reason, status.exit_code) == (JobState.UNKNOWN, "NotFound", None)
        assert await backend.address(handle) is None
        assert await read_logs(backend, handle) == []
        assert await read_logs(backend, handle, follow=True) == []
        await backend.stop(handle, grace_seconds=1)

    run(scenario())


def test_backend_handle_of_another_backend_is_refused(harness: Harness) -> None:
    async def scenario() -> None:
        handle = JobHandle(backend="elsewhere", key="job-1", data={})
        with pytest.raises(BackendError) as caught:
            await harness.backend.status(handle)
        assert caught.value.reason == "WrongBackend"

    run(scenario())


def test_backend_stop_kills_a_child_ignoring_sigterm_after_grace(harness: Harness) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )

    async def scenario() -> None:
        handle = await harness.launch(harness.spec(python(code)))
        await wait_for_line(harness.backend, handle, "ready")
        started = time.monotonic()
        await harness.backend.stop(handle, grace_seconds=0.5)
        assert 0.5 <= time.monotonic() - started < 5
        status = await harness.backend.status(handle)
        assert (status.state, status.reason) == (JobState.STOPPED, "Stopped")

    run(scenario())


def test_backend_stop_kills_grandchildren(harness: Harness) -> None:
    # The shell and its background child both ignore SIGTERM: only SIGKILL to the whole
    # process group (or cgroup, or pod) ends the grandchild.
    script = "trap '' TERM; sleep 300 & echo $!; wait"

    async def scenario() -> None:
        handle = await harness.launch(harness.spec(["sh", "-c", script]))
        grandchild = int((await wait_for_line(harness.backend, handle, "")).data)
        assert not pid_gone(grandchild)
        await harness.backend.stop(handle, grace_seconds=0.2)
        deadline = time.monotonic() + 5
        while not pid_gone(grandchild) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert pid_gone(grandchild)

    run(scenario())


def test_backend_handle_from_json_works_in_a_new_backend(harness: Harness) -> None:
    async def scenario() -> None:
        handle = await harness.launch(harness.spec(SLEEP))
        await running(harness.backend, handle)
        stored = handle.to_json()
        await harness.backend.close()  # the server goes away; the job does not

        restarted = harness.make()
        rebuilt = JobHandle.from_json(stored)
        assert rebuilt == handle
        assert (await restarted.status(rebuilt)).state is JobState.RUNNING
        await restarted.stop(rebuilt, grace_seconds=5)
        assert (await restarted.status(rebuilt)).state is JobState.STOPPED
        assert (await harness.make().status(handle)).state is JobState.STOPPED

    run(scenario())


def test_backend_new_backend_sees_how_a_job_ended_after_restart(harness: Harness) -> None:
    async def scenario() -> None:
        handle = await harness.launch(harness.spec(
            python("import time; time.sleep(0.5); print('late', flush=True); raise SystemExit(4)")
        ))
        stored = handle.to_json()
        await harness.backend.close()

        restarted = harness.make()
        rebuilt = JobHandle.from_json(stored)
        lines = [line.data async for line in restarted.logs(rebuilt, follow=True)]
        assert lines == ["late"]
        status = await wait_status(restarted, rebuilt)
        assert (status.state, status.exit_code) == (JobState.FAILED, 4)

    run(scenario())


def test_backend_list_jobs_finds_running_jobs_from_a_new_backend(harness: Harness) -> None:
    async def scenario() -> None:
        first = await harness.launch(harness.spec(SLEEP))
        second = await harness.launch(harness.spec(SLEEP))
        done = await harness.launch(harness.spec(python("pass")))
        await wait_status(harness.backend, done)
        await running(harness.backend, first)
        await running(harness.backend, second)

        restarted = harness.make()
        found = await restarted.list_jobs()
        assert sorted(handle.key for handle in found) == sorted([first.key, second.key])
        for handle in found:
            assert (await restarted.status(handle)).state is JobState.RUNNING
        await restarted.stop(next(h for h in found if h.key == first.key), grace_seconds=5)
        assert [handle.key for handle in await restarted.list_jobs()] == [second.key]

    run(scenario())


def test_backend_launch_of_an_existing_key_returns_that_job(harness: Harness) -> None:
    async def scenario() -> None:
        handle = await harness.launch(harness.spec(SLEEP, key="only-once"))
        await running(harness.backend, handle)
        again = await harness.launch(harness.spec(python("pass"), key="only-once"))
        assert again.key == handle.key
        assert (await harness.backend.status(again)).state is JobState.RUNNING
        assert [h.key for h in await harness.backend.list_jobs()] == ["only-once"]

    run(scenario())


def test_backend_run_job_address_answers_http(harness: Harness) -> None:
    # $POD_IP is where a Kubernetes pod must listen; a local job listens on loopback.
    server = f'exec {PY} -m http.server "$PORT" --bind "${{POD_IP:-127.0.0.1}}"'

    def get(url: str) -> int:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)

    async def scenario() -> None:
        handle = await harness.launch(harness.spec(["sh", "-c", server], kind="run"))
        deadline = time.monotonic() + 10
        while (address := await harness.backend.address(handle)) is None:  # a pod may be pending
            assert time.monotonic() < deadline, "the run job never got an address"
            await asyncio.sleep(0.05)
        host, port = address
        deadline = time.monotonic() + 10
        while True:  # an address is not readiness: wait for the server to listen
            try:
                assert await asyncio.to_thread(get, f"http://{host}:{port}/") == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "the run job never answered"
                await asyncio.sleep(0.05)
        await harness.backend.stop(handle, grace_seconds=5)
        assert await harness.backend.address(handle) is None

    run(scenario())


def test_handle_round_trips_through_json() -> None:
    handle = JobHandle(backend="local", key="job-1", data={"pid": 12, "limits": {"dirs": []}})
    assert JobHandle.from_json(handle.to_json()) == handle
    with pytest.raises(ValueError):
        JobHandle.from_json("[1, 2]")


@pytest.mark.parametrize("key", ["", "../etc", "-job", "job-", "a" * 64, "job/1", "job 1"])
def test_job_spec_rejects_keys_unusable_as_names(key: str) -> None:
    with pytest.raises(ValueError, match="job key"):
        JobSpec(key, "build", "guid", None, ["true"], {}, "/", None)


def test_job_spec_rejects_empty_command_and_bad_port() -> None:
    with pytest.raises(ValueError, match="command"):
        JobSpec("job-1", "build", "guid", None, [], {}, "/", None)
    with pytest.raises(ValueError, match="port"):
        JobSpec("job-1", "run", "guid", None, ["true"], {}, "/", 70000)
    with pytest.raises(ValueError, match="memory_limit"):
        Resources(memory_limit=-1)


def test_job_state_active_only_before_the_end() -> None:
    assert {state for state in JobState if state.active} == {JobState.PENDING, JobState.RUNNING}
