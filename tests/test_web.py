"""Dashboard pages over plain HTTP: who may see which page, and errors as pages.

The browser tests (test_dashboard.py) drive the pages; these check the
server's answers directly, fast, with API keys (pages accept them as the API does).
"""

from __future__ import annotations

import pytest
import requests
from tests.conftest import RunningServer
from tests.helpers import deploy, static_bundle

pytestmark = pytest.mark.integration


def _content(server: RunningServer, key: str, name: str, **fields: object) -> str:
    made = server.api(key).post(f"{server.url}/__api__/v1/content", json={"name": name, **fields})
    assert made.status_code == 200, made.text
    return str(made.json()["guid"])


def test_web_pages_send_anonymous_visitors_to_sign_in(server: RunningServer) -> None:
    anonymous = requests.Session()
    answer = anonymous.get(f"{server.url}/connect/profile", allow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/__login__?next=/connect/profile"
    home = anonymous.get(f"{server.url}/", allow_redirects=False)
    assert home.headers["location"] == "/connect/"
    # /connect/ itself answers a page whose script keeps the #/apps/... fragment.
    page = anonymous.get(f"{server.url}/connect/")
    assert page.status_code == 200
    assert "connect-route.js" in page.text and "connect-signin.js" in page.text


def test_web_panes_follow_the_apis_permissions(server: RunningServer) -> None:
    publisher = server.user_key("web_pub", "publisher")
    viewer = server.user_key("web_viewer", "viewer")
    shared = _content(server, publisher, "web-shared", access_type="logged_in")
    deploy(server, publisher, shared, static_bundle())
    private = _content(server, publisher, "web-private")

    as_viewer = server.api(viewer)
    info = as_viewer.get(f"{server.url}/connect/apps/{shared}")
    assert info.status_code == 200 and "text/html" in info.headers["content-type"]
    assert info.headers["cache-control"] == "no-store"
    assert f"/connect/apps/{shared}/runtime" not in info.text  # no settings panes for a viewer
    runtime = as_viewer.get(f"{server.url}/connect/apps/{shared}/runtime")
    assert runtime.status_code == 403
    assert "Only the owner, collaborators and administrators" in runtime.text
    hidden = as_viewer.get(f"{server.url}/connect/apps/{private}")
    assert hidden.status_code == 404 and "does not exist" in hidden.text
    listing = as_viewer.get(f"{server.url}/connect/")
    assert shared in listing.text and private not in listing.text

    as_publisher = server.api(publisher)
    assert as_publisher.get(f"{server.url}/connect/apps/{private}/variables").status_code == 200
    assert as_publisher.get(f"{server.url}/connect/apps/{private}/nonsense").status_code == 404
    assert as_publisher.get(f"{server.url}/connect/admin/users").status_code == 403
    assert as_viewer.get(f"{server.url}/connect/publish").status_code == 403
    assert server.api().get(f"{server.url}/connect/admin/processes").status_code == 200


def test_web_variable_values_never_reach_a_page(server: RunningServer) -> None:
    publisher = server.user_key("web_pub", "publisher")
    guid = _content(server, publisher, "web-vars")
    client = server.api(publisher)
    patched = client.patch(
        f"{server.url}/__api__/v1/content/{guid}/environment",
        json=[{"name": "TOKEN", "value": "very-secret-value"}],
    )
    assert patched.status_code == 200, patched.text
    page = client.get(f"{server.url}/connect/apps/{guid}/variables")
    assert "TOKEN" in page.text and "very-secret-value" not in page.text


def test_web_pages_stay_out_of_the_api_schema(server: RunningServer) -> None:
    paths = requests.get(f"{server.url}/__api__/openapi.json", timeout=10).json()["paths"]
    assert not [p for p in paths if p.startswith(("/connect", "/__login__", "/__static__"))]


def test_web_static_files_are_served(server: RunningServer) -> None:
    css = requests.get(f"{server.url}/__static__/podium.css", timeout=10)
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert requests.get(f"{server.url}/__static__/nope.js", timeout=10).status_code == 404


def test_web_pages_cannot_be_framed_but_content_can(server: RunningServer) -> None:
    key = server.user_key("web_framer", "publisher")
    for path in ("/connect/", "/__login__", "/connect/profile"):
        page = server.api(key).get(f"{server.url}{path}")
        assert page.status_code == 200, path
        assert page.headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"], path
        assert page.headers["x-content-type-options"] == "nosniff"
    guid = _content(server, key, "frameable", access_type="all")
    _, task = deploy(server, key, guid, static_bundle({"index.html": "<p>embed me</p>"}))
    assert task["code"] == 0, task
    served = requests.get(f"{server.url}/content/{guid}/")
    assert served.status_code == 200 and "embed me" in served.text
    assert "x-frame-options" not in served.headers
