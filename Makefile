# One command surface: make run | test | lint | bench | eval
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= ./data

.PHONY: setup system-deps run test lint bench eval clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# llama.cpp is compiled portable (no -march=native): a CPU that advertises instructions it cannot run (AMX on
# some VMs) killed the native build's server with an illegal instruction. --no-cache-dir and --no-binary keep
# pip from bringing back a native wheel it built or cached earlier.
$(VENV)/.installed-llm-test: $(VENV)/.installed
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
	  $(PY) -m pip install --quiet --no-cache-dir --no-binary llama-cpp-python -e '.[dev,llm-test]'
	touch $@

system-deps:
	bash scripts/system-deps.sh

run: setup
	$(BIN)/lecture-qa ingest examples/lectures --data-dir $(DATA_DIR) --quiet
	$(BIN)/lecture-qa serve --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

test: setup $(VENV)/.installed-llm-test system-deps
	$(PY) -m pytest --durations=15

lint: setup
	$(BIN)/ruff check app ingest tests bench
	$(BIN)/mypy

bench: setup
	$(PY) bench/ingest.py
	$(PY) bench/query.py
	$(PY) bench/baseline.py --bge

eval: setup
	$(BIN)/lecture-qa ingest ../shared/corpus --data-dir ./data-corpus --quiet
	$(BIN)/lecture-qa eval ../shared/eval/dev.jsonl ../shared/eval/dev2.jsonl --data-dir ./data-corpus

clean:
	rm -rf $(VENV) data data-corpus test-output .pytest_cache .mypy_cache .ruff_cache
