"""Sandboxed local jobs (bubblewrap): what a hostile job can no longer see or touch,
and that stop, exit codes, signals, OOM kills, logs and loopback networking still work
through the sandbox. Real processes throughout; a host without a working sandbox skips
these tests, except in CI (``CI`` set), where it fails them."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.test_runtime_contract import pid_gone, read_logs, run, wait_for_line, wait_status
from tests.test_runtime_local import (  # noqa: F401 (a fixture: leaves the host's cgroups as they were)
    ALLOCATE_512_MIB,
    MiB,
    _remove_new_cgroup_parents,
    require_cgroup,
)

from podium.runtime import BackendError, JobSpec, JobState, LocalBackend, Resources
from podium.runtime.base import Sandbox
from podium.runtime.sandbox import (
    bwrap_argv,
    prepare_writable,
    probe_sandbox,
    setup_script,
)

UID = GID = 70001
# The host's interpreter, run directly (not through a venv) from its installation,
# which the sandbox binds read-only.
PY = os.path.realpath(sys.executable)
PY_HOME = os.path.realpath(sys.base_prefix)
GUID = "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def require_sandbox() -> None:
    support = probe_sandbox(UID, GID)
    if not support.available:
        if os.environ.get("CI"):
            pytest.fail(f"sandboxed jobs are required in CI and cannot run: {support.reason}")
        pytest.skip(f"sandboxed jobs cannot run here: {support.reason}")


@dataclass
class Box:
    """A sandbox as the policy side would make one: a bundle the job's uid owns (so
    only the read-only mount stops writes) and a writable home."""

    bundle: Path
    home: Path
    sandbox: Sandbox

    def spec(self, command: list[str], key: str = "job-1", **kw: object) -> JobSpec:
        fields: dict[str, object] = {
            "kind": "build", "env": {}, "workdir": str(self.bundle), "port": None,
            "sandbox": self.sandbox, **kw,
        }
        return JobSpec(
            key=key, content_guid=GUID, image=None, command=command,
            **fields,  # type: ignore[arg-type]
        )


@pytest.fixture
def box(tmp_path: Path) -> Box:
    require_sandbox()
    bundle = tmp_path / "apps" / "content-1" / "bundle-1"
    bundle.mkdir(parents=True)
    os.chown(bundle, UID, GID)
    (tmp_path / "home").mkdir()
    home = prepare_writable(tmp_path / "home" / "content-1", UID, GID)
    sandbox = Sandbox(UID, GID, read_only=(str(bundle), PY_HOME), writable=(str(home),))
    return Box(bundle, home, sandbox)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend(tmp_path / "jobs")
    yield backend
    run(_stop_all(backend))


async def _stop_all(backend: LocalBackend) -> None:
    for handle in await backend.list_jobs():
        await backend.stop(handle, grace_seconds=0)


HOSTILE = r'''
import errno, os, sys

secret_pid, data_dir, jobs_dir, bundle, home = sys.argv[1:]


def attempt(name, action):
    try:
        print(f"{name}: {action()}")
    except OSError as error:
        print(f"{name}: {errno.errorcode[error.errno]}")


def status(field):
    with open("/proc/self/status") as lines:
        return next(line.split()[1] for line in lines if line.startswith(field + ":"))


def write(path):
    with open(path, "w") as file:
        file.write("mine")
    with open(path) as file:
        return file.read()


print("ids:", os.getuid(), os.getgid(), os.getgroups())
print("capabilities:", status("CapEff"), status("CapBnd"), "no_new_privs:", status("NoNewPrivs"))
print("pids:", sorted(int(name) for name in os.listdir("/proc") if name.isdigit()))
attempt("environ of the other process", lambda: open(f"/proc/{secret_pid}/environ", "rb").read())
for pid in (name for name in os.listdir("/proc") if name.isdigit()):
    try:  # everything readable goes to the log, where the test looks for the secret
        print("readable environ:", open(f"/proc/{pid}/environ", "rb").read())
    except OSError:
        pass
attempt("list data dir", lambda: os.listdir(data_dir))
attempt("read secret.key", lambda: open(os.path.join(data_dir, "secret.key")).read())
attempt("read db", lambda: open(os.path.join(data_dir, "db", "podium.sqlite"), "rb").read())
attempt("list jobs dir", lambda: os.listdir(jobs_dir))
attempt("write bundle", lambda: write(os.path.join(bundle, "planted.py")))
attempt("write home", lambda: write(os.path.join(home, "out.txt")))
attempt("write /tmp", lambda: write("/tmp/scratch"))
attempt("list bundle", lambda: sorted(os.listdir(".")))
'''


def test_sandbox_hostile_job_sees_only_its_own_files_and_processes(
    box: Box, backend: LocalBackend, tmp_path: Path
) -> None:
    secret = "s3cr3t-of-another-content-8f2e"
    key = "server-secret-key-41c9"
    data_dir = tmp_path / "data"
    (data_dir / "db").mkdir(parents=True, mode=0o700)
    (data_dir / "secret.key").write_text(key)
    (data_dir / "secret.key").chmod(0o600)
    (data_dir / "db" / "podium.sqlite").write_bytes(b"SQLite format 3\x00" + key.encode())
    (box.bundle / "hostile.py").write_text(HOSTILE)
    bystander = subprocess.Popen(
        ["sleep", "30"], env={"CONTENT_SECRET": secret}, start_new_session=True
    )
    try:
        # Outside a sandbox the secret is there for the taking. Popen returns when
        # exec closes its pipe, a moment before the kernel sets the new environ's
        # bounds; until then the file reads empty.
        environ = Path(f"/proc/{bystander.pid}/environ")
        deadline = time.monotonic() + 5
        while not environ.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert secret.encode() in environ.read_bytes()

        async def scenario() -> list[str]:
            handle = await backend.launch(box.spec([
                PY, "hostile.py", str(bystander.pid), str(data_dir), str(backend.root),
                str(box.bundle), str(box.home),
            ]))
            status = await wait_status(backend, handle)
            assert (status.state, status.exit_code) == (JobState.SUCCEEDED, 0), status
            return [line.data for line in await read_logs(backend, handle)]

        lines = run(scenario())
    finally:
        bystander.kill()
        bystander.wait()
    assert [line for line in lines if not line.startswith("readable environ:")] == [
        f"ids: {UID} {GID} []",
        "capabilities: 0000000000000000 0000000000000000 no_new_privs: 1",
        "pids: [1, 2]",  # bwrap's pid 1, and the job
        "environ of the other process: ENOENT",
        "list data dir: ENOENT",
        "read secret.key: ENOENT",
        "read db: ENOENT",
        "list jobs dir: ENOENT",
        "write bundle: EROFS",
        "write home: mine",
        "write /tmp: mine",
        "list bundle: ['hostile.py']",
    ]
    log = (backend.root / "job-1" / "output.log").read_text()
    assert secret not in log and key not in log
    written = box.home / "out.txt"
    assert (written.stat().st_uid, written.stat().st_gid) == (UID, GID)
    assert not (box.bundle / "planted.py").exists()
    job_dir = backend.root / "job-1"
    assert (job_dir.stat().st_uid, stat.S_IMODE(job_dir.stat().st_mode)) == (os.getuid(), 0o700)


def test_sandbox_job_environment_is_exactly_the_spec_plus_path_and_port(
    box: Box, backend: LocalBackend
) -> None:
    async def scenario() -> None:
        env = {"GREETING": "it's a \"quoted\" $HOME\nsecond line", "EMPTY": ""}
        handle = await backend.launch(box.spec(["env", "-0"], kind="run", env=env))
        await wait_status(backend, handle)
        output = "\n".join(line.data for line in await read_logs(backend, handle))
        assert dict(item.split("=", 1) for item in output.split("\0") if item) == {
            **env, "PATH": os.environ["PATH"], "PORT": str(handle.data["port"])
        }
        assert handle.data["sandbox"] == {"uid": UID, "gid": GID}

    run(scenario())


@pytest.mark.parametrize(
    ("code", "exit_code", "reason", "message"),
    [
        ("raise SystemExit(3)", 3, "Exited", "exited with code 3"),
        ("import os; os.abort()", 134, "Signalled", "killed by signal SIGABRT"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 137, "Signalled",
         "killed by signal SIGKILL"),
    ],
)
def test_sandbox_job_reports_exit_codes_and_signals(
    box: Box, backend: LocalBackend, code: str, exit_code: int, reason: str, message: str
) -> None:
    async def scenario() -> None:
        handle = await backend.launch(box.spec([PY, "-c", code]))
        status = await wait_status(backend, handle)
        assert (status.state, status.exit_code, status.reason, status.message) == (
            JobState.FAILED, exit_code, reason, message
        )

    run(scenario())


def test_sandbox_command_that_cannot_start_is_a_start_error(
    box: Box, backend: LocalBackend
) -> None:
    async def scenario() -> None:
        handle = await backend.launch(box.spec(["/nonexistent/podium-no-such-command"]))
        status = await wait_status(backend, handle)
        assert (status.state, status.reason) == (JobState.FAILED, "StartError")
        assert status.message == "could not start: /nonexistent/podium-no-such-command: not found"

    run(scenario())


def test_sandbox_stop_reaches_the_command_with_sigterm(box: Box, backend: LocalBackend) -> None:
    # SIGTERM goes to the job's process group, not to bwrap's monitor: a monitor dying of
    # it would take the job down with SIGKILL, before its handler could run.
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        "    print('cleaning up', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )

    async def scenario() -> None:
        handle = await backend.launch(box.spec([PY, "-c", code]))
        await wait_for_line(backend, handle, "ready")
        started = time.monotonic()
        await backend.stop(handle, grace_seconds=5)
        assert time.monotonic() - started < 3
        status = await backend.status(handle)
        assert (status.state, status.reason, status.message) == (
            JobState.STOPPED, "Stopped", "stopped"
        )
        assert "cleaning up" in [line.data for line in await read_logs(backend, handle)]

    run(scenario())


def test_sandbox_stop_kills_a_job_ignoring_sigterm_after_grace(
    box: Box, backend: LocalBackend
) -> None:
    code = (
        "import signal, subprocess, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen(['sleep', '300'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )

    async def scenario() -> None:
        handle = await backend.launch(box.spec([PY, "-c", code]))
        await wait_for_line(backend, handle, "ready")
        started = time.monotonic()
        await backend.stop(handle, grace_seconds=0.5)
        assert 0.5 <= time.monotonic() - started < 5
        status = await backend.status(handle)
        assert (status.state, status.exit_code, status.message) == (
            JobState.STOPPED, 128 + signal.SIGKILL,
            "stopped (killed after the grace period of 0.5 s)",
        )
        for pid in (handle.data["pid"], handle.data["pgid"]):
            assert pid_gone(pid)  # bwrap's monitor and pid 1: the namespace is gone

    run(scenario())


def test_sandbox_sigterm_to_the_supervisor_is_passed_to_the_job(
    box: Box, backend: LocalBackend
) -> None:
    async def scenario() -> None:
        handle = await backend.launch(box.spec([PY, "-c", "import time; time.sleep(60)"]))
        os.kill(handle.data["supervisor_pid"], signal.SIGTERM)
        status = await wait_status(backend, handle)
        assert (status.state, status.reason, status.exit_code) == (
            JobState.FAILED, "Signalled", 128 + signal.SIGTERM
        )

    run(scenario())


def test_sandbox_job_of_a_killed_supervisor_ends_too(box: Box, backend: LocalBackend) -> None:
    async def scenario() -> None:
        handle = await backend.launch(box.spec([PY, "-c", "import time; time.sleep(60)"]))
        os.kill(handle.data["supervisor_pid"], signal.SIGKILL)
        status = await wait_status(backend, handle)
        assert (status.state, status.reason) == (JobState.FAILED, "Lost")
        deadline = time.monotonic() + 5
        while not pid_gone(handle.data["pgid"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert pid_gone(handle.data["pgid"])

    run(scenario())


def test_sandbox_job_over_memory_limit_is_reported_oom_killed(
    box: Box, backend: LocalBackend
) -> None:
    async def scenario() -> None:
        command = [PY, *ALLOCATE_512_MIB[1:]]
        handle = await backend.launch(box.spec(command, resources=Resources(memory_limit=64 * MiB)))
        require_cgroup(handle, "memory")
        status = await wait_status(backend, handle)
        message = "terminated: exceeded memory limit of 64.0 MiB (67108864 bytes)"
        assert (status.state, status.reason, status.message, status.exit_code) == (
            JobState.FAILED, "OOMKilled", message, 128 + signal.SIGKILL
        )
        lines = [line.data for line in await read_logs(backend, handle)]
        assert f"[podium] {message}" in lines
        assert "survived" not in lines
        assert not Path(handle.data["limits"]["dirs"][0]).exists()

    run(scenario())


def test_sandbox_run_job_on_loopback_is_reachable_from_the_host(
    box: Box, backend: LocalBackend
) -> None:
    (box.bundle / "index.html").write_text("hello from the sandbox")
    server = f'exec {PY} -m http.server "$PORT" --bind 127.0.0.1'

    def get(url: str) -> str:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())

    async def scenario() -> None:
        handle = await backend.launch(box.spec(["sh", "-c", server], kind="run"))
        address = await backend.address(handle)
        assert address is not None
        deadline = time.monotonic() + 10
        while True:
            try:
                body = await asyncio.to_thread(get, f"http://{address[0]}:{address[1]}/")
                break
            except OSError:
                assert time.monotonic() < deadline, "the sandboxed server never answered"
                await asyncio.sleep(0.05)
        assert body == "hello from the sandbox"
        await backend.stop(handle, grace_seconds=5)
        assert (await backend.status(handle)).state is JobState.STOPPED

    run(scenario())


def test_sandbox_path_that_does_not_exist_fails_launch_and_leaves_nothing(
    box: Box, backend: LocalBackend, tmp_path: Path
) -> None:
    missing = str(tmp_path / "envs" / "not-built")
    sandbox = Sandbox(UID, GID, read_only=(*box.sandbox.read_only, missing))

    async def scenario() -> None:
        with pytest.raises(BackendError) as caught:
            await backend.launch(box.spec([PY, "-c", "pass"], sandbox=sandbox))
        assert (caught.value.reason, caught.value.message) == (
            "SandboxInvalid", f"The sandbox's path {missing} does not exist."
        )
        assert not (backend.root / "job-1").exists()

    run(scenario())


def test_sandbox_unavailable_fails_launch_instead_of_running_unsandboxed(
    box: Box, tmp_path: Path
) -> None:
    backend = LocalBackend(tmp_path / "jobs", bwrap="/nonexistent/bwrap")

    async def scenario() -> None:
        with pytest.raises(BackendError) as caught:
            await backend.launch(box.spec([PY, "-c", "pass"]))
        assert caught.value.reason == "SandboxUnavailable"
        assert "install Debian's bubblewrap package" in caught.value.message
        assert await backend.list_jobs() == []
        assert not (tmp_path / "jobs" / "job-1").exists()

    run(scenario())


def test_sandbox_probe_names_a_missing_bwrap() -> None:
    support = probe_sandbox(bwrap="/nonexistent/bwrap")
    assert not support.available
    assert support.reason == (
        "bubblewrap (/nonexistent/bwrap) is not installed: install Debian's bubblewrap package"
    )


def test_sandbox_bwrap_argv_as_root_switches_users_with_setpriv() -> None:
    sandbox = Sandbox(
        70001, 70002,
        read_only=("/srv/podium/apps/c1/b7", "/opt/python/3.11.7", "/srv/podium/envs/f00"),
        writable=("/srv/podium/apps/c1/b7/_site", "/tmp/podium/c1"),
    )
    argv = bwrap_argv(
        sandbox, ["python", "app.py"], "/srv/podium/apps/c1/b7",
        privileged=True, system_dirs=("/usr", "/lib", "/etc"), bwrap="/usr/bin/bwrap",
    )
    assert argv == [
        "/usr/bin/bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
        # Sorted by path, so that a mount point's parents exist before it is made.
        "--dev", "/dev",
        "--ro-bind-try", "/etc", "/etc",
        "--ro-bind-try", "/lib", "/lib",
        "--perms", "0755", "--dir", "/opt",
        "--perms", "0755", "--dir", "/opt/python",
        "--ro-bind", "/opt/python/3.11.7", "/opt/python/3.11.7",
        "--proc", "/proc",
        "--perms", "0755", "--dir", "/srv",
        "--perms", "0755", "--dir", "/srv/podium",
        "--perms", "0755", "--dir", "/srv/podium/apps",
        "--perms", "0755", "--dir", "/srv/podium/apps/c1",
        "--ro-bind", "/srv/podium/apps/c1/b7", "/srv/podium/apps/c1/b7",
        "--bind", "/srv/podium/apps/c1/b7/_site", "/srv/podium/apps/c1/b7/_site",
        "--perms", "0755", "--dir", "/srv/podium/envs",
        "--ro-bind", "/srv/podium/envs/f00", "/srv/podium/envs/f00",
        "--perms", "1777", "--tmpfs", "/tmp",
        "--perms", "0755", "--dir", "/tmp/podium",
        "--bind", "/tmp/podium/c1", "/tmp/podium/c1",
        "--ro-bind-try", "/usr", "/usr",
        "--chdir", "/srv/podium/apps/c1/b7", "--",
        "/usr/bin/setpriv", "--reuid=70001", "--regid=70002", "--clear-groups",
        "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
        "/bin/sh", "-s", "--", "python", "app.py",
    ]


def test_sandbox_bwrap_argv_as_a_user_uses_a_user_namespace() -> None:
    sandbox = Sandbox(1000, 1000, read_only=("/home/podium/data/apps/c1",))
    argv = bwrap_argv(
        sandbox, ["Rscript", "app.R"], "/home/podium/data/apps/c1",
        privileged=False, system_dirs=("/usr", "/home/podium/R"),
    )
    assert argv == [
        "bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--unshare-user",
        "--dev", "/dev",
        "--perms", "0755", "--dir", "/home",
        "--perms", "0755", "--dir", "/home/podium",
        "--ro-bind-try", "/home/podium/R", "/home/podium/R",
        "--perms", "0755", "--dir", "/home/podium/data",
        "--perms", "0755", "--dir", "/home/podium/data/apps",
        "--ro-bind", "/home/podium/data/apps/c1", "/home/podium/data/apps/c1",
        "--proc", "/proc",
        "--perms", "1777", "--tmpfs", "/tmp",
        "--ro-bind-try", "/usr", "/usr",
        "--chdir", "/home/podium/data/apps/c1", "--",
        "/bin/sh", "-s", "--", "Rscript", "app.R",
    ]


def test_sandbox_bwrap_argv_without_root_runs_as_that_user(tmp_path: Path) -> None:
    """The argv of a server that is not root works for an unprivileged user, here run
    as uid 70001 by the test (bubblewrap then needs unprivileged user namespaces)."""
    require_sandbox()
    argv = bwrap_argv(
        Sandbox(UID, GID), ["sh", "-c", 'echo "$GREETING"; id -u; echo /proc/[0-9]*'],
        "/", privileged=False,
    )
    done = subprocess.run(
        argv, input=setup_script({"GREETING": "hi", "PATH": "/usr/bin:/bin"}).encode(),
        env={}, capture_output=True, timeout=10, check=False, user=UID, group=GID,
        extra_groups=[], cwd="/",
    )
    output = done.stdout.decode().split()
    assert (done.returncode, output) == (0, ["hi", str(UID), "/proc/1", "/proc/2"]), done


def test_sandbox_setup_script_quotes_values_and_refuses_unsettable_names() -> None:
    assert setup_script({"A": "it's", "B": ""}) == (
        "unset PWD\nexport A='it'\\''s'\nexport B=''\nexec \"$@\" </dev/null\n"
    )
    with pytest.raises(ValueError, match="cannot be set in a sandbox"):
        setup_script({"NOT-A-NAME": "x"})


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"uid": 0}, "uid must be a positive integer"),
        ({"gid": -1}, "gid must be a positive integer"),
        ({"read_only": ("relative/path",)}, "absolute and normalised"),
        ({"read_only": ("/srv/../etc",)}, "absolute and normalised"),
        ({"writable": ("/",)}, "absolute and normalised"),
        ({"read_only": ("/proc/1",)}, "inside /proc"),
        ({"read_only": ("/srv/a",), "writable": ("/srv/a",)}, "listed twice"),
        ({"read_only": ("/srv/out/app",), "writable": ("/srv/out",)}, "inside the writable path"),
    ],
)
def test_sandbox_rejects_unsafe_specs(kw: dict[str, object], problem: str) -> None:
    fields: dict[str, object] = {"uid": UID, "gid": GID, **kw}
    with pytest.raises(ValueError, match=problem):
        Sandbox(**fields)  # type: ignore[arg-type]


def test_sandbox_job_spec_workdir_must_be_a_bound_path() -> None:
    sandbox = Sandbox(UID, GID, read_only=("/srv/apps/c1",), writable=("/srv/out/c1",))
    for workdir in ("/srv/apps/c1", "/srv/apps/c1/sub", "/srv/out/c1"):
        JobSpec("job-1", "run", GUID, None, ["true"], {}, workdir, None, sandbox=sandbox)
    for workdir in ("/srv/apps", "/srv/apps/c10", "/tmp"):
        with pytest.raises(ValueError, match="workdir"):
            JobSpec("job-1", "run", GUID, None, ["true"], {}, workdir, None, sandbox=sandbox)


def test_sandbox_prepare_writable_makes_a_private_directory_for_the_uid(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory to another uid")
    made = prepare_writable(tmp_path / "scratch", UID, GID)
    info = made.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (UID, GID, 0o700)
    (tmp_path / "link").symlink_to(tmp_path / "scratch")
    with pytest.raises(ValueError, match="not a directory"):
        prepare_writable(tmp_path / "link", UID, GID)
