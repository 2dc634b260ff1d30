"""Content resource settings and service accounts: the rules, the API, live enforcement."""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from tests.conftest import RunningServer, start_server
from tests.helpers import deploy, fastapi_bundle

from podium.resources import (
    ResourceError,
    ResourcePolicy,
    check_resource_patch,
    check_service_account,
    for_content,
    resolve_resources,
    resolve_service_account,
)
from podium.runtime import Resources
from podium.settings import SettingsError, load_settings

MiB, GiB = 1024**2, 1024**3
OPEN = ResourcePolicy()  # the defaults: no requests, no limits, no maxima, 0 allowed
BOUNDED = ResourcePolicy(
    memory_limit=GiB, max_memory_request=GiB, max_memory_limit=2 * GiB,
    cpu_limit=1.0, max_cpu_request=1.0, max_cpu_limit=2.0,
)
STRICT = ResourcePolicy(memory_limit=GiB, cpu_limit=1.0, allow_unlimited=False)
DEFAULT_REQUESTS = ResourcePolicy(memory_request=512 * MiB, cpu_request=0.5)
MAX_ONLY = ResourcePolicy(max_memory_limit=2 * GiB, max_cpu_limit=2.0)


# --- validation on write: every rule and code ------------------------------------------

PATCH_CASES: list[tuple[str, ResourcePolicy, dict[str, Any], dict[str, Any], int | dict[str, Any]]] = [
    # id, policy, stored values, body, expected code or changes
    ("mem-request-ok", OPEN, {}, {"memory_request": 256 * MiB}, {"memory_request": 256 * MiB}),
    ("mem-request-null", OPEN, {"memory_request": 5}, {"memory_request": None}, {"memory_request": None}),
    ("mem-request-zero", BOUNDED, {}, {"memory_request": 0}, {"memory_request": 0}),
    ("mem-request-whole-float", OPEN, {}, {"memory_request": 1024.0}, {"memory_request": 1024}),
    ("mem-request-string", OPEN, {}, {"memory_request": "1G"}, 181),
    ("mem-request-bool", OPEN, {}, {"memory_request": True}, 181),
    ("mem-request-negative", OPEN, {}, {"memory_request": -1}, 181),
    ("mem-request-fraction", OPEN, {}, {"memory_request": 1.5}, 181),
    ("mem-request-above-2^53", OPEN, {}, {"memory_request": 2**53 + 1}, 181),
    ("mem-limit-string", OPEN, {}, {"memory_limit": "lots"}, 182),
    ("mem-limit-negative", OPEN, {}, {"memory_limit": -5}, 182),
    ("mem-limit-above-2^53", OPEN, {}, {"memory_limit": 2**53 + 1}, 182),
    ("mem-limit-2^53", OPEN, {}, {"memory_limit": 2**53}, {"memory_limit": 2**53}),
    ("mem-limit-zero-forbidden", STRICT, {}, {"memory_limit": 0}, 182),
    ("mem-limit-zero-allowed", OPEN, {}, {"memory_limit": 0}, {"memory_limit": 0}),
    ("mem-request-above-max", BOUNDED, {}, {"memory_request": GiB + 1}, 183),
    ("mem-request-at-max", BOUNDED, {}, {"memory_request": GiB}, {"memory_request": GiB}),
    ("mem-limit-above-max", BOUNDED, {}, {"memory_limit": 3 * GiB}, 184),
    ("mem-limit-zero-with-max", BOUNDED, {}, {"memory_limit": 0}, 184),
    ("mem-limit-at-max", BOUNDED, {}, {"memory_limit": 2 * GiB}, {"memory_limit": 2 * GiB}),
    ("mem-request-over-limit", OPEN, {}, {"memory_request": 2 * GiB, "memory_limit": GiB}, 185),
    ("mem-request-over-stored-limit", OPEN, {"memory_limit": GiB}, {"memory_request": 2 * GiB}, 185),
    ("mem-limit-under-stored-request", OPEN, {"memory_request": GiB}, {"memory_limit": MiB}, 185),
    ("mem-request-at-default-limit", BOUNDED, {}, {"memory_request": GiB}, {"memory_request": GiB}),
    ("mem-request-over-default-limit-2", STRICT, {}, {"memory_request": 2 * GiB}, 185),
    ("mem-default-request-over-limit", DEFAULT_REQUESTS, {}, {"memory_limit": 256 * MiB}, 185),
    ("mem-request-over-max-as-default-limit", MAX_ONLY, {}, {"memory_request": 3 * GiB}, 185),
    ("mem-request-with-no-limit", OPEN, {"memory_limit": 0}, {"memory_request": 8 * GiB}, {"memory_request": 8 * GiB}),
    ("cpu-ok", OPEN, {}, {"cpu_request": 0.25, "cpu_limit": 0.5}, {"cpu_request": 0.25, "cpu_limit": 0.5}),
    ("cpu-int-is-float", OPEN, {}, {"cpu_request": 1}, {"cpu_request": 1.0}),
    ("cpu-request-zero", BOUNDED, {}, {"cpu_request": 0}, {"cpu_request": 0.0}),
    ("cpu-request-string", OPEN, {}, {"cpu_request": "1"}, 186),
    ("cpu-request-bool", OPEN, {}, {"cpu_request": True}, 186),
    ("cpu-request-negative", OPEN, {}, {"cpu_request": -0.5}, 186),
    ("cpu-request-nan", OPEN, {}, {"cpu_request": math.nan}, 186),
    ("cpu-request-inf", OPEN, {}, {"cpu_request": math.inf}, 186),
    ("cpu-request-huge", OPEN, {}, {"cpu_request": 2e6}, 186),
    ("cpu-limit-negative", OPEN, {}, {"cpu_limit": -1}, 187),
    ("cpu-limit-list", OPEN, {}, {"cpu_limit": [1]}, 187),
    ("cpu-limit-zero-forbidden", STRICT, {}, {"cpu_limit": 0}, 187),
    ("cpu-request-above-max", BOUNDED, {}, {"cpu_request": 1.5}, 188),
    ("cpu-limit-above-max", BOUNDED, {}, {"cpu_limit": 3}, 189),
    ("cpu-limit-zero-with-max", BOUNDED, {}, {"cpu_limit": 0}, 189),
    ("cpu-request-over-limit", OPEN, {}, {"cpu_request": 1, "cpu_limit": 0.5}, 190),
    ("cpu-request-over-default-limit", STRICT, {}, {"cpu_request": 1.5}, 190),
    ("cpu-default-request-over-limit", DEFAULT_REQUESTS, {}, {"cpu_limit": 0.25}, 190),
    ("untouched-kinds-not-rechecked", BOUNDED, {"memory_limit": 99 * GiB}, {"cpu_limit": 1.5}, {"cpu_limit": 1.5}),
    ("no-resource-fields", BOUNDED, {"memory_limit": 99 * GiB}, {"title": "x"}, {}),
]


@pytest.mark.parametrize(
    ("policy", "stored", "body", "expected"), [c[1:] for c in PATCH_CASES], ids=[c[0] for c in PATCH_CASES]
)
def test_resources_patch_rules(
    policy: ResourcePolicy, stored: dict[str, Any], body: dict[str, Any], expected: int | dict[str, Any]
) -> None:
    if isinstance(expected, int):
        with pytest.raises(ResourceError) as caught:
            check_resource_patch(body, stored, policy)
        assert (caught.value.code, caught.value.status) == (expected, 400)
        assert caught.value.field in body or caught.value.field.endswith("_request")
    else:
        changes = check_resource_patch(body, stored, policy)
        assert changes == expected
        assert all(type(v) is type(expected[k]) for k, v in changes.items())


def test_resources_codes_cover_181_to_190() -> None:
    assert {c[4] for c in PATCH_CASES if isinstance(c[4], int)} == set(range(181, 191))


@pytest.mark.parametrize(
    ("policy", "body", "needles"),
    [
        (BOUNDED, {"memory_limit": 3 * GiB}, ["memory_limit", "3 GiB", "2 GiB", "max_memory_limit_bytes", "Scheduler.MaxMemoryLimit"]),
        (BOUNDED, {"memory_request": 2 * GiB}, ["memory_request", "max_memory_request_bytes", "Scheduler.MaxMemoryRequest"]),
        (BOUNDED, {"cpu_limit": 3}, ["cpu_limit", "3 cores", "2 cores", "max_cpu_limit_cores", "Scheduler.MaxCPULimit"]),
        (BOUNDED, {"cpu_request": 1.5}, ["cpu_request", "1.5 cores", "max_cpu_request_cores"]),
        (STRICT, {"memory_limit": 0}, ["memory_limit", "allow_unlimited_resources"]),
        (BOUNDED, {"cpu_limit": 0}, ["cpu_limit", "no limit", "max_cpu_limit_cores"]),
        (OPEN, {"memory_request": -1}, ["memory_request", "from 0 to"]),
        (STRICT, {"memory_request": 2 * GiB}, ["memory_request", "memory_limit", "1 GiB", "server default", "memory_limit_bytes"]),
        (MAX_ONLY, {"cpu_request": 3}, ["cpu_request", "cpu_limit", "max_cpu_limit_cores"]),
    ],
)
def test_resources_messages_name_field_bound_and_setting(
    policy: ResourcePolicy, body: dict[str, Any], needles: list[str]
) -> None:
    with pytest.raises(ResourceError) as caught:
        check_resource_patch(body, {}, policy)
    for needle in needles:
        assert needle in caught.value.message, (needle, caught.value.message)


# --- resolution: defaults, maxima, and clamping at launch ---------------------------------

RESOLVE_CASES: list[tuple[str, ResourcePolicy, dict[str, Any], Resources, list[str]]] = [
    # id, policy, stored content values, effective resources, warning needles (one per warning)
    ("nothing-anywhere", OPEN, {}, Resources(), []),
    ("server-defaults", ResourcePolicy(memory_request=256 * MiB, memory_limit=GiB, cpu_request=0.5, cpu_limit=1.0),
     {}, Resources(0.5, 1.0, 256 * MiB, GiB), []),
    ("content-overrides-defaults", STRICT, {"memory_limit": 512 * MiB, "cpu_limit": 0.5},
     Resources(None, 0.5, None, 512 * MiB), []),
    ("content-requests", OPEN, {"memory_request": MiB, "cpu_request": 0.1}, Resources(0.1, None, MiB, None), []),
    ("content-no-limit", ResourcePolicy(memory_limit=GiB), {"memory_limit": 0}, Resources(), []),
    ("unset-default-limit-is-the-max", MAX_ONLY, {}, Resources(None, 2.0, None, 2 * GiB), []),
    ("within-maxima", BOUNDED, {"memory_limit": 2 * GiB, "cpu_limit": 2, "memory_request": GiB, "cpu_request": 1},
     Resources(1.0, 2.0, GiB, 2 * GiB), []),
    ("lowered-max-clamps-limit", BOUNDED, {"memory_limit": 4 * GiB, "cpu_limit": 8},
     Resources(None, 2.0, None, 2 * GiB), ["max_memory_limit_bytes", "max_cpu_limit_cores"]),
    ("no-limit-under-a-max", BOUNDED, {"memory_limit": 0}, Resources(None, 1.0, None, 2 * GiB),
     ["memory_limit 0 (none) exceeds the maximum"]),
    ("no-limit-no-longer-allowed", STRICT, {"memory_limit": 0, "cpu_limit": 0}, Resources(None, 1.0, None, GiB),
     ["allow_unlimited_resources", "allow_unlimited_resources"]),
    ("request-above-max", BOUNDED, {"memory_request": 2 * GiB, "cpu_request": 2}, Resources(1.0, 1.0, GiB, GiB),
     ["max_memory_request_bytes", "max_cpu_request_cores"]),
    ("request-above-limit", ResourcePolicy(memory_limit=GiB), {"memory_request": 2 * GiB},
     Resources(None, None, GiB, GiB), ["exceeds the effective memory_limit"]),
    ("raised-default-request-over-content-limit", DEFAULT_REQUESTS, {"cpu_limit": 0.25},
     Resources(0.25, 0.25, 512 * MiB, None), ["exceeds the effective cpu_limit"]),
    ("invalid-stored-value", STRICT, {"memory_limit": -3, "cpu_request": "x"}, Resources(None, 1.0, None, GiB),
     ["memory_limit -3 is not valid", "cpu_request 'x' is not valid"]),
]


@pytest.mark.parametrize(
    ("policy", "values", "expected", "needles"), [c[1:] for c in RESOLVE_CASES], ids=[c[0] for c in RESOLVE_CASES]
)
def test_resources_resolution_table(
    policy: ResourcePolicy, values: dict[str, Any], expected: Resources, needles: list[str]
) -> None:
    resolved = resolve_resources(values, policy)
    assert resolved.resources == expected
    assert len(resolved.warnings) == len(needles), resolved.warnings
    for needle, warning in zip(sorted(needles), sorted(resolved.warnings), strict=True):
        assert needle in warning, (needle, warning)


def test_resources_valid_content_resolves_without_warnings() -> None:
    # Whatever passes validation on write resolves to itself at launch (until settings change).
    for case in PATCH_CASES:
        policy, stored, body, expected = case[1:]
        if isinstance(expected, dict) and expected:
            values = {**stored, **expected}
            touched = {f.split("_")[0] for f in expected}
            resolved = resolve_resources(values, policy)
            assert not [w for w in resolved.warnings if w.split("_")[0] in touched], (case[0], resolved.warnings)


def test_resources_for_content_revalidates_against_current_settings(tmp_path: Path) -> None:
    content = SimpleNamespace(cpu_request=None, cpu_limit=0.5, memory_request=None, memory_limit=GiB,
                              service_account_name="reports")
    before = for_content(content, load_settings(None, data_dir=tmp_path).job_policy)
    assert (before.resources, before.service_account, before.warnings) == (
        Resources(cpu_limit=0.5, memory_limit=GiB), "reports", ())
    # The administrator lowers the maxima and turns service account selection off.
    lowered = load_settings(None, data_dir=tmp_path, max_cpu_limit_cores=0.25, max_memory_limit_bytes=256 * MiB,
                            content_service_account_selection=False, default_service_account="podium-jobs")
    after = for_content(content, lowered.job_policy)
    assert after.resources == Resources(cpu_limit=0.25, memory_limit=256 * MiB)
    assert after.service_account == "podium-jobs"
    assert len(after.warnings) == 3 and "'reports' is ignored" in after.warnings[2]


# --- service accounts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "enabled", "expected"),
    [
        (None, True, None),
        ("", True, None),
        ("sa-1", True, "sa-1"),
        ("reports.team-a", True, "reports.team-a"),
        ("a" * 253, True, "a" * 253),
        ("a" * 254, True, 176),
        ("Bad_SA", True, 176),
        ("UPPER", True, 176),
        ("-leading", True, 176),
        ("trailing-", True, 176),
        ("double..dot", True, 176),
        ("has space", True, 176),
        (5, True, 176),
        ("sa-1", False, 195),
        ("Bad_SA", False, 195),
        (None, False, None),
        ("", False, None),
    ],
)
def test_service_account_check(name: Any, enabled: bool, expected: str | int | None) -> None:
    if isinstance(expected, int):
        with pytest.raises(ResourceError) as caught:
            check_service_account(name, enabled)
        assert caught.value.code == expected and caught.value.field == "service_account_name"
        if expected == 195:
            assert "Service accounts cannot be set on content" in caught.value.message
    else:
        assert check_service_account(name, enabled) == expected


@pytest.mark.parametrize(
    ("name", "default", "enabled", "expected", "warned"),
    [
        (None, "", True, None, False),
        (None, "podium-jobs", True, "podium-jobs", False),
        ("reports", "podium-jobs", True, "reports", False),
        ("reports", "", True, "reports", False),
        ("reports", "podium-jobs", False, "podium-jobs", True),
        ("reports", "", False, None, True),
    ],
)
def test_service_account_resolution(
    name: str | None, default: str, enabled: bool, expected: str | None, warned: bool
) -> None:
    effective, warnings = resolve_service_account(name, default, enabled)
    assert effective == expected and bool(warnings) == warned


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "needles"),
    [
        ({"memory_limit_bytes": 4 * GiB, "max_memory_limit_bytes": 2 * GiB}, ["memory_limit_bytes", "max_memory_limit_bytes"]),
        ({"memory_request_bytes": 2 * GiB, "max_memory_request_bytes": GiB}, ["memory_request_bytes", "max_memory_request_bytes"]),
        ({"memory_request_bytes": 2 * GiB, "memory_limit_bytes": GiB}, ["memory_request_bytes", "default limit"]),
        ({"memory_request_bytes": 3 * GiB, "max_memory_limit_bytes": 2 * GiB}, ["memory_request_bytes", "max_memory_limit_bytes"]),
        ({"cpu_limit_cores": 4, "max_cpu_limit_cores": 2}, ["cpu_limit_cores", "max_cpu_limit_cores"]),
        ({"cpu_request_cores": 2, "max_cpu_request_cores": 1}, ["cpu_request_cores", "max_cpu_request_cores"]),
        ({"cpu_request_cores": 2, "cpu_limit_cores": 1}, ["cpu_request_cores", "cpu_limit_cores"]),
        ({"cpu_limit_cores": -1}, ["cpu_limit_cores"]),
        ({"default_service_account": "Not_Valid"}, ["default_service_account", "DNS-1123"]),
    ],
)
def test_resources_settings_must_agree(tmp_path: Path, values: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, data_dir=tmp_path, **values)
    for needle in needles:
        assert needle in str(caught.value), (needle, str(caught.value))


def test_resources_settings_file_and_policy(tmp_path: Path) -> None:
    config = tmp_path / "podium.toml"
    config.write_text(
        "[scheduler]\nmemory_limit_bytes = 1073741824\nmax_memory_limit_bytes = 2147483648\n"
        "cpu_limit_cores = 0.5\nallow_unlimited_resources = false\n"
        '[kubernetes]\ndefault_service_account = "podium-jobs"\ncontent_service_account_selection = false\n'
    )
    settings = load_settings(config)
    assert settings.resource_policy == ResourcePolicy(
        memory_limit=GiB, max_memory_limit=2 * GiB, cpu_limit=0.5, allow_unlimited=False
    )
    assert (settings.default_service_account, settings.content_service_account_selection) == ("podium-jobs", False)


# --- API: roles, codes, visibility -------------------------------------------------------------


def api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


def assert_error(response: requests.Response, status: int, code: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["payload"] is None, body
    return str(body["error"])


def user_guid(server: RunningServer, key: str) -> str:
    return str(server.api(key).get(api(server, "v1/user")).json()["guid"])


@pytest.fixture(scope="module")
def people(server: RunningServer) -> dict[str, str]:
    """API keys: owner, editor (collaborator), viewer (acl), outsider publisher, admin."""
    return {
        "owner": server.user_key("res_owner", "publisher"),
        "editor": server.user_key("res_editor", "publisher"),
        "viewer": server.user_key("res_viewer", "viewer"),
        "outsider": server.user_key("res_outsider", "publisher"),
        "admin": server.admin_key,
    }


@pytest.fixture
def shared_item(server: RunningServer, people: dict[str, str]) -> str:
    """acl content owned by 'owner', with 'editor' as collaborator and 'viewer' as viewer."""
    import uuid

    owner = server.api(people["owner"])
    made = owner.post(api(server, "v1/content"), json={"name": f"res-{uuid.uuid4().hex[:8]}"})
    assert made.status_code == 200, made.text
    guid = str(made.json()["guid"])
    for who, role in (("editor", "owner"), ("viewer", "viewer")):
        granted = owner.post(
            api(server, f"v1/content/{guid}/permissions"),
            json={"principal_guid": user_guid(server, people[who]), "principal_type": "user", "role": role},
        )
        assert granted.status_code == 200, granted.text
    return guid


RESOURCE_BODY = {"cpu_request": 0.25, "cpu_limit": 0.5, "memory_request": 64 * MiB, "memory_limit": 256 * MiB}


@pytest.mark.parametrize(
    ("who", "status"),
    [("owner", 200), ("editor", 200), ("admin", 200), ("viewer", 403), ("outsider", 404)],
)
def test_resources_api_write_roles(
    server: RunningServer, people: dict[str, str], shared_item: str, who: str, status: int
) -> None:
    url = api(server, f"v1/content/{shared_item}")
    for field, value in RESOURCE_BODY.items():
        answer = server.api(people[who]).patch(url, json={field: value})
        if status == 200:
            assert answer.status_code == 200 and answer.json()[field] == value, answer.text
        else:
            assert_error(answer, status, 22 if status == 403 else 4)
    if status == 200:  # null goes back to the server default
        cleared = server.api(people[who]).patch(url, json=dict.fromkeys(RESOURCE_BODY)).json()
        assert all(cleared[f] is None for f in RESOURCE_BODY)


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [("owner", 403, 22), ("editor", 403, 22), ("viewer", 403, 22), ("outsider", 404, 4), ("admin", 200, 0)],
)
def test_service_account_api_write_roles(
    server: RunningServer, people: dict[str, str], shared_item: str, who: str, status: int, code: int
) -> None:
    url = api(server, f"v1/content/{shared_item}")
    answer = server.api(people[who]).patch(url, json={"service_account_name": "reports"})
    if status == 200:
        assert answer.json()["service_account_name"] == "reports"
        # Clearing and changing it are administrator-only too.
        for attempt in (None, "other"):
            assert_error(server.api(people["owner"]).patch(url, json={"service_account_name": attempt}), 403, 22)
        # Sending the unchanged value along with other fields is fine for the owner.
        same = server.api(people["owner"]).patch(url, json={"service_account_name": "reports", "title": "Same SA"})
        assert same.status_code == 200, same.text
        assert server.api(people["admin"]).patch(url, json={"service_account_name": ""}).json()["service_account_name"] is None
    else:
        assert_error(answer, status, code)


@pytest.mark.parametrize("who", ["owner", "editor", "viewer", "admin"])
def test_resources_api_readable_by_everyone_who_sees_the_content(
    server: RunningServer, people: dict[str, str], shared_item: str, who: str
) -> None:
    server.api(people["admin"]).patch(
        api(server, f"v1/content/{shared_item}"), json={**RESOURCE_BODY, "service_account_name": "reports"}
    )
    seen = server.api(people[who]).get(api(server, f"v1/content/{shared_item}")).json()
    assert {f: seen[f] for f in RESOURCE_BODY} == RESOURCE_BODY
    assert seen["service_account_name"] == "reports"
    listed = server.api(people[who]).get(api(server, "v1/content")).json()
    assert next(c for c in listed if c["guid"] == shared_item)["memory_limit"] == 256 * MiB
    assert_error(server.api(people["outsider"]).get(api(server, f"v1/content/{shared_item}")), 404, 4)


def test_resources_api_error_codes_on_an_open_server(
    server: RunningServer, people: dict[str, str], shared_item: str
) -> None:
    url = api(server, f"v1/content/{shared_item}")
    owner = server.api(people["owner"])
    for body, code in (
        ({"memory_request": -1}, 181), ({"memory_limit": "1G"}, 182), ({"memory_request": 2 * GiB, "memory_limit": GiB}, 185),
        ({"cpu_request": -1}, 186), ({"cpu_limit": "x"}, 187), ({"cpu_request": 2, "cpu_limit": 1}, 190),
    ):
        assert_error(owner.patch(url, json=body), 400, code)
    # No maxima and "no limit" allowed by default.
    assert owner.patch(url, json={"memory_limit": 0, "cpu_limit": 0}).json()["memory_limit"] == 0
    assert_error(server.api().patch(url, json={"service_account_name": "Bad_SA"}), 400, 176)
    # The same rules guard creation.
    assert_error(owner.post(api(server, "v1/content"), json={"name": "res-bad-create", "cpu_limit": -2}), 400, 187)
    settings = requests.get(api(server, "server_settings")).json()
    assert (settings["content_service_account_selection"], settings["service_accounts_effective"]) == (True, False)


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server with maxima, no "no limit", and service account selection off."""
    env = {
        "PODIUM_MEMORY_LIMIT_BYTES": str(GiB), "PODIUM_MAX_MEMORY_REQUEST_BYTES": str(GiB),
        "PODIUM_MAX_MEMORY_LIMIT_BYTES": str(2 * GiB), "PODIUM_CPU_LIMIT_CORES": "1",
        "PODIUM_MAX_CPU_REQUEST_CORES": "1", "PODIUM_MAX_CPU_LIMIT_CORES": "2",
        "PODIUM_ALLOW_UNLIMITED_RESOURCES": "false", "PODIUM_CONTENT_SERVICE_ACCOUNT_SELECTION": "false",
        "PODIUM_DEFAULT_SERVICE_ACCOUNT": "podium-jobs",
    }
    running = start_server(tmp_path_factory.mktemp("bounded") / "data", env)
    yield running
    running.stop()


def test_resources_api_error_codes_against_server_maxima(bounded_server: RunningServer) -> None:
    server = bounded_server
    owner = server.api(server.user_key("bounded_owner", "publisher"))
    guid = owner.post(api(server, "v1/content"), json={"name": "bounded"}).json()["guid"]
    url = api(server, f"v1/content/{guid}")
    for body, code, setting in (
        ({"memory_limit": 0}, 182, "allow_unlimited_resources"),
        ({"memory_request": 2 * GiB}, 183, "max_memory_request_bytes"),
        ({"memory_limit": 3 * GiB}, 184, "max_memory_limit_bytes"),
        ({"memory_request": GiB, "memory_limit": 512 * MiB}, 185, "memory_limit"),
        ({"cpu_limit": 0}, 187, "allow_unlimited_resources"),
        ({"cpu_request": 1.5}, 188, "max_cpu_request_cores"),
        ({"cpu_limit": 2.5}, 189, "max_cpu_limit_cores"),
        ({"cpu_request": 1, "cpu_limit": 0.5}, 190, "cpu_limit"),
    ):
        assert setting in assert_error(owner.patch(url, json=body), 400, code)
    ok = owner.patch(url, json={"memory_limit": 2 * GiB, "cpu_limit": 2, "memory_request": GiB, "cpu_request": 1})
    assert ok.status_code == 200, ok.text
    message = assert_error(server.api().patch(url, json={"service_account_name": "reports"}), 400, 195)
    assert "Service accounts cannot be set on content" in message
    assert_error(owner.patch(url, json={"service_account_name": "reports"}), 403, 22)
    settings = requests.get(api(server, "server_settings")).json()
    assert settings["content_service_account_selection"] is False


def test_resources_posit_sdk_reads_and_updates(server: RunningServer, people: dict[str, str], shared_item: str) -> None:
    from posit import connect

    client = connect.Client(server.url, people["editor"])
    item = client.content.get(shared_item)
    item.update(memory_limit=512 * MiB, memory_request=128 * MiB, cpu_limit=1.5, cpu_request=0.5)
    fetched = client.content.get(shared_item)
    assert (fetched["memory_limit"], fetched["memory_request"], fetched["cpu_limit"], fetched["cpu_request"]) == (
        512 * MiB, 128 * MiB, 1.5, 0.5)
    assert "service_account_name" in fetched
    with pytest.raises(Exception, match="cannot exceed"):
        fetched.update(memory_request=GiB)
    admin = connect.Client(server.url, server.admin_key)
    admin.content.get(shared_item).update(service_account_name="reports")
    assert client.content.get(shared_item)["service_account_name"] == "reports"


# --- live: limits reach the cgroups of build and run jobs ---------------------------------------


def _cgroup_cpu_quota(pid: int) -> tuple[int, int] | None:
    """(quota, period) in µs of the CPU cgroup ``pid`` is in; None when unlimited."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            directory = next(
                d for d in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct") if Path(d).exists()
            ) + path
            quota = int(Path(directory, "cpu.cfs_quota_us").read_text())
            period = int(Path(directory, "cpu.cfs_period_us").read_text())
            return None if quota < 0 else (quota, period)
        if controllers == "":  # cgroup v2
            text = Path("/sys/fs/cgroup" + path, "cpu.max").read_text().split()
            return None if text[0] == "max" else (int(text[0]), int(text[1]))
    return None


def _run_jobs(server: RunningServer, key: str, guid: str) -> list[dict[str, Any]]:
    jobs = server.api(key).get(api(server, f"v1/content/{guid}/jobs")).json()
    return [j for j in jobs if j["status"] == 0 and j["tag"].startswith("run")]


@pytest.mark.integration
def test_resources_live_cpu_quota_in_cgroup_and_lowered_max_at_launch(tmp_path: Path) -> None:
    if not (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists() or Path("/sys/fs/cgroup/cpu.max").exists()
            or Path("/sys/fs/cgroup/cgroup.controllers").exists()):
        pytest.skip("no cgroup CPU controller on this host")
    data = tmp_path / "data"
    limits = {"PODIUM_MEMORY_LIMIT_BYTES": str(GiB)}  # a server default: builds get it too
    server = start_server(data, limits)
    key = server.user_key("live_owner", "publisher")
    client = server.api(key)
    try:
        guid = client.post(api(server, "v1/content"), json={"name": "cpu-quota"}).json()["guid"]
        assert client.patch(api(server, f"v1/content/{guid}"), json={"cpu_limit": 0.5}).status_code == 200
        _, task = deploy(server, key, guid, fastapi_bundle())
        assert task["code"] == 0, task["all_output"]
        # The build job ran under the content's resolved limits too (memory from the default).
        assert re.search(r"launched build job, pid \d+, limits (cgroup[12]|rlimit)/cgroup[12]", server.log())
        assert client.get(f"{server.url}/content/{guid}/").json() == {"ok": True}
        (job,) = _run_jobs(server, key, guid)
        assert _cgroup_cpu_quota(job["pid"]) == (50_000, 100_000)
    finally:
        server.stop()
    # The administrator lowers the maximum below what the content asked for; the next
    # launch runs at the new maximum, and says so.
    server = start_server(data, {**limits, "PODIUM_MAX_CPU_LIMIT_CORES": "0.25"}, bootstrap=False)
    try:
        client = server.api(key)
        assert client.get(f"{server.url}/content/{guid}/").json() == {"ok": True}
        (job,) = _run_jobs(server, key, guid)
        assert _cgroup_cpu_quota(job["pid"]) == (25_000, 100_000)
        assert "cpu_limit 0.5 cores exceeds the maximum 0.25 cores (max_cpu_limit_cores)" in server.log()
        # Unchanged content still reads as stored; a new write must respect the new maximum.
        assert client.get(api(server, f"v1/content/{guid}")).json()["cpu_limit"] == 0.5
        assert_error(client.patch(api(server, f"v1/content/{guid}"), json={"cpu_limit": 0.5}), 400, 189)
    finally:
        server.stop()
