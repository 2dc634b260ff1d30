"""The ``podium`` command: serve, show configuration, administer."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from podium import __version__
from podium.cli_env import env
from podium.settings import Settings, SettingsError, defaults_toml, load_settings

if TYPE_CHECKING:
    from podium.store import Store

app = typer.Typer(help="Podium: publish data-science content.", no_args_is_help=True)
admin = typer.Typer(help="Administer a server's accounts directly in its database.", no_args_is_help=True)
app.add_typer(admin, name="admin")
app.add_typer(env, name="env")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file.", envvar="PODIUM_CONFIG")
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (setting data_dir).")
]


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except SettingsError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2) from None


def _store(settings: Settings) -> Store:
    from podium.layout import DataLayout
    from podium.store import Store, StoreUnavailable

    try:
        DataLayout(settings.data_dir.resolve()).create()
        store = Store(settings.effective_database_url)
        store.migrate()
    except (SettingsError, StoreUnavailable) as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2) from None
    return store


@app.command()
def serve(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    listen: Annotated[
        str | None, typer.Option("--listen", help="HOST:PORT to listen on (setting listen).")
    ] = None,
) -> None:
    """Start the server (API, content and dashboard)."""
    from podium.app import build
    from podium.bootstrap import bootstrap_admin, has_users
    from podium.store import StoreUnavailable

    settings = _settings(config, data_dir=data_dir, listen=listen)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        node = build(settings)
    except (SettingsError, StoreUnavailable) as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2) from None
    if settings.bootstrap_admin_on_first_start and not has_users(node.store):
        account = bootstrap_admin(node.store)
        _err(
            "\n"
            "  Podium set up its first administrator. This is shown once; keep it safe.\n"
            f"    username: {account.username}\n"
            f"    password: {account.password}\n"
            f"    API key:  {account.api_key}\n"
            f"  Publish with:  rsconnect add -n podium -s {settings.effective_public_url} "
            f"-k {account.api_key}\n"
        )
    from podium.serve import StartFailed, run

    try:
        clean = run(node)
    except StartFailed as exc:  # what had started is stopped (logged)
        _err(f"error: {exc}")
        raise typer.Exit(3) from None
    if not clean:  # a step of the stop failed (logged): a supervisor should know
        raise typer.Exit(1)


@app.command()
def config(
    defaults: Annotated[
        bool, typer.Option("--defaults", help="Print every setting at its default, commented.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Print the settings: the commented defaults, or the effective values."""
    if defaults:
        typer.echo(defaults_toml(), nl=False)
        return
    settings = _settings(config)
    for name, value in settings.model_dump().items():
        typer.echo(f"{name} = {value!r}")


@app.command()
def version() -> None:
    """Print Podium's version."""
    typer.echo(__version__)


@admin.command("bootstrap")
def admin_bootstrap(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    username: Annotated[str, typer.Option(help="Name of the administrator.")] = "admin",
) -> None:
    """Create the first administrator; print its API key alone on standard output."""
    from podium.bootstrap import AdminError, bootstrap_admin

    settings = _settings(config, data_dir=data_dir)
    try:
        account = bootstrap_admin(_store(settings), username)
    except AdminError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(1) from None
    _err(f"Created administrator {account.username!r}; its password is: {account.password}")
    _err("Its API key follows on standard output (shown once):")
    typer.echo(account.api_key)


@admin.command("create-user")
def admin_create_user(
    username: Annotated[str, typer.Argument(help="The new user's name.")],
    role: Annotated[str, typer.Option(help="viewer, publisher or administrator.")] = "viewer",
    password: Annotated[
        str | None, typer.Option(help="Password; generated when omitted.", envvar="PODIUM_NEW_PASSWORD")
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a user; print the password alone on standard output."""
    from podium.auth import ROLES
    from podium.bootstrap import AdminError, create_user

    if role not in ROLES:
        _err(f"error: --role must be one of {', '.join(ROLES)}")
        raise typer.Exit(2)
    settings = _settings(config, data_dir=data_dir)
    try:
        account = create_user(_store(settings), username, role, password)
    except AdminError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(1) from None
    _err(f"Created {role} {account.username!r} ({account.guid}); password on standard output.")
    typer.echo(account.password)


@admin.command("create-api-key")
def admin_create_api_key(
    username: Annotated[str, typer.Argument(help="Whose key.")],
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")] = "cli",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create an API key for a user; print it alone on standard output."""
    from podium.bootstrap import AdminError, create_api_key

    settings = _settings(config, data_dir=data_dir)
    try:
        key = create_api_key(_store(settings), username, name)
    except AdminError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(1) from None
    _err(f"Created API key {name!r} for {username}; it follows on standard output (shown once).")
    typer.echo(key)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
