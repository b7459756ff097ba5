"""Suite-wide guard: tests never reach the internet. A connection to anything but loopback (or a Unix socket)
fails at once with an OSError, as it would on a machine without a network, so a code path that would download
(a wheel, a model, a dataset) shows up as a failing test instead of a silent download."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any, Iterator

import pytest

from tests.wheelhouse import lock_dir  # noqa: F401  (fixture: stock-image wheel locks served on 127.0.0.1)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _loopback(address):
        raise OSError(f"tests never reach the internet (connection to {address!r} refused)")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if not _loopback(address):
        raise OSError(f"tests never reach the internet (connection to {address!r} refused)")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)


@pytest.fixture(autouse=True)
def _no_mlflow_experiment_leak() -> Iterator[None]:
    """mlflow.set_experiment (run by transformers' MLflow callback) exports MLFLOW_EXPERIMENT_ID into this process's
    environment; a later test's MLflow run would then look for that experiment in another test's store."""
    yield
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
