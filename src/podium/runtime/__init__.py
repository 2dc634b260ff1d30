"""Execution backends: the interface every job goes through, and the backends.

See :mod:`podium.runtime.base` for the interface and its lifecycle rules and
:mod:`podium.runtime.local` for the local backend.
"""

from podium.runtime.base import (
    BackendError,
    ExecutionBackend,
    JobHandle,
    JobKind,
    JobSpec,
    JobState,
    JobStatus,
    LogLine,
    Placement,
    Resources,
    VolumeMount,
    valid_key,
)
from podium.runtime.local import LocalBackend, allocate_port

__all__ = [
    "BackendError",
    "ExecutionBackend",
    "JobHandle",
    "JobKind",
    "JobSpec",
    "JobState",
    "JobStatus",
    "LocalBackend",
    "LogLine",
    "Placement",
    "Resources",
    "VolumeMount",
    "allocate_port",
    "valid_key",
]
