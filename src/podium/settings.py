"""Every Podium setting, declared once.

Each field has a default, its unit in its name and help text (the field
description). Values come, lowest precedence first, from the defaults, a TOML
settings file (``--config``), ``PODIUM_<NAME>`` environment variables, and
explicit overrides (command-line flags). The TOML file groups settings in
sections (``[server]``, ``[bundles]`` ...): the section a field belongs to is
declared beside it, and ``podium config --defaults`` prints the whole file,
commented, from these declarations.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from podium.environments.validate import validate_declarations
from podium.resources import GpuPolicy, JobPolicy, ResourcePolicy, service_account_problem


class SettingsError(Exception):
    """A settings file or value that cannot be used; the message says what to fix."""


# a Kubernetes label value: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/
_NODE_ID = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


def setting(default: Any, section: str, help: str, **kwargs: Any) -> Any:
    """Declare a setting: its default, its TOML section and its help text."""
    return Field(default, description=help, json_schema_extra={"section": section}, **kwargs)


class Settings(BaseSettings):
    """Server settings. Read with :func:`load_settings`."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_", extra="forbid", validate_default=True)

    # [server]
    data_dir: Path = setting(
        Path("var"),
        "server",
        "Directory holding the database (SQLite), bundles, unpacked content, package "
        "environments, job logs and rendered output. Created if missing.",
    )
    listen: str = setting(
        "127.0.0.1:3939", "server", "Address and port the server listens on, as HOST:PORT."
    )
    public_url: str = setting(
        "",
        "server",
        "URL users reach Podium at, used to build content_url and dashboard_url. Empty means "
        "http://<listen>/.",
    )
    content_origin: str = setting(
        "",
        "server",
        "Where published content is served: an origin of its own, never the dashboard's, so "
        "a published page cannot act with its viewer's dashboard session. Either one origin "
        "for all content (https://content.example.org) or, with {guid}, a host per content "
        "item (https://{guid}.content.example.org: wildcard DNS and certificate; content "
        "items then cannot read each other's pages either). Prefer a registrable domain of "
        "its own, or at least HTTPS, so content cannot set cookies for the dashboard's domain. "
        "Requests whose Host is the content origin's are served as content on any listener "
        "(a reverse proxy may send both names to `listen`). Empty: this server's second "
        "listener, content_listen, named http://localhost:<port> when the dashboard is on "
        "127.0.0.1 (and http://127.0.0.1:<port> when it is on localhost), so the browser keeps "
        "them apart with no set-up.",
    )
    content_listen: str = setting(
        "",
        "server",
        "HOST:PORT of a second listener that serves only content. Empty: the listen host with "
        "the next port (3940 beside 3939) when content_origin is empty, none otherwise.",
    )
    bootstrap_admin_on_first_start: bool = setting(
        True,
        "server",
        "On a server with no users, create an administrator named 'admin' at start and print "
        "its API key and password once on standard error.",
    )
    secret_key_file: Path | None = setting(
        None,
        "server",
        "File holding the key that encrypts environment variable values at rest. Empty means "
        "<data_dir>/secret.key, created on first start with mode 0600.",
    )
    shutdown_grace_seconds: float = setting(
        10.0, "server", "On SIGTERM, how long open requests may finish before the server stops."
    )
    shutdown_delay_seconds: float = setting(
        0.0,
        "server",
        "On SIGTERM, how long the server keeps serving, answering 503 at /__ready__, before "
        "it stops taking requests: time for a load balancer (a Kubernetes Service) to stop "
        "sending it any. The Kubernetes manifests set 5.",
        ge=0,
    )

    node_id: str = setting(
        "",
        "server",
        "This server node's name, recorded on every job, task and rendering it launches and "
        "on its heartbeat row: a node stops, adopts and deletes only its own jobs. At most 63 "
        "characters of [A-Za-z0-9._-] (it labels Kubernetes Jobs). Empty: <hostname>-<8 hex "
        "digits of the data dir's path>-<listen port>, the same on every restart of one node. "
        "Several nodes sharing one database must have different ids.",
    )
    runtime_dir: Path | None = setting(
        None,
        "server",
        "This node's own directory for its sockets (the app's, content processes'), never on "
        "the shared data volume; created with mode 0700. Empty: a folder named after the "
        "node id under $XDG_RUNTIME_DIR/podium, else /run/podium when writable (or /run is), "
        "else <system temp dir>/podium-<uid>. It may not be inside data_dir. Keep it short: a "
        "unix socket path holds at most 107 bytes (content processes whose socket would not "
        "fit are reached over TCP).",
    )
    node_heartbeat_seconds: float = setting(
        2.0,
        "server",
        "How often a node writes its heartbeat row and renews its duty leases (several nodes "
        "on one database).",
        gt=0,
    )
    node_timeout_seconds: float = setting(
        10.0,
        "server",
        "A node whose heartbeat is older than this is dead: a live node claims it once, stops "
        "or records as lost its jobs, fails its tasks, and takes over its duties (leases "
        "expire after this long unless renewed). A duty moves within node_timeout_seconds + "
        "node_heartbeat_seconds of a crash, at once after a clean stop. Must be at least "
        "twice node_heartbeat_seconds; nodes' clocks must agree (NTP) to well within it.",
        gt=0,
    )

    # [database]
    database_url: str = setting(
        "",
        "database",
        "SQLAlchemy URL of the database. Empty means SQLite at <data_dir>/db/podium.sqlite. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/dbname (needed for several nodes).",
    )

    # [auth]
    session_lifetime_seconds: int = setting(
        8 * 3600, "auth", "How long a browser login session lasts without activity."
    )
    content_session_lifetime_seconds: int = setting(
        3600,
        "auth",
        "How long a viewer's sign-in to one content item lasts on the content origin before "
        "the browser is sent through the dashboard again (silently while the dashboard "
        "session lasts). Signing out of the dashboard ends it within seconds.",
        gt=0,
    )
    session_cookie_secure: bool = setting(
        False,
        "auth",
        "Mark the session cookie Secure (sent over HTTPS only). When not set, it is on exactly "
        "when public_url starts with https://; set it explicitly to override.",
    )
    publishers_can_manage_vanities: bool = setting(
        True,
        "auth",
        "Whether publishers may set and remove the vanity paths of content they own or "
        "collaborate on (Connect's Authorization.PublishersCanManageVanities). When off, only "
        "administrators may.",
    )
    signin_free_failures_per_account: int = setting(
        5,
        "auth",
        "Failed sign-ins an account may have in a row before each further attempt must wait "
        "(see auth_failure_base_delay_seconds). A successful sign-in starts the count again.",
        ge=0,
    )
    signin_free_failures_per_address: int = setting(
        20,
        "auth",
        "Failed sign-ins one client address may have in a row, whatever the accounts, before "
        "each further attempt from it must wait. Higher than per account: many people may "
        "share one address. Successes do not reset it (an attacker could sign in to their own "
        "account to clear it).",
        ge=0,
    )
    api_key_free_failures_per_address: int = setting(
        10,
        "auth",
        "Requests with a wrong API key one client address may make in a row before each further "
        "request with an API key from it must wait (429 with Retry-After).",
        ge=0,
    )
    auth_failure_base_delay_seconds: float = setting(
        1.0,
        "auth",
        "Wait after the first failure beyond the free ones; it doubles with each further "
        "failure. Attempts made while waiting are answered 429 without being checked.",
        gt=0,
    )
    auth_failure_max_delay_seconds: float = setting(
        300.0, "auth", "Longest wait between attempts however many failures came before.", gt=0
    )
    auth_failure_window_seconds: float = setting(
        900.0,
        "auth",
        "Failures further apart than this do not add up: the count starts again after a quiet "
        "period this long.",
        gt=0,
    )
    signin_lockout_failures: int = setting(
        0,
        "auth",
        "Lock an account after this many failed sign-ins in a row (the delays above still "
        "apply); an administrator unlocks it. 0 = never. Off by default: anyone who knows a "
        "user name could lock its owner out, administrators included, while the growing "
        "delays already make guessing slow.",
        ge=0,
    )

    # [bundles]
    bundle_max_bytes: int = setting(
        1024**3, "bundles", "Largest bundle archive (compressed) accepted on upload."
    )
    bundle_max_unpacked_bytes: int = setting(
        4 * 1024**3, "bundles", "Largest total size of the files inside a bundle."
    )
    bundle_max_files: int = setting(100_000, "bundles", "Most files and folders a bundle may hold.")
    bundle_max_compression_ratio: float = setting(
        200.0,
        "bundles",
        "Largest ratio of unpacked to compressed size; beyond it a bundle is refused as a "
        "likely gzip bomb.",
    )

    # [tasks]
    task_wait_max_seconds: float = setting(
        30.0, "tasks", "Longest time GET v1/tasks/{id}?wait=N holds a request before answering."
    )

    # [python]
    python_installations: list[str] = setting(
        [],
        "python",
        "Python interpreters content may use, as paths. Empty means discover them: python3.X "
        "on PATH, /usr/bin, /usr/local/bin and pyenv's versions. A listed one that cannot be "
        "used is left out, with a warning at start giving the reason.",
    )
    python_version_matching: str = setting(
        "major-minor",
        "python",
        "How a bundle's Python version picks an interpreter when its manifest has no "
        "environment.python.requires: 'major-minor' (same 3.X: the bundle's own version if "
        "installed, else the newest patch) or 'exact'.",
        pattern="^(major-minor|exact)$",
    )
    package_index_url: str = setting(
        "",
        "python",
        "Package index builds install from (uv --index-url). Empty means uv's default (PyPI) "
        "or UV_INDEX_URL from the server's environment.",
    )
    build_timeout_seconds: int = setting(
        1800, "python", "Longest time a package environment build may take before it is stopped."
    )

    # [environments]
    default_image_name: str = setting(
        "",
        "environments",
        "Image of the execution environment used when neither a bundle's manifest "
        "(environment.image) nor its content (default_image_name) names one. Empty means "
        "automatic matching among environments with matching 'any'.",
    )
    local_environment_matching: str = setting(
        "any",
        "environments",
        "Matching mode of the 'Local' environment describing this host's interpreters: 'any' "
        "(selected automatically or by name), 'exact' (only when named) or 'none' (never).",
        pattern="^(any|exact|none)$",
    )
    r_version_matching: str = setting(
        "nearest",
        "environments",
        "How a bundle's R version picks an installation when its manifest has no "
        "environment.r.requires: 'nearest' (exact, else the closest), 'major-minor' or 'exact'.",
        pattern="^(nearest|major-minor|exact)$",
    )
    r_installations: list[str] = setting(
        [],
        "environments",
        "R executables (R, or Rscript standing for the R beside it) of the 'Local' environment. "
        "Empty means R (else Rscript) on PATH. A listed one that cannot be used is left out, "
        "with a warning at start giving the reason.",
    )
    quarto_installations: list[str] = setting(
        [],
        "environments",
        "Quarto executables of the 'Local' environment. Empty means quarto on PATH. A listed one "
        "that cannot be used is left out, with a warning at start giving the reason.",
    )
    declared_environments: list[dict[str, Any]] = setting(
        [],
        "environments",
        "Execution environments kept from this file, created or updated at start and refused "
        "to API edits; one [[environments.declared_environments]] table each, with the fields "
        "of POST v1/environments: name (the image), title, matching, python = [{version = "
        '"3.11.9", path = "/opt/python/3.11.9/bin/python"}], r, quarto. Removing one here '
        "removes it at the next start.",
    )

    # [r]
    r_repository_url: str = setting(
        "https://cloud.r-project.org",
        "r",
        "CRAN-like repository R package restores install from (it holds src/contrib/PACKAGES; "
        "file:// URLs work). Of the packages a bundle lists (renv.lock, else manifest packages), "
        "those the execution environment's R library lacks at the listed or a newer version "
        "are installed from it: the listed version (current, or from src/contrib/Archive), "
        "else a newer current one.",
    )
    r_environment_management: bool = setting(
        True,
        "r",
        "Whether Podium restores the R packages of bundles whose manifest does not say "
        "(environment.environment_management.r). false uses the execution environment's R "
        "library as is, as a manifest's environment_management.r = false always does.",
    )

    # [scheduler]
    min_processes: int = setting(
        0, "scheduler", "Default processes kept running per interactive content, even idle."
    )
    max_processes: int = setting(
        3, "scheduler", "Default most processes per interactive content (per server node)."
    )
    max_conns_per_process: int = setting(
        20, "scheduler", "Default most concurrent connections one process serves."
    )
    load_factor: float = setting(
        0.5,
        "scheduler",
        "Default eagerness to start another process (0.0-1.0): one starts when the least loaded "
        "process has ceil(load_factor * max_conns_per_process) connections.",
        ge=0.0,
        le=1.0,
    )
    idle_timeout_seconds: int = setting(
        120,
        "scheduler",
        "Default time a process above min_processes may sit with no connections before it is "
        "stopped (Connect uses 5; a longer default spares viewers cold starts).",
    )
    init_timeout_seconds: int = setting(
        60, "scheduler", "Default time a new process has to answer HTTP before it counts as failed."
    )
    starting_page_after_seconds: float = setting(
        5.0,
        "scheduler",
        "How long a browser's request for content whose process is starting waits for it "
        "before it is answered with a 'Starting' page that reloads itself (0: at once). "
        "Most apps start sooner, and the browser then gets the app's own answer in one round "
        "trip; other clients always wait up to init_timeout.",
        ge=0.0,
    )
    connection_timeout_seconds: int = setting(
        3600,
        "scheduler",
        "Default longest time a proxied connection may carry no data either way (0 = no limit).",
    )
    read_timeout_seconds: int = setting(
        3600,
        "scheduler",
        "Default longest time a proxied connection may receive nothing from the viewer (0 = no "
        "limit).",
    )
    min_processes_limit: int = setting(
        20, "scheduler", "Highest min_processes a content item may ask for."
    )
    max_processes_limit: int = setting(
        20, "scheduler", "Highest max_processes a content item may ask for."
    )
    stop_grace_seconds: float = setting(
        5.0,
        "scheduler",
        "When stopping a process, time between SIGTERM and SIGKILL.",
    )
    content_access_log: bool = setting(
        False,
        "scheduler",
        "Have content servers (uvicorn, gunicorn) write one job-log line per request. Off by "
        "default: in a small app the line costs more than the request (a hello-world app under "
        "uvicorn answers about three times as many requests without it). One content item can "
        "ask for it with its own environment variable PODIUM_ACCESS_LOG=1.",
    )
    websocket_handoff: bool = setting(
        True,
        "scheduler",
        "Hand each WebSocket connection to the local ASGI content process (FastAPI, Quart, "
        "any app the runner serves with uvicorn) once its viewer is let in, instead of "
        "tunnelling every message through the server: the process takes the viewer's socket "
        "itself (over a unix socket beside its app socket), so messages cost what direct "
        "access costs; usage, idle shutdown and the read and connection timeouts still see "
        "the whole session. Other servers (gunicorn, Streamlit, Shiny, Bokeh, Gradio, R), "
        "and content on Kubernetes, are tunnelled either way. false: tunnel everything. "
        "Applies to processes started after the change.",
    )
    keep_processes_on_shutdown: bool | None = setting(
        None,
        "scheduler",
        "Leave content processes running when the server stops, to be adopted by the next "
        "start. Off: a clean shutdown stops them (after a crash they are adopted either way). "
        "Unset: on with kubernetes_enabled (a rolling update keeps content serving), off "
        "for local processes.",
    )
    memory_request_bytes: int = setting(
        0,
        "scheduler",
        "Default memory request of a content's jobs (builds, renders, processes), for content "
        "whose memory_request is null; 0 = no request. A scheduling hint on Kubernetes, unused "
        "by the local backend. Connect: Scheduler.MemoryRequest.",
        ge=0,
        le=2**53,
    )
    memory_limit_bytes: int = setting(
        0,
        "scheduler",
        "Default memory limit of a content's jobs, for content whose memory_limit is null; a "
        "job using more is killed. 0 = no limit, or max_memory_limit_bytes when that is set. "
        "Connect: Scheduler.MemoryLimit.",
        ge=0,
        le=2**53,
    )
    max_memory_request_bytes: int = setting(
        0,
        "scheduler",
        "Highest memory_request content may ask for; 0 = unbounded. Connect: "
        "Scheduler.MaxMemoryRequest.",
        ge=0,
        le=2**53,
    )
    max_memory_limit_bytes: int = setting(
        0,
        "scheduler",
        "Highest memory_limit content may ask for (content then cannot ask for no limit); "
        "0 = unbounded. Lowering it applies to existing content at its next launch. Connect: "
        "Scheduler.MaxMemoryLimit.",
        ge=0,
        le=2**53,
    )
    cpu_request_cores: float = setting(
        0.0,
        "scheduler",
        "Default CPU request of a content's jobs in cores (fractional), for content whose "
        "cpu_request is null; 0 = no request. A scheduling hint on Kubernetes, unused by the "
        "local backend. Connect: Scheduler.CPURequest.",
        ge=0.0,
        le=1_000_000.0,
    )
    cpu_limit_cores: float = setting(
        0.0,
        "scheduler",
        "Default CPU limit of a content's jobs in cores, for content whose cpu_limit is null; "
        "a job wanting more is throttled. 0 = no limit, or max_cpu_limit_cores when that is "
        "set. Connect: Scheduler.CPULimit.",
        ge=0.0,
        le=1_000_000.0,
    )
    max_cpu_request_cores: float = setting(
        0.0,
        "scheduler",
        "Highest cpu_request content may ask for, in cores; 0 = unbounded. Connect: "
        "Scheduler.MaxCPURequest.",
        ge=0.0,
        le=1_000_000.0,
    )
    max_cpu_limit_cores: float = setting(
        0.0,
        "scheduler",
        "Highest cpu_limit content may ask for, in cores (content then cannot ask for no "
        "limit); 0 = unbounded. Lowering it applies to existing content at its next launch. "
        "Connect: Scheduler.MaxCPULimit.",
        ge=0.0,
        le=1_000_000.0,
    )
    nvidia_gpu_limit: int = setting(
        0,
        "scheduler",
        "Default number of NVIDIA GPUs (nvidia.com/gpu) of a content's Kubernetes jobs, for "
        "content whose nvidia_gpu_limit is null. Connect: Scheduler.NvidiaGPULimit.",
        ge=0,
    )
    max_nvidia_gpu_limit: int = setting(
        0,
        "scheduler",
        "Most NVIDIA GPUs content may ask for; 0 = none. Connect: Scheduler.MaxNvidiaGPULimit.",
        ge=0,
    )
    amd_gpu_limit: int = setting(
        0,
        "scheduler",
        "Default number of AMD GPUs (amd.com/gpu) of a content's Kubernetes jobs, for content "
        "whose amd_gpu_limit is null. Connect: Scheduler.AMDGPULimit.",
        ge=0,
    )
    max_amd_gpu_limit: int = setting(
        0,
        "scheduler",
        "Most AMD GPUs content may ask for; 0 = none. Connect: Scheduler.MaxAMDGPULimit.",
        ge=0,
    )
    allow_unlimited_resources: bool = setting(
        True,
        "scheduler",
        "Whether content may set memory_limit or cpu_limit to 0 (no limit). Off: content must "
        "name a limit or use the server default (null). Connect has no single key for this; "
        "its MaxMemoryLimit and MaxCPULimit bound the same values.",
    )

    # [sandbox]
    sandbox: Literal["required", "optional", "off"] = setting(
        "required",
        "sandbox",
        "How content jobs run on this host (local backend): in a bubblewrap sandbox as an "
        "unprivileged uid, seeing only their bundle, environments and own folders, never the "
        "data dir, the secret key, the database or other content's processes. 'required': "
        "where sandboxes cannot be made (no bubblewrap, no user namespaces), content does "
        "not run and each job fails saying why; 'optional': such jobs run unsandboxed, with "
        "a warning at start and on every page an administrator opens; 'off': never "
        "sandbox (every publisher is trusted with the whole server). The Kubernetes backend "
        "isolates pods itself and ignores this.",
    )
    sandbox_uid_base: int = setting(
        200_000,
        "sandbox",
        "Sandboxed package builds run as this uid (and gid), and each content item's "
        "processes as this plus the content's id, so that no two items share one. Pick a "
        "range no account on the host uses. Running as other uids needs the server to run as "
        "root; otherwise jobs run sandboxed as the server's own uid.",
        gt=0,
        lt=2**31 - 2**24,
    )

    # [kubernetes]
    default_service_account: str = setting(
        "",
        "kubernetes",
        "Kubernetes service account of content jobs whose service_account_name is null; empty "
        "means the namespace's default. Ignored by the local backend. Connect: "
        "Launcher.KubernetesDefaultServiceAccount.",
    )
    content_service_account_selection: bool = setting(
        True,
        "kubernetes",
        "Whether administrators may set service_account_name on content. Off: setting it is "
        "refused (error 195) and stored names are ignored at launch. Connect: "
        "Launcher.KubernetesContentServiceAccountSelection (default false there).",
    )
    kubernetes_enabled: bool = setting(
        False,
        "kubernetes",
        "Run every build, render and content process as a Kubernetes Job instead of a local "
        "process. Connect: Launcher.Kubernetes.",
    )
    kubernetes_kubeconfig: Path | None = setting(
        None,
        "kubernetes",
        "Kubeconfig file to reach the cluster with; unset means the in-cluster service account "
        "when Podium runs in a pod, else ~/.kube/config.",
    )
    kubernetes_namespace: str = setting(
        "default", "kubernetes", "Namespace the Jobs are created in. Connect: Launcher.KubernetesNamespace."
    )
    kubernetes_instance: str = setting(
        "podium",
        "kubernetes",
        "Value of the app.kubernetes.io/instance label on every Job; Podium servers sharing a "
        "namespace need different values (the servers of one installation share one).",
    )
    kubernetes_default_image: str = setting(
        "ghcr.io/podium/runtime:latest",
        "kubernetes",
        "Image of jobs whose execution environment names none (the local environment).",
    )
    kubernetes_data_pvc: str = setting(
        "",
        "kubernetes",
        "PersistentVolumeClaim holding the data dir, mounted at the data dir's own path in every "
        "Job; empty mounts nothing (only for clusters whose nodes already see that path).",
    )
    kubernetes_data_sub_path: str = setting(
        "", "kubernetes", "Sub path of the data dir inside kubernetes_data_pvc; empty = its root."
    )
    kubernetes_shared_volume: bool = setting(
        True,
        "kubernetes",
        "Whether job pods mount their files from kubernetes_data_pvc (a ReadWriteMany volume the "
        "server shares). False: no pod mounts the data volume; an init container fetches the "
        "job's bundle, package environment and folders from the server over HTTP "
        "(kubernetes_transfer_url) with a single-use token into an emptyDir, and builds and "
        "renders upload what they made the same way, so any storage class works for the server.",
    )
    kubernetes_transfer_url: str = setting(
        "",
        "kubernetes",
        "URL at which job pods reach this server to fetch and upload their files when "
        "kubernetes_shared_volume is false, such as http://podium.podium.svc; empty = public_url.",
    )
    kubernetes_transfer_token_ttl_seconds: float = setting(
        900.0,
        "kubernetes",
        "How long a pod's single-use token for fetching its files stays valid: long enough for "
        "scheduling and image pulls (see init_timeout_seconds).",
    )
    kubernetes_transfer_upload_ttl_seconds: float = setting(
        86400.0,
        "kubernetes",
        "How long a build's or render's single-use token for uploading what it made stays valid "
        "(it is revoked as soon as the job ends).",
    )
    kubernetes_warm_pool_size: int = setting(
        0,
        "kubernetes",
        "Warm pods kept ready per execution environment image (0 = off): a content process "
        "started in the server's default shape (default service account, default resources, "
        "no placement of its own) claims one and starts at once, skipping scheduling, the "
        "image pull and the container's setup; other content gets a normal Job. The pool of "
        "an image fills after the first run job in it (the default image's at start). The "
        "claiming node pushes the job and its files to the pod in one request; each pod is "
        "used once and refilled in the background; a stopping node deletes its unclaimed "
        "ones, and a node started with 0 deletes any left.",
        ge=0,
    )
    kubernetes_image_pull_policy: str = setting(
        "IfNotPresent", "kubernetes", "imagePullPolicy of job containers: Always, IfNotPresent or Never."
    )
    kubernetes_image_pull_secrets: list[str] = setting(
        [], "kubernetes", "Names of Secrets used to pull job images (imagePullSecrets)."
    )
    kubernetes_job_ttl_seconds: int = setting(
        3600,
        "kubernetes",
        "ttlSecondsAfterFinished of every Job: how long an ended Job and its pod (and so its "
        "log) stay in the cluster.",
        ge=0,
    )
    kubernetes_job_template_patch: dict[str, Any] = setting(
        {},
        "kubernetes",
        "Merged into every generated Job last, as a strategic merge patch: dicts merge, lists "
        "of named objects (containers, volumes, env, volumeMounts) merge by name ({name = X, "
        "\"$patch\" = \"delete\"} removes X), other lists of objects (tolerations) are "
        "appended, lists of scalars replace. Example: {spec = {template = {spec = {containers "
        "= [{name = \"job\", securityContext = {runAsUser = 2000}}]}}}}.",
    )
    kubernetes_run_as_user: int = setting(
        10001,
        "kubernetes",
        "Uid every job pod runs as (runAsUser; never root). With a server that is not root, "
        "use the server's own uid: folders it makes for pods are its own.",
        gt=0,
    )
    kubernetes_run_as_group: int = setting(
        10001, "kubernetes", "Gid every job pod runs as (runAsGroup; never 0).", gt=0
    )
    kubernetes_tmp_size_limit_bytes: int = setting(
        1024**3,
        "kubernetes",
        "Size limit of each job pod's /tmp (an emptyDir; the root file system is read-only); "
        "0 = no limit.",
        ge=0,
    )
    kubernetes_node_selector: dict[str, str] = setting(
        {},
        "kubernetes",
        "nodeSelector of every job pod; an execution environment's or a content's placement "
        "adds to it. Example: {pool = \"content\"}.",
    )
    kubernetes_tolerations: list[dict[str, Any]] = setting(
        [],
        "kubernetes",
        "Tolerations of every job pod, as Kubernetes spells them; an environment's or content's "
        "are added.",
    )
    kubernetes_affinity: dict[str, Any] = setting(
        {},
        "kubernetes",
        "affinity of every job pod (nodeAffinity, podAffinity...), unless an environment's or "
        "content's placement names its own.",
    )
    kubernetes_priority_class_name: str = setting(
        "", "kubernetes", "priorityClassName of job pods, unless their placement names one; empty: none."
    )
    kubernetes_runtime_class_name: str = setting(
        "",
        "kubernetes",
        "runtimeClassName of job pods (for example gvisor), unless their placement names one; "
        "empty: the cluster's default runtime.",
    )
    kubernetes_denied_service_accounts: list[str] = setting(
        ["podium"],
        "kubernetes",
        "Service accounts content may never run as: refused when an administrator sets one "
        "(error 178) and ignored at launch if stored earlier. The server's own account (read "
        "from its token when it runs in a pod) is always refused too.",
    )
    kubernetes_job_log_retention_days: int = setting(
        30,
        "kubernetes",
        "How long Podium keeps the log of a Kubernetes job after it ended (the cluster deletes "
        "the Job and its pod's log after kubernetes_job_ttl_seconds); 0 keeps none.",
        ge=0,
    )

    # [usage]
    usage_recording: bool = setting(
        True,
        "usage",
        "Record every request served by content (hits and visits) and every WebSocket "
        "session of an interactive app (shiny usage), for v1/instrumentation and the Usage pane.",
    )
    usage_flush_seconds: float = setting(
        2.0,
        "usage",
        "How often the server hands recorded usage on, off the request path: one batch "
        "appended to a spool file in the data dir (usage/), which a low-priority importer "
        "process writes to the database. A normal stop imports what is buffered; a killed "
        "server loses at most this long.",
        gt=0,
    )
    usage_import_delay_seconds: float = setting(
        120.0,
        "usage",
        "How long recorded usage may wait in the spool while the server is busy (its process "
        "used over a quarter of a core in the last flush interval), so the importer's database work "
        "does not take CPU from the proxy at a peak: it is imported at the first quieter flush "
        "interval, or once this long has passed (or 256 MiB wait) under sustained load. Usage "
        "then shows in the API and the Usage pane up to this late. 0 imports every batch at once.",
        ge=0,
    )
    usage_retention_days: int = setting(
        400,
        "usage",
        "How long recorded usage is kept; older rows are pruned hourly. 0 keeps it forever.",
        ge=0,
    )

    # [render]
    render_timeout_seconds: int = setting(
        1800,
        "render",
        "Longest time one render job (a notebook executed and converted, a Quarto render) may "
        "take before it is stopped and counted as failed; earlier output stays served.",
    )
    renderings_kept: int = setting(
        20,
        "render",
        "Renderings kept per content, newest first, with their output on disk; older ones are "
        "deleted after each successful render (the one viewers are served is always kept). "
        "0 keeps every rendering.",
        ge=0,
    )
    smtp_host: str = setting(
        "",
        "render",
        "SMTP server that mails renderings (schedules with email on, POST variants/{id}/sender). "
        "Empty means no email is sent.",
    )
    smtp_port: int = setting(
        25, "render", "Port of the SMTP server (usually 25, 587 for STARTTLS, 465 for implicit TLS)."
    )
    smtp_security: Literal["auto", "starttls", "tls", "none"] = setting(
        "auto",
        "render",
        "How the SMTP connection is protected: 'auto' upgrades with STARTTLS when the server "
        "offers it, 'starttls' requires it, 'tls' speaks TLS from the start (port 465), "
        "'none' never encrypts. Certificates are verified against the system's trust store "
        "(SSL_CERT_FILE overrides it).",
    )
    smtp_username: str = setting(
        "", "render", "Login name at the SMTP server; empty sends without logging in."
    )
    smtp_password: SecretStr = setting(
        "",
        "render",
        "Password of smtp_username (better given as PODIUM_SMTP_PASSWORD than in a file). "
        "Never sent unencrypted: with smtp_security 'auto' and a server without STARTTLS, "
        "sending fails rather than exposing it. Never logged or printed.",
    )
    smtp_from: str = setting("podium@localhost", "render", "Sender address of mailed renderings.")
    schedule_poll_seconds: float = setting(
        5.0,
        "render",
        "How often each server node looks for due render schedules. A due run is claimed in "
        "the database, so several nodes never run it twice; a run missed while no node ran "
        "fires once at the next look.",
        gt=0,
    )

    # [git]
    git_enabled: bool = setting(
        True,
        "git",
        "Publishing from git repositories (the repository API, `rsconnect deploy git`, polling "
        "and push webhooks). Off: the repository endpoints answer 404, as Connect's do.",
    )
    git_polling_interval_seconds: float = setting(
        900.0,
        "git",
        "How often each git-backed content item with polling on is checked for a new commit "
        "(one `git ls-remote`; no clone when nothing changed). Each check is claimed in the "
        "database, so with several server nodes exactly one node checks each item.",
        gt=0,
    )
    git_timeout_seconds: float = setting(
        300.0,
        "git",
        "Longest a git command (ls-remote, fetch, archive) may run before it is stopped and "
        "the fetch fails with this setting named.",
        gt=0,
    )
    git_allow_local_repositories: bool = setting(
        False,
        "git",
        "Allow repository URLs that are file://, ssh:// or local paths. Off: only http:// "
        "and https:// are accepted, so publishers cannot read the server's own disk or reach "
        "hosts over SSH with the server's keys.",
    )

    @field_validator("declared_environments")
    @classmethod
    def _check_declared(cls, value: list[Any]) -> list[dict[str, Any]]:
        return validate_declarations(value)

    @field_validator("listen", "content_listen")
    @classmethod
    def _check_listen(cls, value: str, info: ValidationInfo) -> str:
        if not value and info.field_name == "content_listen":
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"{info.field_name} must be HOST:PORT (for example 127.0.0.1:3939), got {value!r}"
            )
        return value

    @field_validator("content_origin")
    @classmethod
    def _check_content_origin(cls, value: str) -> str:
        if not value:
            return value
        parsed = urllib.parse.urlsplit(value.replace("{guid}", "guid"))
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path.strip("/") \
                or parsed.query or parsed.fragment or value.count("{guid}") > 1 \
                or ("{guid}" in value and "{guid}" not in (urllib.parse.urlsplit(value).netloc)):
            raise ValueError(
                "content_origin must be an origin such as https://content.example.org, or "
                f"https://{{guid}}.content.example.org with {{guid}} in the host; got {value!r}"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_origins(self) -> Settings:
        if self.effective_content_origin.replace("{guid}", "x") == self.effective_public_url.rstrip("/"):
            raise ValueError(
                "content_origin must differ from the dashboard's origin (public_url): content "
                "served from the dashboard's origin could act with its viewers' sessions"
            )
        return self

    @field_validator("default_service_account")
    @classmethod
    def _check_service_account(cls, value: str) -> str:
        problem = service_account_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _secure_cookie_behind_https(self) -> Settings:
        if "session_cookie_secure" not in self.model_fields_set:
            self.session_cookie_secure = self.public_url.lower().startswith("https://")
        return self

    @field_validator("node_id")
    @classmethod
    def _check_node_id(cls, value: str) -> str:
        if value and not _NODE_ID.fullmatch(value):
            raise ValueError(
                "node_id must be 1-63 characters of [A-Za-z0-9._-], starting and ending with a "
                f"letter or digit; got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _check_node_timing(self) -> Settings:
        if self.node_timeout_seconds < 2 * self.node_heartbeat_seconds:
            raise ValueError("node_timeout_seconds must be at least twice node_heartbeat_seconds")
        return self

    @model_validator(mode="after")
    def _check_resources(self) -> Settings:
        problems = self.resource_policy.problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def resource_policy(self) -> ResourcePolicy:
        """The ``[scheduler]`` resource defaults and maxima, as :mod:`podium.resources` reads them."""
        return ResourcePolicy(
            memory_request=self.memory_request_bytes,
            memory_limit=self.memory_limit_bytes,
            max_memory_request=self.max_memory_request_bytes,
            max_memory_limit=self.max_memory_limit_bytes,
            cpu_request=self.cpu_request_cores,
            cpu_limit=self.cpu_limit_cores,
            max_cpu_request=self.max_cpu_request_cores,
            max_cpu_limit=self.max_cpu_limit_cores,
            allow_unlimited=self.allow_unlimited_resources,
        )

    @property
    def job_policy(self) -> JobPolicy:
        """Resources and service accounts of content jobs (:func:`podium.resources.for_content`)."""
        return JobPolicy(
            self.resource_policy, self.default_service_account, self.content_service_account_selection,
            tuple(self.kubernetes_denied_service_accounts),
            gpus=GpuPolicy(self.nvidia_gpu_limit, self.max_nvidia_gpu_limit, self.amd_gpu_limit,
                           self.max_amd_gpu_limit),
        )

    @property
    def effective_keep_processes_on_shutdown(self) -> bool:
        """``keep_processes_on_shutdown``, or, when unset, whether jobs run on Kubernetes."""
        if self.keep_processes_on_shutdown is None:
            return self.kubernetes_enabled
        return self.keep_processes_on_shutdown

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'db' / 'podium.sqlite').resolve()}"

    @property
    def effective_node_id(self) -> str:
        """``node_id``, or ``<hostname>-<hash of the data dir>-<port>``, fit for a label."""
        if self.node_id:
            return self.node_id
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:8]
        host = re.sub(r"[^A-Za-z0-9.-]+", "-", socket.gethostname()).strip("-.")[:40] or "node"
        return f"{host}-{digest}-{self.port}"

    @property
    def effective_runtime_dir(self) -> Path:
        """``runtime_dir``, or this node's folder in the system's runtime dir (never the
        data dir): short, so socket paths under it fit a unix socket address."""
        if self.runtime_dir is not None:
            return self.runtime_dir
        xdg = os.environ.get("XDG_RUNTIME_DIR", "")
        if xdg and os.path.isabs(xdg) and os.access(xdg, os.W_OK | os.X_OK):
            base = Path(xdg) / "podium"
        elif os.access("/run/podium", os.W_OK | os.X_OK) or (
            not os.path.exists("/run/podium") and os.access("/run", os.W_OK | os.X_OK)
        ):  # a tmpfs, emptied at boot: root's, or a service user's given /run/podium
            base = Path("/run/podium")
        else:
            base = Path(tempfile.gettempdir()) / f"podium-{os.getuid()}"
        return base / hashlib.sha256(self.effective_node_id.encode()).hexdigest()[:12]

    @property
    def effective_public_url(self) -> str:
        url = self.public_url or f"http://{self.listen}/"
        return url if url.endswith("/") else url + "/"

    @property
    def effective_content_listen(self) -> str | None:
        """The content-only listener's HOST:PORT, or None when there is none."""
        if self.content_listen:
            return self.content_listen
        if self.content_origin:
            return None
        return f"{self.listen.rpartition(':')[0]}:{self.port + 1}"

    @property
    def effective_content_origin(self) -> str:
        """The content origin without a trailing slash (``{guid}`` in it for per-content hosts)."""
        if self.content_origin:
            return self.content_origin
        dashboard = urllib.parse.urlsplit(self.effective_public_url)
        listen = self.effective_content_listen or ""
        host = dashboard.hostname or self.host
        # A browser keeps cookies by host name, not port: name the other loopback host.
        host = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}.get(host, host)
        if ":" in host:
            host = f"[{host}]"
        return f"{dashboard.scheme}://{host}:{listen.rpartition(':')[2]}"

    @property
    def effective_secret_key_file(self) -> Path:
        return self.secret_key_file or self.data_dir / "secret.key"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags beat environment variables beat the file (passed as init values below).
        return (init_settings, env_settings)


def sections() -> dict[str, list[tuple[str, FieldInfo]]]:
    """Settings grouped by TOML section, in declaration order."""
    grouped: dict[str, list[tuple[str, FieldInfo]]] = {}
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra
        section = extra["section"] if isinstance(extra, dict) else "server"
        grouped.setdefault(str(section), []).append((name, info))
    return grouped


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"settings file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from None
    known = sections()
    flat: dict[str, Any] = {}
    for section, table in document.items():
        if section not in known or not isinstance(table, dict):
            raise SettingsError(
                f"{path}: unknown section [{section}]; known sections: {', '.join(known)}"
            )
        names = {name for name, _ in known[section]}
        for key, value in table.items():
            if key not in names:
                raise SettingsError(
                    f"{path}: unknown setting {key!r} in [{section}]; "
                    f"known: {', '.join(sorted(names))}"
                )
            flat[key] = value
    return flat


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the file, the environment and ``overrides`` (None values ignored).

    The file is read first and passed as init values, so environment variables
    must win over it: those keys are dropped from the file values when set.
    """
    import os

    values = _read_toml(config) if config else {}
    for name in list(values):
        if f"PODIUM_{name.upper()}" in os.environ:
            del values[name]
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if value is None:
        return '""'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # an inline table (kubernetes_node_selector = {})
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def defaults_toml() -> str:
    """A commented settings file holding every setting at its default."""
    lines = [
        "# Podium settings. Every value below is the default; uncomment to change.",
        "# Each setting can also be given as an environment variable PODIUM_<NAME>",
        "# (for example PODIUM_LISTEN=0.0.0.0:3939), which wins over this file.",
    ]
    for section, fields in sections().items():
        lines += ["", f"[{section}]"]
        for name, info in fields:
            for text_line in _wrap(info.description or ""):
                lines.append(f"# {text_line}")
            lines.append(f"# {name} = {_toml_value(info.default)}")
            lines.append("")
        lines.pop()
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int = 86) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]
