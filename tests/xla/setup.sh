#!/usr/bin/env bash
# Set up (or reuse) the opt-in PyTorch/XLA lane's environment, then run the lane.
#
#   bash tests/xla/setup.sh            # set up the cached venv if missing, then run tests/xla
#   bash tests/xla/setup.sh --setup    # set up only
#   CLOUDTUNE_XLA_VENV=/path bash tests/xla/setup.sh
#
# Not part of .ci/run: torch_xla 2.9.0 (the newest on the index) needs torch==2.9.0, whose only
# x86_64 Linux build on the index is the CUDA one (about 4 GB to download, 7 GB installed). The
# venv is cached at $CLOUDTUNE_XLA_VENV (default ~/.cache/cloudtune-xla-venv) and reused when its
# torch_xla imports; delete it to start over. Set-up is the only step that reaches a registry;
# the lane's tests make their tiny model from a config and never go online.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${CLOUDTUNE_XLA_VENV:-$HOME/.cache/cloudtune-xla-venv}"
TORCH_VERSION=2.9.0
TORCH_XLA_VERSION=2.9.0
export PIP_DISABLE_PIP_VERSION_CHECK=1

setup() {
  local t0 t1
  t0=$(date +%s)
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torch_xla" 2>/dev/null; then
    echo "xla lane: reusing $VENV"
  else
    echo "xla lane: creating $VENV (torch==$TORCH_VERSION torch_xla==$TORCH_XLA_VERSION)"
    rm -rf "$VENV"
    python -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" "torch_xla==$TORCH_XLA_VERSION"
  fi
  # The checkout, editable, with its train and test extras; torch stays at the lane's version.
  local pins
  pins=$(mktemp)
  printf 'torch==%s\ntorch_xla==%s\n' "$TORCH_VERSION" "$TORCH_XLA_VERSION" >"$pins"
  "$VENV/bin/python" -m pip install -q -c "$pins" -e ".[train,test]"
  rm -f "$pins"
  "$VENV/bin/python" - <<'PY'
import torch, torch_xla, transformers, accelerate, peft
print("xla lane: torch", torch.__version__, "torch_xla", torch_xla.__version__,
      "transformers", transformers.__version__, "accelerate", accelerate.__version__, "peft", peft.__version__)
PY
  t1=$(date +%s)
  echo "xla lane: set-up took $((t1 - t0)) s"
}

run_lane() {
  local t0 t1
  t0=$(date +%s)
  set +e
  PJRT_DEVICE=CPU "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/xla "$@"
  local rc=$?
  set -e
  t1=$(date +%s)
  echo "xla lane: tests took $((t1 - t0)) s"
  if [ "$rc" -eq 5 ]; then
    echo "xla lane: pytest collected no tests: failing" >&2
    exit 1
  fi
  return "$rc"
}

if [ "${1:-}" = "--setup" ]; then
  setup
else
  setup
  run_lane "$@"
fi
