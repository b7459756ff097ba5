"""One retry policy and one translation of cloud/SDK errors, shared by every launcher.

A launcher supplies `classify(exc) -> ErrorInfo | None` for its SDK's exceptions (None: not an error of its
cloud; it propagates unchanged). Everything else lives here: bounded retries with backoff and a total deadline,
a line on stderr while retrying, and one error line (the service's own message and the fix) at the end: exit 2
for configuration (credentials, permissions, a missing bucket), exit 1 otherwise. SDK-internal retries are
switched off by each launcher so that retries are never nested.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

from cloudtune.errors import CloudtuneError, InvalidInput

T = TypeVar("T")
Kind = Literal["transient", "conflict", "not_found", "config", "fatal"]


class CloudError(CloudtuneError):
    """The cloud refused or failed a call: one line with the service's message and the fix (exit 1)."""

    exit_code = 1


class CloudConfigError(InvalidInput):
    """The call failed because of this machine's or the account's configuration (exit 2)."""


class CreateUnconfirmed(CloudError):
    """A job create whose answer never came (a read timeout, a dropped connection, a 5xx) and whose job could not
    be found before the retries ran out: the cloud may still have made it (exit 1). `cloudtune.api.submit` keeps
    the launch's store record so that the next `status`/`list` looks the job up by its name."""


@dataclass(frozen=True)
class ErrorInfo:
    """What a launcher makes of one SDK exception."""

    kind: Kind
    message: str  # the service's own message, one line
    fix: str = ""
    service: str = ""  # the service that answered, when not the Caller's own (its object store, its log service)
    endpoint: str = ""  # scheme://host[:port] that could not be reached, for an unreachable-endpoint error


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per call, exponential backoff with jitter (base * 2**n, capped), and a total deadline in seconds."""

    max_attempts: int = 6
    base_s: float = 0.5
    cap_s: float = 8.0
    deadline_s: float = 60.0
    slow_after_s: float = 10.0  # a line on stderr when one attempt has had no answer this long

    def delay(self, attempt: int) -> float:
        return min(self.cap_s, self.base_s * 2 ** attempt) * (0.5 + random.random() / 2)

    @classmethod
    def from_env(cls) -> "RetryPolicy":
        """The default policy, with `CLOUDTUNE_RETRY_DEADLINE` (total seconds of retrying, e.g. 20) and
        `CLOUDTUNE_RETRY_ATTEMPTS` (attempts per call) from the environment when set; a bad value is an error."""
        kw: dict[str, float | int] = {}
        for var, key, kind in ((DEADLINE_VAR, "deadline_s", float), (ATTEMPTS_VAR, "max_attempts", int)):
            raw = os.environ.get(var)
            if raw is None or raw == "":
                continue
            try:
                value = kind(raw)
            except ValueError:
                value = -1
            if not (0 < value < 3600 and math.isfinite(value)):
                raise InvalidInput(f"{var}={raw!r} is not a positive number under 3600",
                                   fix=f"set {var} to e.g. {'30' if key == 'deadline_s' else '6'}, or unset it")
            kw[key] = value
        return cls(**kw)  # type: ignore[arg-type]


DEADLINE_VAR = "CLOUDTUNE_RETRY_DEADLINE"
ATTEMPTS_VAR = "CLOUDTUNE_RETRY_ATTEMPTS"
_CLASSIFIERS: dict[Callable[[BaseException], ErrorInfo | None], str] = {}
_UNREACHABLE: dict[str, float] = {}  # endpoint -> when a call gave up reaching it (time.monotonic)


def translate(exc: BaseException) -> CloudtuneError | None:
    """An exception of any cloud SDK whose launcher made a Caller in this process, as cloudtune's one-line error
    (what `Caller.call` would have raised); None when no launcher recognises it. For errors raised outside a
    Caller (a client constructor looking for credentials, a generator read by the CLI)."""
    if isinstance(exc, CloudtuneError):
        return exc
    for classify, service in list(_CLASSIFIERS.items()):
        try:
            info = classify(exc)
        except Exception:  # noqa: BLE001 - a classifier that fails does not hide the original error
            continue
        if info is not None:
            return Caller(service, classify).error(info)
    return None


class Caller:
    """Calls a cloud's SDK under the policy and turns its errors into cloudtune's (see the module docstring)."""

    def __init__(self, service: str, classify: Callable[[BaseException], ErrorInfo | None],
                 policy: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`sleep` and `clock` (seconds) are injectable so that tests assert on events, not on the machine's speed."""
        self.service = service
        self.classify = classify
        self.policy = policy or RetryPolicy.from_env()
        self._sleep = sleep
        self._clock = clock
        _CLASSIFIERS.setdefault(classify, service)  # so that `translate` knows this cloud's errors

    def error(self, info: ErrorInfo) -> CloudtuneError:
        message = f"{info.service or self.service}: {' '.join(info.message.split())}"
        return CloudConfigError(message, fix=info.fix or None) if info.kind == "config" else CloudError(message, fix=info.fix or None)

    @contextlib.contextmanager
    def _slow_notice(self, what: str) -> Iterator[None]:
        """A line on stderr when one attempt has had no answer for `policy.slow_after_s` seconds (a service that
        accepts the connection and never answers), so that no wait is silent; the SDK's own timeout ends it."""
        after = self.policy.slow_after_s
        timer = threading.Timer(after, lambda: print(f"[cloudtune] {what}: no answer after {after:g} s; still waiting "
                                                     f"for {self.service}", file=sys.stderr, flush=True))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def wait_before_retry(self, attempt: int, started: float, what: str, info: ErrorInfo) -> bool:
        """Sleep before attempt `attempt + 1` and return True, or False when the attempts or the deadline are spent.

        An endpoint that a call of this process already spent a whole deadline failing to reach is not retried
        again for one deadline (`cloudtune list` over many jobs of an unreachable cloud pays the wait once)."""
        now = self._clock()
        if info.endpoint and now - _UNREACHABLE.get(info.endpoint, -math.inf) < self.policy.deadline_s:
            return False
        delay = self.policy.delay(attempt)
        if attempt + 1 >= self.policy.max_attempts or now - started + delay > self.policy.deadline_s:
            if info.endpoint:
                _UNREACHABLE[info.endpoint] = now
            return False
        print(f"[cloudtune] {what}: {info.message} - retrying in {delay:.1f} s "
              f"(attempt {attempt + 2} of {self.policy.max_attempts})", file=sys.stderr, flush=True)
        self._sleep(delay)
        return True

    def call(self, fn: Callable[..., T], *args: object, what: str = "", missing_ok: bool = False, **kwargs: object) -> T:
        """`fn(*args, **kwargs)`, retried on transient errors; any other classified error raised as cloudtune's.
        With `missing_ok`, a not-found answer returns None."""
        started = self._clock()
        attempt = 0
        while True:
            try:
                with self._slow_notice(what or fn.__name__):
                    result = fn(*args, **kwargs)
                if _UNREACHABLE:
                    _UNREACHABLE.clear()  # something answered: no endpoint is taken for unreachable any more
                return result
            except Exception as exc:
                info = self.classify(exc)
                if info is None:
                    raise
                if info.kind == "not_found" and missing_ok:
                    return None  # type: ignore[return-value]
                if info.kind != "transient" or not self.wait_before_retry(attempt, started, what or fn.__name__, info):
                    raise self.error(info) from None
            attempt += 1

    def create_once(self, create: Callable[[], T], find: Callable[[], T | None], *, what: str) -> T:
        """Create a job exactly once. On a conflict, or a transient failure after which the create may have landed
        with its answer lost, look for the job this launch made (`find`) and adopt it instead of creating again.

        Raises CreateUnconfirmed when the retries run out after a create that may have reached the service (any
        transient failure but a connection that was never made: `ErrorInfo.endpoint` set), else the error itself."""
        started = self._clock()
        attempt = 0
        maybe_sent = False
        while True:
            try:
                return create()
            except Exception as exc:
                info = self.classify(exc)
                if info is None:
                    raise
                if info.kind == "conflict":
                    found = self.call(find, what=f"{what} (find the existing job)")
                    if found is not None:
                        return found
                    raise self.error(info) from None
                if info.kind != "transient":
                    raise self.error(info) from None
                maybe_sent = maybe_sent or not info.endpoint
                found = self._find_after_loss(find, what, maybe_sent)
                if found is not None:
                    return found
                if not self.wait_before_retry(attempt, started, what, info):
                    error = self.error(info)
                    raise (CreateUnconfirmed(error.message, fix=error.fix) if maybe_sent else error) from None
            attempt += 1

    def _find_after_loss(self, find: Callable[[], T | None], what: str, maybe_sent: bool) -> T | None:
        """`find()` after a failed create; a lookup that itself fails after a create that may have landed is
        CreateUnconfirmed (the job may exist: the caller keeps its record), else its own error."""
        try:
            return self.call(find, what=f"{what} (look for a job the lost answer made)")
        except CloudError as exc:
            if maybe_sent and not isinstance(exc, CreateUnconfirmed):
                raise CreateUnconfirmed(exc.message, fix=exc.fix) from None
            raise
