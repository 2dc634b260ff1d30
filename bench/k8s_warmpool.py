"""Cold start on Kubernetes with and without the warm pool (``kubernetes_warm_pool_size``).

On the simulated cluster (tests/k8s_sim, in a process of its own: a real API server,
the real client library, pods as local processes) with an artificial pod start delay (``--delay``: what an image
pull, volume setup or a runtime copying its files costs before a container runs), this
times a content process's cold start through the Kubernetes backend, from ``launch``
to the first HTTP answer at the address the backend gives (the pod Ready, as the
scheduler waits for it):

- **direct**: the same app started as a local process, no cluster (the app's own start);
- **pool off**: a normal Job (files from the shared data volume);
- **pool on**: a claimed warm pod (files pushed in the hand-off).

``launch off``/``launch on`` are the parts spent in ``launch`` itself (creating the
Job; claiming the pod and handing it the job and its files).

Rounds are interleaved; between rounds the pool refills (not timed).

    .venv/bin/python bench/k8s_warmpool.py                 # 5 rounds, 2 s start delay
    .venv/bin/python bench/k8s_warmpool.py --rounds 3 --delay 5
    .venv/bin/python bench/k8s_warmpool.py --env          # with a 16 MiB package environment

It prints each round, the medians, and pool on/off against direct. Needs root and
bubblewrap (the simulated kubelet sandboxes pods), as the Kubernetes tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from k8s_transfer import make_env, size_of  # noqa: E402
from tests.warm_support import (  # noqa: E402
    GID,
    IMAGE,
    UID,
    answer,
    make_bundle,
    run_spec,
    warm_ready,
)

from podium.runtime import Resources  # noqa: E402
from podium.runtime.kubernetes.backend import KubernetesBackend  # noqa: E402
from podium.runtime.kubernetes.client import AsyncioKubeClient  # noqa: E402
from podium.runtime.kubernetes.manifests import KubernetesJobConfig  # noqa: E402

NAMESPACE = "bench-warm"
# The simulated cluster in a process of its own, as a cluster is: the backend's process
# then runs the backend alone (no API server, controllers or kubelet sharing its GIL).
SIM = """
import signal, sys, threading
from pathlib import Path
sys.path[:0] = sys.argv[7:]
from k8s_sim import SimCluster
root, data, delay, kubeconfig = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
cluster = SimCluster(root, images={sys.argv[5]}, volumes={"podium-data": data})
cluster.start()
if not cluster.enforcing:
    sys.exit("the simulated kubelet cannot sandbox pods here (needs root and bubblewrap)")
cluster.set_start_delay(delay)
cluster.write_kubeconfig(kubeconfig, sys.argv[6])
print("ready", flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
done.wait()
problems = cluster.close()
sys.exit("simulated cluster problems: %r" % problems if problems else 0)
"""
DEFAULT = Resources(memory_limit=512 * 2**20)


def load() -> str:
    return Path("/proc/loadavg").read_text().strip()


def direct(bundle: Path) -> float:
    """The app's own start: a local process, until its first HTTP answer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=bundle,
                               env={**os.environ, "POD_IP": "127.0.0.1", "PORT": str(port)})
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    response.read()
                return time.perf_counter() - started
            except OSError:
                time.sleep(0.005)
    finally:
        process.terminate()
        process.wait()


async def cold_start(backend: KubernetesBackend, key: str, bundle: Path, home: Path,
                     env: Path | None) -> tuple[float, float, bool]:
    """Seconds to the first answer, seconds ``launch`` took, whether a warm pod was claimed."""
    spec = run_spec(key, "bench-content", bundle, home, resources=DEFAULT)
    if env is not None and spec.sandbox is not None:  # its package environment: mounted, or pushed
        spec = dataclasses.replace(spec, sandbox=dataclasses.replace(
            spec.sandbox, read_only=(*spec.sandbox.read_only, str(env))))
    started = time.perf_counter()
    handle = await backend.launch(spec)
    launched = time.perf_counter() - started
    seen = await answer(backend, handle, timeout=120)
    elapsed = time.perf_counter() - started
    assert seen["file"] == "bench", seen
    claimed = handle.data["name"] != key
    await backend.stop(handle, 0)
    return elapsed, launched, claimed


async def bench(kubeconfig: str, data: Path, rounds: int, env: Path | None) -> dict[str, list[float]]:
    bundle, home = make_bundle(data, "bench-content", "bench")

    def backend(instance: str, size: int) -> KubernetesBackend:
        config = KubernetesJobConfig(
            namespace=NAMESPACE, instance=instance, default_image=IMAGE, data_pvc="podium-data",
            data_mount_path=str(data), run_as_user=UID, run_as_group=GID, warm_pool_size=size,
            warm_pool_resources=DEFAULT, tmp_size_limit_bytes=None)
        return KubernetesBackend(lambda: AsyncioKubeClient.connect(kubeconfig), config)

    off, on = backend("podium-off", 0), backend("podium-on", 1)
    times: dict[str, list[float]] = {"direct": [], "pool off": [], "pool on": [], "launch off": [], "launch on": []}
    try:
        await warm_ready(on, IMAGE, 1, timeout=120)
        for index in range(rounds):
            times["direct"].append(await asyncio.to_thread(direct, bundle))
            elapsed, launched, claimed = await cold_start(off, f"off-{index}", bundle, home, env)
            assert not claimed
            times["pool off"].append(elapsed)
            times["launch off"].append(launched)
            await warm_ready(on, IMAGE, 1, timeout=120)  # refilled (not timed)
            elapsed, launched, claimed = await cold_start(on, f"on-{index}", bundle, home, env)
            assert claimed, "the pool-on start did not claim a warm pod"
            times["pool on"].append(elapsed)
            times["launch on"].append(launched)
            print(f"round {index + 1}: " + ", ".join(f"{name} {values[-1]:.3f} s" for name, values in times.items()),
                  f"(load {load().split()[0]})", flush=True)
    finally:
        for each in (off, on):
            await each.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds before a pod's container starts")
    parser.add_argument("--env", action="store_true",
                        help="give the job a real package environment (FastAPI, uvicorn: 16 MiB) to see")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podium-bench-warm-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        env = None
        if args.env:
            env = make_env(data)
            files, size = size_of(env)
            print(f"package environment: {files} files, {size / 2**20:.1f} MiB")
        kubeconfig = Path(tmp) / "kubeconfig"
        sim = subprocess.Popen([sys.executable, "-c", SIM, str(Path(tmp) / "k8s"), str(data), str(args.delay),
                                str(kubeconfig), IMAGE, NAMESPACE, str(ROOT), str(ROOT / "tests")], stdout=subprocess.PIPE, text=True)
        try:
            assert sim.stdout is not None and sim.stdout.readline().strip() == "ready", "the cluster did not start"
            print(f"pod start delay {args.delay:g} s, {args.rounds} rounds; load {load()}")
            times = asyncio.run(bench(str(kubeconfig), data, args.rounds, env))
        finally:
            sim.terminate()
            code = sim.wait(60)
    assert code == 0, "the simulated cluster reported problems"
    median = {name: statistics.median(values) for name, values in times.items()}
    print("median: " + ", ".join(f"{name} {value:.3f} s" for name, value in median.items()))
    print(f"pool off: {median['pool off'] / median['direct']:.1f}x direct (+{median['pool off'] - median['direct']:.3f} s); "
          f"pool on: {median['pool on'] / median['direct']:.1f}x direct (+{median['pool on'] - median['direct']:.3f} s); "
          f"pool on saves {median['pool off'] - median['pool on']:.3f} s of {median['pool off']:.3f} s")
    print(f"load {load()}")


if __name__ == "__main__":
    main()
