"""``podium env``: the execution environment catalogue over the API.

Every command talks to a running server (``--server``/``PODIUM_SERVER`` and
``--api-key``/``PODIUM_API_KEY``), never to the database. ``explain`` reads a
bundle's ``manifest.json`` (from a directory, a ``.tar.gz`` bundle or the file
itself) and shows which environment the server would choose, and why not the others.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Annotated, Any, NoReturn

import requests
import typer

env = typer.Typer(help="Execution environments: list, add, edit, remove, explain.", no_args_is_help=True)

ServerOpt = Annotated[
    str, typer.Option("--server", "-s", help="Podium server URL.", envvar="PODIUM_SERVER")
]
KeyOpt = Annotated[
    str, typer.Option("--api-key", "-k", help="API key.", envvar="PODIUM_API_KEY", show_default=False)
]
_MANIFEST_MAX_BYTES = 16 * 1024 * 1024
_MATCHING = ("any", "exact", "none")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _call(method: str, server: str, key: str, path: str, body: Any = None) -> Any:
    if not key:
        _fail("an API key is needed: pass --api-key or set PODIUM_API_KEY.")
    url = server.rstrip("/") + "/__api__/" + path
    try:
        response = requests.request(
            method, url, json=body, headers={"Authorization": f"Key {key}"}, timeout=60
        )
    except requests.RequestException as exc:
        _fail(f"cannot reach {server}: {exc}")
    if response.status_code >= 400:
        try:
            problem = response.json()
            _fail(f"{problem['error']} (code {problem['code']}, HTTP {response.status_code})")
        except (ValueError, KeyError, TypeError):
            _fail(f"HTTP {response.status_code} from {url}")
    return response.json() if response.content else None


def _installations(values: list[str] | None, option: str) -> dict[str, Any] | None:
    if not values:
        return None
    items = []
    for value in values:
        version, sep, path = value.partition("=")
        if not sep:
            _fail(f"{option} takes VERSION=PATH (for example 3.11.9=/opt/python/3.11.9/bin/python); got {value!r}")
        items.append({"version": version, "path": path})
    return {"installations": items}


def _body(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


PythonOpt = Annotated[list[str] | None, typer.Option("--python", help="Python installation as VERSION=PATH (repeat).")]
ROpt = Annotated[list[str] | None, typer.Option("--r", help="R installation as VERSION=PATH (repeat).")]
QuartoOpt = Annotated[list[str] | None, typer.Option("--quarto", help="Quarto installation as VERSION=PATH (repeat).")]
TitleOpt = Annotated[str | None, typer.Option("--title", "-T", help="Human-readable title (1-64 characters).")]
DescriptionOpt = Annotated[str | None, typer.Option("--description", "-d", help="Description.")]
MatchingOpt = Annotated[
    str | None, typer.Option("--matching", "-m", help="any (automatic or named), exact (only when named), none.")
]
SupervisorOpt = Annotated[str | None, typer.Option("--supervisor", help="Command run around every content process.")]


@env.command("list")
def env_list(server: ServerOpt = "http://127.0.0.1:3939", api_key: KeyOpt = "") -> None:
    """List execution environments: guid, image, matching, interpreters."""
    for item in _call("GET", server, api_key, "v1/environments"):
        runtimes = "; ".join(
            f"{name} " + ", ".join(i["version"] for i in item[name]["installations"])
            for name in ("python", "r", "quarto")
            if item[name]["installations"]
        )
        managed = f"  [managed by {item['managed_by']}]" if item.get("managed_by") else ""
        typer.echo(
            f"{item['guid']}  {item['name']}  ({item['title']}, matching {item['matching']}, "
            f"{item['cluster_name']})  {runtimes or 'no interpreters'}{managed}"
        )


@env.command("show")
def env_show(guid: str, server: ServerOpt = "http://127.0.0.1:3939", api_key: KeyOpt = "") -> None:
    """Print one environment as JSON."""
    typer.echo(json.dumps(_call("GET", server, api_key, f"v1/environments/{guid}"), indent=2))


@env.command("add")
def env_add(
    image: Annotated[str, typer.Argument(help="The container image (the environment's name).")],
    title: TitleOpt = None,
    description: DescriptionOpt = None,
    matching: MatchingOpt = None,
    supervisor: SupervisorOpt = None,
    python: PythonOpt = None,
    r: ROpt = None,
    quarto: QuartoOpt = None,
    cluster_name: Annotated[str, typer.Option(help="Kubernetes, or Local for host interpreters.")] = "Kubernetes",
    server: ServerOpt = "http://127.0.0.1:3939",
    api_key: KeyOpt = "",
) -> None:
    """Create an environment (administrators); print it as JSON."""
    body = _body(
        name=image, cluster_name=cluster_name, title=title, description=description,
        matching=matching, supervisor=supervisor, python=_installations(python, "--python"),
        r=_installations(r, "--r"), quarto=_installations(quarto, "--quarto"),
    )
    typer.echo(json.dumps(_call("POST", server, api_key, "v1/environments", body), indent=2))


@env.command("edit")
def env_edit(
    guid: str,
    title: TitleOpt = None,
    description: DescriptionOpt = None,
    matching: MatchingOpt = None,
    supervisor: SupervisorOpt = None,
    python: PythonOpt = None,
    r: ROpt = None,
    quarto: QuartoOpt = None,
    server: ServerOpt = "http://127.0.0.1:3939",
    api_key: KeyOpt = "",
) -> None:
    """Change an environment (administrators); options left out keep their values."""
    body = _body(
        title=title, description=description, matching=matching, supervisor=supervisor,
        python=_installations(python, "--python"), r=_installations(r, "--r"),
        quarto=_installations(quarto, "--quarto"),
    )
    if not body:
        _fail("nothing to change: give at least one option (see --help).")
    typer.echo(json.dumps(_call("PUT", server, api_key, f"v1/environments/{guid}", body), indent=2))


@env.command("remove")
def env_remove(guid: str, server: ServerOpt = "http://127.0.0.1:3939", api_key: KeyOpt = "") -> None:
    """Delete an environment (administrators)."""
    _call("DELETE", server, api_key, f"v1/environments/{guid}")
    typer.echo(f"Deleted environment {guid}.")


def read_manifest(path: Path) -> dict[str, Any]:
    """``manifest.json`` of a bundle directory, a ``.tar.gz`` bundle, or the file itself."""
    try:
        if path.is_dir():
            path = path / "manifest.json"
            if not path.is_file():
                _fail(f"{path} does not exist; write one with 'rsconnect write-manifest ...'.")
        if tarfile.is_tarfile(path):
            with tarfile.open(path, "r:*") as tar:
                member = next(
                    (m for m in tar.getmembers() if m.name.lstrip("./") == "manifest.json" and m.isfile()),
                    None,
                )
                if member is None:
                    _fail(f"{path} has no manifest.json at its root.")
                if member.size > _MANIFEST_MAX_BYTES:
                    _fail(f"manifest.json in {path} is larger than 16 MiB.")
                handle = tar.extractfile(member)
                assert handle is not None
                raw = handle.read()
        else:
            if path.stat().st_size > _MANIFEST_MAX_BYTES:
                _fail(f"{path} is larger than 16 MiB.")
            raw = path.read_bytes()
        manifest = json.loads(raw.decode("utf-8-sig"))
    except (OSError, tarfile.TarError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(f"cannot read a manifest from {path}: {exc}")
    if not isinstance(manifest, dict):
        _fail(f"the manifest in {path} is not a JSON object.")
    return manifest


@env.command("explain")
def env_explain(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory, .tar.gz bundle, or manifest.json.")],
    content: Annotated[
        str | None, typer.Option("--content", help="Content guid whose default_image_name applies.")
    ] = None,
    image: Annotated[
        str | None, typer.Option("--image", "-I", help="Explain as if deployed with this --image.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's full answer.")] = False,
    server: ServerOpt = "http://127.0.0.1:3939",
    api_key: KeyOpt = "",
) -> None:
    """Show which environment a bundle would get, and why every other one was not chosen.

    Exits 1 when no environment fits.
    """
    manifest = read_manifest(bundle)
    if image:
        manifest.setdefault("environment", {})["image"] = image
    answer = _call(
        "POST", server, api_key, "v1/environments/explain",
        _body(manifest=manifest, content_guid=content),
    )
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
    elif answer["chosen"] is None:
        typer.echo(answer["error"])
    else:
        typer.echo("\n".join(answer["explanation"]))
    if answer["chosen"] is None:
        raise typer.Exit(1)
