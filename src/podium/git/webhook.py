"""Checking push webhooks: GitHub, Gitea and GitLab sign or tag their deliveries.

GitHub sends ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``, Gitea (and
Forgejo) ``X-Gitea-Signature: <hex HMAC-SHA256>``, GitLab ``X-Gitlab-Token: <the secret
itself>``. Each is compared in constant time. :func:`pushed_ref` reads the ref a push
names (``refs/heads/main``) from any of their payloads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping


def signature_ok(secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """Whether the delivery carries a valid signature or token for ``secret``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    github = headers.get("x-hub-signature-256")
    if github is not None:
        return hmac.compare_digest(github.strip(), f"sha256={digest}")
    gitea = headers.get("x-gitea-signature") or headers.get("x-forgejo-signature")
    if gitea is not None:
        return hmac.compare_digest(gitea.strip(), digest)
    gitlab = headers.get("x-gitlab-token")
    if gitlab is not None:
        return hmac.compare_digest(gitlab.encode(), secret.encode())
    return False


def pushed_ref(body: bytes) -> str | None:
    """The ``ref`` of a push payload, or None (a ping, or a payload without one)."""
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    ref = payload.get("ref") if isinstance(payload, dict) else None
    return ref if isinstance(ref, str) else None


def ref_matches(pushed: str, branch: str) -> bool:
    """Whether a push to ``pushed`` moves what ``branch`` (a branch, tag or commit) names."""
    return pushed in (branch, f"refs/heads/{branch}", f"refs/tags/{branch}")
