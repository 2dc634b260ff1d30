"""Execution environments: selection (pure, table-driven), manifest requests, validation, catalogue sync."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from packaging.version import Version

from podium import errors
from podium.environments.catalogue import load_environments, sync_catalogue
from podium.environments.model import (
    BundleRequest,
    Environment,
    Installation,
    InvalidRequest,
    request_from_manifest,
)
from podium.environments.select import Policy, pick_installation, select_environment
from podium.environments.validate import validate_declarations, validate_environment
from podium.store import Store
from podium.store.models import ExecutionEnvironment


def inst(version: str, runtime: str = "python") -> Installation:
    return Installation(Version(version), f"/opt/{runtime}/{version}/bin/{runtime}", version)


def env(ident: int, name: str, matching: str = "any", py: tuple[str, ...] = (), r: tuple[str, ...] = (),
        quarto: tuple[str, ...] = ()) -> Environment:
    return Environment(
        id=ident, guid=f"00000000-0000-4000-8000-{ident:012d}", name=name, title=name, matching=matching,
        python=tuple(inst(v) for v in py), r=tuple(inst(v, "r") for v in r),
        quarto=tuple(inst(v, "quarto") for v in quarto),
    )


CATALOGUE = {
    "local": env(1, "Local", py=("3.11.2", "3.11.7", "3.12.1")),
    "py311": env(2, "img/py311", py=("3.11.9",)),
    "py312x": env(3, "img/py312", "exact", py=("3.12.4",)),
    "off": env(4, "img/off", "none", py=("3.11.7",)),
    "py310": env(5, "img/py310", py=("3.10.14",)),
    "py311b": env(6, "img/py311-b", py=("3.11.9",)),
}


def python_request(version: str | None = "3.11.7", requires: str | None = None, image: str | None = None,
                   identifier: str | None = None) -> BundleRequest:
    manifest: dict[str, Any] = {"metadata": {"appmode": "python-fastapi"}, "python": {}}
    if version:
        manifest["python"]["version"] = version
    environment: dict[str, Any] = {}
    if requires:
        environment["python"] = {"requires": requires}
    if image:
        environment["image"] = image
    if identifier:
        environment["identifier"] = identifier
    if environment:
        manifest["environment"] = environment
    return request_from_manifest(manifest)


@dataclass
class Case:
    request: BundleRequest
    envs: tuple[str, ...]
    chosen: str | None  # expected environment name, None = nothing fits
    python: str | None = None  # expected Python version
    content_image: str | None = None
    server_image: str | None = None
    policy: Policy = field(default_factory=Policy)
    source: str = "auto"
    needles: tuple[str, ...] = ()  # substrings of the explanation (or the failure)


ALL = tuple(CATALOGUE)
GUID3 = CATALOGUE["py312x"].guid

PRECEDENCE = {
    "manifest image selects an exact-matching environment": Case(
        python_request("3.12.0", image="img/py312"), ALL, "img/py312", "3.12.4", source="manifest",
        needles=("The manifest requests image 'img/py312'", "its image is not 'img/py312'"),
    ),
    "manifest image beats content and server defaults": Case(
        python_request("3.11.7", image="img/py311"), ALL, "img/py311", "3.11.9",
        content_image="img/py312", server_image="img/py310", source="manifest",
        needles=("content and server defaults do not apply",),
    ),
    "manifest image of a matching-none environment never fits": Case(
        python_request("3.11.7", image="img/off"), ALL, None, source="manifest",
        needles=("image 'img/off': its matching is 'none': never selected",),
    ),
    "manifest image nobody has": Case(
        python_request("3.11.7", image="img/ghost"), ALL, None, source="manifest",
        needles=("for image 'img/ghost' and Python 3.11.7", "its image is not 'img/ghost'"),
    ),
    "manifest identifier selects that environment": Case(
        python_request("3.12.1", identifier=GUID3), ALL, "img/py312", "3.12.4", source="identifier",
        needles=(f"it is not environment {GUID3}",),
    ),
    "identifier and image must agree": Case(
        python_request("3.12.1", identifier=GUID3, image="img/py311"), ALL, None, source="manifest",
    ),
    "content default image, exact matching allowed": Case(
        python_request("3.12.2"), ALL, "img/py312", "3.12.4", content_image="img/py312",
        source="content", needles=("The content's default image is 'img/py312'", "the content's default image"),
    ),
    "content default beats the server default": Case(
        python_request("3.11.7"), ALL, "img/py311", "3.11.9", content_image="img/py311",
        server_image="img/py312", source="content",
    ),
    "server default when the content has none": Case(
        python_request("3.12.2"), ALL, "img/py312", "3.12.4", server_image="img/py312", source="server",
        needles=("(setting default_image_name)", "the server's default image"),
    ),
    "content default naming a matching-none environment fails": Case(
        python_request("3.11.7"), ALL, None, content_image="img/off", source="content",
        needles=("matching is 'none'",),
    ),
    "content default whose Python does not fit fails, no fallback": Case(
        python_request("3.11.7"), ALL, None, content_image="img/py310", source="content",
        needles=("has Python 3.10.14; none is 3.11.x like the bundle's 3.11.7",),
    ),
    "automatic matching skips exact and none": Case(
        python_request("3.12.4"), ALL, "Local", "3.12.1",
        needles=("matching is 'exact': used only when", "matching is 'none'"),
    ),
    "empty catalogue": Case(python_request("3.11.7"), (), None, needles=("No execution environments",)),
}

PYTHON_RULES = {
    "major-minor prefers the bundle's exact version": Case(
        python_request("3.11.2"), ("local", "py311"), "Local", "3.11.2",
        needles=("is exactly the bundle's 3.11.2", "fewer of its versions differ"),
    ),
    "major-minor else the newest patch, newest environment wins": Case(
        python_request("3.11.4"), ("local", "py311"), "img/py311", "3.11.9",
        needles=("newest 3.11.x", "it has newer Python (3.11.9 rather than 3.11.7)"),
    ),
    "major-minor rejects other lines": Case(
        python_request("3.9.1"), ("local", "py310"), None,
        needles=("has Python 3.11.2, 3.11.7, 3.12.1; none is 3.9.x", "Python 3.9.1"),
    ),
    "exact policy takes only the same version": Case(
        python_request("3.11.7"), ("local", "py311"), "Local", "3.11.7", policy=Policy("exact"),
        needles=("none is exactly the bundle's 3.11.7 (python_version_matching = exact)",),
    ),
    "exact policy with no exact installation fails": Case(
        python_request("3.11.5"), ("local", "py311"), None, policy=Policy("exact"),
        needles=("Python 3.11.5 exactly",),
    ),
    "requires wins over the version, newest satisfying": Case(
        python_request("3.12.1", requires="~=3.11.0"), ("local", "py310"), "Local", "3.11.7",
        needles=("newest satisfying ~=3.11.0", "none satisfies ~=3.11.0"),
    ),
    "requires across environments picks the newest": Case(
        python_request(None, requires=">=3.10"), ("local", "py310", "py311"), "Local", "3.12.1",
    ),
    "requires nobody satisfies": Case(
        python_request("3.11.7", requires=">=3.13"), ("local",), None,
        needles=("Python >=3.13", "none satisfies >=3.13"),
    ),
    "requires ignores python_version_matching": Case(
        python_request("3.11.5", requires="<3.11"), ("local", "py310"), "img/py310", "3.10.14",
        policy=Policy("exact"),
    ),
    "no version asked: the newest": Case(
        python_request(None), ("local", "py311"), "Local", "3.12.1", needles=("names no Python version",),
    ),
    "same versions: the environment created first": Case(
        python_request("3.11.4"), ("py311b", "py311"), "img/py311", "3.11.9",
        needles=("ranks higher: it was created first",),
    ),
    "an environment without Python does not fit Python content": Case(
        python_request("3.11.7"), ("local",), None,
    ),
}


def _run(case: Case, catalogue: dict[str, Environment] | None = None) -> Any:
    envs = [(catalogue or CATALOGUE)[name] for name in case.envs]
    return select_environment(
        case.request, envs, content_image=case.content_image, server_image=case.server_image,
        policy=case.policy,
    )


def _check(case: Case, selection: Any) -> None:
    text = "\n".join(selection.lines()) + "\n" + (selection.failure() if selection.chosen is None else "")
    if case.chosen is None:
        assert selection.chosen is None, text
    else:
        assert selection.chosen is not None, text
        assert selection.chosen.environment.name == case.chosen, text
    if case.python is not None:
        assert selection.chosen.installation("python").version_text == case.python
    assert selection.source == case.source
    for needle in case.needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    # every environment not chosen is explained, once
    named = [c.environment.name for c in selection.others]
    if selection.chosen:
        named.append(selection.chosen.environment.name)
    assert sorted(named) == sorted(CATALOGUE[n].name for n in case.envs)
    assert all(c.reason for c in selection.others)


@pytest.mark.parametrize("name", list(PRECEDENCE))
def test_select_precedence(name: str) -> None:
    _check(PRECEDENCE[name], _run(PRECEDENCE[name]))


@pytest.mark.parametrize("name", list(PYTHON_RULES))
def test_select_python_rules(name: str) -> None:
    case = PYTHON_RULES[name]
    if name.startswith("an environment without Python"):
        catalogue = {"local": env(1, "Local", r=("4.3.2",))}
        selection = _run(case, catalogue)
        assert "has no Python installation" in selection.failure()
        return
    _check(case, _run(case))


def test_select_every_environment_gets_a_reason() -> None:
    selection = select_environment(python_request("3.11.4"), CATALOGUE.values())
    assert selection.chosen is not None
    assert len(selection.others) == len(CATALOGUE) - 1
    assert [c.environment.id for c in selection.others] == sorted(c.environment.id for c in selection.others)


def test_select_respects_environment_permissions() -> None:
    import dataclasses

    alice, bob = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"
    restricted = dataclasses.replace(env(1, "Local", py=("3.11.7",)), allowed_users=frozenset({alice}))
    open_env = env(2, "ghcr.io/acme/py311", py=("3.11.2",))
    allowed = select_environment(python_request("3.11.7"), [restricted, open_env], user=alice)
    assert allowed.chosen is not None and allowed.chosen.environment.id == 1
    refused = select_environment(python_request("3.11.7"), [restricted, open_env], user=bob)
    assert refused.chosen is not None and refused.chosen.environment.id == 2
    reason = next(c.reason for c in refused.others if c.environment.id == 1)
    assert "restricted to the users in its permissions" in reason and restricted.guid in reason
    # Administrators (no user) pass every restriction.
    anyone = select_environment(python_request("3.11.7"), [restricted, open_env])
    assert anyone.chosen is not None and anyone.chosen.environment.id == 1


def test_select_is_deterministic_whatever_the_order() -> None:
    forwards = select_environment(python_request("3.11.4"), list(CATALOGUE.values()))
    backwards = select_environment(python_request("3.11.4"), list(reversed(CATALOGUE.values())))
    assert forwards == backwards


# --- R and Quarto ---------------------------------------------------------------------------

R_LIST = ("3.6.3", "4.1.2", "4.1.3", "4.4.0")


@pytest.mark.parametrize(
    ("version", "requires", "rule", "expected"),
    [
        ("4.1.2", None, "nearest", "4.1.2"),  # exact
        ("4.1.0", None, "nearest", "4.1.3"),  # same line, newest patch
        ("4.3.2", None, "nearest", "4.4.0"),  # closest other line (distance 1 up vs 2 down)
        ("4.2.5", None, "nearest", "4.1.3"),  # 4.1 is one line away, 4.4 two
        ("5.0.0", None, "nearest", "4.4.0"),
        ("3.0.0", None, "nearest", "3.6.3"),
        ("4.1.0", None, "major-minor", "4.1.3"),
        ("4.2.0", None, "major-minor", None),
        ("4.1.3", None, "exact", "4.1.3"),
        ("4.1.1", None, "exact", None),
        ("4.1.1", ">=4.2", "exact", "4.4.0"),  # requires overrides the strategy
        ("4.1.1", "<4.0", "nearest", "3.6.3"),
        ("4.1.1", ">=5", "nearest", None),
        (None, None, "nearest", "4.4.0"),
    ],
)
def test_pick_r_rules(version: str | None, requires: str | None, rule: str, expected: str | None) -> None:
    manifest: dict[str, Any] = {"metadata": {"appmode": "shiny"}}
    if version:
        manifest["platform"] = version
    if requires:
        manifest["environment"] = {"r": {"requires": requires}}
    request = request_from_manifest(manifest).r
    assert request is not None
    pick = pick_installation("r", tuple(inst(v, "r") for v in R_LIST), request, rule)
    got = pick.installation.version_text if pick.installation else None
    assert got == expected, pick.reason
    if expected is None:
        assert "has R 3.6.3, 4.1.2, 4.1.3, 4.4.0" in pick.reason


def test_pick_r_nearest_tie_prefers_newer() -> None:
    request = request_from_manifest({"metadata": {"appmode": "shiny"}, "platform": "4.2.1"}).r
    assert request is not None
    pick = pick_installation("r", (inst("4.1.3", "r"), inst("4.3.0", "r")), request, "nearest")
    assert pick.installation is not None and pick.installation.version_text == "4.3.0"
    assert "nearest to the bundle's 4.2.1 (r_version_matching = nearest)" in pick.reason


@pytest.mark.parametrize(
    ("version", "installed", "expected"),
    [
        ("1.4.550", ("1.3.450", "1.4.550", "1.5.10"), "1.4.550"),
        ("1.4.500", ("1.3.450", "1.4.550", "1.4.557"), "1.4.557"),
        ("1.4.550", ("1.3.450", "1.5.10", "1.6.1"), "1.5.10"),  # the nearest newer
        ("1.4.550", ("1.3.450", "1.2.0"), None),  # only older
        ("1.4.550", ("1.4.1",), "1.4.1"),  # same line, even an older patch
        ("1.4.550", (), None),
    ],
)
def test_pick_quarto_rules(version: str, installed: tuple[str, ...], expected: str | None) -> None:
    request = request_from_manifest({"metadata": {"appmode": "quarto-static"}, "quarto": {"version": version}}).quarto
    assert request is not None
    pick = pick_installation("quarto", tuple(inst(v, "quarto") for v in installed), request, "quarto")
    assert (pick.installation.version_text if pick.installation else None) == expected, pick.reason


def test_select_needs_every_runtime_and_ranks_by_closeness() -> None:
    catalogue = [
        env(1, "img/r41", py=("3.11.7",), r=("4.1.2",), quarto=("1.4.550",)),
        env(2, "img/r43", py=("3.11.7",), r=("4.3.0",), quarto=("1.4.550",)),
        env(3, "img/noquarto", py=("3.11.7",), r=("4.3.2",)),
        env(4, "img/old-quarto", py=("3.11.7",), r=("4.3.2",), quarto=("1.3.450",)),
    ]
    manifest = {
        "metadata": {"appmode": "quarto-static"},
        "quarto": {"version": "1.4.550", "engines": ["knitr", "jupyter"]},
        "python": {"version": "3.11.7"},
        "platform": "4.3.2",
    }
    selection = select_environment(request_from_manifest(manifest), catalogue)
    assert selection.chosen is not None and selection.chosen.environment.name == "img/r43"
    assert selection.chosen.installation("r").version_text == "4.3.0"
    reasons = {c.environment.name: c.reason for c in selection.others}
    assert "its versions are closer to the bundle's" in reasons["img/r41"]
    assert reasons["img/noquarto"] == "has no Quarto installation"
    assert "none is 1.4.x or newer" in reasons["img/old-quarto"]
    assert "Python 3.11.x" in selection.needs and "R nearest to 4.3.2" in selection.needs
    exact_r = select_environment(request_from_manifest(manifest), catalogue, policy=Policy(r_matching="exact"))
    assert exact_r.chosen is None
    assert "for Python 3.11.7 and R 4.3.2 and Quarto 1.4.550" in exact_r.failure()


def test_select_static_content_needs_nothing() -> None:
    request = request_from_manifest({"metadata": {"appmode": "static"}, "python": {"version": "3.11.7"}})
    assert request.needed == ()
    selection = select_environment(request, [CATALOGUE["py311"], CATALOGUE["local"]])
    assert selection.chosen is not None and selection.chosen.environment.name == "Local"
    assert "needs no Python, R or Quarto" in selection.needs


@pytest.mark.parametrize(
    ("manifest", "needed"),
    [
        ({"metadata": {"appmode": "python-dash"}}, ("python",)),
        ({"metadata": {"appmode": "jupyter-static"}, "python": {"version": "3.11.7"}}, ("python",)),
        ({"metadata": {"appmode": "shiny"}}, ("r",)),
        ({"metadata": {"appmode": "quarto-static"}, "quarto": {"version": "1.4.550"}}, ("quarto",)),
        ({"metadata": {"appmode": "rmd-static"}, "platform": "4.3.2", "python": {"version": "3.11.7"}},
         ("python", "r")),
        ({"metadata": {"appmode": "static"}, "platform": "4.3.2"}, ()),
    ],
)
def test_request_from_manifest_needs(manifest: dict[str, Any], needed: tuple[str, ...]) -> None:
    assert request_from_manifest(manifest).needed == needed


@pytest.mark.parametrize(
    ("manifest", "needle"),
    [
        ({"metadata": {"appmode": "python-api"}, "python": {"version": "three"}}, "python.version 'three'"),
        ({"metadata": {"appmode": "python-api"}, "environment": {"python": {"requires": ">>3"}}},
         "environment.python.requires '>>3'"),
        ({"metadata": {"appmode": "shiny"}, "platform": "four"}, "platform 'four'"),
        ({"metadata": {"appmode": "shiny"}, "environment": {"r": {"requires": "~~4"}}}, "environment.r.requires"),
        ({"metadata": {"appmode": "static"}, "environment": {"image": ""}}, "environment.image"),
        ({"metadata": {"appmode": "static"}, "environment": {"identifier": 5}}, "environment.identifier"),
    ],
)
def test_request_from_manifest_errors_name_the_field(manifest: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle.replace("(", r"\(")):
        request_from_manifest(manifest)


def test_policy_refuses_unknown_modes() -> None:
    with pytest.raises(ValueError):
        Policy("newest")
    with pytest.raises(ValueError):
        Policy(r_matching="closest")


# --- validation -----------------------------------------------------------------------------

GOOD = {"name": "ghcr.io/acme/py311:1", "cluster_name": "Kubernetes"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({**GOOD, "title": ""}, 168),
        ({**GOOD, "title": "x" * 65}, 168),
        ({**GOOD, "description": "x" * 4097}, 169),
        ({**GOOD, "cluster_name": "Mars"}, 170),
        ({**GOOD, "name": ""}, 171),
        ({**GOOD, "name": "has space"}, 171),
        ({"cluster_name": "Kubernetes"}, 171),
        ({**GOOD, "matching": "sometimes"}, 172),
        ({**GOOD, "python": {"installations": [{"version": "3.11.9", "path": "bin/python"}]}}, 173),
        ({**GOOD, "r": {"installations": [{"version": "4.3", "path": "/opt/R/bin/R"}]}}, 174),
        ({**GOOD, "quarto": {"installations": [{"version": "v1.4.550", "path": "/q"}]}}, 174),
        ({**GOOD, "supervisor": "/bin/run\nrm -rf /"}, 177),
        ({**GOOD, "python": {"installations": "3.11"}}, 3),
        ({**GOOD, "volume_mounts": {"a": 1}}, 3),
    ],
)
def test_validate_environment_codes(body: dict[str, Any], code: int) -> None:
    with pytest.raises(errors.ApiError) as caught:
        validate_environment(body, creating=True)
    assert caught.value.code == code and caught.value.status == 400


def test_validate_environment_defaults_and_update() -> None:
    fields = validate_environment(
        {**GOOD, "python": {"installations": [{"version": "3.11.9", "path": "/opt/py/bin/python"}]}},
        creating=True,
    )
    assert fields["title"] == GOOD["name"] and fields["matching"] == "any"
    assert fields["python"] == [{"version": "3.11.9", "path": "/opt/py/bin/python"}]
    assert fields["r"] == [] and fields["environment_type"] == "Kubernetes"
    update = validate_environment({"matching": "exact", "supervisor": None}, creating=False)
    assert update == {"matching": "exact", "supervisor": None}


def test_validate_declarations() -> None:
    declared = [{"name": "a/b", "python": [{"version": "3.11.9", "path": "/opt/py/bin/python"}]}]
    assert validate_declarations(declared) == declared
    with pytest.raises(ValueError, match=r"declared_environments\[1\]: image 'a/b' is declared twice"):
        validate_declarations(declared * 2)
    with pytest.raises(ValueError, match=r"declared_environments\[0\]: matching"):
        validate_declarations([{"name": "a/b", "matching": "maybe"}])


# --- catalogue sync -------------------------------------------------------------------------


def test_sync_catalogue_adds_updates_takes_over_and_removes(store: Store) -> None:
    local = {"name": "Local", "title": "Local", "cluster_name": "Local", "matching": "any",
             "python": {"installations": [{"version": "3.11.7", "path": "/usr/bin/python3.11"}]}}
    declared = [{"name": "img/a", "title": "A", "python": [{"version": "3.12.1", "path": "/opt/a/python"}]}]
    with store.session() as session:
        session.add(ExecutionEnvironment(name="img/b", title="B", cluster_name="Kubernetes",
                                         environment_type="Kubernetes"))
    sync_catalogue(store, declared, local)
    with store.session() as session:
        envs = {e.name: e for e in load_environments(session)}
        guid_a = envs["img/a"].guid
    assert envs["Local"].managed_by == "host" and envs["img/a"].managed_by == "settings"
    assert envs["img/b"].managed_by is None
    assert envs["Local"].python[0].path == "/usr/bin/python3.11"
    # Changing a declaration updates the record in place; declaring an API-made image takes it over.
    declared = [{"name": "img/a", "title": "A2", "matching": "exact"}, {"name": "img/b", "title": "B2"}]
    sync_catalogue(store, declared, local)
    with store.session() as session:
        envs = {e.name: e for e in load_environments(session)}
    assert envs["img/a"].guid == guid_a and envs["img/a"].matching == "exact" and envs["img/a"].python == ()
    assert envs["img/b"].managed_by == "settings" and envs["img/b"].title == "B2"
    # Removed from the file: removed from the catalogue; no host environment: Local goes too.
    sync_catalogue(store, [], None)
    with store.session() as session:
        assert load_environments(session) == []


def test_settings_declared_environments_from_toml(tmp_path: Any) -> None:
    from podium.settings import SettingsError, load_settings

    config = tmp_path / "podium.toml"
    config.write_text(
        '[environments]\ndefault_image_name = "img/a"\nr_version_matching = "exact"\n'
        '[[environments.declared_environments]]\nname = "img/a"\nmatching = "exact"\n'
        'python = [{version = "3.11.9", path = "/opt/py/bin/python"}]\n'
    )
    settings = load_settings(config)
    assert settings.default_image_name == "img/a" and settings.r_version_matching == "exact"
    assert settings.declared_environments[0]["python"][0]["version"] == "3.11.9"
    config.write_text('[[environments.declared_environments]]\nname = "img/a"\npython = [{version = "3.11", path = "/p"}]\n')
    with pytest.raises(SettingsError, match=r"declared_environments.*not a semantic version"):
        load_settings(config)
