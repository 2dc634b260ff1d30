"""Run the simulated cluster on its own: ``python -m k8s_sim KUBECONFIG IMAGE...`` (from
``tests/``) writes a kubeconfig and serves until interrupted. Used to check the
real-cluster path of the tests (``scripts/k8s-real-cluster-tests.sh --sim``)."""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
from pathlib import Path

from k8s_sim import SimCluster


def main() -> None:
    kubeconfig, images = Path(sys.argv[1]), set(sys.argv[2:]) or {"podium.test/runtime:host"}
    cluster = SimCluster(Path(tempfile.mkdtemp(prefix="k8s-sim-")), images=images)
    cluster.start()
    cluster.write_kubeconfig(kubeconfig)
    print(f"simulated cluster at {cluster.url}; kubeconfig {kubeconfig}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    cluster.stop()


if __name__ == "__main__":
    main()
