"""PyTorch/XLA (Cloud TPU) detection for the runtime. Imports neither torch nor torch_xla.

A TPU host runs ONE training process that drives all of its chips through PyTorch/XLA's SPMD mode, not one
process per chip under torchrun: torch_xla's PJRT runtime owns the host's chips and a second process cannot open
them (source: PyTorch/XLA docs, "PJRT runtime" and "PyTorch/XLA SPMD User Guide"; the SPMD guide recommends one
process per host). The runtime is chosen by PJRT_DEVICE (TPU, CPU, CUDA), which containers/tpu sets to TPU.

transformers reads USE_TORCH_XLA (default on) to decide whether to use torch_xla at all; cloudtune follows it,
so `USE_TORCH_XLA=0` turns the XLA path off everywhere (the plain CPU/GPU path runs instead).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

PJRT_DEVICE_VAR = "PJRT_DEVICE"
USE_TORCH_XLA_VAR = "USE_TORCH_XLA"
# The device files of a Cloud TPU VM's chips (v4 and later: /dev/accel*; v5e/v6e under VFIO: /dev/vfio/<n>).
TPU_DEVICE_FILES = ("/dev/accel0", "/dev/vfio/0")
_OFF = ("0", "false", "no", "off")


def torch_xla_installed() -> bool:
    """Whether torch_xla can be imported (without importing it: the import starts the PJRT runtime)."""
    try:
        return importlib.util.find_spec("torch_xla") is not None
    except (ImportError, ValueError):
        return False


def xla_device_type(environ: Mapping[str, str] | None = None, *, device_files: tuple[str, ...] = TPU_DEVICE_FILES,
                    installed: bool | None = None) -> str | None:
    """The PJRT device this process trains on through PyTorch/XLA (``"TPU"``, ``"CPU"``, ...), or None for the plain
    CPU/GPU path.

    XLA is used when torch_xla is installed, USE_TORCH_XLA is not off, and either PJRT_DEVICE names a device or this
    machine has TPU chips (then ``"TPU"``). Without torch_xla, PJRT_DEVICE alone changes nothing."""
    env = os.environ if environ is None else environ
    if env.get(USE_TORCH_XLA_VAR, "1").strip().lower() in _OFF:
        return None
    if not (torch_xla_installed() if installed is None else installed):
        return None
    device = env.get(PJRT_DEVICE_VAR, "").strip().upper()
    if device:
        return device
    if any(Path(p).exists() for p in device_files):
        return "TPU"
    return None

