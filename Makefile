# Every user-facing target does all of its own set-up, idempotently:
# a virtualenv in .venv, torch only when the venv has none (a user's CUDA build is never
# replaced), the package in editable mode with its dev extras, and Fashion-MNIST from Debian.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist

.PHONY: setup data demo test bench clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null \
		|| $(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

data:
	@FMNIST_DIR="$(FMNIST_DIR)" bash scripts/ensure_fmnist.sh

demo: setup data
	$(BIN)/labeldistill run configs/fmnist_demo.yaml data.root=$(FMNIST_DIR)

test: setup data
	$(BIN)/python -m pytest -q

clean-runs:
	rm -rf runs/
