"""What a pod's start costs without a shared volume: fetching its package environment.

With ``kubernetes_shared_volume = false`` each pod's init container fetches its files
from Podium (``GET /__api__/internal/transfer``: the server packs them, the pod
unpacks them into an emptyDir); a build uploads the environment it made the same way.
This measures both through the real endpoint and the real pod script, for a real
package environment (FastAPI and uvicorn, made with uv), against a local copy of the
same folder (``cp -a``) measured in the same run:

    .venv/bin/python bench/k8s_transfer.py            # 5 rounds
    .venv/bin/python bench/k8s_transfer.py --rounds 3

It prints each round and the best of each, with the ratios fetch/copy and upload/copy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from uv import find_uv_bin

from podium.runtime.transfer import POD_SCRIPT, TransferTokens

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tests.warm_support import serve_transfer  # noqa: E402


def make_env(root: Path) -> Path:
    env = root / "envs" / "bench"
    uv = find_uv_bin()
    subprocess.run([uv, "venv", "--relocatable", "-q", str(env)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(env / "bin" / "python"), "fastapi", "uvicorn"],
                   check=True, env={**os.environ, "UV_COMPILE_BYTECODE": "1"})
    return env


def size_of(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)


def pod(url: str, action: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", POD_SCRIPT, action], check=True, capture_output=True,
                   env={"PATH": os.environ["PATH"], "PODIUM_TRANSFER_URL": url, **env})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
        root = Path(tmp) / "data"
        env = make_env(root)
        files, size = size_of(env)
        print(f"package environment: {files} files, {size / 2**20:.1f} MiB")
        tokens = TransferTokens(root)
        url, server = serve_transfer(tokens)
        best = {"copy": float("inf"), "fetch": float("inf"), "upload": float("inf")}
        for index in range(args.rounds):
            target = Path(tmp) / f"copy-{index}"
            started = time.perf_counter()
            subprocess.run(["cp", "-a", str(env), str(target)], check=True)
            copy = time.perf_counter() - started
            shutil.rmtree(target)
            empty = Path(tmp) / f"pod-{index}"
            empty.mkdir()
            fetch = pod(url, "fetch", {"PODIUM_TRANSFER_DIR": str(empty), "PODIUM_TRANSFER_TOKEN": tokens.issue(
                f"bench-{index}", "bench", "fetch", [str(env)], 60)})
            upload_to = root / "envs" / f"up-{index}"
            upload = pod(url, "upload", {"PODIUM_UPLOAD_0_PATH": str(empty / "0"), "PODIUM_UPLOAD_0_TOKEN":
                                         tokens.issue(f"bench-{index}", "bench", "upload", [str(upload_to)], 60, absolute_links=True)})
            assert size_of(upload_to) == (files, size), "the upload lost files"
            shutil.rmtree(empty)
            shutil.rmtree(upload_to)
            print(f"round {index + 1}: cp -a {copy:.3f} s, fetch {fetch:.3f} s, upload {upload:.3f} s")
            best = {"copy": min(best["copy"], copy), "fetch": min(best["fetch"], fetch),
                    "upload": min(best["upload"], upload)}
        server.should_exit = True
        print(f"best: cp -a {best['copy']:.3f} s, fetch {best['fetch']:.3f} s "
              f"({best['fetch'] / best['copy']:.1f}x the copy, {size / 2**20 / best['fetch']:.0f} MiB/s), "
              f"upload {best['upload']:.3f} s ({best['upload'] / best['copy']:.1f}x the copy)")


if __name__ == "__main__":
    main()
