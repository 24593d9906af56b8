# spikebridge — two commands do everything on a fresh clone:
#   make demo   set up .venv (+ data), then QCFS vs COS on the shipped Fashion-MNIST model
#   make test   set up .venv (+ data), then the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.spikebridge-installed
# torch is pinned and installed first: on this machine 2.13.0 is a local CPU build, while an
# unpinned torch would pull GBs of CUDA wheels.
TORCH  := torch==2.13.0

.PHONY: demo test setup data lint bench clean

demo: setup data
	$(VENV)/bin/spikebridge demo

test: setup data
	$(PY) -m pytest -q

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q $(TORCH)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

data:
	@sh scripts/ensure-data.sh

lint: setup
	$(VENV)/bin/ruff check src tests bench

bench: setup data
	bash bench/run_all.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
