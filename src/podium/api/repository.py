"""Git-backed content: ``v1/content/{guid}/repository`` (Connect's GitLocation), making a
bundle from it, the push webhook, and administrators' git host credentials.

PUT and PATCH store the location and never fetch (Connect does the same: a branch may
even be a commit SHA, stored and echoed as given). Errors use Connect's codes: 143 the
content is not git-backed, 146 an unknown field, 164 a URL that is not http(s) (see
``reference/connect-api-more.md`` section 1).
"""

from __future__ import annotations

import secrets as pysecrets
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import audit, errors
from podium.api import deps
from podium.api.body import json_object
from podium.api.content import describe, managed_content, visible_content
from podium.api.serialize import iso
from podium.git.publish import WEBHOOK, GitPublisher
from podium.git.remote import GitError, host_of, normalise_directory, url_problem
from podium.git.webhook import pushed_ref, ref_matches, signature_ok
from podium.settings import Settings
from podium.store.models import Content, GitCredential, GitRepository, User
from podium.tasks import TaskFailed
from podium.urls import Urls

router = APIRouter()
FIELDS = ("repository", "branch", "directory", "polling")
_MAX_PUSH_BYTES = 25 << 20  # GitHub caps its payloads at 25 MB


def location_json(repo: GitRepository) -> dict[str, Any]:
    """Connect's GitLocation."""
    return {
        "repository": repo.repository,
        "branch": repo.branch,
        "directory": repo.directory,
        "polling": repo.polling,
        "last_error": repo.last_error,
        "last_known_commit": repo.last_known_commit,
        "last_fetched_time": iso(repo.last_fetched_time),
    }


def _enabled(settings: Settings) -> None:
    if not settings.git_enabled:
        raise errors.ApiError(404, 145, "Git-backed deployment is not enabled on this server (setting git_enabled).")


def repository_of(session: Session, content: Content) -> GitRepository | None:
    return session.scalar(select(GitRepository).where(GitRepository.content_id == content.id))


def _git_managed(session: Session, content: Content) -> GitRepository:
    repo = repository_of(session, content)
    if repo is None:
        raise errors.ApiError(404, 4, "Not Found: this content is not deployed from a git repository.")
    return repo


def _checked(body: dict[str, Any], settings: Settings, full: bool) -> dict[str, Any]:
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise errors.bad_request(
            f"Unsupported field(s) {', '.join(unknown)}; a repository has {', '.join(FIELDS)}.", code=146
        )
    values = dict(body)
    if full:
        values.setdefault("branch", "main")
        values.setdefault("directory", ".")
        values.setdefault("polling", True)
        if "repository" not in values:
            raise errors.bad_request("repository is required.", code=146)
    for name in ("repository", "branch", "directory"):
        if name in values and (not isinstance(values[name], str) or (name != "directory" and not values[name])):
            raise errors.bad_request(f"{name} must be a non-empty string.", code=146)
    if "polling" in values and not isinstance(values["polling"], bool):
        raise errors.bad_request("polling must be true or false.", code=146)
    if "repository" in values:
        problem = url_problem(values["repository"], settings.git_allow_local_repositories)
        if problem:
            raise errors.ApiError(400, 164, problem)
    if "directory" in values:
        try:
            normalise_directory(values["directory"])
        except GitError as exc:
            raise errors.bad_request(exc.message, code=146) from None
        values["directory"] = values["directory"] or "."
    return values


@router.get("/v1/content/{guid}/repository")
def get_repository(
    guid: str,
    settings: Settings = Depends(deps.settings),
    session: Session = Depends(deps.db),
    who: deps.Caller = Depends(deps.caller),
) -> dict[str, Any]:
    _enabled(settings)
    content = visible_content(session, who.user, guid)
    return location_json(_git_managed(session, content))


async def _store(
    guid: str, request: Request, settings: Settings, session: Session, user: User, full: bool
) -> dict[str, Any]:
    _enabled(settings)
    content = managed_content(session, user, guid)
    values = _checked(await json_object(request), settings, full)
    repo = repository_of(session, content)
    if repo is None:
        if not full:
            raise errors.ApiError(404, 4, "Not Found: this content is not deployed from a git repository.")
        repo = GitRepository(content_id=content.id, last_error="", last_known_commit="")
        session.add(repo)
    for name, value in values.items():
        setattr(repo, name, value)
    audit.record(
        session, user, "set_repository",
        f"Content {describe(content)} follows {repo.repository} branch {repo.branch!r} "
        f"directory {repo.directory!r} (polling {'on' if repo.polling else 'off'}).",
    )
    session.commit()
    return location_json(repo)


@router.put("/v1/content/{guid}/repository")
async def put_repository(
    guid: str,
    request: Request,
    settings: Settings = Depends(deps.settings),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    return await _store(guid, request, settings, session, user, full=True)


@router.patch("/v1/content/{guid}/repository")
async def patch_repository(
    guid: str,
    request: Request,
    settings: Settings = Depends(deps.settings),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    return await _store(guid, request, settings, session, user, full=False)


@router.delete("/v1/content/{guid}/repository", status_code=204)
def delete_repository(
    guid: str,
    settings: Settings = Depends(deps.settings),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> Response:
    _enabled(settings)
    content = managed_content(session, user, guid)
    repo = _git_managed(session, content)
    session.delete(repo)
    audit.record(session, user, "remove_repository", f"Content {describe(content)} no longer follows {repo.repository}.")
    session.commit()
    return Response(status_code=204)


@router.post("/v1/content/{guid}/repository/bundle")
async def bundle_from_repository(
    guid: str,
    request: Request,
    settings: Settings = Depends(deps.settings),
    git: GitPublisher = Depends(deps.git),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    """Fetch and record a bundle now (the answer names it); the task holds the fetch log."""
    _enabled(settings)
    content = managed_content(session, user, guid)
    if repository_of(session, content) is None:
        raise errors.bad_request("This content is not deployed from a git repository.", code=143)
    body = await json_object(request)
    unknown = sorted(set(body) - {"repository", "ref", "directory"})
    if unknown:
        raise errors.bad_request(f"Unsupported field(s) {', '.join(unknown)}.", code=146)
    for name in ("repository", "ref", "directory"):
        if name in body and not isinstance(body[name], str):
            raise errors.bad_request(f"{name} must be a string.", code=146)
    if "repository" in body:
        problem = url_problem(body["repository"], settings.git_allow_local_repositories)
        if problem:
            raise errors.ApiError(400, 164, problem)
    content_id, user_id = content.id, user.id
    session.close()
    task_id = git.tasks.create("bundle", user_id, content_id)
    lines: list[str] = []
    try:
        made = await git.make_bundle(
            content_id, user_id, lines.append, body.get("repository"), body.get("ref"), body.get("directory")
        )
    except TaskFailed as exc:
        git.finish_task(task_id, lines, exc.message)
        raise errors.bad_request(exc.message) from None
    git.finish_task(task_id, lines, "")
    return {
        "bundle_id": str(made.bundle_id),
        "task_id": task_id,
        "location": {"repository": made.repository, "ref": made.ref, "directory": made.directory,
                     "commit": made.commit},
    }


# --- push webhook (beyond Connect) --------------------------------------------------------
def webhook_url(urls: Urls, guid: str) -> str:
    return f"{urls.public}__api__/v1/git/webhooks/{guid}"


@router.get("/v1/content/{guid}/repository/webhook")
def get_webhook(
    guid: str,
    settings: Settings = Depends(deps.settings),
    urls: Urls = Depends(deps.urls),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    """The webhook's URL and whether it has a secret (the secret is never shown again)."""
    _enabled(settings)
    content = managed_content(session, user, guid)
    repo = _git_managed(session, content)
    return {"url": webhook_url(urls, guid), "configured": repo.webhook_secret_encrypted is not None}


@router.post("/v1/content/{guid}/repository/webhook")
def new_webhook_secret(
    guid: str,
    settings: Settings = Depends(deps.settings),
    urls: Urls = Depends(deps.urls),
    git: GitPublisher = Depends(deps.git),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    """A new secret for the push webhook, shown this once; the previous one stops working."""
    _enabled(settings)
    content = managed_content(session, user, guid)
    repo = _git_managed(session, content)
    secret = pysecrets.token_urlsafe(32)
    repo.webhook_secret_encrypted = git.box.encrypt(secret)
    audit.record(session, user, "set_repository_webhook", f"New push-webhook secret for content {describe(content)}.")
    session.commit()
    return {"url": webhook_url(urls, guid), "secret": secret, "configured": True}


@router.post("/v1/git/webhooks/{guid}")
async def receive_push(
    guid: str,
    request: Request,
    settings: Settings = Depends(deps.settings),
    git: GitPublisher = Depends(deps.git),
    session: Session = Depends(deps.db),
) -> Response:
    """A push delivery from GitHub, Gitea or GitLab: checked against the content's secret
    (401 and nothing deployed when it does not match), then the same redeploy as polling."""
    _enabled(settings)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_PUSH_BYTES:
            raise errors.ApiError(413, 3, f"A webhook delivery may be at most {_MAX_PUSH_BYTES} bytes.")
    refused = errors.ApiError(401, 30, "The webhook signature or token does not match this content's secret.")
    content = session.scalar(select(Content).where(Content.guid == guid))
    repo = repository_of(session, content) if content is not None else None
    if content is None or repo is None or repo.webhook_secret_encrypted is None:
        raise refused
    secret = git.box.decrypt(repo.webhook_secret_encrypted)
    if not signature_ok(secret, bytes(body), request.headers):
        raise refused
    event = request.headers.get("x-github-event") or request.headers.get("x-gitea-event") \
        or request.headers.get("x-gitlab-event") or ""
    ref = pushed_ref(bytes(body))
    if event.lower() == "ping" or ref is None:
        return _json({"deployed": False, "reason": "not a push"}, 200)
    if not ref_matches(ref, repo.branch):
        return _json({"deployed": False, "reason": f"push to {ref}, following {repo.branch}"}, 200)
    content_id, owner_id = content.id, content.owner_id
    audit.record(session, WEBHOOK, "deploy_content",
                 f"Started deploying content {describe(content)} from git: a push to {ref}.")
    session.commit()
    session.close()
    task_id = git.start_deploy(content_id, owner_id, why=f"Push webhook: {ref} changed.")
    return _json({"deployed": True, "task_id": task_id}, 202)


def _json(body: dict[str, Any], status: int) -> Response:
    from fastapi.responses import JSONResponse

    return JSONResponse(body, status_code=status)


# --- git host credentials (administrators) ------------------------------------------------
def credential_json(row: GitCredential) -> dict[str, Any]:
    return {"host": row.host, "username": row.username, "created_time": iso(row.created_time)}


@router.get("/v1/git/credentials")
def list_credentials(
    session: Session = Depends(deps.db), _admin: User = Depends(deps.administrator)
) -> list[dict[str, Any]]:
    return [credential_json(r) for r in session.scalars(select(GitCredential).order_by(GitCredential.host))]


@router.put("/v1/git/credentials/{host}")
async def put_credential(
    host: str,
    request: Request,
    git: GitPublisher = Depends(deps.git),
    session: Session = Depends(deps.db),
    admin: User = Depends(deps.administrator),
) -> dict[str, Any]:
    """Store ``{"username": ..., "password": ...}`` (or a token as the password) for
    ``host`` (``git.example.org`` or ``host:port``); the secret is never returned."""
    return _save_credential(host, await json_object(request), git, session, admin)


@router.post("/v1/git/credentials")
async def post_credential(
    request: Request,
    git: GitPublisher = Depends(deps.git),
    session: Session = Depends(deps.db),
    admin: User = Depends(deps.administrator),
) -> dict[str, Any]:
    """As PUT, with ``host`` in the body (the dashboard's form)."""
    body = await json_object(request)
    host = body.pop("host", None)
    if not isinstance(host, str) or not host.strip():
        raise errors.bad_request("host is required (git.example.org, or host:port).")
    return _save_credential(host, body, git, session, admin)


def _save_credential(
    host: str, body: dict[str, Any], git: GitPublisher, session: Session, admin: User
) -> dict[str, Any]:
    username, password = body.get("username", ""), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not password:
        raise errors.bad_request('Send {"username": "...", "password": "<password or token>"}.')
    name = host_of(f"https://{host.strip().lower()}/")
    if not name or "/" in host:
        raise errors.bad_request(f"{host!r} is not a host name.")
    row = session.scalar(select(GitCredential).where(GitCredential.host == name))
    if row is None:
        row = GitCredential(host=name, username=username, secret_encrypted=git.box.encrypt(password))
        session.add(row)
    else:
        row.username, row.secret_encrypted = username, git.box.encrypt(password)
    audit.record(session, admin, "set_git_credential", f"Stored git credentials for {name} (user {username!r}).")
    session.commit()
    return credential_json(row)


@router.delete("/v1/git/credentials/{host}", status_code=204)
def delete_credential(
    host: str, session: Session = Depends(deps.db), admin: User = Depends(deps.administrator)
) -> Response:
    row = session.scalar(select(GitCredential).where(GitCredential.host == host.strip().lower()))
    if row is None:
        raise errors.not_found("git credential", host)
    session.delete(row)
    audit.record(session, admin, "remove_git_credential", f"Deleted the git credentials for {row.host}.")
    session.commit()
    return Response(status_code=204)
