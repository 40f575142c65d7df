# The two commands of the quick start: `make run` and `make test`.
# Both create .venv with Python 3.11 when it is missing and install what they need into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
# The fixture makers' own environment (see fixtures-env below); the benches of training stacks use it too.
FIXTURES_VENV := .venv-fixtures
FIXTURES_STAMP := $(FIXTURES_VENV)/.installed

.PHONY: run test lint bench fuzz clean fixtures-env fixtures-executorch

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The C kernel is compiled by the install: a change to its source installs again.
$(STAMP_RUN): pyproject.toml $(wildcard src/weightscope/*.c) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml $(wildcard src/weightscope/*.c) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP_RUN)

# The seed's program end to end: train, save a TensorFlow checkpoint, read it back.
run: $(STAMP_RUN)
	$(BIN)/weightscope demo
	$(BIN)/weightscope layers checkpoint/model.ckpt
	$(BIN)/weightscope ls --all checkpoint/model.ckpt

lint: $(STAMP_TEST)
	$(BIN)/ruff check src tests bench scripts fuzz
	$(BIN)/ruff format --check src tests bench scripts fuzz
	$(BIN)/mypy
	$(BIN)/python scripts/gen_proto.py --check

# Debian's programs the tests drive: Chromium through its driver (the browser tests, tests/test_viewer.py), zsh
# and fish (their completion scripts run in them, tests/test_completion.py); installed when missing as root (as CI
# runs); anyone else is told how, and make stops there: those tests are never skipped.
TEST_PROGRAMS := /usr/bin/chromedriver /usr/bin/zsh /usr/bin/fish
TEST_PACKAGES := chromium chromium-driver zsh fish
$(TEST_PROGRAMS) &:
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "make test needs Chromium and its driver for the browser tests (tests/test_viewer.py)" >&2; \
		echo "and zsh and fish for the completion tests (tests/test_completion.py)." >&2; \
		echo "Install them as root, then run make test again:" >&2; \
		echo "    sudo apt-get install -y --no-install-recommends $(TEST_PACKAGES)" >&2; \
		exit 1; \
	fi
	apt-get update
	apt-get install -y --no-install-recommends $(TEST_PACKAGES)

test: $(STAMP_TEST) lint $(TEST_PROGRAMS)
	$(BIN)/python -m pytest

bench: $(STAMP_TEST) $(FIXTURES_STAMP)
	$(BIN)/python bench/bench_tensorflow.py
	$(BIN)/python bench/bench_object_graph.py
	$(BIN)/python bench/bench_formats.py
	$(BIN)/python bench/bench_convert.py
	$(BIN)/python bench/bench_stats.py
	$(BIN)/python bench/bench_diff.py
	$(BIN)/python bench/bench_remote.py
	$(BIN)/python bench/bench_runs.py
	$(BIN)/python bench/bench_folders.py
	$(BIN)/python bench/bench_quant.py
	$(BIN)/python bench/bench_dcp.py
	$(BIN)/python bench/bench_zero.py
	$(BIN)/python bench/bench_orbax.py
	$(BIN)/python bench/bench_spectra.py

# Every fuzz harness for FUZZ_RUNS executions (libFuzzer prints "Done N runs" for each).
FUZZ_RUNS ?= 200000
fuzz: $(STAMP_TEST)
	scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && cd fuzz && for harness in fuzz_*.py; do \
		echo "== $$harness"; WEIGHTSCOPE_FUZZ_SCRATCH=$$scratch ../$(BIN)/python $$harness -runs=$(FUZZ_RUNS) 2>&1 \
		| grep -E "^Done|ERROR|Traceback" || exit 1; done

# The fixture makers' own environment (DeepSpeed, JAX/Flax/Orbax, tensorstore): separate from .venv so that
# `make test` stays lean; torch first, from its pinned CPU build, so nothing pulls a CUDA build.
fixtures-env: $(FIXTURES_STAMP)
$(FIXTURES_STAMP): pyproject.toml
	test -x $(FIXTURES_VENV)/bin/python || $(PYTHON) -m venv $(FIXTURES_VENV)
	$(FIXTURES_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(FIXTURES_VENV)/bin/python -m pip install --quiet -e '.[fixtures]'
	touch $@

# ExecuTorch's programs (tests/fixtures/executorch) and the broken files made of them, in an environment of their own
# (executorch brings torchao and coremltools); torch first, from its pinned CPU build, so nothing pulls a CUDA build.
EXECUTORCH_VENV := .venv-executorch
fixtures-executorch: $(STAMP_TEST)
	test -x $(EXECUTORCH_VENV)/bin/python || $(PYTHON) -m venv $(EXECUTORCH_VENV)
	$(EXECUTORCH_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(EXECUTORCH_VENV)/bin/python -m pip install --quiet executorch==1.5.1
	$(EXECUTORCH_VENV)/bin/python tests/fixtures/executorch/make_pte.py
	$(BIN)/python tests/corpus/make_executorch_corpus.py

clean:
	rm -rf $(VENV) $(FIXTURES_VENV) $(EXECUTORCH_VENV) checkpoint build dist
