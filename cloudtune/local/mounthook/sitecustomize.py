"""Start-up hook of the local emulation's bucket mounts (see cloudtune.local.mounts): Python imports this module at
start-up because the local launcher put its directory first on PYTHONPATH for `emulate: gcp` and `emulate: azure`.
It installs the mount semantics, then runs the `sitecustomize` it shadows, if there is one."""

from __future__ import annotations

import importlib
import os
import sys


def _run() -> None:
    if os.environ.get("CLOUDTUNE_EMULATED_MOUNTS"):
        try:
            from cloudtune.local.mounts import install_from_env
        except ImportError:  # `runtime: image` before the start path has installed cloudtune (pip itself)
            pass
        else:
            install_from_env()
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    mine = sys.modules.pop("sitecustomize", None)
    try:
        importlib.import_module("sitecustomize")  # the one this module shadows (e.g. a distribution's)
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        if mine is not None:
            sys.modules["sitecustomize"] = mine


_run()
