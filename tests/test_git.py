"""Git-backed publishing against real repositories served by ``git http-backend`` on loopback:
the repository API, deploys from git, bad input, private repositories, polling and push
webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from tests.conftest import RunningServer, free_port, start_server
from tests.gitserver import GitHttpServer, Repo, static_site
from tests.helpers import static_bundle, wait_task

pytestmark = pytest.mark.integration


def api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


def assert_error(response: requests.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "error", "payload"} and body["code"] == code, body
    return dict(body)


@pytest.fixture(scope="module")
def git_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GitHttpServer, Path]]:
    root = tmp_path_factory.mktemp("repos")
    served = GitHttpServer(root)
    yield served, root
    served.close()


@pytest.fixture(scope="module")
def pub(server: RunningServer) -> str:
    return server.user_key("gitpub", "publisher")


_counter = iter(range(1000))


def new_repo(git_root: tuple[GitHttpServer, Path]) -> tuple[Repo, str]:
    served, root = git_root
    name = f"site{next(_counter)}"
    return Repo(root, name), served.url(name)


def new_content(server: RunningServer, key: str, **fields: Any) -> dict[str, Any]:
    made = server.api(key).post(api(server, "v1/content"), json={"name": f"git-{time.monotonic_ns()}", **fields})
    assert made.status_code == 200, made.text
    return dict(made.json())


def deploy_git(server: RunningServer, key: str, guid: str, activate: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"bundle_id": None}
    if not activate:
        body["activate"] = False
    started = server.api(key).post(api(server, f"v1/content/{guid}/deploy"), json=body)
    assert started.status_code == 200, started.text
    return wait_task(server, key, started.json()["task_id"])


def page(server: RunningServer, key: str, guid: str) -> str:
    return server.api(key).get(f"{server.url}/content/{guid}/").text


def test_repository_api_fields_codes_and_permissions(
    server: RunningServer, pub: str, git_root: tuple[GitHttpServer, Path]
) -> None:
    item = new_content(server, pub)
    url = api(server, f"v1/content/{item['guid']}/repository")
    client = server.api(pub)
    assert_error(client.get(url), 404, 4)
    assert_error(client.patch(url, json={"branch": "dev"}), 404, 4)
    assert_error(client.put(url, json={"repository": "ssh://git@example.org/x.git"}), 400, 164)
    assert_error(client.put(url, json={"repository": "file:///etc"}), 400, 164)
    assert_error(client.put(url, json={"repository": "/srv/repo"}), 400, 164)
    assert_error(client.put(url, json={"repository": "https://u:p@example.org/x.git"}), 400, 164)
    assert_error(client.put(url, json={"repository": "https://example.org/x.git", "colour": "red"}), 400, 146)
    assert_error(client.put(url, json={"repository": "https://example.org/x.git", "polling": "yes"}), 400, 146)
    # PUT stores without fetching: an unreachable host and a SHA as branch are echoed back.
    sha = "0123456789abcdef0123456789abcdef01234567"
    put = client.put(url, json={"repository": "https://git.invalid/x.git", "branch": sha, "directory": "app",
                                "polling": False})
    assert put.status_code == 200, put.text
    assert put.json() == {"repository": "https://git.invalid/x.git", "branch": sha, "directory": "app",
                          "polling": False, "last_error": "", "last_known_commit": "", "last_fetched_time": None}
    patched = client.patch(url, json={"branch": "main"})
    assert patched.json() == {**put.json(), "branch": "main"}
    assert client.get(url).json() == patched.json()
    # Git-managed content takes no bundle uploads.
    assert_error(client.post(api(server, f"v1/content/{item['guid']}/bundles"), data=static_bundle()), 400, 144)
    # A viewer with access cannot change it; another publisher cannot see it.
    viewer = server.user_key("gitviewer", "viewer")
    viewer_guid = server.api(viewer).get(api(server, "v1/user")).json()["guid"]
    granted = client.post(api(server, f"v1/content/{item['guid']}/permissions"),
                          json={"principal_guid": viewer_guid, "principal_type": "user", "role": "viewer"})
    assert granted.status_code == 200, granted.text
    assert_error(server.api(viewer).put(url, json={"repository": "https://example.org/y.git"}), 403, 22)
    assert_error(server.api(viewer).patch(url, json={"polling": True}), 403, 22)
    assert_error(server.api(viewer).delete(url), 403, 22)
    assert_error(server.api(server.user_key("gitother")).get(url), 404, 4)
    assert_error(client.post(api(server, f"v1/content/{item['guid']}/repository/bundle"), json={"x": 1}), 400, 146)
    # posit-sdk reads the same object.
    from posit.connect import Client

    sdk = Client(url=server.url, api_key=pub)
    assert sdk.content.get(item["guid"]).repository == patched.json()
    assert client.delete(url).status_code == 204
    assert_error(client.get(url), 404, 4)
    assert sdk.content.get(item["guid"]).repository is None
    # posit-sdk's own calls: create, update (PATCH, read back), destroy.
    made = sdk.content.get(item["guid"]).create_repository(
        repository="https://example.org/team/app.git", branch="main", directory=".", polling=False
    )
    assert made["repository"] == "https://example.org/team/app.git" and made["last_known_commit"] == ""
    made.update(branch="release")
    assert made["branch"] == "release" and made["repository"] == "https://example.org/team/app.git"
    assert client.get(url).json()["branch"] == "release"
    made.destroy()
    assert sdk.content.get(item["guid"]).repository is None
    assert_error(client.post(api(server, f"v1/content/{item['guid']}/repository/bundle"), json={}), 400, 143)


def test_deploy_from_git_serves_the_commit_and_records_its_source(
    server: RunningServer, pub: str, git_root: tuple[GitHttpServer, Path]
) -> None:
    repo, url = new_repo(git_root)
    repo.commit({"README.md": "top level, not deployed"})
    first = repo.commit(static_site("<h1>version one</h1>", prefix="site/"))
    item = new_content(server, pub)
    guid = item["guid"]
    client = server.api(pub)
    put = client.put(api(server, f"v1/content/{guid}/repository"),
                     json={"repository": url, "branch": "main", "directory": "site", "polling": False})
    assert put.status_code == 200, put.text
    task = deploy_git(server, pub, guid)
    assert task["code"] == 0, task["all_output"]
    log = "\n".join(task["all_output"])
    assert f"Fetching 'main' from {url}" in log and f"Commit {first}" in log and "Activated bundle" in log
    assert page(server, pub, guid) == "<h1>version one</h1>"
    location = client.get(api(server, f"v1/content/{guid}/repository")).json()
    assert location["last_known_commit"] == first and location["last_error"] == ""
    assert location["last_fetched_time"].endswith("Z")
    bundles = client.get(api(server, f"v1/content/{guid}/bundles")).json()
    assert len(bundles) == 1 and bundles[0]["active"]
    meta = bundles[0]["metadata"]
    assert (meta["source"], meta["source_repo"], meta["source_branch"], meta["source_commit"]) == \
        ("git", url, "main", first)
    # The bundle is exactly the directory at that commit.
    download = client.get(api(server, f"v1/content/{guid}/bundles/{bundles[0]['id']}/download"))
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
        assert sorted(n.lstrip("./") for n in tar.getnames() if n.strip("./")) == ["index.html", "manifest.json"]
    # A draft deploy of a new commit builds it without activating it.
    second = repo.commit(static_site("<h1>version two</h1>", prefix="site/"))
    draft = deploy_git(server, pub, guid, activate=False)
    assert draft["code"] == 0, draft["all_output"]
    assert page(server, pub, guid) == "<h1>version one</h1>"
    assert "not activated" in "\n".join(draft["all_output"])
    # repository/bundle names a bundle made from any ref, here the first commit.
    made = client.post(api(server, f"v1/content/{guid}/repository/bundle"), json={"ref": first})
    assert made.status_code == 200, made.text
    assert made.json()["location"] == {"repository": url, "ref": first, "directory": "site", "commit": first}
    task_log = wait_task(server, pub, made.json()["task_id"])
    assert task_log["code"] == 0 and any(first in line for line in task_log["all_output"])
    # Another ref than the followed branch is not what the poller has seen.
    assert client.get(api(server, f"v1/content/{guid}/repository")).json()["last_known_commit"] == second
    history = client.get(api(server, f"v1/content/{guid}/bundles")).json()
    assert [b["metadata"]["source_commit"] for b in history] == [first, second, first]
    # A ref that does not exist: the answer and the task say so; no bundle is made.
    refused = assert_error(client.post(api(server, f"v1/content/{guid}/repository/bundle"),
                                       json={"ref": "no-such-ref"}), 400, 3)
    assert "no such branch, tag or commit" in refused["error"]
    assert len(client.get(api(server, f"v1/content/{guid}/bundles")).json()) == 3


def _fails_with(server: RunningServer, key: str, guid: str, expected: str) -> None:
    task = deploy_git(server, key, guid)
    assert task["code"] != 0
    assert expected in task["error"], task["all_output"]
    assert any(expected in line for line in task["all_output"])
    location = server.api(key).get(api(server, f"v1/content/{guid}/repository")).json()
    assert expected in location["last_error"], location


def test_deploy_from_git_bad_input_keeps_the_previous_bundle_serving(
    server: RunningServer, pub: str, git_root: tuple[GitHttpServer, Path]
) -> None:
    repo, url = new_repo(git_root)
    good = repo.commit(static_site("<h1>still serving</h1>"))
    guid = new_content(server, pub)["guid"]
    client = server.api(pub)
    where = api(server, f"v1/content/{guid}/repository")
    assert client.put(where, json={"repository": url, "polling": False}).status_code == 200
    assert deploy_git(server, pub, guid)["code"] == 0

    client.patch(where, json={"branch": "no-such-branch"})
    _fails_with(server, pub, guid, "no such branch, tag or commit")
    client.patch(where, json={"branch": "main", "directory": "missing/dir"})
    _fails_with(server, pub, guid, "The directory 'missing/dir' does not exist")
    repo.commit({"docs/notes.txt": "no manifest here"})
    client.patch(where, json={"directory": "docs"})
    _fails_with(server, pub, guid, "There is no manifest.json in directory 'docs'")
    # A symlink leaving the directory is refused by the bundle checks.
    repo.symlink("leak.txt", "../../../../etc/passwd")
    client.patch(where, json={"directory": "."})
    _fails_with(server, pub, guid, "The bundle was refused")
    repo.commit({"leak.txt": None})
    client.patch(where, json={"repository": f"http://127.0.0.1:{free_port()}/gone.git"})
    _fails_with(server, pub, guid, "cannot be reached")

    assert page(server, pub, guid) == "<h1>still serving</h1>"
    bundles = client.get(api(server, f"v1/content/{guid}/bundles")).json()
    assert [b["metadata"]["source_commit"] for b in bundles] == [good]
    leftovers = [p.name for p in (server.data_dir / "tmp").iterdir() if p.name.startswith("git-")]
    assert leftovers == []


def test_rsconnect_deploy_git_end_to_end_with_draft(
    server: RunningServer, pub: str, git_root: tuple[GitHttpServer, Path], tmp_path: Path
) -> None:
    from tests.test_clients import rsconnect

    repo, url = new_repo(git_root)
    commit = repo.commit(static_site("<h1>from rsconnect</h1>", prefix="report/"))
    home = tmp_path / "home"
    home.mkdir()
    assert rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", pub).returncode == 0
    done = rsconnect(home, "deploy", "git", "-n", "podium", "-r", url, "-b", "main", "-d", "report",
                     "--no-polling", "--title", "From git")
    assert done.returncode == 0, done.stdout + done.stderr
    assert commit in done.stdout + done.stderr
    items = [c for c in server.api(pub).get(api(server, "v1/content")).json() if c["title"] == "From git"]
    assert len(items) == 1
    guid = items[0]["guid"]
    assert page(server, pub, guid) == "<h1>from rsconnect</h1>"
    location = server.api(pub).get(api(server, f"v1/content/{guid}/repository")).json()
    assert location["directory"] == "report" and location["polling"] is False
    # --draft on the same content: a new bundle, not activated.
    repo.commit(static_site("<h1>draft</h1>", prefix="report/"))
    drafted = rsconnect(home, "deploy", "git", "-n", "podium", "--app-id", guid, "-r", url, "-d", "report",
                        "--no-polling", "--draft")
    assert drafted.returncode == 0, drafted.stdout + drafted.stderr
    assert page(server, pub, guid) == "<h1>from rsconnect</h1>"
    assert len(server.api(pub).get(api(server, f"v1/content/{guid}/bundles")).json()) == 2


def test_private_repository_uses_admin_credentials_never_shown(tmp_path: Path) -> None:
    root = tmp_path / "repos"
    root.mkdir()
    secret = "s3cret-token-for-git"
    served = GitHttpServer(root, auth=("deployer", secret))
    server = start_server(tmp_path / "data")
    try:
        repo = Repo(root, "private")
        repo.commit(static_site("<h1>private</h1>"))
        key = server.user_key("privpub")
        guid = new_content(server, key)["guid"]
        server.api(key).put(api(server, f"v1/content/{guid}/repository"),
                            json={"repository": served.url("private"), "polling": False})
        _fails_with(server, key, guid, "refused access")
        admin = server.api()
        assert_error(server.api(key).put(api(server, f"v1/git/credentials/127.0.0.1:{served.port}"),
                                         json={"username": "x", "password": "y"}), 403, 22)
        stored = admin.put(api(server, f"v1/git/credentials/127.0.0.1:{served.port}"),
                           json={"username": "deployer", "password": secret})
        assert stored.status_code == 200 and secret not in stored.text
        assert secret not in admin.get(api(server, "v1/git/credentials")).text
        task = deploy_git(server, key, guid)
        assert task["code"] == 0, task["all_output"]
        assert page(server, key, guid) == "<h1>private</h1>"
        assert secret not in json.dumps(task)
        assert secret not in server.log()
        db = b"".join(p.read_bytes() for p in (server.data_dir / "db").glob("podium.sqlite*"))
        assert secret.encode() not in db
        bundle = server.api(key).get(api(server, f"v1/content/{guid}/bundles")).json()[0]
        assert secret not in json.dumps(bundle)
    finally:
        server.stop()
        served.close()


def _wait_for(check: Any, seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("condition not met in time")


def test_polling_redeploys_new_commits_and_reports_failures(tmp_path: Path) -> None:
    root = tmp_path / "repos"
    root.mkdir()
    served = GitHttpServer(root)
    server = start_server(tmp_path / "data", {"PODIUM_GIT_POLLING_INTERVAL_SECONDS": "1"})
    try:
        repo = Repo(root, "polled")
        repo.commit(static_site("<h1>one</h1>"))
        key = server.user_key("pollpub")
        guid = new_content(server, key)["guid"]
        where = api(server, f"v1/content/{guid}/repository")
        server.api(key).put(where, json={"repository": served.url("polled"), "polling": True})
        _wait_for(lambda: page(server, key, guid) == "<h1>one</h1>")
        seen = server.api(key).get(where).json()["last_fetched_time"]
        second = repo.commit(static_site("<h1>two</h1>"))
        _wait_for(lambda: page(server, key, guid) == "<h1>two</h1>")
        assert server.api(key).get(where).json()["last_known_commit"] == second
        # Nothing changed: checks go on (last_fetched_time moves), no new bundle.
        _wait_for(lambda: server.api(key).get(where).json()["last_fetched_time"] != seen)
        count = len(server.api(key).get(api(server, f"v1/content/{guid}/bundles")).json())
        time.sleep(3)
        assert len(server.api(key).get(api(server, f"v1/content/{guid}/bundles")).json()) == count == 2
        # A broken commit: the error is shown, the last good commit keeps serving.
        repo.commit({"manifest.json": None}, "drop the manifest")
        _wait_for(lambda: "no manifest.json" in server.api(key).get(where).json()["last_error"])
        assert page(server, key, guid) == "<h1>two</h1>"
    finally:
        server.stop()
        served.close()


def test_push_webhook_checks_signatures_and_redeploys(
    server: RunningServer, pub: str, git_root: tuple[GitHttpServer, Path]
) -> None:
    repo, url = new_repo(git_root)
    repo.commit(static_site("<h1>before push</h1>"))
    guid = new_content(server, pub)["guid"]
    client = server.api(pub)
    client.put(api(server, f"v1/content/{guid}/repository"), json={"repository": url, "polling": False})
    assert deploy_git(server, pub, guid)["code"] == 0
    hook = client.post(api(server, f"v1/content/{guid}/repository/webhook")).json()
    assert hook["url"] == f"{server.url}/__api__/v1/git/webhooks/{guid}"
    assert "secret" not in client.get(api(server, f"v1/content/{guid}/repository/webhook")).json()
    secret = hook["secret"]
    repo.commit(static_site("<h1>after push</h1>"))
    payload = json.dumps({"ref": "refs/heads/main"}).encode()
    good = "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    # Wrong, missing or foreign signatures: 401 and nothing deployed.
    for headers in ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, {},
                    {"X-Gitlab-Token": "wrong"}, {"X-Gitea-Signature": "f" * 64}):
        assert_error(requests.post(hook["url"], data=payload, headers=headers), 401, 30)
    assert_error(requests.post(hook["url"], data=payload + b" ", headers={"X-Hub-Signature-256": good}), 401, 30)
    assert len(client.get(api(server, f"v1/content/{guid}/bundles")).json()) == 1
    # A push to another branch is acknowledged and ignored.
    other = json.dumps({"ref": "refs/heads/dev"}).encode()
    ignored = requests.post(hook["url"], data=other, headers={
        "X-Gitea-Signature": hmac.new(secret.encode(), other, hashlib.sha256).hexdigest()})
    assert ignored.status_code == 200 and ignored.json()["deployed"] is False
    pushed = requests.post(hook["url"], data=payload, headers={"X-Hub-Signature-256": good,
                                                                "X-GitHub-Event": "push"})
    assert pushed.status_code == 202, pushed.text
    task = wait_task(server, pub, pushed.json()["task_id"])
    assert task["code"] == 0, task["all_output"]
    assert page(server, pub, guid) == "<h1>after push</h1>"
    # GitLab sends the secret as a token.
    repo.commit(static_site("<h1>gitlab</h1>"))
    lab = requests.post(hook["url"], data=payload, headers={"X-Gitlab-Token": secret, "X-Gitlab-Event": "Push Hook"})
    assert lab.status_code == 202, lab.text
    assert wait_task(server, pub, lab.json()["task_id"])["code"] == 0
    assert page(server, pub, guid) == "<h1>gitlab</h1>"
    entries = server.api().get(api(server, "v1/audit_logs"), params={
        "limit": 500, "ascOrder": "false", "action": "deploy_content"}).json()["results"]
    pushes = [e for e in entries if e["user_description"] == "a git push webhook" and guid in e["event_description"]]
    assert len(pushes) == 2, pushes


def test_git_disabled_answers_404_code_145(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", {"PODIUM_GIT_ENABLED": "false"})
    try:
        key = server.user_key("nogit")
        guid = new_content(server, key)["guid"]
        where = api(server, f"v1/content/{guid}/repository")
        assert_error(server.api(key).put(where, json={"repository": "https://example.org/x.git"}), 404, 145)
        assert_error(server.api(key).get(where), 404, 145)
        assert_error(requests.post(api(server, f"v1/git/webhooks/{guid}"), data=b"{}"), 404, 145)
        # rsconnect says so in its own words.
        from tests.test_clients import rsconnect

        home = tmp_path / "home"
        home.mkdir()
        rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", key)
        refused = rsconnect(home, "deploy", "git", "-n", "podium", "-r", "https://example.org/x.git")
        assert refused.returncode != 0
        assert "not enabled" in (refused.stdout + refused.stderr).lower(), refused.stdout + refused.stderr
    finally:
        server.stop()


def _own_postgres_database(name: str) -> str:
    """A fresh database of its own on the test PostgreSQL server (so tests running beside
    this one on the shared ``test`` database disturb nothing), else the shared one, reset."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from tests.conftest import POSTGRES_URL, reset_postgres

    engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    except SQLAlchemyError:
        reset_postgres(POSTGRES_URL)
        return POSTGRES_URL
    finally:
        engine.dispose()


def _drop_postgres_database(name: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError
    from tests.conftest import POSTGRES_URL

    engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except SQLAlchemyError:
        pass
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_two_nodes_sharing_a_database_deploy_each_new_commit_once(tmp_path: Path) -> None:
    """Two servers on one PostgreSQL database, both polling every second: each new commit
    becomes exactly one bundle (one node holds the item's lease while it checks)."""
    from tests.conftest import require_postgres

    require_postgres()
    database = _own_postgres_database("podium_test_git_nodes")
    root = tmp_path / "repos"
    root.mkdir()
    served = GitHttpServer(root)
    env = {"PODIUM_DATABASE_URL": database, "PODIUM_GIT_POLLING_INTERVAL_SECONDS": "1"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_server(tmp_path / "a" / "data", env)
    try:
        second = start_server(tmp_path / "b" / "data", env, bootstrap=False)
    except BaseException:
        first.stop()
        served.close()
        raise
    try:
        repo = Repo(root, "shared")
        repo.commit(static_site("<h1>one</h1>"))
        key = first.user_key("twonodes")
        guid = new_content(first, key)["guid"]
        first.api(key).put(api(first, f"v1/content/{guid}/repository"),
                           json={"repository": served.url("shared"), "polling": True})

        def bundles() -> list[dict[str, Any]]:
            return list(first.api(key).get(api(first, f"v1/content/{guid}/bundles")).json())

        _wait_for(lambda: len(bundles()) == 1)
        repo.commit(static_site("<h1>two</h1>"))
        _wait_for(lambda: len(bundles()) == 2)
        time.sleep(5)  # several more polls on each node
        made = bundles()
        assert len(made) == 2, made
        assert len({b["metadata"]["source_commit"] for b in made}) == 2
        checks = [line for server in (first, second) for line in server.log().splitlines()
                  if "podium.git.publish" in line and "moved to" in line]
        assert len(checks) == 2, checks
    finally:
        second.stop()
        first.stop()
        served.close()
        _drop_postgres_database("podium_test_git_nodes")
