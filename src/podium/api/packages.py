"""``v1/packages``, ``v1/content/{guid}/packages`` and ``v1/content/{guid}/lockfile``:
the package inventory (:mod:`podium.inventory`) as Connect serves it.

``v1/packages`` lists the packages of each content's *active* bundle (``bundle_id``
names another bundle of the same content), one row per package: the answer to "which
content uses package X version Y". Administrators see every content's; publishers the
content they own or collaborate on; viewers are refused. The per-content list and the
lockfile follow the content's own visibility.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from packaging.utils import canonicalize_name
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from podium import auth, errors, inventory
from podium.api import deps
from podium.api.content import visible_content
from podium.api.paging import MAX_PAGE_SIZE
from podium.store.models import (
    Bundle,
    BundleEnvironment,
    Content,
    EnvironmentPackage,
    PackageEnvironment,
    Permission,
    User,
)

router = APIRouter()


def _number(name: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise errors.bad_request(f"{name} must be a number; got {value!r}.", code=25)
    return int(value)


def package_query(
    session: Session, user: User, *, name: str | None = None, language: str | None = None,
    version: str | None = None, hash: str | None = None, bundle_id: str | None = None,
    app_id: str | None = None, app_guid: str | None = None,
) -> Any:
    """Rows of :func:`package_json`'s columns the caller may see, filtered. (The columns
    only, not the four rows whole: a page sorts every matching package, and the sort
    and the ORM's objects for a few columns cost a fraction of theirs.)"""
    bundle = _number("bundle_id", bundle_id)
    query = (
        select(PackageEnvironment.language, PackageEnvironment.language_version, EnvironmentPackage.name,
               EnvironmentPackage.version, EnvironmentPackage.hash, BundleEnvironment.bundle_id, Content.id,
               Content.guid)
        .join(PackageEnvironment, PackageEnvironment.id == EnvironmentPackage.environment_id)
        .join(BundleEnvironment, BundleEnvironment.environment_id == PackageEnvironment.id)
        .join(Bundle, Bundle.id == BundleEnvironment.bundle_id)
        .join(Content, Content.id == Bundle.content_id)
    )
    # One bundle when asked (active or not), else each content's active bundle.
    query = query.where(Bundle.id == bundle if bundle is not None else Content.bundle_id == Bundle.id)
    if not auth.at_least(user, "administrator"):
        owned = select(Permission.content_id).where(
            Permission.principal_guid.in_(auth.principal_guids(session, user)), Permission.role == "owner"
        )
        query = query.where(or_(Content.owner_id == user.id, Content.id.in_(owned)))
    if name:
        query = query.where(func.lower(EnvironmentPackage.name).in_({name.lower(), canonicalize_name(name)}))
    if language:
        query = query.where(func.lower(PackageEnvironment.language) == language.lower())
    if version:
        query = query.where(EnvironmentPackage.version == version)
    if hash:
        query = query.where(EnvironmentPackage.hash == hash)
    if app_id:
        query = query.where(Content.id == _number("app_id", app_id))
    if app_guid:
        query = query.where(Content.guid == app_guid)
    return query.order_by(Content.id, PackageEnvironment.language, func.lower(EnvironmentPackage.name))


def package_json(row: Any) -> dict[str, Any]:
    """A row of :func:`package_query` as ``v1/packages`` shows it."""
    language, language_version, name, version, hash, bundle_id, content_id, content_guid = row
    return {
        "language": language.lower(),
        "language_version": language_version,
        "name": name,
        "version": version,
        "hash": hash,
        "bundle_id": str(bundle_id),
        "app_id": str(content_id),
        "app_guid": content_guid,
        "content_id": str(content_id),
        "content_guid": content_guid,
    }


@router.get("/v1/packages")
def list_packages(
    name: str | None = None,
    language: str | None = None,
    version: str | None = None,
    hash: str | None = None,
    bundle_id: str | None = None,
    app_id: str | None = None,
    app_guid: str | None = None,
    page_number: int = 1,
    page_size: int = 500,
    session: Session = Depends(deps.db),
    user: User = Depends(deps.publisher),
) -> dict[str, Any]:
    query = package_query(session, user, name=name, language=language, version=version, hash=hash,
                          bundle_id=bundle_id, app_id=app_id, app_guid=app_guid)
    if page_number < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise errors.bad_request(
            f"page_number must be 1 or more and page_size from 1 to {MAX_PAGE_SIZE}; "
            f"got {page_number} and {page_size}.", code=25,
        )
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = session.execute(query.offset((page_number - 1) * page_size).limit(page_size)).all()
    return {"results": [package_json(r) for r in rows], "current_page": page_number, "total": total}


def active_environments(session: Session, content: Content) -> list[PackageEnvironment]:
    """The package environments of the content's active bundle (Python first)."""
    if content.bundle_id is None:
        return []
    return list(session.scalars(
        select(PackageEnvironment)
        .join(BundleEnvironment, BundleEnvironment.environment_id == PackageEnvironment.id)
        .where(BundleEnvironment.bundle_id == content.bundle_id)
        .order_by(PackageEnvironment.language)
    ))


def content_packages(session: Session, content: Content, name: str | None = None) -> list[dict[str, Any]]:
    found = []
    for environment in active_environments(session, content):
        query = select(EnvironmentPackage).where(EnvironmentPackage.environment_id == environment.id)
        if name:
            query = query.where(func.lower(EnvironmentPackage.name).in_({name.lower(), canonicalize_name(name)}))
        for package in session.scalars(query.order_by(func.lower(EnvironmentPackage.name))):
            found.append({"language": environment.language.lower(), "name": package.name,
                          "version": package.version, "hash": package.hash})
    return found


@router.get("/v1/content/{guid}/packages")
def get_content_packages(
    guid: str,
    name: str | None = None,
    session: Session = Depends(deps.db),
    who: deps.Caller = Depends(deps.caller),
) -> list[dict[str, Any]]:
    return content_packages(session, visible_content(session, who.user, guid), name)


@router.get("/v1/content/{guid}/lockfile")
def get_lockfile(
    guid: str,
    session: Session = Depends(deps.db),
    who: deps.Caller = Depends(deps.caller),
) -> Response:
    """The exact requirements of the active bundle's Python environment (``requirements.txt.lock``)."""
    content = visible_content(session, who.user, guid)
    python = next((e for e in active_environments(session, content) if e.language == inventory.PYTHON), None)
    if python is None:
        raise errors.not_found("lockfile of content", guid)
    packages = [
        inventory.InstalledPackage(p.name, p.version, p.hash)
        for p in session.scalars(select(EnvironmentPackage).where(EnvironmentPackage.environment_id == python.id))
    ]
    return Response(
        inventory.requirements_lock(packages), media_type="text/plain; charset=utf-8",
        headers={"Generated-By": f"podium; python={python.language_version}",
                 "Content-Disposition": 'attachment; filename="requirements.txt.lock"'},
    )
