"""The public addresses of the dashboard and of content, from the settings.

The dashboard and the API live at ``public``; published content at the content
origin, which is never the dashboard's (see the ``content_origin`` setting): one
origin for all content, or, when it holds ``{guid}``, a host per content item. The
content path stays ``/content/{guid}/`` on every origin, so apps keep the prefix they
were started with.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from podium.settings import Settings

_GUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@dataclass(frozen=True)
class Urls:
    public: str  # the dashboard's URL, ending with "/"
    content_origin: str  # scheme://host[:port], "{guid}" in the host for per-content hosts

    @classmethod
    def from_settings(cls, settings: Settings) -> Urls:
        return cls(settings.effective_public_url, settings.effective_content_origin)

    def content(self, guid: str) -> str:
        return f"{self.content_origin.replace('{guid}', guid)}/content/{guid}/"

    def vanity(self, guid: str, path: str) -> str:
        """The public URL of a content item's vanity ``path`` (``/sales/``), on its origin."""
        return f"{self.content_origin.replace('{guid}', guid)}{path}"

    def dashboard(self, guid: str) -> str:
        return f"{self.public}connect/#/apps/{guid}"

    @property
    def dashboard_origin(self) -> str:
        parts = urllib.parse.urlsplit(self.public)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def per_content_hosts(self) -> bool:
        return "{guid}" in self.content_origin

    @property
    def secure_content(self) -> bool:
        """Whether browsers treat the content origin as secure (HTTPS, or a loopback name),
        so its cookies may be ``Secure; SameSite=None`` and work inside the dashboard's frame."""
        parts = urllib.parse.urlsplit(self.content_origin.replace("{guid}", "x"))
        host = (parts.hostname or "").lower()
        return parts.scheme == "https" or host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")

    def content_host(self) -> ContentHost:
        return ContentHost(self.content_origin)


class ContentHost:
    """Recognises the content origin in a request's ``Host`` header."""

    def __init__(self, origin: str) -> None:
        parts = urllib.parse.urlsplit(origin.replace("{guid}", "guidhere"))
        self._default_port = b":443" if parts.scheme == "https" else b":80"
        netloc = parts.netloc.lower().removesuffix(self._default_port.decode())
        pattern = re.escape(netloc).replace("guidhere", f"({_GUID})")
        self._pattern = re.compile(f"^{pattern}$".encode())

    def _find(self, host: bytes | None) -> re.Match[bytes] | None:
        if host is None:
            return None
        return self._pattern.match(host.lower().removesuffix(self._default_port))

    def match(self, host: bytes | None) -> bool:
        """Whether ``host`` names the content origin (any content item's, for per-content hosts)."""
        return self._find(host) is not None

    def guid(self, host: bytes | None) -> str | None:
        """The content guid a per-content host names (None for a single content origin)."""
        found = self._find(host)
        return found.group(1).decode() if found is not None and found.groups() else None
