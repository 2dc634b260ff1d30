"""What only the local backend does: job directories, cgroup limits, OOM reports,
rlimit fallback, pid-reuse safety and lost supervisors."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.test_runtime_contract import (
    SLEEP,
    python,
    read_logs,
    run,
    wait_for_line,
    wait_status,
)

from podium.runtime import (
    BackendError,
    JobHandle,
    JobSpec,
    JobState,
    LocalBackend,
    Resources,
    cgroups,
)

MiB = 1024 * 1024
ALLOCATE_512_MIB = python("data = b'x' * (512 * 1024 * 1024)\nprint('survived', flush=True)")


@pytest.fixture(scope="module", autouse=True)
def _remove_new_cgroup_parents() -> Iterator[None]:
    """Jobs share a ``podium`` cgroup below the server's own; a server keeps it, but these
    tests remove the ones they created, so the host is left as it was."""
    parents = [cgroup_of(os.getpid(), c) / "podium" for c in ("memory", "cpu", "")]
    existing = {parent for parent in parents if parent.exists()}
    yield
    for parent in parents:
        if parent not in existing:
            try:
                parent.rmdir()
            except OSError:
                pass


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend(tmp_path / "jobs")
    yield backend
    run(_stop_all(backend))


async def _stop_all(backend: LocalBackend) -> None:
    for handle in await backend.list_jobs():
        await backend.stop(handle, grace_seconds=0)


def spec(
    command: list[str], key: str = "job-1", resources: Resources | None = None, **kw: object
) -> JobSpec:
    fields: dict[str, object] = {
        "kind": "build", "env": {}, "workdir": "/tmp", "port": None, **kw
    }
    return JobSpec(
        key=key,
        content_guid="7c1f4c3a-2b1e-4d5f-8a9b-0c1d2e3f4a5b",
        image=None,
        command=command,
        resources=resources or Resources(),
        **fields,  # type: ignore[arg-type]
    )


def cgroup_of(pid: int, controller: str) -> Path:
    """The cgroup directory ``pid`` is in, for a v1 controller or ``""`` (v2); a path
    that need not exist on a host without that hierarchy."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path(cgroups.CGROUP_ROOT, controller, path.lstrip("/"))
    return Path(cgroups.CGROUP_ROOT, controller, "no-such-cgroup")


def require_cgroup(handle: JobHandle, resource: str) -> str:
    """The cgroup version enforcing ``resource`` for the job; skip on hosts without one."""
    mode = str(handle.data["limits"][f"{resource}_mode"])
    if mode not in ("cgroup1", "cgroup2"):
        pytest.skip(f"this host enforces {resource} limits with {mode}, not cgroups")
    return mode


def test_local_job_environment_is_exactly_the_spec_plus_path_and_port(
    backend: LocalBackend,
) -> None:
    async def scenario() -> None:
        handle = await backend.launch(spec(["env"], kind="run", env={"GREETING": "hi"}))
        await wait_status(backend, handle)
        lines = [line.data for line in await read_logs(backend, handle)]
        port = handle.data["port"]
        assert sorted(lines) == sorted(
            ["GREETING=hi", f"PATH={os.environ['PATH']}", f"PORT={port}"]
        )

    run(scenario())


def test_local_job_log_file_has_one_timestamped_line_per_output_line(
    backend: LocalBackend,
) -> None:
    async def scenario() -> None:
        handle = await backend.launch(spec(python(
            "import sys; print('a b  c'); print('\\u00e9t\\u00e9'); sys.stdout.flush();"
            "sys.stdout.buffer.write(b'bad \\xff byte'); sys.stderr.write('no newline')"
        )))
        await wait_status(backend, handle)
        text = Path(handle.data["log_path"]).read_text()
        pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (stdout|stderr) .*"
        assert all(re.fullmatch(pattern, line) for line in text.splitlines()), text
        lines = {(line.stream, line.data) for line in await read_logs(backend, handle)}
        assert lines == {
            ("stdout", "a b  c"), ("stdout", "été"), ("stdout", "bad \ufffd byte"),
            ("stderr", "no newline"),
        }

    run(scenario())


def test_local_cpu_limit_sets_cfs_quota_and_cgroup_goes_away(backend: LocalBackend) -> None:
    async def scenario() -> None:
        handle = await backend.launch(spec(SLEEP, resources=Resources(cpu_limit=0.5)))
        if require_cgroup(handle, "cpu") == "cgroup1":
            cgroup = cgroup_of(handle.data["pid"], "cpu")
            assert (cgroup / "cpu.cfs_quota_us").read_text().strip() == "50000"
            assert (cgroup / "cpu.cfs_period_us").read_text().strip() == "100000"
        else:
            cgroup = cgroup_of(handle.data["pid"], "")
            assert (cgroup / "cpu.max").read_text().strip() == "50000 100000"
        assert cgroup.name == handle.key
        await backend.stop(handle, grace_seconds=5)
        assert not cgroup.exists()

    run(scenario())


def test_local_job_over_memory_limit_is_reported_oom_killed(backend: LocalBackend) -> None:
    async def scenario() -> None:
        limits = Resources(memory_limit=64 * MiB)
        handle = await backend.launch(spec(ALLOCATE_512_MIB, resources=limits))
        version = require_cgroup(handle, "memory")
        cgroup = Path(handle.data["limits"]["dirs"][0])
        limit_file = "memory.limit_in_bytes" if version == "cgroup1" else "memory.max"
        assert (cgroup / limit_file).read_text().strip() == str(64 * MiB)
        status = await wait_status(backend, handle)
        message = "terminated: exceeded memory limit of 64.0 MiB (67108864 bytes)"
        assert (status.state, status.reason, status.message) == (
            JobState.FAILED, "OOMKilled", message
        )
        assert status.exit_code == 128 + signal.SIGKILL
        lines = [line.data for line in await read_logs(backend, handle)]
        assert f"[podium] {message}" in lines
        assert "survived" not in lines
        assert not cgroup.exists()

    run(scenario())


def test_local_without_cgroups_falls_back_to_rlimit_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = LocalBackend(tmp_path / "jobs", cgroup_root=str(tmp_path / "no-cgroups"))

    async def scenario() -> None:
        limits = Resources(memory_limit=256 * MiB, cpu_limit=0.5)
        with caplog.at_level(logging.WARNING, logger="podium.runtime.local"):
            handle = await backend.launch(spec(ALLOCATE_512_MIB, resources=limits))
        warnings = [record.getMessage() for record in caplog.records]
        assert any(
            "job-1" in text and "enforced with RLIMIT_AS" in text and "cgroups unavailable" in text
            for text in warnings
        ), warnings
        assert any("cpu limit of 0.5 cores not enforced" in text for text in warnings)
        status = await wait_status(backend, handle)
        assert (status.state, status.reason) == (JobState.FAILED, "OOMKilled")
        assert status.message == "terminated: exceeded memory limit of 256.0 MiB (268435456 bytes)"
        assert any("MemoryError" in line.data for line in await read_logs(backend, handle))

    try:
        run(scenario())
    finally:
        run(_stop_all(backend))


def test_local_cgroup_v2_limits_are_written_below_the_server_cgroup(tmp_path: Path) -> None:
    # A fake unified hierarchy: the layout and values are what the kernel documents
    # (https://docs.kernel.org/admin-guide/cgroup-v2.html), the kernel is not involved.
    root = tmp_path / "cgroup"
    server = root / "podium.service"
    server.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (server / "cgroup.subtree_control").write_text("")
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("0::/podium.service\n")

    plan = cgroups.plan_limits("job-1", 64 * MiB, 1.5, root=str(root), self_cgroup=str(self_cgroup))

    job = server / "podium" / "job-1"
    assert (plan.memory_mode, plan.cpu_mode, plan.warnings) == ("cgroup2", "cgroup2", [])
    assert plan.dirs == [str(job)]
    assert plan.oom_counters == [str(job / "memory.events")]
    assert (server / "cgroup.subtree_control").read_text() == "+memory +cpu"
    assert (server / "podium" / "cgroup.subtree_control").read_text() == "+memory +cpu"
    assert (job / "memory.max").read_text() == str(64 * MiB)
    assert (job / "cpu.max").read_text() == "150000 100000"
    (job / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cgroups.oom_kills(plan) == 1


def test_local_cgroup_v2_without_memory_controller_falls_back(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu pids\n")
    plan = cgroups.plan_limits("job-1", 64 * MiB, None, root=str(tmp_path))
    assert (plan.memory_mode, plan.rlimit_as, plan.dirs) == ("rlimit", 64 * MiB, [])
    assert "does not offer the memory controller" in plan.warnings[0]


def test_local_reused_pid_is_never_signalled(backend: LocalBackend) -> None:
    # A handle whose pids now belong to an unrelated process (same pid, other start time).
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        data = {
            "supervisor_pid": bystander.pid, "supervisor_start": 1,
            "pid": bystander.pid, "pid_start": 1, "pgid": bystander.pid,
        }
        handle = JobHandle(backend="local", key="gone", data=data)

        async def scenario() -> None:
            assert (await backend.status(handle)).state is JobState.UNKNOWN
            await backend.stop(handle, grace_seconds=0)
            assert handle not in await backend.list_jobs()

        run(scenario())
        time.sleep(0.1)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_local_job_of_a_killed_supervisor_is_lost_and_ends_too(backend: LocalBackend) -> None:
    async def scenario() -> None:
        handle = await backend.launch(spec(SLEEP))
        os.kill(handle.data["supervisor_pid"], signal.SIGKILL)
        # The job's process has the supervisor's death as its own (PR_SET_PDEATHSIG).
        status = await wait_status(backend, handle)
        assert (status.state, status.reason) == (JobState.FAILED, "Lost")
        assert await backend.list_jobs() == []

    run(scenario())


def test_local_stop_message_says_when_sigkill_was_needed(backend: LocalBackend) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);" \
        "print('ready', flush=True); time.sleep(60)"

    async def scenario() -> None:
        handle = await backend.launch(spec(python(code)))
        await wait_for_line(backend, handle, "ready")
        await backend.stop(handle, grace_seconds=0.1)
        status = await backend.status(handle)
        assert status.message == "stopped (killed after the grace period of 0.1 s)"
        assert status.exit_code == 128 + signal.SIGKILL

    run(scenario())


def test_local_job_directory_keeps_record_exit_and_log(backend: LocalBackend) -> None:
    async def scenario() -> None:
        handle = await backend.launch(spec(python("print('x')")))
        await wait_status(backend, handle)
        job_dir = backend.root / handle.key
        assert sorted(p.name for p in job_dir.iterdir()) == [
            "exit.json", "job.json", "output.log", "supervisor.log"
        ]
        assert json.loads((job_dir / "job.json").read_text()) == dict(handle.data)
        assert job_dir.stat().st_mode & 0o077 == 0
        # The job's environment (secrets included) is never written to disk.
        assert "env" not in handle.data

    run(scenario())


def test_local_launch_is_fast_enough_for_cold_starts(backend: LocalBackend) -> None:
    async def scenario() -> float:
        started = time.monotonic()
        await backend.launch(spec(SLEEP))
        return time.monotonic() - started

    assert run(scenario()) < 1.0, "launch should cost tens of milliseconds"


def test_local_cgroup_of_another_live_job_is_never_shared(tmp_path: Path) -> None:
    first = cgroups.plan_limits("podium-test-shared", 64 * MiB, None)
    if first.memory_mode not in ("cgroup1", "cgroup2"):
        pytest.skip(f"this host enforces memory limits with {first.memory_mode}, not cgroups")
    holder = subprocess.Popen(["sleep", "30"])
    try:
        cgroups.join(first, holder.pid)
        second = cgroups.plan_limits("podium-test-shared", 32 * MiB, None)
        assert second.memory_mode == "rlimit"
        assert "cgroup in use by another job" in second.warnings[0]
    finally:
        holder.kill()
        holder.wait()
        cgroups.remove(first)
    assert not Path(first.dirs[0]).exists()


def test_local_sigterm_to_the_supervisor_is_passed_to_the_job(backend: LocalBackend) -> None:
    async def scenario() -> None:
        handle = await backend.launch(spec(SLEEP))
        os.kill(handle.data["supervisor_pid"], signal.SIGTERM)
        status = await wait_status(backend, handle)
        assert (status.state, status.reason, status.exit_code) == (
            JobState.FAILED, "Signalled", 128 + signal.SIGTERM
        )
        assert status.message == "killed by signal SIGTERM"

    run(scenario())


@pytest.mark.parametrize("python_path", ["/nonexistent/python3", "/bin/false"])
def test_local_launch_that_cannot_start_a_supervisor_raises_and_leaves_nothing(
    tmp_path: Path, python_path: str
) -> None:
    backend = LocalBackend(tmp_path / "jobs", python=python_path)

    async def scenario() -> None:
        with pytest.raises(BackendError) as caught:
            await backend.launch(spec(SLEEP, resources=Resources(cpu_limit=0.5)))
        assert caught.value.reason == "LaunchFailed"
        assert list((tmp_path / "jobs").iterdir()) == []
        assert await backend.list_jobs() == []

    run(scenario())


def test_local_backend_lists_only_its_own_nodes_jobs(tmp_path: Path) -> None:
    """Job directories may sit on a volume several nodes share: each node lists its own
    (and jobs recorded before nodes were), never another's."""
    root = tmp_path / "jobs"
    a, b = LocalBackend(root, node_id="node-a"), LocalBackend(root, node_id="node-b")
    legacy = LocalBackend(root)

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        for backend, key in ((a, "of-a"), (b, "of-b"), (legacy, "of-none")):
            await backend.launch(spec(SLEEP, key=key))
        try:
            return ([h.key for h in await a.list_jobs()], [h.key for h in await b.list_jobs()],
                    [h.key for h in await legacy.list_jobs()])
        finally:
            for backend in (a, b, legacy):
                await _stop_all(backend)

    listed_a, listed_b, listed_legacy = run(scenario())
    assert (listed_a, listed_b) == (["of-a", "of-none"], ["of-b", "of-none"])
    assert listed_legacy == ["of-none"]
