# jouletrace: the two commands a newcomer needs are `make demo` and `make test`.
# Each sets up what it needs itself, so they work on a fresh machine:
#   .venv       the sidecar, the diffusion server, the load generator, dev tools (torch: CPU wheel)
#   .venv-vllm  vLLM in its own environment, as in production where vLLM runs in its own container

PY        := .venv/bin/python
STAMP     := .venv/.installed
VLLM_PY   := .venv-vllm/bin/python
VLLM_STAMP:= .venv-vllm/.installed
# tiny offline models are built once (seconds) and reused by the demo and the tests
export JOULETRACE_MODELS_DIR ?= $(CURDIR)/models

.PHONY: demo demo-sim test lint bench clean system-deps

demo: $(STAMP) $(VLLM_STAMP)   ## the main job on the CPU default: vLLM + diffusion + sidecar + the study's task mix
	$(PY) -m sidecar.cli loadgen demo --out results/demo

demo-sim: $(STAMP)             ## the sidecar on a simulated GPU whose per-request truth is known
	$(PY) -m sidecar.cli demo

test: $(STAMP) $(VLLM_STAMP) system-deps   ## lint, types, then every test (integration tests included)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: $(STAMP) $(VLLM_STAMP)  ## the benchmarks that back our numbers (about 25 minutes; a quiet machine)
	$(PY) benchmarks/attribution_accuracy.py
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/diffusion_batching.py
	$(PY) benchmarks/loadgen_rate.py
	$(PY) benchmarks/vllm_overhead.py
	$(PY) benchmarks/sidecar_cpu.py
	$(PY) benchmarks/ingest_grpc.py
	$(PY) benchmarks/ledger_insert.py
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/proxy_overhead.py
	$(PY) benchmarks/nvml_poll_scale.py
	$(PY) benchmarks/poll_lateness.py

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[sidecar,diffusion,loadgen,dev]'
	# Helm's Go library for chart lint; it declares Python >= 3.12 but works on 3.11
	$(PY) -m pip install -q --ignore-requires-python 'helm-sdkpy==0.1.32'
	touch $(STAMP)

$(VLLM_STAMP): pyproject.toml scripts/setup-vllm-venv.sh
	scripts/setup-vllm-venv.sh .venv-vllm
	touch $(VLLM_STAMP)

system-deps:                   ## Debian packages the integration tests start (prometheus, promtool)
	scripts/install-system-deps.sh

clean:
	rm -rf .venv .venv-vllm .pytest_cache .mypy_cache .ruff_cache
