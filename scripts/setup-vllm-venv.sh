#!/usr/bin/env bash
# Create vLLM's own virtual environment (the CPU build here; `vllm` on a GPU machine).
# Filled in by the vLLM integration; until then it creates an empty environment.
set -euo pipefail
venv="${1:-.venv-vllm}"
test -x "$venv/bin/python" || python3 -m venv "$venv"
