"""The kit's one retry policy and error translation, and the CLI's last line of defence, without any cloud SDK:
a bounded total time, a line per retry, one error at the end (exit 2 for configuration, 1 otherwise), and one line
(never a traceback) for an exception nothing recognises. The per-cloud, end-to-end cases are in
tests/aws/test_cli_errors.py and tests/gcp/test_cli_errors.py."""

from __future__ import annotations

import subprocess
import sys
import time

import click
import pytest
from click.testing import CliRunner

from cloudtune.cli import _handle_errors
from cloudtune.errors import InvalidInput
from cloudtune.kit.retry import Caller, CloudConfigError, CloudError, ErrorInfo, RetryPolicy, translate


class ServiceDown(Exception):
    """What an SDK raises when its service keeps failing (a stand-in SDK exception, not cloudtune code)."""


class Refused(Exception):
    pass


def classify(exc: BaseException) -> ErrorInfo | None:
    if isinstance(exc, ServiceDown):
        return ErrorInfo("transient", f"503 {exc}", "try again in a few minutes")
    if isinstance(exc, Refused):
        return ErrorInfo("config", f"AccessDenied: {exc}", "grant the role")
    return None


class FakeClock:
    """A monotonic clock that advances only when slept on (injected into Caller as both)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_transient_failures_end_within_the_deadline(capsys: pytest.CaptureFixture[str]) -> None:
    calls = 0

    def always_down() -> None:
        nonlocal calls
        calls += 1
        raise ServiceDown("Service Unavailable")

    clock = FakeClock()  # time passes only by the policy's sleeps: the outcome does not depend on the machine
    caller = Caller("Example", classify, RetryPolicy(max_attempts=50, base_s=0.05, cap_s=0.2, deadline_s=1.0),
                    sleep=clock.sleep, clock=clock)
    with pytest.raises(CloudError) as exc:
        caller.call(always_down, what="create the job")
    assert clock.now <= 1.0 and calls >= 3 and calls == len(clock.slept) + 1
    assert str(exc.value) == "Example: 503 Service Unavailable\nTo fix: try again in a few minutes"
    assert exc.value.exit_code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == calls - 1 and all(line.startswith("[cloudtune] create the job: 503 Service Unavailable - "
                                                          "retrying in ") for line in lines)


def test_configuration_errors_are_not_retried(capsys: pytest.CaptureFixture[str]) -> None:
    calls = []

    def refused() -> None:
        calls.append(1)
        raise Refused("User is not authorized")

    with pytest.raises(CloudConfigError) as exc:
        Caller("Example", classify, RetryPolicy()).call(refused)
    assert calls == [1] and exc.value.exit_code == 2 and capsys.readouterr().err == ""
    assert exc.value.fix == "grant the role"


@pytest.mark.parametrize("deadline,attempts,expected", [
    ("", "", RetryPolicy()),
    ("20", "", RetryPolicy(deadline_s=20.0)),
    ("2.5", "3", RetryPolicy(deadline_s=2.5, max_attempts=3)),
])
def test_policy_from_the_environment(monkeypatch: pytest.MonkeyPatch, deadline: str, attempts: str,
                                     expected: RetryPolicy) -> None:
    monkeypatch.setenv("CLOUDTUNE_RETRY_DEADLINE", deadline)
    monkeypatch.setenv("CLOUDTUNE_RETRY_ATTEMPTS", attempts)
    assert RetryPolicy.from_env() == expected


@pytest.mark.parametrize("var,value", [("CLOUDTUNE_RETRY_DEADLINE", "soon"), ("CLOUDTUNE_RETRY_DEADLINE", "inf"),
                                       ("CLOUDTUNE_RETRY_DEADLINE", "-1"), ("CLOUDTUNE_RETRY_ATTEMPTS", "2.5"),
                                       ("CLOUDTUNE_RETRY_ATTEMPTS", "0"), ("CLOUDTUNE_RETRY_DEADLINE", "nan")])
def test_a_bad_policy_value_is_named(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(InvalidInput) as exc:
        RetryPolicy.from_env()
    assert var in exc.value.message and repr(value) in exc.value.message and exc.value.fix


def test_translate_uses_the_classifier_of_a_caller_made_in_this_process() -> None:
    class Unseen(Exception):
        pass

    def classify_unseen(exc: BaseException) -> ErrorInfo | None:
        return ErrorInfo("config", "no credentials", "sign in") if isinstance(exc, Unseen) else None

    assert translate(Unseen("x")) is None
    Caller("Other cloud", classify_unseen)
    err = translate(Unseen("x"))
    assert isinstance(err, CloudConfigError) and err.message == "Other cloud: no credentials" and err.exit_code == 2
    assert translate(KeyError("nothing knows this")) is None


def _cli(exc: BaseException) -> click.Command:
    @click.command()
    @_handle_errors
    def cmd() -> None:
        raise exc

    return cmd


def test_the_cli_prints_a_known_sdk_error_raised_outside_a_call() -> None:
    Caller("Example", classify)
    result = CliRunner().invoke(_cli(Refused("User is not authorized")))
    assert result.exit_code == 2
    assert result.output == "error: Example: AccessDenied: User is not authorized\nTo fix: grant the role\n"


def test_the_cli_prints_an_unknown_exception_as_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDTUNE_DEBUG", raising=False)
    result = CliRunner().invoke(_cli(RuntimeError("something\nunexpected")))
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.splitlines()
    assert lines[0] == "error: builtins.RuntimeError: something unexpected"
    assert lines[1].startswith("To fix: run it again with CLOUDTUNE_DEBUG=1") and len(lines) == 2
    monkeypatch.setenv("CLOUDTUNE_DEBUG", "1")
    assert isinstance(CliRunner().invoke(_cli(RuntimeError("x"))).exception, RuntimeError)


def test_help_imports_no_cloud_sdk() -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "cloudtune.cli", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    modules = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in modules if m.split(".")[0] in ("boto3", "botocore", "google", "torch", "cloudtune_aws")}


def test_an_endpoint_given_up_on_is_not_retried_again_until_something_answers(capsys: pytest.CaptureFixture[str]) -> None:
    class Refused(ConnectionError):
        pass

    def classify_conn(exc: BaseException) -> ErrorInfo | None:
        if isinstance(exc, Refused):
            return ErrorInfo("transient", "cannot reach the endpoint", "check the network", endpoint=str(exc))
        return None

    def refuse(endpoint: str) -> None:
        raise Refused(endpoint)

    policy = RetryPolicy(max_attempts=10, base_s=0.01, cap_s=0.02, deadline_s=0.3)
    clock = FakeClock()
    with pytest.raises(CloudError):
        Caller("Example", classify_conn, policy, sleep=clock.sleep, clock=clock).call(refuse, "http://127.0.0.1:1")
    first = capsys.readouterr().err.count("retrying in")
    waited = len(clock.slept)
    with pytest.raises(CloudError):  # a second job of `cloudtune list`: no second wait
        Caller("Example", classify_conn, policy, sleep=clock.sleep, clock=clock).call(refuse, "http://127.0.0.1:1")
    assert first >= 2 and capsys.readouterr().err == "" and len(clock.slept) == waited  # no sleep, no retry line
    with pytest.raises(CloudError):  # another endpoint is retried as usual
        Caller("Example", classify_conn, policy, sleep=clock.sleep, clock=clock).call(refuse, "http://127.0.0.1:2")
    assert capsys.readouterr().err.count("retrying in") >= 2
    assert Caller("Example", classify_conn, policy, sleep=clock.sleep, clock=clock).call(lambda: 42) == 42  # clears
    with pytest.raises(CloudError):
        Caller("Example", classify_conn, policy, sleep=clock.sleep, clock=clock).call(refuse, "http://127.0.0.1:1")
    assert capsys.readouterr().err.count("retrying in") >= 2
