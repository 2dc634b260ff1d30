"""The parts of git-backed publishing that need no server: the poll lease on each database,
webhook signatures, URL rules, and git's environment (no credentials on a command line)."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.gitserver import GitHttpServer, Repo, static_site

from podium.git.publish import GitPublisher
from podium.git.remote import GitAuth, GitError, GitRunner, scrub, url_problem
from podium.git.webhook import pushed_ref, ref_matches, signature_ok
from podium.settings import Settings
from podium.store import Store
from podium.store.models import Content, GitRepository, User


def _publisher(store: Store, settings: Settings, node: str) -> GitPublisher:
    # Claiming needs only the store and the settings.
    return GitPublisher(store, settings, None, None, None, None, None, node=node)  # type: ignore[arg-type]


def _item(store: Store, name: str, fetched: datetime | None) -> int:
    with store.session() as session:
        user = session.query(User).filter_by(username="owner").one_or_none() or User(username="owner")
        content = Content(name=name, owner=user)
        session.add(content)
        session.flush()
        session.add(GitRepository(content_id=content.id, repository="https://example.org/x.git",
                                  branch="main", directory=".", polling=True, last_error="",
                                  last_known_commit="", last_fetched_time=fetched))
        return content.id


def test_poll_lease_one_node_claims_each_due_item(store: Store, settings: Settings) -> None:
    settings.git_polling_interval_seconds = 60
    now = datetime.now(UTC)
    due = _item(store, "due", None)
    stale = _item(store, "stale", now - timedelta(seconds=120))
    fresh = _item(store, "fresh", now - timedelta(seconds=5))
    a, b = _publisher(store, settings, "node-a"), _publisher(store, settings, "node-b")
    first = a.claim_due(now)
    assert sorted(first) == sorted([due, stale])
    assert b.claim_due(now) == []  # leased by node-a
    with store.session() as session:
        nodes = {r.content_id: r.lease_node for r in session.query(GitRepository)}
    assert nodes == {due: "node-a", stale: "node-a", fresh: None}
    # Released after a check: not due again until the interval has passed.
    a._release(due, fetched=True)
    assert b.claim_due(now + timedelta(seconds=1)) == []
    # An expired lease (a node that died mid-check) is taken over.
    later = now + timedelta(seconds=a._lease_seconds() + 1)
    assert sorted(b.claim_due(later)) == sorted([due, stale, fresh])


def test_poll_lease_many_nodes_race_for_one_item(store: Store, settings: Settings) -> None:
    from concurrent.futures import ThreadPoolExecutor

    item = _item(store, "raced", None)
    nodes = [_publisher(store, settings, f"node-{i}") for i in range(6)]
    now = datetime.now(UTC)
    with ThreadPoolExecutor(6) as pool:
        claims = list(pool.map(lambda p: p.claim_due(now), nodes))
    assert sorted(c for claim in claims for c in claim) == [item]


def _sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_webhook_signature_ok_for_github_gitea_gitlab() -> None:
    body = b'{"ref": "refs/heads/main"}'
    assert signature_ok("s", body, {"x-hub-signature-256": "sha256=" + _sign("s", body)})
    assert not signature_ok("s", body, {"x-hub-signature-256": "sha256=" + _sign("t", body)})
    assert not signature_ok("s", body, {"x-hub-signature-256": _sign("s", body)})  # no prefix
    assert signature_ok("s", body, {"x-gitea-signature": _sign("s", body)})
    assert not signature_ok("s", body + b"x", {"x-gitea-signature": _sign("s", body)})
    assert signature_ok("s", body, {"x-gitlab-token": "s"})
    assert not signature_ok("s", body, {"x-gitlab-token": "S"})
    assert not signature_ok("s", body, {})
    assert pushed_ref(body) == "refs/heads/main" and pushed_ref(b"not json") is None
    assert ref_matches("refs/heads/main", "main") and ref_matches("refs/tags/v1", "v1")
    assert not ref_matches("refs/heads/main2", "main")


@pytest.mark.parametrize(
    ("url", "allowed_locally"),
    [("file:///srv/repo.git", True), ("ssh://git@host/x.git", True), ("/srv/repo", True),
     ("git@host:x.git", False), ("ftp://host/x.git", False), ("https://u:p@host/x", False)],
)
def test_url_problem_refuses_non_http_unless_allowed(url: str, allowed_locally: bool) -> None:
    assert url_problem("https://example.org/x.git", False) is None
    assert url_problem(url, False) is not None
    assert (url_problem(url, True) is None) == allowed_locally


def test_scrub_removes_userinfo() -> None:
    assert scrub("fatal: https://me:tok@host/x.git") == "fatal: https://host/x.git"


def test_git_runner_credentials_not_on_command_line_and_local_urls_need_the_setting(tmp_path: Path) -> None:
    root = tmp_path / "repos"
    root.mkdir()
    served = GitHttpServer(root, auth=("u", "tok-123"))
    try:
        repo = Repo(root, "r")
        commit = repo.commit(static_site("hi"))
        runner = GitRunner(30, allow_local=False)
        seen: list[list[str]] = []
        real = subprocess.Popen

        class Spy(real):  # type: ignore[misc, valid-type]
            def __init__(self, args: Any, *rest: Any, **kw: Any) -> None:
                if "http-backend" not in args:  # not the test's own git server
                    seen.append(list(args))
                    assert kw["env"]["GIT_TERMINAL_PROMPT"] == "0"
                super().__init__(args, *rest, **kw)

        subprocess.Popen = Spy  # type: ignore[misc]
        try:
            with pytest.raises(GitError, match="refused access"):
                runner.ls_remote(served.url("r"), "main", None, tmp_path / "s1")
            assert runner.ls_remote(served.url("r"), "main", GitAuth("u", "tok-123"), tmp_path / "s2") == commit
        finally:
            subprocess.Popen = real  # type: ignore[misc]
        assert seen and not any("tok-123" in arg for args in seen for arg in args)
        assert served.auth_headers[-1].startswith("Basic ")
        with pytest.raises(GitError, match="git_allow_local_repositories"):
            runner.ls_remote(f"file://{repo.bare}", "main", None, tmp_path / "s3")
        local = GitRunner(30, allow_local=True)
        assert local.ls_remote(f"file://{repo.bare}", "main", None, tmp_path / "s4") == commit
        assert os.listdir(tmp_path / "s4") == []
    finally:
        served.close()


def test_git_runner_stops_a_fetch_past_the_size_limit_and_an_oversized_archive(tmp_path: Path) -> None:
    root = tmp_path / "repos"
    root.mkdir()
    served = GitHttpServer(root)
    try:
        repo = Repo(root, "big")
        (repo.work / "blob.bin").write_bytes(os.urandom(2_000_000))  # incompressible
        repo.commit(static_site("big"))
        runner = GitRunner(60, allow_local=False)
        lines: list[str] = []
        with pytest.raises(GitError, match="larger than the server's limit of 500000 bytes for a fetch"):
            runner.fetch_tree(served.url("big"), "main", ".", None, tmp_path / "s1", tmp_path / "s1.tgz",
                              10_000_000, lines.append, max_fetch_bytes=500_000)
        (tmp_path / "s2").mkdir()
        with pytest.raises(GitError, match="larger than the server's limit of 1000000 bytes"):
            runner.fetch_tree(served.url("big"), "main", ".", None, tmp_path / "s2", tmp_path / "s2" / "b.tgz",
                              1_000_000, lines.append, max_fetch_bytes=50_000_000)
        (tmp_path / "s3").mkdir()
        commit = runner.fetch_tree(served.url("big"), "main", ".", None, tmp_path / "s3", tmp_path / "s3" / "b.tgz",
                                   10_000_000, lines.append, max_fetch_bytes=50_000_000)
        assert f"Commit {commit}" in lines
    finally:
        served.close()


def test_poll_lease_renewed_only_by_its_holder(store: Store, settings: Settings) -> None:
    item = _item(store, "renewed", None)
    a, b = _publisher(store, settings, "node-a"), _publisher(store, settings, "node-b")
    assert a.claim_due(datetime.now(UTC)) == [item]
    with store.session() as session:
        session.query(GitRepository).update({"lease_expires": datetime.now(UTC) + timedelta(seconds=5)})
    b._renew(item)  # not b's lease: no change
    with store.session() as session:
        expires = session.query(GitRepository).one().lease_expires
    assert expires is not None and expires < datetime.now(UTC) + timedelta(seconds=10)
    a._renew(item)
    with store.session() as session:
        expires = session.query(GitRepository).one().lease_expires
    assert expires is not None and expires > datetime.now(UTC) + timedelta(seconds=a._lease_seconds() - 10)
    assert b.claim_due(datetime.now(UTC) + timedelta(seconds=60)) == []


@pytest.mark.parametrize("protocol_v2", [True, False])
def test_git_runner_fetches_an_older_commit_by_id(tmp_path: Path, protocol_v2: bool) -> None:
    root = tmp_path / "repos"
    root.mkdir()
    served = GitHttpServer(root, protocol_v2=protocol_v2)
    try:
        repo = Repo(root, "history")
        old = repo.commit(static_site("old"))
        repo.commit(static_site("new"))
        runner = GitRunner(60, allow_local=False)
        lines: list[str] = []
        (tmp_path / "s").mkdir()
        archive = tmp_path / "s" / "b.tgz"
        assert runner.fetch_tree(served.url("history"), old, ".", None, tmp_path / "s", archive,
                                 10_000_000, lines.append) == old
        import tarfile

        with tarfile.open(archive) as tar:
            member = tar.extractfile("index.html")
            assert member is not None and member.read() == b"old"
        assert any("fetching its branches" in line for line in lines) == (not protocol_v2)
        with pytest.raises(GitError, match="has no commit f{40} on any branch"):
            runner.fetch_tree(served.url("history"), "f" * 40, ".", None, tmp_path / "t", tmp_path / "t.tgz",
                              10_000_000, lines.append)
    finally:
        served.close()
