"""The public addresses of the server and of content, from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from podium.settings import Settings


@dataclass(frozen=True)
class Urls:
    public: str  # the server's public URL, ending with "/"

    @classmethod
    def from_settings(cls, settings: Settings) -> Urls:
        return cls(settings.effective_public_url)

    def content(self, guid: str) -> str:
        return f"{self.public}content/{guid}/"

    def dashboard(self, guid: str) -> str:
        return f"{self.public}connect/#/apps/{guid}"
