"""What the bubblewrap sandbox adds to a local job's cold start.

Launches ``python -c "print(1)"`` through the local backend, alternately with and
without a sandbox, and measures each launch to its first line of output (what a
viewer waits for on a cold start, minus the app's own start-up). Prints the medians,
their ratio and difference; the target is under 50 ms extra.

The sandbox is the one content gets: the bundle and the interpreter's installation
read-only, a home directory writable, and, when run as root, its own uid (70001).

Usage: ``.venv/bin/python bench/sandbox_start.py [--runs 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from podium.runtime import JobSpec, LocalBackend
from podium.runtime.base import Sandbox
from podium.runtime.sandbox import prepare_writable, probe_sandbox

PY = os.path.realpath(sys.executable)
GUID = "b3c4d5e6-f7a8-4b9c-8d0e-1f2a3b4c5d6e"


async def first_output_seconds(backend: LocalBackend, spec: JobSpec) -> tuple[float, float]:
    """Seconds from calling launch() to its return, and to the first output line in the
    job log (read every millisecond: ``logs(follow=True)`` polls every 50 ms, which
    would hide the difference being measured)."""
    started = time.perf_counter()
    handle = await backend.launch(spec)
    launched = time.perf_counter() - started
    log = Path(handle.data["log_path"])
    while not (log.exists() and b" stdout " in log.read_bytes()):
        if time.perf_counter() - started > 10:
            raise RuntimeError(f"job {spec.key} printed nothing: {await backend.status(handle)}")
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    await backend.stop(handle, grace_seconds=1)
    return launched, elapsed


Samples = dict[str, list[tuple[float, float]]]


async def measure(root: Path, runs: int) -> Samples:
    uid, gid = (70001, 70001) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    support = probe_sandbox(uid, gid)
    if not support.available:
        raise SystemExit(f"no sandbox on this host: {support.reason}")
    bundle = root / "apps" / "bundle"
    bundle.mkdir(parents=True)
    (root / "home").mkdir()
    home = prepare_writable(root / "home" / "content", uid, gid) if os.geteuid() == 0 else (
        root / "home"
    )
    sandbox = Sandbox(
        uid, gid, read_only=(str(bundle), os.path.realpath(sys.base_prefix)), writable=(str(home),)
    )
    backend = LocalBackend(root / "jobs")
    samples: Samples = {"without": [], "with": []}
    for run in range(runs + 2):  # two warm-up rounds (the first sandbox also probes)
        for name, box in (("without", None), ("with", sandbox)):
            spec = JobSpec(
                key=f"{name}-{run}", kind="build", content_guid=GUID, image=None,
                command=[PY, "-c", "print(1)"], env={}, workdir=str(bundle), port=None,
                sandbox=box,
            )
            seconds = await first_output_seconds(backend, spec)
            if run >= 2:
                samples[name].append(seconds)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
        samples = asyncio.run(measure(Path(tmp), args.runs))
    print(f"medians of {args.runs} runs each (ms)   launch() returns   first output")
    medians = {}
    for name, values in samples.items():
        launched, output = (statistics.median(v) * 1000 for v in zip(*values, strict=True))
        medians[name] = output
        print(f"  {name + ' sandbox:':<30}{launched:14.1f}{output:15.1f}")
    extra = medians["with"] - medians["without"]
    print(f"first output: {medians['with'] / medians['without']:.2f}x, {extra:+.1f} ms "
          "(target: under +50 ms)")

if __name__ == "__main__":
    main()
