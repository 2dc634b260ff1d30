"""The narrow interface the backend uses to talk to the API server, and its implementation.

:class:`KubeClient` is all the backend needs: create/get/delete Jobs, delete Pods,
list and watch Jobs and Pods by label, follow a pod's log, list events, and create,
patch and delete the Secrets that hold content's secret variables, and merge-patch
Jobs and Pods (the warm pool's claims, :mod:`.warmpool`). Objects are
plain dicts exactly as the API server sent them (no generated models: they are slow,
and strict about fields that vary between server versions).

:class:`AsyncioKubeClient` implements it with ``kubernetes_asyncio``, always with
``_preload_content=False``; its exceptions (``ApiException``, aiohttp errors) become
:class:`KubeApiError` here and nowhere else. Swapping in the official client's
``kubernetes.aio`` later means rewriting this module only.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

import aiohttp

Kind = Literal["jobs", "pods"]


class KubeApiError(Exception):
    """The API server refused a request (``status`` its HTTP status, 0 when unreachable)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class KubeClient(Protocol):
    async def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def patch_secret(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (``application/merge-patch+json``)."""
        ...

    async def delete_secret(self, namespace: str, name: str) -> None: ...

    async def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch; with ``metadata.resourceVersion`` in it the API server
        applies it only to that version (else 409 Conflict): optimistic concurrency."""
        ...

    async def patch_pod(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    async def get_job(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete with ``propagationPolicy=Background`` (its pods go too)."""
        ...

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int) -> None: ...

    async def list_objects(self, kind: Kind, namespace: str, selector: str) -> tuple[list[dict[str, Any]], str]:
        """Items and the list's resourceVersion."""
        ...

    def watch(
        self, kind: Kind, namespace: str, selector: str, resource_version: str, timeout_seconds: int
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``type``, ``object``) from ``resource_version``, bookmarks included.
        An ``ERROR`` event is yielded as it came (410 Expired among them)."""
        ...

    def pod_log(self, namespace: str, name: str, follow: bool) -> AsyncIterator[str]:
        """Lines (with their RFC 3339 timestamps) of the pod's only container."""
        ...

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class AsyncioKubeClient:
    """:class:`KubeClient` over ``kubernetes_asyncio``."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes_asyncio import client

        self._api = api_client
        self._core = client.CoreV1Api(api_client)
        self._batch = client.BatchV1Api(api_client)

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> AsyncioKubeClient:
        """From a kubeconfig file, or the in-cluster service account when none is given
        and Podium runs in a pod."""
        from kubernetes_asyncio import client, config

        try:
            if kubeconfig is None:
                try:
                    # kubernetes_asyncio leaves this one function unannotated
                    config.load_incluster_config()  # type: ignore[no-untyped-call]
                    return cls(client.ApiClient())
                except config.ConfigException:
                    pass
            api = await config.new_client_from_config(config_file=kubeconfig, context=context)
        except (config.ConfigException, OSError, ValueError) as error:
            raise KubeApiError(0, "ConfigError", str(error)) from error
        return cls(api)

    async def _json(self, call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        response = await self._call(call, *args, **kwargs)
        async with response:
            return dict(await response.json(content_type=None))

    async def _call(self, call: Any, *args: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            response: aiohttp.ClientResponse = await call(*args, _preload_content=False, **kwargs)
            if response.status >= 400:  # without preloading, the client does not check
                async with response:
                    raise _status_error(response.status, await response.text())
            return response
        except ApiException as error:
            raise _translate(error) from error
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise KubeApiError(0, "Unreachable", str(error) or type(error).__name__) from error

    async def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json(self._batch.create_namespaced_job, namespace, body)

    async def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._json(self._batch.read_namespaced_job, name, namespace)

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json(self._core.create_namespaced_secret, namespace, body)

    async def patch_secret(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._json(
            self._core.patch_namespaced_secret, name, namespace, patch,
            _content_type="application/merge-patch+json",
        )

    async def delete_secret(self, namespace: str, name: str) -> None:
        await self._json(self._core.delete_namespaced_secret, name, namespace)

    async def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._json(
            self._batch.patch_namespaced_job, name, namespace, patch,
            _content_type="application/merge-patch+json",
        )

    async def patch_pod(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._json(
            self._core.patch_namespaced_pod, name, namespace, patch,
            _content_type="application/merge-patch+json",
        )

    async def delete_job(self, namespace: str, name: str) -> None:
        await self._json(
            self._batch.delete_namespaced_job, name, namespace, propagation_policy="Background"
        )

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int) -> None:
        await self._json(
            self._core.delete_namespaced_pod, name, namespace, grace_period_seconds=grace_seconds
        )

    def _lister(self, kind: Kind) -> Any:
        return self._batch.list_namespaced_job if kind == "jobs" else self._core.list_namespaced_pod

    async def list_objects(self, kind: Kind, namespace: str, selector: str) -> tuple[list[dict[str, Any]], str]:
        body = await self._json(self._lister(kind), namespace, label_selector=selector)
        return list(body.get("items") or []), str(body["metadata"].get("resourceVersion", ""))

    async def watch(
        self, kind: Kind, namespace: str, selector: str, resource_version: str, timeout_seconds: int
    ) -> AsyncIterator[dict[str, Any]]:
        response = await self._call(
            self._lister(kind), namespace, label_selector=selector, watch=True,
            resource_version=resource_version, allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _request_timeout=aiohttp.ClientTimeout(sock_read=timeout_seconds + 30),
        )
        async with response:
            try:
                async for raw in response.content:
                    if raw.strip():
                        yield json.loads(raw)
            except (aiohttp.ClientError, TimeoutError) as error:
                raise KubeApiError(0, "Unreachable", str(error) or type(error).__name__) from error

    async def pod_log(self, namespace: str, name: str, follow: bool) -> AsyncIterator[str]:
        response = await self._call(
            self._core.read_namespaced_pod_log, name, namespace, follow=follow, timestamps=True,
            _request_timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )
        async with response:
            try:
                async for raw in response.content:
                    yield raw.decode("utf-8", "replace").rstrip("\n")
            except (aiohttp.ClientError, TimeoutError) as error:
                raise KubeApiError(0, "Unreachable", str(error) or type(error).__name__) from error

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        body = await self._json(self._core.list_namespaced_event, namespace, field_selector=field_selector)
        return list(body.get("items") or [])

    async def close(self) -> None:
        await self._api.close()


SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def own_service_account(token_file: str = SERVICE_ACCOUNT_TOKEN) -> str | None:
    """The service account this process runs as in a pod (from its token's subject,
    ``system:serviceaccount:<namespace>:<name>``), or None outside a pod."""
    try:
        with open(token_file) as file:
            payload = file.read().strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (OSError, IndexError, ValueError):
        return None
    subject = str(claims.get("sub", "")) if isinstance(claims, dict) else ""
    parts = subject.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return parts[3]
    return None


def _status_error(status: int, text: str) -> KubeApiError:
    try:
        body = json.loads(text)
        return KubeApiError(status, str(body.get("reason") or ""), str(body.get("message") or ""))
    except (TypeError, ValueError, AttributeError):
        return KubeApiError(status, "", text)


def _translate(error: Any) -> KubeApiError:
    reason, message = str(error.reason or ""), ""
    try:
        body = json.loads(error.body or "{}")
        reason, message = str(body.get("reason") or reason), str(body.get("message") or "")
    except (TypeError, ValueError):
        message = str(error.body or "")
    return KubeApiError(int(error.status or 0), reason, message)
