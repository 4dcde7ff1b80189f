# The two commands a newcomer needs (see README.md): `make study` and `make test`.
# Both create .venv with the pinned dependencies first (once).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LMMS_STAMP := $(VENV)/.installed-lmms

.PHONY: setup setup-lmms study jupyter test test-lmms lint benchmark clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build from this machine's disk, not a CUDA download
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (study)" >/dev/null
	touch $(STAMP)

# The optional lmms extra (evaluate.backend: lmms-eval). lmms-eval pulls torchvision, whose build for
# torch 2.13 on PyPI is linked against CUDA and breaks AutoProcessor where torch has no CUDA: removed there.
setup-lmms: $(LMMS_STAMP)

$(LMMS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,lmms]'
	$(BIN)/python -c "import torch; raise SystemExit(not torch.cuda.is_available())" || $(BIN)/python -m pip uninstall --quiet -y torchvision
	touch $(LMMS_STAMP)

study: setup  ## run the default study end to end (dvc repro, one progress line per stage), then its summary
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m study repro
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m study summary

jupyter: setup  ## JupyterLab with the project's environment and kernel (notebooks/06_explore.ipynb needs no pipeline run)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/jupyter lab notebooks/06_explore.ipynb

test: setup-lmms  ## the test suite, the lmms-eval backend's included (installs the lmms extra; includes a smoke run of the whole pipeline)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

test-lmms: setup-lmms  ## the lmms-eval backend's tests (installs the lmms extra into .venv first)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q tests/test_lmms.py

lint: setup
	$(BIN)/ruff check study tests benchmarks
	$(BIN)/ruff format --check study tests benchmarks

benchmark: setup  ## throughput of teacher training and evaluation on this machine
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/teacher_throughput.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/pruning_speed.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/recovery_throughput.py

clean-venv:
	rm -rf $(VENV)
