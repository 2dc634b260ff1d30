"""Publishing from git in a real browser (Playwright driving Debian's Chromium against a real
server and a repository served by ``git http-backend``); screenshots as in tests/test_dashboard.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import RunningServer
from tests.gitserver import GitHttpServer, Repo, static_site
from tests.test_dashboard import (  # noqa: F401 - fixtures
    api,
    browser,
    content_page,
    make_user,
    screenshots,
    server,
    shot,
    signed_in,
)

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the test extras install it
    pass


@pytest.fixture
def repos(tmp_path: Path) -> Iterator[tuple[GitHttpServer, Path]]:
    served = GitHttpServer(tmp_path)
    yield served, tmp_path
    served.close()


def test_dashboard_publish_from_git_repository_pane_and_update_now(
    server: RunningServer, signed_in, repos: tuple[GitHttpServer, Path]  # noqa: F811
) -> None:
    served, root = repos
    repo = Repo(root, "handbook")
    first = repo.commit(static_site("<h1>Handbook v1</h1>", prefix="site/"))
    make_user(server, "greta", "publisher")
    page = signed_in("greta")
    page.get_by_role("link", name="Publish", exact=True).first.click()
    page.get_by_role("link", name="Publish from Git").first.click()
    page.get_by_label("Name", exact=False).fill("handbook")
    page.get_by_label("Title").fill("Team handbook")
    page.get_by_label("Repository URL").fill(served.url("handbook"))
    page.get_by_label("Directory holding manifest.json").fill("site")
    page.get_by_label("Check for new commits").uncheck()
    page.get_by_role("button", name="Deploy from Git").click()
    expect(page.locator("#git-status")).to_contain_text("Deployed from Git.", timeout=60_000)
    expect(page.get_by_role("log")).to_contain_text(f"Commit {first}")
    shot(page, "publish-git")

    page.get_by_role("link", name="Open the content page").click()
    expect(page.locator("#repository-commit")).to_contain_text(first[:12])
    expect(page.locator("#repository-error")).to_contain_text("none")
    second = repo.commit(static_site("<h1>Handbook v2</h1>", prefix="site/"))
    page.get_by_role("button", name="Update now").click()
    expect(page.locator("#deploy-status")).to_contain_text("Deployed the newest commit.", timeout=60_000)
    page.wait_for_load_state()
    expect(page.locator("#repository-commit")).to_contain_text(second[:12], timeout=10_000)
    expect(page.frame_locator("iframe").get_by_role("heading")).to_have_text("Handbook v2", timeout=10_000)
    page.get_by_role("button", name="Make a secret").click()
    expect(page.locator("#webhook-secret-value")).not_to_be_empty()
    shot(page, "content-repository", full_page=True)

    # A missing directory: the error is shown on the pane, and the last good commit keeps serving.
    page.get_by_label("Directory").fill("nowhere")
    page.get_by_role("button", name="Save").click()
    page.wait_for_load_state()
    expect(page.locator("#repository-facts")).to_contain_text("nowhere", timeout=10_000)
    page.get_by_role("button", name="Update now").click()
    expect(page.locator("#deploy-status")).to_contain_text("The update failed", timeout=60_000)
    page.reload()
    expect(page.locator("#repository-error")).to_contain_text("does not exist")
    guid = page.url.split("/apps/")[1].split("/")[0]
    key = server.user_key("greta")
    assert server.api(key).get(f"{server.url}/content/{guid}/").text == "<h1>Handbook v2</h1>"

    page.goto(content_page(server, guid, "bundles"))
    expect(page.locator("table.bundles")).to_contain_text(second[:12])
    expect(page.locator("table.bundles")).to_contain_text(first[:12])


def test_dashboard_admin_git_credentials_never_shown(server: RunningServer, signed_in) -> None:  # noqa: F811
    make_user(server, "ada", "administrator")
    page = signed_in("ada")
    page.goto(f"{server.url}/connect/admin/git")
    page.get_by_label("Host").fill("git.example.org")
    page.get_by_label("User name").fill("deploy-bot")
    page.get_by_label("Password or token").fill("tok-never-shown-42")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#git-credentials")).to_contain_text("git.example.org")
    assert "tok-never-shown-42" not in page.content()
    shot(page, "admin-git")
    listed = server.api().get(api(server, "v1/git/credentials")).json()
    assert [(c["host"], c["username"]) for c in listed] == [("git.example.org", "deploy-bot")]
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete the credentials for git.example.org").click()
    expect(page.locator("#git-credentials")).to_have_count(0)
    # Publishers do not get the page.
    make_user(server, "pablo", "publisher")
    other = signed_in("pablo")
    response = other.goto(f"{server.url}/connect/admin/git")
    assert response is not None and response.status == 403
