"""What the Runtime, Resources and Execution environment panes show.

Each setting is described once here with its label, unit and help, and paired
with the content's value and the server's default (and maximum, where the
server has one), so the page can say what an empty field means.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from podium import errors
from podium.api import environments as environments_api
from podium.resources import CPU, MEMORY
from podium.settings import Settings
from podium.store.models import Bundle, Content, User

MIB = 1024 * 1024


@dataclass(frozen=True)
class Field:
    name: str  # the API field
    label: str
    help: str
    value: Any  # the content's value in the unit shown; None = server default
    default: Any  # the server default, in the unit shown (None: no default)
    maximum: Any = None
    kind: str = "int"  # how the page's script sends it: int, float
    unit: str = ""
    scale: int = 1  # API value = shown value * scale
    step: str = "1"


def _shown(value: float | None, scale: int) -> float | None:
    if value is None:
        return None
    shown = value / scale
    return int(shown) if float(shown).is_integer() else round(shown, 3)


def runtime_fields(s: Settings, content: Content) -> list[Field]:
    return [
        Field("min_processes", "Minimum processes",
              "Processes kept running even with no viewers (0 lets the app sleep).",
              content.min_processes, s.min_processes, s.min_processes_limit),
        Field("max_processes", "Maximum processes",
              "Most processes started for this content on one server.",
              content.max_processes, s.max_processes, s.max_processes_limit),
        Field("max_conns_per_process", "Connections per process",
              "Most concurrent connections one process serves.",
              content.max_conns_per_process, s.max_conns_per_process),
        Field("load_factor", "Load factor",
              "0.0–1.0: how early another process starts as connections grow.",
              content.load_factor, s.load_factor, 1.0, kind="float", step="0.05"),
        Field("idle_timeout", "Idle timeout", "Stop an extra process after this long with no connections.",
              content.idle_timeout, s.idle_timeout_seconds, unit="seconds"),
        Field("init_timeout", "Initial timeout", "Time a new process has to start answering.",
              content.init_timeout, s.init_timeout_seconds, unit="seconds"),
        Field("connection_timeout", "Connection timeout",
              "Close a connection with no data either way for this long (0: never).",
              content.connection_timeout, s.connection_timeout_seconds, unit="seconds"),
        Field("read_timeout", "Read timeout",
              "Close a connection when the viewer sends nothing for this long (0: never).",
              content.read_timeout, s.read_timeout_seconds, unit="seconds"),
    ]


def resource_fields(settings: Settings, content: Content) -> list[Field]:
    """The resource settings with the server's defaults and maxima (0 there means none)."""
    policy = settings.resource_policy
    fields = []
    for kind, which, label, help_text in (
        (CPU, "request", "CPU request", "CPU cores reserved for each process (fractions allowed)."),
        (CPU, "limit", "CPU limit", "Most CPU cores each process may use."),
        (MEMORY, "request", "Memory request", "Memory reserved for each process."),
        (MEMORY, "limit", "Memory limit",
         "Most memory each process may use; a process using more is stopped."),
    ):
        name = kind.field(which)
        default = kind.default(policy, which) or None
        maximum = kind.maximum(policy, which) or None
        if kind is CPU:
            fields.append(Field(name, label, help_text, getattr(content, name), default, maximum,
                                kind="float", unit="cores", step="0.1"))
        else:
            fields.append(Field(name, label, help_text, _shown(getattr(content, name), MIB),
                                _shown(default, MIB), _shown(maximum, MIB), kind="int",
                                unit="MiB", scale=MIB, step="any"))
    return fields


def environment_facts(settings: Settings, session: Session, user: User, content: Content) -> dict[str, Any]:
    """What the active bundle runs with, what its manifest asked for, and why that choice.

    The explanation is the one ``GET v1/content/{guid}/bundles/{id}/environment``
    answers: which environment the bundle would get now, and why not the others.
    """
    bundle = session.get(Bundle, content.bundle_id) if content.bundle_id is not None else None
    chosen = {
        "cluster_name": content.cluster_name,
        "image_name": content.image_name,
        "environment_guid": content.environment_guid,
        "py_version": content.py_version,
        "r_version": content.r_version,
        "quarto_version": content.quarto_version,
        "python_path": bundle.python_path if bundle is not None else None,
    }
    explanation: dict[str, Any] | None = None
    problem = ""
    if bundle is not None:
        try:
            explanation = environments_api.bundle_environment(
                content.guid, str(bundle.id), settings, session, user
            )
        except errors.ApiError as exc:
            problem = exc.message
    return {"bundle": bundle, "chosen": chosen, "explanation": explanation, "problem": problem,
            "server_default_image": settings.default_image_name}


# Render schedule types as the Renderings pane offers them: (type, label, unit of N).
SCHEDULE_TYPES: tuple[tuple[str, str, str], ...] = (
    ("minute", "Every N minutes", "minutes"),
    ("hour", "Every N hours", "hours"),
    ("day", "Every N days", "days"),
    ("week", "Every N weeks", "weeks"),
    ("year", "Every N years", "years"),
    ("weekday", "Every weekday (Monday to Friday)", ""),
    ("dayofweek", "On chosen days of the week", ""),
)
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def schedule_view(schedule: dict[str, Any]) -> dict[str, Any]:
    """A schedule as the API answers it, with its rule read and described in words."""
    try:
        rule = json.loads(schedule.get("schedule") or "{}")
    except ValueError:
        rule = {}
    rule = rule if isinstance(rule, dict) else {}
    kind = schedule.get("type")
    n = rule.get("N") if isinstance(rule.get("N"), int) else 1
    days = [d for d in rule.get("Days") or [] if isinstance(d, int) and 0 <= d <= 6]
    units = {t: unit for t, _, unit in SCHEDULE_TYPES}
    if kind == "weekday":
        words = "every weekday"
    elif kind == "dayofweek":
        words = "every " + ", ".join(WEEKDAYS[d] for d in sorted(days))
    elif kind in units:
        unit = units[str(kind)]
        words = f"every {unit[:-1]}" if n == 1 else f"every {n} {unit}"
    else:
        words = str(kind)
    return {**schedule, "n": n, "days": days, "words": words}
