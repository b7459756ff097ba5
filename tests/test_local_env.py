"""What a local job's processes get in their environment beyond the contract: the stop deadline inside the
supervisor's grace, and the bucket-mount hook under `runtime: image` too."""

from __future__ import annotations

import pytest

from cloudtune.local.imageenv import image_container_env
from cloudtune.local.mounts import HOOK_DIR, MOUNTS_VAR
from cloudtune.local.supervisor import GRACE_ENV, container_env
from cloudtune.runtime.stopping import STOP_DEADLINE_VAR, stop_deadline


@pytest.mark.parametrize(("grace", "deadline"), [("30", 25.0), ("8", 3.0), ("2", 1.0)])
def test_the_stop_deadline_falls_inside_the_supervisors_grace(monkeypatch: pytest.MonkeyPatch, grace: str,
                                                               deadline: float) -> None:
    """The supervisor SIGKILLs what is left `grace` seconds after its SIGTERM: the job's own watchdog (which names
    the stop and reports each rank's exit) fires before that, as a cloud's notice bounds it there."""
    monkeypatch.setenv(GRACE_ENV, grace)
    env = container_env({}, [])
    assert float(env[STOP_DEADLINE_VAR]) == deadline
    assert stop_deadline(env) == deadline


def test_runtime_image_keeps_the_mount_hook() -> None:
    host = container_env({MOUNTS_VAR: "/x/gcs", "PATH": "/usr/bin"}, [])
    assert host["PYTHONPATH"].split(":")[0] == HOOK_DIR
    image = image_container_env({**host, "PYTHONPATH": f"{HOOK_DIR}:/work/src", "VIRTUAL_ENV": "/v"}, {"PATH": "/e/bin"})
    assert image["PYTHONPATH"] == HOOK_DIR and "VIRTUAL_ENV" not in image  # the host's own Python setup stays out
    assert "PYTHONPATH" not in image_container_env({"PYTHONPATH": "/work/src"}, {"PATH": "/e/bin"})
