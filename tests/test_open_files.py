"""``podium serve`` raises its soft limit of open files to the hard limit at start: every
proxied connection holds two descriptors, and many systems give a process 1,024."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
from tests.conftest import start_server

pytestmark = pytest.mark.integration


def _open_files_limits(pid: int) -> tuple[str, str]:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return soft, hard
    raise AssertionError("no open files limit in /proc")


def test_serve_raises_its_open_files_limit_to_the_hard_limit(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 256
    if hard != resource.RLIM_INFINITY and hard <= low:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))  # the server inherits it
    try:
        node = start_server(tmp_path / "data")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        server_soft, server_hard = _open_files_limits(node.process.pid)
        assert server_hard == (str(hard) if hard != resource.RLIM_INFINITY else "unlimited")
        assert int(server_soft) > low
        if hard != resource.RLIM_INFINITY:
            assert server_soft == server_hard
        assert "open files limit" in node.log()
    finally:
        node.stop()
