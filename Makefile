# tctseg — one command per job. `make test` works on a fresh clone (no .venv needed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_PIN ?= torch==2.13.0

.PHONY: venv install test demo bench gpu-check clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned, and only when absent: a GPU user installs their CUDA build
	@# into $(VENV) beforehand and it is kept. pip must never resolve an unpinned torch.
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_PIN)"
	$(PIP) install --quiet -e ".[test,fast-cpu]"
	@touch $@

venv install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

demo: $(VENV)/.installed
	$(PY) -m tctseg demo --out runs/demo

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

# every CUDA path once (≤ 8 min on one GPU): scripts/gpu_check.py, docs in BENCHMARKS.md
gpu-check: $(VENV)/.installed
	$(PY) scripts/gpu_check.py --device cuda

clean:
	rm -rf runs/demo build *.egg-info
