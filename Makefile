# The two commands people need: `make run` and `make test`. Everything else is plumbing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# The one place that picks the torch build. A CUDA build where an NVIDIA GPU answers, else the CPU
# build. Override with `make TORCH_SPEC='torch==2.14.1 torchvision==0.29.1' ...` (and
# TORCH_PIP_ARGS for an index). On CUDA, torch and torchvision are pinned as a matching pair (a
# torchvision built for another torch fails to import); the CPU build gets no torchvision, since
# no CPU torchvision wheel for it is reachable, and needs none (docs/models.md, "Upscalers").
HAS_NVIDIA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_NVIDIA),yes)
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
else
TORCH_SPEC ?= torch==2.13.0
endif
TORCH_PIP_ARGS ?=
# spandrel (upscaler models) without its declared torchvision dependency, on every install: Obscura
# imports only spandrel's upscaler architectures, which need no torchvision (core/upscale.py), and
# letting pip resolve it would pull a CUDA torchvision that breaks the CPU install. The pin
# matches the package layout core/upscale.py relies on; its other needs (einops, numpy,
# safetensors, typing_extensions) are in pyproject.toml.
SPANDREL_SPEC ?= spandrel>=0.4.2,<0.5

.PHONY: run test lint bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_PIP_ARGS) $(foreach spec,$(TORCH_SPEC),"$(spec)")
	touch $@

$(VENV)/.installed-run: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps "$(SPANDREL_SPEC)"
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-run
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/obscura serve

test: $(VENV)/.installed-test
	bash tests/ensure-tools.sh
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check core privacy webui tests bench
	$(BIN)/mypy core privacy webui

bench: $(VENV)/.installed-test
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/vault.py
	$(BIN)/python bench/accounts.py
	$(BIN)/python bench/api.py

clean-venv:
	rm -rf $(VENV)
