#!/usr/bin/env bash
# Set up approxsim in ./.venv: PyTorch (CPU build by default), approxsim itself (editable)
# with its dev tools and the optional extras the tests cover (replay: gymnasium, sweep: Ray),
# and Debian's Fashion-MNIST package where apt is available.
#
# Environment:
#   PYTHON                 interpreter for the venv (default: python3)
#   APPROXSIM_TORCH        pip requirement for PyTorch (default: torch==2.13.0)
#   APPROXSIM_SKIP_DATA=1  do not try to install dataset-fashion-mnist
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "approxsim setup: creating .venv with $PY"
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python

# PyTorch first, so the `torch>=...` range in pyproject.toml is already satisfied and pip
# never swaps in a different (multi-GB CUDA) build.
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    echo "approxsim setup: installing ${APPROXSIM_TORCH:-torch==2.13.0}"
    "$VPY" -m pip install -q "${APPROXSIM_TORCH:-torch==2.13.0}"
fi
echo "approxsim setup: installing approxsim and its dependencies"
"$VPY" -m pip install -q -e ".[dev,replay,sweep]"

if [ "${APPROXSIM_SKIP_DATA:-0}" != "1" ] && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "approxsim setup: installing Debian's dataset-fashion-mnist"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            dataset-fashion-mnist >/dev/null) \
            || echo "approxsim setup: warning: could not install dataset-fashion-mnist" >&2
    elif command -v apt-get >/dev/null 2>&1; then
        echo "approxsim setup: note: run 'sudo apt-get install dataset-fashion-mnist' for the" \
             "default dataset" >&2
    fi
fi
echo "approxsim setup: done ($("$VPY" -c 'import approxsim, torch; print("approxsim", approxsim.__version__, "torch", torch.__version__)'))"
