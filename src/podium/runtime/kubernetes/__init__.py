"""The Kubernetes execution backend: every job a ``batch/v1`` Job.

:mod:`.manifests` builds the objects (pure functions), :mod:`.client` is the narrow
interface to the API server (``kubernetes_asyncio`` behind it), :mod:`.backend`
implements :class:`~podium.runtime.base.ExecutionBackend` on top of a shared watch.
"""
