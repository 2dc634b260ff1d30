"""Transfer tokens and uploads (podium.runtime.transfer), without a cluster: single use,
expiry, revocation, and uploads that cannot lead the server to its own key."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from podium.runtime.transfer import TransferRefused, TransferTokens, pack, unpack_upload


def test_transfer_token_is_single_use_expires_and_is_revoked(tmp_path: Path) -> None:
    now = [100.0]
    tokens = TransferTokens(tmp_path, clock=lambda: now[0])
    bundle = str(tmp_path.resolve() / "apps/1/2")
    token = tokens.issue("run-1", "guid", "fetch", [bundle], 10)
    with pytest.raises(TransferRefused):
        tokens.redeem(token, "upload")  # the wrong action uses nothing up
    assert tokens.redeem(token, "fetch").paths == (bundle,)
    with pytest.raises(TransferRefused):
        tokens.redeem(token, "fetch")
    late = tokens.issue("run-1", "guid", "fetch", [bundle], 10)
    now[0] += 10.5
    with pytest.raises(TransferRefused):
        tokens.redeem(late, "fetch")
    revoked = tokens.issue("run-2", "guid", "fetch", [bundle], 10)
    tokens.revoke("run-2")
    with pytest.raises(TransferRefused):
        tokens.redeem(revoked, "fetch")
    assert len(tokens) == 0
    with pytest.raises(ValueError):
        tokens.issue("run-3", "guid", "fetch", ["/etc"], 10)  # only inside the data dir
    with pytest.raises(ValueError):
        tokens.issue("run-3", "guid", "fetch", [str(tmp_path.resolve())], 10)  # never the data dir whole


def _upload(members: list[tuple[str, str | None, str]]) -> io.BytesIO:
    """A tar of (name, link target or None, text)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, link, text in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                data = text.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def test_transfer_upload_replaces_the_folder_and_refuses_links_to_the_data_dir(tmp_path: Path) -> None:
    root = tmp_path / "data"
    target = root / "output" / "7"
    target.mkdir(parents=True)
    (target / "old.html").write_text("old")
    (root / "secret.key").write_text("KEY")
    venv = [("0/index.html", None, "new"), ("0/bin/python", "/usr/bin/python3", ""), ("0/bin/python3", "python", "")]
    with pytest.raises(tarfile.TarError):  # a render's output is served: no link out at all
        unpack_upload(_upload(venv), target, root)
    assert (target / "old.html").read_text() == "old"
    unpack_upload(_upload(venv), target, root, absolute_links=True)  # a build's venv
    assert sorted(p.name for p in target.iterdir()) == ["bin", "index.html"]
    assert (target / "index.html").read_text() == "new"
    for hostile in (
        [("0/key", str(root / "secret.key"), "")],  # into the data dir
        [("0/up", "/", ""), ("0/key", f"up{root}/secret.key", "")],  # through a parent of it
        [("0/key", "../../secret.key", "")],  # out of the folder
        [("../escape", None, "x")],
        [("1/other", None, "x")],
    ):
        with pytest.raises(tarfile.TarError):
            unpack_upload(_upload(hostile), target, root, absolute_links=True)
        assert (target / "index.html").read_text() == "new"  # unchanged by a refused upload


def test_transfer_pack_names_paths_by_index_and_keeps_links(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("x")
    (tmp_path / "a" / "link").symlink_to("/etc/passwd")
    out = io.BytesIO()
    pack((str(tmp_path / "a"), str(tmp_path / "missing"), None), out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"0", "0/f", "0/link", "1", "2"}
    assert members["0/link"].issym() and members["1"].isdir() and members["2"].isdir()


def test_build_ready_marker_is_never_written_through_a_link_the_build_left(tmp_path: Path) -> None:
    from podium.build import READY_MARKER, _mark_ready
    from podium.tasks import TaskFailed

    outside = tmp_path / "secret.key"
    outside.write_text("KEY")
    work = tmp_path / "envs" / ".fp.build-1"
    (work / "env").mkdir(parents=True)
    (work / "env" / READY_MARKER).symlink_to(outside)
    with pytest.raises(TaskFailed):
        _mark_ready(work / "env", work, "3.11.7")
    (work / "env" / READY_MARKER).unlink()
    (work / "env").rename(work / "real")
    (work / "env").symlink_to(tmp_path)  # the environment folder itself a link
    with pytest.raises(TaskFailed):
        _mark_ready(work / "env", work, "3.11.7")
    assert outside.read_text() == "KEY" and not (tmp_path / READY_MARKER).exists()
    (work / "env").unlink()
    (work / "real").rename(work / "env")
    _mark_ready(work / "env", work, "3.11.7")
    assert (work / "env" / READY_MARKER).read_text() == "3.11.7\n"
