"""The supervisor of one local job, and the job directory format it shares with the backend.

The local backend never owns a job's process directly. It runs this file with
``python -I -S``, loaded by path as a module (standard library only, and its bytecode
cached, so it starts in a few milliseconds; run as a script it works the same), and
writes the job's payload (command, environment, limits) to its standard input, never
to disk. The supervisor forks and the launcher exits; the forked
supervisor starts a session of its own, so it outlives the server, and then:

1. starts the job's process in a new session (its process group is the job), in the
   job's cgroups or under its rlimit before it execs, with a parent-death signal so the
   job cannot outlive a killed supervisor; a sandboxed job (payload ``sandbox``) is
   bubblewrap's argv (:mod:`podium.runtime.sandbox`): its standard input is then the
   setup script, in a memfd, and its process group the one bwrap's pid 1 leads, which
   bwrap reports on a status pipe (``--json-status-fd``);
2. writes ``job.json`` (pids, process start times, paths: the handle's data) and
   reports the same JSON on standard output, which is what ``launch()`` waits for;
3. copies the job's stdout and stderr into ``output.log``, one timestamped line per
   output line (``<ISO-8601 UTC> <stream> <data>``);
4. when the job's process exits, kills what is left of its process group and cgroups
   (a job ends with its main process, as a container does), records an OOM kill, removes
   the cgroups and writes ``exit.json``. bwrap exits with 128 + N for a command killed
   by signal N, which is reported as Signalled; a sandbox that could not be set up, or
   a command that could not be executed inside it, as StartError.

The server only reads these files and signals the job's process group, so a restarted
server, or another backend instance, watches and stops jobs it did not launch.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections import deque

# Not typing.TYPE_CHECKING: importing typing (or datetime) would cost the supervisor's
# start, which is part of every cold start, a few milliseconds.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

if __package__:
    from . import cgroups
else:  # loaded by path or run as a script: load the sibling module without importing the package
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "_podium_cgroups", os.path.join(os.path.dirname(os.path.abspath(__file__)), "cgroups.py")
    )
    assert _spec is not None and _spec.loader is not None
    cgroups = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(cgroups)

RECORD = "job.json"  # written once the job's process exists
EXIT = "exit.json"  # written once it has ended and been cleaned up
LOG = "output.log"
STOP = "stop.json"  # written by the backend when stop() is called
SUPERVISOR_LOG = "supervisor.log"  # the supervisor's own errors

MAX_LINE_BYTES = 64 * 1024  # longer output without a newline is split into lines
DRAIN_SECONDS = 2.0  # how long to read output left in the pipes once the job has exited
# Last words of programs out of memory under RLIMIT_AS, where no OOM counter exists.
_MEMORY_ERRORS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc",
                  "cannot allocate vector", "out of memory")
SANDBOX_REPORT_SECONDS = 5.0  # how long bwrap may take to report its pid 1
# How the shell and setpriv of a sandbox say that they could not execute a command
# (exit code 126 or 127): "/bin/sh: 3: exec: /x: not found", "setpriv: failed to execute
# /bin/sh: No such file or directory".
_SANDBOX_EXEC_FAILED = re.compile(r"\S*sh: (?:line )?\d+: (?:exec: )?(.+)|setpriv: (failed to execute .+)")


def utc_now() -> str:
    now = time.time()
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.{int(now % 1 * 1_000_000):06d}Z"


def _process_group(pid: int) -> int | None:
    """The process group of ``pid``; ``None`` if it has ended."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in (b"Z", b"X") else int(fields[2])


def process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), to tell it from a reused pid;
    ``None`` if there is no such process or it is a zombie (it has ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After "pid (comm)": state is field 3 of proc(5), starttime field 22.
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write atomically: a reader sees the old file, or the whole new one."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as file:
        json.dump(data, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as file:
            data = json.load(file)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class LogWriter:
    """Turns chunks read from the job's pipes into timestamped log lines."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.partial = {"stdout": bytearray(), "stderr": bytearray()}
        self.stderr_tail: deque[str] = deque(maxlen=20)

    def feed(self, stream: str, chunk: bytes) -> None:
        buffer = self.partial[stream]
        buffer += chunk
        lines = []
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            lines.append(bytes(buffer[start:end]))
            start = end + 1
        while len(buffer) - start >= MAX_LINE_BYTES:
            lines.append(bytes(buffer[start : start + MAX_LINE_BYTES]))
            start += MAX_LINE_BYTES
        del buffer[:start]
        self.write(stream, lines)

    def flush(self, stream: str) -> None:
        if self.partial[stream]:
            self.write(stream, [bytes(self.partial[stream])])
            self.partial[stream].clear()

    def write(self, stream: str, lines: list[bytes]) -> None:
        if not lines:
            return
        prefix = f"{utc_now()} {stream} "
        texts = [raw.rstrip(b"\r").decode("utf-8", "replace") for raw in lines]
        if stream == "stderr":
            self.stderr_tail.extend(texts)
        # Whole lines per write on an O_APPEND descriptor: readers never see half a
        # line from us, only lines not yet written.
        data = "".join(f"{prefix}{text}\n" for text in texts).encode()
        try:
            os.write(self.fd, data)
        except OSError as error:  # a full disk loses output, not the job
            print(f"{len(texts)} output lines lost: {error}", file=sys.stderr)


def main() -> int:
    payload = json.loads(sys.stdin.buffer.read())
    if os.fork():
        os._exit(0)  # the launcher returns at once; the supervisor is reparented to init
    os.setsid()
    job_dir = payload["job_dir"]
    append = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    os.dup2(os.open(os.path.join(job_dir, SUPERVISOR_LOG), append, 0o600), 2)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    try:
        return Supervisor(payload).run()
    finally:
        os.dup2(devnull, 1)  # launch() reads our stdout until EOF


class Supervisor:
    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.job_dir: str = payload["job_dir"]
        self.plan = cgroups.LimitPlan.from_dict(payload["limits"])
        self.child: subprocess.Popen[bytes] | None = None
        self.pgid = 0  # the job's process group, once it runs
        self.sandbox: dict[str, Any] | None = payload.get("sandbox")
        self.status_fd: int | None = None  # bwrap's --json-status-fd, read end
        self.status_data = b""
        self.exited = False
        self.supervisor_pid = os.getpid()
        self.log_fd = os.open(
            os.path.join(self.job_dir, LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        self.writer = LogWriter(self.log_fd)
        self.prctl = _prctl()

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select loop
        # Handlers, not SIG_IGN: an ignored signal would stay ignored in the job.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._forward)
        record = {
            "key": self.payload["key"],
            "kind": self.payload["kind"],
            "content_guid": self.payload["content_guid"],
            "node": self.payload.get("node"),  # the server node that launched it
            "job_dir": self.job_dir,
            "log_path": os.path.join(self.job_dir, LOG),
            "port": self.payload["port"],
            "supervisor_pid": os.getpid(),
            "supervisor_start": process_start(os.getpid()),
            "pid": None,
            "pid_start": None,
            "pgid": None,
            "started_at": utc_now(),
            "limits": self.plan.to_dict(),
        }
        command = list(self.payload["command"])
        stdin: int = subprocess.DEVNULL
        keep: tuple[int, ...] = ()
        if self.sandbox is not None:
            stdin = os.memfd_create("podium-job-setup", os.MFD_CLOEXEC)
            _write_all(stdin, self.sandbox["setup"].encode())
            os.lseek(stdin, 0, os.SEEK_SET)
            self.status_fd, status_w = os.pipe()
            keep = (status_w,)
            command[1:1] = ["--json-status-fd", str(status_w)]
            record["sandbox"] = {"uid": self.sandbox["uid"], "gid": self.sandbox["gid"]}
        try:
            self.child = subprocess.Popen(
                command,
                cwd=self.payload["cwd"],
                env=self.payload["env"],
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=keep,
                preexec_fn=self._prepare_child,
            )
        except (OSError, subprocess.SubprocessError) as error:
            return self._start_failed(record, error)
        finally:
            for fd in (stdin, *keep) if self.sandbox is not None else ():
                os.close(fd)
        pid = self.child.pid
        self.pgid = pid
        if self.status_fd is not None:
            self.pgid = self._sandbox_pid_1() or pid
        record.update(
            pid=pid, pid_start=process_start(pid), pgid=self.pgid,
            pgid_start=process_start(self.pgid),
        )
        write_json(os.path.join(self.job_dir, RECORD), record)
        _report(record)
        self._copy_output(wake_r)
        return self._finish(record)

    def _prepare_child(self) -> None:
        """Runs in the job's process between fork and exec."""
        if self.prctl is not None:
            pr_set_pdeathsig = 1
            self.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != self.supervisor_pid:
                os._exit(1)  # the supervisor died before the signal was armed
        cgroups.join(self.plan, os.getpid())
        if self.plan.rlimit_as:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (self.plan.rlimit_as, self.plan.rlimit_as))

    def _sandbox_pid_1(self) -> int | None:
        """The pid of bwrap's pid 1, which leads the job's process group; ``None`` if
        bwrap failed (or hung) before it made one."""
        assert self.status_fd is not None
        selector = selectors.DefaultSelector()
        selector.register(self.status_fd, selectors.EVENT_READ)
        deadline = time.monotonic() + SANDBOX_REPORT_SECONDS
        data = b""
        while b"\n" not in data and (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            chunk = os.read(self.status_fd, 4096)
            if not chunk:
                break
            data += chunk
        selector.close()
        self.status_data = data
        try:
            pid_1 = int(json.loads(data.split(b"\n", 1)[0])["child-pid"])
        except (ValueError, KeyError, TypeError):
            return None
        # Until pid 1 has made its session (after setting up the mounts), its group
        # does not exist and a stop() signalling it would reach nothing.
        while (group := _process_group(pid_1)) is not None and group != pid_1:
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)
        return pid_1

    def _sandbox_started(self) -> bool:
        """Whether bwrap got as far as executing the command: it reports an exit code
        on its status pipe only then. Read once the monitor has exited."""
        assert self.status_fd is not None
        data = self.status_data
        os.set_blocking(self.status_fd, False)
        try:
            while chunk := os.read(self.status_fd, 4096):
                data += chunk
        except BlockingIOError:
            pass
        os.close(self.status_fd)
        return b'"exit-code"' in data

    def _forward(self, signum: int, frame: object) -> None:
        """``kill <supervisor>`` asks the job to stop, like the backend's stop()."""
        if self.pgid and not self.exited:
            _killpg(self.pgid, signal.SIGTERM)

    def _copy_output(self, wake_r: int) -> None:
        assert self.child is not None and self.child.stdout and self.child.stderr
        streams = {self.child.stdout.fileno(): "stdout", self.child.stderr.fileno(): "stderr"}
        selector = selectors.DefaultSelector()
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        drain_until: float | None = None
        while streams:
            if drain_until is None and self._exited():
                drain_until = time.monotonic() + DRAIN_SECONDS
            timeout = 1.0 if drain_until is None else drain_until - time.monotonic()
            if timeout <= 0:
                break  # something outside the job's group and cgroups holds the pipes
            for key, _ in selector.select(timeout):
                if key.fd == wake_r:
                    _drain(wake_r)
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    self.writer.feed(streams[key.fd], chunk)
                else:
                    selector.unregister(key.fd)
                    self.writer.flush(streams.pop(key.fd))
        for stream in streams.values():
            self.writer.flush(stream)
        if drain_until is None:  # the job closed its output and runs on
            os.waitid(os.P_PID, self.child.pid, os.WEXITED | os.WNOWAIT)
            self._exited()

    def _exited(self) -> bool:
        """Whether the job's process has exited; if so, kill what it left behind.

        The process stays a zombie (WNOWAIT) until then, so its pid, which is also the
        process group id, cannot be reused by an unrelated process meanwhile.
        """
        assert self.child is not None
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        if os.waitid(os.P_PID, self.child.pid, flags) is None:
            return False
        self.exited = True
        _killpg(self.child.pid, signal.SIGKILL)
        if self.pgid != self.child.pid:
            _killpg(self.pgid, signal.SIGKILL)  # a sandbox's pid 1 and what it leads
        cgroups.signal_all(self.plan, signal.SIGKILL)
        return True

    def _finish(self, record: dict[str, Any]) -> int:
        assert self.child is not None
        code = self.child.wait()
        exit_code = code if code >= 0 else 128 - code
        start_error = None
        if self.status_fd is not None:
            start_error = self._sandbox_start_error(code)
            if start_error is None and 128 < code <= 128 + 64:
                code = 128 - code  # bwrap's report of a command killed by a signal
        kills = cgroups.oom_kills(self.plan) if self.plan.memory_mode else None
        oom = code != 0 and bool(kills)
        if self.plan.memory_mode == "rlimit" and code != 0:
            tail = "\n".join(self.writer.stderr_tail)
            oom = any(marker in tail for marker in _MEMORY_ERRORS)
        limit = self.plan.memory_limit or 0
        if start_error is not None:
            reason, message = "StartError", start_error
            self._note(message)
        elif oom:
            reason, message = "OOMKilled", cgroups.oom_message(limit)
            self._note(message)
        elif code == 0:
            reason, message = "Completed", "exited with code 0"
            if kills:
                self._note(
                    "a process of this job was killed for exceeding the memory limit of "
                    f"{cgroups.format_bytes(limit)}"
                )
        elif code < 0:
            reason, message = "Signalled", f"killed by signal {_signal_name(-code)}"
        else:
            reason, message = "Exited", f"exited with code {code}"
        os.close(self.log_fd)
        cgroups.remove(self.plan)
        write_json(
            os.path.join(self.job_dir, EXIT),
            {"exit_code": exit_code, "reason": reason, "message": message,
             "oom_kills": kills, "started_at": record["started_at"], "finished_at": utc_now()},
        )
        return 0

    def _sandbox_start_error(self, code: int) -> str | None:
        """Why a sandboxed command never ran, from bwrap's status and the last line of
        its stderr; ``None`` if it ran (or was killed before anyone could tell)."""
        started = self._sandbox_started()
        last = self.writer.stderr_tail[-1] if self.writer.stderr_tail else ""
        if code < 0:
            return None
        if not started:
            said = last.removeprefix("bwrap: ") if last.startswith("bwrap: ") else (
                f"bwrap exited with code {code}"
            )
            return f"could not start the sandbox: {said}"
        failed = _SANDBOX_EXEC_FAILED.fullmatch(last) if code in (126, 127) else None
        if failed is not None:
            return f"could not start: {failed.group(1) or failed.group(2)}"
        return None

    def _start_failed(self, record: dict[str, Any], error: BaseException) -> int:
        if isinstance(error, OSError):
            what = error.strerror or str(error)
            where = f": {error.filename}" if error.filename else ""
            message = f"could not start: {what}{where}"
        else:  # an exception in _prepare_child
            message = "could not start: could not apply the job's resource limits"
        self._note(message)
        os.close(self.log_fd)
        cgroups.remove(self.plan)
        write_json(
            os.path.join(self.job_dir, EXIT),
            {"exit_code": None, "reason": "StartError", "message": message,
             "oom_kills": None, "started_at": record["started_at"], "finished_at": utc_now()},
        )
        write_json(os.path.join(self.job_dir, RECORD), record)
        _report(record)
        return 0

    def _note(self, message: str) -> None:
        """A line from Podium itself in the job log."""
        self.writer.write("stderr", [f"[podium] {message}".encode()])


def _prctl() -> Any:
    """Linux prctl(2), to give the job a parent-death signal; ``None`` elsewhere."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # the backend's stop() still reaches the process group


def _report(record: dict[str, Any]) -> None:
    """Tell launch() the job exists: one JSON line on the launcher's stdout."""
    os.write(1, json.dumps(record).encode() + b"\n")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # EOF for launch()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


if __name__ == "__main__":
    sys.exit(main())
