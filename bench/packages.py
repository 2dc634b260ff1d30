"""Listing a large package inventory through ``GET v1/packages``.

    python bench/packages.py                  # 1,000 items, 300 environments of 60 packages
    python bench/packages.py --items 3000

Every build records the packages it installed (:mod:`podium.inventory`), and
``v1/packages`` lists one row per package of each content item's active bundle: an
organisation of 1,000 items has tens of thousands. posit-sdk's ``client.packages.fetch()``
asks for them all in one page (``page_size=1000000``); other clients page through them
500 at a time (``page_number``); an administrator asks for one package ("which content
uses package X version Y"). A real ``podium serve`` (SQLite, a temporary data dir, pinned
to core 0) gets ``--items`` content items written to its database before it starts, each
with an active bundle using one of ``--environments`` environments of ``--packages``
packages (as builds share environments by fingerprint). Printed, each against a small
API request (``GET server_settings``, the best of 10, the baseline of the same run):

- every package through posit-sdk (one page; the best of 3);
- every package in pages of 500: the whole time, and the first and last page's own
  time (the best of 3);
- one package by name and version (the best of 3).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hits import timed_get
from podium_server import podium_server


def write_inventory(data_dir: str, items: int, environments: int, packages: int) -> None:
    """``items`` content items, each with an active bundle on one of ``environments``
    package environments of ``packages`` packages, written to the data dir's database."""
    from sqlalchemy import insert, select, update

    from podium.settings import load_settings
    from podium.store import Store
    from podium.store.models import (
        Bundle,
        BundleEnvironment,
        Content,
        EnvironmentPackage,
        PackageEnvironment,
        User,
    )

    store = Store(load_settings(None, data_dir=data_dir).effective_database_url)
    with store.session() as session:
        owner = session.scalars(select(User.id).where(User.user_role == "administrator")).first()
        session.execute(insert(PackageEnvironment), [
            {"fingerprint": uuid.uuid4().hex, "path": os.path.join(data_dir, "bench-envs", str(n)),
             "language": "Python", "language_version": "3.11.7", "image_name": "Local"}
            for n in range(environments)])
        envs = list(session.scalars(select(PackageEnvironment.id).order_by(PackageEnvironment.id)))
        session.execute(insert(EnvironmentPackage), [
            {"environment_id": env, "name": f"package-{p:03d}", "version": f"1.{n % 7}.{p}", "hash": None}
            for n, env in enumerate(envs) for p in range(packages)])
        session.execute(insert(Content), [{"name": f"item-{n}", "owner_id": owner} for n in range(items)])
        ids = list(session.scalars(select(Content.id).order_by(Content.id)))
        session.execute(insert(Bundle), [
            {"content_id": content, "size": 1, "archive_md5": "", "archive_sha1": "", "app_mode": "python-api",
             "manifest": {}} for content in ids])
        bundles = session.execute(select(Bundle.id, Bundle.content_id).order_by(Bundle.id)).all()
        session.execute(update(Content), [{"id": content, "bundle_id": bundle} for bundle, content in bundles])
        session.execute(insert(BundleEnvironment), [
            {"bundle_id": bundle, "environment_id": envs[n % len(envs)]} for n, (bundle, _) in enumerate(bundles)])
        session.commit()
    store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000, help="content items (default 1,000)")
    parser.add_argument("--environments", type=int, default=300, help="package environments (default 300)")
    parser.add_argument("--packages", type=int, default=60, help="packages an environment (default 60)")
    args = parser.parse_args()

    import tempfile

    from posit import connect

    with tempfile.TemporaryDirectory(prefix="podium-bench-packages-") as work:
        data_dir = os.path.join(work, "data")
        with podium_server(data_dir=data_dir) as server:  # an administrator and the schema
            key = server.key
        write_inventory(data_dir, args.items, args.environments, args.packages)
        with podium_server(data_dir=data_dir, key=key) as server:
            packages = f"{server.base}/v1/packages"
            baseline = timed_get(server.api, f"{server.base}/server_settings", 10)
            client = connect.Client(server.base.removesuffix("/__api__"), key)
            total = args.items * args.packages
            sdk = float("inf")
            for _ in range(3):
                started = time.monotonic()
                every = list(client.packages.fetch())
                sdk = min(sdk, time.monotonic() - started)
                assert len(every) == total, f"{len(every)} packages listed, {total} expected"
            pages = -(-total // 500)
            started = time.monotonic()
            for number in range(1, pages + 1):
                server.api.get(packages, params={"page_size": 500, "page_number": number}).raise_for_status()
            paged = time.monotonic() - started
            first = timed_get(server.api, f"{packages}?page_size=500&page_number=1")
            last = timed_get(server.api, f"{packages}?page_size=500&page_number={pages}")
            one = timed_get(server.api, f"{packages}?name=package-007&version=1.3.7")
            print(f"{args.items:,} items, {total:,} packages in their active bundles "
                  f"({args.environments} environments of {args.packages})")
            print(f"baseline, GET server_settings: {baseline * 1000:.1f} ms (best of 10)")
            print(f"every package in {pages} pages of 500: {paged:.2f} s ({paged / pages * 1000:.0f} ms a page "
                  "on average)")
            for label, seconds in ((f"every package through posit-sdk (one page of {total:,})", sdk),
                                   ("the first page of 500", first), (f"the last page (page {pages})", last),
                                   ("one package by name and version", one)):
                print(f"{label}: {seconds * 1000:.0f} ms, {seconds / baseline:.1f}x the baseline")

if __name__ == "__main__":
    main()
