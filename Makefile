# One command surface: make run | test | lint | bench | eval
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= ./data
# torch's CPU wheel index, added on Linux when it answers (scripts/torch-index.sh); empty: plain pip
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
export TORCH_INDEX

.PHONY: setup system-deps run test lint bench eval clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $$(bash scripts/torch-index.sh) -e '.[dev]'
	touch $@

# llama.cpp's Python server for the protocol test (tests/test_llamacpp.py), compiled portable (no -march=native):
# a CPU that advertises instructions it cannot run (AMX on some VMs) killed the native build's server with an
# illegal instruction. Only what the server needs is compiled: not the multimodal library (mtmd, LLAVA_BUILD: 51
# of the 178 compile steps of llama-cpp-python 0.3.36), nor llama.cpp's tests, examples, tools and server binary
# (already off when llama.cpp is built as a subproject; said again so a new version cannot turn them on).
# The wheel is built with `pip wheel` (--no-cache-dir, --no-binary: never a native wheel pip built or cached
# earlier) into $(LLAMA_WHEELS) without touching the venv, so `make test` builds it while the rest of the suite
# runs, then installs that very file. The version range is the llm-test extra's in pyproject.toml. The venv is an
# order-only prerequisite: a change to pyproject.toml reinstalls the wheel, it does not compile llama.cpp again.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
LLAMA_WHEELS := $(VENV)/llama-wheels

$(VENV)/.built-llm-test: | $(VENV)/.installed
	rm -rf $(LLAMA_WHEELS)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel --quiet --no-cache-dir --no-deps \
	  --no-binary llama-cpp-python -w $(LLAMA_WHEELS) 'llama-cpp-python>=0.3.7'
	touch $@

$(VENV)/.installed-llm-test: $(VENV)/.built-llm-test $(VENV)/.installed
	$(PY) -m pip install --quiet $(LLAMA_WHEELS)/llama_cpp_python-*.whl -e '.[dev,llm-test]'
	touch $@

system-deps:
	bash scripts/system-deps.sh

# Says in one line what `make system-deps` would add when LibreOffice or Tesseract is missing.
run: setup
	@missing=""; \
	command -v "$${LECTURE_QA_SOFFICE:-soffice}" >/dev/null 2>&1 || missing="LibreOffice (PPTX/DOCX slide and page thumbnails)"; \
	tesseract --list-langs 2>/dev/null | grep -qx eng || missing="$${missing:+$$missing and }Tesseract (text of image-only pages and slides)"; \
	[ -z "$$missing" ] || echo "make run: without $$missing; \`make system-deps\` installs what is missing (Debian/Ubuntu, as root)"
	$(BIN)/lecture-qa ingest examples/lectures --data-dir $(DATA_DIR) --quiet
	$(BIN)/lecture-qa serve --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

# llama.cpp's build (minutes) runs niced in the background while the rest of the suite runs; its protocol test
# runs last, once the wheel is installed. The exit status is the suite's and the build's/last test's together.
test: setup system-deps
	@if [ ! -f $(VENV)/.installed-llm-test ]; then \
	  echo "make test: building llama.cpp's Python server in the background (log: $(VENV)/llm-build.log)"; \
	  ( nice -n 10 $(MAKE) --no-print-directory $(VENV)/.built-llm-test > $(VENV)/llm-build.log 2>&1 ) & \
	fi; \
	$(PY) -m pytest --durations=15 --ignore=tests/test_llamacpp.py; rc=$$?; \
	wait; \
	if $(MAKE) --no-print-directory $(VENV)/.installed-llm-test; then \
	  $(PY) -m pytest tests/test_llamacpp.py || rc=1; \
	else \
	  tail -n 40 $(VENV)/llm-build.log; rc=1; \
	fi; \
	exit $$rc

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
