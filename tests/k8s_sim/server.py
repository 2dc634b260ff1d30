"""The simulated cluster's API server: the subset of the Kubernetes API Podium uses.

Discovery (``/version`` with and without the trailing slash, ``/api``, ``/apis``);
jobs (create with admission checks, get, list, watch, metadata merge patch, delete with
propagation policies), pods (get, list, watch, metadata merge patch, delete with grace, ``/log`` with ``follow``,
``timestamps``, ``tailLines``, ``limitBytes``), events (list), serviceaccounts
(create, list), secrets (create, get, list, merge patch, delete), nodes (create, list),
namespaces (create with labels, get, delete). Errors are ``Status`` bodies with the real reasons and codes.
Booleans are parsed like Go's ``strconv.ParseBool`` (clients send ``True``).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import kubernetes_validate
from aiohttp import web

from .store import Expired, Store, field_match, label_match
from .workloads import Workloads, parse_quantity

SCHEMA_VERSION = "1.33.0"
BOOKMARK_SECONDS = 1.0
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
KINDS = {"namespaces": ("v1", "Namespace"), "jobs": ("batch/v1", "Job"), "pods": ("v1", "Pod"), "events": ("v1", "Event"),
         "serviceaccounts": ("v1", "ServiceAccount"), "secrets": ("v1", "Secret"), "nodes": ("v1", "Node")}


def parse_bool(value: str | None) -> bool:
    if value is None or value == "":
        return False
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise web.HTTPBadRequest(text=f"invalid boolean {value!r}")


def status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": message, "reason": reason, "code": code}, status=code)


def self_check(obj: dict[str, Any]) -> None:
    """Every object the simulator serves must pass the real schema (strict)."""
    kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)


class ApiServer:
    def __init__(self, store: Store, workloads: Workloads) -> None:
        self.store = store
        self.workloads = workloads
        self.app = web.Application()
        add = self.app.router.add_route
        for path in ("/version", "/version/"):
            add("GET", path, self.version)
        add("GET", "/api", self.api)
        add("GET", "/apis", self.apis)
        add("GET", "/api/v1/namespaces/{ns}/{kind:pods|events|serviceaccounts|secrets}", self.list_or_watch)
        add("GET", "/apis/batch/v1/namespaces/{ns}/{kind:jobs}", self.list_or_watch)
        add("POST", "/apis/batch/v1/namespaces/{ns}/{kind:jobs}", self.create_job)
        add("POST", "/api/v1/namespaces/{ns}/{kind:serviceaccounts|secrets}", self.create_plain)
        add("GET", "/apis/batch/v1/namespaces/{ns}/{kind:jobs}/{name}", self.get)
        add("GET", "/api/v1/namespaces/{ns}/{kind:pods|serviceaccounts|secrets}/{name}", self.get)
        add("PATCH", "/api/v1/namespaces/{ns}/{kind:secrets|pods}/{name}", self.patch)
        add("PATCH", "/apis/batch/v1/namespaces/{ns}/{kind:jobs}/{name}", self.patch)
        add("DELETE", "/apis/batch/v1/namespaces/{ns}/{kind:jobs}/{name}", self.delete)
        add("DELETE", "/api/v1/namespaces/{ns}/{kind:pods}/{name}", self.delete)
        add("DELETE", "/api/v1/namespaces/{ns}/{kind:secrets}/{name}", self.delete_plain)
        add("GET", "/api/v1/{kind:nodes}", self.list_cluster)
        add("POST", "/api/v1/nodes", self.create_node)
        add("GET", "/api/v1/namespaces/{name}", self.get_namespace)
        add("GET", "/api/v1/namespaces/{ns}/pods/{name}/log", self.log)
        add("POST", "/api/v1/namespaces", self.create_namespace)
        add("DELETE", "/api/v1/namespaces/{name}", self.delete_namespace)

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "33", "gitVersion": "v1.33.0-podium-sim",
                                  "platform": "linux/amd64"})

    async def api(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})

    async def apis(self, request: web.Request) -> web.Response:
        batch = {"groupVersion": "batch/v1", "version": "v1"}
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "batch", "versions": [batch], "preferredVersion": batch}]})

    async def get(self, request: web.Request) -> web.Response:
        kind, ns, name = request.match_info["kind"], request.match_info["ns"], request.match_info["name"]
        obj = self.store.get(kind, ns, name)
        if obj is None:
            return status(404, "NotFound", f'{kind} "{name}" not found')
        return web.json_response(obj)

    async def list_cluster(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        api_version, kind_name = KINDS[kind]
        items = [obj for obj in self.store.items(kind, "") if self._matches(request, obj)]
        return web.json_response({"kind": f"{kind_name}List", "apiVersion": api_version,
                                  "metadata": {"resourceVersion": str(self.store.version)}, "items": items})

    async def create_node(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("metadata", {}).get("name", "")
        if self.store.get("nodes", "", name) is not None:
            return status(409, "AlreadyExists", f'nodes "{name}" already exists')
        return web.json_response(self.workloads.add_node(body), status=201)

    async def get_namespace(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        namespace = self.store.get("namespaces", "", name)
        if namespace is None:
            return status(404, "NotFound", f'namespaces "{name}" not found')
        return web.json_response(namespace)

    async def patch(self, request: web.Request) -> web.Response:
        """Merge patch (RFC 7386); a strategic merge patch is treated alike here."""
        kind, ns, name = request.match_info["kind"], request.match_info["ns"], request.match_info["name"]
        obj = self.store.get(kind, ns, name)
        if obj is None:
            return status(404, "NotFound", f'{kind} "{name}" not found')
        if request.content_type not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            return status(415, "UnsupportedMediaType", f"the media type {request.content_type!r} is not supported")
        body = await request.json()
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != obj["metadata"].get("resourceVersion"):  # optimistic concurrency
            return status(409, "Conflict", f'Operation cannot be fulfilled on {kind} "{name}": the object has '
                          "been modified; please apply your changes to the latest version and try again")
        if kind != "secrets" and set(body) - {"metadata"}:  # a Job's or Pod's spec is not changed here
            return status(422, "Invalid", f"{kind} \"{name}\" is invalid: only metadata may be patched here")
        _merge(obj, body)
        return web.json_response(self.store.update(kind, obj))

    async def delete_plain(self, request: web.Request) -> web.Response:
        kind, ns, name = request.match_info["kind"], request.match_info["ns"], request.match_info["name"]
        obj = self.store.get(kind, ns, name)
        if obj is None:
            return status(404, "NotFound", f'{kind} "{name}" not found')
        self.store.remove(kind, obj)
        return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    async def create_namespace(self, request: web.Request) -> web.Response:
        """Namespaces are implicit here; creating one only records it."""
        body = await request.json()
        name = body.get("metadata", {}).get("name", "")
        if self.store.get("namespaces", "", name) is not None:
            return status(409, "AlreadyExists", f'namespaces "{name}" already exists')
        created = self.store.create("namespaces", "", body)
        # the service account controller's part (a moment later on a real cluster)
        self.store.create("serviceaccounts", name, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                    "metadata": {"name": "default"}})
        return web.json_response(created, status=201)

    async def delete_namespace(self, request: web.Request) -> web.Response:
        """Deletes the namespace's jobs (with their pods) and forgets it."""
        name = request.match_info["name"]
        namespace = self.store.get("namespaces", "", name)
        for job in self.store.items("jobs", name):
            self.workloads.delete_job(job, "Background")
        for pod in self.store.items("pods", name):
            self.workloads.delete_pod(pod, 0)
        for kind in ("secrets", "serviceaccounts"):
            for obj in self.store.items(kind, name):
                self.store.remove(kind, obj)
        if namespace is None:
            return status(404, "NotFound", f'namespaces "{name}" not found')
        self.store.remove("namespaces", namespace)
        return web.json_response(namespace)

    async def create_plain(self, request: web.Request) -> web.Response:
        kind, ns = request.match_info["kind"], request.match_info["ns"]
        body = await request.json()
        name = body.get("metadata", {}).get("name", "")
        if self.store.get(kind, ns, name) is not None:
            return status(409, "AlreadyExists", f'{kind} "{name}" already exists')
        created = self.store.create(kind, ns, body)
        owners = {ref.get("uid") for ref in body.get("metadata", {}).get("ownerReferences") or []}
        if owners and not owners & {job["metadata"]["uid"] for job in self.store.items("jobs", ns)}:
            self.store.remove(kind, created)  # the garbage collector: its owner is gone (a moment later for real)
        return web.json_response(created, status=201)

    async def create_job(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        body = await request.json()
        name = body.get("metadata", {}).get("name", "")
        try:
            kubernetes_validate.validate(body, SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            return status(422, "Invalid", f'Job.batch "{name}" is invalid: {error.message}')
        problems = []
        if not _SUBDOMAIN.fullmatch(name) or len(name) > 63:
            problems.append("metadata.name: Invalid value: must be no more than 63 characters "
                            "and a lowercase RFC 1123 subdomain")
        pod_spec = body["spec"]["template"]["spec"]
        if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
            problems.append('spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"')
        for index, container in enumerate(pod_spec.get("containers", [])):
            if not container.get("image"):
                problems.append(f"spec.template.spec.containers[{index}].image: Required value")
            for group in ("requests", "limits"):
                for resource, value in ((container.get("resources") or {}).get(group) or {}).items():
                    try:
                        parse_quantity(value)
                    except ValueError as error:
                        problems.append(f"spec.template.spec.containers[{index}].resources.{group}.{resource}: "
                                        f"Invalid value: {value!r}: {error}")
        if problems:
            return status(422, "Invalid", f'Job.batch "{name}" is invalid: ' + "; ".join(problems))
        if self.store.get("jobs", ns, name) is not None:
            return status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
        body["spec"].setdefault("backoffLimit", 6)
        body["spec"].setdefault("completions", 1)
        body["spec"].setdefault("parallelism", 1)
        body["status"] = {}
        job = self.store.create("jobs", ns, body)
        self.workloads.job_created(job)
        return web.json_response(job, status=201)

    async def delete(self, request: web.Request) -> web.Response:
        kind, ns, name = request.match_info["kind"], request.match_info["ns"], request.match_info["name"]
        obj = self.store.get(kind, ns, name)
        if obj is None:
            return status(404, "NotFound", f'{kind} "{name}" not found')
        options: dict[str, Any] = {}
        if request.can_read_body:
            try:
                options = await request.json() or {}
            except ValueError:
                options = {}
        grace = request.query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        if kind == "jobs":
            self.workloads.delete_job(obj, request.query.get("propagationPolicy", options.get("propagationPolicy")))
        else:
            self.workloads.delete_pod(obj, None if grace is None else int(grace))
        return web.json_response(obj)

    def _matches(self, request: web.Request, obj: dict[str, Any]) -> bool:
        return label_match(request.query.get("labelSelector"), obj["metadata"].get("labels") or {}) \
            and field_match(request.query.get("fieldSelector"), obj)

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        kind, ns = request.match_info["kind"], request.match_info["ns"]
        if parse_bool(request.query.get("watch")):
            return await self.watch(request, kind, ns)
        api_version, kind_name = KINDS[kind]
        items = [obj for obj in self.store.items(kind, ns) if self._matches(request, obj)]
        return web.json_response({"kind": f"{kind_name}List", "apiVersion": api_version,
                                  "metadata": {"resourceVersion": str(self.store.version)}, "items": items})

    async def watch(self, request: web.Request, kind: str, ns: str) -> web.StreamResponse:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.store.watchers.add(queue)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)

        async def send(event: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")

        try:
            version = request.query.get("resourceVersion", "")
            timeout = float(request.query.get("timeoutSeconds") or 1800)
            bookmarks = parse_bool(request.query.get("allowWatchBookmarks"))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            if version in ("", "0"):
                last = self.store.version
                for obj in self.store.items(kind, ns):
                    if self._matches(request, obj):
                        await send("ADDED", obj)
                backlog = []
            else:
                last = int(version)
                try:
                    backlog = self.store.since(last)
                except Expired:
                    await send("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                         "status": "Failure", "reason": "Expired", "code": 410,
                                         "message": f"too old resource version: {version} ({self.store.oldest})"})
                    return response
            for entry in backlog:
                last = await self._forward(request, send, entry, kind, ns, last)
            while (remaining := deadline - loop.time()) > 0:
                try:
                    entry = await asyncio.wait_for(queue.get(), min(remaining, BOOKMARK_SECONDS))
                except TimeoutError:
                    if bookmarks:
                        api_version, kind_name = KINDS[kind]
                        await send("BOOKMARK", {"kind": kind_name, "apiVersion": api_version,
                                                "metadata": {"resourceVersion": str(self.store.version)}})
                    continue
                if entry is None:  # Store.drop_watches(): the server ends the watch
                    break
                last = await self._forward(request, send, entry, kind, ns, last)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.watchers.discard(queue)
        return response

    async def _forward(self, request: web.Request, send: Any, entry: Any, kind: str, ns: str, last: int) -> int:
        version, entry_kind, entry_ns, event, obj = entry
        if version <= last:
            return last
        if entry_kind == kind and entry_ns == ns and self._matches(request, obj):
            await send(event, obj)
        return version

    async def log(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = self.store.get("pods", ns, name)
        if pod is None:
            return status(404, "NotFound", f'pods "{name}" not found')
        run = self.workloads.runs.get(pod["metadata"]["uid"])
        state = (pod["status"].get("containerStatuses") or [{}])[0].get("state", {})
        if run is None or run.handle is None or not ({"running", "terminated"} & set(state)):
            reason = (state.get("waiting") or {}).get("reason", "ContainerCreating")
            return status(400, "BadRequest",
                          f'container "job" in pod "{name}" is waiting to start: {reason}')
        follow = parse_bool(request.query.get("follow"))
        stamps = parse_bool(request.query.get("timestamps"))
        tail = request.query.get("tailLines")
        limit = int(request.query.get("limitBytes") or 0)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        lines: list[str] = []
        written = 0

        async def emit(text: str) -> bool:
            nonlocal written
            data = text.encode()
            if limit and written + len(data) > limit:
                data = data[: limit - written]
            written += len(data)
            await response.write(data)
            return not limit or written < limit

        try:
            async for line in self.workloads.local.logs(run.handle, follow=follow and tail is None):
                stamp = line.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                text = f"{stamp} {line.data}\n" if stamps else f"{line.data}\n"
                if tail is not None:
                    lines.append(text)
                elif not await emit(text):
                    break
            for text in lines[-int(tail):] if tail is not None and int(tail) > 0 else []:
                if not await emit(text):
                    break
        except ConnectionResetError:
            pass
        return response


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
