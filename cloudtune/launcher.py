"""The Launcher protocol, declared capabilities, and the registry (entry-point group `cloudtune.launchers`).

Built-in names are listed here so that a missing plugin fails with its install hint. Plugins found
through entry points are merged with the built-ins and never replace them. The registry is what knows the provider
names: `check_provider_names` checks those a spec uses, where a spec meets a provider (plan, launch, validate).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cloudtune.errors import InvalidInput, SpecIssue, UnsupportedSpec
from cloudtune.states import JobState

if TYPE_CHECKING:
    from pathlib import Path

    from pydantic import BaseModel

    from cloudtune.bundle import Bundle
    from cloudtune.plan import Plan
    from cloudtune.spec import JobSpec

ENTRY_POINT_GROUP = "cloudtune.launchers"



def install_hint(provider: str) -> str:
    """The command that installs a cloud launcher plugin, for the way cloudtune itself was installed: from a
    checkout (the plugin's directory sits beside the package) `pip install -e <checkout>/launchers/<provider>`;
    otherwise the published extra."""
    from pathlib import Path

    plugin = Path(__file__).resolve().parent.parent / "launchers" / provider  # cloudtune/launcher.py -> the checkout
    if (plugin / "pyproject.toml").is_file():
        return f"pip install -e '{plugin}'"
    return f"pip install 'cloudtune[{provider}]'"


# name -> import target; the install hint comes from install_hint()
BUILTIN_LAUNCHERS: dict[str, str] = {
    "local": "cloudtune.local.launcher:LocalLauncher",
    "aws": "cloudtune_aws.launcher:AwsLauncher",
    "gcp": "cloudtune_gcp.launcher:GcpLauncher",
    "azure": "cloudtune_azure.launcher:AzureLauncher",
}


@dataclass(frozen=True)
class Capability:
    supported: bool
    reason: str


@dataclass(frozen=True)
class Capabilities:
    """What a launcher can do, each with the reason (shown when a spec asks for it and it cannot)."""

    gpu: Capability
    tpu: Capability
    multi_node: Capability
    spot: Capability
    log_streaming: Capability
    remote_inputs: Capability
    secrets: Capability

    def require(self, name: str, what: str, fix: str) -> None:
        cap: Capability = getattr(self, name)
        if not cap.supported:
            raise UnsupportedSpec(f"{what}: {cap.reason}", fix=fix)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {k: {"supported": v.supported, "reason": v.reason} for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class JobRef:
    """A submitted job: cloudtune's id plus the provider's own handle. `extra` holds what the launcher needs later
    (region, project, ...); `extra["checkpoint_uri"]`, when set, is where the job's checkpoints are kept (an object
    store URI, or a local directory), read by `download(..., checkpoints=True)`."""

    provider: str
    job_id: str
    native_id: str
    console_url: str | None = None
    model_uri: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobStatus:
    """A job's state (a `cloudtune.states.JobState`: pending | running | succeeded | failed | cancelled; a value given
    as text is converted), with the provider's own state name kept in `native` for display. `started_at`/`ended_at` (epoch seconds) and
    `billable_s` (seconds) are the times the provider itself reports, where it does (None otherwise): the cost of a
    finished job is computed from them (cloudtune.kit.cost.job_cost_usd)."""

    state: JobState
    detail: str = ""
    failure_reason: str | None = None
    exit_code: int | None = None
    native: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    billable_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", JobState(self.state))


@runtime_checkable
class Launcher(Protocol):
    name: str
    capabilities: Capabilities
    settings_model: "type[BaseModel]"

    def plan(self, spec: "JobSpec", settings: Any, *, suffix: str, bundle: "Bundle | None" = None) -> "Plan":
        """Compile the spec. Pure: no network, no SDK import, no mutation of inputs or os.environ."""
        ...

    def submit(self, plan: "Plan") -> JobRef:
        """Upload what is missing, then create the job once (idempotent for the plan's job name)."""
        ...

    def status(self, ref: JobRef) -> JobStatus: ...

    def logs(self, ref: JobRef, follow: bool = False) -> Iterator[str]: ...

    def cancel(self, ref: JobRef) -> None: ...

    def download(self, ref: JobRef, dest: "Path", *, checkpoints: bool = False) -> "Path":
        """Fetch a finished job's model into `dest`, an empty directory that exists (`cloudtune.api.download` makes
        it beside the user's target, checks the job succeeded, and moves it into place once this returns).

        The model's files land in `dest` itself (a SageMaker model.tar.gz unpacked with
        `cloudtune.data.archives.safe_extract`); with `checkpoints`, the job's checkpoint directory's files land in
        `dest/checkpoints/`. Cloud stores go through `cloudtune.kit.download.download_prefix`, which checks every
        object's size (and MD5 where the store states one). Returns the model directory (`dest`).
        Raises InvalidInput when the job has no model (or, with `checkpoints`, no checkpoint location) recorded,
        and the kit's CloudError/CloudConfigError for a failed call."""
        ...


_FOUND: dict[tuple[str, ...], dict[str, str]] = {}


def _entry_points() -> dict[str, str]:
    """The installed plugins' entry points, read once per import path (scanning every distribution costs ~30 ms)."""
    import sys
    from importlib.metadata import entry_points

    key = tuple(sys.path)
    if key not in _FOUND:
        _FOUND[key] = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return dict(_FOUND[key])


def available_launchers() -> dict[str, str]:
    """Every launcher name -> import target (built-ins first; plugins add new names only)."""
    names = dict(BUILTIN_LAUNCHERS)
    for name, target in _entry_points().items():
        names.setdefault(name, target)
    return names


def _load(target: str) -> type:
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


def check_provider_names(spec: "JobSpec") -> None:
    """Raise SpecError (exit 2) when `resources.instance_type` or `providers` names a provider that no launcher
    (built-in or installed plugin) has, each named by its line in the spec."""
    known = sorted(available_launchers())
    issues: list[SpecIssue] = []
    unknown = [key for key in spec.resources.instance_type if key not in known]
    if unknown:
        issues.append(spec.origin.issue(("resources", "instance_type"), f"unknown provider {unknown[0]!r} in "
                                        f"instance_type; use one of {', '.join(known)}"))
    unknown = [name for name in spec.providers.model_extra or {} if name not in known]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], known, n=1)
        issues.append(spec.origin.issue(("providers",), f"unknown provider {unknown[0]!r}" + (
            f"; did you mean {close[0]!r}?" if close else "") + f"; providers: {', '.join(known)}"))
    if issues:
        raise spec.origin.error(issues)


def launcher_class(name: str) -> type:
    """Resolve a launcher name to its class, or raise InvalidInput with how to get it."""
    if name in BUILTIN_LAUNCHERS:
        target = BUILTIN_LAUNCHERS[name]
        hint = "it ships with cloudtune; reinstall cloudtune" if name == "local" else install_hint(name)
        try:
            return _load(target)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            raise InvalidInput(f"the {name!r} launcher is not installed ({missing} cannot be imported)", fix=hint) from None
    plugins = _entry_points()
    if name not in plugins:
        import difflib

        known = sorted(set(BUILTIN_LAUNCHERS) | set(plugins))
        close = difflib.get_close_matches(name, known, n=1)
        raise InvalidInput(
            f"unknown provider {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
            fix=f"use one of: {', '.join(known)}",
        )
    try:
        return _load(plugins[name])
    except ImportError as exc:
        raise InvalidInput(f"the {name!r} launcher plugin failed to import: {exc}", fix="reinstall the plugin") from None


def get_launcher(name: str, **clients: Any) -> Launcher:
    """Instantiate a launcher; SDK clients (e.g. a boto3 client bound to an emulator) pass through."""
    return launcher_class(name)(**clients)
