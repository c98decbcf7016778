# Every user-facing target does all of its own set-up, idempotently:
# a virtualenv in .venv, the pinned torch + torchvision pair only when the venv has no torch (a user's
# CUDA build is never replaced: the installed torch version is a pip constraint for everything after it),
# the package in editable mode with its dev extras (timm, and torchvision if still missing, built for
# that torch), and Fashion-MNIST from Debian.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist

.PHONY: setup data demo test bench clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null \
		|| $(BIN)/pip install --quiet $(TORCH_SPEC)
	@$(BIN)/python -c "from importlib.metadata import version; print('torch==' + version('torch'))" \
		> $(VENV)/torch-constraint.txt
	$(BIN)/pip install --quiet -c $(VENV)/torch-constraint.txt -e '.[dev]' \
		|| { echo "setup: the venv's $$(cat $(VENV)/torch-constraint.txt) does not fit pyproject.toml" \
		     "(torch>=2.14 with a matching torchvision); upgrade it, or remove $(VENV) to get $(TORCH_SPEC)" >&2; \
		     exit 1; }
	@touch $@

data:
	@FMNIST_DIR="$(FMNIST_DIR)" bash scripts/ensure_fmnist.sh

demo: setup data
	$(BIN)/labeldistill run configs/fmnist_demo.yaml data.root=$(FMNIST_DIR)

test: setup data
	$(BIN)/ruff check --quiet src bench tests
	$(BIN)/python -m pytest -q

clean-runs:
	rm -rf runs/
