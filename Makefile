# jouletrace: the two commands a newcomer needs are `make demo` and `make test`.
# Each sets up what it needs itself (into .venv), so they work on a fresh machine.

PY      := .venv/bin/python
STAMP   := .venv/.installed

.PHONY: demo test lint bench clean

demo: $(STAMP)            ## the main job on the CPU default: sidecar + simulated GPU + short workload
	$(PY) -m sidecar.cli demo

test: $(STAMP) system-deps ## lint, types, then every test (integration tests included)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: $(STAMP)           ## the benchmarks that back our numbers
	$(PY) benchmarks/attribution_accuracy.py
	$(PY) benchmarks/ingest.py

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[sidecar,dev]'
	touch $(STAMP)

.PHONY: system-deps
system-deps:              ## Debian packages the integration tests use (prometheus, promtool)
	scripts/install-system-deps.sh

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
