"""The part of a cloud launcher that is the same for every cloud: its retry caller, where staged files go, the
wheel locks it plans with, and `plan()` handing the spec to the cloud's pure compiler."""

from __future__ import annotations

import re
import time
from importlib import import_module
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from cloudtune.errors import InvalidInput, UnsupportedSpec
from cloudtune.kit.retry import Caller, ErrorInfo, RetryPolicy
from cloudtune.kit.states import map_native
from cloudtune.launcher import JobStatus, install_hint
from cloudtune.states import JobState
from cloudtune.settings import cloudtune_home

if TYPE_CHECKING:
    from cloudtune.bundle import Bundle
    from cloudtune.launcher import JobRef
    from cloudtune.plan import Plan
    from cloudtune.spec import JobSpec


def bucket_base(value: str, scheme: str, pattern: str, provider: str, service: str) -> str:
    """`name`, `name/prefix` or `scheme://name/prefix` -> `scheme://name[/prefix]`; UnsupportedSpec naming
    providers.<provider>.bucket when the name breaks the store's naming rule (`pattern`, matched in full)."""
    raw = value.strip()
    raw = raw[len(f"{scheme}://"):] if raw.startswith(f"{scheme}://") else raw
    name, _, prefix = raw.partition("/")
    if not re.fullmatch(pattern, name):
        raise UnsupportedSpec(f"providers.{provider}.bucket {value!r} is not a {service} bucket name",
                              fix=f"give a bucket name such as my-bucket (or {scheme}://my-bucket/prefix)")
    prefix = prefix.strip("/")
    return f"{scheme}://{name}" + (f"/{prefix}" if prefix else "")


def import_sdk(provider: str, module: str, needs: str) -> ModuleType:
    """A cloud SDK's `module`, imported at the first call that needs it (never at plan time); InvalidInput saying the
    `provider` launcher needs `needs` (what to install), with the plugin's install command, when it is missing."""
    try:
        return import_module(module)
    except ImportError:
        raise InvalidInput(f"the {provider} launcher needs {needs}", fix=install_hint(provider)) from None


def table_status(table: Mapping[str, JobState], native: str, detail: str, reason: str | None, **times: Any) -> JobStatus:
    """A cloud's native state name through its table (cloudtune.kit.states) -> JobStatus; `reason` is kept only for a
    failed job; `times` are JobStatus's started_at, ended_at and billable_s."""
    state = map_native(table, native)
    return JobStatus(state.value, detail, reason if state is JobState.FAILED else None, native=native, **times)


class CloudLauncher:
    """Base of the cloud launchers. A subclass sets `name`, `capabilities`, `settings_model`, `service` (the name
    errors start with) and `compile` (its pure compiler), and passes its SDK's `classify` to __init__."""

    name: str
    service: str
    compile: Callable[..., "Plan"]

    def __init__(self, classify: Callable[[BaseException], ErrorInfo | None], *, policy: RetryPolicy | None,
                 poll_s: float, home: Path | None, lock_dir: Path | None) -> None:
        self.caller = Caller(self.service, classify, policy)
        self.poll_s = poll_s
        self._home = home
        self._lock_dir = lock_dir  # the stock-image wheel locks; None = those shipped with cloudtune
        self.last_uploaded_bytes = 0

    def home(self) -> Path:
        """Where submit() stages bundles and wheelhouses ($CLOUDTUNE_HOME unless given)."""
        if self._home is None:
            self._home = cloudtune_home()
        return self._home

    def plan(self, spec: "JobSpec", settings: Any, *, suffix: str, bundle: "Bundle | None" = None) -> "Plan":
        """Compile the spec: pure, offline, nothing written (see the launcher's request module). The wheel locks are
        the launcher's, else the settings' `wheel_locks` directory, else those shipped with cloudtune."""
        lock_dir = self._lock_dir
        if lock_dir is None and getattr(settings, "wheel_locks", None):
            lock_dir = Path(settings.wheel_locks).expanduser()
        return type(self).compile(spec, settings, suffix=suffix, bundle=bundle, home=self.home(), lock_dir=lock_dir)

    def status(self, ref: "JobRef") -> "JobStatus":
        raise NotImplementedError

    def follow(self, ref: "JobRef", read: Callable[[], Iterable[str]], follow: bool, max_polls: int | None) -> Iterator[str]:
        """The lines of `read()` (each call returns the lines that are new since the last); with `follow`, read
        every `poll_s` seconds until the job ends, then once more (what it wrote last). `max_polls` bounds the reads."""
        polls = 0
        finished = False
        while True:
            yield from read()
            polls += 1
            if not follow or finished or (max_polls is not None and polls >= max_polls):
                return
            finished = self.status(ref).state.terminal
            if not finished:
                time.sleep(self.poll_s)
