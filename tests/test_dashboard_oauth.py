"""The viewer's OAuth sign-in pages in a real browser (Playwright driving Debian's
Chromium against a real server and a fake provider on loopback); screenshots as in
tests/test_dashboard.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.conftest import RunningServer
from tests.helpers import deploy
from tests.oauth_provider import CLIENT_ID, CLIENT_SECRET, Provider, running_provider
from tests.test_dashboard import (  # noqa: F401 - fixtures
    api,
    browser,
    make_user,
    screenshots,
    server,
    shot,
    signed_in,
)
from tests.test_oauth_flow import _bundle

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the test extras install it
    pass

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with running_provider() as running:
        running.consent = True
        yield running


def test_dashboard_oauth_sign_in_through_the_provider_and_disconnect(
    server: RunningServer, signed_in, provider: Provider  # noqa: F811
) -> None:
    publisher = make_user(server, "olga", "publisher")
    make_user(server, "oscar", "viewer")
    oscar = server.api().get(api(server, "v1/users"), params={"prefix": "oscar"}).json()["results"][0]
    # The administrator creates the integration on Admin -> OAuth integrations.
    make_user(server, "omar", "administrator")
    admin = signed_in("omar")
    admin.goto(f"{server.url}/connect/admin/oauth")
    form = admin.get_by_role("form", name="Create an integration")
    form.get_by_label("Name").fill("Acme GitHub")
    form.get_by_label("Template").select_option(label="GitHub")
    form.get_by_label("Client ID").fill(CLIENT_ID)
    form.get_by_label("Client secret").fill(CLIENT_SECRET)
    form.get_by_label("GitHub Enterprise Server URL").fill("http://github.example.org")
    form.get_by_role("button", name="Create integration").click()
    expect(form.get_by_role("alert")).to_contain_text("base_url must use https")
    form.get_by_label("GitHub Enterprise Server URL").fill(provider.url)
    form.get_by_role("button", name="Create integration").click()
    expect(admin.locator("tr[data-integration='Acme GitHub']")).to_contain_text("secret set")
    integration = server.api().get(api(server, "v1/oauth/integrations")).json()[-1]
    assert integration["name"] == "Acme GitHub" and integration["config"]["base_url"] == provider.url
    item = server.api(publisher).post(api(server, "v1/content"), json={"name": "oauth-browser"}).json()
    shared = server.api(publisher).post(api(server, f"v1/content/{item['guid']}/permissions"), json={
        "principal_guid": oscar["guid"], "principal_type": "user", "role": "viewer"})
    assert shared.status_code == 200, shared.text
    _, task = deploy(server, publisher, item["guid"], _bundle())
    assert task["code"] == 0, task["all_output"][-20:]
    associated = server.api(publisher).put(api(server, f"v1/content/{item['guid']}/oauth/integrations/associations"),
                                           json=[{"oauth_integration_guid": integration["guid"]}])
    assert associated.status_code == 204, associated.text

    page = signed_in("oscar")
    pane = f"{server.url}/__oauth__/content/{item['guid']}"
    page.goto(pane)
    expect(page.get_by_role("heading", name="OAuth sign-ins for oauth-browser")).to_be_visible()
    expect(page.get_by_role("listitem")).to_contain_text("Acme GitHub (not connected)")
    shot(page, "oauth-signins")
    page.get_by_role("link", name="Sign in to Acme GitHub").click()
    # The provider's own page, at GitHub's authorize path on the configured host.
    expect(page.get_by_role("heading", name="Authorize Podium?")).to_be_visible()
    assert page.url.startswith(f"{provider.url}/login/oauth/authorize?")
    page.get_by_role("button", name="Authorize").click()
    # Back through the callback to the content, which trades its session token for the
    # viewer's access token through posit-sdk.
    page.wait_for_url(f"{server.content_url}/content/{item['guid']}/**")
    expect(page.locator("body")).to_contain_text(provider.issued[-2])
    assert provider.calls[-1] == ("github", "authorization_code")

    page.goto(pane)
    expect(page.get_by_role("listitem")).to_contain_text("Acme GitHub (connected)")
    shot(page, "oauth-signins-connected")
    page.get_by_role("button", name="Disconnect").click()
    expect(page.get_by_role("listitem")).to_contain_text("Acme GitHub (not connected)")
    expect(page.get_by_role("link", name="Sign in to Acme GitHub")).to_be_visible()
    page.get_by_role("link", name="Open the content").click()
    expect(page.locator("body")).to_contain_text("has not signed in with the OAuth integration 'Acme GitHub'")
