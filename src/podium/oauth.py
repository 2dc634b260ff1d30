"""OAuth integrations: the templates Podium knows and the rules for an integration's
config. Client secrets are kept encrypted (:class:`podium.secrets.SecretBox`) and never
leave the server; the API strips them from every answer.

Podium stores, lists and associates integrations of every template below, so content
and clients that read them (posit-sdk's ``client.oauth``) work. It does not yet perform
the OAuth flows themselves (a viewer's sign-in with the provider, the credentials
exchange content asks for): see the README, "OAuth integrations".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SECRET_FIELDS = ("client_secret",)
AUTH_TYPES = ("Viewer", "Service Account", "Visitor API Key")


@dataclass(frozen=True)
class Template:
    key: str
    name: str
    auth_types: tuple[str, ...]
    required: tuple[str, ...]  # config fields an integration of this template must have

    def json(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "auth_types": list(self.auth_types),
                "fields": list(self.required)}


TEMPLATES = {t.key: t for t in (
    Template("custom", "Custom", ("Viewer", "Service Account"), ("client_id", "token_uri")),
    Template("github", "GitHub", ("Viewer",), ("client_id",)),
    Template("azure", "Microsoft Azure", ("Viewer", "Service Account"), ("client_id", "tenant_id")),
    Template("databricks", "Databricks", ("Viewer", "Service Account"), ("client_id", "account_url")),
    Template("snowflake", "Snowflake", ("Viewer",), ("client_id", "account_url")),
    Template("salesforce", "Salesforce", ("Viewer",), ("client_id", "account_url")),
    Template("connect", "Posit Connect", ("Visitor API Key",), ()),
)}


class InvalidIntegration(ValueError):
    """An integration request that breaks a rule; the message says which."""


def check(template: Any, config: Any, secret_known: bool) -> tuple[Template, str, dict[str, Any], str | None]:
    """The template, auth type, config without its secret and the new secret (None: keep
    the stored one) of an integration, or :class:`InvalidIntegration`."""
    if not isinstance(template, str) or template not in TEMPLATES:
        raise InvalidIntegration(
            f"template must be one of {', '.join(sorted(TEMPLATES))}; got {template!r}."
        )
    chosen = TEMPLATES[template]
    if not isinstance(config, dict):
        raise InvalidIntegration("config must be a JSON object.")
    auth_type = config.get("auth_type", chosen.auth_types[0])
    if auth_type not in chosen.auth_types:
        raise InvalidIntegration(
            f"The {chosen.name} template takes auth_type {' or '.join(chosen.auth_types)}; got {auth_type!r}."
        )
    missing = [f for f in chosen.required if not isinstance(config.get(f), str) or not config[f]]
    if missing:
        raise InvalidIntegration(f"The {chosen.name} template needs config fields: {', '.join(missing)}.")
    secret = config.get("client_secret")
    if secret is not None and not isinstance(secret, str):
        raise InvalidIntegration("config.client_secret must be a string.")
    if template == "custom" and auth_type == "Service Account" and not (secret or secret_known):
        raise InvalidIntegration("A Service Account integration needs config.client_secret.")
    public = {k: v for k, v in config.items() if k not in SECRET_FIELDS}
    public["auth_type"] = auth_type
    return chosen, auth_type, public, secret
