"""Choosing the execution environment for a bundle: one pure function.

:func:`select_environment` takes what a bundle asks for, the catalogue, the
content's and the server's default image and the version-matching policy, and
returns a :class:`Selection`: the chosen environment with its interpreters,
and a reason for every environment not chosen. Nothing here reads the
database, the settings or the file system.

Which environments are candidates (reference/connect-semantics.md §1.3):

1. the manifest's ``environment.identifier`` (a guid) and/or ``environment.image``:
   only the environment(s) so named, with ``matching`` ``any`` or ``exact``.
   Content and server defaults are then ignored, so re-deploying an old
   bundle resolves as it did when first deployed;
2. else the content's ``default_image_name``: environments with that image and
   ``matching`` ``any`` or ``exact``;
3. else the server's ``default_image_name`` setting, the same way;
4. else every environment with ``matching: any``. ``none`` is never selected.

Which candidates are compatible, per runtime the bundle needs (an environment
must fit all of them):

- Python: ``environment.python.requires`` when given, the newest satisfying
  installation; else by ``python_version_matching``: ``major-minor`` takes the
  bundle's exact version if installed, else the newest patch of the same
  major.minor; ``exact`` only the bundle's version. A bundle naming no version
  gets the newest installation.
- R: ``environment.r.requires`` when given, the newest satisfying; else by
  ``r_version_matching``: ``exact``; ``major-minor`` (as for Python);
  ``nearest`` (default): exact, else the newest patch of the same major.minor,
  else the closest other release line, newer winning a tie. Any R fits.
- Quarto: exact, else the newest patch of the same major.minor, else the
  nearest newer version. An environment with only older Quarto does not fit.

Tie-break between compatible environments, in this order:

1. fewer runtimes whose chosen version differs from the bundle's version;
2. closer release lines (the sum of major/minor distances, for nearest R and
   newer Quarto);
3. newer chosen installations, compared Python first, then R, then Quarto;
4. the environment created first (lowest id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from packaging.version import Version

from podium.environments.model import (
    LABELS,
    PYTHON_MATCHING,
    R_MATCHING,
    BundleRequest,
    Environment,
    Installation,
    RuntimeRequest,
)

_SETTING = {"python": "python_version_matching", "r": "r_version_matching"}


@dataclass(frozen=True)
class Policy:
    """The server's version-matching settings."""

    python_matching: str = "major-minor"
    r_matching: str = "nearest"

    def __post_init__(self) -> None:
        if self.python_matching not in PYTHON_MATCHING:
            raise ValueError(f"python_matching must be one of {PYTHON_MATCHING}")
        if self.r_matching not in R_MATCHING:
            raise ValueError(f"r_matching must be one of {R_MATCHING}")

    def rule(self, runtime: str) -> str:
        return {"python": self.python_matching, "r": self.r_matching}.get(runtime, "quarto")


@dataclass(frozen=True)
class Pick:
    """One runtime's installation in one environment, or None with the reason it does not fit."""

    installation: Installation | None
    reason: str
    inexact: int = 0  # 1 when the chosen version is not the bundle's version
    distance: int = 0  # release-line distance from the bundle's version


@dataclass(frozen=True)
class Candidate:
    environment: Environment
    compatible: bool
    reason: str
    picks: Mapping[str, Pick] = field(default_factory=dict)

    def installation(self, runtime: str) -> Installation | None:
        pick = self.picks.get(runtime)
        return pick.installation if pick else None


@dataclass(frozen=True)
class Selection:
    """The outcome: what was asked, from where, what was chosen and why not the others."""

    request: BundleRequest
    source: str  # "manifest", "content", "server" or "auto"
    target: str | None  # the image (or guid) asked for; None for automatic matching
    requested: str  # sentence saying what was asked and where it came from
    needs: str  # sentence saying which runtimes the bundle needs, under which rules
    chosen: Candidate | None
    others: tuple[Candidate, ...]

    def lines(self) -> list[str]:
        """The explanation, one sentence per line, as shown in build logs and by ``explain``."""
        lines = [self.requested, self.needs]
        if self.chosen is not None:
            env = self.chosen.environment
            lines.append(
                f"Chose environment {env.label}, {env.guid} on cluster {env.cluster_name}: "
                f"{self.chosen.reason}."
            )
        for other in self.others:
            lines.append(f"Not chosen: {other.environment.label}: {other.reason}.")
        return lines

    def failure(self) -> str:
        """The build error when nothing fits: what was asked and every candidate's reason."""
        asked = []
        if self.target:
            asked.append(f"{'environment' if self.source == 'identifier' else 'image'} {self.target!r}")
        asked += [_needs_short(name, self.request.runtime(name)) for name in self.request.needed]
        text = (
            "Cannot find a compatible execution environment for "
            f"{' and '.join(asked) or 'this bundle'}. {self.requested} {self.needs}"
        )
        if not self.others:
            return text + (
                " No execution environments are defined: an administrator can add one with "
                "'podium env add' or 'rsconnect environment add'."
            )
        return text + "\n" + "\n".join(
            f"  - {c.environment.label}: {c.reason}" for c in self.others
        )


# Where a manifest asks for each runtime, and how an administrator provides it.
_ASKED_IN = {"python": "manifest python.version", "r": "manifest platform", "quarto": "manifest quarto.version"}
_PROVIDE = {
    "python": "add a Python installation to an environment ('podium env', or the "
    "python_installations setting for this host)",
    "r": "install R on this host (Debian: r-base-core, r-cran-rmarkdown, r-cran-shiny, "
    "r-cran-plumber) and restart Podium, or add an R installation to an environment "
    "('podium env', or the r_installations setting for this host)",
    "quarto": "add a Quarto installation to an environment ('podium env', or the "
    "quarto_installations setting for this host)",
}


def missing_runtime(selection: Selection, runtime: str) -> str | None:
    """The error for a bundle needing ``runtime`` when no candidate environment has any
    installation of it (None when one has, or an environment was chosen). It names what
    was asked and what each environment has."""
    request = selection.request.runtime(runtime)
    if request is None or selection.chosen is not None:
        return None
    if any(candidate.environment.installations(runtime) for candidate in selection.others):
        return None
    label = LABELS[runtime]
    have = "; ".join(
        f"{c.environment.label} has "
        + (", ".join(f"{LABELS[n]} {_listing(c.environment.installations(n))}"
                     for n in LABELS if c.environment.installations(n)) or "no installations")
        for c in selection.others
    )
    return (
        f"This bundle needs {label} ({request.describe(runtime)}, from {_ASKED_IN[runtime]}); "
        f"no execution environment provides it. An administrator can {_PROVIDE[runtime]}."
        + (f" Environments: {have}." if have else " No execution environments are defined.")
    )


def _line(version: Version) -> tuple[int, int]:
    return version.major, version.minor


def _distance(found: Version, wanted: Version) -> int:
    """How many release lines apart: same major by minors; across majors, nearest end first."""
    majors = abs(found.major - wanted.major)
    if majors == 0:
        minors = abs(found.minor - wanted.minor)
    elif found.major < wanted.major:  # the newest of an older major is the closest
        minors = 1000 - min(found.minor, 999)
    else:  # the oldest of a newer major is the closest
        minors = min(found.minor, 999)
    return majors * 100_000 + minors


def _listing(installations: Iterable[Installation]) -> str:
    return ", ".join(i.version_text for i in sorted(installations))


def pick_installation(
    runtime: str, installations: tuple[Installation, ...], request: RuntimeRequest, rule: str
) -> Pick:
    """The installation of ``runtime`` a bundle gets in one environment (rules in the module doc)."""
    label = LABELS[runtime]
    if not installations:
        return Pick(None, f"has no {label} installation")
    have = f"has {label} {_listing(installations)}"
    if request.requires is not None:
        fits = [i for i in installations if request.requires.contains(i.version)]
        if not fits:
            return Pick(None, f"{have}; none satisfies {request.requires}")
        chosen = max(fits)
        return Pick(chosen, f"{label} {chosen.version_text} at {chosen.path} is the newest satisfying {request.requires}")
    wanted = request.version
    if wanted is None:
        chosen = max(installations)
        return Pick(
            chosen,
            f"the bundle names no {label} version; {label} {chosen.version_text} at {chosen.path} "
            "is the newest",
        )
    made = request.version_text or str(wanted)
    exact = [i for i in installations if i.version == wanted]
    if exact:
        chosen = max(exact)
        return Pick(chosen, f"{label} {chosen.version_text} at {chosen.path} is exactly the bundle's {made}")
    if rule == "exact":
        return Pick(None, f"{have}; none is exactly the bundle's {made} ({_SETTING[runtime]} = exact)")
    same_line = [i for i in installations if _line(i.version) == _line(wanted)]
    major_minor = f"{wanted.major}.{wanted.minor}"
    if same_line:
        chosen = max(same_line)
        return Pick(
            chosen,
            f"{label} {chosen.version_text} at {chosen.path} is the newest {major_minor}.x "
            f"(the bundle was made with {made})",
            inexact=1,
        )
    if rule == "major-minor":
        return Pick(None, f"{have}; none is {major_minor}.x like the bundle's {made}")
    if rule == "quarto":
        newer = [i for i in installations if i.version > wanted]
        if not newer:
            return Pick(None, f"{have}; none is {major_minor}.x or newer than the bundle's {made}")
        chosen = min(newer)
        return Pick(
            chosen,
            f"Quarto {chosen.version_text} at {chosen.path} is the nearest newer than the bundle's {made}",
            inexact=1,
            distance=_distance(chosen.version, wanted),
        )
    # nearest: the closest release line; newest first so that ties go to the newer one.
    ordered = sorted(installations, reverse=True)
    chosen = min(ordered, key=lambda i: (_distance(i.version, wanted), i.version < wanted))
    return Pick(
        chosen,
        f"{label} {chosen.version_text} at {chosen.path} is the nearest to the bundle's {made} "
        f"({_SETTING[runtime]} = nearest)",
        inexact=1,
        distance=_distance(chosen.version, wanted),
    )


def _needs_short(runtime: str, request: RuntimeRequest | None) -> str:
    assert request is not None
    label = LABELS[runtime]
    if request.requires is not None:
        return f"{label} {request.requires}"
    if request.version is None:
        return f"any {label}"
    return f"{label} {request.version_text or request.version}"


def _needs_rule(runtime: str, request: RuntimeRequest, policy: Policy) -> str:
    label = LABELS[runtime]
    if request.requires is not None:
        return f"{label} {request.requires} (environment.{runtime}.requires)"
    if request.version is None:
        return f"any {label} (the manifest names no version)"
    made = request.version_text or str(request.version)
    line = f"{request.version.major}.{request.version.minor}"
    rule = policy.rule(runtime)
    if rule == "exact":
        return f"{label} {made} exactly ({_SETTING[runtime]} = exact)"
    if rule == "major-minor":
        return f"{label} {line}.x, made with {made} ({_SETTING[runtime]} = major-minor)"
    if rule == "quarto":
        return f"Quarto {line}.x or newer, made with {made}"
    return f"the R nearest to {made} ({_SETTING[runtime]} = nearest)"


def _scope(
    request: BundleRequest, content_image: str | None, server_image: str | None
) -> tuple[str, str | None, str]:
    if request.identifier or request.image:
        named = " and ".join(
            part
            for part in (
                f"environment {request.identifier}" if request.identifier else "",
                f"image {request.image!r}" if request.image else "",
            )
            if part
        )
        source = "manifest" if request.image else "identifier"
        return source, request.image or request.identifier, (
            f"The manifest requests {named}; content and server defaults do not apply."
        )
    if content_image:
        return "content", content_image, f"The content's default image is {content_image!r} (default_image_name)."
    if server_image:
        return "server", server_image, f"The server's default image is {server_image!r} (setting default_image_name)."
    return "auto", None, "No image requested: choosing among environments with matching 'any'."


def _out_of_scope(
    env: Environment, request: BundleRequest, source: str, target: str | None, user: str | None
) -> str | None:
    """Why ``env`` is not a candidate at all, or None when it is one."""
    if env.matching == "none":
        return "its matching is 'none': never selected"
    if env.allowed_users and user is not None and user not in env.allowed_users:
        return (
            "its use is restricted to the users in its permissions, and you are not one "
            f"(an administrator adds you: POST v1/environments/{env.guid}/permissions)"
        )
    if source in ("manifest", "identifier"):
        if request.identifier and env.guid != request.identifier:
            return f"it is not environment {request.identifier}, which the manifest names"
        if request.image and env.name != request.image:
            return f"its image is not {request.image!r}, which the manifest requests"
        return None
    if source in ("content", "server"):
        if env.name != target:
            whose = "the content's" if source == "content" else "the server's"
            return f"its image is not {target!r}, {whose} default image"
        return None
    if env.matching != "any":
        return "its matching is 'exact': used only when a manifest or default names its image"
    return None


def _versions(candidate: Candidate, needed: tuple[str, ...]) -> tuple[Version, ...]:
    zero = Version("0")
    return tuple((candidate.installation(name) or Installation(zero, "")).version for name in needed)


def _inexact(candidate: Candidate) -> int:
    return sum(p.inexact for p in candidate.picks.values())


def _spread(candidate: Candidate) -> int:
    return sum(p.distance for p in candidate.picks.values())


def _why_better(winner: Candidate, loser: Candidate, needed: tuple[str, ...]) -> str:
    if _inexact(winner) != _inexact(loser):
        return "fewer of its versions differ from the bundle's"
    if _spread(winner) != _spread(loser):
        return "its versions are closer to the bundle's"
    for name in needed:
        a, b = winner.installation(name), loser.installation(name)
        if a and b and a.version != b.version:
            return f"it has newer {LABELS[name]} ({a.version_text} rather than {b.version_text})"
    return "it was created first"


def select_environment(
    request: BundleRequest,
    environments: Iterable[Environment],
    *,
    content_image: str | None = None,
    server_image: str | None = None,
    policy: Policy = Policy(),
    user: str | None = None,
) -> Selection:
    """The environment ``request`` gets, with a reason for every other one (module doc).

    ``user`` is the guid of the deploying user, checked against each environment's
    permissions; None (an administrator, or nobody) passes every one.
    """
    source, target, requested = _scope(request, content_image, server_image)
    needed = request.needed
    needs = (
        "The bundle needs " + ", ".join(_needs_rule(n, request.runtime(n), policy) for n in needed) + "."  # type: ignore[arg-type]
        if needed
        else "The bundle needs no Python, R or Quarto."
    )
    rejected: list[Candidate] = []
    compatible: list[Candidate] = []
    for env in sorted(environments, key=lambda e: e.id):
        why_not = _out_of_scope(env, request, source, target, user)
        if why_not is not None:
            rejected.append(Candidate(env, False, why_not))
            continue
        picks = {}
        for name in needed:
            runtime = request.runtime(name)
            assert runtime is not None
            picks[name] = pick_installation(name, env.installations(name), runtime, policy.rule(name))
        misses = [p.reason for p in picks.values() if p.installation is None]
        if misses:
            rejected.append(Candidate(env, False, "; ".join(misses), picks))
        else:
            reason = "; ".join(p.reason for p in picks.values()) or "the bundle needs no runtime"
            compatible.append(Candidate(env, True, reason, picks))
    ranked = sorted(compatible, key=lambda c: c.environment.id)
    ranked.sort(key=lambda c: _versions(c, needed), reverse=True)
    ranked.sort(key=lambda c: (_inexact(c), _spread(c)))
    chosen = ranked[0] if ranked else None
    outranked = [
        Candidate(
            c.environment, True,
            f"compatible ({c.reason}), but {chosen.environment.label} ranks higher: "
            f"{_why_better(chosen, c, needed)}",
            c.picks,
        )
        for c in ranked[1:]
        if chosen is not None
    ]
    others = sorted(rejected + outranked, key=lambda c: c.environment.id)
    return Selection(request, source, target, requested, needs, chosen, tuple(others))
